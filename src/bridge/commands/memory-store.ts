/**
 * The command queue of a single embedded instance without Redis: the same rules as
 * {@link RedisCommandStore} (`entry.ts`), kept in process. Commands do not survive a restart
 * and are not seen by other instances; use Redis for more than one pod.
 *
 * Bounded: `queueLength` commands per device, `maxDevices` devices with waiting commands
 * (beyond it a new device's command is refused as `full`), `maxWaiters` waiters. Expired
 * entries are dropped whenever their device's queue is touched, and by a sweep every
 * `sweepIntervalMs` (unref'd timer) for devices that never come back.
 */
import { randomUUID } from 'node:crypto';
import { systemClock, type Clock, type TimerHandle } from '../../time/clock.js';
import type { CommandStore, DeviceKey, QueuedCommand } from '../types.js';
import { NO_COMMAND, deviceId, isExpired, matchReply, messageIdOf } from './entry.js';
import { CommandCounters, type CommandStoreStats } from './stats.js';
import { Waiters } from './waiters.js';

export interface MemoryCommandStoreOptions {
  /** Most commands waiting per device (settings `commandQueueLength`). */
  readonly queueLength: number;
  /** Ms a command waits before it is dropped (setting `commandExpirySeconds` × 1000). */
  readonly expiryMs: number;
  /** Most devices with waiting commands. Default 100000. */
  readonly maxDevices?: number;
  /** Most concurrent `waitFor` calls that wait (setting `maxTtdWaiters`). */
  readonly maxWaiters: number;
  /** Time, the waits' deadlines and the sweep's timer. Default the system clock. */
  readonly clock?: Clock;
  /** Ms between sweeps of expired entries; 0 disables the timer. Default 60000. */
  readonly sweepIntervalMs?: number;
}

export class MemoryCommandStore implements CommandStore {
  readonly #queues = new Map<string, QueuedCommand[]>();
  readonly #queueLength: number;
  readonly #expiryMs: number;
  readonly #maxDevices: number;
  readonly #counters = new CommandCounters();
  readonly #waiters: Waiters;
  readonly #clock: Clock;
  #sweepTimer: TimerHandle;

  constructor(o: MemoryCommandStoreOptions) {
    this.#queueLength = Math.max(1, o.queueLength);
    this.#expiryMs = o.expiryMs;
    this.#maxDevices = Math.max(1, o.maxDevices ?? 100_000);
    const clock = (this.#clock = o.clock ?? systemClock);
    this.#waiters = new Waiters(
      Math.max(0, o.maxWaiters),
      this.#counters,
      (d) => Promise.resolve(this.#live(deviceId(d))[0]),
      clock,
    );
    const every = o.sweepIntervalMs ?? 60_000;
    // the clock's interval never holds the process open
    if (every > 0) this.#sweepTimer = clock.setInterval(() => this.sweep(), every);
  }

  enqueue(
    device: DeviceKey,
    topic: string,
    payload: Buffer,
    traceparent?: string,
  ): Promise<'queued' | 'full'> {
    const key = deviceId(device);
    const q = this.#live(key);
    const messageId = messageIdOf(topic, payload);
    if (messageId !== undefined && q.some((e) => e.topic === topic && e.messageId === messageId)) {
      this.#counters.duplicates++;
      return Promise.resolve('queued');
    }
    if (q.length >= this.#queueLength) {
      this.#counters.refusedFull++;
      return Promise.resolve('full');
    }
    if (q.length === 0 && this.#queues.size >= this.#maxDevices) {
      this.sweep();
      if (this.#queues.size >= this.#maxDevices) {
        this.#counters.refusedFull++;
        return Promise.resolve('full');
      }
    }
    q.push(
      Object.freeze({
        id: randomUUID(),
        topic,
        payload: Buffer.from(payload),
        messageId,
        enqueuedAt: this.#clock.wallNow(),
        ...(traceparent !== undefined ? { traceparent } : {}),
      }),
    );
    this.#queues.set(key, q);
    this.#counters.enqueued++;
    this.#waiters.wake(device);
    return Promise.resolve('queued');
  }

  peek(device: DeviceKey): Promise<{ head: QueuedCommand | undefined; count: number }> {
    return Promise.resolve(this.peekNow(device));
  }

  /** Memory answers at once: {@link peek} without the promise. */
  peekNow(device: DeviceKey): { head: QueuedCommand | undefined; count: number } {
    const q = this.#live(deviceId(device));
    const head = q[0];
    if (head === undefined) return NO_COMMAND;
    this.#counters.delivered++;
    return { head, count: q.length };
  }

  fetch(
    device: DeviceKey,
    topic: string,
  ): Promise<{ command: QueuedCommand | undefined; count: number }> {
    const q = this.#live(deviceId(device));
    const command = q.find((e) => e.topic === topic);
    if (command !== undefined) this.#counters.delivered++;
    return Promise.resolve({ command, count: q.length });
  }

  acknowledge(device: DeviceKey, topic: string, reply: Buffer): Promise<boolean> {
    return Promise.resolve(this.acknowledgeNow(device, topic, reply));
  }

  /**
   * Memory answers at once: {@link acknowledge} without the promise. A device with nothing
   * queued (the common case) costs no look at the topic or the reply's JSON.
   */
  acknowledgeNow(device: DeviceKey, topic: string, reply: Buffer): boolean {
    const key = deviceId(device);
    const q = this.#live(key);
    const i = q.length === 0 ? -1 : matchReply(q, topic, messageIdOf(topic, reply));
    if (i < 0) {
      this.#counters.ackUnmatched++;
      return false;
    }
    q.splice(i, 1);
    if (q.length === 0) this.#queues.delete(key);
    this.#counters.acknowledged++;
    return true;
  }

  waitFor(device: DeviceKey, timeoutMs: number): Promise<QueuedCommand | undefined> {
    return this.#waiters.wait(device, timeoutMs);
  }

  /** Drops expired entries of every device. */
  sweep(): void {
    for (const key of [...this.#queues.keys()]) this.#live(key);
  }

  stats(): CommandStoreStats {
    return this.#counters.snapshot(this.#waiters.size);
  }

  /** Devices with waiting commands. */
  get devices(): number {
    return this.#queues.size;
  }

  /** Answers every waiter with undefined and stops the sweep; queued commands stay. */
  close(): Promise<void> {
    if (this.#sweepTimer !== undefined) this.#clock.clearTimeout(this.#sweepTimer);
    this.#sweepTimer = undefined;
    this.#waiters.close();
    return Promise.resolve();
  }

  /** The device's queue without expired entries (a new empty array when there is none). */
  #live(key: string): QueuedCommand[] {
    const q = this.#queues.get(key);
    if (q === undefined) return [];
    const now = this.#clock.wallNow();
    const live = q.filter((e) => !isExpired(e.enqueuedAt, now, this.#expiryMs));
    if (live.length === q.length) return q;
    this.#counters.expired += q.length - live.length;
    if (live.length === 0) this.#queues.delete(key);
    else this.#queues.set(key, live);
    return live;
  }
}
