/**
 * Which test file the running code belongs to, for files that share a process
 * (scripts/test-groups.mjs, docs/testing.md "Suite time"). The entry file of a shared process
 * declares each file's `describe` inside `testFileScope.run(path, …)`; node:test runs a test and
 * its hooks in the async context they were declared in, and everything they start (timers,
 * sockets, child processes' events) stays in it, so `currentTestFile()` names the file wherever
 * its code runs, also while other files run beside it. A file in a process of its own is `''`.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

export const testFileScope = new AsyncLocalStorage<string>();

/** The path (under dist/test/) of the test file whose code is running, or `''` when alone. */
export function currentTestFile(): string {
  return testFileScope.getStore() ?? '';
}

/**
 * Things (child processes, brokers) kept by the test file that made them, so that a file's
 * cleanup ends its own only where files share a process.
 */
export class PerTestFile<T> {
  private readonly byFile = new Map<string, Set<T>>();

  /** The calling test file's set (made on first use). */
  own(): Set<T> {
    const file = currentTestFile();
    let set = this.byFile.get(file);
    if (set === undefined) {
      set = new Set();
      this.byFile.set(file, set);
    }
    return set;
  }

  /** Every file's, e.g. for a process `exit` listener. */
  all(): T[] {
    return [...this.byFile.values()].flatMap((s) => [...s]);
  }
}
