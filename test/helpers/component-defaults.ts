/**
 * What the composition root (src/gateway) passes to a component from the settings' defaults,
 * for tests that build a component themselves: the components have no defaults of their own
 * for values a setting defines, so src/config/settings.ts stays the one place of each.
 */
import { settings } from '../../src/config/settings.js';

/** `MqttBridgeBackend`: pool size and the PUBACK and reply timeouts. */
export const MQTT_BRIDGE_DEFAULTS = {
  poolSize: settings.mqttPoolSize.default,
  publishTimeoutMs: settings.publishTimeoutMs.default,
  replyTimeoutMs: settings.replyTimeoutMs.default,
} as const;

/** `DeviceSessionManager` (per-device MQTT): the PUBACK and reply timeouts. */
export const PER_DEVICE_DEFAULTS = {
  publishTimeoutMs: settings.publishTimeoutMs.default,
  replyTimeoutMs: settings.replyTimeoutMs.default,
} as const;

/** `Router`: requests held open for a command (ttd), per device and in all. */
export const TTD_DEFAULTS = {
  maxTtdWaitersPerDevice: settings.maxTtdWaitersPerDevice.default,
  maxTtdWaiters: settings.maxTtdWaiters.default,
} as const;

/** `MemoryCommandStore`, `RedisCommandStore`: `waitFor` calls that wait at once. */
export const COMMAND_STORE_DEFAULTS = { maxWaiters: settings.maxTtdWaiters.default } as const;
