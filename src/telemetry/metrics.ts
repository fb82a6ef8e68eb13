/**
 * Prometheus metrics for Grafana. Core layers keep plain counters (an add on the hot path);
 * this module reads them when Prometheus scrapes, so metrics cost nothing between scrapes.
 * Only the request latency and handshake duration histograms are observed per event.
 *
 * Names follow Prometheus conventions: `coap_edge_` prefix, `_total` counters, base units
 * (`_seconds`); label values come from fixed sets (no device keys, no topics).
 */
import {
  Counter,
  Gauge,
  Histogram,
  Registry,
  collectDefaultMetrics,
  type LabelValues,
} from 'prom-client';
import type { AuthStats } from '../auth/stats.js';
import type { CommandStoreStats } from '../bridge/commands/stats.js';
import type { HttpBackendStats } from '../bridge/http/stats.js';
import type { DeviceSessionStats } from '../bridge/mqtt/per-device.js';
import type { LatencySnapshot, MqttBackendStats } from '../bridge/mqtt/stats.js';
import type { PresenceStats } from '../bridge/presence/tracker.js';
import type { CoapStats } from '../coap/stats.js';
import type { DtlsStats } from '../dtls/types.js';

/** Everything the metrics read; optional parts exist only when configured. */
export interface MetricSources {
  readonly dtls: {
    readonly stats: DtlsStats;
    readonly associationCount: number;
    readonly handshakeCount: number;
  };
  readonly coap: CoapStats;
  readonly requests: RequestStats;
  readonly auth: AuthStats;
  readonly udpSendErrors: () => number;
  readonly plainDatagrams: () => number;
  readonly mqtt?: () => MqttBackendStats;
  readonly deviceSessions?: () => DeviceSessionStats;
  readonly http?: () => HttpBackendStats;
  readonly commands?: () => CommandStoreStats;
  readonly commandAge?: () => LatencySnapshot;
  readonly commandsRedisUp?: () => boolean | undefined;
  readonly presence?: () => PresenceStats;
  /** Devices online across all pods (Redis), when known. */
  readonly onlineDevices?: () => Promise<number | undefined>;
  readonly ready: () => boolean;
}

type Labeled<L extends string> = readonly (readonly [LabelValues<L>, number])[];

/** Request counts by method, topic class and response code, and the latency histogram. */
export class RequestStats {
  private readonly counts = new Map<string, number>();

  constructor(readonly latency: Histogram<'method'>) {}

