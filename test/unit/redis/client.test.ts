import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { createServer } from 'node:net';
import { describe, test } from 'node:test';
import {
  CLOSE_GUARD_MS,
  closeRedis,
  createFailFastRedis,
  durabilityFor,
  type RedisClient,
} from '../../../src/redis/client.js';
import { ManualClock } from '../../../src/time/clock.js';
import { settlesAt } from '../../helpers/clock.js';
import { REDIS_COMMAND_TIMEOUT_MS } from '../../helpers/component-defaults.js';

/** A loopback port nothing listens on: connections to it are refused at once. */
async function refusedPort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  await new Promise<void>((r) => server.close(() => r()));
  return address.port;
}

describe('closeRedis', () => {
  test('a client waiting to reconnect to a Redis that is down is closed without waiting for an end event that never comes', async () => {
    const port = await refusedPort();
    let errors = 0;
    const client = createFailFastRedis({
      url: `redis://127.0.0.1:${port}`,
      connectionName: 'close-test',
      commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS,
      onError: () => errors++,
      maxBackoffMs: 60_000,
    });
    // not events.once: it would reject on the refused connection's 'error'
    await new Promise<void>((r) => client.once('reconnecting', () => r()));
    assert.equal(client.status, 'reconnecting');
    // true: closed without the 1 s wait giving up (it used to give up: no 'end' comes)
    assert.equal(await closeRedis(client), true);
    assert.ok(errors >= 1, 'the refused connection was reported');
  });

  test('a connected client ends', async () => {
    const client = createFailFastRedis({
      url: 'redis://127.0.0.1:6379',
      connectionName: 'close-test',
      commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS,
      onError: () => {},
    });
    await once(client, 'ready');
    assert.equal(await closeRedis(client), true);
    assert.equal(client.status, 'end');
    assert.equal(await closeRedis(client), true, 'closing twice is fine');
  });

  test('a client that never ends: the wait gives up after CLOSE_GUARD_MS on the given clock', async () => {
    // what closeRedis uses of a client: its status, 'end' and disconnect (which here does not
    // lead to an 'end', as with a hung connection)
    let disconnects = 0;
    const client = Object.assign(new EventEmitter(), {
      status: 'ready',
      isCluster: false,
      disconnect: () => void disconnects++,
    }) as unknown as RedisClient;
    const clock = new ManualClock();
    const closing = closeRedis(client, clock);
    assert.equal(disconnects, 1);
    assert.equal(clock.pendingKeptAlive, 1, 'the guard holds the process open, as before');
    assert.equal(await settlesAt(clock, CLOSE_GUARD_MS, closing, 'closeRedis'), false);
    assert.equal(clock.pending, 0);
  });

  test('a client that ends in time: the guard is cleared', async () => {
    const client = Object.assign(new EventEmitter(), {
      status: 'ready',
      isCluster: false,
      disconnect: () => queueMicrotask(() => client.emit('end')),
    }) as EventEmitter & { status: string };
    const clock = new ManualClock();
    assert.equal(await closeRedis(client as unknown as RedisClient, clock), true);
    assert.equal(clock.pending, 0, 'no guard left behind');
  });
});

describe('durabilityFor', () => {
  test('no WAIT for 0 replicas; WAIT gets 80 % of the command deadline, at least 1 ms', () => {
    assert.equal(durabilityFor(0, 300), undefined);
    assert.equal(durabilityFor(-1, 300), undefined);
    assert.deepEqual(durabilityFor(2, 300), { replicas: 2, timeoutMs: 240 });
    assert.deepEqual(durabilityFor(1.7, 1), { replicas: 1, timeoutMs: 1 });
  });
});
