/**
 * The Redis command store against the Redis on 127.0.0.1:6379: the shared behaviour suite,
 * then what only a shared store can show — two store instances ("pods") on one Redis, atomic
 * acknowledgement, pub/sub wakeups across pods, the key layout.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  commandNotifyChannel,
  commandQueueKey,
  type RedisCommandStore,
} from '../../../src/bridge/commands/index.js';
import { commandStoreSuite, device, json, reply, svc } from '../../unit/bridge/commands-suite.js';
import { RedisServer, waitFor } from '../auth/helpers.js';
import { closeRedis, createFailFastRedis } from '../../../src/redis/client.js';
import { dropKeys, prefix, rawClient, startStore } from './helpers.js';
import { REDIS_COMMAND_TIMEOUT_MS } from '../../helpers/component-defaults.js';

/**
 * The stores' Redis command deadline where the test is not about it (the first of the two-pod
 * tests is, and the command store's fault tests): a process starved by other work can see an
 * answer that has already arrived as a timeout at the gateway's 300 ms, when its timers run
 * before its sockets are read.
 */
const COMMAND_TIMEOUT_MS = 2_000;

const raw = rawClient();
const prefixes: string[] = [];
const stores: RedisCommandStore[] = [];
after(async () => {
  await Promise.all(stores.map((s) => s.close()));
  for (const p of prefixes) await dropKeys(raw, p);
  raw.disconnect();
});

/**
 * Ends the WAITs blocked on command stores' durable connections (as their timeout would); how
 * many it ended. Only this test's stores wait for replicas on this Redis.
 */
async function unblockWaits(admin: ReturnType<typeof rawClient>): Promise<number> {
  const list = await admin.client('LIST');
  const ids = String(list)
    .split('\n')
    .filter((line) => / name=coap-edge-cmd-durable /.test(line) && / cmd=wait( |$)/.test(line))
    .map((line) => /^id=(\d+)/.exec(line)?.[1])
    .filter((id): id is string => id !== undefined);
  let n = 0;
  for (const id of ids) n += Number(await admin.client('UNBLOCK', id));
  return n;
}

async function pods(n: number, o: { queueLength?: number; expiryMs?: number } = {}) {
  const p = prefix();
  prefixes.push(p);
  const out: RedisCommandStore[] = [];
  for (let i = 0; i < n; i++) {
    const s = await startStore({ prefix: p, commandTimeoutMs: COMMAND_TIMEOUT_MS, ...o });
    stores.push(s);
    out.push(s);
  }
  return { p, pods: out };
}

commandStoreSuite('redis', async (o) => {
  const p = prefix();
  prefixes.push(p);
  const store = await startStore({ prefix: p, commandTimeoutMs: COMMAND_TIMEOUT_MS, ...o });
  return {
    store,
    stats: () => store.stats(),
    close: async () => {
      await store.close();
      await dropKeys(raw, p);
    },
  };
});

