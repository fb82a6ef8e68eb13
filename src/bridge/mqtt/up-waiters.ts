import type { Clock } from '../../time/clock.js';

/** Callers waiting until a backend is connected (`waitConnected`), settled all at once. */
export class UpWaiters {
  private readonly waiters = new Set<(up: boolean) => void>();

  /** `clock`: the waits' timers (each holds the process open while it waits). */
  constructor(private readonly clock: Clock) {}

  /** Resolves true when `settle(true)` comes first, false on `settle(false)` or after `timeoutMs`. */
  wait(timeoutMs: number): Promise<boolean> {
    const clock = this.clock;
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean): void => {
        clock.clearTimeout(timer);
        this.waiters.delete(done);
        resolve(ok);
      };
      const timer = clock.setTimeout(() => done(false), timeoutMs, true);
      this.waiters.add(done);
    });
  }

  settle(up: boolean): void {
    for (const w of [...this.waiters]) w(up);
  }
}
