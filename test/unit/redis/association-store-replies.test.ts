/**
 * The Redis association store's answer to a reply of the wrong shape (a key or script that is
 * not ours): a `CoapEdgeError` with a stable code that names the operation and never the
 * reply's bytes (a sealed association). A stand-in client answers; no Redis is needed.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isCoapEdgeError } from '../../../src/errors/index.js';
import type { RedisClient } from '../../../src/redis/client.js';
import { RedisAssociationStore } from '../../../src/redis/association-store.js';

const SEALED = Buffer.from('sealed-association-bytes');

/** A client whose hash read and script calls answer `hash` and `script`. */
function answering(hash: (Buffer | null)[], script: unknown): RedisClient {
  const client = {
    isCluster: false,
    options: { commandTimeout: 300 },
    hmgetBuffer: () => Promise.resolve(hash),
    callBuffer: () => Promise.resolve(script),
  };
  return client as unknown as RedisClient;
}

async function refusal(op: Promise<unknown>): Promise<unknown> {
  try {
    await op;
  } catch (e: unknown) {
    return e;
  }
  return assert.fail('resolved with a reply of the wrong shape');
}

function assertUnexpectedReply(e: unknown, operation: string): void {
  assert.ok(isCoapEdgeError(e), `a CoapEdgeError, not ${String(e)}`);
  assert.equal(e.code, 'REDIS_UNEXPECTED_REPLY');
  assert.equal(e.message, `unexpected Redis reply to ${operation}`);
  assert.ok(!e.message.includes(SEALED.toString()));
}

describe('RedisAssociationStore: replies of the wrong shape', () => {
  it('peek: a receive fence that is not an integer', async () => {
    const store = new RedisAssociationStore({
      client: answering([SEALED, Buffer.from('not-a-number'), Buffer.from('pod-a')], null),
      prefix: 'p',
    });
    assertUnexpectedReply(await refusal(store.peek('h')), 'peek');
  });

  it('adopt: not the four fields the script returns', async () => {
    const store = new RedisAssociationStore({
      client: answering([], [SEALED, 1, 2]),
      prefix: 'p',
    });
    assertUnexpectedReply(await refusal(store.adopt('h', 'pod-a', 64, 256, 60_000)), 'adopt');
  });

  it('adopt and leaseTx: a field that is not an integer', async () => {
    const adopting = new RedisAssociationStore({
      client: answering([], [SEALED, 1, 'two', 3]),
      prefix: 'p',
    });
    assertUnexpectedReply(await refusal(adopting.adopt('h', 'pod-a', 64, 256, 60_000)), 'adopt');
    const leasing = new RedisAssociationStore({ client: answering([], 'many'), prefix: 'p' });
    assertUnexpectedReply(await refusal(leasing.leaseTx('h', 'pod-a', 256, 60_000)), 'leaseTx');
  });
});
