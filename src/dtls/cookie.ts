/**
 * Stateless HelloVerifyRequest cookies (RFC 6347 §4.2.1): HMAC-SHA256 over the client's
 * address, port and the ClientHello parameters the client must repeat (version, random,
 * session_id, cipher_suites, compression_methods), keyed with a secret that rotates every
 * `lifetimeMs`; the previous secret is still accepted, so a cookie lives one to two
 * lifetimes. Nothing is stored per client.
 */
import { Buffer } from 'node:buffer';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { HMAC_SHA256_LENGTH, HmacSha256Key } from './hmac.js';

/** 16 bytes keeps the HelloVerifyRequest (44 bytes) smaller than any ClientHello. */
export const COOKIE_LENGTH = 16;

/** A fresh cookie secret, keyed at once (its bytes are not kept). */
function newSecret(): HmacSha256Key {
  const bytes = randomBytes(32);
  const key = new HmacSha256Key(bytes);
  bytes.fill(0);
  return key;
}

/** One HMAC output (scratch), and its first COOKIE_LENGTH bytes as one view made once. */
const digest = Buffer.alloc(HMAC_SHA256_LENGTH);
const digestCookie = digest.subarray(0, COOKIE_LENGTH);

export class CookieJar {
  private current = newSecret();
  private previous = newSecret();
  private rotatedAt: number;

  constructor(
    private readonly lifetimeMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.rotatedAt = now();
  }

  private rotate(): void {
    const t = this.now();
    const age = t - this.rotatedAt;
    if (age < this.lifetimeMs) return;
    // after two lifetimes without traffic the old secret is expired as well
    const expired = this.previous;
    if (age < 2 * this.lifetimeMs) this.previous = this.current;
    else {
      this.current.destroy();
      this.previous = newSecret();
    }
    expired.destroy();
    this.current = newSecret();
    this.rotatedAt = t;
  }

  /** The cookie's HMAC under `secret` into `digest` (its first COOKIE_LENGTH bytes are it). */
  private compute(
    secret: HmacSha256Key,
    address: string,
    port: number,
    input: readonly [Buffer, Buffer],
  ): void {
    // Length-prefixed address, then the port: no byte can shift between address, port and
    // ClientHello fields and still produce the same HMAC input. One buffer (Node's pool) for
    // the three.
    const n = address.length; // latin1: one byte per character
    const head = Buffer.allocUnsafe(n + 3);
    head[0] = n;
    head.write(address, 1, n, 'latin1');
    head.writeUInt16BE(port, n + 1);
    secret.mac(digest, head, input[0], input[1]);
  }

  make(address: string, port: number, input: readonly [Buffer, Buffer]): Buffer {
    this.rotate();
    this.compute(this.current, address, port, input);
    return Buffer.from(digestCookie);
  }

  verify(cookie: Buffer, address: string, port: number, input: readonly [Buffer, Buffer]): boolean {
    if (cookie.length !== COOKIE_LENGTH) return false;
    this.rotate();
    this.compute(this.current, address, port, input);
    if (timingSafeEqual(cookie, digestCookie)) return true;
    this.compute(this.previous, address, port, input);
    return timingSafeEqual(cookie, digestCookie);
  }
}