describe('redis command store: two pods', () => {
  it('reads are not held up behind enqueues waiting for replicas (WAIT holds its connection)', async () => {
    // This Redis has no replica: every WAIT would run to its timeout (80 % of the command
    // timeout, 8 s here), holding the connection it was sent on. The read must come back
    // before any of the three enqueues settles, i.e. not behind any of their WAITs. That is
    // asked as an order, not a deadline (a process starved by other work reads a reply that
    // has long arrived only when it next runs). Then the test ends the WAITs itself with
    // CLIENT UNBLOCK, which answers a WAIT as its timeout would (no replica confirmed): the
    // test takes tens of milliseconds instead of the WAITs' timeouts, and the 10 s deadline
    // is out of reach of a starved process.
    const p = prefix();
    const store = await startStore({ prefix: p, waitReplicas: 1, commandTimeoutMs: 10_000 });
    const admin = rawClient();
    try {
      const d = device();
      const settled: string[] = [];
      const writes = [1, 2, 3].map((i) =>
        store
          .enqueue(d, svc(d, 'x'), json(`w${i}`))
          .then(
            () => 'queued',
            () => 'refused',
          )
          .finally(() => settled.push(`w${i}`)),
      );
      // sent after the three enqueues; behind their WAITs it would come after at least one
      const peek = await store.peek(d);
      assert.deepEqual(settled, [], 'the read came back while every enqueue still waited');
      assert.ok(peek.count <= 3);
      // each WAIT unblocked answers "no replica": every enqueue is refused, none by a deadline
      let unblocked = 0;
      while (settled.length < 3) {
        unblocked += await unblockWaits(admin);
        await new Promise((r) => setImmediate(r));
      }
      assert.deepEqual(await Promise.all(writes), ['refused', 'refused', 'refused']);
      assert.equal(unblocked, 3, 'each enqueue ended by its own WAIT');
    } finally {
      admin.disconnect();
      await store.close();
      const raw = rawClient();
      await dropKeys(raw, p);
      raw.disconnect();
    }
  });

  it('a command queued on one pod is peeked, fetched and acknowledged on the other', async () => {
    const {
      pods: [a, b],
    } = await pods(2);
    assert.ok(a && b);
    const d = device();
    assert.equal(await a.enqueue(d, svc(d, 'reboot'), json('r1')), 'queued');
    const p = await b.peek(d);
    assert.equal(p.count, 1);
    assert.equal(p.head?.topic, svc(d, 'reboot'));
    assert.equal(p.head?.payload.toString(), json('r1').toString());
    assert.equal((await b.fetch(d, svc(d, 'reboot'))).command?.id, p.head?.id);
    assert.equal(await b.acknowledge(d, svc(d, 'reboot'), reply('r1')), true);
    assert.equal((await a.peek(d)).count, 0);
    assert.equal(a.stats().enqueued, 1);
    assert.equal(b.stats().acknowledged, 1);
    assert.equal(b.stats().delivered, 2);
  });

  it('two pods acknowledging the same command: exactly one removes it', async () => {
    const {
      pods: [a, b],
    } = await pods(2);
    assert.ok(a && b);
    const d = device();
    const ids = Array.from({ length: 12 }, (_, i) => `c${i}`);
    for (const id of ids) await a.enqueue(d, svc(d, 'x'), json(id));
    for (const id of ids) {
      const results: boolean[] = await Promise.all([
        a.acknowledge(d, svc(d, 'x'), reply(id)),
        b.acknowledge(d, svc(d, 'x'), reply(id)),
      ]);
      assert.equal(results.filter(Boolean).length, 1, id);
    }
    // raw replies: each of two concurrent ones takes a different command
    const rawTopic = `/sys/${d.productKey}/${d.deviceKey}/thing/model/down_raw`;
    await a.enqueue(d, rawTopic, Buffer.from('1'));
    await a.enqueue(d, rawTopic, Buffer.from('2'));
    const r = await Promise.all([
      a.acknowledge(d, rawTopic, Buffer.from('ok')),
      b.acknowledge(d, rawTopic, Buffer.from('ok')),
      a.acknowledge(d, rawTopic, Buffer.from('ok')),
    ]);
    assert.deepEqual(r.filter(Boolean).length, 2);
    assert.equal((await b.peek(d)).count, 0);
    assert.equal(a.stats().acknowledged + b.stats().acknowledged, ids.length + 2);
  });

  it('two pods enqueueing at the bound: never more than the bound', async () => {
    const {
      pods: [a, b],
    } = await pods(2, { queueLength: 5 });
    assert.ok(a && b);
    const d = device();
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 === 0 ? a : b).enqueue(d, svc(d, 'x'), json(`n${i}`)),
      ),
    );
    assert.equal(results.filter((r) => r === 'queued').length, 5);
    assert.equal((await a.peek(d)).count, 5);
    assert.equal(a.stats().refusedFull + b.stats().refusedFull, 15);
  });

  it('waitFor on one pod wakes when the other pod enqueues (pub/sub)', async () => {
    const {
      pods: [a, b],
    } = await pods(2);
    assert.ok(a && b);
    const d = device();
    const waiting = b.waitFor(d, 5_000);
    const second = b.waitFor(d, 5_000);
    // a later read on b's connection: the waiters' first looks (empty queue) are answered
    assert.equal((await b.peek(d)).count, 0);
    assert.equal(b.stats().waiters, 2);
    await a.enqueue(d, svc(d, 'reboot'), json('w1'));
    // a waiter that is not woken answers undefined at its deadline: the command shows the wake
    const [cmd, cmd2] = await Promise.all([waiting, second]);
    assert.equal(cmd?.messageId, 'w1');
    assert.equal(cmd2?.id, cmd?.id);
    assert.equal(b.stats().wakeups, 2);
    assert.ok(b.stats().notifications >= 1);
    assert.equal(b.stats().waiters, 0);
  });

  it('keeps the documented layout: list of JSON entries, TTL, notify channel', async () => {
    const {
      p,
      pods: [a],
    } = await pods(1, { expiryMs: 60_000 });
    assert.ok(a);
    const d = { productKey: 'p:1', deviceKey: 'd%1' };
    const sub = rawClient();
    const heard: string[] = [];
    await sub.subscribe(commandNotifyChannel(p));
    sub.on('message', (_c: string, m: string) => heard.push(m));
    try {
      await a.enqueue(d, svc(d, 'x'), json('L'));
      const key = commandQueueKey(p, d);
      assert.equal(key, `${p}:cmd:{p%3A1/d%251}`);
      assert.equal(await raw.type(key), 'list');
      const [entry] = await raw.lrange(key, 0, -1);
      const e = JSON.parse(entry ?? '') as Record<string, unknown>;
      assert.deepEqual(Object.keys(e).sort(), [
        'enqueuedAt',
        'id',
        'messageId',
        'payload',
        'topic',
      ]);
      assert.equal(e.payload, json('L').toString('base64'));
      assert.equal(e.messageId, 'L');
      const ttl = await raw.pttl(key);
      assert.ok(ttl > 55_000 && ttl <= 60_000, `ttl ${ttl}`);
      await waitFor(() => heard.length > 0, 'the notification');
      assert.deepEqual(heard, ['p:1\nd%1']);
    } finally {
      sub.disconnect();
    }
  });

  it('drops entries it cannot read, and counts them', async () => {
    const {
      p,
      pods: [a],
    } = await pods(1);
    assert.ok(a);
    const d = device();
    const key = commandQueueKey(p, d);
    await raw.rpush(key, 'garbage', '{"id":"x"}');
    await a.enqueue(d, svc(d, 'x'), json('ok'));
    const pk = await a.peek(d);
    assert.equal(pk.count, 1);
    assert.equal(pk.head?.messageId, 'ok');
    assert.equal(a.stats().badEntries, 2);
    assert.equal(await raw.llen(key), 1);
  });

  it('works again after its scripts were flushed (NOSCRIPT → EVAL)', async () => {
    const {
      pods: [a],
    } = await pods(1);
    assert.ok(a);
    const d = device();
    await a.enqueue(d, svc(d, 'x'), json('1'));
    await raw.script('FLUSH');
    assert.equal((await a.peek(d)).count, 1);
    assert.equal(await a.acknowledge(d, svc(d, 'x'), reply('1')), true);
  });

  it('a device known to have no command costs no Redis look, until any pod queues one', async () => {
    const {
      pods: [a, b],
    } = await pods(2);
    assert.ok(a && b);
    await waitFor(() => a.subscribed && b.subscribed, 'subscribed');
    const d = device();
    assert.equal((await b.peek(d)).count, 0);
    const skipped = b.stats().peeksSkipped;
    for (let i = 0; i < 3; i++) assert.equal((await b.peek(d)).count, 0);
    assert.equal(b.stats().peeksSkipped, skipped + 3, 'answered without Redis');
    // the other pod queues one: its notification reaches b, whose next look goes to Redis
    const heard = b.stats().notifications;
    await a.enqueue(d, svc(d, 'x'), json('c1'));
    await waitFor(() => b.stats().notifications > heard, 'b notified');
    assert.equal((await b.peek(d)).head?.messageId, 'c1');
    assert.equal(b.stats().peeksSkipped, skipped + 3);
    // this pod's own enqueue is seen at once, without waiting for its notification
    const d2 = device();
    assert.equal((await a.peek(d2)).count, 0);
    assert.equal((await a.peek(d2)).count, 0);
    await a.enqueue(d2, svc(d2, 'x'), json('c2'));
    assert.equal((await a.peek(d2)).head?.messageId, 'c2');
  });

  it('a lost subscription forgets which queues were empty (a notification may have been missed)', async () => {
    // a Redis of its own: its subscriber connections are killed
    const server = await RedisServer.start();
    const p = prefix();
    const [a, b] = await Promise.all(
      [1, 2].map(() =>
        startStore({ prefix: p, url: server.url, commandTimeoutMs: COMMAND_TIMEOUT_MS }),
      ),
    );
    const killer = createFailFastRedis({
      url: server.url,
      connectionName: 'killer',
      commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS,
      onError: () => {},
    });
    try {
      assert.ok(a && b);
      await waitFor(() => a.subscribed && b.subscribed, 'subscribed');
      const d = device();
      assert.equal((await a.peek(d)).count, 0);
      const skipped = a.stats().peeksSkipped;
      assert.equal((await a.peek(d)).count, 0);
      assert.equal(a.stats().peeksSkipped, skipped + 1);
      // the subscriber connections drop; the other pod queues a command meanwhile, whose
      // notification nobody hears
      await waitFor(() => killer.status === 'ready', 'killer ready');
      await killer.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      // looked for on every turn: the store subscribes again within tens of milliseconds
      const lostBy = Date.now() + 5_000;
      while (a.subscribed && Date.now() < lostBy) await new Promise((r) => setImmediate(r));
      assert.equal(a.subscribed, false, 'subscription lost');
      await b.enqueue(d, svc(d, 'x'), json('missed'));
      // not subscribed: nothing is known, the look goes to Redis
      assert.equal((await a.peek(d)).head?.messageId, 'missed', 'looked in Redis');
      assert.equal(a.stats().peeksSkipped, skipped + 1);
      await waitFor(() => a.subscribed, 'subscribed again');
      assert.equal((await a.peek(d)).head?.messageId, 'missed');
    } finally {
      await Promise.all([a?.close(), b?.close(), closeRedis(killer)]);
      await server.stop();
    }
  });
});
