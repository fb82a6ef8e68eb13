/**
 * The MQTT bridge backend against real brokers: Mosquitto 2 (MQTT 5) started here on free
 * ports, and aedes (MQTT 3.1.1 only, via the embedded broker) for the protocol fallback.
 */
import { after, before, describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { MqttClient } from 'mqtt';
import {
  BackendUnavailableError,
  MqttBridgeBackend,
  ReplyTimeoutError,
  startEmbeddedBroker,
  type EmbeddedBroker,
  type MqttBridgeOptions,
} from '../../../src/bridge/mqtt/index.js';
import { ManualClock } from '../../../src/time/clock.js';
import { enosReply, killBrokers, Mosquitto, platform, subscriber, until } from './brokers.js';
import { settlesAt, UNREACHED_DEADLINE_MS } from '../../helpers/clock.js';
import { MQTT_BRIDGE_DEFAULTS } from '../../helpers/component-defaults.js';

const PK = 'pk1';
const DK = 'dev1';
const POST = `/sys/${PK}/${DK}/thing/measurepoint/post`;

const backends: MqttBridgeBackend[] = [];
const clients: MqttClient[] = [];

function backend(port: number, opts: Partial<MqttBridgeOptions> = {}): MqttBridgeBackend {
  const b = new MqttBridgeBackend({
    ...MQTT_BRIDGE_DEFAULTS,
    url: `mqtt://127.0.0.1:${port}`,
    publishTimeoutMs: 2000,
    replyTimeoutMs: 2000,
    reconnectMinMs: 50,
    reconnectMaxMs: 400,
    connectTimeoutMs: 2000,
    ...opts,
  });
  backends.push(b);
  b.start();
  return b;
}

async function connected(b: MqttBridgeBackend): Promise<void> {
  assert.equal(await b.waitConnected(5000), true, 'backend connects');
}

function request(id: string | number): Buffer {
  return Buffer.from(
    JSON.stringify({ id, version: '1.0', method: 'thing.measurepoint.post', params: {} }),
  );
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<unknown> {
  let caught: unknown;
  try {
    await p;
  } catch (e: unknown) {
    caught = e;
  }
  assert.ok(caught instanceof Error, `expected a rejection with ${code}`);
  assert.equal((caught as { code?: unknown }).code, code);
  return caught;
}

after(async () => {
  await Promise.all(backends.map((b) => b.close()));
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await killBrokers();
});

describe('MQTT bridge against Mosquitto (MQTT 5)', () => {
  let mosq: Mosquitto;
  before(async () => {
    mosq = await Mosquitto.start();
  });

  it('publishes with QoS 1, resolves on PUBACK, a subscriber sees it with user properties', async () => {
    const sub = await subscriber(mosq.port, `tenant1/sys/${PK}/#`);
    clients.push(sub.client);
    const b = backend(mosq.port, { topicPrefix: 'tenant1', poolSize: 2 });
    await connected(b);
    assert.equal(b.stats().protocolVersion, 5, 'MQTT 5 negotiated with Mosquitto');
    await until(() => b.stats().connections.up === 2, 3000, 'both pool connections up');

    await b.publish(POST, Buffer.from('{"id":"1"}'), {
      userProperties: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
    });
    await until(() => sub.messages.length === 1, 2000, 'the subscriber to receive it');
    const m = sub.messages[0]!;
    assert.equal(m.topic, `tenant1${POST}`);
    assert.equal(m.payload.toString(), '{"id":"1"}');
    assert.deepEqual(
      { ...m.userProperties },
      {
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      },
    );

    // many concurrent publishes over the pool, all acknowledged and all delivered
    await Promise.all(
      Array.from({ length: 200 }, (_, i) => b.publish(POST, Buffer.from(String(i)))),
    );
    await until(() => sub.messages.length === 201, 3000, 'all 201 messages');
    const s = b.stats();
    assert.equal(s.state, 'connected');
    assert.equal(s.publishes.ok, 201);
    assert.equal(s.pubackLatency.count, 201);
    assert.equal(s.publishes.inflight, 0);
  });

  it('traced and untraced publishes leave in our own PUBLISH, not through mqtt.js publish; only the traced one carries the property', async () => {
    // MqttConnection.publish writes the PUBLISH itself (publish-packet.ts): mqtt.js's
    // publish, its options spread and its store's deep copy of every packet are not on the
    // path (on a build without it, 3 calls). Before, the options handed to mqtt.js had one
    // shape for traced and untraced publishes, since other shapes deoptimized mqtt.js's
    // publish path (bench/history/tracing.md, "The export delay and the publish shape"); now
    // mqtt.js only sees the rare
    // fallback (a disconnecting client, a packet the encoder leaves alone).
    const sub = await subscriber(mosq.port, '/sys/pkShape/#');
    clients.push(sub.client);
    const spy = mock.method(MqttClient.prototype, 'publish');
    try {
      const b = backend(mosq.port, { poolSize: 1 });
      await connected(b);
      const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
      await b.publish('/sys/pkShape/d/thing/plain', Buffer.from('1'));
      await b.publish('/sys/pkShape/d/thing/traced', Buffer.from('2'), {
        userProperties: { traceparent },
      });
      await b.publish('/sys/pkShape/d/thing/plain2', Buffer.from('3'));
      assert.equal(spy.mock.callCount(), 0);
      await until(() => sub.messages.length === 3, 2000, 'the three messages');
      assert.deepEqual(
        sub.messages.map((m) => [
          m.topic.split('/').pop(),
          m.payload.toString(),
          m.userProperties === undefined ? undefined : { ...m.userProperties },
        ]),
        [
          ['plain', '1', undefined],
          ['traced', '2', { traceparent }],
          ['plain2', '3', undefined],
        ],
      );
    } finally {
      spy.mock.restore();
    }
  });

  it('mqttProtocol 3.1.1 connects with level 4 and drops user properties', async () => {
    const sub = await subscriber(mosq.port, '/sys/pk311/#');
    clients.push(sub.client);
    const b = backend(mosq.port, { protocol: '3.1.1', poolSize: 1 });
    await connected(b);
    assert.equal(b.stats().protocolVersion, 4);
    await b.publish('/sys/pk311/d/thing/measurepoint/post', Buffer.from('x'), {
      userProperties: { traceparent: 'abc' },
    });
    await until(() => sub.messages.length === 1, 2000, 'the message');
    assert.equal(sub.messages[0]!.userProperties, undefined);
  });

  it('request: subscribes the reply topic, publishes, resolves with the reply of its id', async () => {
    const p = await platform(mosq.port, `/sys/${PK}/+/thing/measurepoint/post`, (_t, payload) =>
      enosReply(payload),
    );
    clients.push(p);
    const b = backend(mosq.port);
    await connected(b);
    const reply = await b.request(POST, request('42'), `${POST}_reply`, '42');
    assert.deepEqual(JSON.parse(reply.toString()), { id: '42', code: 200, data: {} });
    const s = b.stats();
    assert.equal(s.replies.matched, 1);
    assert.equal(s.subscriptions.active, 1, 'the subscription lingers for the next request');
    assert.equal(s.replies.waiting, 0);
  });

  it('concurrent requests of one device with different ids get their own replies', async () => {
    const topic = `/sys/${PK}/dev2/thing/measurepoint/post`;
    // answers id 1 last, and sends one reply for an id nobody waits for
    const p = await platform(
      mosq.port,
      topic,
      (_t, payload) => enosReply(payload),
      (payload) => (payload.includes('"id":"1"') ? 300 : 0),
    );
    clients.push(p);
    const b = backend(mosq.port, { poolSize: 2 });
    await connected(b);
    const ids = ['1', '2', '3', '4', '5'];
    const replies = await Promise.all(
      ids.map((id) => b.request(topic, request(id), `${topic}_reply`, id)),
    );
    assert.deepEqual(
      replies.map((r) => (JSON.parse(r.toString()) as { id: string }).id),
      ids,
    );
    // a number id matches its decimal string
    const n = await b.request(topic, request(77), `${topic}_reply`, 77);
    assert.equal((JSON.parse(n.toString()) as { id: number }).id, 77);

    // a reply for an unknown id is dropped and counted
    const eight = b.request(topic, request('8'), `${topic}_reply`, '8');
    await p.publishAsync(`${topic}_reply`, JSON.stringify({ id: 'nobody', code: 200 }), {
      qos: 1,
    });
    await eight;
    await until(() => b.stats().replies.unmatched >= 1, 2000, 'the unmatched reply');
    assert.equal(b.stats().replies.matched, 7);
  });

  it('raw up_raw: waits for the first message on up_raw_reply', async () => {
    const topic = `/sys/${PK}/${DK}/thing/model/up_raw`;
    const p = await platform(mosq.port, topic, () => Buffer.from([0xca, 0xfe, 0x00]));
    clients.push(p);
    const b = backend(mosq.port);
    await connected(b);
    const reply = await b.request(topic, Buffer.from([1, 2, 3]), `${topic}_reply`, undefined);
    assert.deepEqual([...reply], [0xca, 0xfe, 0x00]);
  });

  it('reply timeout: ReplyTimeoutError BACKEND_REPLY_TIMEOUT after replyTimeoutMs', async () => {
    const clock = new ManualClock();
    const b = backend(mosq.port, { replyTimeoutMs: 300, replyLingerMs: 100, clock });
    await connected(b);
    const topic = '/sys/silent/d/thing/measurepoint/post';
    let settled = false;
    const asked = b.request(topic, request('9'), `${topic}_reply`, '9').finally(() => {
      settled = true;
    });
    const rejected = rejectsWith(asked, 'BACKEND_REPLY_TIMEOUT');
    // the reply deadline runs from the PUBACK
    await until(() => b.stats().publishes.ok === 1, 2000, 'the PUBACK');
    clock.advance(299);
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, 'no answer before replyTimeoutMs');
    clock.advance(1);
    await until(() => settled, 2000, 'the reply deadline');
    const err = await rejected;
    assert.ok(err instanceof ReplyTimeoutError);
    const s = b.stats();
    assert.equal(s.replies.timedOut, 1);
    assert.equal(s.publishes.ok, 1, 'the request itself was published');
    await until(() => b.stats().subscriptions.active === 0, 2000, 'the linger to end');
  });

  it('close() rejects waiting requests and later calls with BACKEND_CLOSED', async () => {
    const b = backend(mosq.port, { replyTimeoutMs: 5000 });
    await connected(b);
    const topic = '/sys/closing/d/thing/measurepoint/post'; // no stand-in platform answers it
    const pending = rejectsWith(
      b.request(topic, request('1'), `${topic}_reply`, '1'),
      'BACKEND_CLOSED',
    );
    await until(() => b.stats().publishes.ok === 1, 2000, 'the publish');
    await b.close();
    await pending;
    await rejectsWith(b.publish(POST, Buffer.from('x')), 'BACKEND_CLOSED');
    assert.equal(b.state(), 'down');
  });
});

describe('MQTT 3.1.1 fallback against aedes (3.1.1 only)', () => {
  let broker: EmbeddedBroker;
  before(async () => {
    broker = await startEmbeddedBroker({ port: 0 });
  });
  after(async () => {
    await Promise.all(backends.map((b) => b.close()));
    await broker.close();
  });

  it('auto: MQTT 5 refused (CONNACK 0x01), falls back to 3.1.1 and publishes', async () => {
    const sub = await subscriber(broker.port, '/sys/#', { protocolVersion: 4 });
    clients.push(sub.client);
    const b = backend(broker.port, { protocol: 'auto', poolSize: 2 });
    await connected(b);
    const s = b.stats();
    assert.equal(s.protocolVersion, 4);
    assert.equal(s.protocolFallbacks, 1, 'one fallback for the whole pool');
    await b.publish(POST, Buffer.from('via aedes'), { userProperties: { traceparent: 'x' } });
    await until(() => sub.messages.length === 1, 2000, 'the message through aedes');
    assert.equal(sub.messages[0]!.payload.toString(), 'via aedes');

    // request/reply works on 3.1.1 too
    const p = await platform(broker.port, POST, (_t, payload) => enosReply(payload), undefined, {
      protocolVersion: 4,
    });
    clients.push(p);
    const reply = await b.request(POST, request('a1'), `${POST}_reply`, 'a1');
    assert.equal((JSON.parse(reply.toString()) as { id: string }).id, 'a1');
  });

  it('mqttProtocol 5 against a 3.1.1-only broker stays down and fails fast', async () => {
    const clock = new ManualClock();
    const b = backend(broker.port, { protocol: '5', poolSize: 1, clock });
    await until(() => b.state() === 'down', 3000, 'state down');
    assert.equal(await settlesAt(clock, 300, b.waitConnected(300), 'waitConnected'), false);
    await rejectsWith(b.publish(POST, Buffer.from('x')), 'BACKEND_UNAVAILABLE');
    assert.equal(b.stats().protocolFallbacks, 0);
  });
});

describe('MQTT bridge faults (own Mosquitto per case)', () => {
  it('broker stopped: fails fast, state down; restarted: reconnects and publishes', async () => {
    const mosq = await Mosquitto.start();
    // rejecting at all shows it rejects at once, without waiting for a deadline
    const never = UNREACHED_DEADLINE_MS;
    const clock = new ManualClock();
    const b = backend(mosq.port, {
      poolSize: 2,
      publishTimeoutMs: never,
      replyTimeoutMs: never,
      clock,
    });
    await connected(b);
    await b.publish(POST, Buffer.from('before'));

    await mosq.stop();
    await until(() => b.state() === 'down', 3000, 'state down');
    const err = await rejectsWith(b.publish(POST, Buffer.from('x')), 'BACKEND_UNAVAILABLE');
    assert.ok(err instanceof BackendUnavailableError);
    await rejectsWith(b.request(POST, request('1'), `${POST}_reply`, '1'), 'BACKEND_UNAVAILABLE');

    // each connection waits for its retry on the backend's clock: soon (25-50 ms, half of
    // reconnectMinMs and up) after a drop from up, and holding the process open
    await until(() => clock.pendingKeptAlive === 2, 3000, 'one retry per connection');
    const wait = clock.nextIn ?? 0;
    assert.ok(wait >= 25 && wait <= 50, `retry after ${wait} ms`);
    assert.equal(b.stats().reconnects, 0, 'no attempt before the retry');
    await mosq.restart();
    clock.advance(50);
    assert.equal(b.stats().reconnects, 2, 'both retried');
    // (the wait's own deadline is on the manual clock: the condition, in real time, fails)
    await until(() => b.state() === 'connected', 5000, 'reconnected');
    assert.equal(await b.waitConnected(5000), true, 'reconnects by itself');
    const sub = await subscriber(mosq.port, POST);
    clients.push(sub.client);
    await b.publish(POST, Buffer.from('after'));
    await until(() => sub.messages.length === 1, 2000, 'the message after the restart');
    const s = b.stats();
    assert.ok(s.connectionDowns >= 1, 'downs counted');
    assert.ok(s.reconnects >= 1, 'reconnects counted');
    assert.equal(s.publishes.failed.unavailable, 2);
    await mosq.stop();
  });

  it('no PUBACK (broker paused): rejects after publishTimeoutMs; flow control; lost connection', async () => {
    const mosq = await Mosquitto.start();
    // in-flight limit 1: concurrent publishes wait for the slot and all succeed
    const one = backend(mosq.port, { poolSize: 1, maxInflight: 1 });
    await connected(one);
    await Promise.all(Array.from({ length: 20 }, (_, i) => one.publish(POST, Buffer.from(`${i}`))));
    assert.equal(one.stats().publishes.ok, 20);

    const clock = new ManualClock();
    const b = backend(mosq.port, {
      poolSize: 1,
      publishTimeoutMs: 300,
      clock,
      maxInflight: 1,
      maxQueued: 1,
      keepaliveSec: 60,
    });
    await connected(b);

    mosq.pause();
    const first = rejectsWith(b.publish(POST, Buffer.from('paused')), 'BACKEND_PUBACK_TIMEOUT');
    const second = rejectsWith(
      b.publish(POST, Buffer.from('waits for the slot')),
      'BACKEND_PUBACK_TIMEOUT',
    );
    // the slot is taken and one publish already waits: the next one is refused at once
    await rejectsWith(b.publish(POST, Buffer.from('x')), 'BACKEND_OVERLOADED');
    await until(() => b.stats().publishes.inflight === 1, 2000, 'the publish on the wire');
    clock.advance(299);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(b.stats().publishes.failed['puback-timeout'], 0, 'not before the deadline');
    clock.advance(1);
    await until(
      () => b.stats().publishes.failed['puback-timeout'] === 2,
      2000,
      'both deadlines (the one that waited for the slot too)',
    );
    await first;
    await second;
    assert.equal(b.state(), 'connected', 'the TCP connection itself is still up');

    // resumed: the late PUBACK frees the slot and publishing goes on
    mosq.resume();
    await b.publish(POST, Buffer.from('resumed'));

    // paused, then killed while a publish waits for its PUBACK: connection lost, no hang
    mosq.pause();
    const pending = rejectsWith(b.publish(POST, Buffer.from('lost')), 'BACKEND_CONNECTION_LOST');
    await until(() => b.stats().publishes.inflight === 1, 2000, 'the publish on the wire');
    await mosq.stop('SIGKILL');
    await pending;
    await until(() => b.state() === 'down', 2000, 'state down');
    const s = b.stats();
    assert.equal(s.publishes.failed['puback-timeout'], 2);
    assert.equal(s.publishes.failed.overloaded, 1);
    assert.equal(s.publishes.failed['connection-lost'], 1);
  });

  it('a refused login is retried with backoff and never logs the password', async () => {
    const mosq = await Mosquitto.start({ config: 'allow_anonymous false' });
    const clock = new ManualClock();
    const lines: string[] = [];
    const logger = {
      info: (obj: Record<string, unknown>, msg: string) => lines.push(JSON.stringify(obj) + msg),
      warn: (obj: Record<string, unknown>, msg: string) => lines.push(JSON.stringify(obj) + msg),
    };
    const b = backend(mosq.port, {
      url: `mqtt://urluser:url-secret-1@127.0.0.1:${mosq.port}`,
      username: 'bridge',
      password: 'opt-secret-2',
      poolSize: 1,
      logger,
      clock,
    });
    // each refusal sets the retry on the backend's clock: 25-50 ms, then 50-100 ms
    for (const [n, high] of [50, 100].entries()) {
      await until(() => clock.pending === 1, 3000, `refusal ${n + 1}`);
      const wait = clock.nextIn ?? 0;
      assert.ok(wait >= high / 2 && wait <= high, `retry ${n + 1} after ${wait} ms`);
      clock.advance(wait - 1);
      assert.equal(b.stats().reconnects, n, 'not before its delay');
      clock.advance(1);
    }
    assert.equal(b.stats().reconnects, 2, 'retries');
    await until(() => clock.pending === 1, 3000, 'refusal 3');
    assert.equal(b.state(), 'down');
    const err = await rejectsWith(b.publish(POST, Buffer.from('x')), 'BACKEND_UNAVAILABLE');
    assert.ok(lines.length > 0, 'the failure is logged');
    const text = lines.join('\n') + String(err) + JSON.stringify(b.stats());
    assert.ok(!text.includes('secret'), text);
    await b.close();
    await mosq.stop();
  });
});
