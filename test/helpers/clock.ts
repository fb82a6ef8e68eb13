/**
 * Clocks for tests beyond the {@link ManualClock} of src/time.
 */
import { SystemClock, type Clock } from '../../src/time/clock.js';

/**
 * A deadline no test reaches: an operation given it that ends at all did not wait for it (a
 * wait would hang the file until its limit, a failure), which shows "at once" without a
 * wall-clock budget.
 */
export const UNREACHED_DEADLINE_MS = 3_600_000;

/**
 * Real timers, but the time (monotonic and wall alike) read from `now`: for a component whose
 * notion of time a test steps while its peers (sockets, a store) run in real time.
 */
export function clockReading(now: () => number): Clock {
  return new (class extends SystemClock {
    override now(): number {
      return now();
    }

    override wallNow(): number {
      return now();
    }
  })();
}

/** Real timers and real time, plus whatever {@link SteppedClock.step} has added. */
export interface SteppedClock extends Clock {
  /** Moves monotonic and wall time forward by `ms` at once (a sleep of `ms` that takes none). */
  step(ms: number): void;
}

/**
 * The system clock with a forward offset: for a component whose time a test moves past a
 * cool-down or lifetime while its peers (sockets, a registry, a store) run in real time.
 * Deadlines due by the new time fire at their host timer's next turn.
 */
export function steppedClock(): SteppedClock {
  let offset = 0;
  return new (class extends SystemClock implements SteppedClock {
    override now(): number {
      return super.now() + offset;
    }

    override wallNow(): number {
      return super.wallNow() + offset;
    }

    step(ms: number): void {
      offset += ms;
    }
  })();
}
