/**
 * The bridge-mode command intake against real brokers: Mosquitto on 127.0.0.1:1883 (shared
 * subscriptions, MQTT 5 and 3.1.1), a Mosquitto of our own (restart), and aedes, the
 * embedded broker (no `$share`: the intake subscribes without it there).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type MqttClient } from 'mqtt';
import {
  CommandError,
  CommandIntake,
  MemoryCommandStore,
  commandQueueKey,
  type CommandIntakeOptions,
  type RedisCommandStore,
} from '../../../src/bridge/commands/index.js';
import { startEmbeddedBroker } from '../../../src/bridge/mqtt/index.js';
import type { CommandStore } from '../../../src/bridge/types.js';
import { ManualClock } from '../../../src/time/clock.js';
import { settlesAt } from '../../helpers/clock.js';
import { freePort } from '../auth/helpers.js';
import { killBrokers, Mosquitto, until } from '../bridge/brokers.js';
import { dropKeys, prefix, rawClient, startStore } from './helpers.js';
import { INTAKE_DEFAULTS, COMMAND_STORE_DEFAULTS } from '../../helpers/component-defaults.js';

const TOPICS = [
  '/sys/{pk}/{dk}/thing/service/#',
  '/sys/{pk}/{dk}/thing/model/down_raw',
  '/sys/{pk}/{dk}/rrpc/request/+',
  '/sys/{pk}/{dk}/thing/enable',
  '/sys/{pk}/{dk}/thing/disable',
  '/sys/{pk}/{dk}/thing/delete',
  '/sys/{pk}/{dk}/ota/device/upgrade',
];
const MOSQUITTO = 'mqtt://127.0.0.1:1883';

const raw = rawClient();
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  raw.disconnect();
  await killBrokers();
});

function intake(o: Partial<CommandIntakeOptions> & { store: CommandStore; url: string }) {
  const i = new CommandIntake({
    ...INTAKE_DEFAULTS,
    topics: TOPICS,
    reconnectMinMs: 50,
    reconnectMaxMs: 200,
    ...o,
  });
  cleanups.push(() => i.close());
  i.start();
  return i;
}

async function publisher(url: string, protocolVersion: 4 | 5): Promise<MqttClient> {
  const c = connect(url, { protocolVersion, reconnectPeriod: 0 });
  c.on('error', () => undefined);
  cleanups.push(() => c.endAsync(true));
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  return c;
}

async function pods(n: number) {
  const p = prefix();
  cleanups.push(() => dropKeys(raw, p));
  const stores: RedisCommandStore[] = [];
  for (let i = 0; i < n; i++) {
    const s = await startStore({ prefix: p });
    cleanups.push(() => s.close());
    stores.push(s);
  }
  return { p, stores };
}

/**
 * A shared subscription hands each message to one pod, and the broker sends each pod its
 * messages in order: publishes ignored replies on `topic` until every pod took one, so any
 * wrong extra copy of an earlier message has reached its pod by then. Returns how many.
 */
async function markEveryPod(
  pub: MqttClient,
  topic: string,
  intakes: readonly CommandIntake[],
): Promise<number> {
  const ignored = (i: CommandIntake): number => i.stats().ignored.notCommand;
  const start = intakes.map(ignored);
  const total = (): number => intakes.reduce((n, i) => n + ignored(i), 0);
  let sent = 0;
  while (intakes.some((i, k) => ignored(i) <= (start[k] ?? 0))) {
    assert.ok(sent < 50, 'the markers reach every pod');
    const before = total();
    await pub.publishAsync(topic, '{"id":"marker"}', { qos: 1 });
    sent++;
    await until(() => total() > before, 5_000, 'a marker');
  }
  return sent;
}

const cmd = (id: string): Buffer =>
  Buffer.from(JSON.stringify({ id, version: '1.0', method: 'thing.service.reboot', params: {} }));

