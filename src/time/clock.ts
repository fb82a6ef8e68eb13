/**
 * Time for every layer: one injectable clock that reads monotonic and wall time and sets the
 * host timers, and one timer queue that drives many deadlines from a single host timer.
 *
 * Every deadline of coap-edge goes through a {@link Clock}: DTLS flight retransmission,
 * handshake timeouts and sweeps, CoAP exchanges, presence sweeps, MQTT and HTTP deadlines.
 * The gateway passes one {@link SystemClock} to all of them; tests pass a {@link ManualClock}
 * and move time with {@link ManualClock.advance} instead of sleeping (docs/testing.md).
 *
 * Why a queue instead of a `setTimeout` per deadline where there are many (CoAP exchanges):
 * hundreds of thousands of peers may be connected, but only few exchanges are in flight at
 * any moment. A binary min-heap with intrusive indices gives O(log n) schedule/cancel with no
 * allocation per operation (the scheduled object is the exchange itself, no closure, no
 * `Timeout` object), exactly one libuv timer however many deadlines are pending, one place to
 * stop everything on `close()`, and deterministic tests: a {@link ManualClock} only has to
 * fire that one host timer.
 *
 * This module imports nothing of src/: every layer may import it (docs/design.md, "Layers").
 *
 * @module
 */
// Node's global `performance` is a getter: an imported binding is a constant
// (bench/history/records.md, "The record path, third pass")
import { performance } from 'node:perf_hooks';

/**
 * A timer set with {@link Clock.setTimeout} or {@link Clock.setInterval}; opaque to callers
 * (a Node `Timeout` for the system clock, a number for the manual one).
 */
export type TimerHandle = unknown;

/**
 * The clock and host timers. Methods use method syntax on purpose: an implementation may type
 * its handle (e.g. `NodeJS.Timeout`).
 */
export interface Clock {
  /** Monotonic milliseconds (deadlines, durations); their origin means nothing. */
  now(): number;
  /** Milliseconds since the epoch (timestamps that leave the process, expiry in stores). */
  wallNow(): number;
  /**
   * Calls `fn` once, `ms` milliseconds from now; returns a handle for {@link clearTimeout}.
   * The timer does not hold the process open unless `keepAlive` is true.
   */
  setTimeout(fn: () => void, ms: number, keepAlive?: boolean): TimerHandle;
  /** Calls `fn` every `ms` milliseconds until cleared; never holds the process open. */
  setInterval(fn: () => void, ms: number): TimerHandle;
  /**
   * Cancels a timer set with {@link setTimeout} or {@link setInterval}; undefined and a
   * handle that already fired are ignored.
   */
  clearTimeout(handle: TimerHandle): void;
  /**
   * Whether a pending timer set with {@link setTimeout} holds the process open from now on
   * (optional: a clock without it cannot change that after the fact).
   */
  setKeepAlive?(handle: TimerHandle, keepAlive: boolean): void;
}

/**
 * `performance.now()`, `Date.now()` and Node timers, unref'd unless asked otherwise (a pending
 * retransmission or sweep never holds the process open).
 */
export class SystemClock implements Clock {
  now(): number {
    return performance.now();
  }

  wallNow(): number {
    return Date.now();
  }

  setTimeout(fn: () => void, ms: number, keepAlive = false): NodeJS.Timeout {
    const t = setTimeout(fn, ms);
    if (!keepAlive) t.unref();
    return t;
  }

  setInterval(fn: () => void, ms: number): NodeJS.Timeout {
    const t = setInterval(fn, ms);
    t.unref();
    return t;
  }

  clearTimeout(handle: NodeJS.Timeout | undefined): void {
    // clearTimeout clears an interval as well (one Timeout class in Node)
    clearTimeout(handle);
  }

  setKeepAlive(handle: NodeJS.Timeout, keepAlive: boolean): void {
    if (keepAlive) handle.ref();
    else handle.unref();
  }
}

/** Shared default clock. */
export const systemClock: Clock = new SystemClock();

interface ManualTimer {
  at: number;
  readonly every: number;
  readonly fn: () => void;
  /** Would hold a process open (recorded only: nothing runs on its own here). */
  keepAlive: boolean;
}

/** Where {@link ManualClock.wallNow} starts by default: 2026-01-01T00:00:00Z. */
export const MANUAL_WALL_START = Date.UTC(2026, 0, 1);

