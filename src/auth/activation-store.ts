/**
 * Where activations are kept so a repeated activation of the same device gets the same
 * secret (spec/enos-coap-protocol.md §4: upstream activation is one-shot). With Redis the
 * store is shared by all pods (`{prefix}:activation:{pk}:{dk}`, no TTL, written with
 * `SET NX`: the first pod to store wins); without Redis it is a bounded in-process map.
 */
import { z } from 'zod';
import type { RedisConnection } from './redis-connection.js';
import type { RedisKeys } from './redis-keys.js';
import { assetIdSchema, secretSchema } from './records.js';
import { SecretSourceError, type MaybePromise } from './source.js';

/** Where an activation's secret came from. */
export type ActivationSource = 'registry' | 'file' | 'generated';

export interface StoredActivation {
  readonly deviceSecret: string;
  /** May be empty: a devices file entry without `assetId`. */
  readonly assetId: string;
  readonly source: ActivationSource;
  /** ISO 8601 time of the activation. */
  readonly activatedAt: string;
}

export interface ActivationStore {
  /** The stored activation, or `undefined`. Rejects (or throws) when the store is unreachable. */
  get(productKey: string, deviceKey: string): MaybePromise<StoredActivation | undefined>;
  /**
   * Stores `a` unless an activation is already stored; returns the one that is stored now
   * and whether it is `a`.
   */
  putIfAbsent(
    productKey: string,
    deviceKey: string,
    a: StoredActivation,
  ): Promise<{ readonly stored: StoredActivation; readonly ours: boolean }>;
}

const storedSchema = z.object({
  deviceSecret: secretSchema,
  assetId: z.union([z.literal(''), assetIdSchema]),
  source: z.enum(['registry', 'file', 'generated']),
  activatedAt: z.string().max(64),
});

/** Parses a stored activation; `undefined` when the text is not one. */
export function decodeActivation(text: string): StoredActivation | undefined {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    return undefined;
  }
  const parsed = storedSchema.safeParse(obj);
  return parsed.success ? Object.freeze(parsed.data) : undefined;
}

export function encodeActivation(a: StoredActivation): string {
  return JSON.stringify({
    deviceSecret: a.deviceSecret,
    assetId: a.assetId,
    source: a.source,
    activatedAt: a.activatedAt,
  });
}

/** In-process store for stacks without Redis. Reads are synchronous. */
export class MemoryActivationStore implements ActivationStore {
  readonly #map = new Map<string, StoredActivation>();
  readonly #max: number;

  /** @param max most activations kept; beyond it `putIfAbsent` rejects (`SOURCE_UNAVAILABLE`). */
  constructor(max: number) {
    this.#max = max;
  }

  get(productKey: string, deviceKey: string): StoredActivation | undefined {
    return this.#map.get(`${productKey}\u0000${deviceKey}`);
  }

  putIfAbsent(
    productKey: string,
    deviceKey: string,
    a: StoredActivation,
  ): Promise<{ stored: StoredActivation; ours: boolean }> {
    const key = `${productKey}\u0000${deviceKey}`;
    const current = this.#map.get(key);
    if (current !== undefined) return Promise.resolve({ stored: current, ours: false });
    if (this.#map.size >= this.#max) {
      return Promise.reject(new SecretSourceError('SOURCE_UNAVAILABLE', 'activation store: full'));
    }
    const stored = Object.freeze({ ...a });
    this.#map.set(key, stored);
    return Promise.resolve({ stored, ours: true });
  }

  get size(): number {
    return this.#map.size;
  }
}

/** The shared store in Redis. */
export class RedisActivationStore implements ActivationStore {
  constructor(
    private readonly redis: RedisConnection,
    private readonly keys: RedisKeys,
  ) {}

  async get(productKey: string, deviceKey: string): Promise<StoredActivation | undefined> {
    const text = await this.redis.client.get(this.keys.activation(productKey, deviceKey));
    if (text === null) return undefined;
    const a = decodeActivation(text);
    if (a === undefined) {
      throw new SecretSourceError('SOURCE_BAD_RESPONSE', 'activation store: malformed entry');
    }
    return a;
  }

  async putIfAbsent(
    productKey: string,
    deviceKey: string,
    a: StoredActivation,
  ): Promise<{ stored: StoredActivation; ours: boolean }> {
    const key = this.keys.activation(productKey, deviceKey);
    const set = await this.redis.client.set(key, encodeActivation(a), 'NX');
    if (set === 'OK') return { stored: a, ours: true };
    const theirs = await this.get(productKey, deviceKey);
    if (theirs === undefined) {
      // stored by another pod and deleted since (by an operator): let the device retry
      throw new SecretSourceError('SOURCE_UNAVAILABLE', 'activation store: entry vanished');
    }
    return { stored: theirs, ours: false };
  }
}
