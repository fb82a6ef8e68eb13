/**
 * Clocks for tests beyond the {@link ManualClock} of src/time.
 */
import assert from 'node:assert/strict';
import { SystemClock, type Clock, type ManualClock } from '../../src/time/clock.js';

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

/**
 * Moves `clock` to 1 ms before `ms` from now, checks that `pending` has not settled, then to
 * `ms`, and checks that it has settled in the same turn (no real time waited for it: a
 * deadline still on a host timer fails here at once instead of passing late). Returns what
 * `pending` resolved to; a rejection is passed on.
 */
export async function settlesAt<T>(
  clock: ManualClock,
  ms: number,
  pending: Promise<T>,
  what: string,
): Promise<T> {
  let settled = false;
  const observed = pending.finally(() => {
    settled = true;
  });
  observed.catch(() => undefined);
  clock.advance(ms - 1);
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, `${what}: still pending 1 ms before its ${ms} ms`);
  clock.advance(1);
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, true, `${what}: settled at its ${ms} ms, on the clock`);
  return observed;
}
