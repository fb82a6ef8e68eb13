/**
 * Command intake in bridge mode (docs/protocol.md, "Commands for sleepy devices"): one MQTT connection
 * per pod, subscribed to the command topics of every device, putting each command into the
 * shared {@link CommandStore} for the device its topic names. (In per-device mode the device's
 * own session enqueues instead; this class is not used.)
 *
 * - Shared subscription: the filters are `$share/{group}/{prefix}{filter}` with `{pk}` and
 *   `{dk}` turned into `+`, so the broker hands each command to exactly one pod of the
 *   deployment (all pods use the same group). Mosquitto 2 honours `$share` for MQTT 5 and
 *   3.1.1 clients. `shared: false` subscribes to the plain filters: every pod then receives
 *   every command (needed for brokers without `$share`, e.g. aedes 1.x, the embedded broker,
 *   which accepts a `$share/...` filter but treats it as a literal topic and delivers nothing
 *   through it); the store keeps a JSON command only once per id and topic.
 * - The filters also match the `_reply` topics of commands (and `thing/service/#` more than
 *   commands): only topics that `isDownlinkTopic` accepts are enqueued; the rest, retained
 *   messages (re-sent on every subscribe) and topics outside `topicPrefix` are ignored and
 *   counted.
 * - The PUBACK of a command goes out after the store answered (mqtt.js `handleMessage`): a
 *   QoS 1 command is acknowledged to the broker once it is in Redis (or refused as `full`).
 *   While the store is unavailable (`COMMANDS_UNAVAILABLE`: Redis down, hung, or a write
 *   its replicas did not confirm) the command is tried again with backoff (50 ms doubling
 *   to 2 s) and not acknowledged meanwhile: a Redis failover delays commands instead of
 *   losing them. Only another store error, or closing the intake, loses one (counted, the
 *   first of a run logged). Messages of one connection are handled one at a time, so the
 *   broker's in-flight window gives back-pressure.
 * - Its connection is the bridge pool's (`mqtt/connection.ts`): a fresh client per attempt,
 *   clean session, exponential backoff with jitter; MQTT 5 falling back to 3.1.1 when the
 *   broker refuses 5 (`protocol: 'auto'`). The subscription is made again on every
 *   connection; a refused or unanswered SUBSCRIBE drops the connection and retries with
 *   backoff (the backoff is reset only by a subscription, not by a CONNACK).
 */
import { randomBytes } from 'node:crypto';
import type { IPublishPacket } from 'mqtt';
import { isDownlinkTopic, parseMqttTopic } from '../../enos/index.js';
import {
  backoffDelay,
  MqttConnection,
  ProtocolChoice,
  traceparentOf,
  type ConnectionHooks,
  type MqttProtocolSetting,
} from '../mqtt/connection.js';
import type { MqttBackendLogger } from '../mqtt/backend.js';
import { redactUrl } from '../mqtt/backend.js';
import { MqttBackendError } from '../mqtt/errors.js';
import { systemClock, type Clock } from '../../time/clock.js';
import type { CommandStore } from '../types.js';
import { CommandError } from './errors.js';

export interface CommandIntakeOptions {
  /** `mqtt://host:1883` or `mqtts://host:8883` (settings `mqttUrl`). */
  readonly url: string;
  readonly username?: string | undefined;
  /** Never logged, never in an error message. */
  readonly password?: string | undefined;
  /** Client id prefix; 8 random hex digits are added. Default `coap-edge-c-`. */
  readonly clientIdPrefix?: string;
  /** Default `auto`: MQTT 5, falling back to 3.1.1 when the broker refuses 5. */
  readonly protocol?: MqttProtocolSetting;
  /** Settings `commandTopics`: filters with `{pk}`, `{dk}` (or `+`) in whole levels. */
  readonly topics: readonly string[];
  /** Settings `mqttTopicPrefix`, put before every filter and stripped from every topic. */
  readonly topicPrefix?: string;
  /** Setting `commandShareGroup`. */
  readonly shareGroup: string;
  /** Subscribe through `$share/{shareGroup}/`. Default true; false for brokers without it. */
  readonly shared?: boolean;
  readonly store: CommandStore;
  /** Larger commands are dropped and counted. Default 65536 bytes. */
  readonly maxPayloadBytes?: number;
  /** Default 30. */
  readonly keepaliveSec?: number;
  /** Ms to wait for a CONNACK. Default 10000. */
  readonly connectTimeoutMs?: number;
  /** Ms to wait for the SUBACK. Default 5000. */
  readonly subscribeTimeoutMs?: number;
  /** First reconnect delay; doubles per failed attempt up to `reconnectMaxMs`. Default 500. */
  readonly reconnectMinMs?: number;
  /** Default 30000. */
  readonly reconnectMaxMs?: number;
  readonly logger?: MqttBackendLogger;
  /**
   * The timers of {@link CommandIntake.waitSubscribed}, of the waits between store attempts
   * and of the connection's SUBACK wait, close guard and reconnect delay. Default the system
   * clock.
   */
  readonly clock?: Clock;
}

