/**
 * The composition root: builds every layer from the configuration and wires them
 * together. Nothing else imports across layers.
 */
import { CoapEdgeError } from '../errors/index.js';
import { randomUUID } from 'node:crypto';
import { DevicesFile } from '../auth/devices-file.js';
import { PskResolver, type PskLookup } from '../auth/psk-resolver.js';
import { createSecretStack, type SecretStack } from '../auth/stack.js';
import {
  EmbeddedBrokerError,
  MqttBridgeBackend,
  redactUrl,
  startEmbeddedBroker,
  type EmbeddedBroker,
} from '../bridge/mqtt/index.js';
import {
  CommandIntake,
  MemoryCommandStore,
  RedisCommandStore,
  deviceId,
  isCommandError,
} from '../bridge/commands/index.js';
import { z } from 'zod';
import { RedisAssociationStore } from '../redis/association-store.js';
import { closeRedis, createFailFastRedis, type RedisTarget } from '../redis/client.js';
import { redisTargetOf } from './redis-target.js';
import { HttpBackend } from '../bridge/http/index.js';
import {
  MemoryPresenceStore,
  PresenceTracker,
  RedisPresenceStore,
  presencePublisher,
} from '../bridge/presence/index.js';
import { Router } from '../bridge/router.js';
import { RouteConfigError, compileRoutes, type RouteTable } from '../bridge/routes.js';
import { DeviceSessionManager } from '../bridge/mqtt/per-device.js';
import { PerDeviceConfigError } from '../bridge/mqtt/per-device-login.js';
import type { DeviceKey, Principal } from '../bridge/types.js';
import { CoapEndpoint, type CoapPeer } from '../coap/endpoint.js';
import type { Config } from '../config/load.js';
import { coapEndpointSettings, dtlsServerSettings } from './component-settings.js';
import type { Admission } from '../dtls/association-table.js';
import { DtlsServer, type DtlsServerHandler, type PrincipalCodec } from '../dtls/server.js';
import type { SharingOptions } from '../dtls/sharing.js';
import type { CloseReason, PskResolution } from '../dtls/types.js';
import type { Logger } from '../telemetry/log.js';
import { LogLimiter } from '../telemetry/log.js';
import type { PlatformStandIn } from '../tools/platform-standin.js';
import { UdpEndpoint } from '../transport/udp.js';
import { systemClock, type Clock } from '../time/clock.js';
import { startAdminServer, type AdminServer, type ReadinessCheck } from './admin-server.js';
import { DatagramTracer } from './datagram-tracing.js';
import {
  createRequestHandler,
  createUploadAdmission,
  traceDuplicate,
} from './translation/request-handler.js';
import { createMetrics, type Metrics } from '../telemetry/metrics.js';
import { endWithError, startChild, tracing } from '../telemetry/trace.js';

/** A start-up problem the operator must fix (port taken, file invalid); exit code 2. */
export class StartupError extends CoapEdgeError {
  readonly code = 'STARTUP_FAILED';
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}

async function bindOrExplain(what: string, bind: string, port: number): Promise<UdpEndpoint> {
  try {
    return await UdpEndpoint.bind({ bind, port });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    const hint =
      code === 'EADDRINUSE'
        ? ' (port already in use)'
        : code === 'EACCES'
          ? ' (permission denied)'
          : '';
    throw new StartupError(`cannot bind ${what} on ${bind}:${port}: ${code}${hint}`);
  }
}

/**
 * Knobs for tests only: never settings (no YAML key, variable or flag), so no deployment can
 * turn them on.
 */
export interface GatewayTestOptions {
  /**
   * Factor applied to every device lifetime for presence (0 < f <= 1; 0.1 makes a 30 s
   * lifetime lapse after 3 s). Default 1.
   */
  readonly presenceLifetimeScale?: number;
  /**
   * The one clock every component's time and timers come from (docs/design.md, "Time"):
   * a `ManualClock` in tests. Default: the system clock.
   */
  readonly clock?: Clock;
}

/** How long start-up waits for the bridge pool to connect to the embedded broker. */
const EMBEDDED_CONNECT_WAIT_MS = 5000;

/** Things to close on shutdown (or when start-up fails half way), last opened first. */
type Closer = () => Promise<void> | void;

