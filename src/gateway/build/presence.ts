/**
 * Presence: online at the first successful request, offline when the lifetime lapses or the
 * device closes; exactly once per transition across pods (Redis scripts). Events go to MQTT
 * through the bridge pool and/or to a webhook.
 */
import {
  MemoryPresenceStore,
  PresenceTracker,
  RedisPresenceStore,
  presencePublisher,
} from '../../bridge/presence/index.js';
import { closeRedis, createFailFastRedis, type RedisTarget } from '../../redis/client.js';
import type { MetricSources } from '../../telemetry/metrics.js';
import type { Mqtt } from './mqtt.js';
import { StartupError, type BuildContext, type Built } from './context.js';

export function buildPresence(
  { config, log, clock, closers }: BuildContext,
  redis: RedisTarget | undefined,
  { pool }: Mqtt,
  /** Test knob (`GatewayTestOptions.presenceLifetimeScale`). */
  lifetimeScale: number | undefined,
): Built<PresenceTracker, Pick<MetricSources, 'presence' | 'onlineDevices'>> {
  let presenceStore: RedisPresenceStore | MemoryPresenceStore;
  if (redis !== undefined) {
    const client = createFailFastRedis({
      url: redis,
      connectionName: 'coap-edge-presence',
      commandTimeoutMs: config.redisCommandTimeoutMs,
      onError: () => undefined,
    });
    closers.push(() => closeRedis(client, clock));
    presenceStore = new RedisPresenceStore({ client, prefix: config.redisPrefix });
  } else {
    presenceStore = new MemoryPresenceStore();
  }
  const presencePool = pool;
  let publisher: ReturnType<typeof presencePublisher>;
  try {
    publisher = presencePublisher({
      clock,
      topicTemplate: config.presenceTopic,
      mqttPublish:
        presencePool === undefined
          ? undefined
          : (topic, payload) => presencePool.publish(topic, payload),
      webhookUrl: config.presenceWebhook,
    });
  } catch (err) {
    throw new StartupError(`presenceTopic: ${err instanceof Error ? err.message : 'invalid'}`);
  }
  closers.push(() => publisher.close());
  const presence = new PresenceTracker({
    clock,
    store: presenceStore,
    publish: (e) => publisher.publish(e),
    sweepIntervalMs: config.presenceSweepIntervalSeconds * 1000,
    lifetimeScale,
    logger: log,
  });
  presence.start();
  closers.push(() => presence.close());
  const store = presenceStore;
  return {
    component: presence,
    checks: [],
    metrics: {
      presence: () => presence.stats(),
      onlineDevices: () => store.onlineCount().catch(() => undefined),
    },
  };
}
