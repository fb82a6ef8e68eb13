import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { describe, test } from 'node:test';
import { closeRedis, createFailFastRedis } from '../../../src/redis/client.js';

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
      onError: () => {},
    });
    await once(client, 'ready');
    assert.equal(await closeRedis(client), true);
    assert.equal(client.status, 'end');
    assert.equal(await closeRedis(client), true, 'closing twice is fine');
  });
});
