/**
 * Per-device MQTT sessions (docs/design.md: two ways to face an MQTT platform): one MQTT
 * connection per online device, logged in with the device's own credentials, for platforms
 * such as EnOS that authenticate each device.
 *
 * Life of a session
 * - Opens on the device's first `publish`/`request`: connect-slot reservation (rate limit),
 *   `secretOf(device)`, CONNECT with the device's login (`enos`: EnOS signed login from the
 *   device secret, docs/protocol.md "Lifetime and presence"; `template`: `{pk}`/`{dk}`/`{secret}`
 *   templates), then SUBSCRIBE (QoS 1) to the device's command topics; the request goes on
 *   once those SUBACKs are in (a refused command subscription is counted and logged, the
 *   session is still used). Concurrent first requests of a device share this one open
 *   (single flight); a new DTLS session of the device (another `principal.sessionId`) reuses
 *   the connection.
 * - Every request refreshes the device's lifetime (seconds, from its PSK identity); so does
 *   {@link DeviceSessionManager.touch}. A sweep (every `sweepIntervalMs`) closes a session
 *   whose lifetime passed without traffic (DISCONNECT: the platform sees the device go
 *   offline). {@link DeviceSessionManager.closeDevice} closes it at once (DTLS close_notify,
 *   eviction); `close()` ends all.
 * - A connection lost while open (broker down, network, the broker handing the client id to
 *   another connection, e.g. the device moved to another pod) ends the session; there is no
 *   background reconnect, the device's next request opens a new one. Reconnecting on our own
 *   would make two pods that both saw the device take the client id from each other in a
 *   loop, and would bypass the connect rate limit after a broker restart.
 * - Messages on the device's connection: a topic matching one of its command filters (and
 *   not ending in `_reply`: the broker echoes the device's own command replies back on a
 *   `#` filter) goes to `onCommand(device, topic without topicPrefix, payload)`; one on a
 *   reply topic a request waits for answers it (as in bridge mode, `replies.ts` and
 *   `subscriptions.ts`, but on the device's own connection); anything else is counted as
 *   unmatched.
 *
 * Bounds and what the router answers
 * - `maxSessions` (settings `maxDeviceSessions`): sessions open or opening. A device without
 *   a session beyond it fails with `BACKEND_OVERLOADED` (5.03 with Max-Age: the device retries
 *   later); no other session is evicted. Evicting an idle one would turn a device that is
 *   online by its lifetime offline at the platform and drop its command subscription, just to
 *   let another in; the sweep frees capacity as lifetimes lapse. Counted:
 *   `connects.refused['max-sessions']`.
 * - `connectRatePerSecond` (settings `deviceConnectRate`): a token bucket (burst: one
 *   second's worth). A first request that finds no token reserves the next one when it is
 *   free within `connectWaitMs` (default 1000) and waits for it; otherwise it fails at once
 *   with `BACKEND_OVERLOADED` (5.03). Counted: `connects.refused['rate-limited']`.
 * - Refused login: CONNACK 3.1.1 return code 4/5 or MQTT 5 reason 0x86/0x87 fails the
 *   request with {@link DeviceUnauthorizedError} `BACKEND_DEVICE_UNAUTHORIZED` — the router
 *   answers 4.01 Unauthorized. The refusal is remembered for `refusalMemoryMs` (default
 *   30 s): requests of that device meanwhile get the same error at once, without a CONNECT
 *   (counted `connects.refused['remembered-unauthorized']`), so a device with a wrong secret
 *   cannot make the proxy hammer the broker. No secret known (`secretOf` → undefined) is
 *   `BACKEND_DEVICE_UNAUTHORIZED` too (not remembered; the secret chain caches misses).
 * - Broker unreachable (TCP refused, no CONNACK within `connectTimeoutMs`), another CONNACK
 *   refusal (e.g. 0x88 server unavailable, 0x89 busy), the secret lookup failing, a lost
 *   connection: `BACKEND_UNAVAILABLE` / `BACKEND_CONNECTION_LOST` (5.03). Publish outcomes
 *   are those of bridge mode: `BACKEND_PUBACK_TIMEOUT` (5.03), `BACKEND_PUBLISH_REJECTED`
 *   (5.02), `BACKEND_REPLY_TIMEOUT` (5.04), and `BACKEND_OVERLOADED` when one device has more
 *   than `maxInflightPerDevice` publishes unacknowledged.
 * - Nothing here logs or throws a credential: logs name the device (`pk/dk`), the broker URL
 *   without user info and CONNACK codes; errors carry codes and CONNACK codes only.
 *
 * Files: this one is the manager (the API, opening and ending sessions, messages, publishing);
 * `per-device-table.ts` the session table, `per-device-admission.ts` who may open a session
 * (refusal memory, `maxSessions`, with `per-device-rate.ts` the connect rate),
 * `per-device-connect.ts` the device's login and CONNECT, `per-device-login.ts` the login's
 * pure parts (templates, EnOS signing, command filters), `per-device-probe.ts` the broker
 * reachability probe. Every session's connection is an {@link MqttConnection}
 * (`connection.ts`).
 */
