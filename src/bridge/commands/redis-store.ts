/**
 * The shared command queue (docs/design.md: commands for sleepy devices, stateless pods): every
 * pod can deliver a command that any pod queued.
 *
 * Layout (see also `auth/redis-keys.ts` for the hash tag `{pk/dk}` and the escaping):
 * - `{prefix}:cmd:{pk/dk}`: a list of JSON entries `{id, topic, payload (base64),
 *   messageId?, enqueuedAt}`, oldest first, at most `queueLength` long; its TTL is set to the
 *   expiry on every enqueue, so a device that never comes back leaves nothing behind.
 * - channel `{prefix}:cmd-notify`: every enqueue publishes `pk\ndk`; each pod's subscriber
 *   connection wakes its `waitFor` waiters of that device.
 *
 * - Devices whose queue a look found empty are remembered (`known-empty.ts`) until their
 *   notification: the look that goes with every uplink then costs no round trip.
 *
 * Two connections: one for the scripts (`redis-scripts.ts`), one subscribed to the channel;
 * with `waitReplicas` a third for `enqueue`: its `WAIT` holds the connection it is sent on
 * until the replicas answer or it times out, and the peeks and fetches of every request must
 * not queue behind it.
 * Both fail fast: while Redis is away every operation rejects at once with
 * `COMMANDS_UNAVAILABLE` (a hung Redis after `commandTimeoutMs`), so the router answers the
 * request without a command; the uplink itself never depends on this store. Notifications
 * lost while either connection was away are made up for: after every (re)subscription, and
 * whenever the script connection is ready again, all waiters look at their queues again.
 */
import { randomUUID } from 'node:crypto';
import { deviceHashTag } from '../../redis/keys.js';
import type { CommandStore, DeviceKey, QueuedCommand } from '../types.js';
import {
  NO_COMMAND,
  decodeEntry,
  deviceId,
  encodeEntry,
  messageIdOf,
  parseDeviceId,
} from './entry.js';
import { CommandError } from './errors.js';
import { KnownEmpty } from './known-empty.js';
import {
  closeRedis,
  createFailFastRedis,
  durabilityFor,
  type Durability,
  type RedisClient,
  type RedisTarget,
} from '../../redis/client.js';
import { systemClock, type Clock } from '../../time/clock.js';
import { ACKNOWLEDGE, ENQUEUE, FETCH, LuaScript, PEEK } from './redis-scripts.js';
import { CommandCounters, type CommandStoreStats } from './stats.js';
import { Waiters } from './waiters.js';

export interface RedisCommandStoreOptions {
  /** Settings `redisUrl`, or the cluster / sentinel target. */
  readonly url: RedisTarget;
  /** Settings `redisPrefix`. */
  readonly prefix: string;
  /** Most commands waiting per device (settings `commandQueueLength`). */
  readonly queueLength: number;
  /** Ms a command waits before it is dropped (setting `commandExpirySeconds` × 1000). */
  readonly expiryMs: number;
  /** Most concurrent `waitFor` calls that wait, per pod (setting `maxTtdWaiters`). */
  readonly maxWaiters: number;
  /**
   * Time and the timers of the waits for a command, {@link RedisCommandStore.waitReady} and
   * closing. Default the system clock.
   */
  readonly clock?: Clock;
  /** Per-command deadline in ms (setting `redisCommandTimeoutMs`). */
  readonly commandTimeoutMs: number;
  /** Default 1000 ms. */
  readonly connectTimeoutMs?: number;
  /** Longest wait between reconnection attempts. Default 1000 ms. */
  readonly maxBackoffMs?: number;
  /**
   * Replicas that must have an enqueued command before `enqueue` answers `queued` (settings
   * `redisWaitReplicas`); fewer within the command timeout → `COMMANDS_UNAVAILABLE`. Default 0.
   */
  readonly waitReplicas?: number;
}

export type CommandRedisState = 'connected' | 'connecting' | 'down';

/** `{prefix}:cmd:{pk/dk}`: in the slot of the device's other keys (`auth/redis-keys.ts`). */
export function commandQueueKey(prefix: string, device: DeviceKey): string {
  return `${prefix}:cmd:${deviceHashTag(device.productKey, device.deviceKey)}`;
}

/** `{prefix}:cmd-notify`. */
export function commandNotifyChannel(prefix: string): string {
  return `${prefix}:cmd-notify`;
}

const enqueueScript = new LuaScript(ENQUEUE);
const peekScript = new LuaScript(PEEK);
const fetchScript = new LuaScript(FETCH);
const ackScript = new LuaScript(ACKNOWLEDGE);

/** Devices remembered with an empty queue, per pod (about 100 bytes each). */
const KNOWN_EMPTY_MAX = 100_000;

