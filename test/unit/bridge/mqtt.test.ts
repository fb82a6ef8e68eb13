/**
 * Pure parts of the MQTT bridge backend: reply matching, subscriptions, counters, errors, and
 * the keep-alive timer handed to mqtt.js.
 */
import { createHook } from 'node:async_hooks';
import { describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import {
  BackendRejectedError,
  BackendUnavailableError,
  MqttBackendError,
  MqttBridgeBackend,
  redactUrl,
  ReplyTimeoutError,
} from '../../../src/bridge/mqtt/index.js';
import { backoffDelay, clientIdFor } from '../../../src/bridge/mqtt/connection.js';
import type { MessageBackend } from '../../../src/bridge/types.js';
import { extractReplyId, ReplyMatcher } from '../../../src/bridge/mqtt/replies.js';
import { LatencyHistogram } from '../../../src/bridge/mqtt/stats.js';
import {
  ReplySubscriptions,
  type SubscribingConnection,
} from '../../../src/bridge/mqtt/subscriptions.js';
import { settlesAt } from '../../helpers/clock.js';
import { MQTT_BRIDGE_DEFAULTS } from '../../helpers/component-defaults.js';
import { ManualClock } from '../../../src/time/clock.js';
import { KeepaliveManager, type MqttClient } from 'mqtt';
import { KeepaliveTimer } from '../../../src/bridge/mqtt/keepalive-timer.js';

const buf = (s: string): Buffer => Buffer.from(s);
const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` (I/O to happen, not a deadline) every 5 ms; throws after 10 s. */
async function waitFor(cond: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !cond(); waited += 5) {
    if (waited > 10_000) throw new Error(`timed out waiting for ${what}`);
    await tick(5);
  }
}

describe('extractReplyId', () => {
  it('reads string and number ids of a JSON object', () => {
    assert.equal(extractReplyId(buf('{"id":"17","code":200,"data":{}}')), '17');
    assert.equal(extractReplyId(buf(' \n\t{"code":200,"id":17}')), '17');
    assert.equal(extractReplyId(buf('{"id":"","code":200}')), '');
  });
  it('is undefined for anything else', () => {
    for (const s of ['', 'x', '[{"id":"1"}]', '{"id":null}', '{"id":{}}', '{"id":"1"', '"1"']) {
      assert.equal(extractReplyId(buf(s)), undefined, s);
    }
    assert.equal(extractReplyId(Buffer.from([0xff, 0xfe, 0x00])), undefined);
  });
  it('takes the id JSON.parse would: the last top-level one, escapes decoded', () => {
    assert.equal(extractReplyId(buf('{"id":"1","data":{"id":"2"},"id":"3"}')), '3');
    assert.equal(extractReplyId(buf('{"id":"1","id":true}')), undefined);
    assert.equal(extractReplyId(buf('{"data":{"id":"2"}}')), undefined);
    assert.equal(extractReplyId(buf('{"id":"\\u0031\\u0037"}')), '17');
    assert.equal(extractReplyId(buf('{"\\u0069d":"17"}')), '17');
    assert.equal(extractReplyId(buf('{"id":1.70e1}')), '17');
    assert.equal(extractReplyId(buf('{"id":-0}')), '0');
    assert.equal(extractReplyId(buf('{"id":1e999}')), undefined, 'not finite');
  });
  it('reads a plain id without JSON.parse', () => {
    const parse = mock.method(JSON, 'parse');
    try {
      const m = new ReplyMatcher();
      const w = m.add('t_reply', '17');
      assert.equal(m.deliver('t_reply', buf('{"id":"17","code":200,"data":null}')), 1);
      assert.equal(w.settled, true);
      assert.equal(extractReplyId(buf('{"code":200,"id":17}')), '17');
      assert.equal(parse.mock.callCount(), 0);
    } finally {
      parse.mock.restore();
    }
  });
});

describe('ReplyMatcher', () => {
  it('hands each reply to the waiter of its id', async () => {
    const m = new ReplyMatcher();
    const a = m.add('t_reply', '1');
    const b = m.add('t_reply', '2');
    assert.equal(m.size, 2);
    assert.equal(m.deliver('t_reply', buf('{"id":"2"}')), 1);
    assert.equal(m.deliver('t_reply', buf('{"id":"3"}')), 0, 'unknown id');
    assert.equal(m.deliver('other', buf('{"id":"1"}')), 0, 'other topic');
    assert.equal(m.deliver('t_reply', buf('{"id":"1","code":200}')), 1);
    assert.equal((await a.promise).toString(), '{"id":"1","code":200}');
    assert.equal((await b.promise).toString(), '{"id":"2"}');
    assert.equal(m.size, 0);
    assert.equal(m.deliver('t_reply', buf('{"id":"1"}')), 0, 'a duplicate finds nobody');
  });

  it('settles every waiter of one id with the same reply', async () => {
    const m = new ReplyMatcher();
    const a = m.add('t', '5');
    const b = m.add('t', '5');
    assert.equal(m.deliver('t', buf('{"id":5}')), 2);
    assert.deepEqual(await a.promise, await b.promise);
  });

  it('raw waiters take messages first come, first served; id waiters go first', async () => {
    const m = new ReplyMatcher();
    const r1 = m.add('raw', undefined);
    const r2 = m.add('raw', undefined);
    const j = m.add('raw', '9');
    assert.equal(m.deliver('raw', Buffer.from([1])), 1);
    assert.equal(m.deliver('raw', buf('{"id":"9"}')), 1);
    assert.equal(m.deliver('raw', Buffer.from([2])), 1);
    assert.equal(m.deliver('raw', Buffer.from([3])), 0);
    assert.deepEqual([...(await r1.promise)], [1]);
    assert.deepEqual([...(await r2.promise)], [2]);
    assert.equal((await j.promise).toString(), '{"id":"9"}');
  });

  it('fail removes one waiter; failAll rejects the rest; no unhandled rejection', async () => {
    const m = new ReplyMatcher();
    const a = m.add('t', '1');
    const b = m.add('t', '2');
    const c = m.add('u', undefined);
    assert.equal(m.fail(a, new Error('timeout')), true);
    assert.equal(m.fail(a, new Error('again')), false);
    assert.equal(m.deliver('t', buf('{"id":"1"}')), 0);
    await assert.rejects(a.promise, /timeout/);
    m.failAll(new Error('closed'));
    await assert.rejects(b.promise, /closed/);
    await assert.rejects(c.promise, /closed/);
    assert.equal(m.size, 0);
    // failed before anyone awaited it: no unhandled rejection (Node reports them after the
    // microtasks of the turn, so a turn later one would have been seen)
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): number => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      m.fail(m.add('t', '3'), new Error('nobody listens'));
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    assert.deepEqual(unhandled, []);
  });

  it('makes one promise per answered waiter (none more to guard against unhandled rejections)', async () => {
    const m = new ReplyMatcher();
    let promises = 0;
    const hook = createHook({
      init: (_id, type) => {
        if (type === 'PROMISE') promises++;
      },
    });
    hook.enable();
    let w;
    try {
      w = m.add('t', '1');
      m.deliver('t', buf('{"id":"1"}'));
    } finally {
      hook.disable();
    }
    assert.equal(promises, 1);
    assert.equal((await w.promise).toString(), '{"id":"1"}');
  });

  it('matches the exact topic and id, also where a topic holds U+0000', async () => {
    const m = new ReplyMatcher();
    const a = m.add('t', 'x\u0000y');
    const b = m.add('t\u0000x', 'y');
    const c = m.add('t\u0000x', 'y');
    assert.equal(m.deliver('t', buf('{"id":"x\\u0000y"}')), 1);
    assert.equal((await a.promise).toString(), '{"id":"x\\u0000y"}');
    assert.equal(m.deliver('t', buf('{"id":"x\\u0000y"}')), 0);
    assert.equal(m.size, 2);
    const d = m.add('t', 'x\u0000y');
    assert.equal(m.deliver('t\u0000x', buf('{"id":"y"}')), 2);
    assert.deepEqual(await b.promise, await c.promise);
    assert.equal(m.size, 1);
    assert.equal(m.fail(d, new Error('timeout')), true);
    await assert.rejects(d.promise, /timeout/);
    assert.equal(m.size, 0);
  });
});

class FakeConn implements SubscribingConnection {
  subscribed: string[] = [];
  unsubscribed: string[] = [];
  fail = false;
  subscribe(topic: string): Promise<void> {
    this.subscribed.push(topic);
    return this.fail
      ? Promise.reject(new BackendUnavailableError('BACKEND_SUBSCRIBE_FAILED'))
      : Promise.resolve();
  }
  unsubscribe(topic: string): void {
    this.unsubscribed.push(topic);
  }
}

describe('ReplySubscriptions', () => {
  it('subscribes once per topic, shares it, lingers after the last user', async () => {
    const conn = new FakeConn();
    const clock = new ManualClock();
    const subs = new ReplySubscriptions(() => conn, 1000, 30, clock);
    const a = subs.acquire('t');
    const b = subs.acquire('t');
    await Promise.all([a.ready, b.ready]);
    assert.deepEqual(conn.subscribed, ['t']);
    subs.release(a);
    subs.release(b);
    assert.equal(subs.active, 1, 'lingering');
    const c = subs.acquire('t');
    clock.advance(50);
    assert.deepEqual(conn.unsubscribed, [], 'reuse cancels the linger');
    subs.release(c);
    clock.advance(29);
    assert.deepEqual(conn.unsubscribed, [], 'lingers for 30 ms');
    clock.advance(1);
    assert.deepEqual(conn.unsubscribed, ['t']);
    assert.equal(subs.active, 0);
    subs.acquire('t');
    assert.deepEqual(conn.subscribed, ['t', 't'], 'subscribed again after the linger');
  });

  it('lingers on one timer of its clock, not a host timer per release', async () => {
    const conn = new FakeConn();
    const clock = new ManualClock();
    const subs = new ReplySubscriptions(() => conn, 1000, 30, clock);
    for (let i = 0; i < 50; i++) {
      const lease = subs.acquire(`t${i % 5}`);
      await lease.ready;
      assert.equal(lease.subscribed, true, 'the SUBACK is known once ready resolved');
      subs.release(lease);
      clock.advance(1);
    }
    assert.equal(clock.pending, 1, 'five lingering topics, one host timer');
    assert.deepEqual(conn.unsubscribed, []);
    clock.advance(30);
    assert.deepEqual(conn.unsubscribed.sort(), ['t0', 't1', 't2', 't3', 't4']);
    assert.equal(subs.active, 0);
    assert.equal(clock.pending, 0);
  });

  it('a failed subscribe is dropped and counted; a lost connection drops its topics', async () => {
    const conn = new FakeConn();
    conn.fail = true;
    const subs = new ReplySubscriptions(() => conn, 1000, 1000);
    const a = subs.acquire('t');
    await assert.rejects(a.ready, (e: unknown) => e instanceof BackendUnavailableError);
    subs.release(a);
    assert.equal(subs.failed, 1);
    assert.equal(subs.active, 0);
    conn.fail = false;
    const b = subs.acquire('t');
    await b.ready;
    subs.connectionLost(conn);
    assert.equal(subs.active, 0);
    subs.release(b); // releasing a discarded lease is harmless
    assert.deepEqual(conn.unsubscribed, []);
  });

  it('throws BACKEND_UNAVAILABLE when no connection is up', () => {
    const subs = new ReplySubscriptions<FakeConn>(() => undefined, 1000, 1000);
    assert.throws(
      () => subs.acquire('t'),
      (e: unknown) => e instanceof BackendUnavailableError && e.code === 'BACKEND_UNAVAILABLE',
    );
  });
});

describe('counters and helpers', () => {
  it('LatencyHistogram keeps cumulative buckets, count and sum', () => {
    const h = new LatencyHistogram([1, 10, 100]);
    for (const ms of [0.5, 1, 5, 50, 500]) h.observe(ms);
    assert.deepEqual(h.snapshot(), {
      boundsMs: [1, 10, 100],
      cumulative: [2, 3, 4],
      count: 5,
      sumMs: 556.5,
    });
  });

  it('backoffDelay doubles from min up to max with equal jitter', () => {
    assert.equal(backoffDelay(0, 100, 1000, 0), 50);
    assert.equal(backoffDelay(0, 100, 1000, 1), 100);
    assert.equal(backoffDelay(2, 100, 1000, 1), 400);
    assert.equal(backoffDelay(10, 100, 1000, 1), 1000);
    assert.equal(backoffDelay(1000, 100, 1000, 0.5), 750);
  });

  it('clientIdFor adds a random suffix and the pool index', () => {
    const a = clientIdFor('coap-edge-', 0);
    assert.match(a, /^coap-edge-[0-9a-f]{8}-0$/);
    assert.notEqual(a, clientIdFor('coap-edge-', 0));
    assert.ok(a.length <= 23, 'fits the MQTT 3.1.1 guaranteed length');
  });

  it('redactUrl drops credentials', () => {
    assert.equal(redactUrl('mqtts://u:p%40ss@broker:8883/x'), 'mqtts://broker:8883');
    assert.equal(redactUrl('not a url'), '<invalid url>');
  });
});

describe('errors', () => {
  it('carry stable codes and class names', () => {
    const u = new BackendUnavailableError('BACKEND_PUBACK_TIMEOUT');
    assert.ok(u instanceof MqttBackendError);
    assert.equal(u.name, 'BackendUnavailableError');
    assert.equal(u.code, 'BACKEND_PUBACK_TIMEOUT');
    const r = new BackendRejectedError(0x87);
    assert.equal(r.code, 'BACKEND_PUBLISH_REJECTED');
    assert.equal(r.reasonCode, 0x87);
    assert.match(r.message, /0x87/);
    const t = new ReplyTimeoutError('/sys/a/b/thing/measurepoint/post_reply', 5000);
    assert.equal(t.code, 'BACKEND_REPLY_TIMEOUT');
    assert.equal(t.name, 'ReplyTimeoutError');
  });
});

describe('MqttBridgeBackend without a broker', () => {
  it("is the router's MessageBackend", async () => {
    const b = new MqttBridgeBackend({ ...MQTT_BRIDGE_DEFAULTS, url: 'mqtt://127.0.0.1:1' });
    const backend: MessageBackend = b; // compile-time check
    assert.equal(typeof backend.request, 'function');
    await b.close();
  });

  it('is down before start and fails fast; close is idempotent', async () => {
    const b = new MqttBridgeBackend({
      ...MQTT_BRIDGE_DEFAULTS,
      url: 'mqtt://127.0.0.1:1',
      password: 'pw-secret',
    });
    assert.equal(b.state(), 'down');
    await assert.rejects(
      b.publish('/sys/a/b/thing/measurepoint/post', Buffer.from('x')),
      (e: unknown) => e instanceof BackendUnavailableError && e.code === 'BACKEND_UNAVAILABLE',
    );
    await assert.rejects(
      b.request('/sys/a/b/thing/measurepoint/post', Buffer.from('{}'), 'r', '1'),
      (e: unknown) => e instanceof BackendUnavailableError && e.code === 'BACKEND_UNAVAILABLE',
    );
    const s = b.stats();
    assert.equal(s.publishes.failed.unavailable, 2);
    assert.equal(s.connections.total, 2);
    assert.ok(!JSON.stringify(s).includes('pw-secret'));
    await b.close();
    await b.close();
    await assert.rejects(
      b.publish('/x', Buffer.from('x')),
      (e: unknown) => e instanceof BackendUnavailableError && e.code === 'BACKEND_CLOSED',
    );
  });

  it('refuses wildcard, NUL and empty topics before sending (BACKEND_BAD_TOPIC)', async () => {
    const b = new MqttBridgeBackend({ ...MQTT_BRIDGE_DEFAULTS, url: 'mqtt://127.0.0.1:1' });
    for (const t of ['', '/sys/+/d/x', '/sys/p/d/#', '/sys/p/\u0000']) {
      await assert.rejects(
        b.publish(t, Buffer.from('x')),
        (e: unknown) => e instanceof MqttBackendError && e.code === 'BACKEND_BAD_TOPIC',
        JSON.stringify(t),
      );
    }
    await assert.rejects(
      b.request('/sys/p/d/x', Buffer.from('{}'), '/sys/p/d/#', '1'),
      (e: unknown) => e instanceof MqttBackendError && e.code === 'BACKEND_BAD_TOPIC',
    );
    await b.close();
  });

  it('waitConnected resolves false when the backend is closed', async () => {
    const b = new MqttBridgeBackend({
      ...MQTT_BRIDGE_DEFAULTS,
      url: 'mqtt://127.0.0.1:1',
      poolSize: 1,
    });
    const waiting = b.waitConnected(10_000);
    await b.close();
    assert.equal(await waiting, false);
  });

  it('retries a refused TCP connect in the background, backing off on its clock, and reports down', async () => {
    const clock = new ManualClock();
    const b = new MqttBridgeBackend({
      ...MQTT_BRIDGE_DEFAULTS,
      url: 'mqtt://127.0.0.1:1',
      poolSize: 1,
      reconnectMinMs: 100,
      reconnectMaxMs: 1000,
      clock,
    });
    try {
      b.start();
      assert.equal(b.state(), 'connecting');
      // each refused attempt sets the one timer on the clock, its retry: doubling from 100 ms,
      // with equal jitter (half of it random)
      for (const [n, [low, high]] of [
        [50, 100],
        [100, 200],
        [200, 400],
      ].entries()) {
        await waitFor(() => clock.pending === 1, `the retry after attempt ${n + 1}`);
        assert.equal(clock.pendingKeptAlive, 1, 'the retry holds the process open, as before');
        const wait = clock.nextIn ?? 0;
        assert.ok(wait >= (low ?? 0) && wait <= (high ?? 0), `retry ${n + 1} after ${wait} ms`);
        clock.advance(wait - 1);
        assert.equal(b.stats().reconnects, n, 'not before its delay');
        clock.advance(1);
        assert.equal(b.stats().reconnects, n + 1, 'retried at its delay');
      }
      await waitFor(() => clock.pending === 1, 'the retry after attempt 4');
      assert.ok((clock.nextIn ?? 0) >= 400, 'the next retry is 400-800 ms away');
      assert.equal(b.state(), 'down');
      assert.equal(await settlesAt(clock, 100, b.waitConnected(100), 'waitConnected'), false);
    } finally {
      await b.close();
    }
    assert.equal(clock.pending, 0, 'close() clears the retry');
  });
});

/** A clock that counts the host timers set on it. */
class CountingClock extends ManualClock {
  set = 0;
  override setTimeout(fn: () => void, ms: number, keepAlive = false): number {
    this.set++;
    return super.setTimeout(fn, ms, keepAlive);
  }
}

function managed(keepaliveSec: number): {
  clock: CountingClock;
  manager: KeepaliveManager;
  events: string[];
} {
  const clock = new CountingClock();
  const events: string[] = [];
  const client = {
    keepalive: keepaliveSec,
    log: () => undefined,
    sendPing: () => events.push(`ping@${clock.now()}`),
    onKeepaliveTimeout: () => events.push(`timeout@${clock.now()}`),
  };
  const manager = new KeepaliveManager(
    client as unknown as MqttClient,
    new KeepaliveTimer(clock).forMqtt(),
  );
  return { clock, manager, events };
}

/**
 * `bridge/mqtt/keepalive-timer.ts` driven by mqtt.js's own KeepaliveManager on a ManualClock:
 * the ping and the timeout come when they would with a Node interval, a restart (what every
 * PUBACK does) moves them, and a restart sets no host timer while one is pending.
 */
describe('KeepaliveTimer under mqtt.js keep-alive', () => {
  it('pings after two half-intervals of silence and times out after a third', () => {
    const { clock, events } = managed(30);
    clock.advance(29_999);
    assert.deepEqual(events, []);
    clock.advance(1);
    assert.deepEqual(events, ['ping@30000']);
    clock.advance(15_000);
    assert.deepEqual(events, ['ping@30000', 'timeout@45000']);
  });

  it('a restart moves the ping without setting another host timer', () => {
    const { clock, manager, events } = managed(30);
    assert.equal(clock.set, 1);
    for (let t = 0; t < 100; t++) {
      clock.advance(100);
      manager.reschedule(); // a PUBACK
    }
    assert.equal(clock.set, 1, 'one host timer for 100 restarts');
    // the last restart at 10 s: the first half-interval ends at 25 s, the ping is due at 40 s
    clock.advance(29_999);
    assert.deepEqual(events, []);
    clock.advance(1);
    assert.deepEqual(events, ['ping@40000']);
  });

  it('stops when mqtt.js clears it', () => {
    const { clock, manager, events } = managed(30);
    manager.destroy();
    clock.advance(120_000);
    assert.deepEqual(events, []);
    assert.equal(clock.pending, 0);
  });

  it('a shorter interval set later takes effect at once', () => {
    const { clock, manager, events } = managed(60);
    manager.setKeepalive(2);
    clock.advance(2_000);
    assert.deepEqual(events, ['ping@2000']);
  });
});
