/**
 * Time for the CoAP exchange layer: an injectable clock and one timer queue that drives
 * every deadline of the layer (empty-ACK timeouts, CON retransmissions of RFC 7252 §4.2,
 * periodic expiry of caches) from a single host timer.
 *
 * Why one queue instead of a `setTimeout` per exchange: hundreds of thousands of peers may
 * be connected, but only few exchanges are in flight at any moment. A binary min-heap with
 * intrusive indices gives O(log n) schedule/cancel with no allocation per operation (the
 * scheduled object is the exchange itself, no closure, no `Timeout` object), exactly one
 * libuv timer however many deadlines are pending, one place to stop everything on `close()`,
 * and deterministic tests: a {@link ManualClock} only has to fire that one host timer.
 *
 * @module
 */

/**
 * The clock and host timer the layer uses. Methods use method syntax on purpose: an
 * implementation may type its handle (e.g. `NodeJS.Timeout`).
 */
export interface CoapClock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Calls `fn` once, `ms` milliseconds from now; returns a handle for {@link clearTimeout}. */
  setTimeout(fn: () => void, ms: number): unknown;
  /** Cancels a timer set with {@link setTimeout}; a handle that already fired is ignored. */
  clearTimeout(handle: unknown): void;
}

/** `performance.now()` and unref'd Node timers (a pending retransmission never holds the process open). */
export class SystemClock implements CoapClock {
  now(): number {
    return performance.now();
  }

  setTimeout(fn: () => void, ms: number): NodeJS.Timeout {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  }

  clearTimeout(handle: NodeJS.Timeout): void {
    clearTimeout(handle);
  }
}

/** Shared default clock. */
export const systemClock: CoapClock = new SystemClock();

/**
 * A clock for tests: time moves only when {@link ManualClock.advance} is called, which runs
 * every timer that falls due, in deadline order, with `now()` set to each deadline.
 */
export class ManualClock implements CoapClock {
  private t: number;
  private seq = 0;
  private readonly timers = new Map<number, { readonly at: number; readonly fn: () => void }>();

  constructor(start = 0) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): number {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: number): void {
    this.timers.delete(handle);
  }

  /** Number of host timers pending. */
  get pending(): number {
    return this.timers.size;
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
      this.timers.delete(nextId);
      this.t = nextAt;
      next.fn();
    }
    this.t = target;
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
  private handle: unknown = undefined;
  private armedAt = Infinity;
  private readonly fire = (): void => this.run();

  /** @param clock time source and host timer */
  constructor(private readonly clock: CoapClock) {}

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
    // The host timer stays armed; if it fires early it re-arms for the new head.
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
    if (this.handle !== undefined && this.armedAt <= top.dueAt) return;
    this.disarm();
    // libuv's loop time may lag the clock a little: a timer firing "early" just re-arms.
    const delay = Math.max(1, Math.ceil(top.dueAt - this.clock.now()));
    this.armedAt = top.dueAt;
    this.handle = this.clock.setTimeout(this.fire, delay);
  }

  private disarm(): void {
    if (this.handle !== undefined) this.clock.clearTimeout(this.handle);
    this.handle = undefined;
    this.armedAt = Infinity;
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
