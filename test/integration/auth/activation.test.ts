/**
 * One-shot activation against a real registry and a real Redis (and with the devices file):
 * one upstream activation per device, every repeat refused on every pod, secureMode 2 marks
 * shared through Redis, the refusals, and what happens when the registry's answer is lost.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import { DevicesFile } from '../../../src/auth/devices-file.js';
import { RedisActivationStore } from '../../../src/auth/activation-store.js';
import { PskResolver } from '../../../src/auth/psk-resolver.js';
import { RedisConnection } from '../../../src/auth/redis-connection.js';
import { RedisKeys } from '../../../src/auth/redis-keys.js';
import { AuthStats } from '../../../src/auth/stats.js';
import { createSecretStack, type SecretStack } from '../../../src/auth/stack.js';
import { derivePsk } from '../../../src/enos/index.js';
import { ManualClock } from '../../../src/time/clock.js';
import { UNREACHED_DEADLINE_MS } from '../../helpers/clock.js';
import { REDIS_COMMAND_TIMEOUT_MS } from '../../helpers/component-defaults.js';
import { FakeRegistry, RedisServer, prefix, stackOptions, startStack, waitFor } from './helpers.js';

const file = DevicesFile.fromObject({
  products: [
    { productKey: 'dyn', productSecret: 'P-dyn', dynamicRegistration: true },
    { productKey: 'fixed', productSecret: 'P-fixed' },
  ],
  devices: [
    { productKey: 'dyn', deviceKey: 'listed', deviceSecret: 'listed-S3CRET' },
    { productKey: 'dyn', deviceKey: 'listed2', deviceSecret: 'listed2-S3CRET' },
  ],
});

describe('activation', () => {
  let redis: RedisServer;
  let registry: FakeRegistry;
  let check: Redis;
  const stacks: SecretStack[] = [];

  async function stack(o: {
    redisPrefix: string;
    registry?: boolean;
    file?: boolean;
    registryTimeoutMs?: number;
    waitReplicas?: number;
    clock?: ManualClock;
  }) {
    const s = await startStack(
      stackOptions({
        redisPrefix: o.redisPrefix,
        registryTimeoutMs: o.registryTimeoutMs ?? 1_000,
        clock: o.clock,
        redisUrl: redis.url,
        registryUrl: o.registry === false ? undefined : registry.url,
        devicesFile: o.file === true ? file : undefined,
        redisWaitReplicas: o.waitReplicas,
      }),
    );
    stacks.push(s);
    return s;
  }

  before(async () => {
    redis = await RedisServer.start();
    registry = await FakeRegistry.start();
    registry.products.set('dyn', { productSecret: 'P-dyn', dynamicRegistration: true });
    registry.products.set('fixed', { productSecret: 'P-fixed', dynamicRegistration: false });
    check = redis.client();
  });

  after(async () => {
    await Promise.all(stacks.map((s) => s.close()));
    check.disconnect();
    await registry.close();
    await redis.stop();
  });

  const refused = { ok: false, reason: 'already-activated' } as const;

  it('activates upstream once; repeats on any pod are refused; the secret is found in Redis', async () => {
    const p = prefix();
    const a = await stack({ redisPrefix: p });
    const first = await a.activator.activate('dyn', 'd1');
    assert.ok(first.ok);
    assert.equal(first.assetId, 'A-d1');
    assert.equal(first.deviceSecret, registry.devices.get('dyn/d1')?.deviceSecret);
    assert.deepEqual(await a.activator.activate('dyn', 'd1'), refused);
    assert.equal(registry.count('/devices/dyn/d1/activate', 'POST'), 1);

    const key = `${p}:activation:{dyn/d1}`;
    assert.equal(await check.ttl(key), -1, 'activations do not expire');
    const stored = JSON.parse((await check.get(key)) ?? '') as Record<string, unknown>;
    assert.equal(stored.deviceSecret, first.deviceSecret);
    assert.equal(stored.source, 'registry');

    const b = await stack({ redisPrefix: p });
    assert.deepEqual(await b.activator.activate('dyn', 'd1'), refused);
    assert.equal(registry.count('/devices/dyn/d1/activate', 'POST'), 1, 'registry not asked');
    assert.equal(b.stats.activations['already-activated'], 1);

    // secureMode 2 on the second pod: found through the activation key, no registry call
    const hits = b.stats.lookups.activation.hit;
    const resolved = await new PskResolver(b.source).resolve(Buffer.from('dyn,d1,2,300'));
    assert.ok(resolved.ok);
    assert.deepEqual(resolved.psk, derivePsk(first.deviceSecret));
    assert.equal(b.stats.lookups.activation.hit, hits + 1);
    assert.equal(registry.count('/devices/dyn/d1'), 0);
    // and on the first pod from memory
    const local = new PskResolver(a.source).resolve(Buffer.from('dyn,d1,2,300'));
    assert.ok(!(local instanceof Promise) && local.ok);
  });

  it('concurrent activations on two pods: one gets the secret, the rest are refused', async () => {
    const p = prefix();
    const a = await stack({ redisPrefix: p });
    const b = await stack({ redisPrefix: p });
    const results = await Promise.all([
      ...Array.from({ length: 10 }, () => a.activator.activate('dyn', 'race')),
      ...Array.from({ length: 10 }, () => b.activator.activate('dyn', 'race')),
    ]);
    const granted = results.filter((r) => r.ok);
    assert.equal(granted.length, 1);
    assert.equal(granted[0]?.deviceSecret, registry.devices.get('dyn/race')?.deviceSecret);
    for (const r of results) if (!r.ok) assert.equal(r.reason, 'already-activated');
    assert.equal(registry.count('/devices/dyn/race'), 0, 'no secret read back');
  });

  it('a secureMode 2 mark on one pod refuses activation on another; it holds no secret', async () => {
    const p = prefix();
    registry.devices.set('dyn/m2', { deviceSecret: 'm2-S3CRET', assetId: 'A-m2' });
    const a = await stack({ redisPrefix: p });
    const b = await stack({ redisPrefix: p });
    a.activator.connected('dyn', 'm2');
    const key = `${p}:activation:{dyn/m2}`;
    await waitFor(async () => (await check.exists(key)) === 1, 'the mark in Redis');
    const text = (await check.get(key)) ?? '';
    assert.doesNotMatch(text, /S3CRET|deviceSecret/);
    assert.equal(await check.ttl(key), -1, 'marks do not expire');
    assert.deepEqual(await b.activator.activate('dyn', 'm2'), refused);
    assert.equal(registry.count('/devices/dyn/m2/activate', 'POST'), 0);
    // the mark is passed over by secureMode 2 lookups: the registry gives the secret
    assert.equal((await b.source.device('dyn', 'm2'))?.deviceSecret, 'm2-S3CRET');
    // the mark is written once per pod
    a.activator.connected('dyn', 'm2');
    await check.del(key);
    a.activator.connected('dyn', 'm2');
    // another device's mark, written after: the pod's writes to Redis keep their order
    a.activator.connected('dyn', 'm2-later');
    const later = `${p}:activation:{dyn/m2-later}`;
    await waitFor(async () => (await check.exists(later)) === 1, 'the later mark');
    assert.equal(await check.exists(key), 0, 'known to the pod: not written again');
  });

  it('refuses products without dynamic registration, and unknown products', async () => {
    const a = await stack({ redisPrefix: prefix() });
    assert.deepEqual(await a.activator.activate('fixed', 'd'), {
      ok: false,
      reason: 'dynamic-registration-disabled',
    });
    assert.deepEqual(await a.activator.activate('nope', 'd'), {
      ok: false,
      reason: 'unknown-product',
    });
    assert.equal(registry.count('/devices/fixed/d/activate', 'POST'), 0);
    assert.equal(registry.count('/devices/nope/d/activate', 'POST'), 0);
    assert.equal(a.stats.activations['dynamic-registration-disabled'], 1);
    assert.equal(a.stats.activations['unknown-product'], 1);
  });

  it('a registry answer lost on the way (timeout): the retry gets 409, which is final', async () => {
    // the deadline runs on the stack's clock (undici's own timeouts, as long, are never reached)
    const clock = new ManualClock();
    const a = await stack({
      redisPrefix: prefix(),
      registryTimeoutMs: UNREACHED_DEADLINE_MS,
      clock,
    });
    registry.hangNextActivation = true;
    const lost = a.activator.activate('dyn', 'lost');
    await waitFor(
      () => registry.count('/devices/dyn/lost/activate', 'POST') === 1,
      'the activation at the registry',
    );
    clock.advance(UNREACHED_DEADLINE_MS);
    assert.deepEqual(await lost, {
      ok: false,
      reason: 'unavailable',
    });
    assert.ok(registry.devices.get('dyn/lost') !== undefined, 'the registry did activate');
    assert.deepEqual(await a.activator.activate('dyn', 'lost'), refused);
    assert.equal(registry.count('/devices/dyn/lost/activate', 'POST'), 2);
    assert.equal(registry.count('/devices/dyn/lost'), 0, 'the secret is never read back');
  });

  it('Redis + devices file: a listed device is activated once across pods; no secret is made up', async () => {
    const p = prefix();
    const a = await stack({ redisPrefix: p, registry: false, file: true });
    const b = await stack({ redisPrefix: p, registry: false, file: true });
    assert.deepEqual(await a.activator.activate('dyn', 'listed'), {
      ok: true,
      deviceSecret: 'listed-S3CRET',
      assetId: '',
    });
    assert.deepEqual(await b.activator.activate('dyn', 'listed'), refused);
    assert.deepEqual(await b.activator.activate('dyn', 'fresh'), {
      ok: false,
      reason: 'unknown-device',
    });
    assert.equal(await check.exists(`${p}:activation:{dyn/fresh}`), 0);
    assert.equal(await b.source.device('dyn', 'fresh'), undefined);
    assert.equal(a.stats.activations.file, 1);
    assert.equal(b.stats.activations['unknown-device'], 1);
  });

  it('a claim written but not confirmed by a replica (WAIT) is released: the retry is not refused as activated', async () => {
    // this Redis has no replica: WAIT answers 0 after the claim was written on it, as when a
    // master crashes between the write and the replicas' confirmation
    const p = prefix();
    const a = await stack({ redisPrefix: p, registry: false, file: true, waitReplicas: 1 });
    const unavailable = { ok: false, reason: 'unavailable' } as const;
    assert.deepEqual(await a.activator.activate('dyn', 'listed2'), unavailable);
    assert.equal(await check.exists(`${p}:activation:{dyn/listed2}`), 0, 'the claim is gone');
    assert.equal(a.stats.activationsReleased, 1);
    // the device's retry meets the same refusal, not "already activated"
    assert.deepEqual(await a.activator.activate('dyn', 'listed2'), unavailable);
    assert.equal(a.stats.activationsReleased, 2);
    // and once the store confirms writes, the device gets its secret
    const b = await stack({ redisPrefix: p, registry: false, file: true });
    assert.deepEqual(await b.activator.activate('dyn', 'listed2'), {
      ok: true,
      deviceSecret: 'listed2-S3CRET',
      assetId: '',
    });
  });

  it('secret lookups are not held up behind claims waiting for replicas (WAIT holds its connection)', async () => {
    // this Redis has no replica: every WAIT runs to its timeout (240 ms of 300)
    const p = prefix();
    const a = await stack({ redisPrefix: p, registry: false, file: true, waitReplicas: 1 });
    await check.set(`${p}:device:{dyn/cached}`, '{"deviceSecret":"cached-S3CRET"}');
    // two claims, sent together, each refused after its WAIT (and released)
    const activations = ['listed', 'listed2'].map((dk) => a.activator.activate('dyn', dk));
    await waitFor(
      async () => (await check.exists(`${p}:activation:{dyn/listed}`)) === 1,
      'the first claim written',
    );
    const hits = a.stats.lookups.redis.hit;
    assert.equal((await a.source.device('dyn', 'cached'))?.deviceSecret, 'cached-S3CRET');
    assert.equal(a.stats.lookups.redis.hit, hits + 1, 'Redis answered');
    assert.deepEqual(
      (await Promise.all(activations)).map((r) => r.ok),
      [false, false],
    );
  });

  /** A RedisActivationStore of its own for `fn`. */
  async function withStore(
    p: string,
    fn: (store: RedisActivationStore) => Promise<void>,
  ): Promise<void> {
    const conn = new RedisConnection({
      url: redis.url,
      stats: new AuthStats(),
      commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS,
    });
    try {
      await waitFor(() => conn.state === 'connected', 'connection');
      await fn(new RedisActivationStore(conn, new RedisKeys(p)));
    } finally {
      conn.close();
    }
  }

  const entry = {
    deviceSecret: 'x-S3CRET',
    assetId: '',
    source: 'file',
    activatedAt: 'now',
    claimId: 'c1',
  } as const;

  it('a release removes its own entry only', async () => {
    const p = prefix();
    await withStore(p, async (store) => {
      assert.equal(await store.claim('dyn', 'x', entry), true);
      assert.equal(await store.release('dyn', 'x', { ...entry, claimId: 'c2' }), false);
      assert.equal(await check.exists(`${p}:activation:{dyn/x}`), 1);
      assert.equal(await store.release('dyn', 'x', entry), true);
      assert.equal(await check.exists(`${p}:activation:{dyn/x}`), 0);
    });
  });

  it('a claim sent again after it ran (a cluster client retrying it) is its own; another is refused', async () => {
    const p = prefix();
    await withStore(p, async (store) => {
      assert.equal(await store.claim('dyn', 'y', entry), true);
      assert.equal(await store.claim('dyn', 'y', entry), true, 'the same claim again');
      assert.equal(await store.claim('dyn', 'y', { ...entry, claimId: 'c2' }), false);
      assert.equal(await store.claim('dyn', 'y', { ...entry, claimId: undefined }), false);
      assert.equal(await store.claim('dyn', 'y', { mark: 'connected', connectedAt: 'now' }), false);
    });
  });

  it('an activation under the key layout before hash tags is honoured and carried forward', async () => {
    const p = prefix();
    // written by an older version: `{prefix}:activation:{pk}:{dk}`, no hash tag
    const old = {
      deviceSecret: 'listed-S3CRET',
      assetId: '',
      source: 'file',
      activatedAt: '2026-01-01T00:00:00.000Z',
    };
    await check.set(`${p}:activation:dyn:listed`, JSON.stringify(old));
    await check.set(`${p}:activation:dyn:listed2`, JSON.stringify(old));
    const a = await stack({ redisPrefix: p, registry: false, file: true });
    assert.deepEqual(await a.activator.activate('dyn', 'listed'), refused);
    assert.equal(await check.get(`${p}:activation:{dyn/listed}`), JSON.stringify(old));
    // a secureMode 2 connection does not hide the old activation behind a new mark
    a.activator.connected('dyn', 'listed2');
    await waitFor(
      async () => (await check.exists(`${p}:activation:{dyn/listed2}`)) === 1,
      'carried forward',
    );
    assert.equal(await check.get(`${p}:activation:{dyn/listed2}`), JSON.stringify(old));
    assert.equal(a.stats.activations.file, 0);
  });

  it('devices file only: a listed device once, an unlisted one never', async () => {
    const s = createSecretStack(stackOptions({ redisPrefix: prefix(), devicesFile: file }));
    stacks.push(s);
    assert.equal(s.redisState(), 'off');
    assert.ok((await s.activator.activate('dyn', 'listed')).ok);
    assert.deepEqual(await s.activator.activate('dyn', 'listed'), refused);
    assert.deepEqual(await s.activator.activate('dyn', 'solo'), {
      ok: false,
      reason: 'unknown-device',
    });
    assert.equal(s.source.device('dyn', 'solo'), undefined);
    // connected in secureMode 2: refused from then on
    s.activator.connected('dyn', 'listed2');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(await s.activator.activate('dyn', 'listed2'), refused);
    assert.deepEqual(await s.activator.activate('fixed', 'solo'), {
      ok: false,
      reason: 'dynamic-registration-disabled',
    });
  });
});
