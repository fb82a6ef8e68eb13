/**
 * Clocks for tests beyond the {@link ManualClock} of src/time.
 */
import { SystemClock, type Clock } from '../../src/time/clock.js';

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
