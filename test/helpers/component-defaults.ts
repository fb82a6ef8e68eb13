/**
 * What the composition root (src/gateway) passes to a component when nothing is configured,
 * for tests that build a component themselves: components have no defaults of their own for
 * values a setting defines, so src/config/settings.ts stays the one place of each.
 */
import { loadConfig } from '../../src/config/load.js';
import { coapEndpointSettings, dtlsServerSettings } from '../../src/gateway/component-settings.js';

/** The configuration with every setting at its default. */
const config = loadConfig();

/** `DtlsServer`: suites, table bounds, timers. */
export const DTLS_SERVER_DEFAULTS = dtlsServerSettings(config);

/** `CoapEndpoint`: the ACK timeout and the payload and Block1 bounds. */
export const COAP_ENDPOINT_DEFAULTS = coapEndpointSettings(config);

/** `MqttBridgeBackend`: pool size and the PUBACK and reply timeouts. */
export const MQTT_BRIDGE_DEFAULTS = {
  clientIdPrefix: config.mqttClientIdPrefix,
  poolSize: config.mqttPoolSize,
  publishTimeoutMs: config.publishTimeoutMs,
  replyTimeoutMs: config.replyTimeoutMs,
} as const;

/** `DeviceSessionManager` (per-device MQTT): the login templates, PUBACK and reply timeouts. */
export const PER_DEVICE_DEFAULTS = {
  clientIdTemplate: config.mqttDeviceClientId,
  usernameTemplate: config.mqttDeviceUsername,
  passwordTemplate: config.mqttDevicePassword,
  publishTimeoutMs: config.publishTimeoutMs,
  replyTimeoutMs: config.replyTimeoutMs,
} as const;

/** `Router`: requests held open for a command (ttd), per device and in all. */
export const TTD_DEFAULTS = {
  maxTtdWaitersPerDevice: config.maxTtdWaitersPerDevice,
  maxTtdWaiters: config.maxTtdWaiters,
} as const;

/** `CommandIntake`, `commandFilters`: the shared subscription group. */
export const INTAKE_DEFAULTS = { shareGroup: config.commandShareGroup } as const;

/** `MemoryCommandStore`, `RedisCommandStore`: `waitFor` calls that wait at once. */
export const COMMAND_STORE_DEFAULTS = {
  maxWaiters: config.maxTtdWaiters,
  commandTimeoutMs: config.redisCommandTimeoutMs,
} as const;

/** Every Redis connection's per-command deadline (setting `redisCommandTimeoutMs`). */
export const REDIS_COMMAND_TIMEOUT_MS = config.redisCommandTimeoutMs;
