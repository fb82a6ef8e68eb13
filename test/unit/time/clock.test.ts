/**
 * The clocks of src/time: the manual one tests drive, and the system one with its timers.
 * (TimerQueue's tests are in test/unit/coap/caches.test.ts, beside the caches that use it.)
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  MANUAL_WALL_START,
  ManualClock,
  SystemClock,
  TimerQueue,
  type Timed,
} from '../../../src/time/clock.js';

describe('ManualClock', () => {
  test('monotonic and wall time start where asked and move together, only on advance', () => {
    const c = new ManualClock(500, 1_700_000_000_000);
    assert.deepEqual([c.now(), c.wallNow()], [500, 1_700_000_000_000]);
    c.advance(250);
    assert.deepEqual([c.now(), c.wallNow()], [750, 1_700_000_000_250]);
    assert.equal(new ManualClock().wallNow(), MANUAL_WALL_START);
  });

  test('timers fire in deadline order, equal deadlines in the order they were set, with now at each deadline', () => {
    const c = new ManualClock(0);
    const log: string[] = [];
    c.setTimeout(() => log.push(`b@${c.now()}`), 20);
    c.setTimeout(() => log.push(`a@${c.now()}`), 10);
    c.setTimeout(() => log.push(`c@${c.now()}`), 20);
    const gone = c.setTimeout(() => log.push('cancelled'), 15);
    c.clearTimeout(gone);
    c.clearTimeout(undefined);
    assert.equal(c.pending, 3);
    assert.equal(c.nextIn, 10);
    c.advance(19);
    assert.deepEqual(log, ['a@10']);
    assert.equal(c.now(), 19);
    c.advance(1);
    assert.deepEqual(log, ['a@10', 'b@20', 'c@20']);
    assert.equal(c.pending, 0);
    assert.equal(c.nextIn, undefined);
  });

  test('a timer set from a timer fires within the same advance when it falls due', () => {
    const c = new ManualClock(0);
    const at: number[] = [];
    const again = (): void => {
      at.push(c.now());
      if (at.length < 3) c.setTimeout(again, 10);
    };
    c.setTimeout(again, 10);
    c.advance(100);
    assert.deepEqual(at, [10, 20, 30]);
  });

  test('an interval fires every period until cleared, also from its own callback', () => {
    const c = new ManualClock(0);
    const at: number[] = [];
    const h = c.setInterval(() => {
      at.push(c.now());
      if (at.length === 4) c.clearTimeout(h);
    }, 25);
    c.advance(60);
    assert.deepEqual(at, [25, 50]);
    c.advance(1_000);
    assert.deepEqual(at, [25, 50, 75, 100]);
    assert.equal(c.pending, 0);
  });

  test('advanceAsync lets promises settle between steps', async () => {
    const c = new ManualClock(0);
    const at: number[] = [];
    // a loop that awaits between timers, as a retrying publisher does
    // manual time: nothing here waits in real time
    const stepMs = 100;
    const loop = async (): Promise<void> => {
      for (let i = 0; i < 3; i++) {
        await new Promise<void>((r) => c.setTimeout(r, stepMs));
        at.push(c.now());
      }
    };
    const done = loop();
    await c.advanceAsync(300, 100);
    await done;
    assert.deepEqual(at, [100, 200, 300]);
  });
});

describe('SystemClock', () => {
  test('real timers: a timeout fires once, a cleared one never, an interval until cleared', async () => {
    const c = new SystemClock();
    const t0 = c.now();
    assert.ok(Math.abs(c.wallNow() - Date.now()) < 1_000);
    let cancelledFired = false;
    c.clearTimeout(
      c.setTimeout(() => {
        cancelledFired = true;
      }, 1),
    );
    let ticks = 0;
    // the interval is unref'd: a kept-alive timer holds the process open while it runs
    const guard = c.setTimeout(() => undefined, 10_000, true);
    await new Promise<void>((resolve) => {
      const h = c.setInterval(() => {
        if (++ticks === 3) {
          c.clearTimeout(h);
          resolve();
        }
      }, 1);
    });
    c.clearTimeout(guard);
    // keepAlive: this timer alone holds the process open until it fires
    await new Promise<void>((r) => c.setTimeout(r, 5, true));
    assert.equal(ticks, 3);
    assert.equal(cancelledFired, false);
    assert.ok(c.now() - t0 >= 5);
  });

  test('timers do not hold the process open unless asked to', () => {
    const c = new SystemClock();
    const plain = c.setTimeout(() => undefined, 60_000);
    const every = c.setInterval(() => undefined, 60_000);
    const kept = c.setTimeout(() => undefined, 60_000, true);
    try {
      assert.deepEqual([plain.hasRef(), every.hasRef(), kept.hasRef()], [false, false, true]);
    } finally {
      for (const t of [plain, every, kept]) c.clearTimeout(t);
    }
  });
});

describe('TimerQueue lingering when empty', () => {
  /** A manual clock that counts the host timers set and cleared. */
  class CountingClock extends ManualClock {
    sets = 0;
    clears = 0;
    override setTimeout(fn: () => void, ms: number, keepAlive = false): number {
      this.sets++;
      return super.setTimeout(fn, ms, keepAlive);
    }
    override clearTimeout(handle: number | undefined): void {
      if (handle !== undefined) this.clears++;
      super.clearTimeout(handle);
    }
  }
  const deadline = (log: number[]): Timed => ({
    dueAt: 0,
    heapIndex: -1,
    onTimer: (now) => log.push(now),
  });

  test('a deadline per publish at a low rate: one host timer, let go whenever the queue is empty', () => {
    const clock = new CountingClock();
    const q = new TimerQueue(clock, true, 'linger');
    const fired: number[] = [];
    for (let i = 0; i < 100; i++) {
      const d = deadline(fired);
      q.schedule(d, clock.now() + 1000);
      assert.equal(clock.pendingKeptAlive, 1, 'held while a deadline waits');
      clock.advance(3); // its PUBACK
      q.cancel(d);
      assert.equal(clock.pendingKeptAlive, 0, 'an empty queue does not hold the process');
      clock.advance(7);
    }
    assert.deepEqual(fired, []);
    assert.ok(clock.sets <= 2, `host timers set: ${clock.sets}`);
    assert.equal(clock.clears, 0);
    // the lingering timer fires for nothing, and then none is left
    clock.advance(2000);
    assert.deepEqual(fired, []);
    assert.equal(clock.pending, 0);
    // a deadline that is due still fires at its time
    const d = deadline(fired);
    q.schedule(d, clock.now() + 1000);
    clock.advance(999);
    assert.deepEqual(fired, []);
    clock.advance(1);
    assert.deepEqual(fired, [clock.now()]);
    assert.equal(clock.pending, 0);
  });

  test('an earlier deadline than the lingering timer re-arms; clear stops it', () => {
    const clock = new CountingClock();
    const q = new TimerQueue(clock, true, 'linger');
    const fired: number[] = [];
    const a = deadline(fired);
    q.schedule(a, 1000);
    q.cancel(a);
    const b = deadline(fired);
    q.schedule(b, 500);
    assert.equal(clock.pending, 1);
    assert.equal(clock.pendingKeptAlive, 1);
    clock.advance(500);
    assert.deepEqual(fired, [500]);
    q.schedule(a, 800);
    q.cancel(a);
    q.clear();
    assert.equal(clock.pending, 0);
  });

  test('the system clock: the lingering timer is unref-ed, and ref-ed again when reused', () => {
    const clock = new SystemClock();
    let handle: NodeJS.Timeout | undefined;
    const spy = new (class extends SystemClock {
      override setTimeout(fn: () => void, ms: number, keepAlive = false): NodeJS.Timeout {
        handle = clock.setTimeout(fn, ms, keepAlive);
        return handle;
      }
    })();
    const q = new TimerQueue(spy, true, 'linger');
    const d = deadline([]);
    q.schedule(d, spy.now() + 60_000);
    assert.equal(handle?.hasRef(), true);
    q.cancel(d);
    assert.equal(handle?.hasRef(), false);
    q.schedule(d, spy.now() + 60_000);
    assert.equal(handle?.hasRef(), true);
    q.clear();
  });
});
