/** The embedded broker (aedes) of `--embedded-broker <port>`. */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import {
  EmbeddedBrokerError,
  MqttBridgeBackend,
  startEmbeddedBroker,
  type EmbeddedBroker,
} from '../../../src/bridge/mqtt/index.js';
import { freePort, subscriber, until, waitListening } from './brokers.js';
import { MQTT_BRIDGE_DEFAULTS } from '../../helpers/component-defaults.js';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('embedded broker', () => {
  it('carries a bridge publish to a subscriber', async () => {
    const broker = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => broker.close());
    assert.ok(broker.port > 0);
    assert.equal(broker.host, '127.0.0.1');
    const sub = await subscriber(broker.port, '/sys/+/+/thing/measurepoint/post', {
      protocolVersion: 4,
    });
    cleanups.push(() => sub.client.endAsync(true));
    const b = new MqttBridgeBackend({
      ...MQTT_BRIDGE_DEFAULTS,
      url: `mqtt://127.0.0.1:${broker.port}`,
      poolSize: 1,
    });
    cleanups.push(() => b.close());
    b.start();
    assert.equal(await b.waitConnected(5000), true);
    await b.publish('/sys/pk/dk/thing/measurepoint/post', Buffer.from('{"id":"1"}'));
    await until(() => sub.messages.length === 1, 2000, 'the message');
    assert.equal(sub.messages[0]?.topic, '/sys/pk/dk/thing/measurepoint/post');
    assert.equal(sub.messages[0]?.payload.toString(), '{"id":"1"}');
  });

  it('a local client hears TCP clients and reaches them, without a connection', async () => {
    const broker = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => broker.close());
    const sub = await subscriber(broker.port, '/sys/+/+/thing/measurepoint/post_reply', {
      protocolVersion: 4,
    });
    cleanups.push(() => sub.client.endAsync(true));
    const local = broker.local();
    const heard: { topic: string; payload: string }[] = [];
    await local.subscribe('/sys/#', (topic, payload) => {
      heard.push({ topic, payload: payload.toString() });
    });
    const b = new MqttBridgeBackend({
      ...MQTT_BRIDGE_DEFAULTS,
      url: `mqtt://127.0.0.1:${broker.port}`,
      poolSize: 1,
    });
    cleanups.push(() => b.close());
    b.start();
    assert.equal(await b.waitConnected(5000), true);
    await until(() => broker.clientIds().length === 2, 2000, 'the subscriber and the bridge');
    await b.publish('/sys/pk/dk/thing/measurepoint/post', Buffer.from('{"id":"1"}'));
    await until(() => heard.length === 1, 2000, 'the local subscriber hears the publish');
    assert.deepEqual(heard[0], {
      topic: '/sys/pk/dk/thing/measurepoint/post',
      payload: '{"id":"1"}',
    });
    local.publish('/sys/pk/dk/thing/measurepoint/post_reply', Buffer.from('{"id":"1","code":200}'));
    await until(() => sub.messages.length === 1, 2000, 'the TCP subscriber gets the local publish');
    assert.equal(sub.messages[0]?.payload.toString(), '{"id":"1","code":200}');
    assert.equal(heard.length, 2, 'a local subscriber hears its own publishes too');
    await local.close();
    // one emit reaches every matching subscriber: once the TCP one has it, a local one would
    await b.publish('/sys/pk/dk/thing/measurepoint/post_reply', Buffer.from('{"id":"2"}'));
    await until(() => sub.messages.length === 2, 2000, 'the TCP subscriber gets the publish');
    assert.equal(heard.length, 2, 'nothing after close');
  });

  it('a taken port gives EmbeddedBrokerError EMBEDDED_BROKER_PORT_IN_USE, no crash', async () => {
    const port = await freePort();
    const holder: Server = createServer();
    await new Promise<void>((resolve) => holder.listen(port, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => holder.close(() => resolve())));
    let caught: unknown;
    try {
      await startEmbeddedBroker({ port, host: '127.0.0.1' });
    } catch (e: unknown) {
      caught = e;
    }
    assert.ok(caught instanceof EmbeddedBrokerError);
    assert.equal(caught.code, 'EMBEDDED_BROKER_PORT_IN_USE');
    assert.match(caught.message, new RegExp(`port ${port} .*already in use \\(EADDRINUSE\\)`));
    assert.equal((caught.cause as NodeJS.ErrnoException).code, 'EADDRINUSE');
  });

  it('close() frees the port and disconnects clients', async () => {
    const port = await freePort();
    const first: EmbeddedBroker = await startEmbeddedBroker({ port });
    const sub = await subscriber(port, '#', { protocolVersion: 4 });
    const closed = new Promise<void>((resolve) => sub.client.once('close', () => resolve()));
    await first.close();
    await closed;
    await first.close(); // idempotent
    const second = await startEmbeddedBroker({ port });
    cleanups.push(() => second.close());
    await waitListening(port);
    await sub.client.endAsync(true);
  });
});
