/**
 * The uplink bench's `--pause-log` preload (bench/lib/pause-log.ts) and its reading
 * (bench/lib/pause-tail.ts), for the datagram turns: a real node process with the preload
 * gets a burst of datagrams whose first handler holds the loop 5 ms, then one datagram alone;
 * the log must count both turns and their datagrams and name the long one, and pauseTail must
 * set that long turn beside the requests it overlapped.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pauseTail, pauseTotals, readPauses, type Pause } from '../../../bench/lib/pause-tail.js';
import { Samples } from '../../../bench/lib/stats.js';
import type { UplinkPhase } from '../../../bench/lib/uplink-load.js';

const PRELOAD = fileURLToPath(new URL('../../../bench/lib/pause-log.js', import.meta.url));

// the child: a UDP socket that holds the loop 5 ms on a datagram starting with 1 and says how
// many it has had; it exits when its stdin closes
const CHILD = `
const dgram = require('node:dgram');
const s = dgram.createSocket('udp4');
let n = 0;
s.on('message', (m) => {
  if (m[0] === 1) { const end = performance.now() + 5; while (performance.now() < end); }
  n++;
  process.stdout.write('got ' + n + '\\n');
});
s.bind(0, '127.0.0.1', () => process.stdout.write('port ' + s.address().port + '\\n'));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

/** Resolves with the first line of the child's output that matches. */
function line(child: ReturnType<typeof spawn>, re: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (d: Buffer): void => {
      text += d.toString('utf8');
      const m = re.exec(text);
      if (m !== null) {
        child.stdout!.off('data', onData);
        resolve(m);
      }
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`child exited (${code}): ${text}`)));
  });
}

describe('bench: --pause-log datagram turns', () => {
  it('counts the datagrams of each turn and logs the long turn', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pause-log-test-'));
    const child = spawn(process.execPath, ['--import', PRELOAD, '-e', CHILD], {
      env: { ...process.env, BENCH_PAUSE_LOG_DIR: dir },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const sock = createSocket('udp4');
    try {
      const port = Number((await line(child, /port (\d+)\n/))[1]);
      const burst = line(child, /got 10\n/);
      for (let i = 0; i < 10; i++) sock.send(Buffer.from([i === 0 ? 1 : 0]), port, '127.0.0.1');
      await burst;
      const alone = line(child, /got 11\n/);
      sock.send(Buffer.from([0]), port, '127.0.0.1');
      await alone;
      child.stdin.end();
      await once(child, 'exit');
      const log = readPauses(dir, child.pid!);
      const counts = log.filter((p) => p.ev === 'turns');
      const sum = (k: 'turns' | 'datagrams'): number => counts.reduce((a, c) => a + (c[k] ?? 0), 0);
      assert.equal(sum('datagrams'), 11);
      assert.ok(sum('turns') >= 2 && sum('turns') <= 10, `turns ${sum('turns')}`);
      assert.ok(Math.max(...counts.map((c) => c.most ?? 0)) >= 2, 'the burst shared a turn');
      // the held turn is logged with the datagrams queued behind it (under load other turns
      // may pass 1 ms of wall time too)
      const long = log.filter((p) => p.ev === 'turn');
      assert.ok(
        long.some((t) => t.d >= 5 && (t.n ?? 0) >= 2),
        `no turn of ≥ 5 ms with the burst: ${JSON.stringify(long)}`,
      );
    } finally {
      sock.close();
      if (child.exitCode === null) child.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sets the long turns beside the p99 requests', () => {
    // 100 requests sent 10 ms apart, 1 ms each; requests 50 and 90 (the p99) took 8 ms, and
    // request 50 sat through a 6 ms turn
    const latency = new Samples();
    const sentAt = new Samples();
    for (let i = 0; i < 100; i++) {
      sentAt.push(1000 + 10 * i);
      latency.push(i === 50 || i === 90 ? 8 : 1);
    }
    const phase = {
      messages: 100,
      latency,
      sentAt,
      windowStartMs: 1000,
      windowEndMs: 2000,
    } as unknown as UplinkPhase;
    const log: Pause[] = [
      { ev: 'turns', t: 1200, d: 0, turns: 40, datagrams: 60, most: 3, long: 0 },
      { ev: 'turn', t: 1501, d: 6, n: 4 },
      { ev: 'turns', t: 1990, d: 0, turns: 60, datagrams: 70, most: 4, long: 1 },
      { ev: 'turns', t: 2300, d: 0, turns: 9, datagrams: 9, most: 1, long: 0 }, // after the window
    ];
    const r = pauseTail(phase, log) as {
      turns: Record<string, number>;
      tail: Record<string, number>;
      all: Record<string, number>;
    };
    assert.deepEqual(r.turns, {
      turns: 100,
      datagrams: 130,
      datagramsPerTurn: 1.3,
      mostInOneTurn: 4,
      over1ms: 1,
      over2ms: 1,
      over1msPer10k: 100,
      longestMs: 6,
    });
    assert.equal(r.tail.requests, 2);
    assert.equal(r.tail.shareOverlappingLongTurn, 0.5);
    assert.equal(r.tail.shareOverlappingNone, 0.5);
    assert.equal(r.all.shareOverlappingLongTurn, 0.01);
    const totals = pauseTotals([r, r]) as { turns: Record<string, number> };
    assert.equal(totals.turns.turns, 200);
    assert.equal(totals.turns.over1msPer10k, 100);
  });
});
