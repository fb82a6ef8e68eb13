/**
 * Building and validating the records the chain hands out, shared by the registry client
 * and the Redis codecs. Validation messages never contain the values.
 */
import { z } from 'zod';
import type { DeviceRecord, ProductRecord } from './devices-file.js';

/** Longest secret accepted from a registry or Redis, in UTF-16 code units. */
const MAX_SECRET_LENGTH = 1024;
/** Longest asset id accepted. */
const MAX_ASSET_ID_LENGTH = 256;

const loneSurrogate = /\p{Cs}/u;

/** A secret as `derivePsk` accepts it: non-empty, well-formed, bounded. */
export const secretSchema = z
  .string()
  .min(1)
  .max(MAX_SECRET_LENGTH)
  .refine((s) => !loneSurrogate.test(s));

export const assetIdSchema = z.string().min(1).max(MAX_ASSET_ID_LENGTH);

export function deviceRecord(
  productKey: string,
  deviceKey: string,
  deviceSecret: string,
  assetId: string | undefined,
): DeviceRecord {
  return Object.freeze({ productKey, deviceKey, deviceSecret, assetId });
}

export function productRecord(
  productKey: string,
  productSecret: string,
  dynamicRegistration: boolean,
): ProductRecord {
  return Object.freeze({ productKey, productSecret, dynamicRegistration });
}