/** subscribed: receiving commands; connecting: first attempt; down: retrying; closed. */
export type CommandIntakeState = 'idle' | 'connecting' | 'subscribed' | 'down' | 'closed';

export interface CommandIntakeStats {
  readonly state: CommandIntakeState;
  /** MQTT protocol level of the connection when subscribed (5, 4 = 3.1.1). */
  readonly protocolVersion: 4 | 5 | undefined;
  /** Messages received on the command filters. */
  readonly received: number;
  /** Commands the store queued (a duplicate of a queued JSON command included). */
  readonly enqueued: number;
  /** Commands the store refused: the device's queue was full. */
  readonly refusedFull: number;
  readonly ignored: {
    /** Not a downlink topic: `_reply` topics and anything else the filters match. */
    readonly notCommand: number;
    /** Retained messages (sent again on every subscription, not new commands). */
    readonly retained: number;
    /** Topics that do not start with `topicPrefix`. */
    readonly foreign: number;
  };
  /** Commands larger than `maxPayloadBytes`, dropped. */
  readonly tooLarge: number;
  /** Commands lost because the store failed (an error other than unavailable, or closed). */
  readonly storeErrors: number;
  /** Store attempts that failed as unavailable and were tried again. */
  readonly storeRetries: number;
  /** SUBSCRIBEs refused or unanswered. */
  readonly subscribeFailures: number;
  readonly connectionUps: number;
  readonly connectionDowns: number;
  /** Connection attempts after the first. */
  readonly reconnects: number;
  /** Times `auto` fell back from MQTT 5 to 3.1.1. */
  readonly protocolFallbacks: number;
}

export interface CommandFilterOptions {
  readonly topicPrefix?: string | undefined;
  /** Setting `commandShareGroup` (used when `shared`). */
  readonly shareGroup: string;
  readonly shared?: boolean | undefined;
}

/** True when `f` is a valid MQTT topic filter (wildcards in whole levels, `#` last). */
function validFilter(f: string): boolean {
  if (f.length === 0 || f.includes('\u0000') || Buffer.byteLength(f) > 0xffff) return false;
  const levels = f.split('/');
  return levels.every((l, i) => {
    if (l.includes('#')) return l === '#' && i === levels.length - 1;
    return !l.includes('+') || l === '+';
  });
}

/**
 * The subscription filters of the intake: each of `topics` with `{pk}`/`{dk}` → `+`,
 * `topicPrefix` in front, and `$share/{shareGroup}/` before that when `shared` (default).
 * `/sys/{pk}/{dk}/thing/service/#` → `$share/coap-edge//sys/+/+/thing/service/#` (the share
 * name ends at the first `/` after it; the EnOS filter keeps its leading slash).
 * @throws CommandError `COMMANDS_BAD_FILTER` for a filter that is not valid MQTT afterwards,
 *   or a share group holding `/`, `+` or `#`.
 */
