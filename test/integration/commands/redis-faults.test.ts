/**
 * The Redis command store when Redis goes away, with a redis-server of this test's own:
 * operations fail fast with COMMANDS_UNAVAILABLE (the router answers without a command), a
 * hung Redis costs at most the command timeout, and a Redis that comes back is used again —
 * including the notification channel, so waiters wake across pods again.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isCommandError, RedisCommandStore } from '../../../src/bridge/commands/index.js';
import { CLOSE_GUARD_MS } from '../../../src/redis/client.js';
import { ManualClock } from '../../../src/time/clock.js';
import { settlesAt, UNREACHED_DEADLINE_MS } from '../../helpers/clock.js';
import { COMMAND_STORE_DEFAULTS } from '../../helpers/component-defaults.js';
import { RedisServer, freePort, prefix, waitFor } from '../auth/helpers.js';
import { device, json, svc } from '../../unit/bridge/commands-suite.js';
import { startStore } from './helpers.js';

const unavailable = (e: unknown): boolean => isCommandError(e) && e.code === 'COMMANDS_UNAVAILABLE';

describe('redis command store: faults', () => {
  let redis: RedisServer;
  const stores: RedisCommandStore[] = [];

  before(async () => {
    redis = await RedisServer.start();
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    const pid = redis.pid;
    if (pid !== undefined) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // already gone
      }
    }
    await redis.stop();
  });

  it('fails fast while Redis is down and recovers, pub/sub included', async () => {
    const p = prefix();
    // a's commands never time out: an operation that sent its command to the dead Redis
    // (instead of failing at the call) would hang the file until its limit, a failure
    const a = await startStore({
      url: redis.url,
      prefix: p,
      commandTimeoutMs: UNREACHED_DEADLINE_MS,
    });
    const b = await startStore({ url: redis.url, prefix: p });
    stores.push(a, b);
    const d = device();
    await a.enqueue(d, svc(d, 'x'), json('1'));

    // a waiter when Redis dies: answered at its timeout, not with an error
    const waiting = b.waitFor(device(), 300);
    await waitFor(() => b.stats().waiters === 1, 'the waiter');
    await b.peek(device()); // a later read on b's connection: its first look is done
    await redis.stop();
    await waitFor(() => a.state() === 'down' && b.state() === 'down', 'stores see Redis down');

    const ops: [string, () => Promise<unknown>][] = [
      ['enqueue', () => a.enqueue(d, svc(d, 'y'), json('2'))],
      ['peek', () => a.peek(d)],
      ['fetch', () => a.fetch(d, svc(d, 'x'))],
      ['acknowledge', () => a.acknowledge(d, svc(d, 'x'), json('1'))],
      ['waitFor', () => a.waitFor(d, 5_000)],
    ];
    for (const [name, op] of ops) {
      const error = await op().then(
        () => assert.fail(`${name} succeeded with Redis down`),
        (e: unknown) => e,
      );
      assert.ok(unavailable(error), `${name}: ${String(error)}`);
      // refused at the call, without a command sent
      assert.match(String(error), /: redis not connected$/, name);
    }
    assert.ok(a.stats().redisErrors >= ops.length);
    await waitFor(() => a.stats().redisConnectionErrors >= 1, 'connection errors counted');
    assert.equal(await waiting, undefined);
    assert.equal(b.stats().waiters, 0);

    await redis.restart();
    assert.equal(await a.waitReady(5_000), true);
    assert.equal(await b.waitReady(5_000), true);
    // the data died with the server (no persistence); the store works again
    assert.equal((await a.peek(d)).count, 0);
    const w = b.waitFor(d, 5_000);
    await b.peek(d); // its first look is done: the command comes by notification
    assert.equal(await a.enqueue(d, svc(d, 'x'), json('3')), 'queued');
    assert.equal((await w)?.messageId, '3', 'b re-subscribed to the notification channel');
  });

  it('a waiter registered while the subscriber is away still gets its command', async () => {
    const p = prefix();
    const a = await startStore({ url: redis.url, prefix: p });
    const b = await startStore({ url: redis.url, prefix: p });
    stores.push(a, b);
    const d = device();
    const pid = redis.pid;
    assert.ok(pid !== undefined);
    // Redis restarts: b's waiter waits through it; a enqueues once Redis is back, possibly
    // before b has subscribed again; b looks at every waiter's queue after re-subscribing.
    const w = b.waitFor(d, 8_000);
    await b.peek(d); // its first look is done: it waits through the restart
    await redis.stop();
    await redis.restart();
    await waitFor(() => a.state() === 'connected', 'a connected again');
    await a.enqueue(d, svc(d, 'x'), json('late'));
    assert.equal((await w)?.messageId, 'late');
  });

  it('a hung Redis costs at most the command timeout', async () => {
    const p = prefix();
    const a = await startStore({ url: redis.url, prefix: p, commandTimeoutMs: 200 });
    stores.push(a);
    const d = device();
    const pid = redis.pid;
    assert.ok(pid !== undefined);
    process.kill(pid, 'SIGSTOP');
    try {
      // Redis never answers while stopped: the peek ends only by the command timeout
      const error = await a.peek(d).then(
        () => assert.fail('answered by a stopped Redis'),
        (e: unknown) => e,
      );
      assert.ok(unavailable(error), String(error));
      assert.match(String(error), /: redis command failed$/);
      assert.match(String((error as Error).cause), /timed out/i);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await waitFor(async () => {
      try {
        await a.peek(d);
        return true;
      } catch {
        return false;
      }
    }, 'Redis answers again');
  });

  it('waitReady gives up after its timeout, on the store clock, while Redis is away', async () => {
    const clock = new ManualClock();
    const s = new RedisCommandStore({
      ...COMMAND_STORE_DEFAULTS,
      url: `redis://127.0.0.1:${await freePort()}`,
      prefix: prefix(),
      queueLength: 16,
      expiryMs: 60_000,
      maxBackoffMs: 100,
      clock,
    });
    // refused connections and reconnections wake the wait; each re-arms it for what is left
    assert.equal(await settlesAt(clock, 5_000, s.waitReady(5_000), 'waitReady'), false);
    const closing = s.close();
    clock.advance(CLOSE_GUARD_MS); // a connection still connecting may never end
    await closing;
  });
});
