/** What the PSK resolver needs from wherever secrets live (file, cache, Redis, registry). */
import { CoapEdgeError } from '../errors/index.js';
import type { DeviceRecord, ProductRecord } from './devices-file.js';
import type { LookupLayer, LookupOutcome } from './stats.js';

export type { DeviceRecord, ProductRecord };

/** A value now, or later. Sources answer synchronously when they can (file, in-process cache). */
export type MaybePromise<T> = T | Promise<T>;

/** Told how each layer answered one lookup (for the lookup's span; never given secrets). */
export type LookupObserver = (layer: LookupLayer, outcome: LookupOutcome) => void;

export interface SecretSource {
  /** The device's record, or `undefined` when the device is unknown. Rejects when unavailable. */
  device(
    productKey: string,
    deviceKey: string,
    observe?: LookupObserver,
  ): MaybePromise<DeviceRecord | undefined>;
  /** The product's record, or `undefined` when the product is unknown. Rejects when unavailable. */
  product(productKey: string, observe?: LookupObserver): MaybePromise<ProductRecord | undefined>;
}

/**
 * Stable codes of {@link SecretSourceError}:
 * - `SOURCE_UNAVAILABLE`: the source could not be reached or answered with an error status.
 * - `SOURCE_TIMEOUT`: no complete answer within the configured timeout.
 * - `SOURCE_BAD_RESPONSE`: the answer was malformed (wrong status, not JSON, wrong shape).
 * - `SOURCE_CIRCUIT_OPEN`: the source failed repeatedly and is not asked for a while.
 */
export type SecretSourceErrorCode =
  'SOURCE_UNAVAILABLE' | 'SOURCE_TIMEOUT' | 'SOURCE_BAD_RESPONSE' | 'SOURCE_CIRCUIT_OPEN';

/**
 * A source could not answer (Redis down, registry timeout); the caller fails fast. Messages
 * never contain secrets or response bodies.
 */
export class SecretSourceError extends CoapEdgeError {
  constructor(
    readonly code: SecretSourceErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'SecretSourceError';
  }
}

export function isPromise<T>(v: MaybePromise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}
