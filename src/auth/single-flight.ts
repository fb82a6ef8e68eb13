/**
 * Concurrent calls for one key share one promise: the first caller starts the work, the
 * others join it until it settles. Nothing is remembered after that (caching is the
 * caller's business).
 */
export class SingleFlight<K, V> {
  readonly #inflight = new Map<K, Promise<V>>();
  readonly #onJoin: () => void;

  /** @param onJoin called each time a caller joins work already in flight (for counters). */
  constructor(onJoin: () => void = () => {}) {
    this.#onJoin = onJoin;
  }

  /** The promise in flight for `key`, or a new one from `work()`. */
  run(key: K, work: () => Promise<V>): Promise<V> {
    const current = this.#inflight.get(key);
    if (current !== undefined) {
      this.#onJoin();
      return current;
    }
    let started: Promise<V>;
    try {
      started = work();
    } catch (err: unknown) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const shared: Promise<V> = started.finally(() => {
      if (this.#inflight.get(key) === shared) this.#inflight.delete(key);
    });
    this.#inflight.set(key, shared);
    return shared;
  }

  /** Keys with work in flight. */
  get size(): number {
    return this.#inflight.size;
  }
}
