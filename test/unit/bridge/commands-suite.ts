/**
 * One behaviour suite for every CommandStore: the memory store runs it in the unit tests, the
 * Redis store in test/integration/commands. A {@link ManualClock} is injected (entries carry
 * the calling pod's wall time; a wait for a command ends on its deadline), so expiry and
 * waits are tested without waiting.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { CommandStore, DeviceKey } from '../../../src/bridge/types.js';
import { isCommandError, type CommandStoreStats } from '../../../src/bridge/commands/index.js';
import { ManualClock } from '../../../src/time/clock.js';
import { settlesAt, UNREACHED_DEADLINE_MS } from '../../helpers/clock.js';

export interface StoreUnderTest {
  readonly store: CommandStore;
  stats(): CommandStoreStats;
  close(): Promise<void>;
}

export interface SuiteStoreOptions {
  readonly queueLength: number;
  readonly expiryMs: number;
  readonly maxWaiters: number;
  /** Time and timers of the store. */
  readonly clock: ManualClock;
}

export type MakeStore = (o: SuiteStoreOptions) => Promise<StoreUnderTest>;

/** A clock that only moves when told, its wall time in 2023 (a time stamp of 13 digits). */
export function storeClock(): ManualClock {
  return new ManualClock(0, 1_700_000_000_000);
}

let n = 0;
/** A fresh device per test (the Redis suite shares a prefix within one describe). */
export function device(): DeviceKey {
  n++;
  return { productKey: `pk${n}`, deviceKey: `dk${n}` };
}

export function svc(d: DeviceKey, name: string): string {
  return `/sys/${d.productKey}/${d.deviceKey}/thing/service/${name}`;
}

export const json = (id: string | number, method = 'thing.service.x'): Buffer =>
  Buffer.from(JSON.stringify({ id, version: '1.0', method, params: {} }));
export const reply = (id: string | number): Buffer =>
  Buffer.from(JSON.stringify({ id, code: 200, data: {} }));

const HOUR = 3_600_000;

