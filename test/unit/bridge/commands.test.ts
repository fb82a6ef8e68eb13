/** The command queue's pure parts and the in-memory store (docs/protocol.md, "Commands for sleepy devices"). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  CommandError,
  MemoryCommandStore,
  commandFilters,
  commandOptions,
  commandQueueKey,
  decodeEntry,
  encodeEntry,
  matchReply,
  messageIdOf,
  parseDeviceId,
  deviceId,
  parseTtd,
} from '../../../src/bridge/commands/index.js';
import { CommandCounters } from '../../../src/bridge/commands/stats.js';
import { Waiters } from '../../../src/bridge/commands/waiters.js';
import type { QueuedCommand } from '../../../src/bridge/types.js';
import { commandStoreSuite, device, json, storeClock, svc } from './commands-suite.js';
import { ManualClock } from '../../../src/time/clock.js';
import { settlesAt, UNREACHED_DEADLINE_MS } from '../../helpers/clock.js';
import { INTAKE_DEFAULTS, COMMAND_STORE_DEFAULTS } from '../../helpers/component-defaults.js';

commandStoreSuite('memory', (o) => {
  const store = new MemoryCommandStore(o);
  return Promise.resolve({ store, stats: () => store.stats(), close: () => store.close() });
});

describe('MemoryCommandStore', () => {
  it('bounds the devices and sweeps expired queues', async () => {
    const clock = storeClock();
    const s = new MemoryCommandStore({
      ...COMMAND_STORE_DEFAULTS,
      queueLength: 4,
      expiryMs: 1_000,
      maxDevices: 2,
      clock,
      sweepIntervalMs: 0,
    });
    const [a, b, c] = [device(), device(), device()];
    assert.equal(await s.enqueue(a, svc(a, 'x'), json('1')), 'queued');
    assert.equal(await s.enqueue(b, svc(b, 'x'), json('1')), 'queued');
    assert.equal(await s.enqueue(c, svc(c, 'x'), json('1')), 'full');
    assert.equal(await s.enqueue(a, svc(a, 'y'), json('2')), 'queued', 'known device');
    clock.advance(1_000);
    assert.equal(await s.enqueue(c, svc(c, 'x'), json('1')), 'queued', 'swept to make room');
    assert.equal(s.devices, 1);
    assert.equal(s.stats().expired, 3);
    clock.advance(1_000);
    s.sweep();
    assert.equal(s.devices, 0);
    await s.close();
  });

  it('after close, waitFor only looks', async () => {
    const s = new MemoryCommandStore({
      ...COMMAND_STORE_DEFAULTS,
      queueLength: 4,
      expiryMs: 1_000,
      sweepIntervalMs: 0,
    });
    const d = device();
    await s.close();
    // answering at all shows it only looked
    assert.equal(await s.waitFor(d, UNREACHED_DEADLINE_MS), undefined);
    await s.enqueue(d, svc(d, 'x'), json('1'));
    assert.equal((await s.waitFor(d, 5_000))?.messageId, '1');
  });

  it('sweeps expired queues on its clock every sweepIntervalMs', async () => {
    const clock = storeClock();
    const s = new MemoryCommandStore({
      ...COMMAND_STORE_DEFAULTS,
      queueLength: 4,
      expiryMs: 1_000,
      clock,
      sweepIntervalMs: 60_000,
    });
    const d = device();
    await s.enqueue(d, svc(d, 'x'), json('1'));
    clock.advance(59_999);
    assert.equal(s.devices, 1, 'expired, but no sweep yet');
    clock.advance(1);
    assert.equal(s.devices, 0, 'the sweep dropped the expired queue');
    assert.equal(s.stats().expired, 1);
    assert.equal(clock.pendingKeptAlive, 0, 'the sweep never holds the process open');
    await s.close();
    assert.equal(clock.pending, 0, 'close stops the sweep');
  });

  it('copies the payload it is given', async () => {
    const s = new MemoryCommandStore({
      ...COMMAND_STORE_DEFAULTS,
      queueLength: 4,
      expiryMs: 1_000,
      sweepIntervalMs: 0,
    });
    const d = device();
    const p = Buffer.from('abc');
    await s.enqueue(d, svc(d, 'x'), p);
    p.fill(0);
    assert.equal((await s.peek(d)).head?.payload.toString(), 'abc');
    await s.close();
  });
});

describe('Waiters', () => {
  const cmd = (id: string): QueuedCommand => ({
    id,
    topic: '/sys/pk/dk/thing/service/x',
    payload: Buffer.alloc(0),
    messageId: id,
    enqueuedAt: 0,
  });

  it('a wake during a slow look makes it look again: no wakeup is lost', async () => {
    let queued: QueuedCommand | undefined = undefined;
    const looks: ((v: QueuedCommand | undefined) => void)[] = [];
    const counters = new CommandCounters();
    const w = new Waiters(
      10,
      counters,
      () => {
        const snapshot = queued;
        return new Promise((resolve) => looks.push(() => resolve(snapshot)));
      },
      new ManualClock(),
    );
    const d = device();
    const waiting = w.wait(d, 5_000);
    looks.shift()?.(undefined); // the first look: nothing yet
    await new Promise((r) => setImmediate(r));
    w.wake(d); // look #2 starts, sees nothing (snapshot taken now)
    queued = cmd('late');
    w.wake(d); // arrives while look #2 runs
    w.wake(d);
    assert.equal(looks.length, 1, 'one look at a time per device');
    looks.shift()?.(undefined);
    await new Promise((r) => setImmediate(r));
    assert.equal(looks.length, 1, 'one more look for the wakes that came meanwhile');
    looks.shift()?.(undefined);
    assert.equal((await waiting)?.id, 'late');
    assert.equal(counters.wakeups, 1);
    assert.equal(w.size, 0);
  });

  it('a failed look leaves the waiters waiting; a failed first look rejects', async () => {
    let fail = true;
    const counters = new CommandCounters();
    const clock = new ManualClock();
    const w = new Waiters(
      10,
      counters,
      () => (fail ? Promise.reject(new Error('x')) : Promise.resolve(cmd('ok'))),
      clock,
    );
    const d = device();
    await assert.rejects(w.wait(d, 1_000), /x/);
    assert.equal(w.size, 0);
    fail = false;
    const waiting = w.wait(d, 1_000);
    assert.equal((await waiting)?.id, 'ok');
    fail = true;
    const slow = new Waiters(10, counters, () => Promise.resolve(undefined), clock);
    const p = slow.wait(d, 50);
    slow.wake(d); // a look that finds nothing leaves the waiter waiting
    assert.equal(clock.pendingKeptAlive, 1, 'a wait holds the process open, as its request does');
    assert.equal(await settlesAt(clock, 50, p, 'the wait'), undefined);
    assert.equal(counters.waitTimeouts, 1);
    assert.equal(clock.pending, 0, 'no timer left behind');
  });
});

describe('queue entries', () => {
  const cmd: QueuedCommand = {
    id: 'e1',
    topic: '/sys/pk/dk/thing/service/x',
    payload: Buffer.from([0, 1, 255]),
    messageId: '42',
    enqueuedAt: 1_700_000_000_123,
  };

  it('round-trip as JSON with a base64 payload', () => {
    const text = encodeEntry(cmd);
    assert.deepEqual(JSON.parse(text), {
      id: 'e1',
      topic: '/sys/pk/dk/thing/service/x',
      payload: 'AAH/',
      messageId: '42',
      enqueuedAt: 1_700_000_000_123,
    });
    assert.deepEqual(decodeEntry(text), cmd);
    const noId = encodeEntry({ ...cmd, messageId: undefined });
    assert.equal('messageId' in JSON.parse(noId), false);
    assert.equal(decodeEntry(noId)?.messageId, undefined);
  });

  it('reject anything else', () => {
    for (const t of [
      '',
      'x',
      '[]',
      '{}',
      '{"id":"a","topic":"t","payload":"AA==","enqueuedAt":"1"}',
      '{"id":"a","topic":"t","payload":"A","enqueuedAt":1}',
      '{"id":"a","topic":"t","payload":"AA==","enqueuedAt":1,"messageId":5}',
      '{"id":1,"topic":"t","payload":"AA==","enqueuedAt":1}',
    ]) {
      assert.equal(decodeEntry(t), undefined, t);
    }
  });

  it('message ids: JSON id of non-raw topics only, empty id is none', () => {
    const t = '/sys/pk/dk/thing/service/x';
    assert.equal(messageIdOf(t, json('a')), 'a');
    assert.equal(messageIdOf(t, json(12)), '12');
    assert.equal(messageIdOf(t, json('')), undefined);
    assert.equal(messageIdOf(t, Buffer.from('raw')), undefined);
    assert.equal(messageIdOf('/sys/pk/dk/thing/model/down_raw', json('a')), undefined);
    assert.equal(messageIdOf('/sys/pk/dk/thing/model/down_raw_reply', json('a')), undefined);
  });

  it('matchReply: id, then oldest id-less; no id: oldest on the topic', () => {
    const e = (topic: string, messageId: string | undefined) => ({ topic, messageId });
    const list = [e('a', '1'), e('b', '2'), e('a', undefined), e('a', '3')];
    assert.equal(matchReply(list, 'a', '3'), 3);
    assert.equal(matchReply(list, 'a', '2'), 2, 'no such id on a: the id-less one');
    assert.equal(matchReply(list, 'b', '9'), -1);
    assert.equal(matchReply(list, 'a', undefined), 0);
    assert.equal(matchReply(list, 'c', undefined), -1);
  });

  it('device ids and Redis keys', () => {
    const d = { productKey: 'p:k%', deviceKey: 'd' };
    assert.equal(deviceId(d), 'p:k%\nd');
    assert.deepEqual(parseDeviceId('p:k%\nd'), d);
    assert.equal(parseDeviceId('a'), undefined);
    assert.equal(parseDeviceId('a\nb\nc'), undefined);
    assert.equal(parseDeviceId('\nb'), undefined);
    assert.equal(commandQueueKey('ce', d), 'ce:cmd:{p%3Ak%25/d}');
  });
});

describe('commandOptions', () => {
  const cmd: QueuedCommand = {
    id: 'e',
    topic: '/sys/pk/dk/thing/service/x',
    payload: Buffer.alloc(10, 1),
    messageId: undefined,
    enqueuedAt: 0,
  };
  it('inlines the payload when it fits', () => {
    assert.deepEqual(commandOptions(cmd, 10), { topic: cmd.topic, payload: cmd.payload });
    assert.deepEqual(commandOptions(cmd, 9), { topic: cmd.topic, payload: undefined });
    assert.deepEqual(commandOptions(cmd, 0), { topic: cmd.topic, payload: undefined });
    const empty = { ...cmd, payload: Buffer.alloc(0) };
    assert.equal(commandOptions(empty, 0).payload?.length, 0);
  });
});

describe('parseTtd', () => {
  it('reads ttd= and hono-ttd=, capped', () => {
    assert.equal(parseTtd(['ttd=30'], 60), 30);
    assert.equal(parseTtd(['x=1', 'hono-ttd=5'], 60), 5);
    assert.equal(parseTtd(['ttd=0'], 60), 0);
    assert.equal(parseTtd(['ttd=3600'], 60), 60);
    assert.equal(parseTtd(['ttd=007'], 60), 7);
    assert.equal(parseTtd(['ttd=9999999999'], 60), 60);
    assert.equal(parseTtd(['ttd=5'], 0), 0);
  });
  it('is undefined when absent or malformed', () => {
    assert.equal(parseTtd([], 60), undefined);
    assert.equal(parseTtd(['ttdx=5', 'xttd=5', 'ttd'], 60), undefined);
    for (const v of ['', '-1', '+1', '1.5', ' 1', '1 ', '1e3', 'abc', '0x10', '12345678901']) {
      assert.equal(parseTtd([`ttd=${v}`], 60), undefined, v);
    }
    assert.equal(parseTtd(['ttd=x', 'ttd=5'], 60), undefined, 'the first one counts');
  });
});

describe('commandFilters', () => {
  const defaults = [
    '/sys/{pk}/{dk}/thing/service/#',
    '/sys/{pk}/{dk}/thing/model/down_raw',
    '/sys/{pk}/{dk}/rrpc/request/+',
  ];
  it('shares the filters, {pk}/{dk} → +, prefix in front', () => {
    assert.deepEqual(commandFilters(defaults, { shareGroup: 'g' }), [
      '$share/g//sys/+/+/thing/service/#',
      '$share/g//sys/+/+/thing/model/down_raw',
      '$share/g//sys/+/+/rrpc/request/+',
    ]);
    assert.deepEqual(
      commandFilters(defaults.slice(0, 1), { ...INTAKE_DEFAULTS, topicPrefix: 'ten/a' }),
      ['$share/coap-edge/ten/a/sys/+/+/thing/service/#'],
    );
    assert.deepEqual(
      commandFilters([...defaults, defaults[0] ?? ''], { shareGroup: 'g', shared: false }),
      ['/sys/+/+/thing/service/#', '/sys/+/+/thing/model/down_raw', '/sys/+/+/rrpc/request/+'],
    );
  });
  it('refuses filters that are not valid MQTT', () => {
    for (const f of ['/sys/{pk}x/{dk}/a', '/sys/#/a', '/sys/a#', '', '/sys/a+/b']) {
      assert.throws(
        () => commandFilters([f], INTAKE_DEFAULTS),
        (e: unknown) => e instanceof CommandError && e.code === 'COMMANDS_BAD_FILTER',
        f,
      );
    }
    assert.throws(() => commandFilters(defaults, { shareGroup: 'a/b' }), CommandError);
    assert.doesNotThrow(() => commandFilters(defaults, { shareGroup: 'a/b', shared: false }));
  });
});
