/**
 * The MQTT side: the embedded broker when one runs, the bridge pool (publishes for all
 * devices in bridge mode, presence events in either mode), the demo platform stand-in, and
 * the per-device sessions (docs/design.md, "Two ways to face an MQTT platform").
 */
// Not through bridge/mqtt/index.js: that would load the embedded broker (aedes) with the
// pool, and it is loaded only when one is configured (below).
import { MqttBridgeBackend, redactUrl } from '../../bridge/mqtt/backend.js';
import type { EmbeddedBroker } from '../../bridge/mqtt/embedded-broker.js';
import type { CommandStore } from '../../bridge/types.js';
import { DeviceSessionManager } from '../../bridge/mqtt/per-device.js';
import { PerDeviceConfigError } from '../../bridge/mqtt/per-device-login.js';
import type { Config } from '../../config/load.js';
import type { MetricSources } from '../../telemetry/metrics.js';
import type { PlatformStandIn } from '../../tools/platform-standin.js';
import type { ReadinessCheck } from '../admin-server.js';
import type { Secrets } from './secrets.js';
import { StartupError, type BuildContext, type Built } from './context.js';

/** How long start-up waits for the bridge pool to connect to the embedded broker. */
const EMBEDDED_CONNECT_WAIT_MS = 5000;

export interface Mqtt {
  /** Where devices' traffic goes: the configured broker, else the embedded one; or none. */
  readonly brokerUrl: string | undefined;
  /** The embedded broker, when one runs. */
  readonly embedded: EmbeddedBroker | undefined;
  /** `brokerUrl` is the embedded broker (aedes: MQTT 3.1.1 only, no `$share`). */
  readonly onEmbedded: boolean;
  /** The MQTT version every connection to `brokerUrl` asks for. */
  readonly protocol: Config['mqttProtocol'];
  /** The bridge pool, when it runs. */
  readonly pool: MqttBridgeBackend | undefined;
}

export async function buildMqtt({
  config,
  log,
  clock,
  closers,
}: BuildContext): Promise<Built<Mqtt, Pick<MetricSources, 'mqtt'>>> {
  let brokerUrl = config.mqttUrl;
  let embeddedUrl: string | undefined;
  let embedded: EmbeddedBroker | undefined;
  if (config.embeddedBroker !== undefined) {
    const { EmbeddedBrokerError, startEmbeddedBroker } =
      await import('../../bridge/mqtt/embedded-broker.js');
    let broker: EmbeddedBroker;
    try {
      broker = await startEmbeddedBroker({ port: config.embeddedBroker, host: '127.0.0.1' });
    } catch (err) {
      if (err instanceof EmbeddedBrokerError) throw new StartupError(err.message);
      throw err;
    }
    embedded = broker;
    closers.push(() => broker.close());
    embeddedUrl = `mqtt://127.0.0.1:${broker.port}`;
    brokerUrl ??= embeddedUrl;
    log.info({ url: embeddedUrl }, 'embedded MQTT broker listening');
  }
  const onEmbedded = embeddedUrl !== undefined && brokerUrl === embeddedUrl;
  // aedes speaks 3.1.1 only: skip the MQTT 5 attempt against our own embedded broker
  const protocol = config.mqttProtocol === 'auto' && onEmbedded ? '3.1.1' : config.mqttProtocol;
  // Bridge pool: publishes for all devices in bridge mode; in per-device mode it is only
  // needed for presence events on MQTT.
  let mqtt: MqttBridgeBackend | undefined;
  const needPool =
    brokerUrl !== undefined && (config.mqttMode === 'bridge' || config.presenceTopic !== undefined);
  if (brokerUrl !== undefined && needPool) {
    const backend = new MqttBridgeBackend({
      clock,
      url: brokerUrl,
      username: config.mqttUsername,
      password: config.mqttPassword,
      clientIdPrefix: config.mqttClientIdPrefix,
      poolSize: config.mqttPoolSize,
      protocol,
      topicPrefix: config.mqttTopicPrefix,
      publishTimeoutMs: config.publishTimeoutMs,
      replyTimeoutMs: config.replyTimeoutMs,
      logger: log,
    });
    backend.start();
    closers.push(() => backend.close());
    mqtt = backend;
    log.info({ url: redactUrl(brokerUrl), pool: config.mqttPoolSize }, 'MQTT bridge started');
    // Our own broker is up already: devices are served from the first request on, not
    // answered 5.03 while the pool connects (an external broker may be down: no wait).
    if (onEmbedded && !(await backend.waitConnected(EMBEDDED_CONNECT_WAIT_MS))) {
      log.warn('bridge pool not connected to the embedded broker yet');
    }
  }
  if (brokerUrl !== undefined && config.demoPlatform) {
    let standIn: PlatformStandIn | undefined;
    try {
      // a demo tool, not part of the product: loaded only when it is asked for
      const { startPlatformStandIn } = await import('../../tools/platform-standin.js');
      // on our own broker it runs inside it, with no connection (docs/operations.md)
      standIn = await startPlatformStandIn(
        embedded !== undefined && onEmbedded ? embedded.local() : brokerUrl,
        config.mqttTopicPrefix,
      );
    } catch {
      throw new StartupError(`demo platform cannot connect to ${redactUrl(brokerUrl)}`);
    }
    const s = standIn;
    closers.push(() => s.close());
    log.warn('demo platform is answering every uplink (demoPlatform: true)');
  }
  if (brokerUrl === undefined) {
    log.warn('no MQTT broker configured: requests that need one are answered 5.03');
  }
  const bridgePool = mqtt;
  const checks: ReadinessCheck[] = [];
  if (bridgePool !== undefined) {
    checks.push({ name: 'mqtt', ok: () => bridgePool.state() === 'connected' });
  }
  return {
    component: { brokerUrl, embedded, onEmbedded, protocol, pool: mqtt },
    checks,
    metrics: bridgePool !== undefined ? { mqtt: () => bridgePool.stats() } : {},
  };
}