  record(method: string, topicClass: string, code: string, seconds: number): void {
    const key = `${method}|${topicClass}|${code}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    this.latency.observe({ method }, seconds);
  }

  entries(): Labeled<'method' | 'topic_class' | 'code'> {
    const out: [LabelValues<'method' | 'topic_class' | 'code'>, number][] = [];
    for (const [key, n] of this.counts) {
      const [method = '', topicClass = '', code = ''] = key.split('|');
      out.push([{ method, topic_class: topicClass, code }, n]);
    }
    return out;
  }
}

/** A counter whose totals are read from elsewhere at scrape time. */
function readCounter<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => Labeled<L> | Promise<Labeled<L>>,
): void {
  new Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    async collect() {
      this.reset();
      const entries = await read();
      // reset() puts 0 back in a label-less metric: a part not configured has no sample
      if (entries.length === 0 && labelNames.length === 0) this.remove();
      for (const [labels, value] of entries) this.inc(labels, value);
    },
  });
}

/** A gauge read at scrape time; entries with an undefined value are left out. */
function readGauge<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => Labeled<L> | Promise<Labeled<L>>,
): void {
  new Gauge<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    async collect() {
      this.reset();
      const entries = await read();
      // reset() puts 0 back in a label-less gauge: unknown is no sample, not 0
      if (entries.length === 0 && labelNames.length === 0) this.remove();
      for (const [labels, value] of entries) this.set(labels, value);
    },
  });
}

/**
 * A histogram whose buckets come from a core layer's snapshot (cumulative counts in ms);
 * exposed in seconds. Each snapshot may carry a `backend` label value.
 */
class SnapshotHistogram extends Histogram<'backend'> {
  constructor(
    registry: Registry,
    private readonly metric: string,
    private readonly helpText: string,
    private readonly read: () => readonly (readonly [string | undefined, LatencySnapshot])[],
  ) {
    super({ name: metric, help: helpText, labelNames: ['backend'], registers: [registry] });
  }

  /** prom-client 15 renders histograms with this, not with get(). */
  getForPromString(): ReturnType<Histogram<'backend'>['get']> {
    return this.get();
  }

  override get(): ReturnType<Histogram<'backend'>['get']> {
    type Result = Awaited<ReturnType<Histogram<'backend'>['get']>>;
    const values: Result['values'] = [];
    // `le` is the bucket label Prometheus expects; prom-client's types leave it out
    const labels = (backend: string | undefined, le?: number | string): LabelValues<'backend'> => ({
      ...(backend !== undefined ? { backend } : {}),
      ...(le !== undefined ? { le } : {}),
    });
    const name = this.metric;
    for (const [backend, s] of this.read()) {
      s.boundsMs.forEach((bound, i) => {
        values.push({
          labels: labels(backend, bound / 1000),
          value: s.cumulative[i] ?? 0,
          metricName: `${name}_bucket`,
        });
      });
      values.push({
        labels: labels(backend, '+Inf'),
        value: s.count,
        metricName: `${name}_bucket`,
      });
      values.push({ labels: labels(backend), value: s.sumMs / 1000, metricName: `${name}_sum` });
      values.push({ labels: labels(backend), value: s.count, metricName: `${name}_count` });
    }
    // not super.get(): it calls getForPromString()
    return Promise.resolve({
      name,
      help: this.helpText,
      type: 'histogram',
      aggregator: 'sum',
      values,
    } as unknown as Result);
  }
}

function entries<K extends string, L extends string>(
  rec: Readonly<Record<K, number>>,
  label: L,
): Labeled<L> {
  return Object.entries<number>(rec).map(([k, v]) => [
    { [label]: k.replace(/-/g, '_') } as LabelValues<L>,
    v,
  ]);
}

const up = (b: boolean): number => (b ? 1 : 0);

export interface Metrics {
  readonly registry: Registry;
  readonly requests: RequestStats;
  readonly handshakeDuration: Histogram;
  /** Binds the sources once the gateway is built (metrics exist before, reading nothing). */
  bind(sources: MetricSources): void;
}

/** Seconds; device requests answered from memory take ~1 ms, backend round trips more. */
const LATENCY_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];
const HANDSHAKE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // gauges named like counters: `promtool check metrics` rejects them
  for (const name of [
    'nodejs_active_handles_total',
    'nodejs_active_requests_total',
    'nodejs_active_resources_total',
  ]) {
    registry.removeSingleMetric(name);
  }
  let src: MetricSources | undefined;
  const s = (): MetricSources | undefined => src;

  const latency = new Histogram<'method'>({
    name: 'coap_edge_coap_request_duration_seconds',
    help: 'Time from a device request to its answer (piggybacked or separate).',
    labelNames: ['method'],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const requests = new RequestStats(latency);
  const handshakeDuration = new Histogram({
    name: 'coap_edge_dtls_handshake_duration_seconds',
    help: 'Time from the verified ClientHello to the Finished message.',
    buckets: HANDSHAKE_BUCKETS,
    registers: [registry],
  });

  readGauge(
    registry,
    'coap_edge_ready',
    'Whether this instance is ready (1) or not (0, starting or draining).',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, up(x.ready())]];
    },
  );

  // --- datagrams and DTLS -----------------------------------------------------------------
  readCounter(
    registry,
    'coap_edge_datagrams_received_total',
    'UDP datagrams received, by listener.',
    ['transport'],
    () => {
      const x = s();
      return x === undefined
        ? []
        : [
            [{ transport: 'dtls' }, x.dtls.stats.datagramsIn],
            [{ transport: 'coap' }, x.plainDatagrams()],
          ];
    },
  );
  readCounter(
    registry,
    'coap_edge_datagrams_sent_total',
    'UDP datagrams sent on the DTLS listener.',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, x.dtls.stats.datagramsOut]];
    },
  );
  readCounter(registry, 'coap_edge_udp_send_errors_total', 'UDP sends that failed.', [], () => {
    const x = s();
    return x === undefined ? [] : [[{}, x.udpSendErrors()]];
  });
  readCounter(
    registry,
    'coap_edge_dtls_records_received_total',
    'DTLS records received.',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, x.dtls.stats.recordsIn]];
    },
  );
  readCounter(
    registry,
    'coap_edge_dtls_records_dropped_total',
    'DTLS records dropped, by reason.',
    ['reason'],
    () => {
      const x = s();
      return x === undefined ? [] : entries(x.dtls.stats.drops, 'reason');
    },
  );
  readCounter(
    registry,
    'coap_edge_dtls_hello_verify_requests_total',
    'HelloVerifyRequests sent (stateless cookie answers).',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, x.dtls.stats.helloVerifySent]];
    },
  );
  readCounter(
    registry,
    'coap_edge_dtls_handshakes_started_total',
    'Handshakes started after a valid cookie.',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, x.dtls.stats.handshakesStarted]];
    },
  );
  readCounter(
    registry,
    'coap_edge_dtls_handshakes_completed_total',
    'Handshakes completed, by cipher suite.',
    ['cipher_suite'],
    () => {
      const x = s();
      return x === undefined
        ? []
        : Object.entries(x.dtls.stats.completedBySuite).map(([suite, n]) => [
            { cipher_suite: suite },
            n,
          ]);
    },
  );
  readCounter(
    registry,
    'coap_edge_dtls_handshakes_failed_total',
    'Handshakes failed, by reason.',
    ['reason'],
    () => {
      const x = s();
      return x === undefined ? [] : entries(x.dtls.stats.handshakesFailed, 'reason');
    },
  );
  readCounter(
    registry,
    'coap_edge_dtls_retransmissions_total',
    'DTLS flights sent again.',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, x.dtls.stats.retransmissions]];
    },
  );
  readCounter(
    registry,
    'coap_edge_dtls_associations_closed_total',
    'DTLS associations ended, by reason.',
    ['reason'],
    () => {
      const x = s();
      return x === undefined ? [] : entries(x.dtls.stats.closed, 'reason');
    },
  );
  readGauge(registry, 'coap_edge_dtls_associations', 'Established DTLS associations.', [], () => {
    const x = s();
    return x === undefined ? [] : [[{}, x.dtls.associationCount]];
  });
  readGauge(
    registry,
    'coap_edge_dtls_handshakes_in_progress',
    'Half-open handshakes (after the cookie, before Finished).',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, x.dtls.handshakeCount]];
    },
  );
  readGauge(
    registry,
    'coap_edge_dtls_psk_lookups_pending',
    'Handshakes waiting for their key lookup.',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, x.dtls.stats.pskLookupsPending]];
    },
  );

  // --- CoAP -------------------------------------------------------------------------------
  readCounter(
    registry,
    'coap_edge_coap_messages_received_total',
    'CoAP messages received.',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, x.coap.messagesIn]];
    },
  );
  readCounter(
    registry,
    'coap_edge_coap_messages_dropped_total',
    'CoAP messages not processed, by reason.',
    ['reason'],
    () => {
      const x = s();
      if (x === undefined) return [];
      const c = x.coap;
      return [
        [{ reason: 'malformed' }, c.malformed],
        [{ reason: 'ignored' }, c.ignored],
        [{ reason: 'overloaded' }, c.overloaded],
      ];
    },
  );
  readCounter(
    registry,
    'coap_edge_coap_requests_total',
    'CoAP requests answered, by method, topic class and response code.',
    ['method', 'topic_class', 'code'],
    () => {
      const x = s();
      return x === undefined ? [] : x.requests.entries();
    },
  );
  readCounter(
    registry,
    'coap_edge_coap_exchange_events_total',
    'CoAP message-layer events.',
    ['event'],
    () => {
      const x = s();
      if (x === undefined) return [];
      const c = x.coap;
      return [
        [{ event: 'duplicate' }, c.duplicates],
        [{ event: 'empty_ack' }, c.emptyAcks],
        [{ event: 'separate_response' }, c.separateResponses],
        [{ event: 'retransmission' }, c.retransmissions],
        [{ event: 'give_up' }, c.giveUps],
        [{ event: 'reset_sent' }, c.resets],
        [{ event: 'reset_received' }, c.resetsReceived],
        [{ event: 'ping' }, c.pings],
        [{ event: 'bad_option' }, c.badOptions],
        [{ event: 'handler_error' }, c.handlerErrors],
      ];
    },
  );
  readCounter(
    registry,
    'coap_edge_coap_block_transfers_total',
    'Block-wise transfers (RFC 7959), by direction and outcome.',
    ['direction', 'outcome'],
    () => {
      const x = s();
      if (x === undefined) return [];
      const c = x.coap;
      return [
        [{ direction: 'block1', outcome: 'completed' }, c.block1Completed],
        [{ direction: 'block1', outcome: 'incomplete' }, c.block1Incomplete],
        [{ direction: 'block1', outcome: 'too_large' }, c.block1TooLarge],
        [{ direction: 'block2', outcome: 'started' }, c.block2Transfers],
        [{ direction: 'block2', outcome: 'served' }, c.block2Served],
      ];
    },
  );
  readGauge(
    registry,
    'coap_edge_coap_exchanges_in_flight',
    'Requests being processed or waiting for their separate response.',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, x.coap.exchangesInFlight]];
    },
  );
  readGauge(
    registry,
    'coap_edge_coap_dedup_entries',
    'Entries in the CoAP deduplication cache.',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, x.coap.dedupEntries]];
    },
  );

  // --- key lookups and activation -----------------------------------------------------------
  readCounter(
    registry,
    'coap_edge_key_lookups_total',
    'Secret lookups, by layer and outcome.',
    ['layer', 'outcome'],
    () => {
      const x = s();
      if (x === undefined) return [];
      const out: [LabelValues<'layer' | 'outcome'>, number][] = [];
      for (const [layer, outcomes] of Object.entries(x.auth.lookups)) {
        for (const [outcome, n] of Object.entries(outcomes as Record<string, number>)) {
          out.push([{ layer, outcome: outcome.replace(/-/g, '_') }, n]);
        }
      }
      return out;
    },
  );
  readCounter(
    registry,
    'coap_edge_registry_failures_total',
    'Registry requests that failed (error, timeout, circuit open).',
    [],
    () => {
      const x = s();
      return x === undefined ? [] : [[{}, x.auth.registryFailures]];
    },
  );
  readCounter(
    registry,
    'coap_edge_activations_total',
    'Dynamic activations (secureMode 3), by outcome.',
    ['outcome'],
    () => {
      const x = s();
      return x === undefined ? [] : entries(x.auth.activations, 'outcome');
    },
  );
  readGauge(
    registry,
    'coap_edge_redis_up',
    'Redis connection state by client (1 connected, 0 not); absent when Redis is not configured.',
    ['client'],
    () => {
      const x = s();
      if (x === undefined) return [];
      const out: [LabelValues<'client'>, number][] = [];
      const secrets = x.auth.redisState;
      if (secrets !== 'off') out.push([{ client: 'secrets' }, up(secrets === 'connected')]);
      const commands = x.commandsRedisUp?.();
      if (commands !== undefined) out.push([{ client: 'commands' }, up(commands)]);
      const presence = x.presence?.();
      if (presence !== undefined && secrets !== 'off')
        out.push([{ client: 'presence' }, up(presence.storeAvailable)]);
      return out;
    },
  );

  // --- backends ---------------------------------------------------------------------------
  readCounter(
    registry,
    'coap_edge_backend_requests_total',
    'Backend publishes and calls, by backend and outcome.',
    ['backend', 'outcome'],
    () => {
      const x = s();
      if (x === undefined) return [];
      const out: [LabelValues<'backend' | 'outcome'>, number][] = [];
      const m = x.mqtt?.();
      if (m !== undefined) {
        out.push([{ backend: 'mqtt', outcome: 'ok' }, m.publishes.ok]);
        for (const [r, n] of Object.entries(m.publishes.failed)) {
          out.push([{ backend: 'mqtt', outcome: r.replace(/-/g, '_') }, n]);
        }
      }
      const d = x.deviceSessions?.();
      if (d !== undefined) {
        out.push([{ backend: 'mqtt_device', outcome: 'ok' }, d.publishes.ok]);
        for (const [r, n] of Object.entries(d.publishes.failed)) {
          out.push([{ backend: 'mqtt_device', outcome: r.replace(/-/g, '_') }, n]);
        }
      }
      const h = x.http?.();
      if (h !== undefined) {
        for (const [r, n] of Object.entries(h.calls)) {
          out.push([{ backend: 'http', outcome: r.replace(/-/g, '_') }, n]);
        }
      }
      return out;
    },
  );
  new SnapshotHistogram(
    registry,
    'coap_edge_backend_request_duration_seconds',
    'Backend latency: MQTT publish to PUBACK, HTTP call to answer.',
    () => {
      const x = s();
      if (x === undefined) return [];
      const out: [string, LatencySnapshot][] = [];
      const m = x.mqtt?.();
      if (m !== undefined) out.push(['mqtt', m.pubackLatency]);
      const d = x.deviceSessions?.();
      if (d !== undefined) out.push(['mqtt_device', d.pubackLatency]);
      const h = x.http?.();
      if (h !== undefined) out.push(['http', h.latency]);
      return out;
    },
  );
  readGauge(
    registry,
    'coap_edge_backend_up',
    'Whether a backend is reachable (1) or not (0), by backend.',
    ['backend'],
    () => {
      const x = s();
      if (x === undefined) return [];
      const out: [LabelValues<'backend'>, number][] = [];
      const m = x.mqtt?.();
      if (m !== undefined) out.push([{ backend: 'mqtt' }, up(m.state === 'connected')]);
      const d = x.deviceSessions?.();
      if (d !== undefined) out.push([{ backend: 'mqtt_device' }, up(d.state !== 'down')]);
      return out;
    },
  );
  readCounter(
    registry,
    'coap_edge_mqtt_replies_total',
    'Platform replies awaited on _reply topics, by outcome.',
    ['outcome'],
    () => {
      const x = s();
      if (x === undefined) return [];
      const r = x.mqtt?.().replies ?? x.deviceSessions?.().replies;
      return r === undefined
        ? []
        : [
            [{ outcome: 'matched' }, r.matched],
            [{ outcome: 'timeout' }, r.timedOut],
            [{ outcome: 'unmatched' }, r.unmatched],
          ];
    },
  );
  readCounter(
    registry,
    'coap_edge_mqtt_reconnects_total',
    'MQTT bridge connection attempts after the first.',
    [],
    () => {
      const m = s()?.mqtt?.();
      return m === undefined ? [] : [[{}, m.reconnects]];
    },
  );
  readGauge(
    registry,
    'coap_edge_mqtt_device_sessions',
    'Per-device MQTT connections open.',
    [],
    () => {
      const d = s()?.deviceSessions?.();
      return d === undefined ? [] : [[{}, d.sessions.open]];
    },
  );
  readCounter(
    registry,
    'coap_edge_mqtt_device_connects_total',
    'Per-device MQTT logins, by outcome.',
    ['outcome'],
    () => {
      const d = s()?.deviceSessions?.();
      if (d === undefined) return [];
      const out: [LabelValues<'outcome'>, number][] = [[{ outcome: 'ok' }, d.connects.ok]];
      for (const [r, n] of Object.entries(d.connects.failed))
        out.push([{ outcome: r.replace(/-/g, '_') }, n]);
      for (const [r, n] of Object.entries(d.connects.refused))
        out.push([{ outcome: r.replace(/-/g, '_') }, n]);
      return out;
    },
  );
  readGauge(
    registry,
    'coap_edge_http_requests_in_flight',
    'HTTP route calls in flight.',
    [],
    () => {
      const h = s()?.http?.();
      return h === undefined ? [] : [[{}, h.inflight]];
    },
  );

  // --- commands and presence ---------------------------------------------------------------
  readCounter(
    registry,
    'coap_edge_commands_total',
    'Commands for devices, by event.',
    ['event'],
    () => {
      const c = s()?.commands?.();
      if (c === undefined) return [];
      return [
        [{ event: 'enqueued' }, c.enqueued],
        [{ event: 'refused_full' }, c.refusedFull],
        [{ event: 'duplicate' }, c.duplicates],
        [{ event: 'expired' }, c.expired],
        [{ event: 'delivered' }, c.delivered],
        [{ event: 'acknowledged' }, c.acknowledged],
      ];
    },
  );
  readGauge(
    registry,
    'coap_edge_commands_waiters',
    'Requests held open for a command (ttd).',
    [],
    () => {
      const c = s()?.commands?.();
      return c === undefined ? [] : [[{}, c.waiters]];
    },
  );
  new SnapshotHistogram(
    registry,
    'coap_edge_command_age_seconds',
    'Age of a command when it is handed to its device.',
    () => {
      const a = s()?.commandAge?.();
      return a === undefined ? [] : [[undefined, a]];
    },
  );
  readGauge(
    registry,
    'coap_edge_devices_online',
    'Devices online across all instances (from the shared presence store).',
    [],
    async () => {
      const n = await s()?.onlineDevices?.();
      return n === undefined ? [] : [[{}, n]];
    },
  );
  readCounter(
    registry,
    'coap_edge_presence_transitions_total',
    'Presence transitions decided by this instance, by status and reason.',
    ['status', 'reason'],
    () => {
      const p = s()?.presence?.();
      if (p === undefined) return [];
      const out: [LabelValues<'status' | 'reason'>, number][] = [
        [{ status: 'online', reason: 'first_request' }, p.online],
      ];
      for (const [r, n] of Object.entries(p.offline))
        out.push([{ status: 'offline', reason: r.replace(/-/g, '_') }, n]);
      return out;
    },
  );

  return {
    registry,
    requests,
    handshakeDuration,
    bind(sources) {
      src = sources;
    },
  };
}
