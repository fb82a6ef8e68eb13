/**
 * Dynamic activation (secureMode 3, docs/protocol.md, "Dynamic activation"), one-shot: the product
 * secret is shared by every unit of a product, so a session holding it learns a device's
 * secret only for a device that was never activated and has never connected with its own
 * secret. Everything else is refused, on every pod.
 *
 * Steps of one activation:
 * 1. The product must exist and allow dynamic registration (looked up through the chain).
 * 2. The device must have no entry in the activation store (Redis
 *    `{prefix}:activation:{pk/dk}`, or the in-process store without Redis): an entry means
 *    it was activated, or connected in secureMode 2, before → `already-activated`.
 * 3. The secret: with a registry, `POST …/activate` (its `409` is final:
 *    `already-activated`, the secret is never read back); without one, the devices file's
 *    entry for the device (a device the file does not list is `unknown-device`: nothing is
 *    made up).
 * 4. The activation is stored with "set if absent". Only the request that stored it answers
 *    with the secret; one that finds an entry (a racing session, here or on another pod)
 *    gets `already-activated`.
 * 5. The device's record goes into the in-process LRU; other pods find the activation
 *    through the chain's Redis step.
 *
 * When the store cannot be read, the answer is `unavailable` (the device retries later).
 * When it cannot be written, a secret the registry handed out is still returned (the
 * registry itself is one-shot and will not hand it out again); a secret from the devices
 * file is not (nothing would stop a second activation), and the answer is `unavailable`:
 * then the claim is released (removed if it was written all the same and is still ours), so
 * the retry is not refused as `already-activated`. A release that cannot reach the store is
 * tried again in the background (250 ms doubling to 4 s, 10 attempts in about 25 s: a crashed
 * master's replica is promoted within seconds); a device that retries before then is refused
 * until it does (docs/operations.md, Redis: a crashed master).
 *
 * A device whose answer was lost retransmits the same CoAP request: the CoAP layer answers
 * that from its exchange cache without calling this code again. A new request is a new
 * activation, and is refused.
 *
 * {@link DeviceActivator.connected} marks a device that completed a secureMode 2 handshake,
 * once per pod (devices known to have an entry are skipped).
 */
import { randomBytes } from 'node:crypto';
import { connectedMark, type ActivationStore, type StoredActivation } from './activation-store.js';
import { deviceCacheKey, recordFromActivation, redisOutcome } from './chain.js';
import type { DeviceRecord, DevicesFile } from './devices-file.js';
import { MemoryCache, type MemoryCacheOptions } from './memory-cache.js';
import type { Registry } from './registry-client.js';
import type { SecretSource } from './source.js';
import type { AuthStats } from './stats.js';
import { systemClock, type Clock } from '../time/clock.js';

export type ActivationRefusal =
  | 'unknown-product'
  | 'unknown-device'
  | 'dynamic-registration-disabled'
  | 'already-activated'
  | 'unavailable';

export type ActivationResult =
  | { readonly ok: true; readonly deviceSecret: string; readonly assetId: string }
  | { readonly ok: false; readonly reason: ActivationRefusal };

export interface Activator {
  activate(productKey: string, deviceKey: string): Promise<ActivationResult>;
  /**
   * The device completed a secureMode 2 handshake (it has its secret): it may not activate
   * from now on. Not awaited; cheap when the device is known to have an entry already.
   */
  connected(productKey: string, deviceKey: string): void;
}

export interface DeviceActivatorOptions {
  /** Where the product is looked up (the chain). */
  readonly source: SecretSource;
  readonly store: ActivationStore;
  readonly registry?: Registry | undefined;
  readonly file?: DevicesFile | undefined;
  readonly stats: AuthStats;
  /** Size and lifetime of the in-process memory of devices known to have an entry. */
  readonly known: MemoryCacheOptions;
  /** Called with the device's record after every successful activation. */
  readonly onActivated?: ((rec: DeviceRecord) => void) | undefined;
  /** Times the background retries of a failed release. Default: the system clock. */
  readonly clock?: Clock | undefined;
}

/** A release that failed is tried again after this long, doubling up to the cap. */
const RELEASE_RETRY_MS = 250;
const RELEASE_RETRY_MAX_MS = 4_000;
/** Attempts per release in all (the first one included). */
const RELEASE_ATTEMPTS = 10;
/** Releases waiting to be tried again at most; beyond, a failed one is given up at once. */
const RELEASES_PENDING_MAX = 10_000;

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** `length` uniformly random base62 characters (rejection sampling, no modulo bias). */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const b of randomBytes(length * 2)) {
      if (b < 248) out += BASE62[b % 62] ?? '';
      if (out.length === length) break;
    }
  }
  return out;
}

/** Length of the secrets the registry stand-in makes up. */
export const GENERATED_SECRET_LENGTH = 32;
/** Length of the asset ids the registry stand-in makes up. */
export const GENERATED_ASSET_ID_LENGTH = 16;

const KNOWN = Object.freeze({});

export class DeviceActivator implements Activator {
  readonly #o: DeviceActivatorOptions;
  /** Devices known to have an entry in the store (so `connected` need not write). */
  readonly #known: MemoryCache<object>;
  readonly #clock: Clock;
  #releasesPending = 0;

