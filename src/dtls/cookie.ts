/**
 * Stateless HelloVerifyRequest cookies (RFC 6347 §4.2.1): HMAC-SHA256 over the client's
 * address, port and the ClientHello parameters the client must repeat (version, random,
 * session_id, cipher_suites, compression_methods), keyed with a secret that rotates every
 * `lifetimeMs`; the previous secret is still accepted, so a cookie lives one to two
 * lifetimes. Nothing is stored per client.
 */
import { Buffer } from 'node:buffer';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { put16 } from './bytes.js';

/** 16 bytes keeps the HelloVerifyRequest (44 bytes) smaller than any ClientHello. */
export const COOKIE_LENGTH = 16;

export class CookieJar {
  private current: Buffer = randomBytes(32);
  private previous: Buffer = randomBytes(32);
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
    this.previous = age < 2 * this.lifetimeMs ? this.current : randomBytes(32);
    this.current = randomBytes(32);
    this.rotatedAt = t;
  }

  private compute(
    secret: Buffer,
    address: string,
    port: number,
    input: readonly [Buffer, Buffer],
  ): Buffer {
    // Length-prefixed address, then the port: no byte can shift between address, port and
    // ClientHello fields and still produce the same HMAC input. One buffer (Node's pool) for
    // the three: the same bytes as three updates, with no views of it.
    const n = address.length; // latin1: one byte per character
    const head = Buffer.allocUnsafe(n + 3);
    head[0] = n;
    head.write(address, 1, n, 'latin1');
    put16(head, n + 1, port);
    return createHmac('sha256', secret)
      .update(head)
      .update(input[0])
      .update(input[1])
      .digest()
      .subarray(0, COOKIE_LENGTH);
  }

  make(address: string, port: number, input: readonly [Buffer, Buffer]): Buffer {
    this.rotate();
    return this.compute(this.current, address, port, input);
  }

  verify(cookie: Buffer, address: string, port: number, input: readonly [Buffer, Buffer]): boolean {
    if (cookie.length !== COOKIE_LENGTH) return false;
    this.rotate();
    if (timingSafeEqual(cookie, this.compute(this.current, address, port, input))) return true;
    return timingSafeEqual(cookie, this.compute(this.previous, address, port, input));
  }
}
