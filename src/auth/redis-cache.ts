/**
 * The shared cache layer in Redis: device and product records fetched from the registry
 * (TTL `redisTtlMs`) and remembered misses (TTL `negativeTtlMs`). A device lookup also reads
 * the device's activation in the same round trip (`MGET`), so a device activated on any pod
 * is found even when the registry is not asked (a secureMode 2 mark there holds no secret).
 *
 * Values (JSON): `{"deviceSecret","assetId"?}`, `{"productSecret","dynamicRegistration"}`,
 * or `{"unknown":true}` for a miss. A value that does not parse is treated as not cached
 * and counted (`redisBadValues`); the next registry answer overwrites it.
 *
 * Writes are not awaited by lookups; {@link RedisCache.settle} waits for the ones pending.
 */
import { z } from 'zod';
import {
  adoptLegacyActivation,
  decodeActivation,
  isActivation,
  type StoredActivation,
} from './activation-store.js';
import type { DeviceRecord, ProductRecord } from './devices-file.js';
import type { CacheSlot } from './memory-cache.js';
import type { RedisConnection } from './redis-connection.js';
import type { RedisKeys } from './redis-keys.js';
import { assetIdSchema, deviceRecord, productRecord, secretSchema } from './records.js';
import type { AuthStats } from './stats.js';

const MISSING_VALUE = '{"unknown":true}';
const unknownSchema = z.strictObject({ unknown: z.literal(true) });
const deviceSchema = z.strictObject({
  deviceSecret: secretSchema,
  assetId: assetIdSchema.optional(),
});
const productSchema = z.strictObject({
  productSecret: secretSchema,
  dynamicRegistration: z.boolean(),
});

const MISSING: CacheSlot<never> = Object.freeze({ value: undefined });

export interface RedisCacheOptions {
  readonly redis: RedisConnection;
  readonly keys: RedisKeys;
  readonly ttlMs: number;
  readonly negativeTtlMs: number;
  readonly stats: AuthStats;
  /** Whether activations under the pre-hash-tag key are honoured. @default true */
  readonly legacyKeys?: boolean | undefined;
}

export interface RedisDeviceLookup {
  /** The cached record or remembered miss; `undefined` when nothing (valid) is cached. */
  readonly cached: CacheSlot<DeviceRecord> | undefined;
  /** The device's activation, when it was activated (a secureMode 2 mark is not one). */
  readonly activation: StoredActivation | undefined;
}

export class RedisCache {
  readonly #o: RedisCacheOptions;
  readonly #pending = new Set<Promise<void>>();

  constructor(o: RedisCacheOptions) {
    this.#o = o;
  }

  async lookupDevice(productKey: string, deviceKey: string): Promise<RedisDeviceLookup> {
    const { keys } = this.#o;
    // one slot (the device's hash tag): one round trip on a cluster too
    const [cachedText, newActivationText] = await this.#o.redis.client.mget(
      keys.device(productKey, deviceKey),
      keys.activation(productKey, deviceKey),
    );
    let activationText = newActivationText;
    if ((activationText === null || activationText === undefined) && this.#o.legacyKeys !== false) {
      activationText = await adoptLegacyActivation(this.#o.redis, keys, productKey, deviceKey);
    }
    let activation: StoredActivation | undefined;
    if (activationText !== null && activationText !== undefined) {
      const entry = decodeActivation(activationText);
      if (entry === undefined) this.#o.stats.redisBadValues++;
      else if (isActivation(entry)) activation = entry;
    }
    const cached = this.#decode(cachedText, (obj) => {
      const d = deviceSchema.safeParse(obj);
      return d.success
        ? deviceRecord(productKey, deviceKey, d.data.deviceSecret, d.data.assetId)
        : undefined;
    });
    return { cached, activation };
  }

  async lookupProduct(productKey: string): Promise<CacheSlot<ProductRecord> | undefined> {
    const text = await this.#o.redis.client.get(this.#o.keys.product(productKey));
    return this.#decode(text, (obj) => {
      const p = productSchema.safeParse(obj);
      return p.success
        ? productRecord(productKey, p.data.productSecret, p.data.dynamicRegistration)
        : undefined;
    });
  }

  /** Caches a device record, or a miss when `rec` is `undefined` (not awaited). */
  storeDevice(productKey: string, deviceKey: string, rec: DeviceRecord | undefined): void {
    const value =
      rec === undefined
        ? MISSING_VALUE
        : JSON.stringify({ deviceSecret: rec.deviceSecret, assetId: rec.assetId });
    this.#write(this.#o.keys.device(productKey, deviceKey), value, rec !== undefined);
  }

  /** Caches a product record, or a miss when `rec` is `undefined` (not awaited). */
  storeProduct(productKey: string, rec: ProductRecord | undefined): void {
    const value =
      rec === undefined
        ? MISSING_VALUE
        : JSON.stringify({
            productSecret: rec.productSecret,
            dynamicRegistration: rec.dynamicRegistration,
          });
    this.#write(this.#o.keys.product(productKey), value, rec !== undefined);
  }

  /** Resolves when every write started so far has finished (or failed). */
  async settle(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  #write(key: string, value: string, positive: boolean): void {
    const ttl = Math.max(1, Math.round(positive ? this.#o.ttlMs : this.#o.negativeTtlMs));
    const p: Promise<void> = this.#o.redis.client
      .set(key, value, 'PX', ttl)
      .then(
        () => {},
        () => {
          this.#o.stats.redisWriteErrors++;
        },
      )
      .finally(() => this.#pending.delete(p));
    this.#pending.add(p);
  }

  #decode<V extends object>(
    text: string | null | undefined,
    record: (obj: unknown) => V | undefined,
  ): CacheSlot<V> | undefined {
    if (text === null || text === undefined) return undefined;
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch {
      this.#o.stats.redisBadValues++;
      return undefined;
    }
    if (unknownSchema.safeParse(obj).success) return MISSING;
    const value = record(obj);
    if (value === undefined) {
      this.#o.stats.redisBadValues++;
      return undefined;
    }
    return { value };
  }
}
