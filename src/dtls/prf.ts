/**
 * TLS 1.2 PRF with SHA-256 (RFC 5246 §5) and the PSK key schedule (RFC 4279 §2, RFC 7627).
 *
 * The HMACs run on keyed states (hmac.ts): a secret is keyed once and serves every HMAC of
 * its P_SHA256 (A(i) and the output blocks); the master secret's key serves the key block and
 * both verify_data (`SessionKeys.masterKey`). A secret given as bytes is keyed for that one
 * call.
 */
import { Buffer } from 'node:buffer';
import { VERIFY_DATA_LENGTH } from './constants.js';
import { HMAC_SHA256_LENGTH, HmacSha256Key } from './hmac.js';

/** A PRF secret: its bytes, or the key made of them once (reused, and wiped by its owner). */
export type PrfSecret = Buffer | HmacSha256Key;

/** A(i) and one output block (scratch; wiped after each P_SHA256). */
const a = Buffer.alloc(HMAC_SHA256_LENGTH);
const block = Buffer.alloc(HMAC_SHA256_LENGTH);

/**
 * P_SHA256(secret, label ‖ seed ‖ seed2) expanded to `length` bytes: the seed's parts are fed
 * to each HMAC in turn, not concatenated. Only the blocks `length` needs are computed.
 */
function pHash(
  secret: PrfSecret,
  label: Buffer,
  seed: Buffer,
  seed2: Buffer | undefined,
  length: number,
): Buffer {
  const key = secret instanceof HmacSha256Key ? secret : new HmacSha256Key(secret);
  const out = Buffer.allocUnsafe(length);
  let written = 0;
  if (length > 0) {
    key.mac(a, label, seed, seed2); // A(1)
    for (;;) {
      key.mac(block, a, label, seed, seed2);
      written += block.copy(out, written, 0, Math.min(HMAC_SHA256_LENGTH, length - written));
      if (written >= length) break;
      // A(i+1) only when another block follows: the last one would be computed for nothing
      key.mac(a, a);
    }
    a.fill(0);
    block.fill(0);
  }
  if (key !== secret) key.destroy();
  return out;
}

const NO_LABEL = Buffer.alloc(0);

/** P_SHA256(secret, seed) expanded to `length` bytes. */
export function pSha256(secret: PrfSecret, seed: Buffer, length: number): Buffer {
  return pHash(secret, NO_LABEL, seed, undefined, length);
}

/** The labels' bytes, made once each (the key schedule uses five). */
const labels = new Map<string, Buffer>();
const MAX_LABELS = 16;

function labelBytes(label: string): Buffer {
  let bytes = labels.get(label);
  if (bytes === undefined) {
    bytes = Buffer.from(label, 'latin1');
    if (labels.size < MAX_LABELS) labels.set(label, bytes);
  }
  return bytes;
}

/** PRF(secret, label, seed ‖ seed2): `seed2` saves the caller a concatenation. */
export function prf(
  secret: PrfSecret,
  label: string,
  seed: Buffer,
  length: number,
  seed2?: Buffer,
): Buffer {
  return pHash(secret, labelBytes(label), seed, seed2, length);
}

/** Plain PSK premaster secret: uint16 N, N zero bytes, uint16 N, psk (RFC 4279 §2). */
export function pskPremasterSecret(psk: Buffer): Buffer {
  const n = psk.length;
  // from Node's pool (no allocation of its own); the caller wipes it after use
  const pms = Buffer.allocUnsafe(4 + 2 * n);
  pms.fill(0, 2, 2 + n);
  pms.writeUInt16BE(n, 0);
  pms.writeUInt16BE(n, 2 + n);
  psk.copy(pms, 4 + n);
  return pms;
}

export function masterSecret(pms: PrfSecret, clientRandom: Buffer, serverRandom: Buffer): Buffer {
  return prf(pms, 'master secret', clientRandom, 48, serverRandom);
}

/** RFC 7627 §4: the session hash covers the handshake up to and including ClientKeyExchange. */
export function extendedMasterSecret(pms: PrfSecret, sessionHash: Buffer): Buffer {
  return prf(pms, 'extended master secret', sessionHash, 48);
}

export function keyBlock(
  master: PrfSecret,
  serverRandom: Buffer,
  clientRandom: Buffer,
  length: number,
): Buffer {
  return prf(master, 'key expansion', serverRandom, length, clientRandom);
}

export function verifyData(
  master: PrfSecret,
  label: 'client finished' | 'server finished',
  handshakeHash: Buffer,
): Buffer {
  return prf(master, label, handshakeHash, VERIFY_DATA_LENGTH);
}