describe('command intake: Mosquitto shared subscription', () => {
  for (const protocol of ['5', '3.1.1'] as const) {
    it(`MQTT ${protocol}: two pods split the commands, each is enqueued once`, async () => {
      const { p, stores } = await pods(2);
      const [sa, sb] = stores;
      assert.ok(sa && sb);
      const opts = { url: MOSQUITTO, protocol, topicPrefix: p, shareGroup: p };
      const a = intake({ ...opts, store: sa });
      const b = intake({ ...opts, store: sb });
      assert.equal(await a.waitSubscribed(5_000), true);
      assert.equal(await b.waitSubscribed(5_000), true);
      assert.equal(a.stats().protocolVersion, protocol === '5' ? 5 : 4);
      assert.deepEqual(a.filters.slice(0, 1), [`$share/${p}/${p}/sys/+/+/thing/service/#`]);

      const pub = await publisher(MOSQUITTO, protocol === '5' ? 5 : 4);
      const N = 10;
      for (let i = 0; i < N; i++) {
        await pub.publishAsync(`${p}/sys/pk/dk/thing/service/reboot`, cmd(`c${i}`), { qos: 1 });
      }
      // replies published by the device side match `thing/service/#` too: ignored
      await pub.publishAsync(`${p}/sys/pk/dk/thing/service/reboot_reply`, '{"id":"c0"}', {
        qos: 1,
      });
      const received = () => a.stats().received + b.stats().received;
      await until(() => received() === N + 1, 5_000, 'every message at one pod');
      const marks = await markEveryPod(pub, `${p}/sys/pk/dk/thing/service/reboot_reply`, [a, b]);
      assert.equal(received(), N + 1 + marks, 'no message reached both pods');
      assert.ok(a.stats().received > 0 && b.stats().received > 0, 'both pods took a share');
      assert.equal(a.stats().enqueued + b.stats().enqueued, N);
      assert.equal(a.stats().ignored.notCommand + b.stats().ignored.notCommand, 1 + marks);

      const d = { productKey: 'pk', deviceKey: 'dk' };
      const entries = await raw.lrange(commandQueueKey(p, d), 0, -1);
      assert.equal(entries.length, N);
      const ids = entries.map((e) => (JSON.parse(e) as { messageId: string }).messageId);
      assert.deepEqual(
        ids.sort(),
        Array.from({ length: N }, (_, i) => `c${i}`).sort(),
        'each command once',
      );
      assert.equal((await sa.peek(d)).count, N);
    });
  }

  it('a command on /sys/pk/dk/thing/service/reboot (no topic prefix) is enqueued once', async () => {
    const { p, stores } = await pods(2);
    const [sa, sb] = stores;
    assert.ok(sa && sb);
    const a = intake({ url: MOSQUITTO, shareGroup: p, store: sa });
    const b = intake({ url: MOSQUITTO, shareGroup: p, store: sb });
    assert.equal(await a.waitSubscribed(5_000), true);
    assert.equal(await b.waitSubscribed(5_000), true);
    const pub = await publisher(MOSQUITTO, 5);
    // raw bytes: no JSON id, so the store could not hide a second copy
    const marker = `reboot-${p}`;
    await pub.publishAsync('/sys/pk/dk/thing/service/reboot', marker, { qos: 1 });
    const key = commandQueueKey(p, { productKey: 'pk', deviceKey: 'dk' });
    const mine = async () =>
      (await raw.lrange(key, 0, -1)).filter(
        (e) =>
          Buffer.from((JSON.parse(e) as { payload: string }).payload, 'base64').toString() ===
          marker,
      ).length;
    await until(() => a.stats().received + b.stats().received > 0, 5_000, 'the command');
    await markEveryPod(pub, '/sys/pk/dk/thing/service/reboot_reply', [a, b]);
    // every command a pod took is in the store
    const commandsIn = (): number =>
      [a, b].reduce((n, i) => n + i.stats().received - i.stats().ignored.notCommand, 0);
    const enqueued = (): number => a.stats().enqueued + b.stats().enqueued;
    await until(() => enqueued() === commandsIn(), 5_000, 'every command enqueued');
    assert.equal(await mine(), 1);
  });

  it('without $share every pod receives every command; the store keeps a JSON command once', async () => {
    const { p, stores } = await pods(2);
    const [sa, sb] = stores;
    assert.ok(sa && sb);
    const opts = { url: MOSQUITTO, topicPrefix: p, shared: false };
    const a = intake({ ...opts, store: sa });
    const b = intake({ ...opts, store: sb });
    assert.equal(await a.waitSubscribed(5_000), true);
    assert.equal(await b.waitSubscribed(5_000), true);
    const pub = await publisher(MOSQUITTO, 5);
    await pub.publishAsync(`${p}/sys/pk/dk/thing/service/x`, cmd('dup'), { qos: 1 });
    await until(() => a.stats().received === 1 && b.stats().received === 1, 5_000, 'both');
    await until(() => a.stats().enqueued + b.stats().enqueued === 2, 5_000, 'both stored');
    assert.equal((await sa.peek({ productKey: 'pk', deviceKey: 'dk' })).count, 1);
    assert.equal(sa.stats().duplicates + sb.stats().duplicates, 1);
  });

  it('subscribes again after the broker restarts', async () => {
    const m = await Mosquitto.start();
    const store = new MemoryCommandStore({
      ...COMMAND_STORE_DEFAULTS,
      queueLength: 4,
      expiryMs: 60_000,
    });
    cleanups.push(() => store.close());
    const url = `mqtt://127.0.0.1:${m.port}`;
    // the connection's retry waits on the intake's clock
    const clock = new ManualClock();
    const i = intake({ url, store, shareGroup: 'g', clock });
    assert.equal(await i.waitSubscribed(5_000), true);
    await m.stop();
    await until(() => i.state() === 'down', 5_000, 'intake down');
    await until(() => clock.pendingKeptAlive === 1, 5_000, 'the retry');
    // subscribed before the drop (steady): 25-50 ms, half of reconnectMinMs and up
    const wait = clock.nextIn ?? 0;
    assert.ok(wait >= 25 && wait <= 50, `retry after ${wait} ms`);
    await m.restart();
    clock.advance(wait - 1);
    assert.equal(i.stats().reconnects, 0, 'not before its delay');
    clock.advance(1);
    assert.equal(i.stats().reconnects, 1, 'retried at its delay');
    // (the wait's own deadline is on the manual clock: the condition, in real time, fails)
    await until(() => i.state() === 'subscribed', 5_000, 'subscribed again');
    assert.equal(await i.waitSubscribed(5_000), true);
    assert.equal(i.stats().connectionDowns, 1);
    assert.ok(i.stats().reconnects >= 1);
    const pub = await publisher(url, 5);
    await pub.publishAsync('/sys/pk/dk/thing/enable', cmd('e1'), { qos: 1 });
    await until(() => i.stats().enqueued === 1, 5_000, 'the command');
    assert.equal((await store.peek({ productKey: 'pk', deviceKey: 'dk' })).head?.messageId, 'e1');
  });
});

