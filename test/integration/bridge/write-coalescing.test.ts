/**
 * A bridge pool connection holds its socket's writes until the end of the event loop turn
 * (docs/design.md, "One datagram's way"): publishes made in different ticks of one turn
 * leave in one socket write, a publish in a later turn is not held back, and every one of
 * them still gets its PUBACK. Against the shared Mosquitto on 127.0.0.1:1883.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import { connectAsync, MqttClient } from 'mqtt';
import { PoolConnection, type ConnectionHooks } from '../../../src/bridge/mqtt/connection.js';

const BROKER_PORT = 1883;
const TOPIC = `coalesce-test/${process.pid}/${Date.now()}`;

type WriteFn = (this: Socket, ...args: unknown[]) => unknown;

/** Counts `_write` / `_writev` calls on sockets connected to the broker port. */
function spyBrokerWrites(): { count: () => number; restore: () => void } {
  const proto = Socket.prototype as unknown as Record<'_write' | '_writev', WriteFn>;
  const original = { _write: proto._write, _writev: proto._writev };
  let calls = 0;
  for (const name of ['_write', '_writev'] as const) {
    const fn = original[name];
    proto[name] = function (this: Socket, ...args: unknown[]): unknown {
      if (this.remotePort === BROKER_PORT) calls++;
      return fn.apply(this, args);
    };
  }
  return {
    count: () => calls,
    restore: () => {
      proto._write = original._write;
      proto._writev = original._writev;
    },
  };
}

function publish(conn: PoolConnection, text: string): Promise<Error | undefined> {
  return new Promise((resolve, reject) => {
    const sent = conn.publish(`${TOPIC}/${text}`, Buffer.from(text), undefined, resolve);
    if (!sent) reject(new Error('connection not up'));
  });
}

/** A pool connection to the shared broker, up; `onMessage` sees what it receives. */
async function openConnection(
  onMessage: ConnectionHooks['onMessage'] = () => undefined,
): Promise<PoolConnection> {
  let up: () => void = () => undefined;
  const isUp = new Promise<void>((resolve) => (up = resolve));
  const hooks: ConnectionHooks = {
    protocolLevel: () => 5,
    onVersionRefused: () => false,
    onAttempt: () => undefined,
    onUp: () => up(),
    onDown: () => undefined,
    onMessage,
  };
  const conn = new PoolConnection(
    0,
    {
      url: `mqtt://127.0.0.1:${BROKER_PORT}`,
      username: undefined,
      password: undefined,
      clientId: `coalesce-test-${process.pid}-${Date.now()}`,
      keepaliveSec: 30,
      connectTimeoutMs: 5000,
      reconnectMinMs: 100,
      reconnectMaxMs: 1000,
      maxInflight: 16,
    },
    hooks,
  );
  conn.start();
  await isUp;
  return conn;
}

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0';

/** A plain mqtt.js client (MQTT 5) to the shared broker: the platform side. */
/** Options of the connection's own mqtt.js client (its id is openConnection's). */
function isConnectionClient(settings: unknown): boolean {
  const id = (settings as { clientId?: unknown } | undefined)?.clientId;
  return typeof id === 'string' && id.startsWith('coalesce-test-');
}

async function platformClient(): Promise<MqttClient> {
  const client = await connectAsync(`mqtt://127.0.0.1:${BROKER_PORT}`, {
    protocolVersion: 5,
    clientId: `coalesce-platform-${process.pid}-${Date.now()}`,
    reconnectPeriod: 0,
  });
  return client;
}

const conns: PoolConnection[] = [];
after(async () => {
  for (const c of conns) await c.close();
});

