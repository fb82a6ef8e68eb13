/**
 * Presence with a redis-server of this test's own: stopped (requests unaffected, transitions
 * caught up once it is back) and paused (answers lost to the command timeout after Redis
 * applied the script: the retry with the same token recovers the transition, once).
 */
import { clockReading, UNREACHED_DEADLINE_MS } from '../../helpers/clock.js';
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import {
  byDevice,
  Clock,
  prefix,
  principal,
  RedisServer,
  settled,
  startPod,
  waitFor,
  type Pod,
} from './helpers.js';

describe('presence: Redis faults', () => {
  let redis: RedisServer;
  let admin: Redis;
  const pods: Pod[] = [];

  before(async () => {
    redis = await RedisServer.start();
    admin = redis.client();
    admin.on('error', () => {});
  });

  afterEach(async () => {
    await Promise.all(pods.splice(0).map((p) => p.close()));
    // a test that failed while the server was stopped must not break the next ones
    if (redis.pid === undefined) await redis.restart();
  });

  after(async () => {
    admin.disconnect();
    await redis.stop();
  });

  async function two(o: Parameters<typeof startPod>[3] = {}) {
    const p = prefix();
    const clock = new Clock();
    const a = await startPod('a', redis.url, p, {
      clock: clockReading(clock.now),
      retryMs: 500,
      ...o,
    });
    const b = await startPod('b', redis.url, p, {
      clock: clockReading(clock.now),
      retryMs: 500,
      ...o,
    });
    pods.push(a, b);
    return { a, b, clock, p, all: () => [...a.events, ...b.events] };
  }

  /** Blocks every client of the server for `ms` (commands wait, then run). */
  async function pause(ms: number): Promise<void> {
    await admin.call('CLIENT', 'PAUSE', String(ms), 'ALL');
  }

  /** Only writes wait (a claim reads its candidates first, then runs the script). */
  async function pauseWrites(ms: number): Promise<void> {
    await admin.call('CLIENT', 'PAUSE', String(ms), 'WRITE');
  }

  /** Resolves when a pause has ended: a write of another client waits for it (a probe). */
  async function pauseEnded(): Promise<void> {
    await admin.call('SET', `presence-faults-probe:${process.pid}`, '1', 'PX', '1000');
  }

  it('Redis stopped: no exception, requests unaffected; transitions catch up once it is back', async () => {
    // commands never time out here: a request or sweep that waited for Redis while it is down
    // (instead of failing at once, the client keeping no offline queue) would hang the file
    const { a, b, clock, all } = await two({ commandTimeoutMs: UNREACHED_DEADLINE_MS });
    a.tracker.seen(principal('s0', 'before'));
    await waitFor(() => all().length === 1, 'online before the outage');

    await redis.stop();
    await waitFor(
      () => a.conn.state === 'down' && b.conn.state === 'down',
      'both connections down',
    );
    // a request's presence work is synchronous: nothing a request could wait for
    const returned = new Set<unknown>();
    for (let i = 0; i < 1_000; i++) {
      returned.add(a.tracker.seen(principal('s1', 'during')));
      returned.add(b.tracker.seen(principal('s2', 'during')));
      returned.add(a.tracker.seen(principal('s0', 'before')));
    }
    returned.add(a.tracker.sessionClosed(principal('s9', 'other'), 'close-notify'));
    assert.deepEqual([...returned], [undefined], 'no promise handed to a request');
    clock.advance(600);
    // settles without a command timeout to end it (above): a sweep does not hang
    await Promise.all([a.tracker.sweep(), b.tracker.sweep()]);
    await settled(a, b);
    assert.equal(all().length, 1, 'nothing decided while Redis is away');
    assert.equal(a.tracker.stats().storeAvailable, false);
    assert.ok(a.tracker.stats().storeErrors > 0);
    assert.ok(b.tracker.stats().storeErrors > 0);
    assert.ok(a.tracker.stats().storeWrites < 10, 'no write per request while down');

    // back (empty: this server keeps nothing on disk)
    await redis.restart();
    await waitFor(
      () => a.conn.state === 'connected' && b.conn.state === 'connected',
      'reconnected',
    );
    clock.advance(600);
    await Promise.all([a.tracker.sweep(), b.tracker.sweep()]);
    await waitFor(() => byDevice(all()).during !== undefined, 'catch-up');
    await settled(a, b);
    assert.deepEqual(byDevice(all()).during, ['online:first-request'], 'one online for both pods');
    assert.equal(a.tracker.stats().storeAvailable, true);
    assert.equal(a.tracker.stats().pendingCloses, 0);
  });

  it('a touch applied but answered too late: the retry publishes its online, once', async () => {
    const { a, b, clock, all } = await two({ commandTimeoutMs: 150 });
    await pause(500);
    a.tracker.seen(principal('s1'));
    await waitFor(() => a.tracker.stats().storeErrors === 1, 'touch timed out');
    await pauseEnded(); // the GET below follows the paused script on a's connection
    assert.ok((await a.store.get({ productKey: 'pk', deviceKey: 'dk' })) !== undefined, 'applied');
    b.tracker.seen(principal('s1'));
    await settled(a, b);
    assert.equal(all().length, 0, 'b only refreshed');
    clock.advance(500);
    await a.tracker.sweep(); // retries the write with the same token
    await waitFor(() => all().length === 1, 'online');
    await settled(a, b);
    assert.deepEqual(byDevice(all()), { dk: ['online:first-request'] });
    assert.equal(a.events.length, 1);
  });

  it('a claim applied but answered too late: the retry publishes its offline, once', async () => {
    const { a, b, clock, all } = await two({ commandTimeoutMs: 150 });
    a.tracker.seen(principal('s1'));
    await waitFor(() => all().length === 1, 'online');
    clock.advance(31_000);
    await pauseWrites(500);
    await a.tracker.sweep(); // the claim script times out
    assert.ok(a.tracker.stats().storeErrors >= 1);
    await pauseEnded();
    await b.tracker.sweep(); // nothing left to claim
    await settled(a, b);
    assert.equal(all().length, 1);
    await a.tracker.sweep(); // same token: learns what it claimed
    await waitFor(() => all().length === 2, 'offline');
    await settled(a, b);
    assert.deepEqual(byDevice(all()), { dk: ['online:first-request', 'offline:lifetime-lapsed'] });
  });

  it('a close applied but answered too late: the retry publishes its offline, once', async () => {
    const { a, clock, all } = await two({ commandTimeoutMs: 150 });
    a.tracker.seen(principal('s1'));
    await waitFor(() => all().length === 1, 'online');
    await pause(500);
    a.tracker.sessionClosed(principal('s1'), 'close-notify');
    await waitFor(() => a.tracker.stats().pendingCloses === 1, 'close waits');
    await pauseEnded();
    assert.equal(await a.store.get({ productKey: 'pk', deviceKey: 'dk' }), undefined, 'applied');
    clock.advance(500);
    await a.tracker.sweep();
    await waitFor(() => all().length === 2, 'offline');
    assert.deepEqual(byDevice(all()), { dk: ['online:first-request', 'offline:close-notify'] });
    assert.equal(a.tracker.stats().pendingCloses, 0);
  });
});
