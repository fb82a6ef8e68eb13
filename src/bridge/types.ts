/**
 * What the bridge sees of a device request and what it answers, free of any wire format:
 * the gateway maps CoAP to these and back.
 */
import type { DeviceIdentity } from '../enos/index.js';

/** The authenticated device behind a request. */
export interface Principal extends DeviceIdentity {
  readonly assetId: string | undefined;
}

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE' | 'OTHER';

export interface BridgeRequest {
  /** The authenticated device, or undefined on the unauthenticated development port. */
  readonly principal: Principal | undefined;
  readonly method: Method;
  /** Uri-Path segments. */
  readonly path: readonly string[];
  /** Uri-Query arguments. */
  readonly query: readonly string[];
  readonly payload: Buffer;
  readonly contentFormat: number | undefined;
}

/** Outcomes, named by meaning; the gateway maps them to CoAP codes. */
export type BridgeStatus =
  | 'changed'
  | 'content'
  | 'bad-request'
  | 'unauthorized'
  | 'forbidden'
  | 'not-found'
  | 'method-not-allowed'
  | 'too-large'
  | 'unsupported-content-format'
  | 'too-many-requests'
  | 'internal-error'
  | 'bad-gateway'
  | 'unavailable'
  | 'gateway-timeout';

export interface BridgeResponse {
  readonly status: BridgeStatus;
  readonly payload?: Buffer;
  readonly contentFormat?: number;
  /** Seconds; a retry hint with `unavailable` (RFC 7252 §5.10.5). */
  readonly maxAge?: number;
}
