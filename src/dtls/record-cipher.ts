/**
 * Record protection for the two suites (RFC 6655 / RFC 5288 CCM_8 nonce layout; RFC 5246
 * §6.2.3.2 MAC-then-encrypt CBC; RFC 7366 encrypt-then-MAC), on node:crypto.
 *
 * `seal` writes a complete record (13-byte header and protected body) into one buffer;
 * `open` authenticates and decrypts a record body and returns the plaintext, or `undefined`
 * when the record does not authenticate (the caller drops it silently, RFC 6347 §4.1.2.7).
 * Scratch buffers for nonce and additional data are per cipher object and reused; node:crypto
 * copies them when a cipher is created, and everything here is synchronous.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  randomFillSync,
  timingSafeEqual,
} from 'node:crypto';
import { CipherSuite, DTLS_1_2, RECORD_HEADER_LENGTH } from './constants.js';

export interface RecordCipher {
  /** Bytes the protection adds to a plaintext of `length` bytes (upper bound for CBC). */
  overhead(length: number): number;
  seal(type: number, epoch: number, seq: number, plaintext: Buffer): Buffer;
  open(type: number, version: number, epoch: number, seq: number, body: Buffer): Buffer | undefined;
}

/** Key material for one direction, cut from the key block. */
export interface DirectionKeys {
  readonly encKey: Buffer;
  /** CCM: 4-byte implicit salt (client/server_write_IV). CBC: unused (empty). */
  readonly salt: Buffer;
  /** CBC: 32-byte HMAC-SHA256 key. CCM: unused (empty). */
  readonly macKey: Buffer;
}

export interface SuiteParams {
  readonly suite: number;
  /** key_block length for this suite. */
  readonly keyBlockLength: number;
  readonly aead: boolean;
}

export const suiteParams: ReadonlyMap<number, SuiteParams> = new Map([
  [
    CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
    { suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8, keyBlockLength: 40, aead: true },
  ],
  [
    CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
    { suite: CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256, keyBlockLength: 96, aead: false },
  ],
]);

/** Splits a key block (RFC 5246 §6.3) into client-write and server-write keys. */
export function splitKeyBlock(
  suite: number,
  block: Buffer,
): { client: DirectionKeys; server: DirectionKeys } {
  const empty = Buffer.alloc(0);
  if (suite === CipherSuite.TLS_PSK_WITH_AES_128_CCM_8) {
    return {
      client: { encKey: copy(block, 0, 16), salt: copy(block, 32, 36), macKey: empty },
      server: { encKey: copy(block, 16, 32), salt: copy(block, 36, 40), macKey: empty },
    };
  }
  return {
    client: { macKey: copy(block, 0, 32), encKey: copy(block, 64, 80), salt: empty },
    server: { macKey: copy(block, 32, 64), encKey: copy(block, 80, 96), salt: empty },
  };
}

function copy(b: Buffer, start: number, end: number): Buffer {
  return Buffer.from(b.subarray(start, end));
}

export function createRecordCipher(
  suite: number,
  keys: DirectionKeys,
  encryptThenMac: boolean,
): RecordCipher {
  if (suite === CipherSuite.TLS_PSK_WITH_AES_128_CCM_8) return new Ccm8Cipher(keys);
  if (suite === CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256) {
    return encryptThenMac ? new CbcEtmCipher(keys) : new CbcMteCipher(keys);
  }
  throw new RangeError(`unsupported cipher suite 0x${suite.toString(16)}`);
}

export function writeRecordHeader(
  out: Buffer,
  type: number,
  version: number,
  epoch: number,
  seq: number,
  length: number,
): void {
  out[0] = type;
  out.writeUInt16BE(version, 1);
  out.writeUInt16BE(epoch, 3);
  out.writeUIntBE(seq, 5, 6);
  out.writeUInt16BE(length, 11);
}

/** seq_num(8) | type | version | length: the MAC/AAD prefix (RFC 6347 §4.1.2.1). */
function writePseudoHeader(
  out: Buffer,
  epoch: number,
  seq: number,
  type: number,
  version: number,
  length: number,
): void {
  out.writeUInt16BE(epoch, 0);
  out.writeUIntBE(seq, 2, 6);
  out[8] = type;
  out.writeUInt16BE(version, 9);
  out.writeUInt16BE(length, 11);
}

const CCM_TAG = 8;
const CCM_EXPLICIT_NONCE = 8;

class Ccm8Cipher implements RecordCipher {
  private readonly key: Buffer;
  private readonly nonce = Buffer.alloc(12);
  private readonly aad = Buffer.alloc(13);

