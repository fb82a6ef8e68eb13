/**
 * Device presence (docs/protocol.md, "Lifetime and presence"): the shapes shared by the tracker,
 * its stores and the publisher.
 *
 * A device is online from its first successful request after a handshake until its lifetime
 * (seconds, from the PSK identity) passes without a request, its current DTLS session ends
 * with close_notify, or that session is evicted. The decision about each transition is made
 * by a {@link PresenceStore} (Redis for a pod pool, memory for a single instance) so that it is
 * taken exactly once across all pods; the tracker then publishes one {@link PresenceEvent}.
 */
import { CoapEdgeError } from '../../errors/index.js';
import type { DeviceKey } from '../types.js';

export type PresenceStatus = 'online' | 'offline';

/** Why a device went offline. */
export type OfflineReason =
  /** No request within its lifetime (claimed by one pod's sweeper). */
  | 'lifetime-lapsed'
  /** Its current DTLS session ended with close_notify. */
  | 'close-notify'
  /** Its current DTLS session was evicted (association table full). */
  | 'evicted';

/** Why a device changed state: `first-request` for online, an {@link OfflineReason} else. */
export type PresenceReason = 'first-request' | OfflineReason;

/**
 * Why a DTLS session ended, as the gateway reports it. Only `close-notify` and `evicted` are
 * offline transitions; `idle` (the association was dropped for inactivity) and `shutdown`
 * (this pod stops) leave the device to its lifetime: it is offline only if it sends nothing
 * (to any pod) within its lifetime.
 */
export type SessionCloseReason = 'close-notify' | 'evicted' | 'idle' | 'shutdown';

/**
 * One presence transition. Published as JSON with exactly these fields (see
 * `presenceEventJson`), e.g.
 *
 * ```json
 * {"productKey":"pk","deviceKey":"dk","status":"offline","reason":"lifetime-lapsed",
 *  "time":"2026-05-01T10:00:30.000Z","lifetime":30,"sessionId":"3f2a…","seq":42}
 * ```
 */
export interface PresenceEvent {
  readonly productKey: string;
  readonly deviceKey: string;
  readonly status: PresenceStatus;
  readonly reason: PresenceReason;
  /**
   * ISO 8601 time of the transition: the request that made the device online, the moment its
   * session closed, or the moment its lifetime ran out (last request + lifetime). The event
   * may be published later than this (sweep interval, a Redis outage).
   */
  readonly time: string;
  /** The device's lifetime in seconds, from its PSK identity (0 when no longer known). */
  readonly lifetime: number;
  /** The DTLS session that made the device online or whose end made it offline. */
  readonly sessionId?: string;
  /**
   * Increases with every transition decided by the store (one counter per Redis prefix or
   * per memory store): unique per event, so a consumer can drop a duplicate delivery (a
   * webhook retried after a timeout) and order one device's events.
   */
  readonly seq: number;
}

/** A request reported to the store: the device is online with this session until `deadline`. */
export interface TouchRequest {
  readonly device: DeviceKey;
  readonly sessionId: string;
  /** The device's lifetime in seconds (reported in events). */
  readonly lifetime: number;
  /** ms: time of the latest request this write reports. */
  readonly seenAt: number;
  /** ms: `seenAt` + lifetime (scaled); the store never moves a deadline backwards. */
  readonly deadline: number;
  /**
   * Idempotency token of this logical write. A retry after a failure (possibly applied, with
   * its answer lost to a timeout) uses the same token, and learns the transition it made.
   */
  readonly token: string;
}

export type TouchResult =
  /** The device was not online: this write made it online (exactly one writer gets this). */
  | { readonly kind: 'online'; readonly seq: number }
  /** The device was online already: its deadline (and session, if newer) were updated. */
  | { readonly kind: 'refreshed' }
  /**
   * The device is not online, and a claim took it offline at or after this write's deadline:
   * late news that had lapsed by then; nothing changed and nothing is to be published.
   */
  | { readonly kind: 'lapsed' };

export type CloseResult =
  /** The session was the device's current one: the device is offline now (exactly once). */
  | { readonly kind: 'offline'; readonly seq: number; readonly lifetime: number }
  /** The device is online with another (newer) session: nothing changed. */
  | { readonly kind: 'not-current' }
  /** The device is not online. */
  | { readonly kind: 'absent' };

/** A device whose deadline passed, removed from the store by the claim that returned it. */
export interface LapsedDevice {
  readonly device: DeviceKey;
  /** ms: the deadline that passed. */
  readonly deadline: number;
  readonly sessionId: string | undefined;
  readonly lifetime: number;
  readonly seq: number;
}

/** What a store holds for an online device (for tests and diagnostics). */
export interface PresenceEntry {
  readonly sessionId: string | undefined;
  readonly deadline: number;
  readonly lifetime: number;
}

/**
 * Where presence is decided. Every method is atomic with respect to every other caller of
 * the same store (all pods, for Redis), so each transition is reported to exactly one caller.
 * Methods reject when the store is unreachable; the tracker retries with the same token.
 */
export interface PresenceStore {
  touch(t: TouchRequest): Promise<TouchResult>;
  /** Ends the device's presence when `sessionId` is its current session. */
  close(device: DeviceKey, sessionId: string, token: string): Promise<CloseResult>;
  /**
   * Removes and returns up to `limit` devices whose deadline is at or before `now` (ms),
   * earliest first. A retry with the same token returns the same devices.
   */
  claimLapsed(now: number, limit: number, token: string): Promise<readonly LapsedDevice[]>;
  /** The device's entry, or undefined when it is offline. */
  get(device: DeviceKey): Promise<PresenceEntry | undefined>;
  /** How many devices are online (for the online-devices gauge). */
  onlineCount(): Promise<number>;
}

/** The subset of a pino logger presence uses. */
export interface PresenceLogger {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
}

/** Stable error codes of presence. */
export type PresenceErrorCode =
  /** Options or templates are invalid (a start-up error). */
  | 'PRESENCE_BAD_CONFIG'
  /** The store answered something that is not a script result (wrong server, tampered keys). */
  | 'PRESENCE_STORE_BAD_REPLY'
  /** The injected publish did not settle within the tracker's publish timeout. */
  | 'PRESENCE_PUBLISH_TIMEOUT'
  /** A sink (MQTT, webhook) failed, after its one retry. */
  | 'PRESENCE_PUBLISH_FAILED';

export class PresenceError extends CoapEdgeError {
  readonly code: PresenceErrorCode;

  constructor(code: PresenceErrorCode, message: string) {
    super(message);
    this.name = 'PresenceError';
    this.code = code;
  }
}