function int(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

export class RedisCommandStore implements CommandStore {
  readonly #client: RedisClient;
  /** The connection of writes that wait for replicas; `#client` without them. */
  readonly #durable: RedisClient;
  readonly #sub: RedisClient;
  readonly #prefix: string;
  readonly #channel: string;
  readonly #queueLength: number;
  readonly #expiryMs: number;
  readonly #clock: Clock;
  readonly #durability: Durability | undefined;
  readonly #counters = new CommandCounters();
  readonly #waiters: Waiters;
  readonly #knownEmpty = new KnownEmpty(KNOWN_EMPTY_MAX);
  #subscribed = false;
  /** {@link waitReady} calls waiting for the next connection event. */
  readonly #readyWaiters: (() => void)[] = [];
  #failedSinceReady = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(o: RedisCommandStoreOptions) {
    this.#prefix = o.prefix;
    this.#channel = commandNotifyChannel(o.prefix);
    this.#queueLength = Math.max(1, o.queueLength);
    this.#expiryMs = Math.max(1, o.expiryMs);
    const clock = (this.#clock = o.clock ?? systemClock);
    this.#durability = durabilityFor(o.waitReplicas ?? 0, o.commandTimeoutMs);
    this.#waiters = new Waiters(
      Math.max(0, o.maxWaiters),
      this.#counters,
      (d) => this.#peek(d).then((r) => r.head),
      clock,
    );
    const common = {
      url: o.url,
      commandTimeoutMs: o.commandTimeoutMs,
      connectTimeoutMs: o.connectTimeoutMs,
      maxBackoffMs: o.maxBackoffMs,
      onError: () => {
        this.#counters.redisConnectionErrors++;
      },
    };
    this.#client = createFailFastRedis({ ...common, connectionName: 'coap-edge-cmd' });
    this.#client.on('error', () => (this.#failedSinceReady = true));
    this.#client.on('close', () => (this.#failedSinceReady = true));
    this.#client.on('ready', () => {
      this.#failedSinceReady = false;
      this.#changed();
      // looks that failed while this connection was away: look again (the subscriber may
      // have come back first and looked in vain)
      if (this.#subscribed) this.#waiters.wakeAll();
    });

    if (this.#durability === undefined) this.#durable = this.#client;
    else {
      this.#durable = createFailFastRedis({ ...common, connectionName: 'coap-edge-cmd-durable' });
      this.#durable.on('ready', () => this.#changed());
    }

    this.#sub = createFailFastRedis({ ...common, connectionName: 'coap-edge-cmd-sub' });
    this.#sub.on('ready', () => this.#subscribe());
    this.#sub.on('close', () => {
      this.#subscribed = false;
      this.#knownEmpty.subscription(false);
    });
    this.#sub.on('message', (channel: string, message: string) => {
      if (channel !== this.#channel) return;
      this.#counters.notifications++;
      this.#knownEmpty.notified(message);
      const device = parseDeviceId(message);
      if (device !== undefined) this.#waiters.wake(device);
    });
  }

  async enqueue(
    device: DeviceKey,
    topic: string,
    payload: Buffer,
    traceparent?: string,
  ): Promise<'queued' | 'full'> {
    const messageId = messageIdOf(topic, payload);
    const now = this.#clock.wallNow();
    // this pod's own looks must not wait for the notification to come back
    const id = deviceId(device);
    this.#knownEmpty.notified(id);
    const entry = encodeEntry({
      id: randomUUID(),
      topic,
      payload,
      messageId,
      enqueuedAt: now,
      traceparent,
    });
    const r = await this.#run(
      enqueueScript,
      device,
      [entry, topic, messageId ?? '', this.#queueLength, now, this.#expiryMs, this.#channel, id],
      this.#durability,
    );
    this.#knownEmpty.notified(id);
    this.#countPurge(r);
    switch (r[0]) {
      case 'queued':
        this.#counters.enqueued++;
        return 'queued';
      case 'duplicate':
        this.#counters.duplicates++;
        return 'queued';
      case 'full':
        this.#counters.refusedFull++;
        return 'full';
      default:
        throw this.#unavailable('unexpected script reply');
    }
  }

  /** {@link peek} without I/O when the device's queue is known to be empty, else undefined. */
  peekNow(device: DeviceKey): { head: QueuedCommand | undefined; count: number } | undefined {
    if (!this.#knownEmpty.has(deviceId(device))) return undefined;
    this.#counters.peeksSkipped++;
    return NO_COMMAND;
  }

  async peek(device: DeviceKey): Promise<{ head: QueuedCommand | undefined; count: number }> {
    const id = deviceId(device);
    if (this.#knownEmpty.has(id)) {
      this.#counters.peeksSkipped++;
      return NO_COMMAND;
    }
    const look = this.#knownEmpty.begin(id);
    let r: { head: QueuedCommand | undefined; count: number };
    try {
      r = await this.#peek(device);
    } catch (e: unknown) {
      this.#knownEmpty.end(id, look, false);
      throw e;
    }
    this.#knownEmpty.end(id, look, r.count === 0);
    if (r.head !== undefined) this.#counters.delivered++;
    return r;
  }

  async fetch(
    device: DeviceKey,
    topic: string,
  ): Promise<{ command: QueuedCommand | undefined; count: number }> {
    const r = await this.#run(fetchScript, device, [this.#clock.wallNow(), this.#expiryMs, topic]);
    this.#countPurge(r);
    const command = this.#entry(r[4]);
    if (command !== undefined) this.#counters.delivered++;
    return { command, count: int(r[1]) };
  }

  async acknowledge(device: DeviceKey, topic: string, reply: Buffer): Promise<boolean> {
    const r = await this.#run(ackScript, device, [
      this.#clock.wallNow(),
      this.#expiryMs,
      topic,
      messageIdOf(topic, reply) ?? '',
    ]);
    this.#countPurge(r);
    if (r[0] === 1) {
      this.#counters.acknowledged++;
      return true;
    }
    this.#counters.ackUnmatched++;
    return false;
  }

  /**
   * The oldest command at once when one waits, else the first enqueued for the device (by any
   * pod) within `timeoutMs`, else undefined (also when the store closes meanwhile).
   * @throws CommandError `COMMANDS_UNAVAILABLE` (Redis away at the call),
   *   `COMMANDS_TOO_MANY_WAITERS` (nothing queued and `maxWaiters` already wait)
   */
  waitFor(device: DeviceKey, timeoutMs: number): Promise<QueuedCommand | undefined> {
    return this.#waiters.wait(device, timeoutMs);
  }

  /** The script connection; `connected` when commands can be sent. */
  state(): CommandRedisState {
    if (this.#closed) return 'down';
    switch (this.#client.status) {
      case 'ready':
        return 'connected';
      case 'wait':
      case 'connecting':
      case 'connect':
        return this.#failedSinceReady ? 'down' : 'connecting';
      default:
        return 'down';
    }
  }

  /** True while the notification channel is subscribed (waiters wake at once). */
  get subscribed(): boolean {
    return this.#subscribed;
  }

  /** Resolves true once every connection is ready and subscribed, false after `timeoutMs`. */
  async waitReady(timeoutMs: number): Promise<boolean> {
    const clock = this.#clock;
    const deadline = clock.now() + timeoutMs;
    while (!(
      this.state() === 'connected' &&
      this.#subscribed &&
      this.#durable.status === 'ready'
    )) {
      const left = deadline - clock.now();
      if (this.#closed || left <= 0) return false;
      // woken by the next connection or subscription event, or by the deadline
      await new Promise<void>((resolve) => {
        const timer = clock.setTimeout(resolve, left, true);
        this.#readyWaiters.push(() => {
          clock.clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }

  #changed(): void {
    for (const wake of this.#readyWaiters.splice(0)) wake();
  }

  stats(): CommandStoreStats {
    return this.#counters.snapshot(this.#waiters.size);
  }

  /** Answers every waiter with undefined and disconnects every connection. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#changed();
      this.#waiters.close();
      const clients = new Set([this.#client, this.#durable, this.#sub]);
      await Promise.all([...clients].map((c) => closeRedis(c, this.#clock)));
    })();
    return this.#closing;
  }

  #subscribe(): void {
    if (this.#closed) return;
    this.#sub.subscribe(this.#channel).then(
      () => {
        this.#subscribed = true;
        this.#knownEmpty.subscription(true);
        this.#changed();
        // notifications sent while we were not subscribed are lost: look again
        this.#waiters.wakeAll();
      },
      () => {
        // reconnect, and subscribe again on the next 'ready'
        if (!this.#closed) this.#sub.disconnect(true);
      },
    );
  }

  async #peek(device: DeviceKey): Promise<{ head: QueuedCommand | undefined; count: number }> {
    const r = await this.#run(peekScript, device, [this.#clock.wallNow(), this.#expiryMs]);
    this.#countPurge(r);
    return { head: this.#entry(r[4]), count: int(r[1]) };
  }

  async #run(
    script: LuaScript,
    device: DeviceKey,
    args: readonly (string | number)[],
    durability?: Durability,
  ): Promise<readonly unknown[]> {
    if (this.#closed) throw this.#unavailable('closed');
    const client = durability === undefined ? this.#client : this.#durable;
    if (client.status !== 'ready') throw this.#unavailable('redis not connected');
    let reply: unknown;
    try {
      reply = await script.run(client, commandQueueKey(this.#prefix, device), args, durability);
    } catch (e: unknown) {
      throw this.#unavailable('redis command failed', e);
    }
    if (!Array.isArray(reply)) throw this.#unavailable('unexpected script reply');
    return reply as readonly unknown[];
  }

  #unavailable(detail: string, cause?: unknown): CommandError {
    this.#counters.redisErrors++;
    return new CommandError('COMMANDS_UNAVAILABLE', detail, cause);
  }

  /** Counts what the script's purge dropped (replies are `{result, count, expired, bad, …}`). */
  #countPurge(r: readonly unknown[]): void {
    this.#counters.expired += int(r[2]);
    this.#counters.badEntries += int(r[3]);
  }

  #entry(v: unknown): QueuedCommand | undefined {
    if (typeof v !== 'string') return undefined;
    const cmd = decodeEntry(v);
    if (cmd === undefined) this.#counters.badEntries++;
    return cmd;
  }
}
