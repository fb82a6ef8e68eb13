/**
 * What the bridge sees of a device request and what it answers, free of any wire format:
 * the gateway maps CoAP to these and back.
 */
import type { DeviceIdentity } from '../enos/index.js';

/** The authenticated device behind a request. */
export interface Principal extends DeviceIdentity {
  readonly assetId: string | undefined;
  /**
   * Identifies the DTLS session the device authenticated on (unique per handshake, across
   * pods): presence and per-device connections tell a new session from an old one by it.
   */
  readonly sessionId: string;
}

/** A device by its keys. */
export interface DeviceKey {
  readonly productKey: string;
  readonly deviceKey: string;
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
  /**
   * A command waiting for the device (docs/protocol.md): travels as option 2100 = `/topic{topic}` and,
   * when given, option 2102 = payload.
   */
  readonly command?: { readonly topic: string; readonly payload: Buffer | undefined };
  /** The EnOS topic class of the request (`uplink`, `activate`, ...), for metrics. */
  readonly topicClass?: string;
}

/** A command for a device, waiting to be delivered (docs/protocol.md). */
export interface QueuedCommand {
  /** Queue entry id (unique per command). */
  readonly id: string;
  /** The MQTT command topic without prefix, e.g. `/sys/pk/dk/thing/service/reboot`. */
  readonly topic: string;
  readonly payload: Buffer;
  /** The JSON `id` of the command body, when it is EnOS JSON; the device's reply carries it. */
  readonly messageId: string | undefined;
  /** ms since the epoch. */
  readonly enqueuedAt: number;
  /** W3C trace context the platform sent the command with (MQTT 5 user property), if any. */
  readonly traceparent?: string | undefined;
}

/**
 * Commands for sleepy devices, kept where every pod can deliver them (Redis in production,
 * memory on a single embedded instance). A command leaves the queue only when the device
 * acknowledged it with its reply (at-least-once), or when it expires.
 */
export interface CommandStore {
  /** Adds a command; `full` when the device's queue is at its bound (the command is dropped). */
  enqueue(
    device: DeviceKey,
    topic: string,
    payload: Buffer,
    traceparent?: string,
  ): Promise<'queued' | 'full'>;
  /** The oldest waiting command and how many wait, without removing anything. */
  peek(device: DeviceKey): Promise<{ head: QueuedCommand | undefined; count: number }>;
  /**
   * What {@link peek} would answer, when the store knows it without I/O (memory; a device
   * whose queue is known to be empty); undefined when only `peek` can tell. Counted as a peek.
   * Lets the request path skip a promise per uplink.
   */
  peekNow?(device: DeviceKey): { head: QueuedCommand | undefined; count: number } | undefined;
  /** The oldest waiting command on `topic` (a GET of the command topic) and how many wait in all. */
  fetch(
    device: DeviceKey,
    topic: string,
  ): Promise<{ command: QueuedCommand | undefined; count: number }>;
  /**
   * The device replied to a command on `topic` (`{topic}_reply`, `rrpc/response/..`): removes
   * the matching command (by JSON id when there is one, else the oldest on that topic).
   */
  acknowledge(device: DeviceKey, topic: string, reply: Buffer): Promise<boolean>;
  /**
   * {@link acknowledge} without I/O, when the store can do it so (memory): its answer, or
   * undefined when only `acknowledge` can. Lets a command reply skip a promise and a turn.
   */
  acknowledgeNow?(device: DeviceKey, topic: string, reply: Buffer): boolean | undefined;
  /** Resolves with the first command for the device within `timeoutMs` (ttd), else undefined. */
  waitFor(device: DeviceKey, timeoutMs: number): Promise<QueuedCommand | undefined>;
}

/** Options of one publish (trace context travels as MQTT 5 user properties). */
export interface PublishOptions {
  readonly userProperties?: Readonly<Record<string, string>>;
}

/**
 * A platform reachable by messages, on behalf of a device: the bridge-mode pool ignores the
 * device; per-device mode publishes on the device's own connection. Errors as for
 * {@link MessageBackend}, plus `BACKEND_DEVICE_UNAUTHORIZED` (the broker refused the
 * device's own login: 4.01).
 */
export interface DeviceMessageBackend {
  publish(device: Principal, topic: string, payload: Buffer, opts?: PublishOptions): Promise<void>;
  request(
    device: Principal,
    topic: string,
    payload: Buffer,
    replyTopic: string,
    messageId: string | undefined,
    opts?: PublishOptions,
  ): Promise<Buffer>;
}

/** Presence: told about every successful request of an authenticated device. */
export interface PresenceSink {
  seen(p: Principal): void;
}

/**
 * A platform reachable by messages (bridge-mode MQTT). A publish resolves only when
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
      readonly reason:
        | 'unknown-product'
        | 'unknown-device'
        | 'dynamic-registration-disabled'
        | 'already-activated'
        | 'unavailable';
    };

/**
 * Dynamic activation (docs/protocol.md), one-shot: a device gets its secret at most once, and never
 * after it has connected with it; every later request is refused (`already-activated`).
 */
export interface ActivationService {
  activate(productKey: string, deviceKey: string): Promise<ActivationResult>;
}
