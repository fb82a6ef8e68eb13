/**
 * The handshake bench's run-queue wait (bench/lib/harness.ts `openWindow`): the share of a
 * window a process's main thread was runnable but not run, from its schedstat. Two busy
 * processes on one CPU each wait about half the time; the report must see it. (Linux with
 * taskset from util-linux, as the bench needs.)
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { openWindow } from '../../../bench/lib/harness.js';
import { allowedCpus } from '../../../bench/lib/pin.js';
import { readCpu } from '../../../bench/lib/proc.js';

const BUSY = 'const end = Date.now() + 20000; while (Date.now() < end);';

describe('bench: run-queue wait', () => {
  it('a process sharing its CPU with another busy one waits for it a good part of the window', async (t) => {
    const cpu = allowedCpus()[0];
    if (cpu === undefined) return t.skip('no CPU list');
    const busy = [0, 1].map(() =>
      spawn('taskset', ['-c', String(cpu), process.execPath, '-e', BUSY], { stdio: 'ignore' }),
    );
    try {
      const pid = busy[0]!.pid!;
      await new Promise((r) => setTimeout(r, 200));
      const close = openWindow({ cpu: () => readCpu(pid) });
      await new Promise((r) => setTimeout(r, 600));
      const w = close();
      assert.ok(w.serverRunqueueWait !== null, 'schedstat readable');
      // alone it would wait ~0; sharing one CPU with one other busy process about half
      assert.ok(
        w.serverRunqueueWait > 0.25 && w.serverRunqueueWait <= 1.05,
        `run-queue wait ${w.serverRunqueueWait}`,
      );
      assert.ok(w.serverCpuUtilisation < 0.8, `utilisation ${w.serverCpuUtilisation}`);
      assert.ok(w.loadGenRunqueueWait !== null && w.loadGenRunqueueWait >= 0);
    } finally {
      for (const b of busy) b.kill();
    }
  });
});
