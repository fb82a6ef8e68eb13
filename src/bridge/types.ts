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

/** Options of one publish (trace context travels as MQTT 5 user properties). */
export interface PublishOptions {
  readonly userProperties?: Readonly<Record<string, string>>;
}

/**
 * A platform reachable by messages (bridge-mode MQTT today). A publish resolves only when
 * the platform accepted the message (MQTT PUBACK); errors carry a stable `code`:
 * `BACKEND_UNAVAILABLE`, `BACKEND_PUBACK_TIMEOUT`, `BACKEND_REPLY_TIMEOUT`.
 */
export interface MessageBackend {
  publish(topic: string, payload: Buffer, opts?: PublishOptions): Promise<void>;
  /**
   * Publishes and waits for the platform's reply on `replyTopic` whose JSON `id` equals
   * `messageId`; with `messageId` undefined (raw topics) the first message on `replyTopic`.
   */
  request(
    topic: string,
    payload: Buffer,
    replyTopic: string,
    messageId: string | undefined,
    opts?: PublishOptions,
  ): Promise<Buffer>;
}

export type ActivationResult =
  | { readonly ok: true; readonly deviceSecret: string; readonly assetId: string }
  | {
      readonly ok: false;
      readonly reason: 'unknown-product' | 'dynamic-registration-disabled' | 'unavailable';
    };

/** Dynamic activation (spec §4); the same device always gets the same secret. */
export interface ActivationService {
  activate(productKey: string, deviceKey: string): Promise<ActivationResult>;
}
