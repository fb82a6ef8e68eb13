/**
 * The uplink bench's `--pin` (bench/lib/pin.ts): CPU lists are read and written as Linux
 * writes them, the plan gives the servers one CPU and the rest everything else, and a process
 * started behind the launcher really runs on that CPU, every thread of it, as read back from
 * /proc. (Linux with taskset from util-linux, as the bench needs.)
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  affinityOf,
  allowedCpus,
  formatCpuList,
  parseCpuList,
  pinLauncher,
  planPin,
} from '../../../bench/lib/pin.js';

describe('bench: --pin', () => {
  it('reads and writes CPU lists as /proc does', () => {
    assert.deepEqual(parseCpuList('0-1'), [0, 1]);
    assert.deepEqual(parseCpuList('3,0-1,5-6\n'), [0, 1, 3, 5, 6]);
    assert.equal(formatCpuList([6, 0, 1, 2, 5]), '0-2,5-6');
    assert.equal(formatCpuList([1]), '1');
    assert.throws(() => parseCpuList('1-0'), /not a CPU list/);
    assert.throws(() => parseCpuList('a'), /not a CPU list/);
  });

  it('gives the servers one CPU (the highest unless named) and the rest the others', () => {
    assert.deepEqual(planPin([0, 1]), { serverCpus: [1], otherCpus: [0] });
    assert.deepEqual(planPin([0, 1, 2, 3], 0), { serverCpus: [0], otherCpus: [1, 2, 3] });
    assert.throws(() => planPin([0]), /two CPUs/);
    assert.throws(() => planPin([0, 1], 7), /CPU 7 is not/);
  });

  it('a process started behind the launcher runs on that CPU with every thread', async (t) => {
    const available = allowedCpus();
    if (available.length < 2) {
      t.skip('needs two CPUs');
      return;
    }
    const { serverCpus, otherCpus } = planPin(available);
    const [command, ...args] = pinLauncher(serverCpus);
    // a node child with its worker threads, kept alive until its stdin closes
    const child = spawn(
      command!,
      [...args, process.execPath, '-e', 'process.stdin.resume(); process.stdout.write("up")'],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    try {
      await once(child.stdout, 'data');
      const a = affinityOf(child.pid!);
      assert.ok(a !== undefined);
      assert.equal(a.cpus, formatCpuList(serverCpus));
      assert.ok(a.threads > 1, `node runs more than one thread (${a.threads})`);
      assert.equal(a.threadsElsewhere, 0);
      assert.notEqual(a.cpus, formatCpuList(otherCpus));
    } finally {
      child.stdin.end();
      await once(child, 'exit');
    }
    assert.equal(affinityOf(child.pid!), undefined, 'gone once the process has exited');
  });
});
