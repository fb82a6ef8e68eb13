/**
 * TLS 1.2 PRF with SHA-256 (RFC 5246 §5) and the PSK key schedule (RFC 4279 §2, RFC 7627).
 */
import { Buffer } from 'node:buffer';
import { createHmac } from 'node:crypto';
import { put16 } from './bytes.js';
import { VERIFY_DATA_LENGTH } from './constants.js';

/** P_SHA256(secret, seed) expanded to `length` bytes. */
export function pSha256(secret: Buffer, seed: Buffer, length: number): Buffer {
  let a = createHmac('sha256', secret).update(seed).digest();
  let block = createHmac('sha256', secret).update(a).update(seed).digest();
  // One block is enough (verify_data): the HMAC's own digest, with no buffer and no copy
  if (length <= block.length) return length === block.length ? block : block.subarray(0, length);
  const out = Buffer.allocUnsafe(length);
  let written = 0;
  for (;;) {
    written += block.copy(out, written, 0, Math.min(block.length, length - written));
    if (written >= length) return out;
    // A(i+1) only when another block follows: the last one would be computed for nothing
    a = createHmac('sha256', secret).update(a).digest();
    block = createHmac('sha256', secret).update(a).update(seed).digest();
  }
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
  secret: Buffer,
  label: string,
  seed: Buffer,
  length: number,
  seed2?: Buffer,
): Buffer {
  const l = labelBytes(label);
  const s = Buffer.allocUnsafe(l.length + seed.length + (seed2 === undefined ? 0 : seed2.length));
  l.copy(s, 0);
  seed.copy(s, l.length);
  if (seed2 !== undefined) seed2.copy(s, l.length + seed.length);
  return pSha256(secret, s, length);
}

/** Plain PSK premaster secret: uint16 N, N zero bytes, uint16 N, psk (RFC 4279 §2). */
export function pskPremasterSecret(psk: Buffer): Buffer {
  const n = psk.length;
  // from Node's pool (no allocation of its own); the caller wipes it after use
  const pms = Buffer.allocUnsafe(4 + 2 * n);
  pms.fill(0, 2, 2 + n);
  put16(pms, 0, n);
  put16(pms, 2 + n, n);
  psk.copy(pms, 4 + n);
  return pms;
}

export function masterSecret(pms: Buffer, clientRandom: Buffer, serverRandom: Buffer): Buffer {
  return prf(pms, 'master secret', clientRandom, 48, serverRandom);
}

/** RFC 7627 §4: the session hash covers the handshake up to and including ClientKeyExchange. */
export function extendedMasterSecret(pms: Buffer, sessionHash: Buffer): Buffer {
  return prf(pms, 'extended master secret', sessionHash, 48);
}

export function keyBlock(
  master: Buffer,
  serverRandom: Buffer,
  clientRandom: Buffer,
  length: number,
): Buffer {
  return prf(master, 'key expansion', serverRandom, length, clientRandom);
}

export function verifyData(
  master: Buffer,
  label: 'client finished' | 'server finished',
  handshakeHash: Buffer,
): Buffer {
  return prf(master, label, handshakeHash, VERIFY_DATA_LENGTH);
}