export class Gateway {
  private constructor(
    private readonly log: Logger,
    readonly dtls: DtlsServer<Principal>,
    readonly coap: CoapEndpoint<Principal | undefined>,
    readonly secrets: SecretStack,
    readonly mqtt: MqttBridgeBackend | undefined,
    /** The embedded broker, when one runs. */
    readonly embeddedBroker: EmbeddedBroker | undefined,
    private readonly dtlsSocket: UdpEndpoint,
    private readonly coapSocket: UdpEndpoint | undefined,
    private readonly closers: Closer[],
    readonly metrics: Metrics,
    private readonly state: { draining: boolean },
    /** Port of the admin HTTP server (/metrics, /healthz, /readyz), when it runs. */
    readonly httpPort: number | undefined,
  ) {}

  /** The embedded broker's MQTT URL, when one runs. */
  get embeddedBrokerUrl(): string | undefined {
    const b = this.embeddedBroker;
    return b === undefined ? undefined : `mqtt://${b.host}:${b.port}`;
  }

  /** Whether the instance is draining (SIGTERM): readiness is false, no new handshakes. */
  get draining(): boolean {
    return this.state.draining;
  }

  get dtlsPort(): number {
    return this.dtlsSocket.port;
  }

  get coapPort(): number | undefined {
    return this.coapSocket?.port;
  }

  static async start(
    config: Config,
    log: Logger,
    testing: GatewayTestOptions = {},
  ): Promise<Gateway> {
    const closers: Closer[] = [];
    try {
      return await Gateway.build(config, log, closers, testing, testing.clock ?? systemClock);
    } catch (err) {
      await runClosers(closers);
      throw err;
    }
  }