  constructor(keys: DirectionKeys) {
    this.key = keys.encKey;
    keys.salt.copy(this.nonce, 0);
  }

  overhead(): number {
    return CCM_EXPLICIT_NONCE + CCM_TAG;
  }

  seal(type: number, epoch: number, seq: number, plaintext: Buffer): Buffer {
    const bodyLength = CCM_EXPLICIT_NONCE + plaintext.length + CCM_TAG;
    const out = Buffer.allocUnsafe(RECORD_HEADER_LENGTH + bodyLength);
    writeRecordHeader(out, type, DTLS_1_2, epoch, seq, bodyLength);
    // nonce_explicit = epoch || seq, as on the wire (RFC 6655 §3, RFC 6347 §4.1.2.1)
    out.copy(this.nonce, 4, 3, 11);
    out.copy(out, RECORD_HEADER_LENGTH, 3, 11);
    writePseudoHeader(this.aad, epoch, seq, type, DTLS_1_2, plaintext.length);
    const cipher = createCipheriv('aes-128-ccm', this.key, this.nonce, { authTagLength: CCM_TAG });
    cipher.setAAD(this.aad, { plaintextLength: plaintext.length });
    const ct = cipher.update(plaintext);
    cipher.final();
    ct.copy(out, RECORD_HEADER_LENGTH + CCM_EXPLICIT_NONCE);
    cipher.getAuthTag().copy(out, RECORD_HEADER_LENGTH + CCM_EXPLICIT_NONCE + plaintext.length);
    return out;
  }

  open(
    type: number,
    version: number,
    epoch: number,
    seq: number,
    body: Buffer,
  ): Buffer | undefined {
    const ptLength = body.length - CCM_EXPLICIT_NONCE - CCM_TAG;
    if (ptLength < 0) return undefined;
    body.copy(this.nonce, 4, 0, CCM_EXPLICIT_NONCE);
    writePseudoHeader(this.aad, epoch, seq, type, version, ptLength);
    const decipher = createDecipheriv('aes-128-ccm', this.key, this.nonce, {
      authTagLength: CCM_TAG,
    });
    decipher.setAuthTag(body.subarray(body.length - CCM_TAG));
    decipher.setAAD(this.aad, { plaintextLength: ptLength });
    const pt = decipher.update(body.subarray(CCM_EXPLICIT_NONCE, CCM_EXPLICIT_NONCE + ptLength));
    try {
      decipher.final();
    } catch {
      return undefined;
    }
    return pt;
  }
}

const BLOCK = 16;
const MAC = 32;

/** Padding so that `length + padding` is a multiple of the block size; padding ≥ 1 byte. */
function paddingLength(length: number): number {
  return BLOCK - (length % BLOCK);
}

/** Checks TLS CBC padding without an early exit; returns the padding length or -1. */
function checkPadding(pt: Buffer, minContent: number): number {
  const last = pt.length - 1;
  const padLen = pt[last] ?? 0;
  let bad = padLen + 1 + minContent > pt.length ? 1 : 0;
  const checked = Math.min(256, pt.length);
  for (let i = 1; i <= checked; i++) {
    const b = pt[last - i + 1] ?? 0;
    // within padding: every byte equals padLen
    const inPad = i <= padLen + 1 ? 1 : 0;
    bad |= inPad & (b !== padLen ? 1 : 0);
  }
  return bad === 0 ? padLen : -1;
}

abstract class CbcCipher implements RecordCipher {
  protected readonly key: Buffer;
  protected readonly macKey: Buffer;
  protected readonly pseudo = Buffer.alloc(13);

  constructor(keys: DirectionKeys) {
    this.key = keys.encKey;
    this.macKey = keys.macKey;
  }

  abstract overhead(length: number): number;
  abstract seal(type: number, epoch: number, seq: number, plaintext: Buffer): Buffer;
  abstract open(
    type: number,
    version: number,
    epoch: number,
    seq: number,
    body: Buffer,
  ): Buffer | undefined;

  protected encryptInto(out: Buffer, ivOffset: number, data: Buffer[], length: number): void {
    const iv = out.subarray(ivOffset, ivOffset + BLOCK);
    randomFillSync(iv);
    const cipher = createCipheriv('aes-128-cbc', this.key, iv);
    cipher.setAutoPadding(false);
    let off = ivOffset + BLOCK;
    for (const d of data) off += cipher.update(d).copy(out, off);
    off += cipher.final().copy(out, off);
    if (off !== ivOffset + BLOCK + length) throw new RangeError('CBC length mismatch');
  }