import { systemClock, type Clock, type TimerHandle } from '../../time/clock.js';
import type { DeviceKey, MessageBackend, Principal } from '../types.js';
import { redactUrl } from './backend.js';
import {
  ProtocolChoice,
  PublishDeadlines,
  type MqttConnection,
  type MqttProtocolSetting,
  type ProtocolLevel,
  type UserProperties,
} from './connection.js';
import {
  BackendUnavailableError,
  BackendRejectedError,
  DeviceUnauthorizedError,
  type BackendUnavailableCode,
} from './errors.js';
import { checkTopic, requestReply, toError, tracedPublish, type SendFn } from './exchange.js';
import { activeContext } from '../../telemetry/trace.js';
import { Admission, type ConnectRefusalReason } from './per-device-admission.js';
import { DeviceConnector, type ConnectFailureReason } from './per-device-connect.js';
import {
  checkCommandTopics,
  checkLoginTemplates,
  commandFilters,
  topicMatches,
  type DeviceAuthKind,
  type DeviceLoginTemplates,
} from './per-device-login.js';
import { BrokerProbe } from './per-device-probe.js';
import {
  checkOpening,
  keyOf,
  label,
  SessionTable,
  type DeviceSession,
  type SessionCloseReason,
} from './per-device-table.js';
import { ReplyMatcher } from './replies.js';
import {
  PublishCounters,
  type BackendState,
  type LatencySnapshot,
  type PublishFailureReason,
} from './stats.js';
import { ReplySubscriptions } from './subscriptions.js';

export type { ConnectFailureReason } from './per-device-connect.js';
export type { ConnectRefusalReason } from './per-device-admission.js';
export { probeTarget } from './per-device-probe.js';
export type { SessionCloseReason } from './per-device-table.js';

/** The subset of a pino logger the sessions use (`debug` for per-device open/close). */
export interface DeviceSessionLogger {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
  debug?(obj: Record<string, unknown>, msg: string): void;
}