export function commandStoreSuite(name: string, make: MakeStore): void {
  describe(`${name}: command store behaviour`, () => {
    async function withStore(
      o: Partial<SuiteStoreOptions>,
      fn: (s: StoreUnderTest, clock: ManualClock) => Promise<void>,
    ): Promise<void> {
      const clock = storeClock();
      const s = await make({
        queueLength: 16,
        expiryMs: 48 * HOUR,
        maxWaiters: 100,
        clock,
        ...o,
      });
      try {
        await fn(s, clock);
      } finally {
        await s.close();
      }
    }

    it('keeps commands first in, first out, with payload, id and time', async () => {
      await withStore({}, async ({ store }, clock) => {
        const d = device();
        assert.deepEqual(await store.peek(d), { head: undefined, count: 0 });
        assert.equal(await store.enqueue(d, svc(d, 'a'), json('1')), 'queued');
        clock.advance(10);
        assert.equal(await store.enqueue(d, svc(d, 'b'), json(2)), 'queued');
        const raw = `/sys/${d.productKey}/${d.deviceKey}/thing/model/down_raw`;
        const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
        assert.equal(await store.enqueue(d, raw, bytes), 'queued');

        const p = await store.peek(d);
        assert.equal(p.count, 3);
        assert.equal(p.head?.topic, svc(d, 'a'));
        assert.equal(p.head?.messageId, '1');
        assert.equal(p.head?.payload.toString(), json('1').toString());
        assert.equal(p.head?.enqueuedAt, clock.wallNow() - 10);
        assert.match(p.head?.id ?? '', /^[0-9a-f-]{36}$/);

        assert.equal(await store.acknowledge(d, svc(d, 'a'), reply('1')), true);
        const p2 = await store.peek(d);
        assert.equal(p2.head?.topic, svc(d, 'b'));
        assert.equal(p2.head?.messageId, '2', 'a number id reads as its decimal string');
        assert.equal(p2.count, 2);
        assert.equal(await store.acknowledge(d, svc(d, 'b'), reply(2)), true);

        const p3 = await store.peek(d);
        assert.equal(p3.head?.messageId, undefined, 'raw commands carry no id');
        assert.deepEqual([...(p3.head?.payload ?? [])], [...bytes], 'binary payload intact');
        assert.equal(p3.count, 1);
      });
    });

    it('peekNow, when it answers without I/O, says what peek says', async () => {
      await withStore({}, async ({ store }) => {
        const d = device();
        const agree = async (): Promise<void> => {
          const now = store.peekNow?.(d);
          const later = await store.peek(d);
          if (now !== undefined) {
            assert.equal(now.count, later.count);
            assert.equal(now.head?.id, later.head?.id);
          }
        };
        await agree();
        await agree(); // the Redis store now knows the queue is empty (when subscribed)
        assert.equal(await store.enqueue(d, svc(d, 'a'), json('1')), 'queued');
        await agree();
        assert.equal(await store.acknowledge(d, svc(d, 'a'), reply('1')), true);
        await agree();
      });
    });

    it('keeps devices apart, also when keys contain `:` or `%`', async () => {
      await withStore({}, async ({ store }) => {
        const a: DeviceKey = { productKey: 'a:b', deviceKey: 'c' };
        const b: DeviceKey = { productKey: 'a', deviceKey: 'b:c' };
        const c: DeviceKey = { productKey: 'a%3Ab', deviceKey: 'c' };
        const t = (d: DeviceKey) => svc(d, 'x');
        await store.enqueue(a, t(a), json('a'));
        await store.enqueue(b, t(b), json('b'));
        assert.equal((await store.peek(a)).head?.messageId, 'a');
        assert.equal((await store.peek(b)).head?.messageId, 'b');
        assert.equal((await store.peek(c)).count, 0);
      });
    });

    it('refuses a command when the queue is at its bound, and counts it', async () => {
      await withStore({ queueLength: 2 }, async (s) => {
        const d = device();
        assert.equal(await s.store.enqueue(d, svc(d, 'a'), json('1')), 'queued');
        assert.equal(await s.store.enqueue(d, svc(d, 'b'), json('2')), 'queued');
        assert.equal(await s.store.enqueue(d, svc(d, 'c'), json('3')), 'full');
        assert.equal((await s.store.peek(d)).count, 2);
        assert.equal(s.stats().refusedFull, 1);
        assert.equal(s.stats().enqueued, 2);
        assert.equal(await s.store.acknowledge(d, svc(d, 'a'), reply('1')), true);
        assert.equal(await s.store.enqueue(d, svc(d, 'c'), json('3')), 'queued');
        const f = await s.store.fetch(d, svc(d, 'c'));
        assert.equal(f.command?.messageId, '3');
        assert.equal(f.count, 2);
      });
    });

    it('keeps a JSON command once per topic and id (MQTT redelivery)', async () => {
      await withStore({}, async (s) => {
        const d = device();
        assert.equal(await s.store.enqueue(d, svc(d, 'a'), json('7')), 'queued');
        assert.equal(await s.store.enqueue(d, svc(d, 'a'), json('7')), 'queued');
        assert.equal(await s.store.enqueue(d, svc(d, 'b'), json('7')), 'queued');
        assert.equal((await s.store.peek(d)).count, 2);
        assert.equal(s.stats().duplicates, 1);
        // raw commands have no id: each one counts
        const raw = `/sys/${d.productKey}/${d.deviceKey}/thing/model/down_raw`;
        await s.store.enqueue(d, raw, Buffer.from('x'));
        await s.store.enqueue(d, raw, Buffer.from('x'));
        assert.equal((await s.store.peek(d)).count, 4);
      });
    });

    it('drops entries older than the expiry on read; they do not count against the bound', async () => {
      await withStore({ queueLength: 2, expiryMs: 1_000 }, async (s, clock) => {
        const d = device();
        await s.store.enqueue(d, svc(d, 'a'), json('1'));
        clock.advance(500);
        await s.store.enqueue(d, svc(d, 'b'), json('2'));
        clock.advance(499);
        assert.equal((await s.store.peek(d)).count, 2, 'both younger than the expiry');
        clock.advance(1);
        const p = await s.store.peek(d);
        assert.equal(p.count, 1);
        assert.equal(p.head?.messageId, '2');
        assert.equal(s.stats().expired, 1);
        assert.equal(await s.store.enqueue(d, svc(d, 'c'), json('3')), 'queued');
        assert.equal(await s.store.acknowledge(d, svc(d, 'a'), reply('1')), false, 'gone');
        clock.advance(10_000);
        assert.deepEqual(await s.store.fetch(d, svc(d, 'c')), { command: undefined, count: 0 });
        assert.equal(s.stats().expired, 3);
      });
    });

    it('fetches the oldest command on a topic', async () => {
      await withStore({}, async ({ store }) => {
        const d = device();
        await store.enqueue(d, svc(d, 'a'), json('1'));
        await store.enqueue(d, svc(d, 'b'), json('2'));
        await store.enqueue(d, svc(d, 'a'), json('3'));
        const b = await store.fetch(d, svc(d, 'b'));
        assert.equal(b.command?.messageId, '2');
        assert.equal(b.count, 3);
        assert.equal((await store.fetch(d, svc(d, 'a'))).command?.messageId, '1');
        assert.deepEqual(await store.fetch(d, svc(d, 'none')), { command: undefined, count: 3 });
        // fetching removes nothing
        assert.equal((await store.peek(d)).count, 3);
      });
    });

    it('acknowledges by the reply id, whatever the order', async () => {
      await withStore({}, async (s) => {
        const d = device();
        await s.store.enqueue(d, svc(d, 'a'), json('1'));
        await s.store.enqueue(d, svc(d, 'a'), json('2'));
        await s.store.enqueue(d, svc(d, 'a'), json(3));
        assert.equal(await s.store.acknowledge(d, svc(d, 'a'), reply('2')), true);
        assert.equal(await s.store.acknowledge(d, svc(d, 'a'), reply('2')), false, 'only once');
        assert.equal(await s.store.acknowledge(d, svc(d, 'a'), reply('9')), false, 'unknown id');
        assert.equal(await s.store.acknowledge(d, svc(d, 'b'), reply('1')), false, 'other topic');
        assert.equal(await s.store.acknowledge(d, svc(d, 'a'), reply(3)), true);
        const p = await s.store.peek(d);
        assert.equal(p.count, 1);
        assert.equal(p.head?.messageId, '1');
        assert.equal(s.stats().acknowledged, 2);
        assert.equal(s.stats().ackUnmatched, 3);
      });
    });

    it('acknowledges the oldest command on the topic for a raw or id-less reply', async () => {
      await withStore({}, async ({ store }) => {
        const d = device();
        const raw = `/sys/${d.productKey}/${d.deviceKey}/thing/model/down_raw`;
        await store.enqueue(d, raw, Buffer.from([1]));
        await store.enqueue(d, raw, Buffer.from([2]));
        // a raw reply is raw even when it looks like JSON with an id
        assert.equal(await store.acknowledge(d, raw, reply('x')), true);
        assert.deepEqual([...((await store.fetch(d, raw)).command?.payload ?? [])], [2]);
        // a JSON topic answered without an id: the oldest on the topic
        await store.enqueue(d, svc(d, 'a'), json('1'));
        await store.enqueue(d, svc(d, 'a'), json('2'));
        assert.equal(await store.acknowledge(d, svc(d, 'a'), Buffer.from('ok')), true);
        assert.equal((await store.fetch(d, svc(d, 'a'))).command?.messageId, '2');
        // a command without an id answered with one: the oldest id-less command on the topic
        await store.enqueue(d, svc(d, 'b'), Buffer.from('not json'));
        assert.equal(await store.acknowledge(d, svc(d, 'b'), reply('5')), true);
        assert.equal((await store.fetch(d, svc(d, 'b'))).command, undefined);
      });
    });

    it('waitFor resolves at once when a command is queued', async () => {
      await withStore({}, async (s) => {
        const d = device();
        await s.store.enqueue(d, svc(d, 'a'), json('1'));
        const cmd = await s.store.waitFor(d, UNREACHED_DEADLINE_MS);
        assert.equal(cmd?.messageId, '1');
        assert.equal(s.stats().waiters, 0);
        assert.equal((await s.store.peek(d)).count, 1, 'waiting removes nothing');
      });
    });

    it('waitFor resolves when a command arrives', async () => {
      await withStore({}, async (s) => {
        const d = device();
        const other = device();
        // the command, not the deadline, ends the wait
        const waiting = s.store.waitFor(d, UNREACHED_DEADLINE_MS);
        // a later read of the store: the waiter's first look (empty queue) is answered, so
        // the command below wakes it
        assert.equal((await s.store.peek(d)).count, 0);
        assert.equal(s.stats().waiters, 1);
        await s.store.enqueue(other, svc(other, 'a'), json('x'));
        await s.store.enqueue(d, svc(d, 'a'), json('1'));
        const cmd = await waiting;
        assert.equal(cmd?.messageId, '1');
        assert.equal(cmd.topic, svc(d, 'a'));
        assert.equal(s.stats().waiters, 0);
        assert.equal(s.stats().wakeups, 1);
      });
    });

    it('waitFor times out with undefined', async () => {
      await withStore({}, async (s, clock) => {
        const d = device();
        const t0 = clock.now();
        let ms: number | undefined;
        const waiting = s.store.waitFor(d, 80).then((cmd) => {
          ms = clock.now() - t0;
          return cmd;
        });
        await s.store.peek(d); // a later read: the waiter's first look (empty queue) is answered
        assert.equal(s.stats().waiters, 1);
        assert.equal(await settlesAt(clock, 80, waiting, 'waitFor'), undefined);
        assert.ok(ms !== undefined && ms >= 70 && ms < 1_000, `${ms} ms`);
        assert.equal(s.stats().waitTimeouts, 1);
        assert.equal(s.stats().waiters, 0);
        assert.equal(await s.store.waitFor(d, 0), undefined, 'ttd 0: just a look');
      });
    });

    it('bounds the waiters; a queued command is still handed out', async () => {
      await withStore({ maxWaiters: 2 }, async (s) => {
        const [a, b, c] = [device(), device(), device()];
        const wa = s.store.waitFor(a, 5_000);
        const wb = s.store.waitFor(b, 5_000);
        await s.store.peek(a); // a later read: both first looks are answered
        await assert.rejects(
          s.store.waitFor(c, 5_000),
          (e: unknown) => isCommandError(e) && e.code === 'COMMANDS_TOO_MANY_WAITERS',
        );
        assert.equal(s.stats().waitersRefused, 1);
        await s.store.enqueue(c, svc(c, 'a'), json('1'));
        assert.equal((await s.store.waitFor(c, 5_000))?.messageId, '1');
        // closing answers the waiters with undefined and frees them
        await s.close();
        assert.equal(await wa, undefined);
        assert.equal(await wb, undefined);
        assert.equal(s.stats().waiters, 0);
      });
    });
  });
}
