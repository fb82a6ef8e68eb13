import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { queryObjects } from 'node:v8';

import { Code } from '../../../src/coap/constants.js';
import {
  DedupCache,
  DedupEntry,
  COMPLETE,
  DROPPED,
  IN_PROGRESS,
  SWEEP_BATCH,
} from '../../../src/coap/dedup.js';
import { CoapEndpoint, type CoapReply } from '../../../src/coap/endpoint.js';
import { LinkedQueue, type QueueNode } from '../../../src/coap/linked-queue.js';
import { CoapStats } from '../../../src/coap/stats.js';
import { ManualClock, TimerQueue, type Timed } from '../../../src/time/clock.js';
import { FakePeer, deferred, flush, req } from './exchange-harness.js';
import { COAP_ENDPOINT_DEFAULTS } from '../../helpers/component-defaults.js';
import { countMapLookups } from '../../helpers/map-lookups.js';
import { Rng, settledHeapUsed } from '../../helpers/hostile.js';

/**
 * `found` is the completed entry `e`: the same peer record and message ID, complete, and the
 * same bytes for a duplicate. (A completed entry is no object the cache keeps, so `find`
 * names it with an object of its own rather than returning `e` itself.)
 */
function assertSameCompleted(found: DedupEntry | undefined, e: DedupEntry): void {
  assert.ok(found !== undefined, 'found');
  assert.equal(found.record, e.record);
  assert.equal(found.messageId, e.messageId);
  assert.equal(found.state, COMPLETE);
  assert.equal(e.state, COMPLETE);
  assert.deepEqual(found.bytes, e.bytes);
}

