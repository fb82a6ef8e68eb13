/**
 * The secret chain: the {@link SecretSource} the PSK resolver uses.
 *
 * Device lookup order (the first layer that knows the answer wins):
 * 1. devices file (synchronous; authoritative for the devices it lists)
 * 2. in-process LRU: records and remembered misses (synchronous)
 * 3. activation store when it is in-process (no Redis; synchronous): an activation's secret
 * 4. Redis, one `MGET`: the device's activation (wins), else the cached record or miss
 *    (a secureMode 2 mark in the activation store holds no secret and is passed over)
 * 5. registry `GET /devices/{pk}/{dk}`; its answer (record or 404) is written to the LRU
 *    and to Redis
 *
 * Products: devices file, LRU, then (only with a registry) Redis and the registry.
 *
 * Steps 1-3 answer without a promise, so a cache hit costs no allocation on the handshake
 * path. Steps 4-5 run once per key at a time: concurrent lookups join the one in flight.
 * A Redis failure is counted and skipped (the registry is asked directly); a registry
 * failure rejects with a {@link SecretSourceError} and nothing is cached.
 */
import {
  isActivation,
  type MemoryActivationStore,
  type StoredActivation,
} from './activation-store.js';
import type { DeviceRecord, DevicesFile, ProductRecord } from './devices-file.js';
import type { MemoryCache } from './memory-cache.js';
import type { RedisCache } from './redis-cache.js';
import type { Registry } from './registry-client.js';
import { deviceRecord } from './records.js';
import { SingleFlight } from './single-flight.js';
import {
  SecretSourceError,
  type LookupObserver,
  type MaybePromise,
  type SecretSource,
} from './source.js';
import type { AuthStats, LookupLayer, LookupOutcome } from './stats.js';

export interface SecretChainOptions {
  readonly stats: AuthStats;
  readonly devices: MemoryCache<DeviceRecord>;
  readonly products: MemoryCache<ProductRecord>;
  readonly file?: DevicesFile | undefined;
  readonly redis?: RedisCache | undefined;
  readonly registry?: Registry | undefined;
  /** The in-process activation store (stacks without Redis). */
  readonly localActivations?: MemoryActivationStore | undefined;
}

/** The LRU key of a device; keys cannot contain U+0000. */
export function deviceCacheKey(productKey: string, deviceKey: string): string {
  return `${productKey}\u0000${deviceKey}`;
}

export function recordFromActivation(
  productKey: string,
  deviceKey: string,
  a: StoredActivation,
): DeviceRecord {
  return deviceRecord(
    productKey,
    deviceKey,
    a.deviceSecret,
    a.assetId === '' ? undefined : a.assetId,
  );
}

/** Where a lookup's layer outcomes are counted. */
interface Counter {
  count(layer: LookupLayer, outcome: LookupOutcome): void;
}

export class SecretChain implements SecretSource {
  readonly #o: SecretChainOptions;
  readonly #deviceFlights: SingleFlight<string, DeviceRecord | undefined>;
  readonly #productFlights: SingleFlight<string, ProductRecord | undefined>;

  constructor(o: SecretChainOptions) {
    this.#o = o;
    const join = (): void => {
      o.stats.singleFlightJoins++;
    };
    this.#deviceFlights = new SingleFlight(join);
    this.#productFlights = new SingleFlight(join);
  }

  device(
    productKey: string,
    deviceKey: string,
    observe?: LookupObserver,
  ): MaybePromise<DeviceRecord | undefined> {
    const { file, devices, localActivations } = this.#o;
    const stats = this.#counter(observe);
    if (file !== undefined) {
      const rec = file.device(productKey, deviceKey);
      if (rec !== undefined) {
        stats.count('file', 'hit');
        return rec;
      }
      stats.count('file', 'miss');
    }
    const key = deviceCacheKey(productKey, deviceKey);
    const slot = devices.get(key);
    if (slot !== undefined) {
      stats.count('memory', slot.value === undefined ? 'negative-hit' : 'hit');
      return slot.value;
    }
    stats.count('memory', 'miss');
    if (localActivations !== undefined) {
      const a = localActivations.get(productKey, deviceKey);
      if (a !== undefined && isActivation(a)) {
        stats.count('activation', 'hit');
        const rec = recordFromActivation(productKey, deviceKey, a);
        devices.set(key, rec);
        return rec;
      }
      stats.count('activation', 'miss');
    }
    if (this.#o.redis === undefined && this.#o.registry === undefined) return undefined;
    return this.#deviceFlights.run(key, () => this.#loadDevice(productKey, deviceKey, key, stats));
  }

  product(productKey: string, observe?: LookupObserver): MaybePromise<ProductRecord | undefined> {
    const { file, products, registry } = this.#o;
    const stats = this.#counter(observe);
    if (file !== undefined) {
      const rec = file.product(productKey);
      if (rec !== undefined) {
        stats.count('file', 'hit');
        return rec;
      }
      stats.count('file', 'miss');
    }
    const slot = products.get(productKey);
    if (slot !== undefined) {
      stats.count('memory', slot.value === undefined ? 'negative-hit' : 'hit');
      return slot.value;
    }
    stats.count('memory', 'miss');
    // products reach Redis only from the registry: without one there is nothing to find
    if (registry === undefined) return undefined;
    return this.#productFlights.run(productKey, () =>
      this.#loadProduct(productKey, registry, stats),
    );
  }

