/**
 * The composition root's builders (src/gateway/build/), each alone: what it builds from the
 * settings, what it registers to be closed, and the start-up errors it raises.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryCommandStore, RedisCommandStore } from '../../../src/bridge/commands/index.js';
import { loadConfig, type Config } from '../../../src/config/load.js';
import { buildCommands } from '../../../src/gateway/build/commands.js';
import {
  StartupError,
  runClosers,
  type BuildContext,
  type Closer,
} from '../../../src/gateway/build/context.js';
import { buildDeviceSessions, type Mqtt } from '../../../src/gateway/build/mqtt.js';
import { buildPresence } from '../../../src/gateway/build/presence.js';
import { buildSecrets } from '../../../src/gateway/build/secrets.js';
import { StartupError as ExportedStartupError } from '../../../src/gateway/index.js';
import { createLogger } from '../../../src/telemetry/log.js';
import { ManualClock } from '../../../src/time/clock.js';
/** The Redis every test of this machine shares (docs/testing.md). */
const SHARED_REDIS_URL = 'redis://127.0.0.1:6379';

function context(overrides: Parameters<typeof loadConfig>[0] = {}): BuildContext {
  const config: Config = loadConfig(overrides);
  return { config, log: createLogger('silent'), clock: new ManualClock(), closers: [] };
}

const NO_BROKER: Mqtt = {
  brokerUrl: undefined,
  embedded: undefined,
  onEmbedded: false,
  protocol: 'auto',
  pool: undefined,
};

void describe('gateway builders', () => {
  void it('closers run last opened first, past one that throws, and the list is emptied', async () => {
    const order: string[] = [];
    const closers: Closer[] = [
      () => void order.push('first'),
      () => {
        order.push('second');
        throw new Error('boom');
      },
      async () => {
        await Promise.resolve();
        order.push('third');
      },
    ];
    await runClosers(closers);
    assert.deepEqual(order, ['third', 'second', 'first']);
    assert.equal(closers.length, 0);
  });

  void it('the CLI sees the one StartupError', () => {
    assert.equal(ExportedStartupError, StartupError);
  });

  void it('commands without Redis or a broker: a memory store, no intake, its closer registered', async () => {
    const ctx = context();
    const built = buildCommands(ctx, undefined, NO_BROKER);
    try {
      assert.ok(built.component.store instanceof MemoryCommandStore);
      assert.equal(built.component.intake, undefined);
      assert.deepEqual(Object.keys(built.metrics), ['commands']);
      assert.deepEqual(built.checks, []);
      assert.equal(ctx.closers.length, 1);
    } finally {
      await runClosers(ctx.closers);
    }
  });

  void it('commands with Redis: the Redis store, whose state the metrics read', async () => {
    const ctx = context({ overrides: { redisUrl: SHARED_REDIS_URL } });
    const built = buildCommands(ctx, SHARED_REDIS_URL, NO_BROKER);
    try {
      assert.ok(built.component.store instanceof RedisCommandStore);
      assert.deepEqual(Object.keys(built.metrics).sort(), ['commands', 'commandsRedisUp']);
    } finally {
      await runClosers(ctx.closers);
    }
  });

  void it('no per-device sessions in bridge mode or without a broker', async () => {
    const bridge = context();
    const perDevice = context({ overrides: { mqttMode: 'per-device' } });
    const secrets = buildSecrets(bridge, undefined).component;
    const store = new MemoryCommandStore({ queueLength: 1, expiryMs: 1000, maxWaiters: 1 });
    try {
      const withBroker = { ...NO_BROKER, brokerUrl: 'mqtt://127.0.0.1:1' };
      for (const [ctx, mqtt] of [
        [bridge, withBroker],
        [perDevice, NO_BROKER],
      ] as const) {
        const built = buildDeviceSessions(ctx, mqtt, secrets, store);
        assert.equal(built.component, undefined);
        assert.deepEqual(built.checks, []);
        assert.deepEqual(built.metrics, {});
      }
      assert.equal(perDevice.closers.length, 0);
    } finally {
      await store.close();
      await runClosers(bridge.closers);
    }
  });

  void it('a builder that fails half way has registered what it opened before', async () => {
    // presence events on MQTT without a broker: refused after the presence store's Redis
    // connection is open, which must be closed with the rest of a failed start
    const ctx = context({
      overrides: { redisUrl: SHARED_REDIS_URL, presenceTopic: 'presence/{pk}/{dk}' },
    });
    assert.throws(
      () => buildPresence(ctx, SHARED_REDIS_URL, NO_BROKER, undefined),
      (err: unknown) =>
        err instanceof StartupError &&
        err.message === 'presenceTopic: presence topic template given without an MQTT backend',
    );
    assert.equal(ctx.closers.length, 1);
    await runClosers(ctx.closers);
  });
});