describe('deduplication cache bounds', () => {
  function counting(extra: { dedupMaxEntries?: number; dedupMaxBytes?: number }): {
    ep: CoapEndpoint<string>;
    peer: FakePeer;
    calls: Map<number, number>;
  } {
    const calls = new Map<number, number>();
    const ep = new CoapEndpoint<string>({
      ...COAP_ENDPOINT_DEFAULTS,
      clock: new ManualClock(),
      handler: (r) => {
        calls.set(r.message.messageId, (calls.get(r.message.messageId) ?? 0) + 1);
        return { code: Code.CHANGED, payload: Buffer.alloc(100) };
      },
      ...extra,
    });
    return { ep, peer: new FakePeer(), calls };
  }

  test('the entry cap evicts the oldest entry', () => {
    const { ep, peer, calls } = counting({ dedupMaxEntries: 3 });
    for (let mid = 1; mid <= 4; mid++) ep.receive(peer, req({ mid }));
    assert.equal(ep.stats.dedupEntries, 3);
    assert.equal(ep.stats.dedupEvictions, 1);
    ep.receive(peer, req({ mid: 2 })); // still cached
    assert.equal(calls.get(2), 1);
    ep.receive(peer, req({ mid: 1 })); // evicted: handled as new
    assert.equal(calls.get(1), 2);
  });

  test('the byte cap evicts the oldest entries', () => {
    // each cached ACK: 4 header + 2 token + 1 option (Uri-Path "t") ... about 110 bytes
    const { ep, peer, calls } = counting({ dedupMaxBytes: 250 });
    for (let mid = 1; mid <= 3; mid++) ep.receive(peer, req({ mid }));
    assert.equal(ep.stats.dedupEntries, 2);
    assert.ok(ep.stats.dedupBytes <= 250);
    ep.receive(peer, req({ mid: 1 }));
    assert.equal(calls.get(1), 2, 'the oldest was evicted');
    ep.receive(peer, req({ mid: 3 }));
    assert.equal(calls.get(3), 1);
  });

  test('caps never evict an exchange still in progress', async () => {
    const d = deferred<CoapReply>();
    let calls = 0;
    const ep = new CoapEndpoint<string>({
      ...COAP_ENDPOINT_DEFAULTS,
      clock: new ManualClock(),
      dedupMaxEntries: 1,
      handler: (r) => {
        calls++;
        return r.message.messageId === 1 ? d.promise : { code: Code.CHANGED };
      },
    });
    const peer = new FakePeer();
    ep.receive(peer, req({ mid: 1 }));
    for (let mid = 2; mid < 10; mid++) ep.receive(peer, req({ mid }));
    ep.receive(peer, req({ mid: 1 }));
    assert.equal(calls, 9, 'the duplicate of the running exchange did not reach the handler');
    d.resolve({ code: Code.CHANGED });
    await flush();
  });

  test('DedupCache: find, begin, complete, per-peer message IDs', () => {
    const stats = new CoapStats();
    const c = new DedupCache(
      { maxEntries: 10, maxBytes: 1000, exchangeLifetimeMs: 100, nonLifetimeMs: 50 },
      stats,
      () => 0.5,
    );
    assert.equal(c.find('a', 1, 0), undefined);
    const e = c.begin('a', 1, true, 0);
    assert.equal(e.state, IN_PROGRESS);
    assert.equal(c.find('a', 1, 1000), e, 'in progress never expires');
    c.complete(e, Buffer.alloc(10), 10);
    assert.equal(e.state, COMPLETE);
    assert.equal(stats.dedupBytes, 10);
    assertSameCompleted(c.find('a', 1, 99), e);
    assert.equal(c.find('a', 1, 100), undefined);
    assert.equal(stats.dedupEntries, 0);
    const f = c.begin('b', 1, false, 0);
    assert.equal(c.nextMessageId(f), 0x8001);
    assert.equal(c.nextMessageId(f), 0x8002);
    c.complete(f, undefined, 0);
    c.sweep(49);
    assert.equal(c.size, 1);
    c.sweep(50);
    assert.equal(c.size, 0);
    assert.ok(c.empty);
  });

  function dedup(): { c: DedupCache; stats: CoapStats } {
    const stats = new CoapStats();
    const c = new DedupCache(
      { maxEntries: 10, maxBytes: 1000, exchangeLifetimeMs: 100, nonLifetimeMs: 50 },
      stats,
      () => 0.5,
    );
    return { c, stats };
  }

  test('DedupCache: a request (find, then begin) looks its peer and ID up once', () => {
    const { c } = dedup();
    const first = c.begin('a', 1, true, 0);
    c.complete(first, Buffer.alloc(4), 0);
    const { result: e, keys } = countMapLookups(() => {
      assert.equal(c.find('a', 2, 1), undefined);
      return c.begin('a', 2, true, 1);
    });
    assert.equal(keys.filter((k) => k === 'a').length, 1, 'the peer looked up once');
    // the message ID is looked up in the cache's own table, in no Map
    assert.equal(keys.filter((k) => k === 2).length, 0, 'the message ID in no Map');
    assert.equal(e.record, first.record);
    assert.equal(c.find('a', 2, 2), e);
  });

  test('DedupCache: an entry the cap evicts is unmapped without a lookup', () => {
    // at the cap every completed request evicts the oldest entry (the bench's steady state);
    // a live entry is always its record's entry for its ID, so a delete alone unmaps it
    // (a get to compare first was one more hash lookup per request)
    const { c, stats } = dedup();
    for (let id = 1; id <= 10; id++) c.complete(c.begin('a', id, true, 0), Buffer.alloc(4), 0);
    const oldest = c.find('a', 1, 1);
    assert.ok(oldest !== undefined);
    const other = c.begin('b', 1, true, 1);
    const { keys } = countMapLookups(() => c.complete(other, Buffer.alloc(4), 1));
    assert.deepEqual(keys, [], 'no lookup');
    assert.equal(stats.dedupEvictions, 1);
    assert.equal(oldest.state, DROPPED);
    assert.equal(c.find('a', 1, 2), undefined, 'the evicted ID is forgotten');
    assert.ok(c.find('a', 2, 2) !== undefined, 'the next oldest is kept');
    assert.equal(c.size, 10);
    // a peer whose last entry goes leaves the cache
    for (let id = 2; id <= 10; id++) c.complete(c.begin('c', id, true, 2), Buffer.alloc(4), 2);
    assert.equal(c.find('a', 10, 3), undefined);
    assert.equal(stats.peers, 2);
  });

  test('DedupCache: begin after find stays right when the peer changed in between', () => {
    const { c, stats } = dedup();
    // the expired entry find removes was the peer's last: begin makes a new record
    c.complete(c.begin('a', 1, true, 0), Buffer.alloc(4), 0);
    assert.equal(c.find('a', 1, 100), undefined);
    assert.ok(c.empty);
    const e = c.begin('a', 1, true, 100);
    assert.equal(c.find('a', 1, 101), e);
    assert.equal(stats.peers, 1);
    // the peer dropped between find and begin: the new entry is in the cache, not lost
    c.complete(c.begin('b', 1, true, 0), Buffer.alloc(4), 0);
    assert.equal(c.find('b', 2, 1), undefined);
    c.dropPeer('b');
    const f = c.begin('b', 2, true, 1);
    assert.equal(c.find('b', 2, 2), f);
    // find for one peer or ID, begin for another: looked up as before
    assert.equal(c.find('b', 3, 2), undefined);
    const g = c.begin('a', 3, true, 2);
    assert.equal(c.find('a', 3, 3), g);
    assert.equal(c.find('b', 3, 3), undefined);
    // begin over a live entry of the same ID without a find replaces it
    const h = c.begin('a', 3, true, 4);
    assert.equal(g.state, DROPPED);
    assert.equal(c.find('a', 3, 5), h);
  });
});

