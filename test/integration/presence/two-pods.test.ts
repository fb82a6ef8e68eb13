/**
 * Two trackers ("pods") sharing one Redis (127.0.0.1:6379, a fresh prefix per test): each
 * transition is published exactly once in total, whichever pods see the device, sweep, or
 * close its sessions.
 */
import { clockReading } from '../../helpers/clock.js';
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import {
  byDevice,
  Clock,
  prefix,
  principal,
  SHARED_REDIS,
  settled,
  startPod,
  sweptAndSettled,
  T0,
  tick,
  waitFor,
  type Pod,
} from './helpers.js';

/**
 * Each pod's Redis command deadline. What happens when Redis is slow is not what these tests
 * show (the presence fault tests do); a process starved by other work can see an answer that
 * has already arrived as a timeout at the gateway's 300 ms, when its timers run before its
 * sockets are read.
 */
const COMMAND_TIMEOUT_MS = 2_000;

describe('presence: two pods sharing Redis', () => {
  const pods: Pod[] = [];
  const clients: Redis[] = [];
  const prefixes: string[] = [];

  afterEach(async () => {
    await Promise.all(pods.splice(0).map((p) => p.close()));
    for (const c of clients.splice(0)) c.disconnect();
    // the shared Redis keeps nothing of ours (the seq counter has no expiry)
    const admin = new Redis(SHARED_REDIS);
    for (const p of prefixes.splice(0)) {
      const keys = await admin.keys(`${p}:*`);
      if (keys.length > 0) await admin.del(...keys);
    }
    admin.disconnect();
  });

  async function two(o: Parameters<typeof startPod>[3] = {}) {
    const p = prefix();
    prefixes.push(p);
    const clock = new Clock();
    const opts = { clock: clockReading(clock.now), commandTimeoutMs: COMMAND_TIMEOUT_MS, ...o };
    const a = await startPod('a', SHARED_REDIS, p, opts);
    const b = await startPod('b', SHARED_REDIS, p, opts);
    pods.push(a, b);
    const admin = new Redis(SHARED_REDIS);
    clients.push(admin);
    return { a, b, clock, p, admin, all: () => [...a.events, ...b.events] };
  }

  const DEVICES = Array.from({ length: 20 }, (_, i) => `d${i}`);

  it('a device seen on both pods: exactly one online; a lapse with both sweepers: exactly one offline', async () => {
    const { a, b, clock, p, admin, all } = await two({ sweepBatch: 3 });
    // both pods race for every device, several times
    for (let round = 0; round < 3; round++) {
      DEVICES.forEach((dk, i) => {
        const [first, second] = (i + round) % 2 === 0 ? [a, b] : [b, a];
        first.tracker.seen(principal(`${first.name}-${dk}`, dk));
        second.tracker.seen(principal(`${second.name}-${dk}`, dk));
      });
      clock.advance(10);
    }
    await waitFor(() => all().length >= DEVICES.length, 'online events');
    await settled(a, b);
    const online = byDevice(all());
    assert.equal(Object.keys(online).length, DEVICES.length);
    for (const dk of DEVICES) assert.deepEqual(online[dk], ['online:first-request'], dk);

    // layout
    assert.equal(await admin.zcard(`${p}:{presence}:deadlines`), DEVICES.length);
    const h = await admin.hgetall(`${p}:{presence}:dev:pk:d0`);
    assert.ok(h.sid === 'a-d0' || h.sid === 'b-d0');
    assert.equal(h.lt, '30');
    assert.ok((await admin.pttl(`${p}:{presence}:dev:pk:d0`)) > 86_000_000);
    assert.ok((await admin.pttl(`${p}:{presence}:deadlines`)) > 86_000_000);

    // lapse: both sweepers, concurrently and repeatedly
    const before = all().length;
    clock.advance(30_000);
    await Promise.all([a.tracker.sweep(), b.tracker.sweep(), a.tracker.sweep(), b.tracker.sweep()]);
    await Promise.all([a.tracker.sweep(), b.tracker.sweep()]);
    await waitFor(() => all().length >= before + DEVICES.length, 'offline events');
    await settled(a, b);
    const after = byDevice(all());
    for (const dk of DEVICES) {
      assert.deepEqual(after[dk], ['online:first-request', 'offline:lifetime-lapsed'], dk);
    }
    const offline = all().filter((e) => e.status === 'offline');
    assert.equal(offline.length, DEVICES.length);
    assert.ok(offline.every((e) => e.time === new Date(T0 + 20 + 30_000).toISOString()));
    assert.equal(await admin.zcard(`${p}:{presence}:deadlines`), 0);
    // the claim leaves only its marker (the claim's now), for the op TTL (60 s)
    assert.deepEqual(await admin.hgetall(`${p}:{presence}:dev:pk:d0`), {
      off: String(clock.now()),
    });
    assert.ok((await admin.pttl(`${p}:{presence}:dev:pk:d0`)) <= 60_000);
    // seq: unique over both pods
    assert.equal(new Set(all().map((e) => e.seq)).size, all().length);
  });

  it('a close on the pod that does not hold the current session: nothing', async () => {
    const { a, b, clock, all } = await two();
    a.tracker.seen(principal('s1'));
    await waitFor(() => all().length === 1, 'online');
    clock.advance(5_000);
    a.tracker.seen(principal('s1')); // coalesced on a: not yet written
    clock.advance(1_000);
    b.tracker.seen(principal('s2')); // re-handshake on b
    await settled(a, b);
    // a flushes its older request before the deadline: it must not take the session back
    clock.advance(19_000);
    await a.tracker.sweep();
    assert.equal((await a.store.get({ productKey: 'pk', deviceKey: 'dk' }))?.sessionId, 's2');
    a.tracker.sessionClosed(principal('s1'), 'close-notify');
    a.tracker.sessionClosed(principal('s1'), 'evicted');
    await settled(a, b);
    assert.deepEqual(byDevice(all()), { dk: ['online:first-request'] });
    b.tracker.sessionClosed(principal('s2'), 'close-notify');
    await waitFor(() => all().length === 2, 'offline');
    await settled(a, b);
    assert.deepEqual(byDevice(all()), { dk: ['online:first-request', 'offline:close-notify'] });
    assert.equal(b.events[0]?.sessionId, 's2');
  });

  it('a deadline is the last request + lifetime on whichever pod: no early lapse', async () => {
    const { a, b, clock, all } = await two();
    a.tracker.seen(principal('s1'));
    await waitFor(() => all().length === 1, 'online');
    clock.advance(20_000);
    b.tracker.seen(principal('s2')); // deadline 50 s
    await settled(a, b);
    clock.advance(15_000); // 35 s: past a's deadline, not b's
    await Promise.all([a.tracker.sweep(), b.tracker.sweep()]);
    await settled(a, b);
    assert.equal(all().length, 1);
    clock.advance(15_000); // 50 s
    await Promise.all([a.tracker.sweep(), b.tracker.sweep()]);
    await waitFor(() => all().length === 2, 'offline');
    const off = all().find((e) => e.status === 'offline');
    assert.equal(off?.time, new Date(T0 + 50_000).toISOString());
    assert.equal(off?.sessionId, 's2');
  });

  it("late news of a pod whose sweep was held up past the other pod's claim: no second online and offline", async () => {
    const { a, b, clock, p, admin, all } = await two();
    a.tracker.seen(principal('s1')); // T0: online, stored deadline T0 + 30 s
    await waitFor(() => all().length === 1, 'online');
    await settled(a, b);
    clock.advance(1_000);
    a.tracker.seen(principal('s1')); // T0 + 1 s: coalesced, not written yet
    await settled(a, b);
    // a's sweep is held up past its flush lead; b's sweeper claims the device meanwhile
    clock.advance(40_000); // T0 + 41 s: a's news (deadline T0 + 31 s) has lapsed too
    await b.tracker.sweep();
    await waitFor(() => all().length === 2, 'offline');
    // a's sweep comes: it flushes its late news, then claims
    await a.tracker.sweep();
    await settled(a, b);
    await Promise.all([a.tracker.sweep(), b.tracker.sweep()]);
    await settled(a, b);
    assert.deepEqual(byDevice(all()), { dk: ['online:first-request', 'offline:lifetime-lapsed'] });
    assert.equal(await admin.zcard(`${p}:{presence}:deadlines`), 0);
  });

  it('with real timers and short lifetimes (lifetimeScale): one online, one offline in all', async () => {
    const p = prefix();
    prefixes.push(p);
    // the sweeps run on real timers; the time the trackers read follows real time, but a
    // turn counts at most MAX_TURN_MS: a starved process (turns of 600 ms and more at load 20,
    // the scaled lifetime) then cannot lapse a device under traffic every 10 ms, nor let one
    // pod claim a device before the other's sweep (every 100 ms) has flushed its news of it
    // (two sweep intervals ahead). On a quiet machine the time is the real one.
    const MAX_TURN_MS = 50;
    const clock = new Clock();
    let last = performance.now();
    const turn = async (): Promise<void> => {
      await tick(10);
      const now = performance.now();
      const dt = Math.min(MAX_TURN_MS, Math.floor(now - last));
      clock.advance(dt);
      last = dt === MAX_TURN_MS ? now : last + dt;
    };
    const o = {
      sweepIntervalMs: 100,
      lifetimeScale: 0.02, // 30 s → 600 ms
      clock: clockReading(clock.now),
      commandTimeoutMs: COMMAND_TIMEOUT_MS,
    };
    const a = await startPod('a', SHARED_REDIS, p, o);
    const b = await startPod('b', SHARED_REDIS, p, o);
    pods.push(a, b);
    a.tracker.start();
    b.tracker.start();
    const all = () => [...a.events, ...b.events];
    // traffic on both pods for 1.2 s (two lifetimes), then silence
    const end = clock.now() + 1_200;
    for (let i = 0; clock.now() < end; i++) {
      (i % 2 === 0 ? a : b).tracker.seen(principal('s1'));
      await turn();
    }
    assert.deepEqual(byDevice(all()), { dk: ['online:first-request'] }, 'no lapse under traffic');
    // the silence passes the same way (one jump past the lifetime would be a stall of both
    // pods, after which the pod whose sweep comes second flushes news that lapsed meanwhile)
    const silenceEnd = clock.now() + 3_000;
    while (all().length < 2 && clock.now() < silenceEnd) await turn();
    await waitFor(() => all().length === 2, 'offline', 10_000);
    // both sweepers had a whole sweep after it: a second claim would have come
    await sweptAndSettled(2, a, b);
    assert.deepEqual(byDevice(all()), { dk: ['online:first-request', 'offline:lifetime-lapsed'] });
    const st = a.tracker.stats();
    assert.ok(st.coalesced > st.storeWrites, `coalesced ${st.coalesced}, writes ${st.storeWrites}`);
  });
});
