/** Key schedule for a completed PSK key exchange and the epoch-1 connection state. */
import { Buffer } from 'node:buffer';
import { createHash, type Hash } from 'node:crypto';
import { MAX_SEQUENCE } from './constants.js';
import { extendedMasterSecret, keyBlock, masterSecret, pskPremasterSecret } from './prf.js';
import {
  createRecordCipher,
  splitKeyBlock,
  suiteParams,
  type DirectionKeys,
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
  /** The key material of both directions (for a shared association's snapshot). */
  readonly keys: { readonly client: DirectionKeys; readonly server: DirectionKeys };
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
    keys: { client, server },
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

  /**
   * Digest of everything so far, for the transcript's last use: the running hash itself is
   * finished (no copy of it), so nothing may be added or digested afterwards.
   */
  finalDigest(): Buffer {
    return this.hash.digest();
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
  /**
   * Write sequence numbers below this may be used (exclusive). The 48-bit space alone, or for
   * a shared association the end of the block leased from the store (shared.ts): a pod never
   * seals with a number outside its blocks.
   */
  writeLimit = MAX_SEQUENCE;
  /** The next leased block [start, limit), taken when the current one is used up. */
  private nextBlock: readonly [number, number] | undefined;
  /**
   * Records at or above this sequence number are authenticated but not accepted
   * ({@link open} answers 'fenced'): a shared association's receive limit. Infinity alone.
   */
  acceptBelow = Infinity;

  constructor(
    readonly epoch: number,
    private readonly reader: RecordCipher,
    private readonly writer: RecordCipher,
    private writeSeq = 0,
  ) {}

  /** The next write sequence number. */
  get nextWriteSeq(): number {
    return this.writeSeq;
  }

  /** Write sequence numbers usable without a new lease (current and next block). */
  get writesLeft(): number {
    const n = this.nextBlock;
    return this.writeLimit - this.writeSeq + (n === undefined ? 0 : n[1] - n[0]);
  }

  /** Whether the 48-bit sequence space is used up (no lease can help). */
  get exhausted(): boolean {
    return this.writeSeq >= MAX_SEQUENCE;
  }

  /**
   * Adds a leased block [start, start + count): used at once when the current block is used
   * up, else after it. Blocks come from one counter, so a later block never starts lower.
   */
  addWriteBlock(start: number, count: number): void {
    const limit = Math.min(MAX_SEQUENCE, start + count);
    if (this.writeSeq >= this.writeLimit) {
      this.writeSeq = Math.max(this.writeSeq, start);
      this.writeLimit = limit;
    } else this.nextBlock = [start, limit];
  }

  /**
   * Seals one record; `undefined` when no sequence number is left: the 48-bit space is used
   * up ({@link exhausted}) or the leased blocks are.
   */
  seal(type: number, plaintext: Buffer): Buffer | undefined {
    if (this.writeSeq >= this.writeLimit && !this.takeNextBlock()) return undefined;
    return this.writer.seal(type, this.epoch, this.writeSeq++, plaintext, this.writeCid);
  }

  /**
   * No more leases: the whole space from `floor` up is this state's alone (a shared
   * association the store never acknowledged; no pod leases that high).
   */
  unlease(floor: number): void {
    this.writeSeq = Math.max(this.writeSeq, floor);
    this.writeLimit = MAX_SEQUENCE;
    this.nextBlock = undefined;
    this.acceptBelow = Infinity;
  }

  private takeNextBlock(): boolean {
    const n = this.nextBlock;
    if (n === undefined) return false;
    this.nextBlock = undefined;
    this.writeSeq = Math.max(this.writeSeq, n[0]);
    this.writeLimit = n[1];
    return this.writeSeq < this.writeLimit;
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
  open(rec: DtlsRecord): Buffer | 'replay' | 'bad-mac' | 'malformed-record' | 'fenced' {
    if (!this.window.check(rec.seq)) return 'replay';
    const cid = rec.cid;
    let pt = this.reader.open(rec.type, rec.version, rec.epoch, rec.seq, rec.body, cid);
    if (pt === undefined) return 'bad-mac';
    if (cid === undefined) this.contentType = rec.type;
    else {
      let i = pt.length - 1;
      while (i >= 0 && pt[i] === 0) i--;
      const real = pt[i];
      if (real === undefined) {
        this.window.accept(rec.seq);
        return 'malformed-record';
      }
      this.contentType = real;
      pt = pt.subarray(0, i);
    }
    if (rec.seq >= this.acceptBelow) {
      // authenticated, but past the receive limit: the caller raises it and comes back
      return 'fenced';
    }
    this.window.accept(rec.seq);
    return pt;
  }

  overhead(length: number): number {
    return this.writer.overhead(length);
  }
}

export const ALERT_CLOSE_NOTIFY = Buffer.from([1, 0]);
export const CHANGE_CIPHER_SPEC = Buffer.from([1]);