describe('deduplication cache: what a completed entry keeps', () => {
  function cache(maxEntries = 100_000, stats = new CoapStats()): DedupCache {
    return new DedupCache(
      { maxEntries, maxBytes: 32 << 20, exchangeLifetimeMs: 1_000, nonLifetimeMs: 500 },
      stats,
      () => 0.5,
    );
  }

  test('a sweep removes a bounded batch of expired entries; the rest go in later sweeps', () => {
    const c = cache();
    const total = 2 * SWEEP_BATCH + 5;
    for (let id = 0; id < total; id++) c.complete(c.begin('a', id, true, 0), Buffer.alloc(4), 0);
    assert.equal(c.sweep(999), false, 'nothing expired yet');
    assert.equal(c.size, total);
    assert.equal(c.sweep(1_000), true, 'more left');
    assert.equal(c.size, total - SWEEP_BATCH);
    assert.equal(c.find('a', total - 1, 1_000), undefined, 'expired entries are absent anyway');
    assert.equal(c.sweep(1_000), true);
    assert.equal(c.sweep(1_000), false);
    assert.equal(c.size, 0);
    assert.ok(c.empty);
  });

  test('the endpoint sweeps a large backlog one batch per timer turn', () => {
    const clock = new ManualClock();
    const ep = new CoapEndpoint<string>({
      ...COAP_ENDPOINT_DEFAULTS,
      clock,
      exchangeLifetimeMs: 1_000,
      sweepIntervalMs: 500,
      handler: () => ({ code: Code.CHANGED }),
    });
    const peer = new FakePeer();
    const total = 2 * SWEEP_BATCH + 5;
    for (let mid = 0; mid < total; mid++) ep.receive(peer, req({ mid }));
    assert.equal(ep.stats.dedupEntries, total);
    clock.advance(1_000);
    assert.equal(ep.stats.dedupEntries, total - SWEEP_BATCH, 'one batch at the due sweep');
    clock.advance(10);
    assert.equal(ep.stats.dedupEntries, 0, 'the rest in the next turns');
    assert.equal(ep.stats.peers, 0);
    assert.equal(clock.pending, 0, 'no timer left when nothing is cached');
  });

  test('a completed entry keeps its answer where it lies, not a Buffer view of its own', () => {
    // the view was ~100 bytes of heap object per request surviving into the old generation
    const stats = new CoapStats();
    const c = cache(10, stats);
    const pool = Buffer.from('0123456789abcdef');
    const answer = pool.subarray(3, 9);
    const e = c.begin('a', 1, true, 0);
    c.complete(e, answer, 0);
    const views = Object.values(e).filter((v) => ArrayBuffer.isView(v));
    assert.deepEqual(views, [], 'no view among its fields');
    assert.equal(e.bytes?.toString(), '345678', 'the same bytes for a duplicate');
    assert.equal(stats.dedupBytes, 6);
    // an empty ACK kept while the handler runs, then nothing for a NON answer
    const f = c.begin('a', 2, true, 0);
    c.acked(f, Buffer.from([0x60, 0, 0, 2]));
    assert.equal(f.bytes?.toString('hex'), '60000002');
    const g = c.begin('a', 3, false, 0);
    c.complete(g, undefined, 0);
    assert.equal(g.bytes, undefined);
    // evicted and dropped entries keep nothing, and the byte count follows
    c.dropPeer('a');
    assert.equal(e.bytes, undefined);
    assert.equal(f.bytes, undefined);
    assert.equal(stats.dedupBytes, 0);
  });

  test('expiries are small integers with a fractional clock, and stay exact', () => {
    // completed entries outlive requests by minutes: whatever they hold is copied by every
    // scavenge and marked by every mark-compact (bench/history/dedup-and-gc.md,
    // "Completed dedup entries without heap objects"); an expiry kept as a fraction
    // (performance.now()) is a heap number each
    const c = cache();
    let now = 5e9 + 0.25; // ~58 days of uptime, in fractional ms
    const e = c.begin('a', 1, true, now);
    assert.ok(Number.isInteger(e.expires) && Math.abs(e.expires) < 2 ** 30, String(e.expires));
    c.complete(e, Buffer.alloc(4), now);
    assertSameCompleted(c.find('a', 1, now + 999.9), e); // alive for its whole lifetime
    assert.equal(c.find('a', 1, now + 1_000.75), undefined, 'gone within 1 ms after it');
    // a later time far past the base moves the base: live entries keep their expiry
    const f = c.begin('b', 1, true, now);
    c.complete(f, Buffer.alloc(4), now);
    now += 0.5;
    const g = c.begin('c', 1, true, now + 2 ** 30);
    assert.ok(Number.isInteger(g.expires) && Math.abs(g.expires) < 2 ** 30, String(g.expires));
    assertSameCompleted(c.find('b', 1, now + 998), f); // the rebased entry is still alive
    assert.equal(c.find('b', 1, now + 1_001), undefined, 'and gone after it');
  });
});

