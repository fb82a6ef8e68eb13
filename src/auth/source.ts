/** What the PSK resolver needs from wherever secrets live (file, cache, Redis, registry). */
import type { DeviceRecord, ProductRecord } from './devices-file.js';

export type { DeviceRecord, ProductRecord };

/** A value now, or later. Sources answer synchronously when they can (file, in-process cache). */
export type MaybePromise<T> = T | Promise<T>;

export interface SecretSource {
  /** The device's record, or `undefined` when the device is unknown. Rejects when unavailable. */
  device(productKey: string, deviceKey: string): MaybePromise<DeviceRecord | undefined>;
  /** The product's record, or `undefined` when the product is unknown. Rejects when unavailable. */
  product(productKey: string): MaybePromise<ProductRecord | undefined>;
}

/** A source could not answer (Redis down, registry timeout); the caller fails fast. */
export class SecretSourceError extends Error {
  constructor(
    readonly code: 'SOURCE_UNAVAILABLE' | 'SOURCE_TIMEOUT' | 'SOURCE_BAD_RESPONSE',
    message: string,
  ) {
    super(message);
    this.name = 'SecretSourceError';
  }
}

export function isPromise<T>(v: MaybePromise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}
