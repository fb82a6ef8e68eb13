/**
 * The in-process layer: an LRU with a TTL per entry that also remembers misses ("this key
 * is unknown") for a shorter time. Reads are synchronous and allocate nothing.
 */
import { LRUCache } from 'lru-cache';

/** A cached answer: `value` is the record, or `undefined` for a remembered miss. */
export interface CacheSlot<V> {
  readonly value: V | undefined;
}

export interface MemoryCacheOptions {
  /** Most entries kept (least recently used go first). */
  readonly max: number;
  /** Lifetime of a record in ms. */
  readonly ttlMs: number;
  /** Lifetime of a remembered miss in ms (capped at `ttlMs`). */
  readonly negativeTtlMs: number;
  /** Clock in ms (tests); default `performance.now()`. */
  readonly now?: () => number;
}

const NEGATIVE: CacheSlot<never> = Object.freeze({ value: undefined });

/** Every entry counts 1 towards `maxSize`: at most `max` entries, as with lru-cache's `max`. */
const ONE_ENTRY = (): number => 1;

export class MemoryCache<V extends object> {
  readonly #lru: LRUCache<string, CacheSlot<V>>;
  readonly #negativeTtlMs: number;

  constructor(o: MemoryCacheOptions) {
    this.#negativeTtlMs = Math.max(1, Math.min(o.negativeTtlMs, o.ttlMs));
    const now = o.now;
    this.#lru = new LRUCache<string, CacheSlot<V>>({
      // lru-cache's `max` allocates its arrays for `max` entries at construction (three caches
      // of 100 000 entries: about 70 ms of CPU and 9 MB at every start, docs/testing.md);
      // `maxSize` with a size of 1 an entry keeps the same bound and eviction order (least
      // recently used first) with arrays that grow as entries arrive
      maxSize: Math.max(1, o.max),
      sizeCalculation: ONE_ENTRY,
      ttl: Math.max(1, o.ttlMs),
      updateAgeOnGet: false,
      allowStale: false,
      // an injected clock is read on every access (the default one is debounced to 1 ms);
      // lru-cache takes a start time of 0 for "no TTL", hence the offset
      ...(now !== undefined ? { perf: { now: () => now() + 1 }, ttlResolution: 0 } : {}),
    });
  }

  /** The slot for `key` (a record or a remembered miss), or `undefined` when not cached. */
  get(key: string): CacheSlot<V> | undefined {
    return this.#lru.get(key);
  }

  set(key: string, value: V): void {
    this.#lru.set(key, { value });
  }

  /** Remembers that `key` is unknown, for the negative TTL. */
  setMissing(key: string): void {
    this.#lru.set(key, NEGATIVE, { ttl: this.#negativeTtlMs });
  }

  delete(key: string): void {
    this.#lru.delete(key);
  }

  get size(): number {
    return this.#lru.size;
  }
}