describe('bridge connection write coalescing', () => {
  it('sends publishes of one event loop turn in one write, each still acknowledged', async () => {
    const c = await openConnection();
    conns.push(c);

    const spy = spyBrokerWrites();
    try {
      // Three publishes in one turn, each a tick later than the previous one: without the
      // connection's cork each would be its own write (mqtt-packet's own cork, when mqtt.js
      // wrote them, was released on the next tick; ours are single writes).
      const acks: Promise<Error | undefined>[] = [];
      acks.push(publish(c, 'a'));
      await new Promise<void>((resolve) =>
        process.nextTick(() => {
          acks.push(publish(c, 'b'));
          process.nextTick(() => {
            acks.push(publish(c, 'c'));
            resolve();
          });
        }),
      );
      assert.equal(spy.count(), 0, 'nothing written before the end of the turn');
      await new Promise<void>((resolve) => setImmediate(resolve));
      assert.equal(spy.count(), 1, 'one write for the three publishes');
      assert.deepEqual(await Promise.all(acks), [undefined, undefined, undefined]);

      // A publish in a later turn is written in that turn and acknowledged too.
      const before = spy.count();
      const ack = publish(c, 'd');
      await new Promise<void>((resolve) => setImmediate(resolve));
      assert.equal(spy.count(), before + 1);
      assert.equal(await ack, undefined);
    } finally {
      spy.restore();
    }
  });

  it('holds the PUBACK of a received message until the answer it settles has gone', async () => {
    const spy = spyBrokerWrites();
    // writes seen when the message arrives, once the promises it settles have run, and at
    // the end of the turn
    let report: (counts: number[]) => void = () => undefined;
    const seen = new Promise<number[]>((resolve) => (report = resolve));
    const c = await openConnection(() => {
      const counts = [spy.count()];
      void Promise.resolve().then(() => {
        counts.push(spy.count());
        setImmediate(() => report([...counts, spy.count()]));
      });
    });
    conns.push(c);
    try {
      await c.subscribe(`${TOPIC}/echo`, 5000);
      // the broker sends our own QoS 1 publish back to us: mqtt.js acknowledges it
      assert.equal(await publish(c, 'echo'), undefined);
      const [atMessage = -1, afterPromises, atTurnEnd] = await seen;
      assert.equal(afterPromises, atMessage, 'no write before the settled promises ran');
      assert.equal(atTurnEnd, atMessage + 1, 'the PUBACK at the end of the turn');
    } finally {
      spy.restore();
    }
  });
});

