/**
 * Dynamic activation (secureMode 3, spec/enos-coap-protocol.md §4): gives a device its
 * secret, and the same secret again on every repeated activation, from any pod.
 *
 * Steps, one at a time per device within a pod (concurrent calls join):
 * 1. The product must exist and allow dynamic registration (looked up through the chain).
 * 2. An activation already stored (Redis `{prefix}:activation:{pk}:{dk}`, or the in-process
 *    store without Redis) is returned as is.
 * 3. Otherwise the secret comes from the registry (`POST …/activate`; on 409 "activated
 *    before" it is read with `GET /devices/{pk}/{dk}`) when one is configured; else from the
 *    devices file (the device's own secret) or, for a device the file does not list, a new
 *    random one (32 base62 characters) with a new asset id (16 base62 characters).
 * 4. It is stored with `SET NX`; when another pod stored one first, theirs is returned.
 * 5. The device's record goes into the in-process LRU; other pods find the activation
 *    through the chain's Redis step (the activation wins over cached entries).
 *
 * When the store cannot be read, the answer is `unavailable` (the device retries later). When
 * it cannot be written, a secret that the registry or the file knows is still returned; a
 * generated one is not (it would be lost), and the answer is `unavailable`.
 */
import { randomBytes } from 'node:crypto';
import type { ActivationStore, StoredActivation } from './activation-store.js';
import type { DeviceRecord, DevicesFile } from './devices-file.js';
import { recordFromActivation, redisOutcome } from './chain.js';
import type { Registry } from './registry-client.js';
import { SingleFlight } from './single-flight.js';
import type { SecretSource } from './source.js';
import type { ActivationOutcome, AuthStats } from './stats.js';

export type ActivationResult =
  | { readonly ok: true; readonly deviceSecret: string; readonly assetId: string }
  | {
      readonly ok: false;
      readonly reason: 'unknown-product' | 'dynamic-registration-disabled' | 'unavailable';
    };

type Refusal = Extract<ActivationResult, { ok: false }>['reason'];

export interface Activator {
  activate(productKey: string, deviceKey: string): Promise<ActivationResult>;
}

export interface DeviceActivatorOptions {
  /** Where the product is looked up (the chain). */
  readonly source: SecretSource;
  readonly store: ActivationStore;
  readonly registry?: Registry | undefined;
  readonly file?: DevicesFile | undefined;
  readonly stats: AuthStats;
  /** Called with the device's record after every successful activation. */
  readonly onActivated?: ((rec: DeviceRecord) => void) | undefined;
}

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

export const GENERATED_SECRET_LENGTH = 32;
export const GENERATED_ASSET_ID_LENGTH = 16;

export class DeviceActivator implements Activator {
  readonly #o: DeviceActivatorOptions;
  readonly #flights: SingleFlight<string, ActivationResult>;

  constructor(o: DeviceActivatorOptions) {
    this.#o = o;
    this.#flights = new SingleFlight(() => {
      o.stats.singleFlightJoins++;
    });
  }

  activate(productKey: string, deviceKey: string): Promise<ActivationResult> {
    return this.#flights.run(`${productKey}\u0000${deviceKey}`, () =>
      this.#activate(productKey, deviceKey),
    );
  }

  async #activate(productKey: string, deviceKey: string): Promise<ActivationResult> {
    const { source, store, stats } = this.#o;
    let product;
    try {
      product = await source.product(productKey);
    } catch {
      return this.#refuse('unavailable');
    }
    if (product === undefined) return this.#refuse('unknown-product');
    if (!product.dynamicRegistration) return this.#refuse('dynamic-registration-disabled');

    let stored: StoredActivation | undefined;
    try {
      stored = await store.get(productKey, deviceKey);
    } catch (err: unknown) {
      stats.count('activation', redisOutcome(err));
      return this.#refuse('unavailable');
    }
    if (stored !== undefined) {
      stats.count('activation', 'hit');
      return this.#grant(productKey, deviceKey, stored, 'stored');
    }
    stats.count('activation', 'miss');

    const candidate = await this.#newActivation(productKey, deviceKey);
    if (typeof candidate === 'string') return this.#refuse(candidate);

    try {
      const { stored: winner, ours } = await store.putIfAbsent(productKey, deviceKey, candidate);
      return this.#grant(productKey, deviceKey, winner, ours ? candidate.source : 'race-lost');
    } catch {
      stats.activationStoreErrors++;
      // the registry and the file will give the same secret again; a generated one would be lost
      if (candidate.source === 'generated') return this.#refuse('unavailable');
      return this.#grant(productKey, deviceKey, candidate, candidate.source);
    }
  }

  /** A new activation from the registry, else from the file, else generated. */
  async #newActivation(productKey: string, deviceKey: string): Promise<StoredActivation | Refusal> {
    const { registry, file } = this.#o;
    if (registry !== undefined) return this.#fromRegistry(registry, productKey, deviceKey);
    if (file === undefined) return 'unavailable';
    const rec = file.device(productKey, deviceKey);
    if (rec !== undefined) return activation(rec.deviceSecret, rec.assetId ?? '', 'file');
    return activation(
      randomBase62(GENERATED_SECRET_LENGTH),
      randomBase62(GENERATED_ASSET_ID_LENGTH),
      'generated',
    );
  }

  async #fromRegistry(
    registry: Registry,
    productKey: string,
    deviceKey: string,
  ): Promise<StoredActivation | Refusal> {
    try {
      const r = await registry.activate(productKey, deviceKey);
      switch (r.kind) {
        case 'activated':
          return activation(r.deviceSecret, r.assetId, 'registry');
        case 'already-activated': {
          // activated before, but the answer was lost (timeout) or the store was wiped
          const rec = await registry.device(productKey, deviceKey);
          if (rec === undefined) return 'unavailable';
          return activation(rec.deviceSecret, rec.assetId ?? '', 'registry');
        }
        default:
          return r.kind;
      }
    } catch {
      return 'unavailable';
    }
  }

  #grant(
    productKey: string,
    deviceKey: string,
    a: StoredActivation,
    outcome: ActivationOutcome,
  ): ActivationResult {
    this.#o.stats.activations[outcome]++;
    this.#o.onActivated?.(recordFromActivation(productKey, deviceKey, a));
    return { ok: true, deviceSecret: a.deviceSecret, assetId: a.assetId };
  }

  #refuse(reason: Refusal): ActivationResult {
    this.#o.stats.activations[reason]++;
    return { ok: false, reason };
  }
}

function activation(
  deviceSecret: string,
  assetId: string,
  source: StoredActivation['source'],
): StoredActivation {
  return { deviceSecret, assetId, source, activatedAt: new Date().toISOString() };
}