describe('deduplication cache: no heap object per completed entry', () => {
  test('50 000 completed exchanges through the endpoint leave no entry object and ~no heap', async (t) => {
    // Completed entries outlive requests by minutes: whatever object one holds is promoted to
    // the old generation and marked there (bench/history/dedup-and-gc.md, "Completed dedup
    // entries without heap objects").
    // The cache keeps them in typed arrays and its own byte ring instead.
    const N = 50_000;
    const ep = new CoapEndpoint<string>({
      ...COAP_ENDPOINT_DEFAULTS,
      clock: new ManualClock(),
      handler: () => ({ code: Code.CHANGED, payload: Buffer.from('ok') }),
    });
    const peers = Array.from({ length: 100 }, (_, i) => ({
      key: `peer-${i}`,
      principal: 'device',
      send: (): boolean => true,
    }));
    const datagrams = Array.from({ length: N / 100 }, (_, mid) => req({ mid }));
    // the cache's typed arrays grown to their size first: the figure is what entries add
    for (let i = 0; i < N; i++) ep.receive(peers[i % 100]!, datagrams[Math.floor(i / 100)]!);
    ep.close();
    const before = await settledHeapUsed();
    assert.ok(queryObjects(DedupEntry, { format: 'count' }) <= 1);
    const ep2 = new CoapEndpoint<string>({
      ...COAP_ENDPOINT_DEFAULTS,
      clock: new ManualClock(),
      handler: () => ({ code: Code.CHANGED, payload: Buffer.from('ok') }),
    });
    for (let i = 0; i < N; i++) ep2.receive(peers[i % 100]!, datagrams[Math.floor(i / 100)]!);
    assert.equal(ep2.stats.dedupEntries, N);
    const after = await settledHeapUsed();
    const objects = queryObjects(DedupEntry, { format: 'count' });
    const perEntry = (after - before) / N;
    t.diagnostic(`entry objects ${objects}, heap ${perEntry.toFixed(1)} bytes per completed entry`);
    assert.ok(objects <= 1, `${objects} DedupEntry objects alive for ${N} completed entries`);
    // an object per completed entry kept ~120 bytes of heap each; the typed arrays are off it
    assert.ok(perEntry < 16, `${perEntry.toFixed(1)} heap bytes per completed entry`);
    // and the duplicates still get their answers
    const probe = new FakePeer('peer-7');
    ep2.receive(probe, datagrams[3]!);
    assert.equal(probe.take()[0]?.code, Code.CHANGED);
    assert.equal(ep2.stats.duplicateResends, 1);
    ep2.close();
  });

  test('the same answers as a plain model under random traffic (caps, expiry, drops, wraps)', () => {
    // The cache against a model of its semantics in plain maps and an array FIFO: RFC 7252
    // lifetimes from receipt, global caps evicting the oldest completed entry, in-progress
    // entries out of the caps, per-peer drop. Small caps, so the rings wrap, grow and fill.
    againstModel({
      seeds: 12,
      steps: 3000,
      peers: 4,
      ids: 24,
      entries: [1, 12],
      bytes: [40, 300],
      answer: 70,
      lifetime: 100,
    });
  });

  test('the same answers as a plain model while the rings grow and are compacted in place', () => {
    // Caps above the rings' first sizes (256 slots, 16 KiB), many peers and frequent drops:
    // the rings grow while the cache fills, then, full of dead slots, are compacted in place,
    // wrapped or not.
    againstModel({
      seeds: 3,
      steps: 6000,
      peers: 40,
      ids: 400,
      entries: [150, 300],
      bytes: [17_000, 30_000],
      answer: 200,
      lifetime: 5000,
    });
  });
});

