/**
 * The one-shot state of devices (docs/protocol.md, "Dynamic activation"): a device gets its secret
 * through activation at most once. An entry exists for every device that was activated (the
 * activation handed out, kept so other pods find the secret without asking the registry)
 * or that has connected with its own secret (secureMode 2: a mark, no secret). Either
 * means "no activation any more". Entries never expire and are written with "set if
 * absent", so the first writer wins and nothing is overwritten (a claim sent twice finds its
 * own entry: each activation carries a random `claimId`).
 *
 * With Redis the store is shared by all pods (`{prefix}:activation:{pk/dk}`, no TTL); it
 * lasts as long as Redis keeps its data (see docs/operations.md). Without Redis it is a
 * bounded in-process map that a restart empties.
 *
 * Entries written by versions before the hash-tag layout (`{prefix}:activation:{pk}:{dk}`)
 * are still honoured unless `legacyKeys` is off (a cluster, which those versions never
 * used): a device without an entry under the new key is looked up under the old one, and
 * an entry found there is copied to the new key (set if absent) before it is answered, so
 * the old key is read once per device at most while it has no new entry.
 */
import { z } from 'zod';
import { writeDurably, type Durability } from '../redis/client.js';
import type { RedisConnection } from './redis-connection.js';
import type { RedisKeys } from './redis-keys.js';
import { assetIdSchema, secretSchema } from './records.js';
import { SecretSourceError, type MaybePromise } from './source.js';

/**
 * Where an activation's secret came from. `generated` is read only: earlier versions made
 * up secrets for devices the devices file did not list.
 */
export type ActivationSource = 'registry' | 'file' | 'generated';

/** The activation handed to a device. */
export interface StoredActivation {
  readonly deviceSecret: string;
  /** May be empty: a devices file entry without `assetId`. */
  readonly assetId: string;
  readonly source: ActivationSource;
  /** ISO 8601 time of the activation. */
  readonly activatedAt: string;
  /**
   * Random, one per activation attempt: a claim sent again (a client retrying a command whose
   * connection closed after it ran) finds its own entry by it. Absent in older entries.
   */
  readonly claimId?: string;
}

/** The device has connected with its own secret (secureMode 2); no secret is kept. */
export interface ConnectedMark {
  readonly mark: 'connected';
  /** ISO 8601 time of the first such connection seen. */
  readonly connectedAt: string;
}

/** What the store holds for a device: either way, the device may not activate again. */
export type ActivationEntry = StoredActivation | ConnectedMark;

export function isActivation(e: ActivationEntry): e is StoredActivation {
  return !('mark' in e);
}

export function connectedMark(): ConnectedMark {
  return { mark: 'connected', connectedAt: new Date().toISOString() };
}

export interface ActivationStore {
  /** The device's entry, or `undefined`. Rejects (or throws) when the store is unreachable. */
  get(productKey: string, deviceKey: string): MaybePromise<ActivationEntry | undefined>;
  /**
   * Stores `e` unless the device has an entry already; resolves to whether `e` was stored.
   * Rejects when the store is unreachable or full.
   */
  claim(productKey: string, deviceKey: string, e: ActivationEntry): Promise<boolean>;
  /**
   * Removes the device's entry if it is `e`: undoes a claim that rejected although its write
   * may have happened (the reply or the replicas' confirmation was lost), so that the refused
   * device may activate again. Resolves to whether an entry was removed; rejects when the
   * store is unreachable.
   */
  release(productKey: string, deviceKey: string, e: ActivationEntry): Promise<boolean>;
}

const activationSchema = z.object({
  deviceSecret: secretSchema,
  assetId: z.union([z.literal(''), assetIdSchema]),
  source: z.enum(['registry', 'file', 'generated']),
  activatedAt: z.string().max(64),
  claimId: z.string().max(64).optional(),
});

const markSchema = z.object({ mark: z.literal('connected'), connectedAt: z.string().max(64) });

/** Parses a stored entry; `undefined` when the text is not one. */
export function decodeActivation(text: string): ActivationEntry | undefined {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    return undefined;
  }
  const a = activationSchema.safeParse(obj);
  if (a.success) return Object.freeze(a.data);
  const m = markSchema.safeParse(obj);
  return m.success ? Object.freeze(m.data) : undefined;
}

export function encodeActivation(e: ActivationEntry): string {
  if (!isActivation(e)) return JSON.stringify({ mark: e.mark, connectedAt: e.connectedAt });
  return JSON.stringify({
    deviceSecret: e.deviceSecret,
    assetId: e.assetId,
    source: e.source,
    activatedAt: e.activatedAt,
    ...(e.claimId !== undefined ? { claimId: e.claimId } : {}),
  });
}

/** In-process store for stacks without Redis. Reads are synchronous. */
export class MemoryActivationStore implements ActivationStore {
  readonly #map = new Map<string, ActivationEntry>();
  readonly #max: number;

  /** @param max most devices kept; beyond it `claim` rejects (`SOURCE_UNAVAILABLE`). */
  constructor(max: number) {
    this.#max = max;
  }

