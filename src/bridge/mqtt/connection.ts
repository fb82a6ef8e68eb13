/**
 * The one MQTT connection of coap-edge: each bridge pool connection, the command intake's
 * connection and every per-device session is one {@link MqttConnection}. It owns connecting
 * (MQTT 5 falling back to 3.1.1 through a {@link ProtocolChoice} its owner shares among its
 * connections), TCP_NODELAY, holding writes to the end of the event loop turn, QoS 1 publish
 * (optionally with a PUBACK deadline on its owner's {@link TimerQueue}:
 * {@link PublishDeadlines}), subscribe, and reconnecting with backoff (or, for per-device
 * sessions, not at all).
 *
 * Every connection attempt uses a fresh mqtt.js client with `reconnectPeriod: 0`; this class
 * schedules the next attempt itself (exponential backoff with jitter). Why not mqtt.js's own
 * reconnect: its period is fixed (no backoff), and a reconnecting mqtt.js client re-sends the
 * QoS 1 publishes of the lost connection, which the bridge has already reported as failed
 * (the device retries; a resend would only add a duplicate). With a fresh client per attempt
 * the publishes of a lost connection fail at once (`BACKEND_CONNECTION_LOST`), the clean
 * session starts empty, and switching the protocol level (MQTT 5 → 3.1.1) needs no mqtt.js
 * internals.
 */