export function commandFilters(topics: readonly string[], o: CommandFilterOptions): string[] {
  const shared = o.shared ?? true;
  const group = o.shareGroup;
  if (shared && (group.length === 0 || /[/+#]/.test(group) || group.includes('\u0000'))) {
    throw new CommandError('COMMANDS_BAD_FILTER', `share group ${JSON.stringify(group)}`);
  }
  const out = new Set<string>();
  for (const t of topics) {
    const f = (o.topicPrefix ?? '') + t.replaceAll('{pk}', '+').replaceAll('{dk}', '+');
    if (!validFilter(f)) throw new CommandError('COMMANDS_BAD_FILTER', JSON.stringify(f));
    out.add(shared ? `$share/${group}/${f}` : f);
  }
  return [...out];
}

const noopLogger: MqttBackendLogger = { info: () => undefined, warn: () => undefined };

export class CommandIntake {
  readonly #o: CommandIntakeOptions;
  readonly #filters: readonly string[];
  readonly #prefix: string;
  readonly #protocol: ProtocolChoice;
  readonly #conn: MqttConnection;
  readonly #maxPayload: number;
  readonly #log: MqttBackendLogger;
  readonly #urlForLogs: string;
  readonly #clock: Clock;
  #phase: CommandIntakeState = 'idle';
  /** The current connection's subscription was granted. */
  #subscribed = false;
  /** The current connection's subscription was refused or not answered (logged already). */
  #subscribeFailed = false;
  #failureLogged = false;
  #storeFailing = false;
  readonly #pending = new Set<Promise<void>>();
  readonly #subscribedWaiters = new Set<(ok: boolean) => void>();

  #received = 0;
  #enqueued = 0;
  #refusedFull = 0;
  #notCommand = 0;
  #retained = 0;
  #foreign = 0;
  #tooLarge = 0;
  #storeErrors = 0;
  #storeRetries = 0;
  /** Wakes the waits of commands held for the store to come back (on close). */
  readonly #storeWaits = new Set<() => void>();
  #subscribeFailures = 0;
  #connectionUps = 0;
  #connectionDowns = 0;
  #reconnects = 0;

  /** @throws CommandError `COMMANDS_BAD_FILTER` (see {@link commandFilters}). */
  constructor(o: CommandIntakeOptions) {
    this.#o = o;
    this.#filters = commandFilters(o.topics, o);
    this.#prefix = o.topicPrefix ?? '';
    this.#maxPayload = o.maxPayloadBytes ?? 65_536;
    this.#log = o.logger ?? noopLogger;
    this.#urlForLogs = redactUrl(o.url);
    this.#clock = o.clock ?? systemClock;
    this.#protocol = new ProtocolChoice(o.protocol ?? 'auto', () =>
      this.#log.info(
        { url: this.#urlForLogs },
        'command intake: broker refused MQTT 5; using 3.1.1',
      ),
    );
    this.#conn = new MqttConnection(
      0,
      {
        url: o.url,
        username: o.username,
        password: o.password,
        clientId: `${o.clientIdPrefix ?? 'coap-edge-c-'}${randomBytes(4).toString('hex')}`,
        keepaliveSec: o.keepaliveSec ?? 30,
        connectTimeoutMs: o.connectTimeoutMs ?? 10_000,
        reconnectMinMs: o.reconnectMinMs ?? 500,
        reconnectMaxMs: o.reconnectMaxMs ?? 30_000,
        steadyOnConnect: false,
        maxInflight: 1,
        clock: this.#clock,
      },
      this.#hooks(),
    );
  }

  /** The subscription filters in use. */
  get filters(): readonly string[] {
    return this.#filters;
  }

  state(): CommandIntakeState {
    return this.#phase;
  }

  /** Starts connecting; returns at once (see {@link waitSubscribed}). */
  start(): void {
    if (this.#phase !== 'idle') return;
    this.#phase = 'connecting';
    this.#conn.start();
  }

  /** Resolves true once subscribed, false after `timeoutMs` or on close. */
  waitSubscribed(timeoutMs: number): Promise<boolean> {
    if (this.#phase === 'subscribed') return Promise.resolve(true);
    if (this.#phase === 'closed') return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean): void => {
        this.#clock.clearTimeout(timer);
        this.#subscribedWaiters.delete(done);
        resolve(ok);
      };
      const timer = this.#clock.setTimeout(() => done(false), timeoutMs, true);
      this.#subscribedWaiters.add(done);
    });
  }

  stats(): CommandIntakeStats {
    return {
      state: this.#phase,
      protocolVersion: this.#phase === 'subscribed' ? this.#conn.level : undefined,
      received: this.#received,
      enqueued: this.#enqueued,
      refusedFull: this.#refusedFull,
      ignored: { notCommand: this.#notCommand, retained: this.#retained, foreign: this.#foreign },
      tooLarge: this.#tooLarge,
      storeErrors: this.#storeErrors,
      storeRetries: this.#storeRetries,
      subscribeFailures: this.#subscribeFailures,
      connectionUps: this.#connectionUps,
      connectionDowns: this.#connectionDowns,
      reconnects: this.#reconnects,
      protocolFallbacks: this.#protocol.fallbacks,
    };
  }

  /** Ends the connection and waits for commands being stored (at most ~1 s for the socket). */
  async close(): Promise<void> {
    if (this.#phase === 'closed') return;
    this.#phase = 'closed';
    for (const wake of [...this.#storeWaits]) wake();
    for (const w of [...this.#subscribedWaiters]) w(false);
    await this.#conn.close();
    await Promise.all([...this.#pending]);
  }

  #hooks(): ConnectionHooks {
    return {
      protocolLevel: () => this.#protocol.level,
      onVersionRefused: (_conn, level) => this.#protocol.refused(level),
      onAttempt: (_conn, first) => {
        if (!first) this.#reconnects++;
        this.#subscribed = false;
        this.#subscribeFailed = false;
      },
      onUp: () => {
        this.#connectionUps++;
        this.#subscribe();
      },
      onDown: (_conn, _wasUp, err) => this.#onDown(err),
      onMessage: () => undefined,
      // One message at a time; the PUBACK (sent after `done`) waits for the store.
      handleMessage: (packet, done) => {
        const p = this.#onPublish(packet);
        this.#pending.add(p);
        void p.finally(() => {
          this.#pending.delete(p);
          done();
        });
      },
    };
  }

  #subscribe(): void {
    const conn = this.#conn;
    conn.subscribe(this.#filters, this.#o.subscribeTimeoutMs ?? 5_000).then(
      () => {
        this.#subscribed = true;
        conn.markSteady();
        this.#phase = 'subscribed';
        this.#failureLogged = false;
        this.#log.info(
          { url: this.#urlForLogs, filters: this.#filters, protocolVersion: conn.level },
          'command intake subscribed',
        );
        for (const w of [...this.#subscribedWaiters]) w(true);
      },
      (e: unknown) => {
        // BACKEND_CONNECTION_LOST: the connection is gone anyway
        const lost = e instanceof MqttBackendError && e.code === 'BACKEND_CONNECTION_LOST';
        if (lost || !conn.isUp) return;
        this.#subscribeFailures++;
        this.#subscribeFailed = true;
        this.#log.warn(
          {
            url: this.#urlForLogs,
            filters: this.#filters,
            err: e instanceof Error ? e.message : String(e),
          },
          'command intake: subscription failed; reconnecting with backoff',
        );
        conn.drop();
      },
    );
  }

  async #onPublish(packet: IPublishPacket): Promise<void> {
    this.#received++;
    if (packet.retain) {
      this.#retained++;
      return;
    }
    const topic = packet.topic;
    if (!topic.startsWith(this.#prefix)) {
      this.#foreign++;
      return;
    }
    const enosTopic = topic.slice(this.#prefix.length);
    const parsed = parseMqttTopic(enosTopic);
    if (!parsed.ok || !isDownlinkTopic(enosTopic)) {
      this.#notCommand++;
      return;
    }
    const payload =
      typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    if (payload.length > this.#maxPayload) {
      this.#tooLarge++;
      return;
    }
    const device = { productKey: parsed.topic.productKey, deviceKey: parsed.topic.deviceKey };
    const traceparent = traceparentOf(packet);
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await this.#o.store.enqueue(device, enosTopic, payload, traceparent);
        if (r === 'queued') this.#enqueued++;
        else this.#refusedFull++;
        if (this.#storeFailing) {
          this.#storeFailing = false;
          this.#log.info({}, 'command intake: command store available again');
        }
        return;
      } catch (e: unknown) {
        const code = e instanceof CommandError ? e.code : 'unknown';
        const retry = code === 'COMMANDS_UNAVAILABLE' && this.#phase !== 'closed';
        if (!this.#storeFailing) {
          this.#storeFailing = true;
          this.#log.warn(
            { code },
            retry
              ? 'command intake: command store failed; commands wait for it'
              : 'command intake: command store failed; command dropped',
          );
        }
        if (!retry) {
          this.#storeErrors++;
          return;
        }
        this.#storeRetries++;
        await this.#waitForStore(backoffDelay(attempt, 50, 2_000, Math.random()));
      }
    }
  }

  /** Sleeps before the next store attempt; close() ends the sleep (the attempt then fails). */
  #waitForStore(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        this.#clock.clearTimeout(timer);
        this.#storeWaits.delete(wake);
        resolve();
      };
      const timer = this.#clock.setTimeout(wake, ms, true);
      this.#storeWaits.add(wake);
    });
  }

  #onDown(err: Error | undefined): void {
    const wasSubscribed = this.#subscribed;
    this.#subscribed = false;
    if (this.#phase === 'closed') return;
    this.#phase = 'down';
    if (wasSubscribed) {
      this.#connectionDowns++;
      this.#log.warn(
        { url: this.#urlForLogs, err: err?.message },
        'command intake: connection lost',
      );
    } else if (!this.#failureLogged && !this.#subscribeFailed) {
      this.#failureLogged = true;
      this.#log.warn(
        { url: this.#urlForLogs, err: err?.message },
        'command intake: connection attempt failed; retrying with backoff',
      );
    }
  }
}