export interface DeviceSessionOptions {
  /** `mqtt://host:1883` or `mqtts://host:8883` (settings `mqttUrl`). */
  readonly url: string;
  /** settings `mqttDeviceAuth`. */
  readonly auth: DeviceAuthKind;
  /** Template login: setting `mqttDeviceClientId` (`{pk}`, `{dk}`). */
  readonly clientIdTemplate: string;
  /** Template login: setting `mqttDeviceUsername` (`{pk}`, `{dk}`). */
  readonly usernameTemplate: string;
  /** Template login: setting `mqttDevicePassword` (`{pk}`, `{dk}`, `{secret}`). */
  readonly passwordTemplate: string;
  /** Default `auto`: MQTT 5, and 3.1.1 for all sessions once the broker refuses 5. */
  readonly protocol?: MqttProtocolSetting;
  /** Put before every topic (published, subscribed); stripped from command topics. Default ''. */
  readonly topicPrefix?: string;
  /** Ms to wait for a PUBACK (and a SUBACK) (setting `publishTimeoutMs`). */
  readonly publishTimeoutMs: number;
  /** Ms to wait for a reply after the PUBACK (setting `replyTimeoutMs`). */
  readonly replyTimeoutMs: number;
  /** settings `maxDeviceSessions`: sessions open or opening at most. */
  readonly maxSessions: number;
  /** settings `deviceConnectRate`: new connections per second at most. */
  readonly connectRatePerSecond: number;
  /** Longest wait of a first request for a connect slot. Default 1000. */
  readonly connectWaitMs?: number;
  /** settings `commandTopics`: topic filter templates (`{pk}`, `{dk}`). */
  readonly commandTopics: readonly string[];
  /** The device secret (the lead wires the secret chain); undefined: unknown device. */
  secretOf(device: Principal): Promise<string | undefined>;
  /** A command arrived on the device's connection; `topic` without `topicPrefix`. */
  onCommand(device: DeviceKey, topic: string, payload: Buffer): void | Promise<unknown>;
  /**
   * Time and timers (default: the system clock). Its wall time (ms since the epoch) is used
   * for lifetimes, the refusal memory, the rate limit and the EnOS login `timestamp=`; its
   * timers for the sweep, the probe, connect-slot waits and the publish and reply deadlines.
   */
  readonly clock?: Clock;
  readonly logger?: DeviceSessionLogger;
  /** Ms to wait for a CONNACK. Default 5000. */
  readonly connectTimeoutMs?: number;
  /** Default 60. */
  readonly keepaliveSec?: number;
  /** How long a refused login is answered from memory. Default 30000. */
  readonly refusalMemoryMs?: number;
  /** Unacknowledged publishes per device. Default 16. */
  readonly maxInflightPerDevice?: number;
  /** Ms a reply subscription is kept after its last request. Default 60000. */
  readonly replyLingerMs?: number;
  /** How often lifetimes are checked. Default 1000. */
  readonly sweepIntervalMs?: number;
  /** How often the broker's port is probed while no session is open (readiness). Default 5000. */
  readonly probeIntervalMs?: number;
}

export interface DevicePublishOptions {
  /** MQTT 5 user properties (e.g. `traceparent`); not sent on a 3.1.1 connection. */
  readonly userProperties?: UserProperties;
}

export interface DeviceRequestOptions extends DevicePublishOptions {
  /** Overrides `replyTimeoutMs` for this request. */
  readonly replyTimeoutMs?: number;
}

export type DevicePublishFailureReason = PublishFailureReason | 'unauthorized';

export interface DeviceSessionStats {
  readonly state: BackendState;
  /** Protocol level new sessions use (5, or 4 = 3.1.1 after a fallback). */
  readonly protocolVersion: ProtocolLevel;
  readonly sessions: {
    /** Open now (connected, command topics subscribed). */
    readonly open: number;
    /** Opening now. */
    readonly connecting: number;
    readonly max: number;
    /** Sessions opened since start. */
    readonly opened: number;
    readonly closed: { readonly [R in SessionCloseReason]: number };
    /** Requests that came on a new DTLS session of a device and reused its connection. */
    readonly reusedByNewDtlsSession: number;
  };
  readonly connects: {
    /** CONNECTs sent. */
    readonly attempts: number;
    readonly ok: number;
    readonly failed: { readonly [R in ConnectFailureReason]: number };
    readonly refused: { readonly [R in ConnectRefusalReason]: number };
    /** Devices whose refused login is remembered now. */
    readonly rememberedRefusals: number;
    /** Connect tokens available now (below zero while reserved ones wait). */
    readonly tokens: number;
  };
  readonly publishes: {
    readonly ok: number;
    /** Publishes (of `publish` and `request`) that failed, including those that found no session. */
    readonly failed: { readonly [R in DevicePublishFailureReason]: number };
    readonly inflight: number;
  };
  readonly pubackLatency: LatencySnapshot;
  readonly replies: {
    readonly matched: number;
    readonly timedOut: number;
    /** Messages that were neither a command nor a reply someone waited for. */
    readonly unmatched: number;
    readonly waiting: number;
  };
  readonly subscriptions: {
    /** Reply topic subscriptions refused or timed out. */
    readonly replyFailed: number;
    /** Command topic subscriptions refused or timed out (the session was still used). */
    readonly commandFailed: number;
  };
  readonly commands: {
    readonly received: number;
    /** `onCommand` threw or its promise rejected. */
    readonly failed: number;
  };
  readonly protocolFallbacks: number;
}

