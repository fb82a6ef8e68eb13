/**
 * The Redis presence store against late news: a touch that reaches the store after another
 * pod's sweeper claimed the device (src/bridge/presence/redis-store.ts, "touch"). News that
 * had lapsed by the claim changes nothing (`lapsed`); news still within its lifetime at the
 * claim, and a new session after it, make the device online again.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { RedisPresenceStore, type TouchRequest } from '../../../src/bridge/presence/index.js';
import { prefix, SHARED_REDIS, T0 } from './helpers.js';

const DEVICE = { productKey: 'pk', deviceKey: 'dk' };

describe('presence in Redis: a touch after a claim', () => {
  const p = prefix();
  let client: Redis;
  let store: RedisPresenceStore;

  before(() => {
    client = new Redis(SHARED_REDIS);
    store = new RedisPresenceStore({ client, prefix: p });
  });
  after(async () => {
    const keys = await client.keys(`${p}:*`);
    if (keys.length > 0) await client.del(...keys);
    client.disconnect();
  });

  const touch = (sessionId: string, seenAt: number, token: string): TouchRequest => ({
    device: DEVICE,
    sessionId,
    lifetime: 1,
    seenAt,
    deadline: seenAt + 1_000,
    token,
  });

  it('late news lapsed by the claim: nothing; within its lifetime, or a new session: online', async () => {
    assert.equal((await store.touch(touch('s1', T0, 't1'))).kind, 'online');
    const claimed = await store.claimLapsed(T0 + 2_000, 10, 'c1');
    assert.deepEqual(
      claimed.map((l) => l.deadline),
      [T0 + 1_000],
    );

    // a pod's news of a request at T0 + 0.5 s (deadline T0 + 1.5 s), written after the claim
    assert.deepEqual(await store.touch(touch('s1', T0 + 500, 't2')), { kind: 'lapsed' });
    assert.equal(await store.get(DEVICE), undefined);
    assert.equal(await store.onlineCount(), 0);
    // its retry learns the same
    assert.deepEqual(await store.touch(touch('s1', T0 + 500, 't2')), { kind: 'lapsed' });

    // news of a request at T0 + 1.5 s (deadline T0 + 2.5 s): the claim at T0 + 2 s was early
    const corrected = await store.touch(touch('s1', T0 + 1_500, 't3'));
    assert.equal(corrected.kind, 'online');
    assert.equal((await store.get(DEVICE))?.deadline, T0 + 2_500);

    // claimed again; then a new session after the claim
    assert.equal((await store.claimLapsed(T0 + 3_000, 10, 'c2')).length, 1);
    assert.equal((await store.touch(touch('s2', T0 + 3_100, 't4'))).kind, 'online');
    assert.equal((await store.get(DEVICE))?.sessionId, 's2');
  });

  it('without a claim (first seen while Redis was away, lapsed since): online as before', async () => {
    const other = { productKey: 'pk', deviceKey: 'never-claimed' };
    const r = await store.touch({ ...touch('s9', T0, 't9'), device: other });
    assert.equal(r.kind, 'online');
    const claimed = await store.claimLapsed(T0 + 5_000, 10, 'c9');
    assert.ok(claimed.some((l) => l.device.deviceKey === 'never-claimed'));
  });
});
