/**
 * Record protection for the two suites (RFC 6655 / RFC 5288 CCM_8 nonce layout; RFC 5246
 * §6.2.3.2 MAC-then-encrypt CBC; RFC 7366 encrypt-then-MAC), on node:crypto.
 *
 * `seal` writes a complete record (13-byte header and protected body) into one buffer;
 * `open` authenticates and decrypts a record body and returns the plaintext, or `undefined`
 * when the record does not authenticate (the caller drops it silently, RFC 6347 §4.1.2.7).
 * Scratch buffers for nonce and additional data are per cipher object and reused; node:crypto
 * copies them when a cipher is created, and everything here is synchronous.
 *
 * node:crypto cipher objects are one-shot (no new IV, no second message: bench/history/levers.md,
 * "Per-datagram CPU levers", lever 3), so instead of a new cipher per record each record
 * cipher keeps long-lived ones and never finalizes them: CCM_8 is built from AES-ECB (the CTR
 * keystream) and a running AES-CBC (the CBC-MAC), see `Ccm8`; CBC encrypts with a running
 * AES-CBC encryptor and a random first block, and decrypts with a running AES-CBC decryptor
 * whose first output block is dropped. A CCM_8 cipher's first record and alerts still go
 * through one-shot ciphers (`oneShotRecord`). Measured in bench/history/levers.md ("Record
 * crypto").
 *
 * With a Connection ID (RFC 9146 §4-5) `seal` writes a `tls12_cid` record: the CID in the
 * header, the content wrapped as DTLSInnerPlaintext (content ‖ real type, no padding) and
 * the RFC 9146 additional data in the MAC or AEAD input; `open` then returns the whole
 * DTLSInnerPlaintext, which the caller unwraps (it may carry zero padding from the peer).
 */
// Node's global `Buffer` is a getter: an imported binding is a constant
// (bench/history/records.md, "The record path, third pass")
import { Buffer } from 'node:buffer';
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  randomFillSync,
  timingSafeEqual,
  type Cipher,
  type Decipher,
} from 'node:crypto';
import { CipherSuite, ContentType, DTLS_1_2, RECORD_HEADER_LENGTH } from './constants.js';
import { ownCopy } from './own-buffer.js';
import { put16, put48 } from './bytes.js';