describe('bridge connection work per publish', () => {
  it('sets no Node timer per PUBACK (the keep-alive restart only moves a deadline)', async () => {
    const c = await openConnection();
    conns.push(c);
    // one publish first: whatever a first publish sets up is not counted
    assert.equal(await publish(c, 'first'), undefined);
    const timers = { setInterval: 0, setTimeout: 0 };
    const original = { setInterval: globalThis.setInterval, setTimeout: globalThis.setTimeout };
    globalThis.setInterval = (...args: Parameters<typeof setInterval>) => {
      timers.setInterval++;
      return original.setInterval(...args);
    };
    globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
      timers.setTimeout++;
      return original.setTimeout(...args);
    }) as typeof setTimeout;
    try {
      for (let i = 0; i < 20; i++) assert.equal(await publish(c, `n${i}`), undefined);
    } finally {
      globalThis.setInterval = original.setInterval;
      globalThis.setTimeout = original.setTimeout;
    }
    // before: mqtt.js cleared and set its keep-alive interval on each of the 20 PUBACKs
    assert.deepEqual(timers, { setInterval: 0, setTimeout: 0 });
  });

  it("writes its PUBLISHes and the PUBACKs of QoS 1 messages received without mqtt.js's _sendPacket", async () => {
    // publish-packet.ts: mqtt.js's send path (its packet copy for the store, mqtt-packet's
    // writes) is left out both ways. More messages than Mosquitto's in-flight window (20):
    // without our PUBACKs the broker would stop sending.
    const n = 60;
    const received: string[] = [];
    let all: () => void = () => undefined;
    const allReceived = new Promise<void>((resolve) => (all = resolve));
    const c = await openConnection((topic) => {
      if (received.push(topic) === n) all();
    });
    conns.push(c);
    await c.subscribe(`${TOPIC}/many/#`, 5000);
    const proto = MqttClient.prototype as unknown as Record<'_sendPacket', WriteFn>;
    const original = proto._sendPacket;
    const sent: string[] = [];
    proto._sendPacket = function (this: Socket, ...args: unknown[]): unknown {
      sent.push((args[0] as { cmd: string }).cmd);
      return original.apply(this, args);
    };
    try {
      const acks = Array.from({ length: n }, (_, i) => publish(c, `many/${i}`));
      assert.deepEqual(new Set(await Promise.all(acks)), new Set([undefined]));
      await allReceived;
      // before: one publish and one puback per message
      assert.deepEqual(sent, []);
    } finally {
      proto._sendPacket = original;
    }
  });

  it("settles PUBACKs before mqtt.js's parser: no parse per publish", async () => {
    // inbound-tap.ts: a read that holds only PUBACKs of pending publishes never reaches
    // mqtt-packet's parser (on a build without the tap, one parse per PUBACK read)
    const c = await openConnection();
    conns.push(c);
    assert.equal(await publish(c, 'first'), undefined);
    const require = createRequire(import.meta.url);
    const parser = require('mqtt-packet/parser.js') as { prototype: Record<'parse', WriteFn> };
    const original = parser.prototype.parse;
    let parses = 0;
    parser.prototype.parse = function (this: Socket, ...args: unknown[]): unknown {
      parses++;
      return original.apply(this, args);
    };
    try {
      for (let i = 0; i < 20; i++) assert.equal(await publish(c, `p${i}`), undefined);
    } finally {
      parser.prototype.parse = original;
    }
    assert.equal(parses, 0);
  });

  it("handles received PUBLISHes before mqtt.js's parser: no parse per message", async () => {
    // inbound-tap.ts with received-publish.ts: a read that holds only QoS 0/1 PUBLISHes (and
    // PUBACKs of pending publishes) never reaches mqtt-packet's parser; the handler still gets
    // each message once, in order, with its MQTT 5 traceparent, and the broker its PUBACKs
    // (more QoS 1 messages than Mosquitto's in-flight window of 20). On a build without this,
    // one parse per message read.
    const n = 50;
    const received: [string, string, string | undefined][] = [];
    let all: () => void = () => undefined;
    const allReceived = new Promise<void>((resolve) => (all = resolve));
    const c = await openConnection((topic, payload, traceparent) => {
      if (received.push([topic, payload.toString(), traceparent]) === n) all();
    });
    conns.push(c);
    await c.subscribe(`${TOPIC}/replies/#`, 5000);
    const platform = await platformClient();
    const require = createRequire(import.meta.url);
    type ParseFn = (this: { settings?: unknown }, ...args: unknown[]) => unknown;
    const parser = require('mqtt-packet/parser.js') as { prototype: Record<'parse', ParseFn> };
    const original = parser.prototype.parse;
    let parses = 0;
    // only the connection's parser (mqtt.js hands it the client's options, which name the
    // client id): the platform's client parses its own PUBACKs
    parser.prototype.parse = function (this: { settings?: unknown }, ...args: unknown[]): unknown {
      if (isConnectionClient(this.settings)) parses++;
      return original.apply(this, args);
    };
    try {
      for (let i = 0; i < n; i++) {
        // one at a time: each message a read of its own, as a platform's replies come
        await platform.publishAsync(`${TOPIC}/replies/${i}`, `r${i}`, {
          qos: i % 5 === 0 ? 0 : 1,
          properties: { userProperties: { traceparent: `${TRACEPARENT}${i}` } },
        });
      }
      await allReceived;
    } finally {
      parser.prototype.parse = original;
      await platform.endAsync();
    }
    assert.equal(parses, 0);
    assert.deepEqual(
      received,
      Array.from({ length: n }, (_, i) => [`${TOPIC}/replies/${i}`, `r${i}`, `${TRACEPARENT}${i}`]),
    );
  });

  it("leaves mqtt.js's debug logger out when DEBUG is not set", async () => {
    const c = await openConnection();
    conns.push(c);
    const client = (c as unknown as { session?: { client: { log?: { namespace?: string } } } })
      .session?.client;
    assert.ok(client !== undefined);
    // a debug logger carries its namespace (`mqttjs:client`)
    assert.equal(process.env['DEBUG'] === undefined ? client.log?.namespace : undefined, undefined);
  });
});
