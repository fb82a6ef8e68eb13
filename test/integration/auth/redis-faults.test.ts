/**
 * Redis going away under a running stack, with a redis-server of this test's own: cached
 * devices keep answering from memory, new ones go straight to the registry (or fail fast
 * when it is down too), nothing hangs; a hung Redis costs at most its command timeout; a
 * restarted Redis is used again without anyone's help.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import { UNREACHED_DEADLINE_MS } from '../../helpers/clock.js';
import { isPromise, SecretSourceError } from '../../../src/auth/source.js';
import { createSecretStack, type SecretStack } from '../../../src/auth/stack.js';
import {
  FakeRegistry,
  RedisServer,
  freePort,
  prefix,
  stackOptions,
  startStack,
  timed,
  waitFor,
} from './helpers.js';

const SECRET = 'fault-S3CRET';
/**
 * Neither Redis commands nor registry calls time out: a lookup that waited for a Redis that is
 * down (instead of failing at once) would hang its test until the file's limit, which shows
 * "at once" without a wall-clock budget.
 */
const NO_TIMEOUTS = {
  redisCommandTimeoutMs: UNREACHED_DEADLINE_MS,
  registryTimeoutMs: UNREACHED_DEADLINE_MS,
} as const;

describe('secret chain: Redis faults', () => {
  let redis: RedisServer;
  let registry: FakeRegistry;
  const stacks: SecretStack[] = [];
  const clients: Redis[] = [];

  before(async () => {
    redis = await RedisServer.start();
    registry = await FakeRegistry.start();
    registry.products.set('pk', { productSecret: 'P', dynamicRegistration: true });
    for (const d of ['a', 'b', 'c', 'd', 'e', 'f']) {
      registry.devices.set(`pk/${d}`, { deviceSecret: `${SECRET}-${d}` });
    }
  });

  after(async () => {
    await Promise.all(stacks.map((s) => s.close()));
    for (const c of clients) c.disconnect();
    await registry.close();
    await redis.stop();
  });

  it('survives Redis stopping and reconnects when it is back', async () => {
    const p = prefix();
    const s = await startStack(
      stackOptions({
        redisPrefix: p,
        redisUrl: redis.url,
        registryUrl: registry.url,
        ...NO_TIMEOUTS,
      }),
    );
    stacks.push(s);
    assert.equal(s.redisState(), 'connected');
    assert.equal((await s.source.device('pk', 'a'))?.deviceSecret, `${SECRET}-a`);

    await redis.stop();
    await waitFor(() => s.redisState() === 'down', 'Redis down');

    // cached: straight from memory
    const cached = s.source.device('pk', 'a');
    assert.ok(!isPromise(cached));
    assert.equal(cached?.deviceSecret, `${SECRET}-a`);

    // new: Redis fails at once, the registry answers
    const fresh = await timed(() => s.source.device('pk', 'b'));
    assert.equal(fresh.value?.deviceSecret, `${SECRET}-b`);
    assert.ok(s.stats.lookups.redis.error >= 1);

    // new, and the registry is down too: fails fast
    registry.overrides.set('/devices/pk/c', { status: 503 });
    const failed = await timed(() => s.source.device('pk', 'c'));
    assert.ok(failed.error instanceof SecretSourceError);
    registry.overrides.delete('/devices/pk/c');
    await waitFor(() => s.stats.redisConnectionErrors >= 1, 'reconnect attempts counted');

    // Redis comes back on the same port: the stack reconnects by itself
    await redis.restart();
    await waitFor(() => s.redisState() === 'connected', 'reconnected', 5_000);
    assert.equal((await s.source.device('pk', 'd'))?.deviceSecret, `${SECRET}-d`);
    const check = redis.client();
    clients.push(check);
    await waitFor(
      async () => (await check.exists(`${p}:device:{pk/d}`)) === 1,
      'a write after reconnecting',
    );
  });

  it('a hung Redis costs at most the command timeout', async () => {
    const p = prefix();
    const s = await startStack(
      stackOptions({
        redisPrefix: p,
        redisUrl: redis.url,
        registryUrl: registry.url,
        redisCommandTimeoutMs: 200,
      }),
    );
    stacks.push(s);
    const pid = redis.pid;
    assert.ok(pid !== undefined);
    process.kill(pid, 'SIGSTOP');
    try {
      const r = await timed(() => s.source.device('pk', 'e'));
      assert.equal(r.value?.deviceSecret, `${SECRET}-e`);
      // ended by the one command's timeout (a timer fires late under load, never early)
      assert.ok(r.ms >= 180, `took ${r.ms} ms (command timeout 200)`);
      assert.equal(s.stats.lookups.redis.timeout, 1);
      assert.equal(registry.count('/devices/pk/e', 'GET'), 1, 'then the registry, once');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await waitFor(() => s.redisState() === 'connected', 'still connected');
  });

  it('a Redis that is not there at start costs nothing', async () => {
    const port = await freePort();
    const s = createSecretStack(
      stackOptions({
        redisPrefix: prefix(),
        registryUrl: registry.url,
        redisUrl: `redis://127.0.0.1:${port}`,
        ...NO_TIMEOUTS,
      }),
    );
    stacks.push(s);
    const r = await timed(() => s.source.device('pk', 'f'));
    assert.equal(r.value?.deviceSecret, `${SECRET}-f`);
    await waitFor(() => s.redisState() === 'down', 'Redis reported down');
    const act = await timed(() => s.activator.activate('pk', 'f'));
    assert.deepEqual(act.value, { ok: false, reason: 'unavailable' });
    assert.equal(registry.count('/devices/pk/f/activate', 'POST'), 0, 'no upstream activation');
  });
});
