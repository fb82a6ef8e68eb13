/** Key schedule for a completed PSK key exchange and the epoch-1 connection state. */
import { createHash, type Hash } from 'node:crypto';
import { ContentType, MAX_SEQUENCE } from './constants.js';
import { extendedMasterSecret, keyBlock, masterSecret, pskPremasterSecret } from './prf.js';
import {
  createRecordCipher,
  splitKeyBlock,
  suiteParams,
  type RecordCipher,
} from './record-cipher.js';
import { ReplayWindow } from './replay-window.js';
import type { DtlsRecord } from './record.js';

export interface KeyScheduleInput {
  readonly suite: number;
  readonly psk: Buffer;
  readonly clientRandom: Buffer;
  readonly serverRandom: Buffer;
  /** SHA-256 of the transcript up to and including ClientKeyExchange, when EMS was negotiated. */
  readonly sessionHash: Buffer | undefined;
  readonly encryptThenMac: boolean;
}

export interface SessionKeys {
  readonly master: Buffer;
  readonly clientWrite: RecordCipher;
  readonly serverWrite: RecordCipher;
}

export function deriveSessionKeys(p: KeyScheduleInput): SessionKeys {
  const params = suiteParams.get(p.suite);
  if (params === undefined) throw new RangeError('unsupported cipher suite');
  const pms = pskPremasterSecret(p.psk);
  const master =
    p.sessionHash !== undefined
      ? extendedMasterSecret(pms, p.sessionHash)
      : masterSecret(pms, p.clientRandom, p.serverRandom);
  pms.fill(0);
  const block = keyBlock(master, p.serverRandom, p.clientRandom, params.keyBlockLength);
  const { client, server } = splitKeyBlock(p.suite, block);
  block.fill(0);
  return {
    master,
    clientWrite: createRecordCipher(p.suite, client, p.encryptThenMac),
    serverWrite: createRecordCipher(p.suite, server, p.encryptThenMac),
  };
}

/** Running SHA-256 over the handshake messages (RFC 5246 §7.4.9; RFC 6347 §4.2.6). */
export class Transcript {
  private readonly hash: Hash = createHash('sha256');

  add(message: Buffer): void {
    this.hash.update(message);
  }

  /** Digest of everything so far, leaving the running hash usable. */
  digest(): Buffer {
    return this.hash.copy().digest();
  }
}

/**
 * Protection state of one epoch in both directions: the ciphers, the write sequence number
 * and the receive window.
 */
export class EpochState {
  readonly window = new ReplayWindow();
  /**
   * The content type of the record `open` last returned: the record's own, or for a
   * tls12_cid record the real type from its DTLSInnerPlaintext.
   */
  contentType = 0;
  /**
   * The peer's Connection ID, written into every record we send (RFC 9146 §4); undefined
   * when none was negotiated or the peer asked for a zero-length one (plain records then).
   */
  writeCid: Buffer | undefined;

  constructor(
    readonly epoch: number,
    private readonly reader: RecordCipher,
    private readonly writer: RecordCipher,
    private writeSeq = 0,
  ) {}

  /** Seals one record; `undefined` when the 48-bit sequence space is exhausted. */
  seal(type: number, plaintext: Buffer): Buffer | undefined {
    if (this.writeSeq >= MAX_SEQUENCE) return undefined;
    return this.writer.seal(type, this.epoch, this.writeSeq++, plaintext, this.writeCid);
  }

  /**
   * Whether `rec` is newer than every record received in this epoch (RFC 9146 §6: only such a
   * record may move the peer address). Ask before {@link open}, which moves the window.
   */
  isNewest(rec: DtlsRecord): boolean {
    return rec.epoch === this.epoch && rec.seq > this.window.highest;
  }

  /**
   * Opens a record of this epoch: replay check, authentication, then the window moves. A
   * tls12_cid record is unwrapped (RFC 9146 §4: content ‖ real type ‖ zeros); one whose inner
   * plaintext is all zeros authenticated but is malformed.
   */
  open(rec: DtlsRecord): Buffer | 'replay' | 'bad-mac' | 'malformed-record' {
    if (!this.window.check(rec.seq)) return 'replay';
    const cid = rec.cid;
    const pt = this.reader.open(rec.type, rec.version, rec.epoch, rec.seq, rec.body, cid);
    if (pt === undefined) return 'bad-mac';
    this.window.accept(rec.seq);
    if (cid === undefined) {
      this.contentType = rec.type;
      return pt;
    }
    let i = pt.length - 1;
    while (i >= 0 && pt[i] === 0) i--;
    const real = pt[i];
    if (real === undefined) return 'malformed-record';
    this.contentType = real;
    return pt.subarray(0, i);
  }

  overhead(length: number): number {
    return this.writer.overhead(length);
  }
}

export const ALERT_CLOSE_NOTIFY = Buffer.from([1, 0]);
export const CHANGE_CIPHER_SPEC = Buffer.from([1]);
export { ContentType };