/**
 * A clock for tests: time moves only when {@link ManualClock.advance} is called, which runs
 * every timer that falls due, in deadline order (in the order they were set for equal
 * deadlines), with `now()` set to each deadline. Wall time moves with it.
 */
export class ManualClock implements Clock {
  private t: number;
  private readonly wallOffset: number;
  private seq = 0;
  private readonly timers = new Map<number, ManualTimer>();

  /**
   * @param start what `now()` returns at first
   * @param wallStart what `wallNow()` returns at first
   */
  constructor(start = 0, wallStart = MANUAL_WALL_START) {
    this.t = start;
    this.wallOffset = wallStart - start;
  }

  now(): number {
    return this.t;
  }

  wallNow(): number {
    return this.wallOffset + this.t;
  }

  setTimeout(fn: () => void, ms: number, keepAlive = false): number {
    return this.add(fn, ms, 0, keepAlive);
  }

  setInterval(fn: () => void, ms: number): number {
    // like Node: an interval of less than 1 ms is 1 ms
    return this.add(fn, ms, Math.max(1, ms), false);
  }

  clearTimeout(handle: number | undefined): void {
    if (handle !== undefined) this.timers.delete(handle);
  }

  setKeepAlive(handle: number, keepAlive: boolean): void {
    const timer = this.timers.get(handle);
    if (timer !== undefined) timer.keepAlive = keepAlive;
  }

  /** Number of host timers pending (intervals included). */
  get pending(): number {
    return this.timers.size;
  }

  /** Number of pending host timers that would hold a process open. */
  get pendingKeptAlive(): number {
    let n = 0;
    for (const timer of this.timers.values()) if (timer.keepAlive) n++;
    return n;
  }

  /** Milliseconds until the earliest pending timer, undefined when none is pending. */
  get nextIn(): number | undefined {
    let next = Infinity;
    for (const timer of this.timers.values()) next = Math.min(next, timer.at);
    return next === Infinity ? undefined : next - this.t;
  }

  /** Moves time forward by `ms`, firing due timers one by one (earliest first). */
  advance(ms: number): void {
    const target = this.t + ms;
    for (;;) {
      let nextId = -1;
      let nextAt = Infinity;
      for (const [id, timer] of this.timers) {
        if (timer.at < nextAt) {
          nextAt = timer.at;
          nextId = id;
        }
      }
      const next = this.timers.get(nextId);
      if (next === undefined || nextAt > target) break;
      if (next.every > 0) {
        // an interval keeps its id (its handle); its next run counts as set now
        this.timers.delete(nextId);
        next.at += next.every;
        this.timers.set(nextId, next);
      } else {
        this.timers.delete(nextId);
      }
      this.t = nextAt;
      next.fn();
    }
    this.t = target;
  }

  /**
   * {@link advance} in steps of at most `step` ms, letting promises and I/O callbacks run
   * between steps (one macrotask turn each): for code that awaits between timers.
   */
  async advanceAsync(ms: number, step = ms): Promise<void> {
    const target = this.t + ms;
    while (this.t < target) {
      await new Promise<void>((r) => setImmediate(r));
      this.advance(Math.min(step, target - this.t));
    }
    await new Promise<void>((r) => setImmediate(r));
  }

  private add(fn: () => void, ms: number, every: number, keepAlive: boolean): number {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), every, fn, keepAlive });
    return id;
  }
}

/** Something with one deadline in a {@link TimerQueue}; the fields are the queue's. */
export interface Timed {
  /** Deadline (clock milliseconds), valid while scheduled. */
  dueAt: number;
  /** Position in the heap, -1 when not scheduled. Initialise to -1. */
  heapIndex: number;
  /** Called once when the deadline has passed (it may reschedule itself). */
  onTimer(now: number): void;
}

/**
 * A binary min-heap of {@link Timed} objects by deadline, fired by one host timer armed for
 * the earliest deadline. Each object is scheduled at most once (rescheduling moves it).
 */
export class TimerQueue {
  private readonly heap: Timed[] = [];
  private handle: TimerHandle = undefined;
  private armedAt = Infinity;
  /** The armed host timer holds the process open. */
  private held = false;
  private readonly fire = (): void => this.run();

