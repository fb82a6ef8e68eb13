/**
 * The DTLS side: the UDP sockets (DTLS and, when configured, plain CoAP), the DTLS server
 * with its handshake key lookup, association events (metrics, activation, presence, logs)
 * and sharing between pods, and the datagram's way from each socket into it.
 */
import type { PskLookup } from '../../auth/psk-resolver.js';
import type { DeviceSessionManager } from '../../bridge/mqtt/per-device.js';
import type { PresenceTracker } from '../../bridge/presence/index.js';
import type { Principal } from '../../bridge/types.js';
import type { CoapEndpoint, CoapPeer } from '../../coap/endpoint.js';
import type { Admission } from '../../dtls/association-table.js';
import { DtlsServer, type DtlsServerHandler } from '../../dtls/server.js';
import type { CloseReason, PskResolution } from '../../dtls/types.js';
import type { RedisTarget } from '../../redis/client.js';
import { LogLimiter } from '../../telemetry/log.js';
import type { MetricSources, Metrics } from '../../telemetry/metrics.js';
import { NO_TRACING, endWithError, startChild } from '../../telemetry/trace.js';
import { UdpEndpoint } from '../../transport/udp.js';
import type { ReadinessCheck } from '../admin-server.js';
import { dtlsServerSettings } from '../component-settings.js';
import { DatagramTracer } from '../datagram-tracing.js';
import { newSessionId } from '../session-id.js';
import { sharedAssociations } from './associations.js';
import { StartupError, type BuildContext, type Built } from './context.js';
import type { Secrets } from './secrets.js';

export interface Dtls {
  readonly dtls: DtlsServer<Principal>;
  readonly dtlsSocket: UdpEndpoint;
  readonly coapSocket: UdpEndpoint | undefined;
}

export interface DtlsDeps {
  readonly redis: RedisTarget | undefined;
  readonly secrets: Secrets;
  readonly coap: CoapEndpoint<Principal | undefined>;
  readonly presence: PresenceTracker;
  readonly sessions: DeviceSessionManager | undefined;
  readonly metrics: Pick<Metrics, 'handshakeDuration' | 'adoptionDuration'>;
}

export async function buildDtls(
  { config, log, clock, closers, tracing = NO_TRACING }: BuildContext,
  { redis, secrets: { secrets, resolver }, coap, presence, sessions, metrics }: DtlsDeps,
): Promise<Built<Dtls, Pick<MetricSources, 'dtls' | 'udpSendErrors' | 'plainDatagrams'>>> {
  const dtlsSocket = await bindOrExplain('DTLS', config.bind, config.dtlsPort);
  closers.push(() => dtlsSocket.close());
  const coapSocket =
    config.coapPort !== undefined
      ? await bindOrExplain('plain CoAP', config.bind, config.coapPort)
      : undefined;
  if (coapSocket !== undefined) closers.push(() => coapSocket.close());

  // the association store's own connection: until it is up, a handshake here would not be
  // stored (and the association not shared), so the pod is not ready
  const storeChecks: ReadinessCheck[] = [];
  const shared = sharedAssociations(config, redis, log, closers, storeChecks, clock);
  const limiter = new LogLimiter();
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
      metrics.handshakeDuration.observe(a.handshakeDurationMs);
      // the device has its own secret now: activation must never hand it out again
      if (a.principal.secureMode === 2) {
        secrets.activator.connected(a.principal.productKey, a.principal.deviceKey);
      }
      // per handshake: the fields are built only when the line is written
      if (log.isLevelEnabled('info'))
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
      metrics.adoptionDuration.observe(ms);
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
        presence.sessionClosed(a.principal, why, a.carriedData);
      // the device ended its session: end its own MQTT connection too
      if (
        sessions !== undefined &&
        reason === 'peer-close-notify' &&
        a.principal.secureMode === 2
      ) {
        void sessions.closeDevice(a.principal);
      }
      if (log.isLevelEnabled('debug'))
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
  const dtls = new DtlsServer<Principal>({
    ...(shared !== undefined ? { shared } : {}),
    clock,
    send: dtlsSocket.send,
    handler,
    ...dtlsServerSettings(config),
    admission: (_identity, principal) => admissionOf(principal),
    maxPerGroup: config.maxActivationSessions,
    detailedPskAlerts: config.detailedPskAlerts,
    tracing,
  });
  const traced = new DatagramTracer(dtls, coap.stats, () => dtlsSocket.port, tracing);
  closers.push(() => traced.close());
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
  return {
    component: { dtls, dtlsSocket, coapSocket },
    checks: storeChecks,
    metrics: {
      dtls,
      udpSendErrors: () => dtlsSocket.sendErrors + (coapSocket?.sendErrors ?? 0),
      plainDatagrams: () => plainDatagrams,
    },
  };
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
    const id = r.identity;
    return {
      ok: true,
      psk: r.psk,
      // written out, not spread: a spread copies through a slower generic path per handshake
      principal: {
        productKey: id.productKey,
        deviceKey: id.deviceKey,
        secureMode: id.secureMode,
        lifetime: id.lifetime,
        assetId: r.assetId,
        sessionId: newSessionId(),
      },
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
