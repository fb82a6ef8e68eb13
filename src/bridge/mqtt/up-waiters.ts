/** Callers waiting until a backend is connected (`waitConnected`), settled all at once. */
export class UpWaiters {
  private readonly waiters = new Set<(up: boolean) => void>();

  /** Resolves true when `settle(true)` comes first, false on `settle(false)` or after `timeoutMs`. */
  wait(timeoutMs: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.waiters.add(done);
    });
  }

  settle(up: boolean): void {
    for (const w of [...this.waiters]) w(up);
  }
}
