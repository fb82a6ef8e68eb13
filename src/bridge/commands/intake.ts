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
 * - Reconnects like the bridge pool (`mqtt/connection.ts`): a fresh client per attempt, clean
 *   session, exponential backoff with jitter; MQTT 5 falling back to 3.1.1 when the broker
 *   refuses 5 (`protocol: 'auto'`). The subscription is made again on every connection; a
 *   refused or unanswered SUBSCRIBE drops the connection and retries with backoff.
 */
import { randomBytes } from 'node:crypto';
import { connect, type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { isDownlinkTopic, parseMqttTopic } from '../../enos/index.js';
import {
  backoffDelay,
  isVersionRefusal,
  traceparentOf,
  type ProtocolLevel,
} from '../mqtt/connection.js';
import type { MqttBackendLogger, MqttProtocolSetting } from '../mqtt/backend.js';
import { redactUrl } from '../mqtt/backend.js';
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

interface Session {
  readonly client: MqttClient;
  readonly level: ProtocolLevel;
  up: boolean;
  subscribed: boolean;
  subscribeFailed: boolean;
  versionRefused: boolean;
  lastError: Error | undefined;
}

const noopLogger: MqttBackendLogger = { info: () => undefined, warn: () => undefined };

export class CommandIntake {
  readonly #o: CommandIntakeOptions;
  readonly #filters: readonly string[];
  readonly #prefix: string;
  readonly #protocol: MqttProtocolSetting;
  readonly #clientId: string;
  readonly #maxPayload: number;
  readonly #log: MqttBackendLogger;
  readonly #urlForLogs: string;
  #level: ProtocolLevel;
  #phase: CommandIntakeState = 'idle';
  #session: Session | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #failures = 0;
  #attempts = 0;
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
  #protocolFallbacks = 0;

  /** @throws CommandError `COMMANDS_BAD_FILTER` (see {@link commandFilters}). */
  constructor(o: CommandIntakeOptions) {
    this.#o = o;
    this.#filters = commandFilters(o.topics, o);
    this.#prefix = o.topicPrefix ?? '';
    this.#protocol = o.protocol ?? 'auto';
    this.#level = this.#protocol === '3.1.1' ? 4 : 5;
    this.#clientId = `${o.clientIdPrefix ?? 'coap-edge-c-'}${randomBytes(4).toString('hex')}`;
    this.#maxPayload = o.maxPayloadBytes ?? 65_536;
    this.#log = o.logger ?? noopLogger;
    this.#urlForLogs = redactUrl(o.url);
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
    this.#open();
  }

  /** Resolves true once subscribed, false after `timeoutMs` or on close. */
  waitSubscribed(timeoutMs: number): Promise<boolean> {
    if (this.#phase === 'subscribed') return Promise.resolve(true);
    if (this.#phase === 'closed') return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        this.#subscribedWaiters.delete(done);
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.#subscribedWaiters.add(done);
    });
  }

  stats(): CommandIntakeStats {
    return {
      state: this.#phase,
      protocolVersion: this.#phase === 'subscribed' ? this.#session?.level : undefined,
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
      protocolFallbacks: this.#protocolFallbacks,
    };
  }

  /** Ends the connection and waits for commands being stored (at most ~1 s for the socket). */
  async close(): Promise<void> {
    if (this.#phase === 'closed') return;
    this.#phase = 'closed';
    for (const wake of [...this.#storeWaits]) wake();
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    for (const w of [...this.#subscribedWaiters]) w(false);
    const s = this.#session;
    this.#session = undefined;
    if (s !== undefined) {
      const client = s.client;
      await new Promise<void>((resolve) => {
        const guard = setTimeout(() => {
          client.stream.destroy();
          resolve();
        }, 1000);
        client.end(!client.connected, () => {
          clearTimeout(guard);
          resolve();
        });
      });
    }
    await Promise.all([...this.#pending]);
  }

  #open(): void {
    const first = this.#attempts === 0;
    this.#attempts++;
    if (!first) this.#reconnects++;
    const level = this.#level;
    const o = this.#o;
    const options: IClientOptions = {
      protocolVersion: level,
      clientId: this.#clientId,
      clean: true,
      keepalive: o.keepaliveSec ?? 30,
      connectTimeout: o.connectTimeoutMs ?? 10_000,
      reconnectPeriod: 0,
      resubscribe: false,
      queueQoSZero: false,
    };
    if (o.username !== undefined) options.username = o.username;
    if (o.password !== undefined) options.password = o.password;
    const client = connect(o.url, options);
    const s: Session = {
      client,
      level,
      up: false,
      subscribed: false,
      subscribeFailed: false,
      versionRefused: false,
      lastError: undefined,
    };
    this.#session = s;
    // One message at a time; the PUBACK (sent after `done`) waits for the store.
    client.handleMessage = (packet: IPublishPacket, done: (error?: Error) => void): void => {
      const p = this.#onPublish(packet);
      this.#pending.add(p);
      void p.finally(() => {
        this.#pending.delete(p);
        done();
      });
    };
    client.on('error', (err: Error) => {
      s.lastError = err;
      if (isVersionRefusal(err)) s.versionRefused = true;
    });
    client.on('connect', () => {
      if (this.#session !== s) return;
      s.up = true;
      this.#connectionUps++;
      this.#subscribe(s);
    });
    client.on('close', () => this.#onClose(s));
  }

  #subscribe(s: Session): void {
    const timeoutMs = this.#o.subscribeTimeoutMs ?? 5_000;
    let done = false;
    const fail = (why: string): void => {
      if (this.#session !== s || !s.up) return; // the connection is gone anyway
      this.#subscribeFailures++;
      s.subscribeFailed = true;
      this.#log.warn(
        { url: this.#urlForLogs, filters: this.#filters, err: why },
        'command intake: subscription failed; reconnecting with backoff',
      );
      s.client.end(true);
    };
    const timer = setTimeout(() => {
      done = true;
      fail('no SUBACK in time');
    }, timeoutMs);
    s.client.subscribe([...this.#filters], { qos: 1 }, (err, granted) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const refused = granted?.find((g) => (g.qos & 0x80) !== 0);
      if (err !== undefined && err !== null) fail(err.message);
      else if (this.#session !== s || !s.up) return;
      else if (refused !== undefined) fail(`SUBACK 0x${refused.qos.toString(16)} ${refused.topic}`);
      else {
        s.subscribed = true;
        this.#phase = 'subscribed';
        this.#failures = 0;
        this.#failureLogged = false;
        this.#log.info(
          { url: this.#urlForLogs, filters: this.#filters, protocolVersion: s.level },
          'command intake subscribed',
        );
        for (const w of [...this.#subscribedWaiters]) w(true);
      }
    });
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
        clearTimeout(timer);
        this.#storeWaits.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#storeWaits.add(wake);
    });
  }

  #onClose(s: Session): void {
    const current = this.#session === s;
    const wasSubscribed = s.subscribed;
    s.up = false;
    s.subscribed = false;
    s.client.end(true);
    if (!current || this.#phase === 'closed') return;
    this.#session = undefined;
    this.#phase = 'down';
    if (wasSubscribed) {
      this.#connectionDowns++;
      this.#log.warn(
        { url: this.#urlForLogs, err: s.lastError?.message },
        'command intake: connection lost',
      );
    } else if (!this.#failureLogged && !s.subscribeFailed) {
      this.#failureLogged = true;
      this.#log.warn(
        { url: this.#urlForLogs, err: s.lastError?.message },
        'command intake: connection attempt failed; retrying with backoff',
      );
    }
    let delay: number;
    const min = this.#o.reconnectMinMs ?? 500;
    const max = this.#o.reconnectMaxMs ?? 30_000;
    if (s.versionRefused && this.#protocol === 'auto' && s.level === 5) {
      this.#level = 4;
      this.#protocolFallbacks++;
      this.#log.info(
        { url: this.#urlForLogs },
        'command intake: broker refused MQTT 5; using 3.1.1',
      );
      delay = 0;
    } else if (wasSubscribed) {
      delay = backoffDelay(0, min, max, Math.random());
      this.#failures = 1;
    } else {
      delay = backoffDelay(this.#failures, min, max, Math.random());
      this.#failures++;
    }
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (this.#phase === 'down') this.#open();
    }, delay);
  }
}
