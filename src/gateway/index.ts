/**
 * The composition root: builds every layer from the configuration and wires them
 * together. Nothing else imports across layers.
 */
import type { Principal } from '../bridge/types.js';
import type { PresenceTracker } from '../bridge/presence/index.js';
import type { MqttBridgeBackend, EmbeddedBroker } from '../bridge/mqtt/index.js';
import type { SecretStack } from '../auth/stack.js';
import type { CoapEndpoint } from '../coap/endpoint.js';
import type { Config } from '../config/load.js';
import type { DtlsServer } from '../dtls/server.js';
import type { Logger } from '../telemetry/log.js';
import type { UdpEndpoint } from '../transport/udp.js';
import { systemClock, type Clock, type TimerHandle } from '../time/clock.js';
import type { ReadinessCheck } from './admin-server.js';
import { redisTargetOf } from './redis-target.js';
import { createMetrics, type Metrics } from '../telemetry/metrics.js';
import type { Tracing } from '../telemetry/trace.js';
import { buildCoap } from './build/coap.js';
import { buildCommands } from './build/commands.js';
import { StartupError, runClosers, type BuildContext, type Closer } from './build/context.js';
import { buildDtls } from './build/dtls.js';
import { buildRoutes } from './build/http.js';
import { buildDeviceSessions, buildMqtt } from './build/mqtt.js';
import { buildPresence } from './build/presence.js';
import { buildSecrets } from './build/secrets.js';
import { buildTelemetry } from './build/telemetry.js';

export { StartupError };

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
    /** The presence tracker, read-only: its counters and `settled()` (tests wait on them). */
    readonly presence: Pick<PresenceTracker, 'stats' | 'sweepsCompleted' | 'settled'>,
    /** The drain deadline's timer. */
    private readonly clock: Clock,
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

  /** `tracing`: from `setupTracing` (src/telemetry/setup.ts); default no tracing. */
  static async start(
    config: Config,
    log: Logger,
    testing: GatewayTestOptions = {},
    tracing?: Tracing,
  ): Promise<Gateway> {
    const closers: Closer[] = [];
    try {
      return await Gateway.build(
        config,
        log,
        closers,
        testing,
        testing.clock ?? systemClock,
        tracing,
      );
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
    tracing: Tracing | undefined,
  ): Promise<Gateway> {
    const ctx: BuildContext = { config, log, clock, closers, tracing };
    const metrics = createMetrics();
    const state = { draining: false };
    const redisTarget = redisTargetOf(config);
    if ('error' in redisTarget) throw new StartupError(redisTarget.error);
    const redis = redisTarget.target;
    // In dependency order: each builder is given what it needs already built, so nothing is
    // connected to a sink later (the command store exists before the sessions that fill it).
    const secrets = buildSecrets(ctx, redis);
    const mqtt = await buildMqtt(ctx);
    const commands = buildCommands(ctx, redis, mqtt.component);
    const sessions = buildDeviceSessions(
      ctx,
      mqtt.component,
      secrets.component,
      commands.component.store,
    );
    const routes = buildRoutes(ctx);
    const presence = buildPresence(ctx, redis, mqtt.component, testing.presenceLifetimeScale);
    const coap = buildCoap(ctx, {
      mqtt: mqtt.component,
      sessions: sessions.component,
      routes: routes.component,
      secrets: secrets.component,
      commands: commands.component,
      presence: presence.component,
      requests: metrics.requests,
    });
    const dtls = await buildDtls(ctx, {
      redis,
      secrets: secrets.component,
      coap: coap.component,
      presence: presence.component,
      sessions: sessions.component,
      metrics,
    });
    // /readyz lists them in this order
    const parts = [secrets, dtls, mqtt, sessions, commands, routes, presence, coap];
    const checks = (): ReadinessCheck[] => [
      { name: 'draining', ok: () => !state.draining },
      ...parts.flatMap((p) => p.checks),
    ];
    const ready = (): boolean => !state.draining && checks().every((c) => c.ok());
    const admin = await buildTelemetry(
      ctx,
      metrics,
      {
        ...secrets.metrics,
        ...dtls.metrics,
        ...mqtt.metrics,
        ...sessions.metrics,
        ...commands.metrics,
        ...routes.metrics,
        ...presence.metrics,
        ...coap.metrics,
        ready,
      },
      checks,
    );
    const { dtlsSocket, coapSocket } = dtls.component;
    return new Gateway(
      log,
      dtls.component.dtls,
      coap.component,
      secrets.component.secrets,
      mqtt.component.pool,
      mqtt.component.embedded,
      dtlsSocket,
      coapSocket,
      closers,
      metrics,
      state,
      admin.component?.port,
      presence.component,
      clock,
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
    let timer: TimerHandle;
    await Promise.race([
      this.coap.whenIdle(),
      new Promise<void>((r) => {
        // held open: a drain runs to its end even with nothing else pending
        timer = this.clock.setTimeout(r, timeoutMs, true);
      }),
    ]);
    this.clock.clearTimeout(timer);
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
