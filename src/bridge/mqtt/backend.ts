/**
 * The MQTT backend in bridge mode (docs/design.md: two ways to face an MQTT platform): a small
 * pool of connections publishes for all devices, for brokers where the proxy is trusted.
 *
 * - At-least-once (docs/design.md): `publish` resolves only on the PUBACK of a QoS 1 publish. It
 *   fails fast with {@link BackendUnavailableError} when no connection is up (nothing is
 *   queued while the broker is away), when the connection drops before the PUBACK, or when no
 *   PUBACK arrives within `publishTimeoutMs`. The caller answers 5.03 and the device retries;
 *   the platform may then see a message twice, never zero times.
 * - Flow control: each connection keeps at most `maxInflight` unacknowledged publishes
 *   (lowered to the broker's MQTT 5 Receive Maximum). When all connections are full, a
 *   publish waits for a slot within its own timeout; at most `maxQueued` wait.
 * - Connection choice: round-robin over the connections that are up and have a free slot,
 *   skipping one whose last publish timed out ("suspect") while another is available.
 * - MQTT 5 when the broker speaks it, else 3.1.1 (`protocol: 'auto'`); user properties
 *   (W3C `traceparent`) are sent on MQTT 5 connections only. `auto` connects with level 5;
 *   a broker that answers CONNACK 0x01 "unacceptable protocol version" (what a 3.1.1 broker
 *   such as aedes sends, and what mqtt.js reports as `ErrorWithReasonCode` code 1) or MQTT 5
 *   reason 0x84 makes the whole pool switch to level 4 at once, for the life of the backend.
 *   A broker that closes the socket without any CONNACK is treated as down, not as 3.1.1.
 * - Mosquitto 2 announces Receive Maximum 20, so against it a pool of 2 keeps at most 40
 *   publishes in flight; more wait for a slot (see `maxQueued`).
 * - Replies: see {@link MqttBridgeBackend.request} and `subscriptions.ts`.
 * - Poisoned connections: when the broker drops a connection, the devices whose publishes were
 *   in flight on it are suspected (`suspects.ts`) and their next publishes are refused for a
 *   while instead of being sent on the next pooled connection (no poison loop). Such a refusal
 *   is {@link DeviceSuspectedError}: the router answers 5.03 with Max-Age = the time left,
 *   not 4.00, because a suspect may be a bystander of another device's bad publish (or of a
 *   broker restart) and its request may be perfectly good; after the pause it is sent again.
 */
import { checkTopic, requestReply, tracedPublish, type SendFn } from './exchange.js';
import { systemClock, TimerQueue, type Clock, type Timed } from '../../time/clock.js';
import { ErrorWithReasonCode } from 'mqtt';
import {
  clientIdFor,
  PoolConnection,
  ProtocolChoice,
  type ConnectionHooks,
  type MqttProtocolSetting,
  type UserProperties,
} from './connection.js';
import {
  BackendRejectedError,
  BackendUnavailableError,
  DeviceSuspectedError,
  type BackendUnavailableCode,
} from './errors.js';
import { ReplyMatcher } from './replies.js';
import {
  LatencyHistogram,
  type BackendState,
  type MqttBackendStats,
  type PublishFailureReason,
} from './stats.js';
import { ReplySubscriptions } from './subscriptions.js';
import { Suspects } from './suspects.js';
import { UpWaiters } from './up-waiters.js';
import { deviceId } from '../commands/entry.js';
import type {
  DeviceMessageBackend,
  Principal,
  PublishOptions as DevicePublishOptions,
} from '../types.js';

export type { MqttProtocolSetting } from './connection.js';

/** The subset of a pino logger the backend uses. */
export interface MqttBackendLogger {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
}