  protected decrypt(body: Buffer): Buffer | undefined {
    const decipher = createDecipheriv('aes-128-cbc', this.key, body.subarray(0, BLOCK));
    decipher.setAutoPadding(false);
    const a = decipher.update(body.subarray(BLOCK));
    const b = decipher.final();
    return b.length === 0 ? a : Buffer.concat([a, b]);
  }
}

/** CBC, MAC-then-encrypt (RFC 5246 §6.2.3.2). */
class CbcMteCipher extends CbcCipher {
  overhead(length: number): number {
    return BLOCK + MAC + paddingLength(length + MAC);
  }

  seal(type: number, epoch: number, seq: number, plaintext: Buffer): Buffer {
    writePseudoHeader(this.pseudo, epoch, seq, type, DTLS_1_2, plaintext.length);
    const mac = createHmac('sha256', this.macKey).update(this.pseudo).update(plaintext).digest();
    const pad = paddingLength(plaintext.length + MAC);
    const encLength = plaintext.length + MAC + pad;
    const bodyLength = BLOCK + encLength;
    const out = Buffer.allocUnsafe(RECORD_HEADER_LENGTH + bodyLength);
    writeRecordHeader(out, type, DTLS_1_2, epoch, seq, bodyLength);
    const padding = Buffer.alloc(pad, pad - 1);
    this.encryptInto(out, RECORD_HEADER_LENGTH, [plaintext, mac, padding], encLength);
    return out;
  }

  open(
    type: number,
    version: number,
    epoch: number,
    seq: number,
    body: Buffer,
  ): Buffer | undefined {
    if (body.length < BLOCK + MAC + BLOCK || (body.length - BLOCK) % BLOCK !== 0) return undefined;
    const pt = this.decrypt(body);
    if (pt === undefined) return undefined;
    let padLen = checkPadding(pt, MAC);
    const goodPadding = padLen >= 0;
    // On bad padding still compute a MAC (over the record as if unpadded) so both paths do
    // comparable work (Lucky 13 mitigation, best effort in JavaScript).
    if (!goodPadding) padLen = 0;
    const contentLength = Math.max(0, pt.length - MAC - padLen - 1);
    writePseudoHeader(this.pseudo, epoch, seq, type, version, contentLength);
    const expected = createHmac('sha256', this.macKey)
      .update(this.pseudo)
      .update(pt.subarray(0, contentLength))
      .digest();
    const got = pt.subarray(contentLength, contentLength + MAC);
    const macOk = got.length === MAC && timingSafeEqual(expected, got);
    return goodPadding && macOk ? pt.subarray(0, contentLength) : undefined;
  }
}

/** CBC, encrypt-then-MAC (RFC 7366 §3). */
class CbcEtmCipher extends CbcCipher {
  overhead(length: number): number {
    return BLOCK + paddingLength(length) + MAC;
  }

  seal(type: number, epoch: number, seq: number, plaintext: Buffer): Buffer {
    const pad = paddingLength(plaintext.length);
    const encLength = plaintext.length + pad;
    const bodyLength = BLOCK + encLength + MAC;
    const out = Buffer.allocUnsafe(RECORD_HEADER_LENGTH + bodyLength);
    writeRecordHeader(out, type, DTLS_1_2, epoch, seq, bodyLength);
    const padding = Buffer.alloc(pad, pad - 1);
    this.encryptInto(out, RECORD_HEADER_LENGTH, [plaintext, padding], encLength);
    writePseudoHeader(this.pseudo, epoch, seq, type, DTLS_1_2, BLOCK + encLength);
    createHmac('sha256', this.macKey)
      .update(this.pseudo)
      .update(out.subarray(RECORD_HEADER_LENGTH, RECORD_HEADER_LENGTH + BLOCK + encLength))
      .digest()
      .copy(out, RECORD_HEADER_LENGTH + BLOCK + encLength);
    return out;
  }

  open(
    type: number,
    version: number,
    epoch: number,
    seq: number,
    body: Buffer,
  ): Buffer | undefined {
    const encLength = body.length - MAC;
    if (encLength < 2 * BLOCK || (encLength - BLOCK) % BLOCK !== 0) return undefined;
    writePseudoHeader(this.pseudo, epoch, seq, type, version, encLength);
    const expected = createHmac('sha256', this.macKey)
      .update(this.pseudo)
      .update(body.subarray(0, encLength))
      .digest();
    if (!timingSafeEqual(expected, body.subarray(encLength))) return undefined;
    const pt = this.decrypt(body.subarray(0, encLength));
    if (pt === undefined) return undefined;
    const padLen = checkPadding(pt, 0);
    if (padLen < 0) return undefined;
    return pt.subarray(0, pt.length - padLen - 1);
  }
}