  /** Puts a device record into the LRU (after an activation). */
  remember(rec: DeviceRecord): void {
    this.#o.devices.set(deviceCacheKey(rec.productKey, rec.deviceKey), rec);
  }

  /**
   * Counts a layer's answer in the stats and tells the caller's observer (the key-lookup span
   * records it: this code runs after awaits, where no active span context reaches).
   */
  #counter(observe: LookupObserver | undefined): Counter {
    const stats = this.#o.stats;
    if (observe === undefined) return stats;
    return {
      count(layer, outcome) {
        stats.count(layer, outcome);
        observe(layer, outcome);
      },
    };
  }

  async #loadDevice(
    productKey: string,
    deviceKey: string,
    key: string,
    stats: Counter,
  ): Promise<DeviceRecord | undefined> {
    const { devices, redis, registry } = this.#o;
    let redisFailed = false;
    if (redis !== undefined) {
      try {
        const r = await redis.lookupDevice(productKey, deviceKey);
        if (r.activation !== undefined) {
          stats.count('activation', 'hit');
          const rec = recordFromActivation(productKey, deviceKey, r.activation);
          devices.set(key, rec);
          return rec;
        }
        stats.count('activation', 'miss');
        if (r.cached !== undefined) {
          const rec = r.cached.value;
          stats.count('redis', rec === undefined ? 'negative-hit' : 'hit');
          if (rec === undefined) devices.setMissing(key);
          else devices.set(key, rec);
          return rec;
        }
        stats.count('redis', 'miss');
      } catch (err: unknown) {
        stats.count('redis', redisOutcome(err));
        redisFailed = true;
      }
    }
    if (registry === undefined) {
      // Redis + file: the activation store was the last place to look
      if (redisFailed) throw new SecretSourceError('SOURCE_UNAVAILABLE', 'redis: unavailable');
      devices.setMissing(key);
      return undefined;
    }
    const rec = await this.#ask('registry', () => registry.device(productKey, deviceKey), stats);
    if (rec === undefined) devices.setMissing(key);
    else devices.set(key, rec);
    redis?.storeDevice(productKey, deviceKey, rec);
    return rec;
  }

  async #loadProduct(
    productKey: string,
    registry: Registry,
    stats: Counter,
  ): Promise<ProductRecord | undefined> {
    const { products, redis } = this.#o;
    if (redis !== undefined) {
      try {
        const slot = await redis.lookupProduct(productKey);
        if (slot !== undefined) {
          const rec = slot.value;
          stats.count('redis', rec === undefined ? 'negative-hit' : 'hit');
          if (rec === undefined) products.setMissing(productKey);
          else products.set(productKey, rec);
          return rec;
        }
        stats.count('redis', 'miss');
      } catch (err: unknown) {
        stats.count('redis', redisOutcome(err));
      }
    }
    const rec = await this.#ask('registry', () => registry.product(productKey), stats);
    if (rec === undefined) products.setMissing(productKey);
    else products.set(productKey, rec);
    redis?.storeProduct(productKey, rec);
    return rec;
  }

  /** Calls a remote layer, counting hit/miss/error/timeout; failures reject. */
  async #ask<T>(
    layer: LookupLayer,
    call: () => Promise<T | undefined>,
    stats: Counter,
  ): Promise<T | undefined> {
    try {
      const rec = await call();
      stats.count(layer, rec === undefined ? 'miss' : 'hit');
      return rec;
    } catch (err: unknown) {
      const e = asSourceError(err);
      stats.count(layer, e.code === 'SOURCE_TIMEOUT' ? 'timeout' : 'error');
      throw e;
    }
  }
}

/** ioredis reports its `commandTimeout` as `Error('Command timed out')`. */
export function redisOutcome(err: unknown): 'timeout' | 'error' {
  return err instanceof Error && err.message === 'Command timed out' ? 'timeout' : 'error';
}

function asSourceError(err: unknown): SecretSourceError {
  return err instanceof SecretSourceError
    ? err
    : new SecretSourceError('SOURCE_UNAVAILABLE', 'secret source failed');
}