export interface MqttBridgeOptions {
  /** `mqtt://host:1883` or `mqtts://host:8883` (settings `mqttUrl`). */
  readonly url: string;
  readonly username?: string | undefined;
  /** Never logged, never in an error message. */
  readonly password?: string | undefined;
  /** Client id prefix; a random suffix and the pool index are added (`mqttClientIdPrefix`). */
  readonly clientIdPrefix: string;
  /** Connections in the pool (setting `mqttPoolSize`). */
  readonly poolSize: number;
  /** Default `auto`: MQTT 5, falling back to 3.1.1 when the broker refuses 5. */
  readonly protocol?: MqttProtocolSetting;
  /** Put before every topic; the EnOS topic keeps its leading slash. Default ''. */
  readonly topicPrefix?: string;
  /** Ms to wait for a PUBACK (and for a SUBACK) (setting `publishTimeoutMs`). */
  readonly publishTimeoutMs: number;
  /** Ms to wait for a reply after the PUBACK (setting `replyTimeoutMs`). */
  readonly replyTimeoutMs: number;
  /** Default 30. */
  readonly keepaliveSec?: number;
  /** Ms to wait for a CONNACK. Default 10000. */
  readonly connectTimeoutMs?: number;
  /** First reconnect delay; doubles per failed attempt up to `reconnectMaxMs`. Default 500. */
  readonly reconnectMinMs?: number;
  /** Default 30000. */
  readonly reconnectMaxMs?: number;
  /** Ms a reply subscription is kept after its last request. Default 60000. */
  readonly replyLingerMs?: number;
  /** Unacknowledged publishes per connection. Default 1000. */
  readonly maxInflight?: number;
  /** Publishes that may wait for an in-flight slot. Default 10000. */
  readonly maxQueued?: number;
  /** First suspension of a device after a connection drop, ms. Default 10000. */
  readonly suspectBaseMs?: number;
  /** Longest suspension (doubling per drop), ms. Default 3600000. */
  readonly suspectMaxMs?: number;
  /** How long an unexplained drop's strike is remembered without a suspension, ms. */
  readonly suspectProbationMs?: number;
  /** Suspected devices remembered at most. Default 10000. */
  readonly maxSuspects?: number;
  /**
   * Time and timers: publish (PUBACK) and reply deadlines, suspensions, latencies.
   * Default: the system clock.
   */
  readonly clock?: Clock;
  readonly logger?: MqttBackendLogger;
}

export interface PublishOptions {
  /** MQTT 5 user properties (e.g. `traceparent`); not sent on a 3.1.1 connection. */
  readonly userProperties?: UserProperties;
  /**
   * The device the publish is for (any stable key, e.g. `pk,dk`): suspected when the broker
   * drops the connection while this publish is in flight. Undefined: never suspected
   * (the proxy's own publishes, e.g. presence events).
   */
  readonly device?: string;
}

export interface RequestOptions extends PublishOptions {
  /** Overrides the backend's `replyTimeoutMs` for this request. */
  readonly replyTimeoutMs?: number;
}

/**
 * One publish until its PUBACK, failure or deadline; it is its own entry in the backend's
 * deadline queue (no closure or timer object per publish).
 */
class PublishJob implements Timed {
  /** 'new' until sent or failed; it may wait in the queue meanwhile (`queued`). */
  state: 'new' | 'sent' | 'done' = 'new';
  /** In {@link MqttBridgeBackend.queue} and counted in `queuedCount`. */
  queued = false;
  /** The connection it was sent on. */
  conn: PoolConnection | undefined = undefined;
  dueAt = 0;
  heapIndex = -1;

  constructor(
    private readonly expired: (job: PublishJob) => void,
    readonly topic: string,
    readonly payload: Buffer,
    readonly userProperties: UserProperties | undefined,
    readonly device: string | undefined,
    readonly startedAt: number,
    readonly resolve: () => void,
    readonly reject: (err: Error) => void,
  ) {}

  onTimer(): void {
    this.expired(this);
  }
}

/**
 * The latest publish, held until the next one: with no PublishJob alive a full GC frees the
 * maps of its fields and deoptimizes the publish path compiled against them (see
 * NATIVE_BUFFER_MAP_HOLDER in src/dtls/record-cipher.ts). Its promise is settled by then.
 */