const noopLogger: DeviceSessionLogger = { info: () => undefined, warn: () => undefined };

export class DeviceSessionManager {
  private readonly sessions = new SessionTable();
  private readonly admission: Admission;
  private readonly probe: BrokerProbe;
  private readonly templates: DeviceLoginTemplates;
  private readonly clock: Clock;
  /** The clock's wall time. */
  private readonly now: () => number;
  private readonly log: DeviceSessionLogger;
  private readonly urlForLogs: string;
  private readonly prefix: string;
  private readonly publishTimeoutMs: number;
  private readonly replyTimeoutMs: number;
  private readonly protocol: ProtocolChoice;
  /** The PUBACK deadlines of every session's publishes, and their counters. */
  private readonly deadlines: PublishDeadlines;
  private readonly publishes = new PublishCounters<DevicePublishFailureReason>(
    [
      'unavailable',
      'connection-lost',
      'puback-timeout',
      'overloaded',
      'rejected',
      'closed',
      'unauthorized',
    ],
    publishFailureReason,
  );
  private closed = false;
  private sweepTimer: TimerHandle = undefined;
  private readonly connector: DeviceConnector;
  private repliesMatched = 0;
  private repliesTimedOut = 0;
  private repliesUnmatched = 0;
  private replySubscribeFailed = 0;
  private commandSubscribeFailed = 0;
  private commandsReceived = 0;
  private commandsFailed = 0;

  /** @throws PerDeviceConfigError for a template with an unknown placeholder or a bad filter. */
  constructor(private readonly opts: DeviceSessionOptions) {
    this.templates = {
      clientId: opts.clientIdTemplate,
      username: opts.usernameTemplate,
      password: opts.passwordTemplate,
    };
    if (opts.auth === 'template') checkLoginTemplates(this.templates);
    checkCommandTopics(opts.commandTopics);
    const clock = opts.clock ?? systemClock;
    this.clock = clock;
    this.now = () => clock.wallNow();
    const log = opts.logger ?? noopLogger;
    this.log = log;
    this.urlForLogs = redactUrl(opts.url);
    this.prefix = opts.topicPrefix ?? '';
    this.publishTimeoutMs = opts.publishTimeoutMs;
    this.replyTimeoutMs = opts.replyTimeoutMs;
    const refusalMemoryMs = opts.refusalMemoryMs ?? 30_000;
    this.protocol = new ProtocolChoice(opts.protocol ?? 'auto', () =>
      log.info(
        { url: this.urlForLogs },
        'mqtt broker refused MQTT 5; per-device sessions use MQTT 3.1.1',
      ),
    );
    this.deadlines = new PublishDeadlines(clock, this.publishTimeoutMs, this.publishes);
    this.admission = new Admission({
      maxSessions: opts.maxSessions,
      connectRatePerSecond: opts.connectRatePerSecond,
      connectWaitMs: opts.connectWaitMs ?? 1000,
      refusalMemoryMs,
      now: this.now,
    });
    this.probe = new BrokerProbe({
      url: opts.url,
      urlForLogs: this.urlForLogs,
      connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
      clock,
      warn: (obj, msg) => log.warn(obj, msg),
    });
    this.connector = new DeviceConnector({
      url: opts.url,
      urlForLogs: this.urlForLogs,
      auth: opts.auth,
      templates: this.templates,
      keepaliveSec: opts.keepaliveSec ?? 60,
      connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
      maxInflightPerDevice: opts.maxInflightPerDevice ?? 16,
      refusalMemoryMs,
      secretOf: (device) => opts.secretOf(device),
      now: this.now,
      clock,
      protocol: this.protocol,
      admission: this.admission,
      probe: this.probe,
      warn: (obj, msg) => log.warn(obj, msg),
      onMessage: (s, topic, payload) => this.onMessage(s, topic, payload),
      onLost: (s, err) => this.lost(s, err),
    });
    this.sweepTimer = clock.setInterval(() => this.sweep(), opts.sweepIntervalMs ?? 1000);
  }

