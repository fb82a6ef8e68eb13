/**
 * Requests held open for a command (`ttd`), per device, bounded. Shared by both stores: the
 * store says how to look at a device's queue (`check`) and calls {@link Waiters.wake} when a
 * command may have arrived for a device (a local enqueue, a pub/sub notification from any pod).
 *
 * No wakeup is lost: a waiter is registered before its first look at the queue, and a wake
 * that arrives while a look is running makes it look once more. All waiters of one device
 * share one look per wake. A look that fails leaves the waiters waiting (until their time
 * runs out or the next wake).
 */
import type { Clock, TimerHandle } from '../../time/clock.js';
import type { DeviceKey, QueuedCommand } from '../types.js';
import { deviceId } from './entry.js';
import { CommandError } from './errors.js';
import type { CommandCounters } from './stats.js';

interface Waiter {
  readonly key: string;
  readonly device: DeviceKey;
  settled: boolean;
  timer: TimerHandle;
  resolve(cmd: QueuedCommand | undefined): void;
}

const MAX_TIMER_MS = 2_147_483_647;

export class Waiters {
  readonly #byDevice = new Map<string, Set<Waiter>>();
  /** Devices with a look running; true when another wake arrived meanwhile. */
  readonly #looking = new Map<string, boolean>();
  #count = 0;
  #closed = false;

  constructor(
    private readonly max: number,
    private readonly counters: CommandCounters,
    private readonly check: (device: DeviceKey) => Promise<QueuedCommand | undefined>,
    /** The waits' deadlines (each holds the process open, as the request it answers does). */
    private readonly clock: Clock,
  ) {}

  /** Waiters now. */
  get size(): number {
    return this.#count;
  }

  /**
   * The oldest command of the device, at once when one is queued, else the first that arrives
   * within `timeoutMs`, else undefined.
   * @throws CommandError `COMMANDS_TOO_MANY_WAITERS` when nothing is queued and `max` waiters
   *   already wait; the errors of `check` (`COMMANDS_UNAVAILABLE`).
   */
  async wait(device: DeviceKey, timeoutMs: number): Promise<QueuedCommand | undefined> {
    // setTimeout fires at once for more than 2^31-1 ms; after close() nothing waits any more
    timeoutMs = this.#closed ? 0 : Math.min(timeoutMs, MAX_TIMER_MS);
    if (!(timeoutMs > 0) || this.#count >= this.max) {
      const head = await this.check(device);
      if (head !== undefined) this.counters.delivered++;
      else if (timeoutMs > 0) {
        this.counters.waitersRefused++;
        throw new CommandError('COMMANDS_TOO_MANY_WAITERS', `${this.max} waiting`);
      }
      return head;
    }
    let resolveFn: (cmd: QueuedCommand | undefined) => void = () => undefined;
    const result = new Promise<QueuedCommand | undefined>((resolve) => (resolveFn = resolve));
    const key = deviceId(device);
    const w: Waiter = { key, device, settled: false, timer: undefined, resolve: resolveFn };
    let set = this.#byDevice.get(key);
    if (set === undefined) {
      set = new Set();
      this.#byDevice.set(key, set);
    }
    set.add(w);
    this.#count++;
    w.timer = this.clock.setTimeout(
      () => {
        w.timer = undefined;
        if (w.settled) return;
        this.counters.waitTimeouts++;
        this.#settle(w, undefined);
      },
      timeoutMs,
      true,
    );

    let head: QueuedCommand | undefined;
    try {
      head = await this.check(device);
    } catch (e: unknown) {
      if (!w.settled) this.#settle(w, undefined);
      throw e;
    }
    if (head !== undefined && !w.settled) this.#settle(w, head);
    return result;
  }

  /** A command may have arrived for `device`: its waiters look at the queue. */
  wake(device: DeviceKey): void {
    const key = deviceId(device);
    if (!this.#byDevice.has(key)) return;
    if (this.#looking.has(key)) {
      this.#looking.set(key, true);
      return;
    }
    this.#looking.set(key, false);
    void this.#look(key, device);
  }

  /** Every device with waiters looks again (after a gap in notifications). */
  wakeAll(): void {
    for (const set of this.#byDevice.values()) {
      const first = set.values().next();
      if (first.done !== true) this.wake(first.value.device);
    }
  }

  /** Answers every waiter with undefined (store closing); later calls only look. */
  close(): void {
    this.#closed = true;
    for (const set of [...this.#byDevice.values()]) {
      for (const w of [...set]) this.#settle(w, undefined);
    }
  }

  async #look(key: string, device: DeviceKey): Promise<void> {
    for (;;) {
      let head: QueuedCommand | undefined;
      try {
        head = await this.check(device);
      } catch {
        head = undefined;
      }
      const set = this.#byDevice.get(key);
      if (head !== undefined && set !== undefined) {
        for (const w of [...set]) {
          this.counters.wakeups++;
          this.#settle(w, head);
        }
      }
      if (this.#looking.get(key) === true && this.#byDevice.has(key)) {
        this.#looking.set(key, false);
        continue;
      }
      this.#looking.delete(key);
      return;
    }
  }

  #settle(w: Waiter, cmd: QueuedCommand | undefined): void {
    if (w.settled) return;
    w.settled = true;
    if (w.timer !== undefined) this.clock.clearTimeout(w.timer);
    w.timer = undefined;
    const set = this.#byDevice.get(w.key);
    if (set !== undefined) {
      set.delete(w);
      if (set.size === 0) this.#byDevice.delete(w.key);
    }
    this.#count--;
    if (cmd !== undefined) this.counters.delivered++;
    w.resolve(cmd);
  }
}