  get(productKey: string, deviceKey: string): ActivationEntry | undefined {
    return this.#map.get(`${productKey}\u0000${deviceKey}`);
  }

  claim(productKey: string, deviceKey: string, e: ActivationEntry): Promise<boolean> {
    const key = `${productKey}\u0000${deviceKey}`;
    if (this.#map.has(key)) return Promise.resolve(false);
    if (this.#map.size >= this.#max) {
      return Promise.reject(new SecretSourceError('SOURCE_UNAVAILABLE', 'activation store: full'));
    }
    this.#map.set(key, Object.freeze({ ...e }));
    return Promise.resolve(true);
  }

  release(productKey: string, deviceKey: string, e: ActivationEntry): Promise<boolean> {
    const key = `${productKey}\u0000${deviceKey}`;
    const cur = this.#map.get(key);
    if (cur === undefined || encodeActivation(cur) !== encodeActivation(e)) {
      return Promise.resolve(false);
    }
    this.#map.delete(key);
    return Promise.resolve(true);
  }

  get size(): number {
    return this.#map.size;
  }
}

/**
 * The entry kept under the pre-hash-tag key, copied to the new key when found (so a claim
 * under the new key cannot hide it); `null` when there is none.
 */
export async function adoptLegacyActivation(
  redis: RedisConnection,
  keys: RedisKeys,
  productKey: string,
  deviceKey: string,
): Promise<string | null> {
  const text = await redis.client.get(keys.legacyActivation(productKey, deviceKey));
  if (text === null) return null;
  const key = keys.activation(productKey, deviceKey);
  // first writer wins: if a new entry appeared meanwhile, that one is the answer
  if ((await redis.client.set(key, text, 'NX')) === 'OK') return text;
  return await redis.client.get(key);
}

export interface RedisActivationStoreOptions {
  /** Whether entries under the pre-hash-tag key are honoured. @default true */
  readonly legacyKeys?: boolean | undefined;
  /** Replicas that must have a claim before it counts (else the claim rejects). */
  readonly durability?: Durability | undefined;
  /**
   * The connection for claims and releases (with `durability`: their `WAIT` holds the
   * connection it is sent on, and the reads must not queue behind it). Default: `redis`.
   */
  readonly writer?: RedisConnection | undefined;
}

/**
 * Sets KEYS[1] to ARGV[1] unless it holds something else: 1 when the entry is ARGV[1] now.
 * Unlike SET NX, a claim that ran already (its reply lost, the client sent it again: ioredis
 * does on a cluster when the connection closes) answers 1 again instead of "taken".
 */
const CLAIM = `local v = redis.call('GET', KEYS[1])
if not v then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
if v == ARGV[1] then return 1 end
return 0`;

/** Deletes KEYS[1] if it holds ARGV[1] (an entry that is someone else's stays). */
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** The shared store in Redis. */
export class RedisActivationStore implements ActivationStore {
  private readonly legacyKeys: boolean;
  private readonly durability: Durability | undefined;
  private readonly writer: RedisConnection;

  constructor(
    private readonly redis: RedisConnection,
    private readonly keys: RedisKeys,
    o: RedisActivationStoreOptions = {},
  ) {
    this.legacyKeys = o.legacyKeys !== false;
    this.durability = o.durability;
    this.writer = o.writer ?? redis;
  }

  async get(productKey: string, deviceKey: string): Promise<ActivationEntry | undefined> {
    let text = await this.redis.client.get(this.keys.activation(productKey, deviceKey));
    if (text === null && this.legacyKeys) {
      text = await adoptLegacyActivation(this.redis, this.keys, productKey, deviceKey);
    }
    if (text === null) return undefined;
    const e = decodeActivation(text);
    if (e === undefined) {
      // something is there: whatever it is, it is not a licence to activate
      throw new SecretSourceError('SOURCE_BAD_RESPONSE', 'activation store: malformed entry');
    }
    return e;
  }

  async claim(productKey: string, deviceKey: string, e: ActivationEntry): Promise<boolean> {
    const key = this.keys.activation(productKey, deviceKey);
    if (
      this.legacyKeys &&
      (await adoptLegacyActivation(this.redis, this.keys, productKey, deviceKey)) !== null
    ) {
      return false;
    }
    const value = encodeActivation(e);
    // with durability: a claim counts only once replicas have it (a failover keeps it)
    const reply = await writeDurably(this.writer.client, this.durability, (p) =>
      p.eval(CLAIM, 1, key, value),
    );
    return reply === 1;
  }

  async release(productKey: string, deviceKey: string, e: ActivationEntry): Promise<boolean> {
    const key = this.keys.activation(productKey, deviceKey);
    // after the claim on its connection: a claim the client gave up on (timed out behind
    // other claims' WAITs) still runs first, and is removed, even when this answer is lost
    return (await this.writer.client.eval(RELEASE, 1, key, encodeActivation(e))) === 1;
  }
}