  private static async build(
    config: Config,
    log: Logger,
    closers: Closer[],
    testing: GatewayTestOptions,
    clock: Clock,
  ): Promise<Gateway> {
    const metrics = createMetrics();
    const state = { draining: false };
    const devices = config.devices !== undefined ? DevicesFile.load(config.devices) : undefined;
    if (devices !== undefined) {
      log.info(
        { file: config.devices, products: devices.productCount, devices: devices.deviceCount },
        'devices file loaded',
      );
    }
    const redisTarget = redisTargetOf(config);
    if ('error' in redisTarget) throw new StartupError(redisTarget.error);
    const redis = redisTarget.target;
    const secrets = createSecretStack({
      devicesFile: devices,
      redisUrl: redis,
      redisPrefix: config.redisPrefix,
      redisWaitReplicas: config.redisWaitReplicas,
      registryUrl: config.registryUrl,
      registryToken: config.registryToken,
      registryTimeoutMs: config.registryTimeoutMs,
      cacheSize: config.secretCacheSize,
      cacheTtlMs: config.secretCacheTtlSeconds * 1000,
      redisTtlMs: config.redisCacheTtlSeconds * 1000,
      negativeTtlMs: config.negativeCacheTtlSeconds * 1000,
    });
    closers.push(() => secrets.close());
    const resolver = new PskResolver(secrets.source);

    let brokerUrl = config.mqttUrl;
    let embeddedUrl: string | undefined;
    let embedded: EmbeddedBroker | undefined;
    if (config.embeddedBroker !== undefined) {
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
    // Bridge pool: publishes for all devices in bridge mode; in per-device mode it is only
    // needed for presence events on MQTT.
    let mqtt: MqttBridgeBackend | undefined;
    const needPool =
      brokerUrl !== undefined &&
      (config.mqttMode === 'bridge' || config.presenceTopic !== undefined);
    if (brokerUrl !== undefined && needPool) {
      const backend = new MqttBridgeBackend({
        clock,
        url: brokerUrl,
        username: config.mqttUsername,
        password: config.mqttPassword,
        clientIdPrefix: config.mqttClientIdPrefix,
        poolSize: config.mqttPoolSize,
        // aedes speaks 3.1.1 only: skip the MQTT 5 attempt against our own embedded broker
        protocol:
          config.mqttProtocol === 'auto' && brokerUrl === embeddedUrl
            ? '3.1.1'
            : config.mqttProtocol,
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
      if (brokerUrl === embeddedUrl && !(await backend.waitConnected(EMBEDDED_CONNECT_WAIT_MS))) {
        log.warn('bridge pool not connected to the embedded broker yet');
      }
    }
    // Set once the command store exists (below); sessions only open on device requests,
    // which start after that.
    let commandSink = (_device: DeviceKey, _topic: string, _payload: Buffer): Promise<unknown> =>
      Promise.resolve();
    let sessions: DeviceSessionManager | undefined;
    if (brokerUrl !== undefined && config.mqttMode === 'per-device') {
      try {
        sessions = new DeviceSessionManager({
          clock,
          url: brokerUrl,
          auth: config.mqttDeviceAuth,
          clientIdTemplate: config.mqttDeviceClientId,
          usernameTemplate: config.mqttDeviceUsername,
          passwordTemplate: config.mqttDevicePassword,
          protocol:
            config.mqttProtocol === 'auto' && brokerUrl === embeddedUrl
              ? '3.1.1'
              : config.mqttProtocol,
          topicPrefix: config.mqttTopicPrefix,
          publishTimeoutMs: config.publishTimeoutMs,
          replyTimeoutMs: config.replyTimeoutMs,
          maxSessions: config.maxDeviceSessions,
          connectRatePerSecond: config.deviceConnectRate,
          commandTopics: config.commandTopics,
          secretOf: async (p) =>
            (await secrets.source.device(p.productKey, p.deviceKey))?.deviceSecret,
          onCommand: (device, topic, payload) => commandSink(device, topic, payload),
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
    }
    if (brokerUrl !== undefined && config.demoPlatform) {
      let standIn: PlatformStandIn | undefined;
      try {
        // a demo tool, not part of the product: loaded only when it is asked for
        const { startPlatformStandIn } = await import('../tools/platform-standin.js');
        // on our own broker it runs inside it, with no connection (docs/operations.md)
        standIn = await startPlatformStandIn(
          embedded !== undefined && brokerUrl === embeddedUrl ? embedded.local() : brokerUrl,
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
    // Commands wait where every pod can deliver them: Redis, or memory without it.
    const expiryMs = config.commandExpirySeconds * 1000;
    let commands: RedisCommandStore | MemoryCommandStore;
    if (redis !== undefined) {
      commands = new RedisCommandStore({
        url: redis,
        prefix: config.redisPrefix,
        waitReplicas: config.redisWaitReplicas,
        queueLength: config.commandQueueLength,
        expiryMs,
        maxWaiters: config.maxTtdWaiters,
      });
    } else {
      commands = new MemoryCommandStore({
        queueLength: config.commandQueueLength,
        expiryMs,
        maxWaiters: config.maxTtdWaiters,
      });
    }
    const store = commands;
    closers.push(() => store.close());
    let commandIntake: CommandIntake | undefined;
    if (brokerUrl !== undefined && config.mqttMode === 'bridge') {
      let intake: CommandIntake;
      try {
        intake = new CommandIntake({
          url: brokerUrl,
          username: config.mqttUsername,
          password: config.mqttPassword,
          protocol:
            config.mqttProtocol === 'auto' && brokerUrl === embeddedUrl
              ? '3.1.1'
              : config.mqttProtocol,
          topics: config.commandTopics,
          topicPrefix: config.mqttTopicPrefix,
          shareGroup: config.commandShareGroup,
          // aedes (the embedded broker) has no $share; there is only one pod then anyway
          shared: brokerUrl !== embeddedUrl,
          store,
          logger: log,
        });
      } catch (err) {
        if (isCommandError(err)) throw new StartupError(`commandTopics: ${err.message}`);
        throw err;
      }
      intake.start();
      closers.push(() => intake.close());
      commandIntake = intake;
    }
    commandSink = (device, topic, payload) => store.enqueue(device, topic, payload);

    let routes: RouteTable;
    try {
      routes = compileRoutes(config.routes);
    } catch (err) {
      if (err instanceof RouteConfigError) throw new StartupError(err.message);
      throw err;
    }
    let http: HttpBackend | undefined;
    if (routes.hasHttp) {
      const h = new HttpBackend({
        clock,
        timeoutMs: config.httpTimeoutMs,
        connections: config.httpConnections,
        maxConcurrency: config.httpMaxConcurrency,
        unavailableMaxAge: config.maxUnavailableRetrySeconds,
      });
      closers.push(() => h.close());
      http = h;
      log.info({ routes: routes.routes.length }, 'HTTP routes configured');
    }
    // Presence: online at the first successful request, offline when the lifetime lapses
    // or the device closes; exactly once per transition across pods (Redis scripts).
    let presenceStore: RedisPresenceStore | MemoryPresenceStore;
    if (redis !== undefined) {
      const client = createFailFastRedis({
        url: redis,
        connectionName: 'coap-edge-presence',
        onError: () => undefined,
      });
      closers.push(() => closeRedis(client));
      presenceStore = new RedisPresenceStore({ client, prefix: config.redisPrefix });
    } else {
      presenceStore = new MemoryPresenceStore();
    }
    const presencePool = mqtt;
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
      lifetimeScale: testing.presenceLifetimeScale,
      logger: log,
    });
    presence.start();
    closers.push(() => presence.close());

    const bridge = mqtt;
    const router = new Router({
      mqtt:
        sessions ??
        (bridge === undefined || config.mqttMode !== 'bridge'
          ? undefined
          : {
              // the device rides along so a publish that gets a shared connection dropped
              // suspects its device (no poison loop over the pool)
              publish: (d, topic, payload, opts) =>
                bridge.publish(topic, payload, { ...opts, device: deviceId(d) }),
              request: (d, topic, payload, replyTopic, id, opts) =>
                bridge.request(topic, payload, replyTopic, id, {
                  ...opts,
                  device: deviceId(d),
                }),
            }),
      http,
      routes,
      activation: secrets.activator,
      commands: store,
      presence,
      unavailableMaxAge: config.maxUnavailableRetrySeconds,
      maxInlineCommand: config.maxInlineCommand,
      maxTtd: config.maxTtdSeconds,
      maxTtdWaitersPerDevice: config.maxTtdWaitersPerDevice,
      maxTtdWaiters: config.maxTtdWaiters,
    });
    const limiter = new LogLimiter();
    const coap = new CoapEndpoint<Principal | undefined>({
      clock,
      handler: createRequestHandler(router, metrics.requests),
      admit: createUploadAdmission(),
      ...coapEndpointSettings(config),
      onError: (err) => log.error({ err }, 'request handler failed'),
      onDuplicate: traceDuplicate,
    });
    closers.push(() => coap.close());

    const dtlsSocket = await bindOrExplain('DTLS', config.bind, config.dtlsPort);
    closers.push(() => dtlsSocket.close());
    const coapSocket =
      config.coapPort !== undefined
        ? await bindOrExplain('plain CoAP', config.bind, config.coapPort)
        : undefined;
    if (coapSocket !== undefined) closers.push(() => coapSocket.close());

    const handler: DtlsServerHandler<Principal> = {
      resolvePsk: (identity) => {
        if (!tracing.on) {
          const r = resolver.resolve(identity);
          return r instanceof Promise ? r.then(toPskResolution) : toPskResolution(r);
        }
        // the lookup's own span: an async lookup outlives the handshake step that started it;
        // each secret layer's answer becomes an event on it
        const span = startChild('auth.psk_lookup');
        const r = resolver.resolve(
          identity,
          span === undefined
            ? undefined
            : (layer, outcome) =>
                span.addEvent('key_lookup', {
                  'coap_edge.key_lookup.layer': layer,
                  'coap_edge.key_lookup.outcome': outcome,
                }),
        );
        const done = (x: PskLookup): PskResolution<Principal> => {
          span?.setAttribute('coap_edge.key_lookup.result', x.ok ? 'ok' : x.kind);
          span?.end();
          return toPskResolution(x);
        };
        return r instanceof Promise
          ? r.then(done, (err: unknown) => {
              endWithError(span, 'lookup_failed');
              throw err;
            })
          : done(r);
      },
      onData: (assoc, data) => coap.receive(assoc, data),
      onEstablished: (a) => {
        metrics.handshakeDuration.observe(a.handshakeDurationMs / 1000);
        // the device has its own secret now: activation must never hand it out again
        if (a.principal.secureMode === 2) {
          secrets.activator.connected(a.principal.productKey, a.principal.deviceKey);
        }
        log.info(
          {
            peer: `${a.address}:${a.port}`,
            identity: a.identity,
            suite: a.cipherSuite,
            ems: a.extendedMasterSecret,
            etm: a.encryptThenMac,
            cid: a.connectionId !== undefined,
          },
          'association established',
        );
      },
      onAdopted: (a, ms) => {
        metrics.adoptionDuration.observe(ms / 1000);
        log.debug(
          {
            peer: `${a.address}:${a.port}`,
            identity: a.identity,
            cid: a.connectionId !== undefined,
            ms,
          },
          'association adopted',
        );
      },
      onShareError: (op, err) => {
        // a heartbeat sent before the store's first connection is not news
        if (op === 'heartbeat' && shared?.connected() === false) return;
        const suppressed = limiter.admit(`share-error:${op}`);
        if (suppressed === undefined) return;
        // the message only: an ioredis error carries the command's arguments
        log.warn(
          {
            op,
            error: err instanceof Error ? err.message : 'unknown',
            ...(suppressed > 0 ? { suppressed } : {}),
          },
          'shared association store failed',
        );
      },
      onClosed: (a, reason) => {
        coap.peerClosed(a.key);
        const why = PRESENCE_CLOSE[reason];
        if (why !== undefined && a.principal.secureMode === 2)
          presence.sessionClosed(a.principal, why);
        // the device ended its session: end its own MQTT connection too
        if (
          sessions !== undefined &&
          reason === 'peer-close-notify' &&
          a.principal.secureMode === 2
        ) {
          void sessions.closeDevice(a.principal);
        }
        log.debug(
          { peer: `${a.address}:${a.port}`, identity: a.identity, reason },
          'association closed',
        );
      },
      onHandshakeFailed: (f) => {
        const suppressed = limiter.admit(`handshake-failed:${f.reason}`);
        if (suppressed === undefined) return;
        log.warn(
          {
            peer: `${f.address}:${f.port}`,
            identity: f.identity,
            reason: f.reason,
            detail: f.detail,
            alert: f.alert,
            ...(suppressed > 0 ? { suppressed } : {}),
          },
          'association refused',
        );
      },
      onInternalError: (err) => log.error({ err }, 'datagram processing failed'),
      // the server calls this at most once a second, with the count of drops in between
      onUnknownRecord: (from, reason, suppressed) =>
        log.debug(
          {
            peer: `${from.address}:${from.port}`,
            reason,
            ...(suppressed > 0 ? { suppressed } : {}),
          },
          'record from unknown peer dropped',
        ),
    };
    // the association store's own connection: until it is up, a handshake here would not be
    // stored (and the association not shared), so the pod is not ready
    const storeChecks: ReadinessCheck[] = [];
    const shared = sharedAssociations(config, redis, log, closers, storeChecks);
    const dtls = new DtlsServer<Principal>({
      ...(shared !== undefined ? { shared } : {}),
      clock,
      send: dtlsSocket.send,
      handler,
      ...dtlsServerSettings(config),
      admission: (_identity, principal) => admissionOf(principal),
      maxPerGroup: config.maxActivationSessions,
      detailedPskAlerts: config.detailedPskAlerts,
    });
    const traced = new DatagramTracer(dtls, coap.stats, () => dtlsSocket.port);
    dtlsSocket.onDatagram((msg, address, port) => {
      if (tracing.on) traced.handle(msg, address, port);
      else dtls.handleDatagram(msg, address, port);
    });

    let plainDatagrams = 0;
    if (coapSocket !== undefined) {
      coapSocket.onDatagram((msg, address, port) => {
        plainDatagrams++;
        const peer: CoapPeer<undefined> = {
          key: `${address}|${port}`,
          principal: undefined,
          send: (d) => {
            coapSocket.send(d, port, address);
            return true;
          },
        };
        coap.receive(peer, msg);
      });
    }
    log.info(
      {
        dtls: `${config.bind}:${dtlsSocket.port}`,
        coap: coapSocket !== undefined ? `${config.bind}:${coapSocket.port}` : 'off',
      },
      'coap-edge listening',
    );
    const bridgePool = mqtt;
    const ready = (): boolean => !state.draining && checks().every((c) => c.ok());
    const checks = (): ReadinessCheck[] => {
      const out: ReadinessCheck[] = [{ name: 'draining', ok: () => !state.draining }];
      if (redis !== undefined) {
        out.push({ name: 'redis', ok: () => secrets.redisState() === 'connected' });
      }
      out.push(...storeChecks);
      if (bridgePool !== undefined) {
        out.push({ name: 'mqtt', ok: () => bridgePool.state() === 'connected' });
      }
      if (sessions !== undefined) {
        const s = sessions;
        out.push({ name: 'mqtt-device', ok: () => s.state() !== 'down' });
      }
      return out;
    };
    metrics.bind({
      dtls,
      coap: coap.stats,
      requests: metrics.requests,
      auth: secrets.stats,
      udpSendErrors: () => dtlsSocket.sendErrors + (coapSocket?.sendErrors ?? 0),
      plainDatagrams: () => plainDatagrams,
      ...(bridgePool !== undefined ? { mqtt: () => bridgePool.stats() } : {}),
      ...(sessions !== undefined ? { deviceSessions: () => sessions.stats() } : {}),
      ...(http !== undefined ? { http: () => http.stats() } : {}),
      commands: () => store.stats(),
      ...(commandIntake !== undefined
        ? { commandIntake: commandIntake.stats.bind(commandIntake) }
        : {}),
      commandAge: () => router.commandAge.snapshot(),
      ttd: () => router.ttd,
      ...(store instanceof RedisCommandStore
        ? { commandsRedisUp: () => store.state() === 'connected' }
        : {}),
      presence: () => presence.stats(),
      onlineDevices: () => presenceStore.onlineCount().catch(() => undefined),
      ready,
    });
    let admin: AdminServer | undefined;
    if (config.httpPort !== undefined) {
      try {
        admin = await startAdminServer({
          bind: config.httpBind,
          port: config.httpPort,
          registry: metrics.registry,
          checks,
        });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'error';
        throw new StartupError(
          `cannot bind the admin HTTP server on ${config.httpBind}:${config.httpPort}: ${code}`,
        );
      }
      const a = admin;
      closers.push(() => a.close());
      log.info({ http: `${config.httpBind}:${a.port}` }, 'admin HTTP server listening');
    }
    return new Gateway(
      log,
      dtls,
      coap,
      secrets,
      mqtt,
      embedded,
      dtlsSocket,
      coapSocket,
      closers,
      metrics,
      state,
      admin?.port,
    );
  }

  /**
   * SIGTERM: readiness turns false at once and new handshakes go unanswered (the load
   * balancer stops sending new devices here; an alert would be unauthenticated and a
   * device's retried ClientHello then reaches another pod), while established devices keep
   * being served; requests in flight and separate responses get up to `timeoutMs` to
   * finish; then close_notify to every association and the sockets close.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.state.draining = true;
    this.dtls.stopAccepting();
    const n0 = this.coap.stats.exchangesInFlight + this.coap.stats.separateInFlight;
    this.log.info({ inFlight: n0, timeoutMs }, 'draining');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.coap.whenIdle(),
      new Promise((r) => {
        timer = setTimeout(r, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    const left = this.coap.stats.exchangesInFlight + this.coap.stats.separateInFlight;
    if (left > 0)
      this.log.warn({ inFlight: left }, 'drain timeout: closing with exchanges in flight');
    if (this.dtls.sharingOn) {
      // no close_notify: each device goes on with whichever pod it reaches next
      const n = this.dtls.associationCount;
      const handed = await this.dtls.handOver(HAND_OVER_MS);
      this.log.info({ associations: n, handedOver: handed }, 'associations handed over');
    }
    await this.close();
  }

  /** Sends close_notify to every established peer, closes sockets and backends. */
  async close(): Promise<void> {
    const n = this.dtls.associationCount;
    this.dtls.close();
    // give the close_notify datagrams a moment to leave before the socket closes
    await new Promise((r) => setImmediate(r));
    await runClosers(this.closers);
    this.log.info({ closedAssociations: n }, 'coap-edge stopped');
  }
}

/** How long a draining pod waits for the store to take its associations' fences. */
const HAND_OVER_MS = 2_000;

/**
 * Association sharing between pods: on with Redis and an association key. The principal
 * travels in the sealed snapshot as JSON and is checked on the way back.
 */
function sharedAssociations(
  config: Config,
  redis: RedisTarget | undefined,
  log: Logger,
  closers: Closer[],
  checks: ReadinessCheck[],
):
  | (SharingOptions & {
      principal: PrincipalCodec<Principal>;
      /** The store's client has been connected at least once. */
      connected: () => boolean;
    })
  | undefined {
  const key = config.associationKey;
  if (key === undefined) return undefined;
  if (redis === undefined) {
    log.warn('associationKey is set but Redis is not: associations are not shared');
    return undefined;
  }
  const client = createFailFastRedis({
    url: redis,
    connectionName: 'coap-edge-associations',
    onError: () => undefined,
  });
  closers.push(() => closeRedis(client));
  // leases that wait for replicas (WAIT) get a connection of their own: WAIT holds the one it
  // is sent on, and lookups behind it would time out
  const durableClient =
    config.redisWaitReplicas > 0
      ? createFailFastRedis({
          url: redis,
          connectionName: 'coap-edge-associations-durable',
          onError: () => undefined,
        })
      : client;
  if (durableClient !== client) closers.push(() => closeRedis(durableClient));
  checks.push({
    name: 'redis-associations',
    ok: () => client.status === 'ready' && durableClient.status === 'ready',
  });
  let connected = false;
  client.once('ready', () => (connected = true));
  log.info('DTLS associations are shared through Redis');
  return {
    store: new RedisAssociationStore({
      client,
      prefix: config.redisPrefix,
      waitReplicas: config.redisWaitReplicas,
      durableClient,
    }),
    key: /^[0-9a-fA-F]{64}$/.test(key) ? Buffer.from(key, 'hex') : Buffer.from(key, 'base64'),
    ttlMs: config.idleTimeoutSeconds * 1000,
    rxLease: config.associationFenceRecords,
    principal: principalCodec,
    connected: () => connected,
  };
}

const principalSchema = z.object({
  productKey: z.string(),
  deviceKey: z.string(),
  secureMode: z.union([z.literal(2), z.literal(3)]),
  lifetime: z.number(),
  assetId: z.string().optional(),
  sessionId: z.string(),
});

const principalCodec: PrincipalCodec<Principal> = {
  encode: (p) => ({
    productKey: p.productKey,
    deviceKey: p.deviceKey,
    secureMode: p.secureMode,
    lifetime: p.lifetime,
    ...(p.assetId !== undefined ? { assetId: p.assetId } : {}),
    sessionId: p.sessionId,
  }),
  decode: (v) => {
    const r = principalSchema.safeParse(v);
    return r.success ? { ...r.data, assetId: r.data.assetId } : undefined;
  },
};

async function runClosers(closers: Closer[]): Promise<void> {
  for (const c of closers.splice(0).reverse()) {
    try {
      await c();
    } catch {
      // keep closing the rest
    }
  }
}

/** How a closed association counts for presence; a replaced one is the same device going on. */
const PRESENCE_CLOSE: Record<
  CloseReason,
  'close-notify' | 'evicted' | 'idle' | 'shutdown' | undefined
> = {
  'peer-close-notify': 'close-notify',
  'peer-fatal-alert': 'close-notify',
  'local-close': 'evicted',
  evicted: 'evicted',
  'sequence-exhausted': 'evicted',
  idle: 'idle',
  'server-shutdown': 'shutdown',
  replaced: undefined,
  superseded: undefined,
  // the association lives on in Redis and the device on another pod
  offloaded: undefined,
};

/**
 * How a device's association counts in the DTLS table. One live association per device and
 * secureMode: the key keeps the mode, so a product-secret session naming a device's key can
 * never retire that device's own session. secureMode 3 sessions may only activate and are
 * cheap to lose: restricted, and capped per product (their product secret is shared, and
 * every deviceKey it names is a new identity).
 */
function admissionOf(p: Principal): Admission {
  const key = `${p.productKey},${p.deviceKey},${p.secureMode}`;
  return p.secureMode === 3
    ? { key, group: p.productKey, restricted: true }
    : { key, restricted: false };
}

function toPskResolution(r: PskLookup): PskResolution<Principal> {
  if (r.ok) {
    return {
      ok: true,
      psk: r.psk,
      principal: { ...r.identity, assetId: r.assetId, sessionId: randomUUID() },
    };
  }
  return {
    ok: false,
    alert:
      r.kind === 'unknown'
        ? 'unknown_psk_identity'
        : r.kind === 'forbidden'
          ? 'handshake_failure'
          : 'internal_error',
    reason: r.reason,
  };
}