/** {@link againstModel}'s traffic: caps drawn from [min, min + spread). */
interface ModelRun {
  seeds: number;
  steps: number;
  peers: number;
  ids: number;
  entries: [number, number];
  bytes: [number, number];
  /** Answers are shorter than this. */
  answer: number;
  /** A CON's lifetime; a NON's is half. */
  lifetime: number;
}

function againstModel(run: ModelRun): void {
  interface M {
    peer: string;
    id: number;
    state: number;
    expires: number;
    bytes: Buffer | undefined;
  }
  for (let seed = 1; seed <= run.seeds; seed++) {
    const rng = new Rng(seed);
    const maxEntries = run.entries[0] + rng.int(run.entries[1]);
    const maxBytes = run.bytes[0] + rng.int(run.bytes[1]);
    const limits = {
      maxEntries,
      maxBytes,
      exchangeLifetimeMs: run.lifetime,
      nonLifetimeMs: run.lifetime / 2,
    };
    const stats = new CoapStats();
    const c = new DedupCache(limits, stats, () => 0.5);
    const model = new Map<string, M>();
    const fifo: M[] = [];
    let evictions = 0;
    let bytes = 0;
    const keyOf = (peer: string, id: number): string => `${peer}/${id}`;
    const removeM = (m: M): void => {
      model.delete(keyOf(m.peer, m.id));
      const at = fifo.indexOf(m);
      if (at >= 0) {
        fifo.splice(at, 1);
        bytes -= m.bytes?.length ?? 0;
      }
      m.state = DROPPED;
    };
    const open: [DedupEntry, M][] = [];
    let now = 0;
    for (let step = 0; step < run.steps; step++) {
      now += rng.int(4);
      const peer = `p${rng.int(run.peers)}`;
      const id = rng.int(run.ids);
      const op = rng.int(10);
      if (op < 4) {
        // a request: find, then begin when new
        const m = model.get(keyOf(peer, id));
        const live = m !== undefined && (m.state !== COMPLETE || m.expires > now);
        if (m !== undefined && !live) removeM(m);
        const e = c.find(peer, id, now);
        assert.equal(e !== undefined, live, `seed ${seed} step ${step}: found`);
        if (e !== undefined && m !== undefined) {
          assert.equal(e.state, m.state);
          assert.deepEqual(e.bytes, m.bytes, `seed ${seed} step ${step}: bytes`);
          continue;
        }
        const con = rng.int(3) > 0;
        const fresh: M = {
          peer,
          id,
          state: IN_PROGRESS,
          expires: now + (con ? run.lifetime : run.lifetime / 2),
          bytes: undefined,
        };
        model.set(keyOf(peer, id), fresh);
        open.push([c.begin(peer, id, con, now), fresh]);
      } else if (op < 8 && open.length > 0) {
        // an exchange completes (in any order), sometimes after an empty ACK
        const [e, m] = open.splice(rng.int(open.length), 1)[0]!;
        if (rng.int(5) === 0) {
          c.acked(e, Buffer.from([0x60, 0, 0, m.id]));
          if (m.state === IN_PROGRESS) {
            m.state = 1;
            m.bytes = Buffer.from([0x60, 0, 0, m.id]);
          }
        }
        const r = rng.int(6);
        const answer =
          r === 0
            ? undefined
            : Buffer.from(Array.from({ length: rng.int(run.answer) }, () => rng.int(256)));
        c.complete(e, answer, now);
        if (m.state !== DROPPED) {
          m.state = COMPLETE;
          m.bytes = answer;
          if (m.expires <= now) removeM(m);
          else {
            fifo.push(m);
            bytes += answer?.length ?? 0;
            while (fifo.length > maxEntries || bytes > maxBytes) {
              removeM(fifo[0]!);
              evictions++;
            }
          }
        }
        assert.equal(e.state, m.state, `seed ${seed} step ${step}: state after complete`);
      } else if (op === 8) {
        c.sweep(now);
        while (fifo.length > 0 && fifo[0]!.expires <= now) removeM(fifo[0]!);
      } else {
        c.dropPeer(peer);
        for (const m of [...model.values()]) if (m.peer === peer) removeM(m);
      }
      assert.equal(stats.dedupEntries, fifo.length, `seed ${seed} step ${step}: entries`);
      assert.equal(stats.dedupBytes, bytes, `seed ${seed} step ${step}: bytes`);
      assert.equal(stats.dedupEvictions, evictions, `seed ${seed} step ${step}: evictions`);
      assert.equal(stats.peers, new Set([...model.values()].map((m) => m.peer)).size);
      for (const [e, m] of open) assert.equal(e.state, m.state, `seed ${seed}: open state`);
    }
  }
}

