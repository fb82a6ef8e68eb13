/**
 * The keep-alive timer handed to mqtt.js (its `timerVariant` option). mqtt.js restarts its
 * keep-alive interval on every acknowledgement it receives (PUBACK, SUBACK…): with its own
 * timer that is a Node interval cleared and created per publish. This one keeps a single
 * host timer per client and only moves a deadline on a restart; the host timer, when it
 * fires before that deadline, sets itself again for the rest. The interval's callback runs
 * at the same times as with a Node interval (give or take the re-arming's millisecond).
 *
 * The host timer never holds the process open: the client's socket does while it is
 * connected, and mqtt.js clears the interval when the connection ends.
 */
import type { Timer } from 'mqtt';
import { systemClock, type Clock, type TimerHandle } from '../../time/clock.js';

type IntervalFn = () => void;

export class KeepaliveTimer {
  /** The interval's callback; undefined once cleared. */
  private fn: IntervalFn | undefined = undefined;
  private every = 0;
  /** When the callback runs next (clock ms). */
  private dueAt = 0;
  /** The id of the interval set last (mqtt.js clears by id). */
  private id = 0;
  private handle: TimerHandle = undefined;
  /** When the host timer fires (clock ms). */
  private armedAt = Infinity;
  private readonly fire = (): void => this.onHost();

  constructor(private readonly clock: Clock = systemClock) {}

  /** What mqtt.js's `timerVariant` takes: `set` and `clear` bound to this timer. */
  forMqtt(): Timer {
    return {
      set: (fn: IntervalFn, ms?: number): number => this.set(fn, ms ?? 0),
      clear: (id: number): void => this.clear(id),
    };
  }

  /** Starts an interval of `ms` (replacing the one before); returns its id. */
  set(fn: IntervalFn, ms: number): number {
    this.fn = fn;
    this.every = Math.max(1, ms);
    this.dueAt = this.clock.now() + this.every;
    // a host timer that fires at or before the new deadline moves on from there by itself
    if (this.armedAt > this.dueAt) {
      if (this.handle !== undefined) this.clock.clearTimeout(this.handle);
      this.arm(this.every);
    }
    return ++this.id;
  }

  /** Stops the interval `id` (an older id is ignored); the host timer lapses on its own. */
  clear(id: number): void {
    if (id === this.id) this.fn = undefined;
  }

  private arm(ms: number): void {
    this.armedAt = this.clock.now() + ms;
    this.handle = this.clock.setTimeout(this.fire, ms);
  }

  private onHost(): void {
    this.handle = undefined;
    this.armedAt = Infinity;
    const fn = this.fn;
    if (fn === undefined) return;
    const now = this.clock.now();
    if (now < this.dueAt) {
      this.arm(Math.max(1, Math.ceil(this.dueAt - now)));
      return;
    }
    this.dueAt = now + this.every;
    this.arm(this.every);
    fn();
  }
}