describe('command intake: aedes (embedded broker)', () => {
  it('without $share: falls back to 3.1.1, enqueues commands, ignores replies and retained', async () => {
    const broker = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => broker.close());
    const url = `mqtt://127.0.0.1:${broker.port}`;
    const store = new MemoryCommandStore({
      ...COMMAND_STORE_DEFAULTS,
      queueLength: 4,
      expiryMs: 60_000,
    });
    cleanups.push(() => store.close());
    const i = intake({ url, store, shared: false });
    assert.equal(await i.waitSubscribed(5_000), true);
    assert.equal(i.stats().protocolVersion, 4);
    assert.equal(i.stats().protocolFallbacks, 1);
    const pub = await publisher(url, 4);
    await pub.publishAsync('/sys/pk/dk/thing/service/reboot', cmd('a1'), { qos: 1 });
    await pub.publishAsync('/sys/pk/dk/thing/service/reboot_reply', '{"id":"a1"}', { qos: 1 });
    await pub.publishAsync('/sys/pk/dk/rrpc/request/9', 'rrpc', { qos: 1 });
    await pub.publishAsync('/sys/pk/dk/rrpc/response/9', 'ok', { qos: 1 });
    await until(() => i.stats().received === 3, 5_000, 'three messages');
    await until(() => i.stats().enqueued === 2, 5_000, 'two commands');
    assert.equal(i.stats().ignored.notCommand, 1, 'the _reply (rrpc/response matches no filter)');
    const d = { productKey: 'pk', deviceKey: 'dk' };
    const p = await store.peek(d);
    assert.equal(p.count, 2);
    assert.equal(p.head?.topic, '/sys/pk/dk/thing/service/reboot');

    // a retained command is sent again to every new subscriber: not a new command
    await pub.publishAsync('/sys/pk/dk2/thing/disable', cmd('r1'), { qos: 1, retain: true });
    const j = intake({ url, store, shared: false, protocol: '3.1.1' });
    assert.equal(await j.waitSubscribed(5_000), true);
    await until(() => j.stats().ignored.retained === 1, 5_000, 'the retained message');
    assert.equal(j.stats().enqueued, 0);
    await until(() => i.stats().enqueued === 3, 5_000, 'live copy at the first intake');
  });

  it('aedes 1.2 has no $share: the subscription is granted but delivers nothing', async () => {
    const broker = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => broker.close());
    const url = `mqtt://127.0.0.1:${broker.port}`;
    const store = new MemoryCommandStore({
      ...COMMAND_STORE_DEFAULTS,
      queueLength: 4,
      expiryMs: 60_000,
    });
    cleanups.push(() => store.close());
    const i = intake({ url, store, shared: true });
    assert.equal(await i.waitSubscribed(5_000), true);
    // a plain subscriber next to it: aedes hands a message to every matching subscription
    // at once, so when the plain one has its second message the shared one had the first
    const plain = intake({ url, store, shared: false });
    assert.equal(await plain.waitSubscribed(5_000), true);
    const pub = await publisher(url, 4);
    await pub.publishAsync('/sys/pk/dk/thing/service/reboot', cmd('s1'), { qos: 1 });
    await pub.publishAsync('/sys/pk/dk/thing/service/reboot', cmd('s2'), { qos: 1 });
    await until(() => plain.stats().received === 2, 5_000, 'both at the plain subscriber');
    assert.equal(i.stats().received, 0);
  });

  it('a store unavailable for a while (a Redis failover): the command waits for it and is stored once, not dropped', async () => {
    const broker = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => broker.close());
    const url = `mqtt://127.0.0.1:${broker.port}`;
    const stored: string[] = [];
    let failuresLeft = 3;
    const down = (): Promise<never> =>
      Promise.reject(new CommandError('COMMANDS_UNAVAILABLE', 'test'));
    const flaky: CommandStore = {
      enqueue: (_device, topic) => {
        if (failuresLeft > 0) {
          failuresLeft--;
          return down();
        }
        stored.push(topic);
        return Promise.resolve('queued');
      },
      peek: down,
      fetch: down,
      acknowledge: down,
      waitFor: down,
    };
    // the waits between store attempts run on the intake's clock: the test moves it
    const clock = new ManualClock();
    const i = intake({ url, store: flaky, shared: false, protocol: '3.1.1', clock });
    assert.equal(await i.waitSubscribed(5_000), true);
    const pub = await publisher(url, 4);
    await pub.publishAsync('/sys/pk/dk/thing/service/r', cmd('w1'), { qos: 1 });
    for (let n = 1; n <= 3; n++) {
      await until(() => i.stats().storeRetries === n, 5_000, `failed store attempt ${n}`);
      const wait = clock.nextIn;
      // 50 ms doubling, with jitter, at most 2 s
      assert.ok(wait !== undefined && wait > 0 && wait <= 2_000, `backoff ${wait} ms`);
      assert.equal(stored.length, 0, 'not tried again before its backoff');
      clock.advance(wait);
    }
    await until(() => stored.length === 1, 10_000, 'stored once the store is back');
    assert.deepEqual(stored, ['/sys/pk/dk/thing/service/r'], 'stored once');
    assert.equal(i.stats().storeRetries, 3);
    assert.equal(i.stats().storeErrors, 0, 'nothing lost');
  });

  it('waitSubscribed gives up after its timeout, on the intake clock, while no broker answers', async () => {
    const clock = new ManualClock();
    const i = intake({
      url: `mqtt://127.0.0.1:${await freePort()}`,
      store: new MemoryCommandStore({
        ...COMMAND_STORE_DEFAULTS,
        queueLength: 1,
        expiryMs: 1_000,
        sweepIntervalMs: 0,
      }),
      clock,
    });
    const subscribed = i.waitSubscribed(5_000);
    assert.equal(clock.pendingKeptAlive, 1, 'the wait holds the process open, as before');
    assert.equal(await settlesAt(clock, 5_000, subscribed, 'waitSubscribed'), false);
    // the connection's retries wait on the same clock: closed, nothing is left on it
    await i.close();
    assert.equal(clock.pending, 0);
  });

  it('a failing store: the command is counted as lost, the broker still gets its PUBACK', async () => {
    const broker = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => broker.close());
    const url = `mqtt://127.0.0.1:${broker.port}`;
    let calls = 0;
    const failing: CommandStore = {
      enqueue: () => {
        calls++;
        return Promise.reject(new Error('down'));
      },
      peek: () => Promise.reject(new Error('down')),
      fetch: () => Promise.reject(new Error('down')),
      acknowledge: () => Promise.reject(new Error('down')),
      waitFor: () => Promise.reject(new Error('down')),
    };
    const warnings: string[] = [];
    const i = intake({
      url,
      store: failing,
      shared: false,
      protocol: '3.1.1',
      maxPayloadBytes: 100,
      logger: { info: () => undefined, warn: (_o, msg) => warnings.push(msg) },
    });
    assert.equal(await i.waitSubscribed(5_000), true);
    const pub = await publisher(url, 4);
    await pub.publishAsync('/sys/pk/dk/thing/service/a', cmd('f1'), { qos: 1 });
    await pub.publishAsync('/sys/pk/dk/thing/service/b', cmd('f2'), { qos: 1 });
    await pub.publishAsync('/sys/pk/dk/thing/service/c', Buffer.alloc(101), { qos: 1 });
    await until(() => i.stats().received === 3, 5_000, 'three messages');
    await until(() => i.stats().storeErrors === 2, 5_000, 'two store errors');
    assert.equal(i.stats().tooLarge, 1);
    assert.equal(calls, 2);
    assert.equal(warnings.filter((w) => w.includes('store failed')).length, 1, 'logged once');
    assert.equal(i.state(), 'subscribed');
  });
});