  /** Starts probing the broker's port while no session is open (for {@link state}). */
  start(): void {
    if (this.closed) return;
    this.probe.start(this.opts.probeIntervalMs ?? 5000, () => this.sessions.open === 0);
  }

  /** Resolves true once the broker is known reachable, false after `timeoutMs`. */
  waitConnected(timeoutMs: number): Promise<boolean> {
    if (this.state() === 'connected') return Promise.resolve(true);
    return this.probe.wait(timeoutMs);
  }

  /**
   * For readiness, "is the broker reachable at all": `connected` when a device session is
   * open or the broker last answered (a CONNACK, even a refusal, or the port probe of
   * {@link start}); `down` when it last could not be reached, or after `close()`;
   * `connecting` before any evidence.
   */
  state(): BackendState {
    if (this.closed) return 'down';
    return this.probe.state(this.sessions.open);
  }

  stats(): DeviceSessionStats {
    let inflight = 0;
    let waiting = 0;
    for (const s of this.sessions.values()) {
      inflight += s.conn?.inflight ?? 0;
      waiting += s.replies.size;
    }
    const t = this.sessions;
    const p = this.publishes;
    return {
      state: this.state(),
      protocolVersion: this.protocol.level,
      sessions: {
        open: t.open,
        connecting: t.connecting,
        max: this.admission.maxSessions,
        opened: t.opened,
        closed: { ...t.closedBy },
        reusedByNewDtlsSession: t.reusedByNewDtlsSession,
      },
      connects: {
        attempts: this.connector.attempts,
        ok: this.connector.ok,
        failed: { ...this.connector.failed },
        refused: { ...this.admission.refused },
        rememberedRefusals: this.admission.rememberedRefusals,
        tokens: this.admission.tokens(),
      },
      publishes: { ok: p.ok, failed: { ...p.failed }, inflight },
      pubackLatency: p.latency.snapshot(),
      replies: {
        matched: this.repliesMatched,
        timedOut: this.repliesTimedOut,
        unmatched: this.repliesUnmatched,
        waiting,
      },
      subscriptions: {
        replyFailed: this.replySubscribeFailed,
        commandFailed: this.commandSubscribeFailed,
      },
      commands: { received: this.commandsReceived, failed: this.commandsFailed },
      protocolFallbacks: this.protocol.fallbacks,
    };
  }

  /**
   * The sessions seen as the bridge's {@link MessageBackend} for one device, so the router
   * can use either mode the same way (`publish`/`request` on the device's own connection).
   */
  forDevice(device: Principal): MessageBackend {
    return {
      publish: (topic, payload, opts) => this.publish(device, topic, payload, opts),
      request: (topic, payload, replyTopic, messageId, opts) =>
        this.request(device, topic, payload, replyTopic, messageId, opts),
    };
  }

  /** True when the device has a session open now. */
  isOpen(device: DeviceKey): boolean {
    return this.sessions.get(keyOf(device))?.phase === 'up';
  }