export interface RecordCipher {
  /** Bytes the protection adds to a plaintext of `length` bytes (upper bound for CBC). */
  overhead(length: number): number;
  /** A whole record; with a (non-empty) `cid` a tls12_cid record carrying it. */
  seal(type: number, epoch: number, seq: number, plaintext: Buffer, cid?: Buffer): Buffer;
  /** The plaintext, or for a tls12_cid record (`cid` given) its DTLSInnerPlaintext. */
  open(
    type: number,
    version: number,
    epoch: number,
    seq: number,
    body: Buffer,
    cid?: Buffer,
  ): Buffer | undefined;
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

/** The unused key fields of a suite (CCM: MAC key; CBC: salt), and an empty scratch. */
const EMPTY = Buffer.alloc(0);

/**
 * Splits a key block (RFC 5246 §6.3) into client-write and server-write keys: views of one
 * copy of the block in an allocation of its own (the keys live as long as the association;
 * own-buffer.ts), so `block` itself can be wiped.
 */
export function splitKeyBlock(
  suite: number,
  block: Buffer,
): { client: DirectionKeys; server: DirectionKeys } {
  const own = ownCopy(block);
  if (suite === CipherSuite.TLS_PSK_WITH_AES_128_CCM_8) {
    return {
      client: { encKey: own.subarray(0, 16), salt: own.subarray(32, 36), macKey: EMPTY },
      server: { encKey: own.subarray(16, 32), salt: own.subarray(36, 40), macKey: EMPTY },
    };
  }
  return {
    client: { macKey: own.subarray(0, 32), encKey: own.subarray(64, 80), salt: EMPTY },
    server: { macKey: own.subarray(32, 64), encKey: own.subarray(80, 96), salt: EMPTY },
  };
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

/**
 * Writes a record header at `at`; with `cid`, the tls12_cid header (CID before the length).
 * By byte (bytes.ts): every field is in range by construction, the buffer sized for it.
 */
export function writeRecordHeader(
  out: Buffer,
  type: number,
  version: number,
  epoch: number,
  seq: number,
  length: number,
  cid?: Buffer,
  at = 0,
): void {
  out[at] = type;
  put16(out, at + 1, version);
  put16(out, at + 3, epoch);
  put48(out, at + 5, seq);
  if (cid === undefined) {
    put16(out, at + 11, length);
    return;
  }
  cid.copy(out, at + 11);
  put16(out, at + 11 + cid.length, length);
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
  put16(out, 0, epoch);
  put48(out, 2, seq);
  out[8] = type;
  put16(out, 9, version);
  put16(out, 11, length);
}

/** 8 × 0xFF, tls12_cid, cid_length, tls12_cid, version, epoch, seq(6), length: 23 + CID. */
const CID_PSEUDO_FIXED = 23;

/**
 * The MAC/AAD prefix of one record, in scratch shared by every record cipher (each record is
 * sealed or opened synchronously, the prefix used before the next one is written). Without a
 * CID it is the 13-byte RFC 6347 one; with a CID the RFC 9146 §5 one, which is the same for
 * AEAD, MAC-then-encrypt and encrypt-then-MAC (only what `length` counts differs):
 * seq_num_placeholder (8 × 0xFF) ‖ tls12_cid ‖ cid_length ‖ tls12_cid ‖ version ‖ epoch ‖
 * sequence_number ‖ cid ‖ length.
 */
class PseudoHeader {
  private readonly plain = Buffer.alloc(13);
  /** One buffer per CID length met (peers' CIDs differ in length). */
  private readonly withCid: (Buffer | undefined)[] = [];

  write(
    epoch: number,
    seq: number,
    type: number,
    version: number,
    length: number,
    cid: Buffer | undefined,
  ): Buffer {
    if (cid === undefined) {
      writePseudoHeader(this.plain, epoch, seq, type, version, length);
      return this.plain;
    }
    let out = this.withCid[cid.length];
    if (out === undefined) {
      out = Buffer.alloc(CID_PSEUDO_FIXED + cid.length);
      this.withCid[cid.length] = out;
    }
    out.fill(0xff, 0, 8);
    out[8] = ContentType.tls12Cid;
    out[9] = cid.length;
    out[10] = ContentType.tls12Cid;
    put16(out, 11, version);
    put16(out, 13, epoch);
    put48(out, 15, seq);
    cid.copy(out, 21);
    put16(out, 21 + cid.length, length);
    return out;
  }
}

/**
 * The record ciphers' shared scratch: no buffer of its own per cipher, so a handshake's two
 * record ciphers allocate none (they were a 12-byte nonce and a 13-byte prefix each).
 */
const pseudoHeader = new PseudoHeader();

/** Header length of a record with `cid` (undefined: a plain record). */
function headerLength(cid: Buffer | undefined): number {
  return cid === undefined ? RECORD_HEADER_LENGTH : RECORD_HEADER_LENGTH + cid.length;
}

/** A record cipher whose long-lived node:crypto objects can be dropped (made again on use). */
interface LiveObjects {
  release(): void;
}

/**
 * The record ciphers that hold long-lived node:crypto objects, at most `LIVE_LIMIT`, oldest
 * first out. Each object costs ~1.2 KB of RSS (OpenSSL context and key schedule): kept by
 * every association they would add ~5 KB (CCM_8) to its ~9 KB, for devices that send a
 * record every few minutes. A record cipher that makes its objects joins; when the ring is
 * full the oldest member releases its objects and makes them again on its next record. A
 * busy association keeps its objects until LIVE_LIMIT other record ciphers made theirs.
 */
export const LIVE_LIMIT = 2048;
const live: (LiveObjects | undefined)[] = new Array<LiveObjects | undefined>(LIVE_LIMIT);
let liveNext = 0;

function admitLive(holder: LiveObjects): void {
  live[liveNext]?.release();
  live[liveNext] = holder;
  liveNext = (liveNext + 1) % LIVE_LIMIT;
}

const CCM_TAG = 8;
const CCM_EXPLICIT_NONCE = 8;
/** The CCM nonce: 4-byte salt ‖ 8-byte explicit nonce (RFC 6655 §3). */
const CCM_NONCE = 12;
/** Plaintexts up to this many bytes go into the CBC-MAC input by a loop, longer ones by copy. */
const SMALL_COPY = 64;
const BLOCK = 16;
const ZERO_BLOCK = Buffer.alloc(BLOCK);
/** The CCM nonce of the record being sealed or opened (scratch shared by every cipher). */
const ccmNonce = Buffer.alloc(CCM_NONCE);
/** The tag a record should carry and the one it carries (`Ccm8`'s open; shared scratch). */
const expectedTag = Buffer.alloc(CCM_TAG);
const receivedTag = Buffer.alloc(CCM_TAG);

/**
 * A Buffer made by Node's C++ side, held for the process's life so that V8 keeps the map all
 * such Buffers share. `node::Buffer::New` makes a `Uint8Array` and then sets its
 * prototype to `Buffer.prototype`: every node:crypto `update`/`digest` output (each record's
 * keystream and CBC-MAC below) and every datagram a UDP socket receives gets that map, reached
 * from the `Uint8Array` map by a prototype transition V8 holds weakly, and not the map of the
 * Buffers JavaScript makes (`FastBuffer`: `Buffer.alloc`, `subarray`). The record path's
 * functions see both and are compiled against both. Between two datagrams no such Buffer is
 * alive, so a full GC freed the map and deoptimized them all ("weak objects"), and the next
 * datagram made a new map: the path ran unoptimized until TurboFan compiled it again, at every
 * mark-compact of a long-running process (bench/history/dedup-and-gc.md, "A full GC no
 * longer deoptimizes the request path"). With this Buffer alive the map stays the one the code
 * checks for.
 */
export const NATIVE_BUFFER_MAP_HOLDER: Buffer = createCipheriv('aes-128-ecb', ZERO_BLOCK, null)
  .setAutoPadding(false)
  .update(ZERO_BLOCK);

/** Blocks of 16 bytes that hold `length` bytes. */
function blocks(length: number): number {
  return Math.ceil(length / BLOCK);
}

/**
 * Copies `n` bytes from `src[from]` to `dst[to]`: for the few bytes of a nonce, an AAD or a
 * block, a loop costs less than `Buffer.copy`, which validates its arguments, makes a
 * `Uint8Array` view for a source offset and calls `TypedArray.prototype.set`
 * (bench/history/records.md,
 * "The record path against its floor"). The ranges are the caller's to get right.
 */
function copyBytes(src: Buffer, from: number, dst: Buffer, to: number, n: number): void {
  for (let i = 0; i < n; i++) dst[to + i] = src[from + i]!;
}

/** Zeroes `dst[from]` up to `end` (a block's padding: a few bytes). */
function zeroBytes(dst: Buffer, from: number, end: number): void {
  for (let i = from; i < end; i++) dst[i] = 0;
}

/** Block counts up to which `BlockScratch` keeps a view per count (64 blocks: 1 KiB). */
const CACHED_VIEW_BLOCKS = 64;

/**
 * Counter blocks, then the CBC-MAC input, of the record a `Ccm8` is sealing or opening; grown
 * when a record needs more. One for every Ccm8: each record is sealed or opened synchronously
 * and nothing keeps a view of it past the call (the keystream and the MAC come out of
 * node:crypto in buffers of their own, the tag in the Ccm8's `chain`). It was 1 KiB per
 * long-lived Ccm8, two per busy CCM_8 association (bench/history/handshake.md,
 * "Association memory and the Buffer pool").
 */
class BlockScratch {
  private buffer = Buffer.alloc(CACHED_VIEW_BLOCKS * BLOCK);
  /**
   * A view per block count up to CACHED_VIEW_BLOCKS (a record of up to ~1 000 bytes): records
   * of the lengths devices send make no new view, whichever cipher, direction or association
   * comes next. Longer records take a new view (their crypto dwarfs it).
   */
  private readonly views: (Buffer | undefined)[] = [];

  /** The first `n` blocks. */
  of(n: number): Buffer {
    const cached = n <= CACHED_VIEW_BLOCKS;
    if (cached) {
      const v = this.views[n];
      if (v !== undefined) return v;
    }
    const length = n * BLOCK;
    if (this.buffer.length < length) {
      this.buffer = Buffer.alloc(length);
      this.views.length = 0;
    }
    const v = this.buffer.subarray(0, length);
    if (cached) this.views[n] = v;
    return v;
  }
}

const ccmScratch = new BlockScratch();

/**
 * AES-128-CCM with an 8-byte tag and a 12-byte nonce (RFC 3610 with M = 8, L = 3; RFC 6655)
 * on two long-lived node:crypto ciphers instead of a new `aes-128-ccm` cipher per record (our
 * own because node:crypto has no resettable CCM; see the file comment):
 *
 * - the CTR keystream S_0..S_m is one `aes-128-ecb` update over the counter blocks A_i
 *   (flags 2 ‖ nonce ‖ i);
 * - the CBC-MAC runs on an `aes-128-cbc` encryptor that is never finalized. Its chaining value
 *   is the last block it output (`chain`); feeding B_0 ⊕ chain makes AES see B_0, as CBC-MAC
 *   from a zero IV does, and the last output block is X_{n+1}, whose first 8 bytes ⊕ S_0 are
 *   the tag.
 *
 * Output is byte for byte node's aes-128-ccm (tests: NIST SP 800-38C C.3, the captured
 * handshakes, random records against createCipheriv). Tag comparison stays timingSafeEqual.
 */
export class Ccm8 {
  private readonly ecb: Cipher;
  private readonly cbc: Cipher;
  /** The CBC encryptor's chaining value: its last output block. */
  private readonly chain = Buffer.alloc(BLOCK);

  constructor(key: Buffer) {
    this.ecb = createCipheriv('aes-128-ecb', key, null);
    this.ecb.setAutoPadding(false);
    this.cbc = createCipheriv('aes-128-cbc', key, ZERO_BLOCK);
    this.cbc.setAutoPadding(false);
  }

  /** S_0 ‖ S_1 ‖ …: 16 bytes for the tag, then keystream for `length` bytes. */
  private keystream(nonce: Buffer, length: number): Buffer {
    const n = 1 + blocks(length);
    const a = ccmScratch.of(n);
    for (let i = 0, o = 0; i < n; i++, o += BLOCK) {
      a[o] = 2; // flags: L - 1
      copyBytes(nonce, 0, a, o + 1, CCM_NONCE);
      a[o + 13] = i >>> 16;
      a[o + 14] = (i >>> 8) & 0xff;
      a[o + 15] = i & 0xff;
    }
    return this.ecb.update(a);
  }

  /** X_{n+1} of the CBC-MAC over B_0, the encoded AAD and `data` (valid until the next call). */
  private mac(nonce: Buffer, aad: Buffer, data: Buffer): Buffer {
    const aadBlocks = blocks(2 + aad.length);
    const at = BLOCK + aadBlocks * BLOCK;
    const b = ccmScratch.of(1 + aadBlocks + blocks(data.length));
    // B_0: flags (Adata, (M - 2) / 2, L - 1) ‖ nonce ‖ l(m) in 3 bytes
    b[0] = 0x40 | (((CCM_TAG - 2) / 2) << 3) | 2;
    copyBytes(nonce, 0, b, 1, CCM_NONCE);
    b[13] = data.length >>> 16;
    b[14] = (data.length >>> 8) & 0xff;
    b[15] = data.length & 0xff;
    const chain = this.chain;
    for (let i = 0; i < BLOCK; i++) b[i] = b[i]! ^ chain[i]!;
    // l(a) < 2^16 - 2^8: two bytes, then the AAD, zero padded
    b[BLOCK] = aad.length >>> 8;
    b[BLOCK + 1] = aad.length & 0xff;
    copyBytes(aad, 0, b, BLOCK + 2, aad.length);
    zeroBytes(b, BLOCK + 2 + aad.length, at);
    if (data.length > SMALL_COPY) data.copy(b, at);
    else copyBytes(data, 0, b, at, data.length);
    zeroBytes(b, at + data.length, b.length);
    const x = this.cbc.update(b);
    copyBytes(x, x.length - BLOCK, chain, 0, BLOCK);
    return chain;
  }

  /** Writes ciphertext ‖ tag (plaintext length + 8 bytes) at `out[at]`. */
  seal(nonce: Buffer, aad: Buffer, plaintext: Buffer, out: Buffer, at: number): void {
    const s = this.keystream(nonce, plaintext.length);
    const len = plaintext.length;
    for (let i = 0; i < len; i++) out[at + i] = plaintext[i]! ^ s[BLOCK + i]!;
    const t = this.mac(nonce, aad, plaintext);
    for (let i = 0; i < CCM_TAG; i++) out[at + len + i] = t[i]! ^ s[i]!;
  }

  /** The plaintext, or `undefined` when the tag does not verify. */
  open(nonce: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer): Buffer | undefined {
    return this.openAt(nonce, aad, ciphertext, 0, ciphertext.length, tag, 0);
  }

  /**
   * {@link open} of a record body read where it lies: ciphertext `body[at, at + len)`, the tag
   * right after it. No view of the body is made (each is a typed array's construction).
   */
  openIn(nonce: Buffer, aad: Buffer, body: Buffer, at: number, len: number): Buffer | undefined {
    return this.openAt(nonce, aad, body, at, len, body, at + len);
  }

  /**
   * Ciphertext `src[at, at + len)`, tag `tagSrc[tagAt, tagAt + 8)`: the expected and the
   * received tag are put into two long-lived 8-byte scratches, which `timingSafeEqual`
   * compares.
   */
  private openAt(
    nonce: Buffer,
    aad: Buffer,
    src: Buffer,
    at: number,
    len: number,
    tagSrc: Buffer,
    tagAt: number,
  ): Buffer | undefined {
    if (tagSrc.length - tagAt < CCM_TAG) return undefined;
    const s = this.keystream(nonce, len);
    const pt = Buffer.allocUnsafe(len);
    for (let i = 0; i < len; i++) pt[i] = src[at + i]! ^ s[BLOCK + i]!;
    const t = this.mac(nonce, aad, pt);
    for (let i = 0; i < CCM_TAG; i++) {
      expectedTag[i] = s[i]! ^ t[i]!;
      receivedTag[i] = tagSrc[tagAt + i]!;
    }
    return timingSafeEqual(expectedTag, receivedTag) ? pt : undefined;
  }
}

/**
 * Whether a CCM_8 record of `type` goes through a one-shot node:crypto cipher when the record
 * cipher holds no long-lived objects (`used`: a record went through since it was made or
 * released): the first record, as before the long-lived objects — a handshake's Finished is
 * often the only record of its epoch in that direction, and a device waking every few
 * minutes sends one record per wake-up — and any alert: a close_notify ends the association,
 * a fatal alert too, so the two objects made for one (with a scratch buffer; native objects
 * the GC must finalize) would serve no later record. A handshake followed by close_notify
 * makes no long-lived object on either side. (CBC keeps making its one long-lived object at
 * the first record: one one-shot object per record would cost two for Finished and
 * close_notify, measured 1.12× the long-lived one.)
 */
function oneShotRecord(used: boolean, type: number): boolean {
  return !used || type === ContentType.alert;
}

class Ccm8Cipher implements RecordCipher, LiveObjects {
  private readonly key: Buffer;
  /** Made on use and kept while among the LIVE_LIMIT latest (see `admitLive`). */
  private ccmObjects: Ccm8 | undefined;
  /**
   * Whether a record went through since the cipher was made or its objects released. The
   * first record, and any alert, is sealed or opened with a one-shot `aes-128-ccm` cipher
   * (see `oneShotRecord`). From the second other record on the long-lived objects pay.
   */
  private used = false;
  /** The implicit part of the nonce (client/server_write_IV, 4 bytes). */
  private readonly salt: Buffer;

  constructor(keys: DirectionKeys) {
    this.key = keys.encKey;
    this.salt = keys.salt;
  }

  /** The shared nonce scratch with this cipher's salt, explicit part from `src[at]`. */
  private nonce(src: Buffer, at: number): Buffer {
    copyBytes(this.salt, 0, ccmNonce, 0, 4);
    copyBytes(src, at, ccmNonce, 4, CCM_EXPLICIT_NONCE);
    return ccmNonce;
  }

  /**
   * The long-lived objects, or undefined for a one-shot record (`oneShotRecord`). An empty
   * plaintext always takes them: Node 20's one-shot aes-128-ccm cannot seal or open one
   * ("tag not set").
   */
  private ccm(length: number, type: number): Ccm8 | undefined {
    if (this.ccmObjects !== undefined) return this.ccmObjects;
    if (length > 0 && oneShotRecord(this.used, type)) {
      this.used = true;
      return undefined;
    }
    this.ccmObjects = new Ccm8(this.key);
    admitLive(this);
    return this.ccmObjects;
  }

  release(): void {
    this.ccmObjects = undefined;
    this.used = false;
  }

  overhead(): number {
    return CCM_EXPLICIT_NONCE + CCM_TAG;
  }

  seal(type: number, epoch: number, seq: number, content: Buffer, cid?: Buffer): Buffer {
    // with a CID the content is DTLSInnerPlaintext: content ‖ real type
    const plaintext = cid === undefined ? content : innerPlaintext(content, type);
    const hl = headerLength(cid);
    const bodyLength = CCM_EXPLICIT_NONCE + plaintext.length + CCM_TAG;
    const out = Buffer.allocUnsafe(hl + bodyLength);
    const recordType = cid === undefined ? type : ContentType.tls12Cid;
    writeRecordHeader(out, recordType, DTLS_1_2, epoch, seq, bodyLength, cid);
    // nonce_explicit = epoch || seq, as on the wire (RFC 6655 §3, RFC 6347 §4.1.2.1); the
    // nonce is the same with a CID (RFC 9146 §5.2)
    const nonce = this.nonce(out, 3);
    copyBytes(out, 3, out, hl, CCM_EXPLICIT_NONCE);
    const aad = pseudoHeader.write(epoch, seq, type, DTLS_1_2, plaintext.length, cid);
    const ccm = this.ccm(plaintext.length, type);
    if (ccm !== undefined) {
      ccm.seal(nonce, aad, plaintext, out, hl + CCM_EXPLICIT_NONCE);
      return out;
    }
    const cipher = createCipheriv('aes-128-ccm', this.key, nonce, { authTagLength: CCM_TAG });
    cipher.setAAD(aad, { plaintextLength: plaintext.length });
    const ct = cipher.update(plaintext);
    cipher.final();
    ct.copy(out, hl + CCM_EXPLICIT_NONCE);
    cipher.getAuthTag().copy(out, hl + CCM_EXPLICIT_NONCE + plaintext.length);
    return out;
  }

  open(
    type: number,
    version: number,
    epoch: number,
    seq: number,
    body: Buffer,
    cid?: Buffer,
  ): Buffer | undefined {
    const ptLength = body.length - CCM_EXPLICIT_NONCE - CCM_TAG;
    if (ptLength < 0) return undefined;
    const nonce = this.nonce(body, 0);
    const aad = pseudoHeader.write(epoch, seq, type, version, ptLength, cid);
    const ccm = this.ccm(ptLength, type);
    // the long-lived objects read ciphertext and tag in place (no view of the body)
    if (ccm !== undefined) return ccm.openIn(nonce, aad, body, CCM_EXPLICIT_NONCE, ptLength);
    const ciphertext = body.subarray(CCM_EXPLICIT_NONCE, CCM_EXPLICIT_NONCE + ptLength);
    const tag = body.subarray(body.length - CCM_TAG);
    const decipher = createDecipheriv('aes-128-ccm', this.key, nonce, {
      authTagLength: CCM_TAG,
    });
    decipher.setAuthTag(tag);
    decipher.setAAD(aad, { plaintextLength: ptLength });
    const pt = decipher.update(ciphertext);
    try {
      decipher.final();
    } catch {
      return undefined;
    }
    return pt;
  }
}

/** DTLSInnerPlaintext without padding: content ‖ real content type (RFC 9146 §4). */
function innerPlaintext(content: Buffer, type: number): Buffer {
  const out = Buffer.allocUnsafe(content.length + 1);
  content.copy(out, 0);
  out[content.length] = type;
  return out;
}

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

/** The real content type byte of a CID record's inner plaintext (shared scratch). */
const realTypeScratch = Buffer.alloc(1);
/**
 * R ‖ the blocks a CBC cipher encrypts, shared by every CBC cipher (each record encrypted
 * synchronously, the encryptor's output its own buffer); grown when a record needs more.
 */
let cbcInput = EMPTY;

abstract class CbcCipher implements RecordCipher, LiveObjects {
  protected readonly key: Buffer;
  protected readonly macKey: Buffer;
  /**
   * Made on use (a record cipher seals or opens, seldom both) and kept while among the
   * LIVE_LIMIT latest (see `admitLive`).
   */
  private encryptor: Cipher | undefined;
  private decryptor: Decipher | undefined;

  constructor(keys: DirectionKeys) {
    this.key = keys.encKey;
    this.macKey = keys.macKey;
  }

  abstract overhead(length: number): number;
  abstract seal(type: number, epoch: number, seq: number, plaintext: Buffer, cid?: Buffer): Buffer;
  abstract open(
    type: number,
    version: number,
    epoch: number,
    seq: number,
    body: Buffer,
    cid?: Buffer,
  ): Buffer | undefined;

  /**
   * Encrypts the concatenation of `data` (`length` bytes, whole blocks) and writes IV ‖
   * ciphertext at `out[ivOffset]`. One running CBC encryptor: a random block R goes first and
   * its ciphertext, E(R ⊕ the previous record's last block), is the record's IV (RFC 4346
   * §6.2.3.2, option (2)(b)); the rest chains from it as CBC from that IV does.
   */
  protected encryptInto(out: Buffer, ivOffset: number, data: Buffer[], length: number): void {
    if (length % BLOCK !== 0) throw new RangeError('CBC length mismatch');
    if (this.encryptor === undefined) {
      if (this.decryptor === undefined) admitLive(this);
      this.encryptor = createCipheriv('aes-128-cbc', this.key, ZERO_BLOCK);
      this.encryptor.setAutoPadding(false);
    }
    if (cbcInput.length < BLOCK + length) cbcInput = Buffer.alloc(BLOCK + length);
    const input = cbcInput.subarray(0, BLOCK + length);
    randomFillSync(input, 0, BLOCK);
    let off = BLOCK;
    for (const d of data) off += d.copy(input, off);
    if (off !== BLOCK + length) throw new RangeError('CBC length mismatch');
    this.encryptor.update(input).copy(out, ivOffset);
  }

  /**
   * IV ‖ ciphertext (whole blocks) → plaintext. One running CBC decryptor: the IV goes in as
   * a first ciphertext block, whose output (garbage) is dropped; the next blocks decrypt
   * against the IV, as a decryptor created with it would.
   */
  protected decrypt(body: Buffer): Buffer | undefined {
    // a partial block would stay buffered in the decryptor and shift every later record
    if (body.length % BLOCK !== 0 || body.length < 2 * BLOCK) return undefined;
    if (this.decryptor === undefined) {
      if (this.encryptor === undefined) admitLive(this);
      this.decryptor = createDecipheriv('aes-128-cbc', this.key, ZERO_BLOCK);
      this.decryptor.setAutoPadding(false);
    }
    return this.decryptor.update(body).subarray(BLOCK);
  }

  release(): void {
    this.encryptor = undefined;
    this.decryptor = undefined;
  }
}

/** CBC, MAC-then-encrypt (RFC 5246 §6.2.3.2). */
class CbcMteCipher extends CbcCipher {
  overhead(length: number): number {
    return BLOCK + MAC + paddingLength(length + MAC);
  }

  seal(type: number, epoch: number, seq: number, plaintext: Buffer, cid?: Buffer): Buffer {
    // with a CID the content is DTLSInnerPlaintext: plaintext ‖ real type
    const length = cid === undefined ? plaintext.length : plaintext.length + 1;
    realTypeScratch[0] = type;
    const hmac = createHmac('sha256', this.macKey)
      .update(pseudoHeader.write(epoch, seq, type, DTLS_1_2, length, cid))
      .update(plaintext);
    if (cid !== undefined) hmac.update(realTypeScratch);
    const mac = hmac.digest();
    const pad = paddingLength(length + MAC);
    const encLength = length + MAC + pad;
    const bodyLength = BLOCK + encLength;
    const hl = headerLength(cid);
    const out = Buffer.allocUnsafe(hl + bodyLength);
    const recordType = cid === undefined ? type : ContentType.tls12Cid;
    writeRecordHeader(out, recordType, DTLS_1_2, epoch, seq, bodyLength, cid);
    const padding = Buffer.alloc(pad, pad - 1);
    const parts =
      cid === undefined ? [plaintext, mac, padding] : [plaintext, realTypeScratch, mac, padding];
    this.encryptInto(out, hl, parts, encLength);
    return out;
  }

  open(
    type: number,
    version: number,
    epoch: number,
    seq: number,
    body: Buffer,
    cid?: Buffer,
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
    const expected = createHmac('sha256', this.macKey)
      .update(pseudoHeader.write(epoch, seq, type, version, contentLength, cid))
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

  seal(type: number, epoch: number, seq: number, plaintext: Buffer, cid?: Buffer): Buffer {
    const length = cid === undefined ? plaintext.length : plaintext.length + 1;
    const pad = paddingLength(length);
    const encLength = length + pad;
    const bodyLength = BLOCK + encLength + MAC;
    const hl = headerLength(cid);
    const out = Buffer.allocUnsafe(hl + bodyLength);
    const recordType = cid === undefined ? type : ContentType.tls12Cid;
    writeRecordHeader(out, recordType, DTLS_1_2, epoch, seq, bodyLength, cid);
    const padding = Buffer.alloc(pad, pad - 1);
    realTypeScratch[0] = type;
    const parts = cid === undefined ? [plaintext, padding] : [plaintext, realTypeScratch, padding];
    this.encryptInto(out, hl, parts, encLength);
    // RFC 7366 §3 / RFC 9146 §5.3: the MAC's length field counts IV and ciphertext
    createHmac('sha256', this.macKey)
      .update(pseudoHeader.write(epoch, seq, type, DTLS_1_2, BLOCK + encLength, cid))
      .update(out.subarray(hl, hl + BLOCK + encLength))
      .digest()
      .copy(out, hl + BLOCK + encLength);
    return out;
  }

  open(
    type: number,
    version: number,
    epoch: number,
    seq: number,
    body: Buffer,
    cid?: Buffer,
  ): Buffer | undefined {
    const encLength = body.length - MAC;
    if (encLength < 2 * BLOCK || (encLength - BLOCK) % BLOCK !== 0) return undefined;
    const expected = createHmac('sha256', this.macKey)
      .update(pseudoHeader.write(epoch, seq, type, version, encLength, cid))
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
