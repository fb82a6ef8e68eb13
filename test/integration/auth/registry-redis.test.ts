/**
 * The chain against a real HTTP registry and a real Redis: caching in Redis and memory,
 * sharing between pods, negative caching, failures that are fast, counted and not cached,
 * the timeout, the circuit breaker.
 */
import { clockReading, settlesAt, UNREACHED_DEADLINE_MS } from '../../helpers/clock.js';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import { PskResolver } from '../../../src/auth/psk-resolver.js';
import { isPromise, SecretSourceError } from '../../../src/auth/source.js';
import type { SecretStack } from '../../../src/auth/stack.js';
import { ManualClock } from '../../../src/time/clock.js';
import {
  FakeRegistry,
  RedisServer,
  prefix,
  stackOptions,
  startStack,
  timed,
  waitFor,
} from './helpers.js';

const SECRET = 'reg-S3CRET-value';

describe('secret chain: registry + Redis', () => {
  let redis: RedisServer;
  let registry: FakeRegistry;
  let check: Redis;
  const stacks: SecretStack[] = [];

  async function stack(o: {
    redisPrefix: string;
    redis?: boolean;
    token?: string;
    registryTimeoutMs?: number;
    clock?: ManualClock;
  }) {
    const s = await startStack(
      stackOptions({
        redisPrefix: o.redisPrefix,
        ...(o.registryTimeoutMs !== undefined ? { registryTimeoutMs: o.registryTimeoutMs } : {}),
        clock: o.clock,
        redisUrl: o.redis === false ? undefined : redis.url,
        registryUrl: registry.url,
        registryToken: o.token,
      }),
    );
    stacks.push(s);
    return s;
  }

  before(async () => {
    redis = await RedisServer.start();
    registry = await FakeRegistry.start();
    check = redis.client();
  });

  after(async () => {
    await Promise.all(stacks.map((s) => s.close()));
    check.disconnect();
    await registry.close();
    await redis.stop();
  });

  it('a registry hit is cached in Redis and in memory; a second pod reads it from Redis', async () => {
    const p = prefix();
    registry.devices.set(`pk1/dev1`, { deviceSecret: SECRET, assetId: 'asset-1' });
    const a = await stack({ redisPrefix: p });
    const rec = await a.source.device('pk1', 'dev1');
    assert.equal(rec?.deviceSecret, SECRET);
    assert.equal(rec?.assetId, 'asset-1');
    assert.equal(registry.count('/devices/pk1/dev1'), 1);
    assert.equal(a.stats.lookups.registry.hit, 1);
    assert.equal(a.stats.lookups.redis.miss, 1);

    const key = `${p}:device:{pk1/dev1}`;
    await waitFor(async () => (await check.exists(key)) === 1, 'the Redis entry');
    assert.deepEqual(JSON.parse((await check.get(key)) ?? ''), {
      deviceSecret: SECRET,
      assetId: 'asset-1',
    });
    const ttl = await check.pttl(key);
    assert.ok(ttl > 55_000 && ttl <= 60_000, `pttl ${ttl}`);

    const again = a.source.device('pk1', 'dev1');
    assert.ok(!isPromise(again), 'second lookup is a memory hit');
    assert.equal(again?.deviceSecret, SECRET);

    const b = await stack({ redisPrefix: p });
    const fromB = b.source.device('pk1', 'dev1');
    assert.ok(isPromise(fromB), 'the second pod has its own (empty) memory');
    assert.equal((await fromB)?.deviceSecret, SECRET);
    assert.equal(registry.count('/devices/pk1/dev1'), 1, 'no second registry call');
    assert.equal(b.stats.lookups.redis.hit, 1);
    assert.ok(!isPromise(b.source.device('pk1', 'dev1')));
  });

  it('products are cached the same way', async () => {
    const p = prefix();
    registry.products.set('prodX', { productSecret: 'P-S3CRET', dynamicRegistration: true });
    const a = await stack({ redisPrefix: p });
    assert.equal((await a.source.product('prodX'))?.dynamicRegistration, true);
    await waitFor(async () => (await check.exists(`${p}:product:prodX`)) === 1, 'product entry');
    const b = await stack({ redisPrefix: p });
    assert.equal((await b.source.product('prodX'))?.productSecret, 'P-S3CRET');
    assert.equal(registry.count('/products/prodX'), 1);
  });

  it('a 404 is remembered: one registry call for repeated lookups, on both pods', async () => {
    const p = prefix();
    const a = await stack({ redisPrefix: p });
    const first = await Promise.all(
      Array.from({ length: 20 }, () => Promise.resolve(a.source.device('pk1', 'ghost'))),
    );
    assert.ok(first.every((r) => r === undefined));
    for (let i = 0; i < 5; i++) assert.equal(a.source.device('pk1', 'ghost'), undefined);
    assert.equal(registry.count('/devices/pk1/ghost'), 1);
    assert.equal(a.stats.singleFlightJoins, 19);
    assert.equal(a.stats.lookups.memory['negative-hit'], 5);

    const key = `${p}:device:{pk1/ghost}`;
    await waitFor(async () => (await check.exists(key)) === 1, 'the negative entry');
    assert.deepEqual(JSON.parse((await check.get(key)) ?? ''), { unknown: true });
    const ttl = await check.pttl(key);
    assert.ok(ttl > 0 && ttl <= 5_000, `negative pttl ${ttl}`);

    const b = await stack({ redisPrefix: p });
    assert.equal(await b.source.device('pk1', 'ghost'), undefined);
    assert.equal(b.stats.lookups.redis['negative-hit'], 1);
    assert.equal(registry.count('/devices/pk1/ghost'), 1);
  });

  it('a 500 fails fast, is counted and is not cached', async () => {
    const p = prefix();
    registry.overrides.set('/devices/pk1/err500', { status: 500, body: { secret: SECRET } });
    // no registry timeout ends the call: a 500 that waited (a retry after a pause, say) hangs
    const a = await stack({ redisPrefix: p, registryTimeoutMs: UNREACHED_DEADLINE_MS });
    const r = await timed(() => a.source.device('pk1', 'err500'));
    assert.ok(r.error instanceof SecretSourceError);
    assert.equal(r.error.code, 'SOURCE_UNAVAILABLE');
    assert.ok(!r.error.message.includes(SECRET));
    assert.equal(a.stats.registryFailures, 1);
    assert.equal(a.stats.lookups.registry.error, 1);
    await a.close();
    assert.equal(await check.exists(`${p}:device:{pk1/err500}`), 0, 'nothing in Redis');

    const b = await stack({ redisPrefix: p });
    registry.overrides.delete('/devices/pk1/err500');
    registry.devices.set('pk1/err500', { deviceSecret: SECRET });
    assert.equal((await b.source.device('pk1', 'err500'))?.deviceSecret, SECRET);
    assert.equal(registry.count('/devices/pk1/err500'), 2, 'the failure was not cached');
  });

  it('a malformed answer is an error that names no value and is not cached', async () => {
    const p = prefix();
    const a = await stack({ redisPrefix: p });
    const cases: [string, string][] = [
      ['bad1', JSON.stringify({ deviceSecret: '', note: SECRET })],
      ['bad2', JSON.stringify({ deviceSecret: 42, assetId: SECRET })],
      ['bad3', `{"deviceSecret":"${SECRET}"`],
      ['bad4', JSON.stringify([SECRET])],
    ];
    for (const [dk, raw] of cases) {
      registry.overrides.set(`/devices/pk1/${dk}`, { status: 200, raw });
      await assert.rejects(Promise.resolve(a.source.device('pk1', dk)), (err: unknown) => {
        assert.ok(err instanceof SecretSourceError);
        assert.equal(err.code, 'SOURCE_BAD_RESPONSE');
        assert.ok(!err.message.includes(SECRET), err.message);
        assert.ok(!(err.stack ?? '').includes(SECRET));
        return true;
      });
    }
    await a.close();
    assert.deepEqual(await check.keys(`${p}:*`), []);
  });

  it('a hanging registry fails after registryTimeoutMs while cached devices keep answering', async () => {
    const p = prefix();
    registry.devices.set('pk1/warm', { deviceSecret: SECRET });
    registry.overrides.set('/devices/pk1/slow', 'hang');
    // the deadline runs on the stack's clock; undici's own timeouts (as long, in real time)
    // are never reached
    const clock = new ManualClock();
    const timeoutMs = UNREACHED_DEADLINE_MS;
    const a = await stack({ redisPrefix: p, registryTimeoutMs: timeoutMs, clock });
    const resolver = new PskResolver(a.source);
    assert.ok((await resolver.resolve(Buffer.from('pk1,warm,2,300'))).ok);

    const t0 = clock.now();
    let ms: number | undefined;
    const slow = timed(() => a.source.device('pk1', 'slow')).finally(() => {
      ms = clock.now() - t0;
    });
    await waitFor(() => registry.count('/devices/pk1/slow') === 1, 'the request at the registry');
    // while the registry hangs, the cached device answers at once
    for (let i = 0; i < 10; i++) {
      const hit = resolver.resolve(Buffer.from('pk1,warm,2,300'));
      assert.ok(!isPromise(hit) && hit.ok);
      clock.advance(10);
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(clock.pendingKeptAlive, 1, 'the deadline holds the process open, as before');
    const r = await settlesAt(clock, timeoutMs - 100, slow, 'the hanging lookup');
    assert.ok(r.error instanceof SecretSourceError);
    assert.equal(r.error.code, 'SOURCE_TIMEOUT');
    // ended by its timeout, on the clock
    assert.equal(ms, timeoutMs, 'ended by the deadline');
    assert.equal(a.stats.lookups.registry.timeout, 1);
    assert.equal(a.stats.registryFailures, 1);
    // the PSK resolver turns it into "unavailable", quickly (at the deadline of its own call)
    const viaResolver = resolver.resolve(Buffer.from('pk1,slow,2,300'));
    await waitFor(() => registry.count('/devices/pk1/slow') === 2, 'the second request');
    clock.advance(timeoutMs);
    assert.deepEqual(await viaResolver, {
      ok: false,
      kind: 'unavailable',
      reason: 'source-unavailable',
    });
  });

  it('the circuit breaker opens after consecutive failures and closes after a good probe', async () => {
    const p = prefix();
    // the registry's clock, its time stepped by hand (the cool-down passes without waiting
    // for it), its timers real (the request deadlines, never reached here)
    let nowMs = 0;
    const s = await startStack(
      stackOptions({
        redisPrefix: p,
        registryUrl: registry.url,
        breakerThreshold: 3,
        breakerCooldownMs: 300,
        clock: clockReading(() => nowMs),
      }),
    );
    stacks.push(s);
    for (let i = 0; i < 3; i++) registry.overrides.set(`/devices/cb/d${i}`, { status: 503 });
    for (let i = 0; i < 3; i++) {
      await assert.rejects(Promise.resolve(s.source.device('cb', `d${i}`)), {
        code: 'SOURCE_UNAVAILABLE',
      });
    }
    const before = registry.requests.length;
    const r = await timed(() => s.source.device('cb', 'other'));
    assert.equal((r.error as SecretSourceError).code, 'SOURCE_CIRCUIT_OPEN');
    assert.equal(registry.requests.length, before, 'no request while open');
    assert.equal(s.stats.registryCircuitOpened, 1);
    assert.equal(s.stats.registryRejected, 1);

    // still open 1 ms before the cool-down ends, whatever the registry would answer now
    registry.devices.set('cb/other', { deviceSecret: SECRET });
    nowMs += 299;
    await assert.rejects(Promise.resolve(s.source.device('cb', 'other')), {
      code: 'SOURCE_CIRCUIT_OPEN',
    });
    assert.equal(registry.requests.length, before, 'no request while open');
    nowMs += 1;
    assert.equal((await s.source.device('cb', 'other'))?.deviceSecret, SECRET, 'the probe');
    registry.devices.set('cb/next', { deviceSecret: SECRET });
    assert.equal((await s.source.device('cb', 'next'))?.deviceSecret, SECRET, 'closed again');
  });

  it('sends the bearer token and URL-encodes path segments', async () => {
    const p = prefix();
    const a = await stack({ redisPrefix: p, redis: false, token: 'tok-123' });
    registry.devices.set('pk é/d:1?x=%#', { deviceSecret: SECRET });
    assert.equal((await a.source.device('pk é', 'd:1?x=%#'))?.deviceSecret, SECRET);
    const last = registry.requests.at(-1);
    assert.equal(last?.path, '/devices/pk é/d:1?x=%#');
    assert.equal(last?.authorization, 'Bearer tok-123');
    const anon = await stack({ redisPrefix: p, redis: false });
    await anon.source.product('none');
    assert.equal(registry.requests.at(-1)?.authorization, undefined);
  });
});
