/** DTLS record header codec (RFC 6347 §4.1). */
import { Buffer } from 'node:buffer';
import { put16, put24 } from './bytes.js';
import {
  ContentType,
  DTLS_1_0,
  HANDSHAKE_HEADER_LENGTH,
  HandshakeType,
  MAX_RECORD_BODY,
  RECORD_HEADER_LENGTH,
} from './constants.js';
import { writeRecordHeader } from './record-cipher.js';

export interface DtlsRecord {
  readonly type: number;
  readonly version: number;
  readonly epoch: number;
  readonly seq: number;
  /**
   * The Connection ID of a `tls12_cid` record (type 25, RFC 9146 §4), a view into the
   * datagram; undefined for every other type.
   */
  readonly cid: Buffer | undefined;
  /** The record body (a view into the datagram). */
  readonly body: Buffer;
  /** The whole record, header included (a view into the datagram). */
  readonly raw: Buffer;
  /** The whole record's length in bytes, header included: `raw.length`. */
  readonly length: number;
}

/**
 * A record read from a datagram. The datagram path only needs the whole record's length, so
 * `raw` is made on demand: one `subarray` (a new Buffer object) less per record.
 */
class RecordView implements DtlsRecord {
  constructor(
    readonly type: number,
    readonly version: number,
    readonly epoch: number,
    readonly seq: number,
    readonly cid: Buffer | undefined,
    readonly body: Buffer,
    private readonly datagram: Buffer,
    private readonly start: number,
    private readonly end: number,
  ) {}

  get raw(): Buffer {
    return this.datagram.subarray(this.start, this.end);
  }

  get length(): number {
    return this.end - this.start;
  }
}

/**
 * Reads the record at `offset`. Returns `undefined` when the header is truncated, the length
 * field runs past the datagram or exceeds the RFC maximum, or the version is not DTLS
 * (major byte 0xFE). A record never spans datagrams, so the rest of the datagram is then
 * unusable and the caller stops.
 *
 * A `tls12_cid` record has its CID between sequence number and length, and nothing on the
 * wire says how long it is (RFC 9146 §4): the receiver knows, because it chose the CIDs it
 * receives. `cidLength` is that length (our CIDs are all one length); 0 reads the CID as
 * empty, which no peer of ours sends, so such a record then matches nothing.
 */
export function readRecord(buf: Buffer, offset: number, cidLength = 0): DtlsRecord | undefined {
  const type = buf[offset] ?? 0;
  const cidLen = type === ContentType.tls12Cid ? cidLength : 0;
  const headerLength = RECORD_HEADER_LENGTH + cidLen;
  if (buf.length - offset < headerLength) return undefined;
  // the header's fields read byte by byte: the bounds are checked above, and each
  // `readUInt16BE` / `readUIntBE` call would check them again (bench/history/records.md, "The
  // record path, third pass")
  const major = buf[offset + 1] ?? 0;
  if (major !== 0xfe) return undefined;
  const lengthAt = offset + 11 + cidLen;
  const length = ((buf[lengthAt] ?? 0) << 8) | (buf[lengthAt + 1] ?? 0);
  const end = offset + headerLength + length;
  if (length > MAX_RECORD_BODY || end > buf.length) return undefined;
  // 48-bit sequence number: the high 16 bits times 2^32 plus the low 32, exact in a number
  const seq =
    (((buf[offset + 5] ?? 0) << 8) | (buf[offset + 6] ?? 0)) * 0x100000000 +
    ((((buf[offset + 7] ?? 0) << 24) |
      ((buf[offset + 8] ?? 0) << 16) |
      ((buf[offset + 9] ?? 0) << 8) |
      (buf[offset + 10] ?? 0)) >>>
      0);
  const view = new RecordView(
    type,
    (major << 8) | (buf[offset + 2] ?? 0),
    ((buf[offset + 3] ?? 0) << 8) | (buf[offset + 4] ?? 0),
    seq,
    type === ContentType.tls12Cid ? buf.subarray(offset + 11, offset + 11 + cidLen) : undefined,
    buf.subarray(offset + headerLength, end),
    buf,
    offset,
    end,
  );
  latest.view = view;
  return view;
}

/**
 * The latest record read, held until the next one: a RecordView is dead once its datagram is
 * handled, and a full GC that finds no instance of a class frees the maps of its fields
 * (V8 holds them weakly) and deoptimizes every function compiled against them ("weak
 * objects"). One live instance keeps them (src/dtls/record-cipher.ts, NATIVE_BUFFER_MAP_HOLDER).
 */
const latest: { view: RecordView | undefined } = { view: undefined };

/**
 * The stateless answer to a ClientHello without a valid cookie (RFC 6347 §4.2.1): one record
 * (version DTLS 1.0, epoch 0, the ClientHello's record sequence number) holding one
 * HelloVerifyRequest (message_seq 0, unfragmented, server_version DTLS 1.0), written into one
 * buffer: the same bytes as `plainRecord(…, handshakeMessage(…, helloVerifyRequestBody(…)))`
 * without the two buffers between.
 */
export function helloVerifyRequestRecord(recordSeq: number, cookie: Buffer): Buffer {
  const body = 3 + cookie.length;
  const message = HANDSHAKE_HEADER_LENGTH + body;
  const out = Buffer.allocUnsafe(RECORD_HEADER_LENGTH + message);
  writeRecordHeader(out, ContentType.handshake, DTLS_1_0, 0, recordSeq, message);
  const h = RECORD_HEADER_LENGTH;
  out[h] = HandshakeType.helloVerifyRequest;
  put24(out, h + 1, body);
  put16(out, h + 4, 0);
  put24(out, h + 6, 0);
  put24(out, h + 9, body);
  put16(out, h + 12, DTLS_1_0);
  out[h + 14] = cookie.length;
  cookie.copy(out, h + 15);
  return out;
}

/** A plaintext (epoch 0, or NULL-protected) record. */
export function plainRecord(
  type: number,
  version: number,
  epoch: number,
  seq: number,
  body: Buffer,
): Buffer {
  const out = Buffer.allocUnsafe(RECORD_HEADER_LENGTH + body.length);
  writeRecordHeader(out, type, version, epoch, seq, body.length);
  body.copy(out, RECORD_HEADER_LENGTH);
  return out;
}
