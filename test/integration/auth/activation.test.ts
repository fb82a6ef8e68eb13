/**
 * Activation against a real registry and a real Redis (and with the devices file): one
 * upstream activation per device, the same secret on every repeat and from every pod, the
 * refusals, and recovery when an activation's answer was lost.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import { DevicesFile } from '../../../src/auth/devices-file.js';
import { PskResolver } from '../../../src/auth/psk-resolver.js';
import { createSecretStack, type SecretStack } from '../../../src/auth/stack.js';
import { derivePsk } from '../../../src/enos/index.js';
import { FakeRegistry, RedisServer, prefix, stackOptions, startStack } from './helpers.js';

const file = DevicesFile.fromObject({
  products: [
    { productKey: 'dyn', productSecret: 'P-dyn', dynamicRegistration: true },
    { productKey: 'fixed', productSecret: 'P-fixed' },
  ],
  devices: [{ productKey: 'dyn', deviceKey: 'listed', deviceSecret: 'listed-S3CRET' }],
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
  }) {
    const s = await startStack(
      stackOptions({
        redisPrefix: o.redisPrefix,
        registryTimeoutMs: o.registryTimeoutMs ?? 1_000,
        redisUrl: redis.url,
        registryUrl: o.registry === false ? undefined : registry.url,
        devicesFile: o.file === true ? file : undefined,
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

  it('activates upstream once; repeats (also from a second pod) get the same secret', async () => {
    const p = prefix();
    const a = await stack({ redisPrefix: p });
    const first = await a.activator.activate('dyn', 'd1');
    assert.ok(first.ok);
    assert.equal(first.assetId, 'A-d1');
    assert.equal(first.deviceSecret, registry.devices.get('dyn/d1')?.deviceSecret);
    const again = await a.activator.activate('dyn', 'd1');
    assert.deepEqual(again, first);
    assert.equal(registry.count('/devices/dyn/d1/activate', 'POST'), 1);

    const key = `${p}:activation:dyn:d1`;
    assert.equal(await check.ttl(key), -1, 'activations do not expire');
    const stored = JSON.parse((await check.get(key)) ?? '') as Record<string, unknown>;
    assert.equal(stored.deviceSecret, first.deviceSecret);
    assert.equal(stored.source, 'registry');

    const b = await stack({ redisPrefix: p });
    assert.deepEqual(await b.activator.activate('dyn', 'd1'), first);
    assert.equal(registry.count('/devices/dyn/d1/activate', 'POST'), 1);
    assert.equal(b.stats.activations.stored, 1);

    // secureMode 2 on the second pod: found through the activation key, no registry call
    const resolved = await new PskResolver(b.source).resolve(Buffer.from('dyn,d1,2,300'));
    assert.ok(resolved.ok);
    assert.deepEqual(resolved.psk, derivePsk(first.deviceSecret));
    assert.equal(b.stats.lookups.activation.hit, 1);
    assert.equal(registry.count('/devices/dyn/d1'), 0);
    // and on the first pod from memory
    const local = new PskResolver(a.source).resolve(Buffer.from('dyn,d1,2,300'));
    assert.ok(!(local instanceof Promise) && local.ok);
  });

  it('concurrent activations on two pods end with one secret', async () => {
    const p = prefix();
    const a = await stack({ redisPrefix: p });
    const b = await stack({ redisPrefix: p });
    const results = await Promise.all([
      ...Array.from({ length: 10 }, () => a.activator.activate('dyn', 'race')),
      ...Array.from({ length: 10 }, () => b.activator.activate('dyn', 'race')),
    ]);
    const secrets = new Set(results.map((r) => (r.ok ? r.deviceSecret : 'refused')));
    assert.deepEqual([...secrets], [registry.devices.get('dyn/race')?.deviceSecret]);
    assert.ok(registry.count('/devices/dyn/race/activate', 'POST') <= 2);
    assert.equal(a.stats.singleFlightJoins + b.stats.singleFlightJoins >= 18, true);
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

  it('recovers an activation whose answer was lost (timeout, then 409 → GET device)', async () => {
    const a = await stack({ redisPrefix: prefix(), registryTimeoutMs: 300 });
    registry.hangNextActivation = true;
    assert.deepEqual(await a.activator.activate('dyn', 'lost'), {
      ok: false,
      reason: 'unavailable',
    });
    const upstream = registry.devices.get('dyn/lost');
    assert.ok(upstream !== undefined, 'the registry did activate');
    const r = await a.activator.activate('dyn', 'lost');
    assert.deepEqual(r, { ok: true, deviceSecret: upstream.deviceSecret, assetId: 'A-lost' });
    assert.equal(registry.count('/devices/dyn/lost/activate', 'POST'), 2);
    assert.equal(registry.count('/devices/dyn/lost'), 1);
  });

  it('Redis + devices file: a generated secret is shared by the pods', async () => {
    const p = prefix();
    const a = await stack({ redisPrefix: p, registry: false, file: true });
    const b = await stack({ redisPrefix: p, registry: false, file: true });
    const first = await a.activator.activate('dyn', 'fresh');
    assert.ok(first.ok);
    assert.equal(first.deviceSecret.length, 32);
    assert.deepEqual(await b.activator.activate('dyn', 'fresh'), first);
    assert.equal((await b.source.device('dyn', 'fresh'))?.deviceSecret, first.deviceSecret);
    assert.deepEqual(await a.activator.activate('dyn', 'listed'), {
      ok: true,
      deviceSecret: 'listed-S3CRET',
      assetId: '',
    });
    assert.equal(a.stats.activations.generated, 1);
    assert.equal(a.stats.activations.file, 1);
  });

  it('devices file only: generates a secret once, then returns the same', async () => {
    const s = createSecretStack(stackOptions({ redisPrefix: prefix(), devicesFile: file }));
    stacks.push(s);
    assert.equal(s.redisState(), 'off');
    const first = await s.activator.activate('dyn', 'solo');
    assert.ok(first.ok);
    assert.deepEqual(await s.activator.activate('dyn', 'solo'), first);
    const rec = s.source.device('dyn', 'solo');
    assert.ok(!(rec instanceof Promise));
    assert.equal(rec?.deviceSecret, first.deviceSecret);
    assert.deepEqual(await s.activator.activate('fixed', 'solo'), {
      ok: false,
      reason: 'dynamic-registration-disabled',
    });
  });
});
