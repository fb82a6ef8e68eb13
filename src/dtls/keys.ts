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

  constructor(
    readonly epoch: number,
    private readonly reader: RecordCipher,
    private readonly writer: RecordCipher,
    private writeSeq = 0,
  ) {}

  /** Seals one record; `undefined` when the 48-bit sequence space is exhausted. */
  seal(type: number, plaintext: Buffer): Buffer | undefined {
    if (this.writeSeq >= MAX_SEQUENCE) return undefined;
    return this.writer.seal(type, this.epoch, this.writeSeq++, plaintext);
  }

  /** Opens a record of this epoch: replay check, authentication, then the window moves. */
  open(rec: DtlsRecord): Buffer | 'replay' | 'bad-mac' {
    if (!this.window.check(rec.seq)) return 'replay';
    const pt = this.reader.open(rec.type, rec.version, rec.epoch, rec.seq, rec.body);
    if (pt === undefined) return 'bad-mac';
    this.window.accept(rec.seq);
    return pt;
  }

  overhead(length: number): number {
    return this.writer.overhead(length);
  }
}

export const ALERT_CLOSE_NOTIFY = Buffer.from([1, 0]);
export const CHANGE_CIPHER_SPEC = Buffer.from([1]);
export { ContentType };
