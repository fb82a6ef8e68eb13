/**
 * The handshake bench's `--rate` (bench/lib/handshake-load.ts `StartPace`): concurrent
 * connectors take their starts from one schedule, so the servers of one run can be compared
 * at one handshake rate (CPU per handshake falls as the rate rises: bench/history/sessions.md,
 * the ninth session, and bench/history/handshake.md, "The handshake in time").
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_WARMUP_MS, StartPace, warmUp } from '../../../bench/lib/handshake-load.js';

/** A pace at `perSec` on a fake clock: a sleeper wakes at its time, never moving time back. */
function fakePace(perSec: number): { pace: StartPace; clock: { t: number } } {
  const clock = { t: 0 };
  const pace = new StartPace(
    perSec,
    () => clock.t,
    (ms) => {
      const target = clock.t + ms;
      return Promise.resolve().then(() => {
        clock.t = Math.max(clock.t, target);
      });
    },
  );
  return { pace, clock };
}

describe('bench: handshakes at a given rate', () => {
  it('16 connectors at 1000/s start one handshake a millisecond between them', async () => {
    const { pace, clock } = fakePace(1000);
    const starts: number[] = [];
    const connector = async (): Promise<void> => {
      for (let k = 0; k < 10; k++) {
        await pace.turn();
        starts.push(clock.t);
      }
    };
    await Promise.all(Array.from({ length: 16 }, connector));
    assert.equal(starts.length, 160);
    const sorted = [...starts].sort((a, b) => a - b);
    // 160 starts at 1000/s span 159 ms, and none comes a millisecond or more early
    assert.ok(sorted.at(-1)! - sorted[0]! >= 158, `span ${sorted.at(-1)! - sorted[0]!}`);
    sorted.forEach((s, i) => assert.ok(s > i - 1, `start ${i} at ${s}`));
  });

  it('after a slow server, no burst makes up for the missed starts', async () => {
    const { pace, clock } = fakePace(1000);
    await pace.turn();
    clock.t = 50; // a handshake took 50 ms: 49 starts were missed
    const starts: number[] = [];
    for (let k = 0; k < 3; k++) {
      await pace.turn();
      starts.push(clock.t);
      clock.t += 0.2;
    }
    // at once, then under a millisecond later (started now), then the schedule's 52 ms
    assert.deepEqual(starts, [50, 50.2, 52]);
  });
});

describe('bench: the warm-up in handshakes', () => {
  /** A fake clock whose waits pass at once; `done` handshakes complete per ms waited. */
  function fake(done: number): {
    now: () => number;
    wait: (ms: number) => Promise<void>;
    completed: () => number;
  } {
    let t = 0;
    return {
      now: () => t,
      wait: (ms) => {
        t += ms;
        return Promise.resolve();
      },
      completed: () => Math.floor(t * done),
    };
  }

  it('a slow server: the window waits past the seconds for the handshakes', async () => {
    // 0.1 handshake a ms (100/s): 2 000 handshakes take 20 s, not the 4 s of the warm-up
    const f = fake(0.1);
    const ms = await warmUp({ warmupMs: 4000, warmupHandshakes: 2000 }, f.completed, f.now, f.wait);
    assert.ok(ms >= 20_000 && ms < 20_100, `waited ${ms} ms`);
  });

  it('a fast server waits the seconds only; a stalled one at most MAX_WARMUP_MS', async () => {
    const fast = fake(5);
    assert.equal(
      await warmUp({ warmupMs: 4000, warmupHandshakes: 2000 }, fast.completed, fast.now, fast.wait),
      4000,
    );
    const stalled = fake(0);
    const ms = await warmUp(
      { warmupMs: 4000, warmupHandshakes: 2000 },
      stalled.completed,
      stalled.now,
      stalled.wait,
    );
    assert.ok(ms >= MAX_WARMUP_MS && ms < MAX_WARMUP_MS + 100, `waited ${ms} ms`);
  });
});