  /**
   * @param clock time source and host timer
   * @param keepAlive whether the host timer holds the process open while anything is scheduled
   * @param idle what the host timer does when a cancel empties the queue: `stop` (cleared), or
   *   `linger` (left armed, and no longer holding the process open, where the clock can say
   *   so): a queue that empties after nearly every schedule (a deadline per publish at a low
   *   rate) then costs no host timer set and cleared per deadline; the lingering timer fires
   *   once for nothing, or is reused when the next deadline is not earlier.
   */
  constructor(
    private readonly clock: Clock,
    private readonly keepAlive = false,
    private readonly idle: 'stop' | 'linger' = 'stop',
  ) {}

  /** Objects scheduled. */
  get size(): number {
    return this.heap.length;
  }

  /** (Re)schedules `t` to fire at `at`. */
  schedule(t: Timed, at: number): void {
    if (t.heapIndex >= 0) {
      const old = t.dueAt;
      t.dueAt = at;
      if (at < old) this.up(t.heapIndex);
      else this.down(t.heapIndex);
    } else {
      t.dueAt = at;
      t.heapIndex = this.heap.length;
      this.heap.push(t);
      this.up(t.heapIndex);
    }
    this.arm();
  }

  /** Unschedules `t`; nothing happens when it is not scheduled. */
  cancel(t: Timed): void {
    const i = t.heapIndex;
    if (i < 0) return;
    const last = this.heap.pop();
    t.heapIndex = -1;
    if (last !== undefined && last !== t) {
      this.heap[i] = last;
      last.heapIndex = i;
      this.up(i);
      this.down(last.heapIndex);
    }
    // The host timer stays armed (if it fires early it re-arms for the new head). A queue
    // that holds the process open must let go when nothing is left: it clears its timer,
    // or, lingering, leaves it armed without holding the process.
    if (this.heap.length === 0) this.letGo();
  }

  /** Unschedules everything and stops the host timer. */
  clear(): void {
    for (const t of this.heap) t.heapIndex = -1;
    this.heap.length = 0;
    this.disarm();
  }

  private run(): void {
    this.handle = undefined;
    this.armedAt = Infinity;
    this.held = false;
    const now = this.clock.now();
    try {
      for (;;) {
        const top = this.heap[0];
        if (top === undefined || top.dueAt > now) break;
        this.cancel(top);
        top.onTimer(now);
      }
    } finally {
      this.arm();
    }
  }

  private arm(): void {
    const top = this.heap[0];
    if (top === undefined) {
      this.disarm();
      return;
    }
    if (this.handle !== undefined && this.armedAt <= top.dueAt) {
      if (this.keepAlive && !this.held) {
        this.clock.setKeepAlive?.(this.handle, true);
        this.held = true;
      }
      return;
    }
    this.disarm();
    // libuv's loop time may lag the clock a little: a timer firing "early" just re-arms.
    const delay = Math.max(1, Math.ceil(top.dueAt - this.clock.now()));
    this.armedAt = top.dueAt;
    this.handle = this.clock.setTimeout(this.fire, delay, this.keepAlive);
    this.held = this.keepAlive;
  }

  /** Nothing is scheduled: the host timer stops, or lingers without holding the process. */
  private letGo(): void {
    if (this.idle === 'stop' || this.handle === undefined) {
      this.disarm();
      return;
    }
    if (!this.held) return;
    if (this.clock.setKeepAlive === undefined) {
      this.disarm();
      return;
    }
    this.clock.setKeepAlive(this.handle, false);
    this.held = false;
  }

  private disarm(): void {
    if (this.handle !== undefined) this.clock.clearTimeout(this.handle);
    this.handle = undefined;
    this.armedAt = Infinity;
    this.held = false;
  }

  private up(i: number): void {
    const heap = this.heap;
    const t = heap[i];
    if (t === undefined) return;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = heap[p];
      if (parent === undefined || parent.dueAt <= t.dueAt) break;
      heap[i] = parent;
      parent.heapIndex = i;
      i = p;
    }
    heap[i] = t;
    t.heapIndex = i;
  }

  private down(i: number): void {
    const heap = this.heap;
    const n = heap.length;
    const t = heap[i];
    if (t === undefined) return;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const left = heap[l];
      const right = heap[l + 1];
      if (left === undefined) break;
      let c = l;
      let child = left;
      if (right !== undefined && right.dueAt < left.dueAt) {
        c = l + 1;
        child = right;
      }
      if (child.dueAt >= t.dueAt) break;
      heap[i] = child;
      child.heapIndex = i;
      i = c;
    }
    heap[i] = t;
    t.heapIndex = i;
  }
}