describe('TimerQueue', () => {
  class T implements Timed {
    dueAt = 0;
    heapIndex = -1;
    constructor(
      readonly name: string,
      readonly log: string[],
    ) {}
    onTimer(now: number): void {
      this.log.push(`${this.name}@${now}`);
    }
  }

  test('fires in deadline order from one host timer; cancel and reschedule work', () => {
    const clock = new ManualClock();
    const q = new TimerQueue(clock);
    const log: string[] = [];
    const ts = ['a', 'b', 'c', 'd', 'e', 'f'].map((n) => new T(n, log));
    const [a, b, c, d, e, f] = ts as [T, T, T, T, T, T];
    q.schedule(a, 50);
    q.schedule(b, 10);
    q.schedule(c, 30);
    q.schedule(d, 20);
    q.schedule(e, 40);
    q.schedule(f, 5);
    assert.equal(clock.pending, 1, 'one host timer');
    q.cancel(c);
    q.schedule(a, 15);
    q.schedule(f, 45);
    assert.equal(q.size, 5);
    clock.advance(100);
    assert.deepEqual(log, ['b@10', 'a@15', 'd@20', 'e@40', 'f@45']);
    assert.equal(q.size, 0);
    assert.equal(clock.pending, 0);
  });

  test('cancelling the last scheduled object stops the host timer', () => {
    const clock = new ManualClock();
    const q = new TimerQueue(clock, true);
    const log: string[] = [];
    const [a, b] = [new T('a', log), new T('b', log)];
    q.schedule(a, 50);
    q.schedule(b, 10);
    q.cancel(b);
    assert.equal(clock.pending, 1, 'still armed for a');
    q.cancel(a);
    assert.equal(clock.pending, 0, 'nothing left: no host timer');
    clock.advance(100);
    assert.deepEqual(log, []);
  });

  test('a timer may reschedule itself from onTimer; clear stops everything', () => {
    const clock = new ManualClock();
    const q = new TimerQueue(clock);
    let n = 0;
    const t: Timed = {
      dueAt: 0,
      heapIndex: -1,
      onTimer(now) {
        n++;
        if (n < 3) q.schedule(t, now + 10);
      },
    };
    q.schedule(t, 10);
    clock.advance(100);
    assert.equal(n, 3);
    q.schedule(t, 200);
    q.clear();
    clock.advance(1000);
    assert.equal(n, 3);
    assert.equal(clock.pending, 0);
  });

  test('random schedules and cancels keep heap order', () => {
    const clock = new ManualClock();
    const q = new TimerQueue(clock);
    const log: string[] = [];
    const ts = Array.from({ length: 200 }, (_, i) => new T(String(i), log));
    let seed = 7;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (const t of ts) q.schedule(t, 1 + Math.floor(rnd() * 1000));
    for (let i = 0; i < 50; i++) {
      const t = ts[Math.floor(rnd() * ts.length)];
      if (t !== undefined) q.cancel(t);
    }
    const expected = ts
      .filter((t) => t.heapIndex >= 0)
      .sort((x, y) => x.dueAt - y.dueAt)
      .map((t) => t.dueAt);
    const fired: number[] = [];
    for (const t of ts) {
      const orig = t.onTimer.bind(t);
      t.onTimer = (now) => {
        fired.push(t.dueAt);
        orig(now);
      };
    }
    clock.advance(2000);
    assert.deepEqual(fired, expected);
  });
});