/**
 * Per-device mode: one MQTT connection per online device with its own credentials. The
 * commands the platform sends a device on its connection go into the command store.
 */
export function buildDeviceSessions(
  { config, log, clock, closers }: BuildContext,
  mqtt: Mqtt,
  { secrets }: Secrets,
  commands: CommandStore,
): Built<DeviceSessionManager | undefined, Pick<MetricSources, 'deviceSessions'>> {
  const brokerUrl = mqtt.brokerUrl;
  if (brokerUrl === undefined || config.mqttMode !== 'per-device') {
    return { component: undefined, checks: [], metrics: {} };
  }
  let sessions: DeviceSessionManager;
  try {
    sessions = new DeviceSessionManager({
      clock,
      url: brokerUrl,
      auth: config.mqttDeviceAuth,
      clientIdTemplate: config.mqttDeviceClientId,
      usernameTemplate: config.mqttDeviceUsername,
      passwordTemplate: config.mqttDevicePassword,
      protocol: mqtt.protocol,
      topicPrefix: config.mqttTopicPrefix,
      publishTimeoutMs: config.publishTimeoutMs,
      replyTimeoutMs: config.replyTimeoutMs,
      maxSessions: config.maxDeviceSessions,
      connectRatePerSecond: config.deviceConnectRate,
      commandTopics: config.commandTopics,
      secretOf: async (p) => (await secrets.source.device(p.productKey, p.deviceKey))?.deviceSecret,
      onCommand: (device, topic, payload) => commands.enqueue(device, topic, payload),
      logger: log,
    });
  } catch (err) {
    if (err instanceof PerDeviceConfigError) throw new StartupError(err.message);
    throw err;
  }
  const s = sessions;
  s.start();
  closers.push(() => s.close());
  log.info(
    { url: redactUrl(brokerUrl), max: config.maxDeviceSessions },
    'per-device MQTT sessions',
  );
  return {
    component: s,
    checks: [{ name: 'mqtt-device', ok: () => s.state() !== 'down' }],
    metrics: { deviceSessions: () => s.stats() },
  };
}
