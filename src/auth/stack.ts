/**
 * Builds the secret chain from the configuration (called by the composition root). Any
 * subset of devices file, Redis and registry may be given:
 *
 * | configured       | device lookups                          | activation store        |
 * | ---------------- | --------------------------------------- | ----------------------- |
 * | file             | file, then in-process activations       | in-process map          |
 * | registry         | LRU → registry                          | in-process map          |
 * | Redis + registry | LRU → Redis → registry (production)     | Redis                   |
 * | Redis + file     | file, LRU → Redis (activations)         | Redis                   |
 */
import { DeviceActivator, type Activator } from './activation.js';
import {
  MemoryActivationStore,
  RedisActivationStore,
  type ActivationStore,
} from './activation-store.js';
import { SecretChain } from './chain.js';
import type { DeviceRecord, DevicesFile, ProductRecord } from './devices-file.js';
import { MemoryCache } from './memory-cache.js';
import { RedisCache } from './redis-cache.js';
import { durabilityFor, type RedisTarget } from '../redis/client.js';
import type { Clock } from '../time/clock.js';
import { RedisConnection } from './redis-connection.js';
import { RedisKeys } from './redis-keys.js';
import { RegistryClient } from './registry-client.js';
import type { SecretSource } from './source.js';
import { AuthStats, type RedisState } from './stats.js';

export interface SecretStackOptions {
  /** The embedded source (`--devices`). */
  readonly devicesFile?: DevicesFile | undefined;
  /**
   * Shared cache and activation store; without it the one-shot state of devices lives in this
   * process only (and a restart forgets it).
   */
  readonly redisUrl?: RedisTarget | undefined;
  /** Namespace of every Redis key (see `redis-keys.ts`). */
  readonly redisPrefix: string;
  readonly registryUrl?: string | undefined;
  readonly registryToken?: string | undefined;
  /** Deadline of one registry request in ms. */
  readonly registryTimeoutMs: number;
  /**
   * Entries of each in-process LRU (devices, products, devices known activated); also caps
   * the in-process activation store (devices activated or connected, without Redis).
   */
  readonly cacheSize: number;
  /** Lifetime of a record in the in-process LRU, in ms. */
  readonly cacheTtlMs: number;
  /** Lifetime of a registry answer in Redis, in ms. */
  readonly redisTtlMs: number;
  /** Lifetime of a remembered miss (LRU and Redis), in ms. */
  readonly negativeTtlMs: number;
  /** Clock in ms for the LRU TTLs (tests). */
  readonly now?: (() => number) | undefined;
  /** The registry's time: its circuit breaker's cool-down and its request deadline. @default systemClock */
  readonly clock?: Clock | undefined;
  /** Per-command Redis deadline in ms (setting `redisCommandTimeoutMs`). */
  readonly redisCommandTimeoutMs: number;
  /**
   * Replicas that must have an activation (or secureMode 2 mark) before it counts; a claim
   * that fewer replicas confirm within the command timeout fails. @default 0
   */
  readonly redisWaitReplicas?: number | undefined;
  /** Cap of the Redis reconnect backoff in ms. @default 1000 */
  readonly redisMaxBackoffMs?: number | undefined;
  /** Consecutive registry failures that open the circuit breaker (0: never). @default 5 */
  readonly breakerThreshold?: number | undefined;
  /** How long an open breaker refuses registry requests, in ms. @default 5000 */
  readonly breakerCooldownMs?: number | undefined;
}

export interface SecretStack {
  /** For `new PskResolver(stack.source)`. */
  readonly source: SecretSource;
  readonly activator: Activator;
  readonly stats: AuthStats;
  redisState(): RedisState;
  /** Waits for pending cache writes, disconnects Redis, closes the registry pool. */
  close(): Promise<void>;
}

export function createSecretStack(o: SecretStackOptions): SecretStack {
  let redis: RedisConnection | undefined;
  /** Claims that wait for replicas go on a connection of their own (their WAIT holds it). */
  let claims: RedisConnection | undefined;
  // connected once every connection is
  const stats = new AuthStats(() => {
    const state = redis?.state ?? 'off';
    return state === 'connected' && claims !== undefined ? claims.state : state;
  });
  const keys = new RedisKeys(o.redisPrefix);
  // versions before the hash-tag layout never ran on a cluster: nothing to look for there
  const legacyKeys = typeof o.redisUrl === 'string' || o.redisUrl?.kind === 'sentinel';
  if (o.redisUrl !== undefined) {
    redis = new RedisConnection({
      url: o.redisUrl,
      stats,
      commandTimeoutMs: o.redisCommandTimeoutMs,
      maxBackoffMs: o.redisMaxBackoffMs,
    });
  }
  const redisCache =
    redis === undefined
      ? undefined
      : new RedisCache({
          redis,
          keys,
          ttlMs: o.redisTtlMs,
          negativeTtlMs: o.negativeTtlMs,
          stats,
          legacyKeys,
        });
  const registry =
    o.registryUrl === undefined
      ? undefined
      : new RegistryClient({
          url: o.registryUrl,
          token: o.registryToken,
          timeoutMs: o.registryTimeoutMs,
          breakerThreshold: o.breakerThreshold,
          breakerCooldownMs: o.breakerCooldownMs,
          stats,
          clock: o.clock,
        });
  const memory = {
    max: o.cacheSize,
    ttlMs: o.cacheTtlMs,
    negativeTtlMs: o.negativeTtlMs,
    now: o.now,
  };
  let localActivations: MemoryActivationStore | undefined;
  let store: ActivationStore;
  if (redis === undefined || o.redisUrl === undefined) {
    store = localActivations = new MemoryActivationStore(o.cacheSize);
  } else {
    const durability = durabilityFor(o.redisWaitReplicas ?? 0, o.redisCommandTimeoutMs);
    if (durability !== undefined) {
      claims = new RedisConnection({
        url: o.redisUrl,
        stats,
        commandTimeoutMs: o.redisCommandTimeoutMs,
        maxBackoffMs: o.redisMaxBackoffMs,
      });
    }
    store = new RedisActivationStore(redis, keys, {
      writer: claims,
      legacyKeys,
      durability,
    });
  }
  const chain = new SecretChain({
    stats,
    devices: new MemoryCache<DeviceRecord>(memory),
    products: new MemoryCache<ProductRecord>(memory),
    file: o.devicesFile,
    redis: redisCache,
    registry,
    localActivations,
  });
  const activator = new DeviceActivator({
    source: chain,
    store,
    registry,
    file: o.devicesFile,
    stats,
    known: memory,
    onActivated: (rec) => chain.remember(rec),
  });

  let closing: Promise<void> | undefined;
  return {
    source: chain,
    activator,
    stats,
    redisState: () => stats.redisState,
    close: () => {
      closing ??= (async () => {
        await redisCache?.settle();
        redis?.close();
        claims?.close();
        await registry?.close();
      })();
      return closing;
    },
  };
}
