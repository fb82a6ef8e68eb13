/**
 * The connect rate limit of per-device sessions: a token bucket with reservations.
 *
 * `ratePerSecond` tokens are added per second up to `burst` (default: one second's worth).
 * A connect takes one token. When none is left, a caller may reserve the next one if it
 * becomes free within `maxWaitMs`: the token is taken at once (the balance goes below zero)
 * and the caller is told how long to wait; callers thus queue in order without a list, and a
 * caller that would wait longer is refused at once, taking nothing. Time comes from an
 * injected clock, so tests need no real waiting to check the accounting.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number = ratePerSecond,
    private readonly now: () => number = Date.now,
  ) {
    if (!(ratePerSecond > 0) || !(burst >= 1)) {
      throw new RangeError('token bucket: rate must be > 0 and burst >= 1');
    }
    this.tokens = burst;
    this.last = now();
  }

  /** Tokens available now (below zero while reservations wait). */
  available(): number {
    this.refill();
    return this.tokens;
  }

  /**
   * Takes one token: resolves to the ms to wait before using it (0: now), or undefined when
   * the wait would exceed `maxWaitMs` (nothing is taken then).
   */
  reserve(maxWaitMs: number): number | undefined {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    const waitMs = Math.ceil(((1 - this.tokens) * 1000) / this.ratePerSecond);
    if (waitMs > maxWaitMs) return undefined;
    this.tokens -= 1;
    return waitMs;
  }

  private refill(): void {
    const t = this.now();
    const elapsed = t - this.last;
    this.last = t;
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000);
    }
  }
}
