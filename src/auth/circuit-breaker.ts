/**
 * A small circuit breaker for the registry. Closed: every request goes out. After
 * `threshold` consecutive failures it opens: requests fail at once for `cooldownMs`. Then it
 * is half-open: one request goes out as a probe (the others still fail at once); success
 * closes the breaker, failure opens it for another cooldown.
 */

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the breaker. `0` disables the breaker. */
  readonly threshold: number;
  /** How long the breaker stays open, in ms. */
  readonly cooldownMs: number;
  /** Clock in ms; default `performance.now()`. */
  readonly now?: () => number;
  /** Called each time the breaker opens. */
  readonly onOpen?: () => void;
}

export class CircuitBreaker {
  readonly #threshold: number;
  readonly #cooldownMs: number;
  readonly #now: () => number;
  readonly #onOpen: () => void;
  #failures = 0;
  #openedAt = 0;
  #open = false;
  #probing = false;

  constructor(o: CircuitBreakerOptions) {
    this.#threshold = o.threshold;
    this.#cooldownMs = o.cooldownMs;
    this.#now = o.now ?? (() => performance.now());
    this.#onOpen = o.onOpen ?? (() => {});
  }

  get state(): BreakerState {
    if (!this.#open) return 'closed';
    return this.#now() - this.#openedAt >= this.#cooldownMs ? 'half-open' : 'open';
  }

  /**
   * Whether a request may go out now. A `true` in the half-open state makes the caller the
   * probe; it must report the result with {@link success} or {@link failure}.
   */
  allow(): boolean {
    if (!this.#open) return true;
    if (this.#probing || this.#now() - this.#openedAt < this.#cooldownMs) return false;
    this.#probing = true;
    return true;
  }

  success(): void {
    this.#failures = 0;
    this.#open = false;
    this.#probing = false;
  }

  failure(): void {
    this.#failures++;
    if (this.#probing || (this.#threshold > 0 && this.#failures >= this.#threshold)) {
      if (!this.#open || this.#probing) this.#onOpen();
      this.#open = true;
      this.#probing = false;
      this.#openedAt = this.#now();
    }
  }
}