describe('LinkedQueue', () => {
  class N implements QueueNode<N> {
    prev: N | undefined = undefined;
    next: N | undefined = undefined;
    constructor(readonly v: number) {}
  }
  const items = (q: LinkedQueue<N>): number[] => {
    const out: number[] = [];
    for (let n = q.head; n !== undefined; n = n.next) out.push(n.v);
    return out;
  };

  test('push, remove, touch, clear', () => {
    const q = new LinkedQueue<N>();
    const ns = [1, 2, 3, 4].map((v) => new N(v));
    for (const n of ns) q.push(n);
    assert.deepEqual(items(q), [1, 2, 3, 4]);
    q.remove(ns[1] as N);
    q.remove(ns[1] as N);
    assert.deepEqual(items(q), [1, 3, 4]);
    q.touch(ns[0] as N);
    assert.deepEqual(items(q), [3, 4, 1]);
    q.remove(ns[2] as N);
    q.remove(ns[0] as N);
    assert.deepEqual(items(q), [4]);
    assert.equal(q.size, 1);
    assert.equal(q.tail, ns[3]);
    q.clear();
    assert.equal(q.size, 0);
    assert.equal(q.has(ns[3] as N), false);
  });
});

describe('whenIdle (what a drain waits for)', () => {
  test('resolves once the exchange in flight is answered, and at once when nothing is', async () => {
    const d = deferred<CoapReply>();
    const ep = new CoapEndpoint<string>({
      ...COAP_ENDPOINT_DEFAULTS,
      clock: new ManualClock(),
      handler: () => d.promise,
    });
    await ep.whenIdle(); // nothing in flight
    const peer = new FakePeer();
    ep.receive(peer, req({ mid: 7 }));
    let idle = false;
    void ep.whenIdle().then(() => {
      idle = true;
    });
    await flush();
    assert.equal(idle, false, 'an exchange is in flight');
    d.resolve({ code: Code.CHANGED });
    await flush();
    assert.equal(idle, true);
    ep.close();
  });
});
