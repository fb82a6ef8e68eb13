/**
 * The router's request path: what it asks of the command store and the backend for an uplink,
 * and the topic class every answer carries (the request metrics count by it).
 */
import { describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { Router, authorize } from '../../../src/bridge/router.js';
import { MemoryCommandStore } from '../../../src/bridge/commands/index.js';
import type {
  BridgeRequest,
  CommandStore,
  DeviceKey,
  DeviceMessageBackend,
  QueuedCommand,
} from '../../../src/bridge/types.js';
import { TTD_DEFAULTS } from '../../helpers/component-defaults.js';

const principal = {
  productKey: 'pk1',
  deviceKey: 'dk1',
  secureMode: 2 as const,
  lifetime: 3600,
  assetId: undefined,
  sessionId: 's1',
};
const UPLINK = '/topic/sys/pk1/dk1/thing/measurepoint/post';

function request(path: string, body = '{"id":"1"}', query: string[] = []): BridgeRequest {
  return {
    principal,
    method: 'POST',
    path: path.split('/').filter((s) => s !== ''),
    query,
    payload: Buffer.from(body),
    contentFormat: undefined,
  };
}

/** A memory store that counts the calls the router makes. */
class CountingStore extends MemoryCommandStore {
  peeks = 0;
  peekNows = 0;
  constructor() {
    super({ queueLength: 4, expiryMs: 60_000, maxWaiters: 10, sweepIntervalMs: 0 });
  }
  override peek(d: DeviceKey): Promise<{ head: QueuedCommand | undefined; count: number }> {
    this.peeks++;
    return super.peek(d);
  }
  override peekNow(d: DeviceKey): { head: QueuedCommand | undefined; count: number } {
    this.peekNows++;
    return super.peekNow(d);
  }
  acks = 0;
  ackNows = 0;
  override acknowledge(d: DeviceKey, topic: string, reply: Buffer): Promise<boolean> {
    this.acks++;
    return super.acknowledge(d, topic, reply);
  }
  override acknowledgeNow(d: DeviceKey, topic: string, reply: Buffer): boolean {
    this.ackNows++;
    return super.acknowledgeNow(d, topic, reply);
  }
}

function router(commands: CommandStore | undefined, backend: DeviceMessageBackend): Router {
  return new Router({
    ...TTD_DEFAULTS,
    mqtt: backend,
    http: undefined,
    routes: undefined,
    activation: undefined,
    commands,
    presence: undefined,
    unavailableMaxAge: 5,
    maxInlineCommand: 256,
    maxTtd: 60,
  });
}

const replying: DeviceMessageBackend = {
  publish: () => Promise.resolve(),
  request: (_d, _t, _p, _r, id) => Promise.resolve(Buffer.from(`{"id":"${id}","code":200}`)),
};

describe('router request path', () => {
  it('a store that answers without I/O is not asked for a promise per uplink', async () => {
    const store = new CountingStore();
    const r = router(store, replying);
    const res = await r.handle(request(UPLINK));
    assert.equal(res.status, 'changed');
    assert.equal(res.topicClass, 'uplink');
    assert.equal(res.payload?.toString(), '{"id":"1","code":200}');
    assert.equal(store.peekNows, 1);
    assert.equal(store.peeks, 0, 'no promise-returning peek');

    // a command waiting still rides on the answer
    await store.enqueue(principal, '/sys/pk1/dk1/thing/service/reboot', Buffer.from('{"id":"c1"}'));
    const withCmd = await r.handle(request(UPLINK, '{"id":"2"}'));
    assert.equal(withCmd.topicClass, 'uplink');
    assert.equal(withCmd.command?.topic, '/sys/pk1/dk1/thing/service/reboot');
    assert.equal(withCmd.command?.payload?.toString(), '{"id":"c1"}');
    assert.equal(withCmd.payload?.toString(), '{"id":"2","code":200}');
    await store.close();
  });

  it('a command reply is acknowledged without a promise when the store can at once', async () => {
    const store = new CountingStore();
    const r = router(store, replying);
    const reqTopic = '/sys/pk1/dk1/rrpc/request/7';
    await store.enqueue(principal, reqTopic, Buffer.from('{"id":"c7"}'));
    // nothing waits on another topic: the reply matches nothing, the command stays
    const other = await r.handle(request('/topic/sys/pk1/dk1/rrpc/response/8', '{"id":"c7"}'));
    assert.equal(other.status, 'changed');
    assert.equal(store.stats().ackUnmatched, 1);
    assert.equal((await store.peek(principal)).count, 1);
    // the reply to it takes it off the queue
    const res = await r.handle(request('/topic/sys/pk1/dk1/rrpc/response/7', '{"id":"c7"}'));
    assert.deepEqual(res, { status: 'changed', topicClass: 'command-reply' });
    assert.equal(store.stats().acknowledged, 1);
    assert.equal((await store.peek(principal)).count, 0);
    // with nothing queued the reply is counted unmatched, as before
    await r.handle(request('/topic/sys/pk1/dk1/rrpc/response/7', '{"id":"c7"}'));
    assert.equal(store.stats().ackUnmatched, 2);
    assert.equal(store.ackNows, 3);
    assert.equal(store.acks, 0, 'no promise-returning acknowledge');
    await store.close();
  });

  it('every answer carries its topic class, also those given before the backend', async () => {
    const r = router(undefined, replying);
    const bad = await r.handle(request(UPLINK, 'not json'));
    assert.deepEqual(bad, { status: 'bad-request', topicClass: 'uplink' });
    const method = await r.handle({ ...request(UPLINK), method: 'GET' });
    assert.deepEqual(method, { status: 'method-not-allowed', topicClass: 'uplink' });
    const published = await r.handle(request('/topic/sys/pk1/dk1/rrpc/response/1'));
    assert.deepEqual(published, { status: 'changed', topicClass: 'command-reply' });
    const failing = router(undefined, {
      publish: () => Promise.reject(new Error('x')),
      request: () => Promise.reject(new Error('x')),
    });
    const failed = await failing.handle(request(UPLINK));
    assert.deepEqual(failed, { status: 'internal-error', topicClass: 'uplink' });
  });

  it('a publish-only body is checked without JSON.parse; a plain id is read without it too', async () => {
    const r = router(undefined, replying);
    const publishOnly = '/topic/sys/pk1/dk1/rrpc/response/1';
    const parse = mock.method(JSON, 'parse');
    try {
      const published = await r.handle(request(publishOnly, '{"id":"9","data":[1,{"a":null}]}'));
      assert.deepEqual(published, { status: 'changed', topicClass: 'command-reply' });
      for (const body of ['[]', 'null', '"{}"', '{"a":1', '{"a":1}}', '\ufeff{}', '']) {
        const res = await r.handle(request(publishOnly, body));
        assert.deepEqual(res, { status: 'bad-request', topicClass: 'command-reply' }, body);
      }
      assert.equal(parse.mock.callCount(), 0, 'no JSON.parse for a publish-only uplink');
      const replied = await r.handle(request(UPLINK, '{"id":"2"}'));
      assert.equal(replied.payload?.toString(), '{"id":"2","code":200}');
      const numbered = await r.handle(request(UPLINK, '{"data":{"id":"x"},"id":3}'));
      assert.equal(numbered.payload?.toString(), '{"id":"3","code":200}');
      assert.equal(parse.mock.callCount(), 0, 'a plain id is read from the bytes');
      // an id that is not plain is parsed for: still the id JSON.parse gives
      const escaped = await r.handle(request(UPLINK, '{"id":"\\u0034"}'));
      assert.equal(escaped.payload?.toString(), '{"id":"4","code":200}');
      assert.equal(parse.mock.callCount(), 1, 'an escaped id is parsed for');
      for (const body of ['{"id":""}', '{"id":true}', '{"a":{"id":"5"}}', '{"id":"6","id":null}']) {
        const res = await r.handle(request(UPLINK, body));
        assert.deepEqual(res, { status: 'bad-request', topicClass: 'uplink' }, body);
      }
      for (const body of ['[{"id":"7"}]', '{"id":"8"']) {
        const res = await r.handle(request(UPLINK, body));
        assert.deepEqual(res, { status: 'bad-request', topicClass: 'uplink' }, body);
      }
    } finally {
      parse.mock.restore();
    }
  });

  it('a ttd request beyond the long-poll bounds is answered 4.29 before its body is read', async () => {
    const store = new CountingStore();
    const r = new Router({
      mqtt: replying,
      http: undefined,
      routes: undefined,
      activation: undefined,
      commands: store,
      presence: undefined,
      unavailableMaxAge: 5,
      maxInlineCommand: 256,
      maxTtd: 60,
      maxTtdWaitersPerDevice: 0,
      maxTtdWaiters: 0,
    });
    const res = await r.handle(request(UPLINK, 'not json', ['ttd=5']));
    assert.deepEqual(res, { status: 'too-many-requests', maxAge: 5, topicClass: 'uplink' });
    assert.equal(r.ttd.refusedDevice, 1);
    assert.equal(store.peeks + store.peekNows, 0, 'nothing looked up for a refused request');
    await store.close();
  });
});

describe('authorize: refusals', () => {
  it('are shared objects: a refused request allocates nothing for the refusal', () => {
    // the records bench's GET /nothing is refused 4.04 here on every request
    const notFound = authorize(request('/nothing'));
    assert.deepEqual(notFound, { ok: false, response: { status: 'not-found' } });
    assert.equal(authorize(request('/other')), notFound);
    const forbidden = authorize(request('/topic/sys/pk2/dk2/thing/measurepoint/post'));
    assert.equal(forbidden.ok, false);
    assert.equal(authorize(request('/topic/sys/pk1/dk9/thing/measurepoint/post')), forbidden);
    const unauthorized = authorize({
      ...request('/topic/ext/session/pk1/dk1/thing/activate/info'),
      principal: undefined,
    });
    assert.deepEqual(unauthorized, { ok: false, response: { status: 'unauthorized' } });
    assert.ok(Object.isFrozen(notFound) && Object.isFrozen(forbidden));
  });
});