  /**
   * Publishes `payload` with QoS 1 on `topicPrefix + topic` from the device's own connection
   * (opening it first when needed) and resolves on the PUBACK.
   * @throws DeviceUnauthorizedError `BACKEND_DEVICE_UNAUTHORIZED` (4.01)
   * @throws BackendUnavailableError `BACKEND_UNAVAILABLE`, `BACKEND_OVERLOADED`,
   *   `BACKEND_CONNECTION_LOST`, `BACKEND_PUBACK_TIMEOUT`, `BACKEND_CLOSED` (5.03)
   * @throws BackendRejectedError (MQTT 5 PUBACK reason >= 0x80)
   * @throws MqttBackendError `BACKEND_BAD_TOPIC`
   */
  async publish(
    device: Principal,
    topic: string,
    payload: Buffer,
    opts: DevicePublishOptions = {},
  ): Promise<void> {
    const full = this.prefix + topic;
    const bad = checkTopic(full);
    if (bad !== undefined) throw bad;
    const parent = activeContext(); // spans start after the await
    const s = await this.acquire(device);
    try {
      await tracedPublish(this.senderFor(s), full, payload, opts.userProperties, parent);
    } finally {
      this.release(s);
    }
  }

  /**
   * Publishes a request from the device's own connection and resolves with the platform's
   * reply, as {@link MqttBridgeBackend.request} does: the reply topic is subscribed on the
   * device's connection (SUBACK awaited) before the publish; the reply is the message on
   * it whose JSON `id` equals `messageId` (undefined: the first message, raw exchanges).
   * @throws the errors of {@link publish}; `BACKEND_SUBSCRIBE_FAILED`; ReplyTimeoutError
   *   `BACKEND_REPLY_TIMEOUT` (5.04)
   */
  async request(
    device: Principal,
    topic: string,
    payload: Buffer,
    replyTopic: string,
    messageId: string | number | undefined,
    opts: DeviceRequestOptions = {},
  ): Promise<Buffer> {
    const full = this.prefix + topic;
    const fullReply = this.prefix + replyTopic;
    const bad = checkTopic(full) ?? checkTopic(fullReply);
    if (bad !== undefined) throw bad;
    const parent = activeContext(); // spans start after the await
    const s = await this.acquire(device);
    try {
      return await requestReply({
        parent,
        replies: s.replies,
        subscriptions: s.subscriptions,
        send: this.senderFor(s),
        topic: full,
        replyTopic: fullReply,
        payload,
        messageId,
        userProperties: opts.userProperties,
        timeoutMs: opts.replyTimeoutMs ?? this.replyTimeoutMs,
        clock: this.clock,
        deadlines: this.deadlines.queue,
        onSubscribeFailed: this.replySubscribeFailedOnce,
        onTimeout: this.replyTimedOut,
      });
    } finally {
      this.release(s);
    }
  }

  // made once: no closures per request
  private readonly replySubscribeFailedOnce = (e: unknown): void => {
    this.replySubscribeFailed++;
    this.publishes.failure(e);
  };

  private readonly replyTimedOut = (): void => {
    this.repliesTimedOut++;
  };

  /** Refreshes the device's lifetime when it has a session (no session: nothing happens). */
  touch(device: Principal): void {
    const s = this.sessions.get(keyOf(device));
    if (s !== undefined && s.phase !== 'closed') this.sessions.refresh(s, device, this.now());
  }

  /** Ends the device's session (DISCONNECT), counted as `evicted`; no session: nothing. */
  async closeDevice(device: DeviceKey): Promise<void> {
    const s = this.sessions.get(keyOf(device));
    if (s === undefined) return;
    await this.end(
      s,
      'evicted',
      new BackendUnavailableError('BACKEND_UNAVAILABLE', 'device session closed'),
    );
  }

  /**
   * Closes the sessions whose lifetime passed without traffic; returns how many. Runs every
   * `sweepIntervalMs`; public so that tests with an injected clock need not wait for it.
   */
  sweep(): number {
    const t = this.now();
    const lapsed = this.sessions.lapsed(t);
    for (const s of lapsed) {
      void this.end(
        s,
        'lifetime',
        new BackendUnavailableError('BACKEND_UNAVAILABLE', 'device lifetime lapsed'),
      );
    }
    this.admission.sweep(t);
    return lapsed.length;
  }