import { randomBytes } from 'node:crypto';
import { connect as netConnect, isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import {
  connect,
  ErrorWithReasonCode,
  MqttClient,
  Store,
  type IClientOptions,
  type IClientPublishOptions,
  type IConnackPacket,
  type IDisconnectPacket,
  type IPublishPacket,
} from 'mqtt';
import {
  systemClock,
  TimerQueue,
  type Clock,
  type Timed,
  type TimerHandle,
} from '../../time/clock.js';
import { KeepaliveTimer } from './keepalive-timer.js';
import { pubackPacket, publishPacket } from './publish-packet.js';
import { tapInbound } from './inbound-tap.js';
import { BackendRejectedError, BackendUnavailableError, type MqttBackendError } from './errors.js';
import type { PublishCounters } from './stats.js';

export type ProtocolLevel = 4 | 5;

/** Setting `mqttProtocol`: `auto` is MQTT 5, falling back to 3.1.1 when the broker refuses 5. */
export type MqttProtocolSetting = 'auto' | '5' | '3.1.1';

/**
 * The protocol level an owner's connections use: 5 (or 3.1.1 when so configured), and with
 * `auto` 3.1.1 for all of them, for the owner's life, once the broker refused 5.
 */
export class ProtocolChoice {
  level: ProtocolLevel;
  /** Times `auto` fell back from MQTT 5 to 3.1.1. */
  fallbacks = 0;

  /** `onFallback`: runs once, when the choice switches to 3.1.1 (for a log line). */
  constructor(
    readonly setting: MqttProtocolSetting,
    private readonly onFallback: () => void,
  ) {
    this.level = setting === '3.1.1' ? 4 : 5;
  }

  /**
   * The broker refused `level` (see {@link isVersionRefusal}). True when the next attempt
   * should be made at once with 3.1.1 (`auto`, and `level` was 5); false otherwise.
   */
  refused(level: ProtocolLevel): boolean {
    if (this.setting !== 'auto' || level !== 5) return false;
    if (this.level === 5) {
      this.level = 4;
      this.fallbacks++;
      this.onFallback();
    }
    return true;
  }
}

/** idle: not started; connecting: first attempt running; up; down: retrying; closed. */
export type ConnectionPhase = 'idle' | 'connecting' | 'up' | 'down' | 'closed';

export type UserProperties = Readonly<Record<string, string | string[]>>;

export interface ConnectionOptions {
  readonly url: string;
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly clientId: string;
  readonly keepaliveSec: number;
  readonly connectTimeoutMs: number;
  /**
   * False: no reconnect; after a lost connection or a failed attempt the connection stays
   * down (its owner opens a new one), except that a refused protocol level is retried at
   * once when `onVersionRefused` says so. Default true.
   */
  readonly reconnect?: boolean;
  /** First reconnect delay; doubles per failed attempt up to `reconnectMaxMs`. Default 500. */
  readonly reconnectMinMs?: number;
  /** Default 30000. */
  readonly reconnectMaxMs?: number;
  /**
   * False: the connection counts as healthy for the backoff only once its owner calls
   * {@link MqttConnection.markSteady} (the command intake: after its SUBACK), so a connection
   * that comes up and is refused what its owner needs keeps backing off. Default true (at
   * the CONNACK).
   */
  readonly steadyOnConnect?: boolean;
  /** In-flight QoS 1 publishes at most; lowered to the broker's MQTT 5 Receive Maximum. */
  readonly maxInflight: number;
  /**
   * The owner's clock, for the connection's own deadlines: the SUBACK wait, the close guard and
   * the reconnect delay (each holds the process open, as a plain Node timer did). mqtt.js's
   * connect timeout stays its own; its keep-alive is a {@link KeepaliveTimer} on the system
   * clock. Default: the system clock.
   */
  readonly clock?: Clock;
}

export interface ConnectionHooks {
  /** The protocol level of the next attempt. */
  protocolLevel(): ProtocolLevel;
  /**
   * The broker refused the protocol level of an attempt (CONNACK 0x01 "unacceptable protocol
   * version" from a 3.1.1 broker, or MQTT 5 reason 0x84). True: retry at once (the pool
   * switched to 3.1.1); false: retry after the usual backoff.
   */
  onVersionRefused(conn: MqttConnection, level: ProtocolLevel): boolean;
  onAttempt(conn: MqttConnection, first: boolean): void;
  onUp(conn: MqttConnection): void;
  /**
   * After a lost connection (`wasUp`) or a failed attempt; `err` is the last error seen.
   * `retrying`: another attempt follows unless the hook closes the connection (false when
   * it does not reconnect and the protocol level was not refused).
   */
  onDown(conn: MqttConnection, wasUp: boolean, err: Error | undefined, retrying: boolean): void;
  /** `traceparent`: the W3C trace context of an MQTT 5 message, when it carries one. */
  onMessage(topic: string, payload: Buffer, traceparent: string | undefined): void;
  /**
   * Takes over mqtt.js's `handleMessage`: the PUBACK of a QoS 1 message is sent when `done`
   * runs, and messages are handed over one at a time (the command intake's store writes).
   * `onMessage` still runs for each message, before it is handed to this.
   */
  handleMessage?(packet: IPublishPacket, done: () => void): void;
}

/** What one mqtt.js client carries; replaced on every attempt. */
interface Session {
  readonly client: MqttClient;
  readonly level: ProtocolLevel;
  inflight: number;
  limit: number;
  up: boolean;
  versionRefused: boolean;
  lastError: Error | undefined;
  /** Reason code of the broker's DISCONNECT (MQTT 5), when it sent one before closing. */
  disconnectReason: number | undefined;
  /** An uncork of the client's socket is scheduled for the end of this event loop turn. */
  corked: boolean;
  /**
   * The latest uncork's Immediate, held until the next: with no Immediate alive a full GC
   * frees the maps of node's Immediate objects and deoptimizes this path compiled against
   * them (NATIVE_BUFFER_MAP_HOLDER in src/dtls/record-cipher.ts says why).
   */
  uncork: NodeJS.Immediate | undefined;
  /**
   * The latest message received (mqtt-packet's object, or the tap's), held until the next, as
   * `uncork`.
   */
  lastMessage: IPublishPacket | undefined;
  /** Healthy for the backoff: up (or, without `steadyOnConnect`, marked by the owner). */
  steady: boolean;
}

/**
 * MQTT 5 DISCONNECT reason codes with which a broker says it refused what a client sent:
 * malformed packet, protocol error, implementation-specific error, topic name invalid,
 * packet too large, payload format invalid (MQTT 5 §3.14.2.1).
 */
const REFUSED_PACKET_REASONS: ReadonlySet<number> = new Set([0x81, 0x82, 0x83, 0x90, 0x95, 0x99]);

/** How long {@link MqttConnection.close} waits for mqtt.js to end before destroying the socket. */
export const CLOSE_GUARD_MS = 1000;

/** Random client id suffix: 8 hex digits, plus the pool index. */
export function clientIdFor(prefix: string, index: number): string {
  return `${prefix}${randomBytes(4).toString('hex')}-${index}`;
}

/**
 * Delay before attempt number `failures + 1` after `failures` consecutive failures: doubling
 * from `minMs`, capped at `maxMs`, with "equal jitter" (half fixed, half random).
 */
export function backoffDelay(failures: number, minMs: number, maxMs: number, random: number) {
  const base = Math.min(maxMs, minMs * 2 ** Math.min(failures, 30));
  return Math.round(base / 2 + (base / 2) * random);
}

/** A CONNACK refusal of the protocol level: 0x01 (3.1.1) or 0x84 (MQTT 5). */
function isVersionRefusal(err: Error): boolean {
  return err instanceof ErrorWithReasonCode && (err.code === 1 || err.code === 0x84);
}

export class MqttConnection {
  phase: ConnectionPhase = 'idle';
  /** Set by the pool after a PUBACK timeout; cleared by the next PUBACK on this connection. */
  suspect = false;
  /** Connections lost while up so far; names the current drop in {@link dropId}. */
  private drops = 0;
  /**
   * Whether the latest drop was the broker refusing a packet we sent (an MQTT 5 DISCONNECT
   * with such a reason); false when it closed without saying why (MQTT 3.1.1, a restart, the
   * network), which may as well be no publisher's fault.
   */
  lastDropRefusedPacket = false;
  private session: Session | undefined;
  private failures = 0;
  private attempts = 0;
  private retryTimer: TimerHandle = undefined;
  private readonly clock: Clock;

  constructor(
    readonly index: number,
    private readonly opts: ConnectionOptions,
    private readonly hooks: ConnectionHooks,
  ) {
    this.clock = opts.clock ?? systemClock;
  }

  /** Names this connection's latest loss while up (`<index>:<n>`). */
  get dropId(): string {
    return `${this.index}:${this.drops}`;
  }

  get isUp(): boolean {
    return this.phase === 'up' && this.session?.client.connected === true;
  }

  /** Protocol level of the current connection when up. */
  get level(): ProtocolLevel | undefined {
    return this.isUp ? this.session?.level : undefined;
  }

  get inflight(): number {
    return this.session?.inflight ?? 0;
  }

  /** In-flight publishes allowed now (0 when not up). */
  get limit(): number {
    return this.isUp ? (this.session?.limit ?? 0) : 0;
  }

  start(): void {
    if (this.phase !== 'idle') return;
    this.phase = 'connecting';
    this.open();
  }

  /**
   * Publishes with QoS 1. `cb` runs once: without an error on PUBACK, with one when the broker
   * refuses (MQTT 5 reason >= 0x80) or the connection is lost. False when not up (nothing sent).
   */
  publish(
    topic: string,
    payload: Buffer,
    userProperties: UserProperties | undefined,
    cb: (err: Error | undefined) => void,
  ): boolean {
    const s = this.session;
    if (s === undefined || !this.isUp) return false;
    s.inflight++;
    coalesceWrites(s);
    let done = false;
    const onAck = (err: Error | undefined | null): void => {
      if (done) return;
      done = true;
      s.inflight--;
      if (err === undefined || err === null) this.suspect = false;
      cb(err ?? undefined);
    };
    const client = s.client;
    // Our own PUBLISH in one write (publish-packet.ts says why); mqtt.js still owns the packet
    // id, the PUBACK (its `outgoing` entry, as its own publish makes) and failing what is
    // pending when the connection goes. While it is disconnecting, or for a packet the encoder
    // leaves alone, mqtt.js's publish does as before.
    if (!client.disconnecting) {
      const id = client.messageIdProvider.allocate();
      if (id !== null) {
        const packet = publishPacket(topic, payload, id, s.level, userProperties);
        if (packet !== undefined) {
          client.outgoing[id] = { volatile: false, cmd: 'publish', cb: onAck };
          client.stream.write(packet);
          return true;
        }
        client.messageIdProvider.deallocate(id);
      }
    }
    const opts: IClientPublishOptions =
      s.level === 5 && userProperties !== undefined
        ? { qos: 1, properties: { userProperties: { ...userProperties } } }
        : QOS1;
    client.publish(topic, payload, opts, onAck);
    return true;
  }

  /**
   * Publishes with QoS 1 and resolves on the PUBACK, counted in `d.counters`. Rejects with
   * `BACKEND_CONNECTION_LOST` (not up, or lost before the PUBACK), `BACKEND_OVERLOADED` (the
   * in-flight limit is reached; nothing sent), `BACKEND_PUBACK_TIMEOUT` (`d.timeoutMs` passed
   * on `d`'s clock) or {@link BackendRejectedError} (MQTT 5 PUBACK reason >= 0x80).
   */
  publishAcked(
    d: PublishDeadlines,
    topic: string,
    payload: Buffer,
    userProperties: UserProperties | undefined,
  ): Promise<void> {
    if (!this.isUp) return d.refuse(new BackendUnavailableError('BACKEND_CONNECTION_LOST'));
    if (this.inflight >= this.limit) {
      return d.refuse(
        new BackendUnavailableError('BACKEND_OVERLOADED', 'too many unacknowledged publishes'),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const job = new AckedPublish(d, resolve, reject);
      d.queue.schedule(job, job.startedAt + d.timeoutMs);
      const sent = this.publish(topic, payload, userProperties, (err) => job.acked(err));
      if (!sent) job.acked(new Error('not up'));
    });
  }

  /**
   * Subscribes with QoS 1 to `topic` (one SUBSCRIBE for a list) and resolves on a SUBACK
   * that grants every filter.
   */
  subscribe(topic: string | readonly string[], timeoutMs: number): Promise<void> {
    const s = this.session;
    if (s === undefined || !this.isUp) {
      return Promise.reject(new BackendUnavailableError('BACKEND_UNAVAILABLE'));
    }
    const clock = this.clock;
    return new Promise<void>((resolve, reject) => {
      let done = false;
      const timer = clock.setTimeout(
        () => {
          done = true;
          reject(
            this.session !== s || !s.up
              ? new BackendUnavailableError('BACKEND_CONNECTION_LOST', 'before the SUBACK')
              : new BackendUnavailableError('BACKEND_SUBSCRIBE_FAILED', 'no SUBACK in time'),
          );
        },
        timeoutMs,
        true,
      );
      s.client.subscribe(
        typeof topic === 'string' ? topic : [...topic],
        { qos: 1 },
        (err, granted) => {
          if (done) return;
          done = true;
          clock.clearTimeout(timer);
          const refused = granted?.find((g) => (g.qos & 0x80) !== 0);
          if (this.session !== s || !s.up) {
            reject(new BackendUnavailableError('BACKEND_CONNECTION_LOST', 'before the SUBACK'));
          } else if (err !== undefined && err !== null) {
            reject(new BackendUnavailableError('BACKEND_SUBSCRIBE_FAILED', err.message));
          } else if (refused !== undefined) {
            reject(
              new BackendUnavailableError(
                'BACKEND_SUBSCRIBE_FAILED',
                typeof topic === 'string'
                  ? `SUBACK 0x${refused.qos.toString(16)}`
                  : `SUBACK 0x${refused.qos.toString(16)} ${refused.topic}`,
              ),
            );
          } else resolve();
        },
      );
    });
  }

  /** The connection is healthy for the backoff (with `steadyOnConnect: false`). */
  markSteady(): void {
    const s = this.session;
    if (s === undefined || !s.up) return;
    s.steady = true;
    this.failures = 0;
  }

  /**
   * Drops the current connection (no DISCONNECT); the reconnect follows as after a lost
   * connection.
   */
  drop(): void {
    this.session?.client.end(true);
  }

  /** Best effort; a lost connection drops its subscriptions anyway (clean session). */
  unsubscribe(topic: string): void {
    const s = this.session;
    if (s === undefined || !this.isUp) return;
    s.client.unsubscribe(topic, () => undefined);
  }

  /** Ends the connection: DISCONNECT when idle, else a forced close; at most ~1 s. */
  async close(): Promise<void> {
    this.phase = 'closed';
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const s = this.session;
    this.session = undefined;
    if (s === undefined) return;
    const client = s.client;
    const clock = this.clock;
    await new Promise<void>((resolve) => {
      const guard = clock.setTimeout(
        () => {
          client.stream.destroy();
          resolve();
        },
        CLOSE_GUARD_MS,
        true,
      );
      const force = !client.connected || s.inflight > 0;
      client.end(force, () => {
        clock.clearTimeout(guard);
        resolve();
      });
    });
  }

  private open(): void {
    const first = this.attempts === 0;
    this.attempts++;
    this.hooks.onAttempt(this, first);
    const level = this.hooks.protocolLevel();
    const o = this.opts;
    const options: IClientOptions = {
      protocolVersion: level,
      clientId: o.clientId,
      clean: true,
      keepalive: o.keepaliveSec,
      connectTimeout: o.connectTimeoutMs,
      reconnectPeriod: 0,
      resubscribe: false,
      queueQoSZero: false,
      // mqtt-packet otherwise fills, on the first packet it writes, a table of all 65 536
      // two-byte numbers (one Buffer each, ~7 MB of live heap that every major GC marks);
      // without it each topic length and packet id is a fresh 2-byte Buffer from the pool.
      // The setting is process-wide in mqtt-packet (aedes writes with the same module).
      // docs/design.md, "Memory at idle".
      writeCache: false,
      // mqtt.js restarts its keep-alive interval on every PUBACK: one host timer per client
      // instead of a Node interval cleared and set again per publish
      timerVariant: new KeepaliveTimer().forMqtt(),
      // nothing is ever resent (a fresh client per attempt), so no copy of each publish
      outgoingStore: new NoResendStore(),
    };
    // mqtt.js's debug logger gathers its arguments on each of its ~20 calls per publish even
    // when off; the debug package keeps what is on in DEBUG, so without it nothing would log
    if (process.env['DEBUG'] === undefined) options.log = noLog;
    // Only set when given: an explicit undefined would override credentials in the URL.
    if (o.username !== undefined) options.username = o.username;
    if (o.password !== undefined) options.password = o.password;

    const target = brokerTarget(o.url);
    const client =
      target === undefined ? connect(o.url, options) : new MqttClient(streamTo(target), options);
    const s: Session = {
      client,
      level,
      inflight: 0,
      limit: o.maxInflight,
      up: false,
      versionRefused: false,
      lastError: undefined,
      disconnectReason: undefined,
      corked: false,
      uncork: undefined,
      lastMessage: undefined,
      steady: false,
    };
    this.session = s;
    const hooks = this.hooks;
    // What mqtt.js's QoS 0/1 handler does with a message (handlers/publish.js): the `message`
    // listener below, then `handleMessage` (ours: `acknowledge`, the PUBACK of QoS 1)
    const received = (topic: string, payload: Buffer, packet: IPublishPacket): void => {
      if (this.session !== s) return;
      s.lastMessage = packet;
      // mqtt.js writes the PUBACK right after this event, before the promises it settles run:
      // held to the end of the turn, it leaves after the answer it brought has gone out
      coalesceWrites(s);
      hooks.onMessage(topic, payload, traceparentOf(packet));
    };
    // PUBACKs of our publishes are settled, and QoS 0/1 PUBLISHes parsed and handled, before
    // mqtt.js parses them (inbound-tap.ts), on a socket of ours, and only when messages are
    // handled at once (no `handleMessage` hook that holds mqtt.js's packet pump, which the
    // tap's order relies on)
    const tap =
      target !== undefined && hooks.handleMessage === undefined
        ? tapInbound(client, client.stream, (packet) => {
            received(packet.topic, packet.payload, packet);
            if (packet.qos === 1) writePuback(client, packet);
          })
        : undefined;
    // The PUBACK of a QoS 1 message received is ours too (one write; publish-packet.ts says
    // why), written when the message is handled: at once, or when the owner's
    // `handleMessage` says so.
    client.handleMessage =
      hooks.handleMessage === undefined
        ? (packet: IPublishPacket, done: DoneCallback): void => acknowledge(client, packet, done)
        : (packet: IPublishPacket, done: DoneCallback): void =>
            hooks.handleMessage?.(packet, () => acknowledge(client, packet, done));

    client.on('error', (err: Error) => {
      // mqtt-packet's parser, after a malformed packet, no longer reads where the tap would
      tap?.stop();
      s.lastError = err;
      if (isVersionRefusal(err)) s.versionRefused = true;
    });
    client.on('connect', (connack: IConnackPacket) => {
      if (this.session !== s) return;
      // mqtt.js leaves Nagle on: a publish would wait for the previous PUBACK's delayed ACK
      // (measured 22 ms per request with a reply instead of 0.8 ms on loopback).
      noDelay(client);
      s.up = true;
      const receiveMaximum = connack.properties?.receiveMaximum;
      if (level === 5 && receiveMaximum !== undefined && receiveMaximum > 0) {
        s.limit = Math.min(o.maxInflight, receiveMaximum);
      }
      this.phase = 'up';
      if (o.steadyOnConnect ?? true) {
        s.steady = true;
        this.failures = 0;
      }
      this.suspect = false;
      this.hooks.onUp(this);
    });
    client.on('message', received);
    client.on('disconnect', (packet: IDisconnectPacket) => {
      s.disconnectReason = packet.reasonCode ?? 0;
    });
    client.on('close', () => this.onClose(s));
  }

  private onClose(s: Session): void {
    const current = this.session === s;
    const wasUp = s.up;
    s.up = false;
    if (current) {
      if (wasUp) {
        this.drops++;
        this.lastDropRefusedPacket =
          s.disconnectReason !== undefined && REFUSED_PACKET_REASONS.has(s.disconnectReason);
      }
      this.session = undefined;
      this.suspect = false;
      this.phase = 'down';
    }
    // Dispose of the client: with reconnectPeriod 0 and a clean session, end(true) fails
    // every publish and subscribe still waiting for its acknowledgement (their callbacks run
    // now, and see this connection down).
    s.client.end(true);
    if (!current) return; // closed by close(), or an older attempt
    const o = this.opts;
    const retryNow = s.versionRefused && this.hooks.onVersionRefused(this, s.level);
    this.hooks.onDown(this, wasUp, s.lastError, retryNow || (o.reconnect ?? true));
    if (this.phase !== 'down') return; // the hook closed the connection

    if (retryNow) {
      // at once, in a later loop turn (no deadline, so not on the clock: a test's manual clock
      // would hold the fallback to 3.1.1 until moved); close() meanwhile leaves it 'closed'
      setImmediate(() => {
        if (this.phase === 'down') this.open();
      });
      return;
    }
    if (!(o.reconnect ?? true)) return;
    const min = o.reconnectMinMs ?? 500;
    const max = o.reconnectMaxMs ?? 30_000;
    let delay: number;
    if (s.steady) {
      // A connection that was up retries soon; failures from here on back off.
      delay = backoffDelay(0, min, max, Math.random());
      this.failures = 1;
    } else {
      delay = backoffDelay(this.failures, min, max, Math.random());
      this.failures++;
    }
    this.retryTimer = this.clock.setTimeout(
      () => {
        this.retryTimer = undefined;
        if (this.phase === 'down') this.open();
      },
      delay,
      true,
    );
  }
}

/** The bridge pool's name for the connection (its tests and the pool's code use it). */
export { MqttConnection as PoolConnection };

/**
 * The PUBACK deadlines of one owner's publishes ({@link MqttConnection.publishAcked}): one
 * {@link TimerQueue} on the owner's clock, holding the process open while a publish waits,
 * and the counters the outcomes go to. The per-device sessions use it; the bridge pool keeps
 * its own entries (`PublishJob` in backend.ts), whose deadline also covers the wait for an
 * in-flight slot and which mark suspects, on the same `publish` underneath.
 */
export class PublishDeadlines {
  readonly queue: TimerQueue;

  constructor(
    readonly clock: Clock,
    readonly timeoutMs: number,
    readonly counters: PublishCounters<string>,
  ) {
    // lingers: at a low rate the queue empties after nearly every publish
    this.queue = new TimerQueue(clock, true, 'linger');
  }

  /** A publish that was not sent: counted, and rejected with `err`. */
  refuse(err: Error): Promise<never> {
    this.counters.failure(err);
    return Promise.reject(err);
  }
}

/** One publish of {@link MqttConnection.publishAcked}; its own entry in the deadline queue. */
class AckedPublish implements Timed {
  dueAt = 0;
  heapIndex = -1;
  readonly startedAt: number;
  private done = false;

  constructor(
    private readonly d: PublishDeadlines,
    private readonly resolve: () => void,
    private readonly reject: (err: Error) => void,
  ) {
    this.startedAt = d.clock.now();
  }

  onTimer(): void {
    this.fail(new BackendUnavailableError('BACKEND_PUBACK_TIMEOUT'));
  }

  acked(err: Error | undefined): void {
    if (err === undefined) {
      if (this.done) return;
      this.done = true;
      this.d.queue.cancel(this);
      this.d.counters.acked(this.d.clock.now() - this.startedAt);
      this.resolve();
    } else if (err instanceof ErrorWithReasonCode && err.code >= 0x80) {
      this.fail(new BackendRejectedError(err.code));
    } else {
      this.fail(new BackendUnavailableError('BACKEND_CONNECTION_LOST'));
    }
  }

  private fail(err: MqttBackendError): void {
    if (this.done) return;
    this.done = true;
    this.d.queue.cancel(this);
    this.d.counters.failure(err);
    this.reject(err);
  }
}

/**
 * Holds the socket's writes until the end of this event loop turn (docs/design.md, "One
 * datagram's way"): the publishes of all datagrams read in one turn, and the PUBACKs
 * written meanwhile, leave in one `writev` instead of one `write` system call each.
 * The first publish or received message of a turn corks; a `setImmediate` (after the poll
 * phase that read the datagrams) uncorks. mqtt-packet's own cork per packet (uncorked on the
 * next tick), on the packets mqtt.js still writes, nests inside it. Adds at most one loop
 * turn to a write; PUBACK deadlines are timers and do not move.
 */
function coalesceWrites(s: Session): void {
  if (s.corked) return;
  const stream = s.client.stream as
    { cork?: () => void; uncork?: () => void; destroyed?: boolean } | undefined;
  if (stream?.cork === undefined || stream.uncork === undefined || stream.destroyed === true) {
    return;
  }
  s.corked = true;
  stream.cork();
  s.uncork = setImmediate(() => {
    s.corked = false;
    stream.uncork?.();
  });
}

function noLog(): void {}

type DoneCallback = Parameters<MqttClient['handleMessage']>[1];

/**
 * What {@link acknowledge} hands mqtt.js's callback: with an error, mqtt.js's QoS 1 handler
 * (handlers/publish.js) goes on to the next packet received without writing its own PUBACK.
 * Never seen outside mqtt.js.
 */
const PUBACK_WRITTEN = new Error('PUBACK written by MqttConnection');

/**
 * The end of a received message's handling (mqtt.js's `handleMessage`): for QoS 1, our PUBACK
 * (the same 4 bytes mqtt-packet writes for a success at 3.1.1 and 5), instead of mqtt.js's
 * packet object, writer and its cork per packet; nothing when the connection has gone (mqtt.js
 * would queue it for a reconnect that ours never make). Then mqtt.js's next packet.
 */
function acknowledge(client: MqttClient, packet: IPublishPacket, done: DoneCallback): void {
  if (packet.qos !== 1 || packet.messageId === undefined) {
    done();
    return;
  }
  writePuback(client, packet);
  done(PUBACK_WRITTEN);
}

/** Our PUBACK of the QoS 1 message `packet`, unless the connection has gone. */
function writePuback(client: MqttClient, packet: IPublishPacket): void {
  if (client.connected && packet.messageId !== undefined) {
    client.stream.write(pubackPacket(packet.messageId));
  }
}

/**
 * mqtt.js's outgoing store, which keeps each QoS 1 publish until its PUBACK to send it again
 * on a reconnect of the same client. Ours never reconnect (a fresh client per attempt, clean
 * session: the class comment of {@link MqttConnection}), so it keeps nothing: the publishes
 * {@link MqttConnection.publish} writes itself are never put, and those mqtt.js sends are
 * not kept either (mqtt.js has already copied them by then). Removing one is always found, as
 * mqtt.js's PUBACK handler expects (it passes the store's error to the publish's callback).
 * `createStream` is the base class's: nothing to resend at the CONNACK.
 */
class NoResendStore extends Store {
  override put(_packet: StorePacket, cb: Parameters<Store['put']>[1]): this {
    cb();
    return this;
  }

  override del(_packet: Parameters<Store['del']>[0], cb: Parameters<Store['del']>[1]): this {
    cb(undefined);
    return this;
  }
}

type StorePacket = Parameters<Store['put']>[0];

/**
 * The options of a publish without properties that mqtt.js sends (the rare fallback of
 * {@link MqttConnection.publish}): mqtt.js copies them, so one object serves all.
 * It has the shape of a traced publish's options (`qos`, then `properties`), not frozen: with
 * `{ qos: 1 }` alone, mqtt.js's copy of the options and the packet it builds took another shape
 * on each sampled publish, and V8 deoptimized its `publish`/`_sendPacket` (and mqtt-packet's
 * writer) when the first trace of a warm process came through (bench/history/tracing.md,
 * "The export delay and the publish shape").
 */
const QOS1: IClientPublishOptions = { qos: 1, properties: undefined };

/** Where an `mqtt://` or `mqtts://` broker URL points: what mqtt.js's tcp/tls builders use. */
export interface BrokerTarget {
  readonly tls: boolean;
  /** Host name or IP address (an IPv6 literal without its brackets). */
  readonly host: string;
  readonly port: number;
}

/**
 * The target of a broker URL that {@link streamTo} connects to as mqtt.js would, or undefined
 * when `mqtt.connect` keeps the URL: another scheme, credentials or a `clientId` in the URL
 * (mqtt.js reads those from it), a SOCKS proxy (`MQTTJS_SOCKS_PROXY`), or a URL it cannot
 * parse. `mqtt.connect` requires every protocol mqtt.js has (WebSocket, SOCKS and their
 * packages) whatever the URL: tens of ms of CPU at every start (docs/testing.md, "Suite
 * time").
 */
export function brokerTarget(url: string): BrokerTarget | undefined {
  if (process.env['MQTTJS_SOCKS_PROXY'] !== undefined) return undefined;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  const tls = u.protocol === 'mqtts:';
  if (!tls && u.protocol !== 'mqtt:') return undefined;
  if (u.username !== '' || u.password !== '' || u.searchParams.has('clientId')) return undefined;
  const bracketed = u.hostname.startsWith('[') && u.hostname.endsWith(']');
  // lower case as mqtt.js's url.parse; a name it would convert (punycode) stays with it
  const host = (bracketed ? u.hostname.slice(1, -1) : u.hostname).toLowerCase();
  if (!/^[\w.:-]*$/.test(host)) return undefined;
  // as mqtt.js: no host is localhost, no port (or port 0) the scheme's default
  return { tls, host: host || 'localhost', port: Number(u.port) || (tls ? 8883 : 1883) };
}

/**
 * mqtt.js's stream builder for `target` (build/lib/connect/tcp.js and tls.js, without their
 * SOCKS path): a TCP connection, or TLS verifying the broker's certificate with the name in
 * the URL as SNI (none for an IP address). A TLS error before the handshake completes is the
 * client's error, as with mqtt.js. Called by the client for its (one) stream.
 */
function streamTo(target: BrokerTarget): (client: MqttClient) => Duplex {
  const { host, port } = target;
  if (!target.tls) return () => netConnect({ host, port });
  return (client) => {
    const socket: TLSSocket = tlsConnect({
      host,
      port,
      rejectUnauthorized: true,
      ...(isIP(host) === 0 ? { servername: host } : {}),
    });
    const onTlsError = (err: Error): void => {
      client.emit('error', err);
      socket.end();
    };
    socket.on('error', onTlsError);
    socket.on('secureConnect', () => {
      if (!socket.authorized) socket.emit('error', new Error('TLS not authorized'));
      else socket.removeListener('error', onTlsError);
    });
    return socket;
  };
}

/** Disables Nagle's algorithm on the client's TCP (or TLS) socket, when it has one. */
export function noDelay(client: { stream?: unknown }): void {
  const stream = client.stream as { setNoDelay?: (on: boolean) => void } | undefined;
  stream?.setNoDelay?.(true);
}

/** The `traceparent` user property of an MQTT 5 PUBLISH, if any. */
export function traceparentOf(packet: IPublishPacket): string | undefined {
  const v = packet.properties?.userProperties?.traceparent;
  return typeof v === 'string' ? v : Array.isArray(v) ? v[0] : undefined;
}