const latest: { job: PublishJob | undefined } = { job: undefined };

/** The URL without credentials, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return '<invalid url>';
  }
}

const noopLogger: MqttBackendLogger = { info: () => undefined, warn: () => undefined };

export class MqttBridgeBackend {
  private readonly connections: readonly PoolConnection[];
  private readonly protocol: ProtocolChoice;
  private readonly topicPrefix: string;
  private readonly publishTimeoutMs: number;
  private readonly replyTimeoutMs: number;
  private readonly maxQueued: number;
  private readonly log: MqttBackendLogger;
  private readonly urlForLogs: string;
  private rr = 0;
  private closed = false;
  /** Publishes waiting for a slot; entries that left it are skipped lazily. */
  private readonly queue: PublishJob[] = [];
  private readonly clock: Clock;
  /** The publishes' deadlines (PUBACK timeouts). */
  private readonly deadlines: TimerQueue;
  private queuedCount = 0;
  private readonly replies = new ReplyMatcher();
  private readonly subscriptions: ReplySubscriptions<PoolConnection>;
  private readonly upWaiters: UpWaiters;
  /** Connections whose failed attempts were logged since they were last up. */
  private readonly failureLogged = new Set<PoolConnection>();

  private publishOk = 0;
  private readonly publishFailed: Record<PublishFailureReason, number> = {
    unavailable: 0,
    'connection-lost': 0,
    'puback-timeout': 0,
    overloaded: 0,
    rejected: 0,
    closed: 0,
  };
  private readonly suspects: Suspects;
  /** Publishes refused because their device is suspected. */
  private suspectRefused = 0;
  private readonly latency = new LatencyHistogram();
  private repliesMatched = 0;
  private repliesTimedOut = 0;
  private repliesUnmatched = 0;
  private reconnects = 0;
  private connectionUps = 0;
  private connectionDowns = 0;

  constructor(opts: MqttBridgeOptions) {
    this.topicPrefix = opts.topicPrefix ?? '';
    this.publishTimeoutMs = opts.publishTimeoutMs;
    this.replyTimeoutMs = opts.replyTimeoutMs;
    this.maxQueued = opts.maxQueued ?? 10_000;
    this.log = opts.logger ?? noopLogger;
    this.urlForLogs = redactUrl(opts.url);
    this.protocol = new ProtocolChoice(opts.protocol ?? 'auto', () =>
      this.log.info(
        { url: this.urlForLogs },
        'mqtt broker refused MQTT 5; using MQTT 3.1.1 (no user properties)',
      ),
    );
    this.clock = opts.clock ?? systemClock;
    this.upWaiters = new UpWaiters(this.clock);
    // a publish waiting for its PUBACK holds the process open, as a Node timer per publish did
    // lingers: at a low rate the queue empties after nearly every publish
    this.deadlines = new TimerQueue(this.clock, true, 'linger');
    this.suspects = new Suspects({
      baseMs: opts.suspectBaseMs ?? 10_000,
      maxMs: opts.suspectMaxMs ?? 3_600_000,
      probationMs: opts.suspectProbationMs ?? 60_000,
      maxEntries: Math.max(1, opts.maxSuspects ?? 10_000),
      now: () => this.clock.now(),
    });
    const prefix = opts.clientIdPrefix;
    const hooks = this.hooks();
    const size = Math.max(1, opts.poolSize);
    const conns: PoolConnection[] = [];
    for (let i = 0; i < size; i++) {
      conns.push(
        new PoolConnection(
          i,
          {
            url: opts.url,
            username: opts.username,
            password: opts.password,
            clientId: clientIdFor(prefix, i),
            keepaliveSec: opts.keepaliveSec ?? 30,
            connectTimeoutMs: opts.connectTimeoutMs ?? 10_000,
            reconnectMinMs: opts.reconnectMinMs ?? 500,
            reconnectMaxMs: opts.reconnectMaxMs ?? 30_000,
            maxInflight: Math.max(1, opts.maxInflight ?? 1000),
            clock: this.clock,
          },
          hooks,
        ),
      );
    }
    this.connections = conns;
    this.subscriptions = new ReplySubscriptions(
      () => this.pickConnection(false),
      this.publishTimeoutMs,
      opts.replyLingerMs ?? 60_000,
    );
  }

  /** Starts connecting every pool connection; returns at once (see {@link waitConnected}). */
  start(): void {
    if (this.closed) return;
    for (const c of this.connections) c.start();
  }

  /** Resolves true as soon as one connection is up, false after `timeoutMs`. */
  waitConnected(timeoutMs: number): Promise<boolean> {
    if (this.state() === 'connected') return Promise.resolve(true);
    return this.upWaiters.wait(timeoutMs);
  }

  /**
   * `connected`: at least one connection is up. `connecting`: none is up and a first attempt
   * is still running. `down`: none is up (lost or refused; retrying in the background),
   * not started, or closed.
   */
  state(): BackendState {
    if (this.closed) return 'down';
    if (this.connections.some((c) => c.isUp)) return 'connected';
    if (this.connections.some((c) => c.phase === 'connecting')) return 'connecting';
    return 'down';
  }

  stats(): MqttBackendStats {
    const up = this.connections.filter((c) => c.isUp);
    return {
      state: this.state(),
      connections: { total: this.connections.length, up: up.length },
      protocolVersion: up[0]?.level,
      publishes: {
        ok: this.publishOk,
        failed: { ...this.publishFailed },
        inflight: this.connections.reduce((n, c) => n + c.inflight, 0),
        queued: this.queuedCount,
      },
      pubackLatency: this.latency.snapshot(),
      replies: {
        matched: this.repliesMatched,
        timedOut: this.repliesTimedOut,
        unmatched: this.repliesUnmatched,
        waiting: this.replies.size,
      },
      subscriptions: { active: this.subscriptions.active, failed: this.subscriptions.failed },
      reconnects: this.reconnects,
      connectionUps: this.connectionUps,
      connectionDowns: this.connectionDowns,
      protocolFallbacks: this.protocol.fallbacks,
      suspects: {
        strikes: this.suspects.strikes,
        refused: this.suspectRefused,
        remembered: this.suspects.size,
      },
    };
  }

  /**
   * Publishes `payload` with QoS 1 on `topicPrefix + topic` (`topic` is the EnOS topic with
   * its leading slash) and resolves on the PUBACK.
   * @throws BackendUnavailableError `BACKEND_UNAVAILABLE` (no connection up, at once),
   *   `BACKEND_CONNECTION_LOST`, `BACKEND_PUBACK_TIMEOUT`, `BACKEND_OVERLOADED`, `BACKEND_CLOSED`
   * @throws BackendRejectedError the broker refused it (MQTT 5 PUBACK reason >= 0x80)
   * @throws DeviceSuspectedError `opts.device` is suspected (nothing sent)
   */
  publish(topic: string, payload: Buffer, opts?: PublishOptions): Promise<void> {
    return this.publishFor(opts?.device, topic, payload, opts?.userProperties);
  }

  /** @internal {@link publish} with its options as arguments (no options object per call). */
  publishFor(
    device: string | undefined,
    topic: string,
    payload: Buffer,
    userProperties: UserProperties | undefined,
  ): Promise<void> {
    const full = this.topicPrefix + topic;
    const bad = checkTopic(full);
    if (bad !== undefined) return Promise.reject(bad);
    return tracedPublish(this.sendFn, full, payload, userProperties, undefined, device);
  }

  /**
   * The pool as the router's {@link DeviceMessageBackend}: the device rides along so a
   * publish that gets a shared connection dropped suspects its device (no poison loop over
   * the pool). Made once; its methods allocate no options object per request.
   */
  forDevices(): DeviceMessageBackend {
    return (this.devices ??= new PoolForDevices(this));
  }

  private devices: PoolForDevices | undefined;

  /**
   * Publishes a request and resolves with the payload of its reply, as received.
   *
   * 1. Makes sure this pod is subscribed to `topicPrefix + replyTopic` (SUBACK awaited).
   * 2. Publishes like {@link publish} (QoS 1, PUBACK awaited).
   * 3. Waits up to `replyTimeoutMs` (counted from the PUBACK) for a message on the reply
   *    topic whose JSON `id` equals `messageId` (a number id matches its decimal string).
   *
   * `messageId` undefined: a raw exchange (`thing/model/up_raw` → `up_raw_reply`, raw bytes
   * without an id): the first message on the reply topic not taken by an id-waiter answers
   * the oldest raw request on that topic.
   * @throws the errors of {@link publish}; BackendUnavailableError `BACKEND_SUBSCRIBE_FAILED`;
   *   ReplyTimeoutError `BACKEND_REPLY_TIMEOUT`
   */
  request(
    topic: string,
    payload: Buffer,
    replyTopic: string,
    messageId: string | number | undefined,
    opts?: RequestOptions,
  ): Promise<Buffer> {
    return this.requestFor(
      opts?.device,
      topic,
      payload,
      replyTopic,
      messageId,
      opts?.userProperties,
      opts?.replyTimeoutMs,
    );
  }

  /** @internal {@link request} with its options as arguments. */
  requestFor(
    device: string | undefined,
    topic: string,
    payload: Buffer,
    replyTopic: string,
    messageId: string | number | undefined,
    userProperties: UserProperties | undefined,
    replyTimeoutMs: number | undefined,
  ): Promise<Buffer> {
    const full = this.topicPrefix + topic;
    const fullReplyTopic = this.topicPrefix + replyTopic;
    const bad = checkTopic(full) ?? checkTopic(fullReplyTopic);
    if (bad !== undefined) return Promise.reject(bad);
    const early = this.refuseSuspect(device) ?? this.failEarly();
    if (early !== undefined) return Promise.reject(early);
    return requestReply({
      replies: this.replies,
      subscriptions: this.subscriptions,
      send: this.sendFn,
      topic: full,
      replyTopic: fullReplyTopic,
      payload,
      messageId,
      userProperties,
      device,
      timeoutMs: replyTimeoutMs ?? this.replyTimeoutMs,
      clock: this.clock,
      deadlines: this.deadlines,
      onTimeout: this.replyTimedOut,
    });
  }

  private readonly replyTimedOut = (): void => {
    this.repliesTimedOut++;
  };

  /** Fails everything pending with `BACKEND_CLOSED` and ends all connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const job of this.queue.splice(0)) this.finishFailed(job, 'closed');
    this.replies.failAll(new BackendUnavailableError('BACKEND_CLOSED'));
    this.subscriptions.clear();
    this.upWaiters.settle(false);
    await Promise.all(this.connections.map((c) => c.close()));
  }

  // --- publishing ----------------------------------------------------------------------

  /** The error (counted) when a publish cannot even start: closed, or no connection up. */
  private failEarly(): BackendUnavailableError | undefined {
    if (this.closed) {
      this.publishFailed.closed++;
      return new BackendUnavailableError('BACKEND_CLOSED');
    }
    if (!this.anyUp()) {
      this.publishFailed.unavailable++;
      return new BackendUnavailableError('BACKEND_UNAVAILABLE');
    }
    return undefined;
  }

  private anyUp(): boolean {
    const conns = this.connections;
    for (let i = 0; i < conns.length; i++) if (conns[i]?.isUp === true) return true;
    return false;
  }

  /** The error (counted) when `device` is suspected; see `suspects.ts`. */
  private refuseSuspect(device: string | undefined): DeviceSuspectedError | undefined {
    if (device === undefined) return undefined;
    const ms = this.suspects.remainingMs(device);
    if (ms <= 0) return undefined;
    this.suspectRefused++;
    return new DeviceSuspectedError(Math.ceil(ms / 1000));
  }

  /** `send` bound once, for the shared publish and request/reply code. */
  private readonly sendFn: SendFn = (topic, payload, props, device) =>
    this.send(topic, payload, props, device);

  private send(
    topic: string,
    payload: Buffer,
    userProperties: UserProperties | undefined,
    device: string | undefined,
  ): Promise<void> {
    const early = this.refuseSuspect(device) ?? this.failEarly();
    if (early !== undefined) return Promise.reject(early);
    return new Promise<void>((resolve, reject) => {
      const now = this.clock.now();
      const job = new PublishJob(
        this.jobExpired,
        topic,
        payload,
        userProperties,
        device,
        now,
        resolve,
        reject,
      );
      latest.job = job;
      this.deadlines.schedule(job, now + this.publishTimeoutMs);
      const conn = this.pickConnection(true);
      if (conn !== undefined) this.dispatch(job, conn);
      else if (this.queuedCount >= this.maxQueued) this.finishFailed(job, 'overloaded');
      else {
        job.queued = true;
        this.queuedCount++;
        this.queue.push(job);
      }
    });
  }

  /**
   * Round-robin over connections that are up (and, with `needSlot`, have a free in-flight
   * slot), preferring ones not marked suspect.
   */
  private pickConnection(needSlot: boolean): PoolConnection | undefined {
    const n = this.connections.length;
    let fallback: PoolConnection | undefined;
    for (let k = 0; k < n; k++) {
      const i = (this.rr + k) % n;
      const c = this.connections[i];
      if (c === undefined || !c.isUp) continue;
      if (needSlot && c.inflight >= c.limit) continue;
      if (c.suspect) {
        fallback ??= c;
        continue;
      }
      this.rr = (i + 1) % n;
      return c;
    }
    return fallback;
  }

  private dispatch(job: PublishJob, conn: PoolConnection): void {
    this.unqueue(job);
    job.state = 'sent';
    job.conn = conn;
    const sent = conn.publish(job.topic, job.payload, job.userProperties, (err) =>
      this.onAck(job, err),
    );
    if (!sent) this.finishFailed(job, 'unavailable');
  }

  private onAck(job: PublishJob, err: Error | undefined): void {
    if (job.state === 'sent') {
      if (err === undefined) {
        this.latency.observe(this.clock.now() - job.startedAt);
        this.publishOk++;
        this.finish(job);
        job.resolve();
      } else if (err instanceof ErrorWithReasonCode && err.code >= 0x80) {
        this.publishFailed.rejected++;
        this.finish(job);
        job.reject(new BackendRejectedError(err.code));
      } else {
        const conn = job.conn;
        // The broker dropped the connection with this publish in flight (not our close):
        // its device is suspected of having caused it, once per drop.
        if (job.device !== undefined && !this.closed && conn !== undefined && !conn.isUp) {
          if (conn.phase === 'down') {
            this.suspects.strike(job.device, conn.dropId, conn.lastDropRefusedPacket);
          }
        }
        this.finishFailed(job, 'connection-lost');
      }
    }
    // A slot was freed (also by a late PUBACK after a timeout).
    this.drain();
  }

  private readonly jobExpired = (job: PublishJob): void => this.onJobTimeout(job);

  private onJobTimeout(job: PublishJob): void {
    if (job.state === 'done') return;
    // A connection that leaves a PUBACK out is avoided until it acknowledges again.
    if (job.state === 'sent' && job.conn !== undefined && job.conn.isUp) job.conn.suspect = true;
    this.finishFailed(job, 'puback-timeout');
  }

  private unqueue(job: PublishJob): void {
    if (!job.queued) return;
    job.queued = false;
    this.queuedCount--;
  }

  private finish(job: PublishJob): void {
    this.unqueue(job);
    job.state = 'done';
    this.deadlines.cancel(job);
  }

  private finishFailed(job: PublishJob, reason: UnavailableReason): void {
    if (job.state === 'done') return;
    this.finish(job);
    this.publishFailed[reason]++;
    const code: BackendUnavailableCode = failureCodes[reason];
    job.reject(new BackendUnavailableError(code));
  }

  /** Sends queued publishes while a connection has a free slot. */
  private drain(): void {
    while (this.queue.length > 0) {
      const job = this.queue[0];
      if (job === undefined || !job.queued) {
        this.queue.shift();
        continue;
      }
      const conn = this.pickConnection(true);
      if (conn === undefined) return;
      this.queue.shift();
      this.dispatch(job, conn);
    }
  }

  // --- connection events ---------------------------------------------------------------

  private hooks(): ConnectionHooks {
    return {
      protocolLevel: () => this.protocol.level,
      onVersionRefused: (conn, level) => {
        if (this.protocol.refused(level)) return true;
        this.log.warn(
          { url: this.urlForLogs, connection: conn.index, protocolVersion: level },
          'mqtt broker refused the configured protocol version',
        );
        return false;
      },
      onAttempt: (_conn, first) => {
        if (!first) this.reconnects++;
      },
      onUp: (conn) => {
        this.connectionUps++;
        this.failureLogged.delete(conn);
        this.log.info(
          { url: this.urlForLogs, connection: conn.index, protocolVersion: conn.level },
          'mqtt connection up',
        );
        this.upWaiters.settle(true);
        this.drain();
      },
      onDown: (conn, wasUp, err) => {
        this.subscriptions.connectionLost(conn);
        if (wasUp) {
          this.connectionDowns++;
          this.log.warn(
            { url: this.urlForLogs, connection: conn.index, err: err?.message },
            'mqtt connection lost',
          );
        } else if (!this.failureLogged.has(conn)) {
          // Once per outage; the attempts go on with backoff and are counted in `reconnects`.
          this.failureLogged.add(conn);
          this.log.warn(
            { url: this.urlForLogs, connection: conn.index, err: err?.message },
            'mqtt connection attempt failed; retrying with backoff',
          );
        }
        if (!this.connections.some((c) => c.isUp)) {
          // Fail fast: nothing waits for a broker that is away.
          for (const job of this.queue.splice(0)) this.finishFailed(job, 'unavailable');
        }
      },
      onMessage: (topic, payload, traceparent) => {
        if (this.replies.deliver(topic, payload, traceparent) > 0) this.repliesMatched++;
        else this.repliesUnmatched++;
      },
    };
  }
}

