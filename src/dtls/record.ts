/** DTLS record header codec (RFC 6347 §4.1). */
import { MAX_RECORD_BODY, RECORD_HEADER_LENGTH } from './constants.js';
import { writeRecordHeader } from './record-cipher.js';

export interface DtlsRecord {
  readonly type: number;
  readonly version: number;
  readonly epoch: number;
  readonly seq: number;
  /** The record body (a view into the datagram). */
  readonly body: Buffer;
  /** The whole record, header included (a view into the datagram). */
  readonly raw: Buffer;
}

/**
 * Reads the record at `offset`. Returns `undefined` when the header is truncated, the length
 * field runs past the datagram or exceeds the RFC maximum, or the version is not DTLS
 * (major byte 0xFE). A record never spans datagrams, so the rest of the datagram is then
 * unusable and the caller stops.
 */
export function readRecord(buf: Buffer, offset: number): DtlsRecord | undefined {
  if (buf.length - offset < RECORD_HEADER_LENGTH) return undefined;
  const version = buf.readUInt16BE(offset + 1);
  if (version >>> 8 !== 0xfe) return undefined;
  const length = buf.readUInt16BE(offset + 11);
  const end = offset + RECORD_HEADER_LENGTH + length;
  if (length > MAX_RECORD_BODY || end > buf.length) return undefined;
  return {
    type: buf[offset] ?? 0,
    version,
    epoch: buf.readUInt16BE(offset + 3),
    seq: buf.readUIntBE(offset + 5, 6),
    body: buf.subarray(offset + RECORD_HEADER_LENGTH, end),
    raw: buf.subarray(offset, end),
  };
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
