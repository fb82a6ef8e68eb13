/**
 * Typed errors of the MQTT backend. Callers switch on `code` (stable) or on the class, never
 * on the message. Messages name topics and numbers only; credentials never appear.
 *
 * How the router answers them (docs/protocol.md "Answers"; docs/design.md: at least once, end to end;
 * each error carries its answer in `coap`, listed in docs/errors.md):
 * - {@link BackendUnavailableError}: 5.03 Service Unavailable with Max-Age; the device retries.
 *   The message was not reported published (no PUBACK), so nothing is lost; the platform may
 *   still have received it (at-least-once, a duplicate is fine).
 * - {@link BackendRejectedError}: the broker refused the publish (MQTT 5 PUBACK reason >= 0x80,
 *   e.g. 0x87 not authorized, 0x97 quota exceeded); 5.02 Bad Gateway (or 5.03 for quota).
 * - {@link ReplyTimeoutError}: published, but no platform reply in time; 5.04 Gateway Timeout.
 * - {@link DeviceSuspectedError}: the device had publishes in flight when the broker dropped
 *   a shared connection; its publishes wait out a suspension (not sent). 5.03 with Max-Age =
 *   the time left.
 * - A plain {@link MqttBackendError} with `BACKEND_BAD_TOPIC`: a caller bug; 5.00.
 * - {@link DeviceUnauthorizedError} (per-device mode only): the broker refused the device's own
 *   login; 4.01 Unauthorized (the device's credentials are wrong for the platform, retrying
 *   at once will not help).
 */

import { CoapEdgeError, type CoapReaction } from '../../errors/index.js';

/** Stable error codes of the MQTT backend. */
export type MqttBackendErrorCode =
  /** No bridge connection is up (broker down, still connecting): fail fast, nothing queued. */
  | 'BACKEND_UNAVAILABLE'
  /** The connection carrying the publish (or subscribe) dropped before its acknowledgement. */
  | 'BACKEND_CONNECTION_LOST'
  /** No PUBACK within the publish timeout (including any wait for an in-flight slot). */
  | 'BACKEND_PUBACK_TIMEOUT'
  /** Too many publishes already wait for an in-flight slot on the connections. */
  | 'BACKEND_OVERLOADED'
  /** The reply topic could not be subscribed (SUBACK failure code, or no SUBACK in time). */
  | 'BACKEND_SUBSCRIBE_FAILED'
  /** The backend was closed. */
  | 'BACKEND_CLOSED'
  /** The broker refused the publish with an MQTT 5 PUBACK reason code >= 0x80. */
  | 'BACKEND_PUBLISH_REJECTED'
  /** The publish was acknowledged but no reply with the request's id arrived in time. */
  | 'BACKEND_REPLY_TIMEOUT'
  /** A caller bug: the topic is empty, too long, or has `+`, `#` or NUL; nothing was sent. */
  | 'BACKEND_BAD_TOPIC'
  /**
   * Per-device mode: the broker refused the device's own login (CONNACK "bad username or
   * password" / "not authorized": 3.1.1 codes 4/5, MQTT 5 reasons 0x86/0x87), now or within
   * the refusal memory, or no device secret is known. Answer 4.01 Unauthorized.
   */
  | 'BACKEND_DEVICE_UNAUTHORIZED'
  /**
   * Bridge mode: the device's publishes were in flight when the broker dropped a shared
   * connection, so they are refused for a while (not sent). Answer 5.03 with Max-Age.
   */
  | 'BACKEND_DEVICE_SUSPECTED';

export type BackendUnavailableCode = Extract<
  MqttBackendErrorCode,
  | 'BACKEND_UNAVAILABLE'
  | 'BACKEND_CONNECTION_LOST'
  | 'BACKEND_PUBACK_TIMEOUT'
  | 'BACKEND_OVERLOADED'
  | 'BACKEND_SUBSCRIBE_FAILED'
  | 'BACKEND_CLOSED'
>;

const messages: { readonly [C in MqttBackendErrorCode]: string } = {
  BACKEND_UNAVAILABLE: 'no MQTT connection is up',
  BACKEND_CONNECTION_LOST: 'MQTT connection lost before the acknowledgement',
  BACKEND_PUBACK_TIMEOUT: 'no PUBACK within the publish timeout',
  BACKEND_OVERLOADED: 'too many publishes waiting for an MQTT in-flight slot',
  BACKEND_SUBSCRIBE_FAILED: 'topic subscription failed',
  BACKEND_CLOSED: 'MQTT backend closed',
  BACKEND_PUBLISH_REJECTED: 'broker rejected the publish',
  BACKEND_REPLY_TIMEOUT: 'no reply within the reply timeout',
  BACKEND_BAD_TOPIC: 'topic cannot be published',
  BACKEND_DEVICE_UNAUTHORIZED: "broker refused the device's login",
  BACKEND_DEVICE_SUSPECTED: 'device suspended after a broker dropped a shared connection',
};