/**
 * The bridge pool on behalf of devices (see {@link MqttBridgeBackend.forDevices}). A class
 * rather than closures in the composition root: the device key and the options travel as
 * arguments, with no object spread per request.
 */
class PoolForDevices implements DeviceMessageBackend {
  constructor(private readonly pool: MqttBridgeBackend) {}

  publish(
    device: Principal,
    topic: string,
    payload: Buffer,
    opts?: DevicePublishOptions,
  ): Promise<void> {
    return this.pool.publishFor(deviceId(device), topic, payload, opts?.userProperties);
  }

  request(
    device: Principal,
    topic: string,
    payload: Buffer,
    replyTopic: string,
    messageId: string | undefined,
    opts?: DevicePublishOptions,
  ): Promise<Buffer> {
    return this.pool.requestFor(
      deviceId(device),
      topic,
      payload,
      replyTopic,
      messageId,
      opts?.userProperties,
      undefined,
    );
  }
}

type UnavailableReason = Exclude<PublishFailureReason, 'rejected'>;

const failureCodes: { readonly [R in UnavailableReason]: BackendUnavailableCode } = {
  unavailable: 'BACKEND_UNAVAILABLE',
  'connection-lost': 'BACKEND_CONNECTION_LOST',
  'puback-timeout': 'BACKEND_PUBACK_TIMEOUT',
  overloaded: 'BACKEND_OVERLOADED',
  closed: 'BACKEND_CLOSED',
};
