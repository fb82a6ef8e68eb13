/**
 * The MQTT connection primitive's parts the owners share (`src/bridge/mqtt/connection.ts`):
 * the protocol level choice, and a per-device publish's PUBACK deadline and in-flight cap,
 * which run on the manager's clock (a `TimerQueue`), against an aedes broker that holds a
 * publish without acknowledging it.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';
import { ProtocolChoice } from '../../../src/bridge/mqtt/connection.js';
import { MqttBackendError } from '../../../src/bridge/mqtt/errors.js';
import { DeviceSessionManager } from '../../../src/bridge/mqtt/per-device.js';
import { PublishCounters } from '../../../src/bridge/mqtt/stats.js';
import type { Principal } from '../../../src/bridge/types.js';
import { ManualClock } from '../../../src/time/clock.js';
import { PER_DEVICE_DEFAULTS } from '../../helpers/component-defaults.js';

describe('ProtocolChoice', () => {
  it('auto: a refused 5 switches to 3.1.1 once, for every connection after it', () => {
    const logs: string[] = [];
    const c = new ProtocolChoice('auto', () => logs.push('fallback'));
    assert.equal(c.level, 5);
    assert.equal(c.refused(5), true, 'retry at once with 3.1.1');
    assert.equal(c.level, 4);
    // another connection that was already trying 5 when the first was refused
    assert.equal(c.refused(5), true);
    assert.equal(c.fallbacks, 1);
    assert.deepEqual(logs, ['fallback']);
    assert.equal(c.refused(4), false, '3.1.1 refused too: nothing left to try');
  });

  it('a configured level is never changed', () => {
    const five = new ProtocolChoice('5', () => assert.fail('no fallback'));
    assert.equal(five.refused(5), false);
    assert.equal(five.level, 5);
    const four = new ProtocolChoice('3.1.1', () => assert.fail('no fallback'));
    assert.equal(four.level, 4);
    assert.equal(four.refused(4), false);
    assert.equal(four.fallbacks + five.fallbacks, 0);
  });
});

describe('PublishCounters', () => {
  it('counts acknowledgements with their latency and failures by reason', () => {
    const c = new PublishCounters(['a', 'b'] as const, (e) => (e === 'x' ? 'a' : 'b'));
    c.acked(3);
    c.failure('x');
    c.failure('y');
    c.failure('y');
    assert.equal(c.ok, 1);
    assert.deepEqual(c.failed, { a: 1, b: 2 });
    assert.equal(c.latency.snapshot().count, 1);
    assert.equal(c.latency.snapshot().sumMs, 3);
  });
});

/** aedes on 127.0.0.1:0 that takes publishes on `hold/...` and never acknowledges them. */
async function holdingBroker(): Promise<{ port: number; held: string[]; close(): Promise<void> }> {
  const held: string[] = [];
  const aedes = await Aedes.createBroker({
    authorizePublish: (_client, packet, done) => {
      if (packet.topic.includes('/hold/')) held.push(packet.topic);
      else done(null);
    },
  });
  (aedes as EventEmitter).on('error', () => undefined);
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    aedes.handle(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    port,
    held,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

describe('per-device publish deadline and in-flight cap', () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('no PUBACK: BACKEND_PUBACK_TIMEOUT when the clock passes publishTimeoutMs; a full device is refused', async () => {
    const broker = await holdingBroker();
    cleanups.push(() => broker.close());
    const clock = new ManualClock();
    const m = new DeviceSessionManager({
      ...PER_DEVICE_DEFAULTS,
      url: `mqtt://127.0.0.1:${broker.port}`,
      auth: 'template',
      protocol: '3.1.1',
      maxSessions: 10,
      connectRatePerSecond: 10,
      commandTopics: ['/sys/{pk}/{dk}/thing/service/#'],
      publishTimeoutMs: 3000,
      replyTimeoutMs: 3000,
      connectTimeoutMs: 2000,
      maxInflightPerDevice: 1,
      secretOf: () => Promise.resolve('secret'),
      onCommand: () => undefined,
      clock,
    });
    cleanups.push(() => m.close());
    const device: Principal = {
      productKey: 'pkDeadline',
      deviceKey: 'dk1',
      secureMode: 2,
      lifetime: 3600,
      assetId: undefined,
      sessionId: 's1',
    };
    await m.publish(device, '/sys/pkDeadline/dk1/thing/ok', Buffer.from('1'));
    assert.equal(m.stats().publishes.ok, 1);

    const held = m.publish(device, '/sys/pkDeadline/dk1/hold/a', Buffer.from('2'));
    const outcome = held.then(
      () => 'resolved',
      (e: unknown) => (e instanceof MqttBackendError ? e.code : String(e)),
    );
    for (let i = 0; i < 200 && broker.held.length === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(broker.held.length, 1, 'the broker holds the publish');

    // the device's one in-flight slot is taken: refused at once, nothing sent
    await assert.rejects(
      m.publish(device, '/sys/pkDeadline/dk1/hold/b', Buffer.from('3')),
      (e: unknown) => e instanceof MqttBackendError && e.code === 'BACKEND_OVERLOADED',
    );
    assert.equal(m.stats().publishes.failed.overloaded, 1);

    clock.advance(2999);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(m.stats().publishes.failed['puback-timeout'], 0, 'not before its deadline');
    clock.advance(1);
    await new Promise((resolve) => setImmediate(resolve));
    const s = m.stats();
    assert.equal(s.publishes.failed['puback-timeout'], 1, 'failed at its deadline');
    assert.equal(await outcome, 'BACKEND_PUBACK_TIMEOUT');
    assert.equal(s.publishes.ok, 1);
    assert.equal(s.pubackLatency.count, 1);

    // docs/design.md, "Memory at idle": the connections write without mqtt-packet's table
    // of every two-byte number (65 536 Buffers kept for the process's life), and the
    // publish above still carried its topic length and packet id.
    const numbers = createRequire(import.meta.url)('mqtt-packet/numbers.js') as {
      cache: Record<number, Buffer>;
    };
    assert.equal(Object.keys(numbers.cache).length, 0, 'no number table generated');
  });
});