/** "Not accepted now, try again later": 5.03 with the configured Max-Age. */
const UNAVAILABLE: CoapReaction = { code: '5.03', maxAge: 'configured' };

const reactions: { readonly [C in MqttBackendErrorCode]: CoapReaction } = {
  BACKEND_UNAVAILABLE: UNAVAILABLE,
  BACKEND_CONNECTION_LOST: UNAVAILABLE,
  BACKEND_PUBACK_TIMEOUT: UNAVAILABLE,
  BACKEND_OVERLOADED: UNAVAILABLE,
  BACKEND_SUBSCRIBE_FAILED: UNAVAILABLE,
  BACKEND_CLOSED: UNAVAILABLE,
  BACKEND_PUBLISH_REJECTED: { code: '5.02' },
  BACKEND_REPLY_TIMEOUT: { code: '5.04' },
  BACKEND_BAD_TOPIC: { code: '5.00' },
  BACKEND_DEVICE_UNAUTHORIZED: { code: '4.01' },
  // a DeviceSuspectedError answers with the seconds left of the suspension
  BACKEND_DEVICE_SUSPECTED: UNAVAILABLE,
};

/** Base class of the MQTT backend's errors. */
export class MqttBackendError extends CoapEdgeError {
  readonly code: MqttBackendErrorCode;

  constructor(code: MqttBackendErrorCode, detail?: string) {
    super(detail === undefined ? messages[code] : `${messages[code]}: ${detail}`);
    this.name = 'MqttBackendError';
    this.code = code;
  }

  override get coap(): CoapReaction {
    return reactions[this.code];
  }
}

/** The backend cannot take the message now; answer 5.03 so the device retries. */
export class BackendUnavailableError extends MqttBackendError {
  declare readonly code: BackendUnavailableCode;

  constructor(code: BackendUnavailableCode, detail?: string) {
    super(code, detail);
    this.name = 'BackendUnavailableError';
  }
}

/** The broker refused the publish (MQTT 5 PUBACK reason code >= 0x80). */
export class BackendRejectedError extends MqttBackendError {
  declare readonly code: 'BACKEND_PUBLISH_REJECTED';
  /** The PUBACK reason code, e.g. 0x87 (135) not authorized, 0x97 (151) quota exceeded. */
  readonly reasonCode: number;

  constructor(reasonCode: number) {
    super('BACKEND_PUBLISH_REJECTED', `reason code 0x${reasonCode.toString(16)}`);
    this.name = 'BackendRejectedError';
    this.reasonCode = reasonCode;
  }

  /** 5.02, but 5.03 for 0x97 "quota exceeded": the platform may take it later. */
  override get coap(): CoapReaction {
    return this.reasonCode === 0x97 ? UNAVAILABLE : super.coap;
  }
}

/** The request was published (PUBACK) but its reply did not arrive in time. */
export class ReplyTimeoutError extends MqttBackendError {
  declare readonly code: 'BACKEND_REPLY_TIMEOUT';

  constructor(replyTopic: string, timeoutMs: number) {
    super('BACKEND_REPLY_TIMEOUT', `${timeoutMs} ms on ${replyTopic}`);
    this.name = 'ReplyTimeoutError';
  }
}

/**
 * Per-device mode: the broker refused the device's own MQTT login (or no secret is known for
 * it); the router answers 4.01 Unauthorized. `remembered`: answered from the refusal memory,
 * without a new CONNECT.
 */
export class DeviceUnauthorizedError extends MqttBackendError {
  declare readonly code: 'BACKEND_DEVICE_UNAUTHORIZED';
  readonly remembered: boolean;

  constructor(detail: string, remembered: boolean) {
    super('BACKEND_DEVICE_UNAUTHORIZED', detail);
    this.name = 'DeviceUnauthorizedError';
    this.remembered = remembered;
  }
}

/**
 * Bridge mode: the device is suspected of having made the broker drop a shared connection
 * (its publish was in flight then); nothing was sent. The router answers 5.03 with Max-Age =
 * `retryAfterSec`.
 */
export class DeviceSuspectedError extends MqttBackendError {
  declare readonly code: 'BACKEND_DEVICE_SUSPECTED';
  /** Seconds until the device's publishes are sent again (at least 1). */
  readonly retryAfterSec: number;

  constructor(retryAfterSec: number) {
    super('BACKEND_DEVICE_SUSPECTED');
    this.name = 'DeviceSuspectedError';
    this.retryAfterSec = Math.max(1, retryAfterSec);
  }

  /**
   * 5.03 with Max-Age = the time left: the device may be a bystander, so "retry later" (when
   * the suspension ends), not 4.00.
   */
  override get coap(): CoapReaction {
    return { code: '5.03', maxAge: this.retryAfterSec };
  }
}