  /** Ends every session (`shutdown`) and fails everything pending with `BACKEND_CLOSED`. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.clock.clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    this.probe.stop();
    const err = new BackendUnavailableError('BACKEND_CLOSED');
    await Promise.all([...this.sessions.values()].map((s) => this.end(s, 'shutdown', err)));
    this.admission.clear();
  }

  // --- sessions ------------------------------------------------------------------------

  /** The device's open session, opening it when needed; counts a failure as a failed publish. */
  private async acquire(device: Principal): Promise<DeviceSession> {
    try {
      const s = await this.acquireSession(device);
      s.active++;
      return s;
    } catch (e: unknown) {
      this.publishes.failure(e);
      throw e;
    }
  }

  private release(s: DeviceSession): void {
    if (s.active > 0) s.active--;
    if (s.phase !== 'closed') s.lastActivity = this.now();
  }

  private async acquireSession(device: Principal): Promise<DeviceSession> {
    if (this.closed) throw new BackendUnavailableError('BACKEND_CLOSED');
    const key = keyOf(device);
    const existing = this.sessions.get(key);
    if (existing !== undefined) {
      this.sessions.refresh(existing, device, this.now());
      if (existing.phase === 'connecting') await existing.ready;
      return this.usable(existing);
    }
    const waitMs = this.admission.admit(key, this.sessions.size);

    const replies = new ReplyMatcher();
    const s: DeviceSession = {
      key,
      device: { productKey: device.productKey, deviceKey: device.deviceKey },
      phase: 'connecting',
      ready: Promise.resolve(),
      conn: undefined,
      lifetimeMs: device.lifetime * 1000,
      lastActivity: this.now(),
      dtlsSessionId: device.sessionId,
      active: 0,
      filters: commandFilters(this.opts.commandTopics, device, this.prefix),
      replies,
      subscriptions: new ReplySubscriptions<MqttConnection>(
        () => (s.phase === 'up' && s.conn?.isUp === true ? s.conn : undefined),
        this.publishTimeoutMs,
        this.opts.replyLingerMs ?? 60_000,
      ),
      abort: undefined,
      endError: undefined,
    };
    this.sessions.add(s);
    s.ready = this.open(s, device, waitMs);
    // Every waiter awaits `ready`; a failure must not also surface as unhandled.
    s.ready.catch(() => undefined);
    await s.ready;
    return this.usable(s);
  }

  private usable(s: DeviceSession): DeviceSession {
    if (s.phase === 'up' && s.conn?.isUp === true) return s;
    throw s.endError ?? new BackendUnavailableError('BACKEND_UNAVAILABLE');
  }

  /** Opens the session: connect slot, secret, CONNECT (with the version fallback), SUBSCRIBE. */
  private async open(s: DeviceSession, device: Principal, waitMs: number): Promise<void> {
    try {
      if (waitMs > 0) await this.sleep(s, waitMs);
      checkOpening(s);
      const conn = await this.connector.connect(s, device);

      const results = await Promise.allSettled(
        s.filters.map((f) => conn.subscribe(f, this.publishTimeoutMs)),
      );
      checkOpening(s);
      const failed = results.filter((r) => r.status === 'rejected').length;
      if (failed > 0) {
        this.commandSubscribeFailed += failed;
        this.log.warn(
          { device: label(s.device), failed, of: s.filters.length },
          'device command topic subscription refused; commands on it will not arrive',
        );
      }
      if (!conn.isUp) {
        this.connector.failed.unreachable++;
        throw new BackendUnavailableError('BACKEND_CONNECTION_LOST', 'before the SUBACKs');
      }
      this.sessions.opening(s, this.now());
      this.log.debug?.(
        { device: label(s.device), protocolVersion: conn.level },
        'device mqtt session open',
      );
    } catch (e: unknown) {
      if (s.phase === 'closed') {
        // ended from outside while opening: closeDevice, close
        this.connector.failed.aborted++;
        throw s.endError ?? toError(e);
      }
      const err = toError(e);
      s.endError = err;
      void this.end(s, 'error', err);
      throw err;
    }
  }