  constructor(o: DeviceActivatorOptions) {
    this.#o = o;
    this.#clock = o.clock ?? systemClock;
    this.#known = new MemoryCache<object>(o.known);
  }

  async activate(productKey: string, deviceKey: string): Promise<ActivationResult> {
    const { source, store, stats } = this.#o;
    let product;
    try {
      product = await source.product(productKey);
    } catch {
      return this.#refuse('unavailable');
    }
    if (product === undefined) return this.#refuse('unknown-product');
    if (!product.dynamicRegistration) return this.#refuse('dynamic-registration-disabled');

    const key = deviceCacheKey(productKey, deviceKey);
    try {
      if ((await store.get(productKey, deviceKey)) !== undefined) {
        stats.count('activation', 'hit');
        this.#known.set(key, KNOWN);
        return this.#refuse('already-activated');
      }
    } catch (err: unknown) {
      stats.count('activation', redisOutcome(err));
      return this.#refuse('unavailable');
    }
    stats.count('activation', 'miss');

    const candidate = await this.#newActivation(productKey, deviceKey);
    if (typeof candidate === 'string') {
      if (candidate === 'already-activated') this.#known.set(key, KNOWN);
      return this.#refuse(candidate);
    }

    let ours: boolean;
    try {
      ours = await store.claim(productKey, deviceKey, candidate);
    } catch {
      stats.activationStoreErrors++;
      // the registry will not hand this secret out again; the file would, to anyone
      if (candidate.source !== 'registry') {
        // the claim may be stored all the same (its reply or the replicas' WAIT was lost, as
        // when the master crashes): undo it, or the device's retry would be refused for good
        await this.#release(productKey, deviceKey, candidate, 1);
        return this.#refuse('unavailable');
      }
      ours = true;
    }
    this.#known.set(key, KNOWN);
    if (!ours) return this.#refuse('already-activated');
    stats.activations[candidate.source === 'registry' ? 'registry' : 'file']++;
    this.#o.onActivated?.(recordFromActivation(productKey, deviceKey, candidate));
    return { ok: true, deviceSecret: candidate.deviceSecret, assetId: candidate.assetId };
  }

  connected(productKey: string, deviceKey: string): void {
    const key = deviceCacheKey(productKey, deviceKey);
    if (this.#known.get(key) !== undefined) return;
    this.#o.store.claim(productKey, deviceKey, connectedMark()).then(
      () => this.#known.set(key, KNOWN),
      () => this.#o.stats.activationStoreErrors++, // not remembered: the next handshake tries again
    );
  }

  /**
   * Removes a claim that was refused but may be stored all the same (if it is still ours);
   * one that cannot reach the store is tried again in the background, with backoff.
   */
  async #release(
    productKey: string,
    deviceKey: string,
    candidate: StoredActivation,
    attempt: number,
  ): Promise<void> {
    const { store, stats } = this.#o;
    try {
      if (await store.release(productKey, deviceKey, candidate)) stats.activationsReleased++;
      return;
    } catch {
      stats.activationStoreErrors++;
    }
    if (attempt >= RELEASE_ATTEMPTS || this.#releasesPending >= RELEASES_PENDING_MAX) {
      stats.activationReleasesAbandoned++;
      return;
    }
    this.#releasesPending++;
    const delay = Math.min(RELEASE_RETRY_MAX_MS, RELEASE_RETRY_MS * 2 ** (attempt - 1));
    this.#clock.setTimeout(() => {
      this.#releasesPending--;
      void this.#release(productKey, deviceKey, candidate, attempt + 1);
    }, delay);
  }

  /** The secret for a new activation: from the registry, else from the devices file. */
  async #newActivation(
    productKey: string,
    deviceKey: string,
  ): Promise<StoredActivation | ActivationRefusal> {
    const { registry, file } = this.#o;
    if (registry !== undefined) return this.#fromRegistry(registry, productKey, deviceKey);
    if (file === undefined) return 'unavailable';
    const rec = file.device(productKey, deviceKey);
    if (rec === undefined) return 'unknown-device';
    return activation(rec.deviceSecret, rec.assetId ?? '', 'file');
  }

  async #fromRegistry(
    registry: Registry,
    productKey: string,
    deviceKey: string,
  ): Promise<StoredActivation | ActivationRefusal> {
    let r;
    try {
      r = await registry.activate(productKey, deviceKey);
    } catch {
      return 'unavailable';
    }
    switch (r.kind) {
      case 'activated':
        return activation(r.deviceSecret, r.assetId, 'registry');
      case 'already-activated': // final: the secret is never read back for a secureMode 3 session
        return 'already-activated';
      default:
        return r.kind;
    }
  }

  #refuse(reason: ActivationRefusal): ActivationResult {
    this.#o.stats.activations[reason]++;
    return { ok: false, reason };
  }
}

function activation(
  deviceSecret: string,
  assetId: string,
  source: StoredActivation['source'],
): StoredActivation {
  return {
    deviceSecret,
    assetId,
    source,
    activatedAt: new Date().toISOString(),
    claimId: randomBase62(16),
  };
}
