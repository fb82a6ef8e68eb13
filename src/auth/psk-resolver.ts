/**
 * Turns a PSK identity into a key: parse the EnOS identity, fetch the secret from the
 * source, derive SHA-256(secret)[8..24). Synchronous when the source is (a hit in memory
 * costs no promise); asynchronous otherwise.
 */
import { derivePsk, parseIdentity, type DeviceIdentity } from '../enos/index.js';
import {
  isPromise,
  type DeviceRecord,
  type LookupObserver,
  type ProductRecord,
  type SecretSource,
} from './source.js';

export type PskRejectKind = 'unknown' | 'forbidden' | 'unavailable';

export type PskLookup =
  | {
      readonly ok: true;
      readonly psk: Buffer;
      readonly identity: DeviceIdentity;
      readonly assetId: string | undefined;
    }
  | {
      readonly ok: false;
      /** unknown → unknown_psk_identity; forbidden → handshake_failure; unavailable → internal_error */
      readonly kind: PskRejectKind;
      /** Stable, secret-free reason for logs and metrics. */
      readonly reason: string;
    };

interface DerivedKey {
  readonly secret: string;
  readonly key: Buffer;
}

const reject = (kind: PskRejectKind, reason: string): PskLookup => ({ ok: false, kind, reason });

export class PskResolver {
  /**
   * The key derived from each record's secret, kept as long as the record itself (records are
   * immutable; a refreshed secret comes as a new record, and the secret is compared anyway): a
   * handshake of a device whose record is cached costs no SHA-256. Holds nothing the record does
   * not already give away.
   */
  private readonly keys = new WeakMap<DeviceRecord | ProductRecord, DerivedKey>();

  constructor(private readonly source: SecretSource) {}

  /** `observe` hears how each secret layer answered (for the lookup's span). */
  resolve(raw: Buffer, observe?: LookupObserver): PskLookup | Promise<PskLookup> {
    const parsed = parseIdentity(raw);
    if (!parsed.ok) return reject('forbidden', `bad-identity:${parsed.reason}`);
    const id = parsed.identity;
    if (id.secureMode === 2) {
      let rec;
      try {
        rec = this.source.device(id.productKey, id.deviceKey, observe);
      } catch {
        return reject('unavailable', 'source-unavailable');
      }
      return isPromise(rec)
        ? rec.then(
            (r) => this.fromDevice(id, r),
            () => reject('unavailable', 'source-unavailable'),
          )
        : this.fromDevice(id, rec);
    }
    let rec;
    try {
      rec = this.source.product(id.productKey, observe);
    } catch {
      return reject('unavailable', 'source-unavailable');
    }
    return isPromise(rec)
      ? rec.then(
          (r) => this.fromProduct(id, r),
          () => reject('unavailable', 'source-unavailable'),
        )
      : this.fromProduct(id, rec);
  }

  private fromDevice(id: DeviceIdentity, rec: DeviceRecord | undefined): PskLookup {
    if (rec === undefined) return reject('unknown', 'unknown-device');
    return { ok: true, psk: this.psk(rec, rec.deviceSecret), identity: id, assetId: rec.assetId };
  }

  private fromProduct(id: DeviceIdentity, rec: ProductRecord | undefined): PskLookup {
    if (rec === undefined) return reject('unknown', 'unknown-product');
    // secureMode 3 keys come from the product secret, only with dynamic registration enabled
    if (!rec.dynamicRegistration) return reject('forbidden', 'dynamic-registration-disabled');
    return { ok: true, psk: this.psk(rec, rec.productSecret), identity: id, assetId: undefined };
  }

  /** `derivePsk(secret)` of the record, in a fresh buffer of the caller's own (as derivePsk). */
  private psk(rec: DeviceRecord | ProductRecord, secret: string): Buffer {
    let derived = this.keys.get(rec);
    if (derived?.secret !== secret) {
      derived = { secret, key: derivePsk(secret) };
      this.keys.set(rec, derived);
    }
    return Buffer.from(derived.key);
  }
}