  /** The open connection dropped. */
  private lost(s: DeviceSession, err: Error | undefined): void {
    // While opening (lost before the command SUBACKs), `open` sees it and fails the open.
    if (s.phase !== 'up') return;
    this.log.debug?.(
      { device: label(s.device), err: err?.message },
      'device mqtt session lost; reopens on its next request',
    );
    const e = new BackendUnavailableError('BACKEND_CONNECTION_LOST');
    s.endError ??= e;
    void this.end(s, 'error', e);
    // Whether the broker went away or only this client was dropped: ask the port.
    if (this.sessions.open === 0 && this.probe.started) void this.probe.probe();
  }

  /** Ends a session once: counted under `reason` if it was open; waiters fail with `err`. */
  private async end(s: DeviceSession, reason: SessionCloseReason, err: Error): Promise<void> {
    if (s.phase === 'closed') return;
    s.endError ??= err;
    const was = this.sessions.remove(s, reason);
    if (was === 'up') {
      this.log.debug?.({ device: label(s.device), reason }, 'device mqtt session closed');
    } else {
      s.abort?.(err);
    }
    s.replies.failAll(err);
    s.subscriptions.clear();
    const conn = s.conn;
    if (conn !== undefined) await conn.close();
  }

  /** Waits for a reserved connect slot; ends early when the session is ended meanwhile. */
  private sleep(s: DeviceSession, ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = this.clock.setTimeout(
        () => {
          s.abort = undefined;
          resolve();
        },
        ms,
        true,
      );
      s.abort = () => {
        this.clock.clearTimeout(timer);
        s.abort = undefined;
        resolve();
      };
    });
  }

  // --- messages ------------------------------------------------------------------------

  private onMessage(s: DeviceSession, topic: string, payload: Buffer): void {
    if (s.replies.deliver(topic, payload) > 0) {
      this.repliesMatched++;
      return;
    }
    const bare =
      this.prefix.length > 0 && topic.startsWith(this.prefix)
        ? topic.slice(this.prefix.length)
        : topic;
    if (!bare.endsWith('_reply') && s.filters.some((f) => topicMatches(f, topic))) {
      this.commandsReceived++;
      try {
        const r = this.opts.onCommand(s.device, bare, payload);
        if (r instanceof Promise) r.catch((e: unknown) => this.commandFailed(s, e));
      } catch (e: unknown) {
        this.commandFailed(s, e);
      }
      return;
    }
    this.repliesUnmatched++;
  }

  private commandFailed(s: DeviceSession, e: unknown): void {
    this.commandsFailed++;
    this.log.warn(
      { device: label(s.device), err: toError(e).message },
      'device command could not be handed on',
    );
  }

  // --- publishing ----------------------------------------------------------------------

  /** The publish function of one session, for the shared publish and request/reply code. */
  private senderFor(s: DeviceSession): SendFn {
    return (topic, payload, props) => this.send(s, topic, payload, props);
  }

  private send(
    s: DeviceSession,
    topic: string,
    payload: Buffer,
    userProperties: UserProperties | undefined,
  ): Promise<void> {
    const conn = s.conn;
    if (conn === undefined || s.phase !== 'up') {
      return this.deadlines.refuse(
        s.endError ?? new BackendUnavailableError('BACKEND_CONNECTION_LOST'),
      );
    }
    return conn.publishAcked(this.deadlines, topic, payload, userProperties);
  }
}

const unavailableReasons: { readonly [C in BackendUnavailableCode]: DevicePublishFailureReason } = {
  BACKEND_UNAVAILABLE: 'unavailable',
  BACKEND_CONNECTION_LOST: 'connection-lost',
  BACKEND_PUBACK_TIMEOUT: 'puback-timeout',
  BACKEND_OVERLOADED: 'overloaded',
  BACKEND_SUBSCRIBE_FAILED: 'unavailable',
  BACKEND_CLOSED: 'closed',
};

function publishFailureReason(e: unknown): DevicePublishFailureReason {
  if (e instanceof DeviceUnauthorizedError) return 'unauthorized';
  if (e instanceof BackendRejectedError) return 'rejected';
  if (e instanceof BackendUnavailableError) return unavailableReasons[e.code];
  return 'unavailable';
}
