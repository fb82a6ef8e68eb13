/**
 * PresenceTracker on the in-memory store with an injected clock: transitions, exactly one
 * event each, session handling, write coalescing, store outages, shutdown.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  MemoryPresenceStore,
  PresenceTracker,
  type CloseResult,
  type LapsedDevice,
  type PresenceEntry,
  type PresenceEvent,
  type PresenceStore,
  type PresenceTrackerOptions,
  type TouchRequest,
  type TouchResult,
} from '../../../src/bridge/presence/index.js';
import type { DeviceKey, Principal } from '../../../src/bridge/types.js';
import { ManualClock } from '../../../src/time/clock.js';

const T0 = Date.UTC(2026, 4, 1, 10, 0, 0);

/** Lets promise callbacks (store answers, publishes) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

function principal(sessionId: string, o: { dk?: string; lifetime?: number } = {}): Principal {
  return {
    productKey: 'pk',
    deviceKey: o.dk ?? 'dk',
    secureMode: 2,
    lifetime: o.lifetime ?? 30,
    assetId: undefined,
    sessionId,
  };
}

/** Time starts at T0 and moves only when a test advances it (timers fire then). */
const newClock = (): ManualClock => new ManualClock(0, T0);

function harness(o: Partial<PresenceTrackerOptions> & { store?: PresenceStore } = {}) {
  const clock = o.clock instanceof ManualClock ? o.clock : newClock();
  const store = o.store ?? new MemoryPresenceStore();
  const events: PresenceEvent[] = [];
  const tracker = new PresenceTracker({
    publish: (ev) => {
      events.push(ev);
      return Promise.resolve();
    },
    sweepIntervalMs: 5_000,
    ...o,
    clock,
    store,
  });
  return { clock, store, events, tracker };
}

const summary = (evs: readonly PresenceEvent[]) => evs.map((e) => `${e.status}:${e.reason}`);

/** A store that can be switched off (rejects) and counts calls. */
class FlakyStore implements PresenceStore {
  down = false;
  /** When set, operations are applied but answered with a rejection (a lost reply). */
  loseReplies = false;
  readonly inner = new MemoryPresenceStore();
  #gate<T>(fn: () => Promise<T>): Promise<T> {
    if (this.down) return Promise.reject(new Error('store down'));
    const p = fn();
    if (this.loseReplies) return p.then(() => Promise.reject(new Error('Command timed out')));
    return p;
  }
  onlineCount(): Promise<number> {
    return this.#gate(() => this.inner.onlineCount());
  }
  touch(t: TouchRequest): Promise<TouchResult> {
    return this.#gate(() => this.inner.touch(t));
  }
  close(d: DeviceKey, sid: string, token: string): Promise<CloseResult> {
    return this.#gate(() => this.inner.close(d, sid, token));
  }
  claimLapsed(now: number, limit: number, token: string): Promise<readonly LapsedDevice[]> {
    return this.#gate(() => this.inner.claimLapsed(now, limit, token));
  }
  get(d: DeviceKey): Promise<PresenceEntry | undefined> {
    return this.inner.get(d);
  }
}

describe('PresenceTracker (memory store)', () => {
  it('publishes online once at the first request, nothing for further requests', async () => {
    const { tracker, events, clock } = harness();
    tracker.seen(principal('s1'));
    for (let i = 0; i < 20; i++) {
      clock.advance(100);
      tracker.seen(principal('s1'));
    }
    await settle();
    assert.deepEqual(summary(events), ['online:first-request']);
    const ev = events[0]!;
    assert.equal(ev.productKey, 'pk');
    assert.equal(ev.deviceKey, 'dk');
    assert.equal(ev.time, new Date(T0).toISOString());
    assert.equal(ev.lifetime, 30);
    assert.equal(ev.sessionId, 's1');
    assert.equal(typeof ev.seq, 'number');
    assert.equal(tracker.stats().online, 1);
  });

  it("a session's requests key the device once, not per request", async () => {
    const { tracker, events, clock } = harness();
    // the DTLS layer hands the same principal object with every request of a session
    let keyReads = 0;
    const p = principal('s1');
    const counted: Principal = {
      ...p,
      get productKey() {
        keyReads++;
        return p.productKey;
      },
    };
    for (let i = 0; i < 50; i++) {
      clock.advance(100);
      tracker.seen(counted);
    }
    await settle();
    assert.deepEqual(summary(events), ['online:first-request']);
    assert.equal(events[0]?.productKey, 'pk');
    assert.ok(keyReads <= 3, `productKey read ${keyReads} times for 50 requests`);
  });

  it('publishes offline once when the lifetime lapses, online again at the next request', async () => {
    const { tracker, events, clock, store } = harness();
    tracker.seen(principal('s1'));
    await settle();
    clock.advance(29_999);
    await tracker.sweep();
    assert.deepEqual(summary(events), ['online:first-request']);
    clock.advance(1);
    await tracker.sweep();
    await tracker.sweep();
    await settle();
    assert.deepEqual(summary(events), ['online:first-request', 'offline:lifetime-lapsed']);
    const off = events[1]!;
    assert.equal(off.time, new Date(T0 + 30_000).toISOString());
    assert.equal(off.sessionId, 's1');
    assert.equal(off.lifetime, 30);
    assert.ok(off.seq > events[0]!.seq);
    assert.equal(await store.get({ productKey: 'pk', deviceKey: 'dk' }), undefined);

    clock.advance(10_000);
    tracker.seen(principal('s1'));
    await settle();
    assert.deepEqual(summary(events), [
      'online:first-request',
      'offline:lifetime-lapsed',
      'online:first-request',
    ]);
    assert.equal(events[2]!.time, new Date(T0 + 40_000).toISOString());
  });

  it('close_notify of the current session: offline once', async () => {
    const { tracker, events, clock } = harness();
    tracker.seen(principal('s1'));
    await settle();
    clock.advance(1_000);
    tracker.sessionClosed(principal('s1'), 'close-notify');
    tracker.sessionClosed(principal('s1'), 'close-notify');
    await settle();
    assert.deepEqual(summary(events), ['online:first-request', 'offline:close-notify']);
    assert.equal(events[1]!.time, new Date(T0 + 1_000).toISOString());
    assert.equal(events[1]!.sessionId, 's1');
    clock.advance(60_000);
    await tracker.sweep();
    await settle();
    assert.equal(events.length, 2, 'no lapse after the close');
  });

  it('a late request on a session that ended: ignored, no new online', async () => {
    const { tracker, events } = harness();
    tracker.seen(principal('s1'));
    await settle();
    tracker.sessionClosed(principal('s1'), 'close-notify');
    tracker.seen(principal('s1'));
    await settle();
    assert.deepEqual(summary(events), ['online:first-request', 'offline:close-notify']);
    assert.equal(tracker.stats().requestsAfterClose, 1);
    tracker.seen(principal('s2'));
    await settle();
    assert.equal(events.length, 3, 'a new session comes online');
  });

  it('close of a session that carried no data: no store call, counted as not current', async () => {
    const store = new MemoryPresenceStore();
    const { tracker, events } = harness({ store });
    tracker.seen(principal('s1'));
    await settle();
    // s2 only shook hands, then ended: s1 stays the device's session
    tracker.sessionClosed(principal('s2'), 'close-notify', false);
    tracker.sessionClosed(principal('s3', { dk: 'other' }), 'evicted', false);
    tracker.sessionClosed(principal('s4', { dk: 'other' }), 'idle', false);
    await settle();
    assert.equal(store.calls.close, 0);
    assert.deepEqual(summary(events), ['online:first-request']);
    const s = tracker.stats();
    assert.equal(s.closesNotCurrent, 2);
    assert.deepEqual(s.sessionCloses, { 'close-notify': 1, evicted: 1, idle: 1, shutdown: 0 });
    // one that carried data still goes to the store
    tracker.sessionClosed(principal('s1'), 'close-notify', true);
    await settle();
    assert.equal(store.calls.close, 1);
    assert.deepEqual(summary(events), ['online:first-request', 'offline:close-notify']);
  });

  it('eviction of the current session: offline (evicted)', async () => {
    const { tracker, events } = harness();
    tracker.seen(principal('s1'));
    await settle();
    tracker.sessionClosed(principal('s1'), 'evicted');
    await settle();
    assert.deepEqual(summary(events), ['online:first-request', 'offline:evicted']);
  });

  it('close of an old session after a re-handshake: nothing (same pod)', async () => {
    const { tracker, events, clock, store } = harness();
    tracker.seen(principal('s1'));
    clock.advance(1_000);
    tracker.seen(principal('s2'));
    await settle();
    tracker.sessionClosed(principal('s1'), 'close-notify');
    tracker.sessionClosed(principal('s1'), 'evicted');
    await settle();
    assert.deepEqual(summary(events), ['online:first-request']);
    assert.equal((await store.get({ productKey: 'pk', deviceKey: 'dk' }))?.sessionId, 's2');
    assert.equal(tracker.stats().closesNotCurrent, 2);
  });

  it('close of an old session after a re-handshake on another pod: nothing', async () => {
    const store = new MemoryPresenceStore();
    const clock = newClock();
    const a = harness({ store, clock });
    const b = harness({ store, clock });
    a.tracker.seen(principal('s1'));
    await settle();
    clock.advance(2_000);
    b.tracker.seen(principal('s2'));
    await settle();
    a.tracker.sessionClosed(principal('s1'), 'close-notify');
    await settle();
    assert.deepEqual(summary([...a.events, ...b.events]), ['online:first-request']);
    b.tracker.sessionClosed(principal('s2'), 'close-notify');
    await settle();
    assert.deepEqual(summary(b.events), ['offline:close-notify']);
  });

  it('a device seen on two pods sharing the store: one online', async () => {
    const store = new MemoryPresenceStore();
    const clock = newClock();
    const a = harness({ store, clock });
    const b = harness({ store, clock });
    a.tracker.seen(principal('s1'));
    b.tracker.seen(principal('s1'));
    a.tracker.seen(principal('s1'));
    await settle();
    assert.equal(a.events.length + b.events.length, 1);
    clock.advance(31_000);
    await Promise.all([a.tracker.sweep(), b.tracker.sweep()]);
    await settle();
    assert.deepEqual(summary([...a.events, ...b.events]).sort(), [
      'offline:lifetime-lapsed',
      'online:first-request',
    ]);
  });

  it('coalesces writes: at most one per lifetime/4 per device, plus a flush before the deadline', async () => {
    const { tracker, events, clock, store } = harness();
    const s = store as MemoryPresenceStore;
    // one request every 100 ms for 120 s, sweeping every 5 s
    for (let i = 0; i < 1_200; i++) {
      tracker.seen(principal('s1'));
      if (i % 50 === 0) await tracker.sweep();
      await settle();
      clock.advance(100);
    }
    const st = tracker.stats();
    assert.equal(st.seen, 1_200);
    // 120 s / 7.5 s = 16 writes (+1 for the first)
    assert.ok(s.calls.touch <= 17, `store writes ${s.calls.touch}`);
    assert.ok(s.calls.touch >= 16, `store writes ${s.calls.touch}`);
    assert.equal(st.storeWrites, s.calls.touch);
    assert.equal(st.coalesced, 1_200 - s.calls.touch);
    assert.deepEqual(summary(events), ['online:first-request'], 'no lapse while busy');
  });

  it('the stored deadline is the last request + lifetime although that request was coalesced', async () => {
    const { tracker, events, clock, store } = harness();
    const s = store as MemoryPresenceStore;
    tracker.seen(principal('s1')); // written: deadline 30 s
    await settle();
    clock.advance(7_000);
    tracker.seen(principal('s1')); // coalesced (7 s < 7.5 s): last request at 7 s
    await settle();
    assert.equal(s.calls.touch, 1);
    // sweeps every 5 s: the flush before 30 s moves the deadline to 37 s
    for (let t = 5_000; t <= 35_000; t += 5_000) {
      clock.advance(T0 + t - clock.wallNow());
      await tracker.sweep();
      await settle();
    }
    assert.equal(s.calls.touch, 2, 'one flush');
    assert.equal((await s.get({ productKey: 'pk', deviceKey: 'dk' }))?.deadline, T0 + 37_000);
    assert.deepEqual(summary(events), ['online:first-request']);
    clock.advance(T0 + 40_000 - clock.wallNow());
    await tracker.sweep();
    await settle();
    assert.deepEqual(summary(events), ['online:first-request', 'offline:lifetime-lapsed']);
    assert.equal(events[1]!.time, new Date(T0 + 37_000).toISOString());
  });

  it('idle and shutdown closes publish nothing; the lifetime decides', async () => {
    const { tracker, events, clock } = harness();
    tracker.seen(principal('s1', { dk: 'a' }));
    tracker.seen(principal('s2', { dk: 'b' }));
    await settle();
    tracker.sessionClosed(principal('s1', { dk: 'a' }), 'idle');
    tracker.sessionClosed(principal('s2', { dk: 'b' }), 'shutdown');
    await settle();
    assert.equal(events.length, 2);
    clock.advance(30_000);
    await tracker.sweep();
    await settle();
    assert.deepEqual(summary(events.slice(2)), [
      'offline:lifetime-lapsed',
      'offline:lifetime-lapsed',
    ]);
    assert.deepEqual(tracker.stats().sessionCloses, {
      'close-notify': 0,
      evicted: 0,
      idle: 1,
      shutdown: 1,
    });
  });

  it('close() publishes no offline, flushes unwritten requests, drains events', async () => {
    const store = new MemoryPresenceStore();
    const clock = newClock();
    const a = harness({ store, clock });
    a.tracker.seen(principal('s1'));
    await settle();
    clock.advance(5_000);
    a.tracker.seen(principal('s1')); // coalesced
    await a.tracker.close();
    assert.deepEqual(summary(a.events), ['online:first-request']);
    assert.equal((await store.get({ productKey: 'pk', deviceKey: 'dk' }))?.deadline, T0 + 35_000);
    // requests after close are ignored; another pod sweeps the device when it lapses
    a.tracker.seen(principal('s1'));
    const b = harness({ store, clock });
    clock.advance(30_001);
    await b.tracker.sweep();
    await settle();
    assert.deepEqual(summary(b.events), ['offline:lifetime-lapsed']);
  });

  it('lifetimeScale shortens lifetimes (test hook); events report the announced lifetime', async () => {
    const { tracker, events, clock } = harness({ lifetimeScale: 0.1 });
    tracker.seen(principal('s1'));
    await settle();
    clock.advance(3_000);
    await tracker.sweep();
    await settle();
    assert.deepEqual(summary(events), ['online:first-request', 'offline:lifetime-lapsed']);
    assert.equal(events[1]!.lifetime, 30);
    assert.equal(events[1]!.time, new Date(T0 + 3_000).toISOString());
  });

  it('store down: never throws, counts, and catches up when it is back', async () => {
    const store = new FlakyStore();
    const { tracker, events, clock } = harness({ store, retryMs: 1_000 });
    store.down = true;
    for (let i = 0; i < 100; i++) tracker.seen(principal('s1'));
    tracker.seen(principal('s9', { dk: 'gone' }));
    await settle();
    tracker.sessionClosed(principal('s9', { dk: 'gone' }), 'close-notify');
    await settle();
    await tracker.sweep();
    await settle();
    assert.equal(events.length, 0);
    const st = tracker.stats();
    assert.equal(st.storeAvailable, false);
    assert.ok(st.storeErrors >= 3, `errors ${st.storeErrors}`);
    // 101 requests: one write per device, a retry for the close, no retry storm
    assert.ok(st.storeWrites <= 4, `writes ${st.storeWrites}`);
    assert.equal(st.coalesced, 99);
    assert.equal(st.pendingCloses, 1);

    store.down = false;
    clock.advance(1_000);
    await tracker.sweep();
    await settle();
    // the device seen during the outage comes online; the one that came and went does both
    assert.deepEqual(events.map((e) => `${e.deviceKey}:${e.status}:${e.reason}`).sort(), [
      'dk:online:first-request',
      'gone:offline:close-notify',
      'gone:online:first-request',
    ]);
    assert.equal(events.find((e) => e.deviceKey === 'dk')?.time, new Date(T0).toISOString());
    assert.equal(tracker.stats().storeAvailable, true);
    assert.equal(tracker.stats().pendingCloses, 0);
  });

  it('a device that lapsed during a store outage goes offline when it is back, with its real time', async () => {
    const store = new FlakyStore();
    const { tracker, events, clock } = harness({ store });
    tracker.seen(principal('s1'));
    await settle();
    store.down = true;
    clock.advance(60_000);
    await tracker.sweep();
    await settle();
    assert.equal(events.length, 1);
    store.down = false;
    clock.advance(5_000);
    await tracker.sweep();
    await settle();
    assert.deepEqual(summary(events), ['online:first-request', 'offline:lifetime-lapsed']);
    assert.equal(events[1]!.time, new Date(T0 + 30_000).toISOString());
  });

  it('bounds waiting closes', async () => {
    const store = new FlakyStore();
    const { tracker } = harness({ store, maxPendingCloses: 3 });
    store.down = true;
    for (let i = 0; i < 5; i++)
      tracker.sessionClosed(principal(`s${i}`, { dk: `d${i}` }), 'evicted');
    await settle();
    assert.equal(tracker.stats().pendingCloses, 3);
    assert.equal(tracker.stats().closesDropped, 2);
  });

  it('publish failures are counted and never reach the caller; one device stays in order', async () => {
    const clock = newClock();
    const order: string[] = [];
    let fail = true;
    let release: (() => void) | undefined;
    const tracker = new PresenceTracker({
      store: new MemoryPresenceStore(),
      sweepIntervalMs: 5_000,
      clock,
      publish: async (ev) => {
        if (ev.status === 'online' && release === undefined) {
          await new Promise<void>((r) => (release = r));
        }
        order.push(`${ev.status}`);
        if (fail) throw new Error('sink down');
      },
    });
    tracker.seen(principal('s1'));
    await settle();
    tracker.sessionClosed(principal('s1'), 'close-notify');
    await settle();
    // the offline waits behind the online of the same device
    assert.deepEqual(order, []);
    assert.equal(tracker.stats().events.queued, 1);
    release?.();
    await settle();
    assert.deepEqual(order, ['online', 'offline']);
    assert.equal(tracker.stats().events.failed, 2);
    fail = false;
    await tracker.close();
  });

  it('a publish that hangs times out and frees its slot', async () => {
    const clock = newClock();
    const tracker = new PresenceTracker({
      store: new MemoryPresenceStore(),
      sweepIntervalMs: 5_000,
      publishTimeoutMs: 50,
      closeTimeoutMs: 500,
      clock,
      publish: () => new Promise(() => {}),
    });
    tracker.seen(principal('s1'));
    await settle();
    assert.equal(tracker.stats().events.publishing, 1);
    clock.advance(49);
    await settle();
    assert.equal(tracker.stats().events.failed, 0, 'not before the timeout');
    clock.advance(1);
    await settle();
    assert.equal(tracker.stats().events.failed, 1);
    assert.equal(tracker.stats().events.publishing, 0);
    await tracker.close();
  });

  it('forgets the least recently written device beyond maxTracked', async () => {
    const { tracker } = harness({ maxTracked: 2 });
    tracker.seen(principal('s1', { dk: 'a' }));
    tracker.seen(principal('s2', { dk: 'b' }));
    tracker.seen(principal('s3', { dk: 'c' }));
    await settle();
    assert.equal(tracker.stats().tracked, 2);
    assert.equal(tracker.stats().trackedEvicted, 1);
  });

  it('rejects bad options with a stable code', () => {
    assert.throws(
      () => harness({ sweepIntervalMs: 0 }),
      (e: unknown) => (e as { code?: string }).code === 'PRESENCE_BAD_CONFIG',
    );
    assert.throws(
      () => harness({ refreshFraction: 2 }),
      (e: unknown) => (e as { code?: string }).code === 'PRESENCE_BAD_CONFIG',
    );
  });

  it('start() sweeps on its own until close()', async () => {
    const clock = newClock();
    const store = new MemoryPresenceStore();
    const events: PresenceEvent[] = [];
    const tracker = new PresenceTracker({
      store,
      sweepIntervalMs: 20,
      lifetimeScale: 0.002, // 30 s → 60 ms
      clock,
      publish: (ev) => {
        events.push(ev);
        return Promise.resolve();
      },
    });
    tracker.start();
    tracker.seen(principal('s1'));
    // sweeps at 20 and 40 ms find nothing lapsed; the one at 60 ms finds the device
    await clock.advanceAsync(40, 20);
    await settle();
    assert.deepEqual(summary(events), ['online:first-request']);
    assert.equal(tracker.stats().sweeps, 2);
    await clock.advanceAsync(20);
    await settle();
    assert.deepEqual(summary(events), ['online:first-request', 'offline:lifetime-lapsed']);
    await tracker.close();
    // no sweep after close()
    await clock.advanceAsync(100, 20);
    assert.equal(tracker.stats().sweeps, 3);
    assert.equal(clock.pending, 0);
  });

  it('sweepsCompleted and settled(): observers wait for sweeps, store calls and publishes', async () => {
    const inner = new MemoryPresenceStore();
    const gated = (): { wait: Promise<void>; open: () => void } => {
      let open = (): void => undefined;
      const wait = new Promise<void>((r) => {
        open = r;
      });
      return { wait, open };
    };
    const touchGate = gated();
    const claimGate = gated();
    const publishGate = gated();
    const store: PresenceStore = {
      onlineCount: () => inner.onlineCount(),
      touch: async (t) => {
        await touchGate.wait;
        return inner.touch(t);
      },
      close: (d, sid, token) => inner.close(d, sid, token),
      claimLapsed: async (now, limit, token) => {
        await claimGate.wait;
        return inner.claimLapsed(now, limit, token);
      },
      get: (d) => inner.get(d),
    };
    const published: PresenceEvent[] = [];
    const { tracker } = harness({
      store,
      publish: async (ev) => {
        await publishGate.wait;
        published.push(ev);
      },
    });
    await tracker.settled(); // nothing in flight: at once
    let done = false;
    tracker.seen(principal('s1'));
    const s = tracker.settled().then(() => {
      done = true;
    });
    await settle();
    assert.equal(done, false, 'a store write in flight');
    touchGate.open();
    await settle();
    assert.equal(tracker.stats().events.publishing, 1);
    assert.equal(done, false, 'a publish in flight');
    publishGate.open();
    await s;
    assert.deepEqual(summary(published), ['online:first-request']);

    assert.equal(tracker.sweepsCompleted, 0);
    const sweep = tracker.sweep();
    let swept = false;
    const s2 = tracker.settled().then(() => {
      swept = true;
    });
    await settle();
    assert.equal(tracker.stats().sweeps, 1);
    assert.equal(tracker.sweepsCompleted, 0, 'started, not finished');
    assert.equal(swept, false, 'a sweep in flight');
    claimGate.open();
    await sweep;
    assert.equal(tracker.sweepsCompleted, 1);
    await s2;
    await tracker.sweep();
    assert.equal(tracker.sweepsCompleted, 2);
  });
});
