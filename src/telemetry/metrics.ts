/**
 * Prometheus metrics for Grafana. Core layers keep plain counters (an add on the hot path);
 * this module reads them when Prometheus scrapes, so metrics cost nothing between scrapes.
 * Histograms too: the request latency (`RequestStats`), the handshake and adoption durations
 * (`plainHistogram`) and the backend latencies are counted in plain buckets and read at
 * scrape time.
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
import type { CommandIntakeStats } from '../bridge/commands/intake.js';
import type { CommandStoreStats } from '../bridge/commands/stats.js';
import type { HttpBackendStats } from '../bridge/http/stats.js';
import type { DeviceSessionStats } from '../bridge/mqtt/per-device.js';
import {
  LatencyHistogram,
  type LatencySnapshot,
  type MqttBackendStats,
} from '../bridge/mqtt/stats.js';
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
  /** The MQTT command intake (shared mode), when it runs. */
  readonly commandIntake?: () => CommandIntakeStats;
  readonly commandAge?: () => LatencySnapshot;
  /** ttd long-polls refused by the per-device and the total bound. */
  readonly ttd?: () => { readonly refusedDevice: number; readonly refusedTotal: number };
  readonly commandsRedisUp?: () => boolean | undefined;
  readonly presence?: () => PresenceStats;
  /** Devices online across all pods (Redis), when known. */
  readonly onlineDevices?: () => Promise<number | undefined>;
  readonly ready: () => boolean;
}

type Labeled<L extends string> = readonly (readonly [LabelValues<L>, number])[];

/**
 * Request counts by method, topic class and response code, and the latency by method in
 * plain buckets (upper bounds `boundsMs`), read at scrape time: prom-client's `observe`
 * with a label builds a closure, a label object and the label hash per call.
 */
export class RequestStats {
  /**
   * Counts by method, then topic class, then code: the three labels are short constant
   * strings, so each request costs three lookups and no key string built and hashed.
   */
  private readonly counts = new Map<string, Map<string, Map<string, { n: number }>>>();
  private readonly latency = new Map<string, LatencyHistogram>();

  constructor(private readonly boundsMs: readonly number[]) {}

  /**
   * The labels, cell and histogram of the last request recorded: requests mostly repeat the
   * one before (a fleet's uplinks), and comparing three constant strings costs less than the
   * four map lookups below.
   */
  private lastMethod = '';
  private lastClass = '';
  private lastCode = '';
  private lastCell: { n: number } | undefined;
  private lastHistogram: LatencyHistogram | undefined;

  record(method: string, topicClass: string, code: string, seconds: number): void {
    if (
      this.lastCell !== undefined &&
      this.lastHistogram !== undefined &&
      method === this.lastMethod &&
      topicClass === this.lastClass &&
      code === this.lastCode
    ) {
      this.lastCell.n++;
      this.lastHistogram.observe(seconds * 1000);
      return;
    }
    let byClass = this.counts.get(method);
    if (byClass === undefined) {
      byClass = new Map();
      this.counts.set(method, byClass);
    }
    let byCode = byClass.get(topicClass);
    if (byCode === undefined) {
      byCode = new Map();
      byClass.set(topicClass, byCode);
    }
    let cell = byCode.get(code);
    if (cell === undefined) {
      cell = { n: 1 };
      byCode.set(code, cell);
    } else cell.n++;
    let h = this.latency.get(method);
    if (h === undefined) {
      h = new LatencyHistogram(this.boundsMs);
      this.latency.set(method, h);
    }
    h.observe(seconds * 1000);
    this.lastMethod = method;
    this.lastClass = topicClass;
    this.lastCode = code;
    this.lastCell = cell;
    this.lastHistogram = h;
  }

  /** The latency histogram of each method seen so far. */
  latencies(): [string, LatencySnapshot][] {
    return [...this.latency].map(([method, h]) => [method, h.snapshot()]);
  }

  entries(): Labeled<'method' | 'topic_class' | 'code'> {
    const out: [LabelValues<'method' | 'topic_class' | 'code'>, number][] = [];
    for (const [method, byClass] of this.counts) {
      for (const [topicClass, byCode] of byClass) {
        for (const [code, { n }] of byCode)
          out.push([{ method, topic_class: topicClass, code }, n]);
      }
    }
    return out;
  }
}

/**
 * Puts the samples read at scrape time into a counter or gauge. After reset() a value is 0,
 * so inc() sets it for both kinds.
 */
async function refill<L extends string>(
  metric: Counter<L> | Gauge<L>,
  labelNames: readonly L[],
  read: () => Labeled<L> | Promise<Labeled<L>>,
): Promise<void> {
  metric.reset();
  const samples = await read();
  // reset() puts 0 back in a label-less metric: a part not configured (or a value not
  // known) has no sample, not 0
  if (samples.length === 0 && labelNames.length === 0) metric.remove();
  for (const [labels, value] of samples) metric.inc(labels, value);
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
    collect() {
      return refill(this, labelNames, read);
    },
  });
}

/** A gauge read at scrape time; a label-less one with no value has no sample. */
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
    collect() {
      return refill(this, labelNames, read);
    },
  });
}

/**
 * A histogram whose buckets come from a core layer's snapshot (cumulative counts in ms);
 * exposed in seconds. Each snapshot may carry a value of the label `labelName` (`backend`
 * unless given).
 */
class SnapshotHistogram<L extends string = 'backend'> extends Histogram<L> {
  constructor(
    registry: Registry,
    private readonly metric: string,
    private readonly helpText: string,
    private readonly read: () => readonly (readonly [string | undefined, LatencySnapshot])[],
    private readonly labelName: L = 'backend' as L,
  ) {
    super({ name: metric, help: helpText, labelNames: [labelName], registers: [registry] });
  }

  /** prom-client 15 renders histograms with this, not with get(). */
  getForPromString(): ReturnType<Histogram<L>['get']> {
    return this.get();
  }

  override get(): ReturnType<Histogram<L>['get']> {
    type Result = Awaited<ReturnType<Histogram<L>['get']>>;
    const values: Result['values'] = [];
    // `le` is the bucket label Prometheus expects; prom-client's types leave it out
    const labels = (value: string | undefined, le?: number | string): LabelValues<L> =>
      ({
        ...(value !== undefined ? { [this.labelName]: value } : {}),
        ...(le !== undefined ? { le } : {}),
      }) as LabelValues<L>;
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

/**
 * A label-less histogram observed in ms into plain buckets (upper bounds `bounds`, in
 * seconds) and read at scrape time, exposed in seconds: prom-client's `observe` hashes the
 * (empty) label set and looks the series up on every call, once per handshake here.
 */
function plainHistogram(
  registry: Registry,
  name: string,
  help: string,
  bounds: readonly number[],
): LatencyHistogram {
  const h = new LatencyHistogram(bounds.map((b) => b * 1000));
  new SnapshotHistogram(registry, name, help, () => [[undefined, h.snapshot()]]);
  return h;
}

/** One sample per key of `rec` (dashes in keys become underscores), plus fixed labels. */
function entries<K extends string, F extends string = never>(
  rec: Readonly<Record<string, number>>,
  label: K,
  fixed?: LabelValues<F>,
): [LabelValues<K | F>, number][] {
  return Object.entries(rec).map(([k, v]) => [
    { ...fixed, [label]: k.replace(/-/g, '_') } as LabelValues<K | F>,
    v,
  ]);
}

/** Samples of fixed label values: `[['ok', n], ...]` becomes `[[{ outcome: 'ok' }, n], ...]`. */
function named<L extends string>(
  label: L,
  values: readonly (readonly [string, number])[],
): Labeled<L> {
  return values.map(([k, v]) => [{ [label]: k } as LabelValues<L>, v]);
}

const up = (b: boolean): number => (b ? 1 : 0);

export interface Metrics {
  readonly registry: Registry;
  readonly requests: RequestStats;
  /** The handshake's duration, observed in ms. */
  readonly handshakeDuration: LatencyHistogram;
  /**
   * Time from the first record of an association established elsewhere to its adoption from
   * the shared store (the DTLS server's `onAdopted` hook; docs/operations.md, "Shared
   * associations"), observed in ms.
   */
  readonly adoptionDuration: LatencyHistogram;
  /** Binds the sources once the gateway is built (metrics exist before, reading nothing). */
  bind(sources: MetricSources): void;
}

/** Seconds; device requests answered from memory take ~1 ms, backend round trips more. */
const LATENCY_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];
const HANDSHAKE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** How often the event-loop delay is sampled, ms (prom-client's default is 10). */
export const EVENT_LOOP_SAMPLE_MS = 100;

export function createMetrics(): Metrics {
  const registry = new Registry();
  // The event-loop delay histogram (nodejs_eventloop_lag_p50/p90/p99…) samples the loop
  // with a native timer every `eventLoopMonitoringPrecision` ms: prom-client's 10 ms woke an
  // idle gateway 100 times a second, ~8 ms of CPU a second and nearly all of an idle pod's;
  // 100 ms still gives ten samples a second for the percentiles (docs/observability.md).
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  // gauges named like counters: `promtool check metrics` rejects them
  for (const name of [
    'nodejs_active_handles_total',
    'nodejs_active_requests_total',
    'nodejs_active_resources_total',
  ]) {
    registry.removeSingleMetric(name);
  }
  let src: MetricSources | undefined;
  /** Samples from the bound sources; none before bind(). */
  const from =
    <L extends string>(read: (x: MetricSources) => Labeled<L>) =>
    (): Labeled<L> =>
      src === undefined ? [] : read(src);
  /** One label-less sample; none before bind() or while `read` gives undefined. */
  const one = (read: (x: MetricSources) => number | undefined) => (): Labeled<never> => {
    const v = src === undefined ? undefined : read(src);
    return v === undefined ? [] : [[{}, v]];
  };

  const requests = new RequestStats(LATENCY_BUCKETS.map((s) => s * 1000));
  new SnapshotHistogram(
    registry,
    'coap_edge_coap_request_duration_seconds',
    'Time from a device request to its answer (piggybacked or separate).',
    () => requests.latencies(),
    'method',
  );
  const handshakeDuration = plainHistogram(
    registry,
    'coap_edge_dtls_handshake_duration_seconds',
    'Time from the verified ClientHello to the Finished message.',
    HANDSHAKE_BUCKETS,
  );
  const adoptionDuration = plainHistogram(
    registry,
    'coap_edge_dtls_adoption_duration_seconds',
    'Time from the first record of an association established on another instance to its adoption from the shared store (store round trip included).',
    HANDSHAKE_BUCKETS,
  );

  readGauge(
    registry,
    'coap_edge_ready',
    'Whether this instance is ready (1) or not (0, starting or draining).',
    [],
    one((x) => up(x.ready())),
  );

  // --- datagrams and DTLS -----------------------------------------------------------------
  readCounter(
    registry,
    'coap_edge_datagrams_received_total',
    'UDP datagrams received, by listener.',
    ['transport'],
    from((x) =>
      named('transport', [
        ['dtls', x.dtls.stats.datagramsIn],
        ['coap', x.plainDatagrams()],
      ]),
    ),
  );
  readCounter(
    registry,
    'coap_edge_datagrams_sent_total',
    'UDP datagrams sent on the DTLS listener.',
    [],
    one((x) => x.dtls.stats.datagramsOut),
  );
  readCounter(
    registry,
    'coap_edge_udp_send_errors_total',
    'UDP sends that failed.',
    [],
    one((x) => x.udpSendErrors()),
  );
  readCounter(
    registry,
    'coap_edge_dtls_records_received_total',
    'DTLS records received.',
    [],
    one((x) => x.dtls.stats.recordsIn),
  );
  readCounter(
    registry,
    'coap_edge_dtls_records_dropped_total',
    'DTLS records dropped, by reason.',
    ['reason'],
    from((x) => entries(x.dtls.stats.drops, 'reason')),
  );
  readCounter(
    registry,
    'coap_edge_dtls_records_matched_total',
    'Protected DTLS records matched to an association, by how: cid (RFC 9146 Connection ID) or address (source address and port).',
    ['by'],
    from((x) => entries(x.dtls.stats.demux, 'by')),
  );
  readCounter(
    registry,
    'coap_edge_dtls_peer_address_updates_total',
    'DTLS associations that followed their peer to a new address (Connection ID, RFC 9146 §6).',
    [],
    one((x) => x.dtls.stats.peerAddressUpdates),
  );
  readCounter(
    registry,
    'coap_edge_dtls_associations_parked_total',
    'CID associations taken off their address because another peer handshook from it (NAT port reuse); kept until their device speaks again.',
    [],
    one((x) => x.dtls.stats.parked),
  );
  readCounter(
    registry,
    'coap_edge_dtls_amplification_limited_total',
    'Datagrams not sent to a peer address not yet validated after a move, over 3x the bytes received from it (RFC 9853).',
    [],
    one((x) => x.dtls.stats.amplificationLimited),
  );
  readCounter(
    registry,
    'coap_edge_dtls_record_too_large_total',
    "Records not sent because they exceeded the device's record size limit (RFC 8449 record_size_limit, RFC 6066 max_fragment_length).",
    [],
    one((x) => x.dtls.stats.recordTooLarge),
  );
  readCounter(
    registry,
    'coap_edge_dtls_hello_verify_requests_total',
    'HelloVerifyRequests sent (stateless cookie answers).',
    [],
    one((x) => x.dtls.stats.helloVerifySent),
  );
  readCounter(
    registry,
    'coap_edge_dtls_handshakes_started_total',
    'Handshakes started after a valid cookie.',
    [],
    one((x) => x.dtls.stats.handshakesStarted),
  );
  readCounter(
    registry,
    'coap_edge_dtls_handshakes_completed_total',
    'Handshakes completed, by cipher suite.',
    ['cipher_suite'],
    from((x) => named('cipher_suite', Object.entries(x.dtls.stats.completedBySuite))),
  );
  readCounter(
    registry,
    'coap_edge_dtls_handshakes_failed_total',
    'Handshakes failed, by reason and by the cipher suite of our ServerHello (none: failed before it).',
    ['reason', 'cipher_suite'],
    from((x) =>
      Object.entries(x.dtls.stats.failedBySuite).flatMap(([suite, byReason]) =>
        entries(byReason, 'reason', { cipher_suite: suite }),
      ),
    ),
  );
  readCounter(
    registry,
    'coap_edge_dtls_retransmissions_total',
    'DTLS flights sent again.',
    [],
    one((x) => x.dtls.stats.retransmissions),
  );
  readCounter(
    registry,
    'coap_edge_dtls_associations_closed_total',
    'DTLS associations ended, by reason.',
    ['reason'],
    from((x) => entries(x.dtls.stats.closed, 'reason')),
  );
  readCounter(
    registry,
    'coap_edge_dtls_associations_evicted_total',
    'DTLS associations evicted to make room, by rule: group_cap (a product at its secureMode 3 cap), then with the table full restricted, idle, active.',
    ['class'],
    from((x) => entries(x.dtls.stats.evicted, 'class')),
  );
  readGauge(
    registry,
    'coap_edge_dtls_associations',
    'Established DTLS associations.',
    [],
    one((x) => x.dtls.associationCount),
  );
  readGauge(
    registry,
    'coap_edge_dtls_handshakes_in_progress',
    'Half-open handshakes (after the cookie, before Finished).',
    [],
    one((x) => x.dtls.handshakeCount),
  );
  readGauge(
    registry,
    'coap_edge_dtls_psk_lookups_pending',
    'Handshakes waiting for their key lookup.',
    [],
    one((x) => x.dtls.stats.pskLookupsPending),
  );

  // --- shared associations (docs/operations.md, "Shared associations") ----------------------
  // all zero without a shared store (no Redis or no associationKey)
  readCounter(
    registry,
    'coap_edge_dtls_adoptions_total',
    'DTLS associations established on another instance and taken over from the shared store, by what matched the record: cid (Connection ID) or address.',
    ['via'],
    from((x) => entries(x.dtls.stats.shared.adoptions, 'via')),
  );
  readCounter(
    registry,
    'coap_edge_dtls_association_lookups_total',
    'Shared-store lookups for records of unknown associations, by result: found (adopted), missing (not stored), negative (negative cache, not asked), limited (too many lookups in flight, record dropped), unproven (stored, but no record authenticated: forged), fenced (authentic records below a receive fence that did not come down in time: adopted at the fence, the records below it refused), error (store unreachable or state unreadable).',
    ['result'],
    from((x) => {
      const l = x.dtls.stats.shared.lookups;
      return named('result', [
        ['found', l.found],
        ['missing', l.missing],
        ['negative', l.negative],
        ['limited', l.limited],
        ['unproven', l.unproven],
        ['fenced', l.fenced],
        ['error', l.error],
      ]);
    }),
  );
  readCounter(
    registry,
    'coap_edge_dtls_sequence_leases_total',
    'Sequence-number lease operations on the shared store, by kind: tx (a block of write sequence numbers), rx (receive fence raised), lower (receive fence lowered when the association went quiet or was handed over).',
    ['kind'],
    from((x) => {
      const l = x.dtls.stats.shared.leases;
      return named('kind', [
        ['tx', l.tx],
        ['rx', l.rx],
        ['lower', l.lower],
      ]);
    }),
  );
  readCounter(
    registry,
    'coap_edge_dtls_sequence_leases_lost_total',
    'Lease operations refused because another instance holds the association now.',
    [],
    one((x) => x.dtls.stats.shared.leasesLost),
  );
  readCounter(
    registry,
    'coap_edge_dtls_sequence_lease_errors_total',
    'Lease operations that failed: the shared store was unreachable.',
    [],
    one((x) => x.dtls.stats.shared.leaseErrors),
  );
  readCounter(
    registry,
    'coap_edge_dtls_records_held_for_lease_total',
    'DTLS records held while a sequence lease was outstanding.',
    [],
    one((x) => x.dtls.stats.shared.heldForLease),
  );
  readCounter(
    registry,
    'coap_edge_dtls_records_dropped_for_lease_total',
    'DTLS records dropped because too many waited for a sequence lease.',
    [],
    one((x) => x.dtls.stats.shared.droppedForLease),
  );
  readCounter(
    registry,
    'coap_edge_dtls_associations_stored_total',
    'DTLS associations written to the shared store after their handshake.',
    [],
    one((x) => x.dtls.stats.shared.stored),
  );
  readCounter(
    registry,
    'coap_edge_dtls_association_store_errors_total',
    'DTLS associations that could not be written to the shared store (they stay on this instance).',
    [],
    one((x) => x.dtls.stats.shared.storeErrors),
  );
  readCounter(
    registry,
    'coap_edge_dtls_associations_offloaded_total',
    'DTLS associations dropped from the memory of this instance that live on in the shared store (memory bound, drain).',
    [],
    one((x) => x.dtls.stats.shared.offloaded),
  );

  // --- CoAP -------------------------------------------------------------------------------
  readCounter(
    registry,
    'coap_edge_coap_messages_received_total',
    'CoAP messages received.',
    [],
    one((x) => x.coap.messagesIn),
  );
  readCounter(
    registry,
    'coap_edge_coap_messages_dropped_total',
    'CoAP messages not processed, by reason.',
    ['reason'],
    from(({ coap: c }) =>
      named('reason', [
        ['malformed', c.malformed],
        ['ignored', c.ignored],
        ['overloaded', c.overloaded],
      ]),
    ),
  );
  readCounter(
    registry,
    'coap_edge_coap_requests_total',
    'CoAP requests answered, by method, topic class and response code.',
    ['method', 'topic_class', 'code'],
    from((x) => x.requests.entries()),
  );
  readCounter(
    registry,
    'coap_edge_coap_exchange_events_total',
    'CoAP message-layer events.',
    ['event'],
    from(({ coap: c }) =>
      named('event', [
        ['duplicate', c.duplicates],
        ['empty_ack', c.emptyAcks],
        ['separate_response', c.separateResponses],
        ['retransmission', c.retransmissions],
        ['give_up', c.giveUps],
        ['reset_sent', c.resets],
        ['reset_received', c.resetsReceived],
        ['ping', c.pings],
        ['bad_option', c.badOptions],
        ['handler_error', c.handlerErrors],
      ]),
    ),
  );
  readCounter(
    registry,
    'coap_edge_coap_block_transfers_total',
    'Block-wise transfers (RFC 7959), by direction and outcome.',
    ['direction', 'outcome'],
    from(({ coap: c }) => [
      [{ direction: 'block1', outcome: 'completed' }, c.block1Completed],
      [{ direction: 'block1', outcome: 'incomplete' }, c.block1Incomplete],
      [{ direction: 'block1', outcome: 'too_large' }, c.block1TooLarge],
      [{ direction: 'block1', outcome: 'refused' }, c.block1Refused],
      [{ direction: 'block2', outcome: 'started' }, c.block2Transfers],
      [{ direction: 'block2', outcome: 'served' }, c.block2Served],
      [{ direction: 'block2', outcome: 'too_large_for_peer' }, c.tooLargeForPeer],
    ]),
  );
  readGauge(
    registry,
    'coap_edge_coap_exchanges_in_flight',
    'Requests being processed or waiting for their separate response.',
    [],
    one((x) => x.coap.exchangesInFlight),
  );
  readGauge(
    registry,
    'coap_edge_coap_dedup_entries',
    'Entries in the CoAP deduplication cache.',
    [],
    one((x) => x.coap.dedupEntries),
  );

  // --- key lookups and activation -----------------------------------------------------------
  readCounter(
    registry,
    'coap_edge_key_lookups_total',
    'Secret lookups, by layer and outcome.',
    ['layer', 'outcome'],
    from((x) =>
      Object.entries(x.auth.lookups).flatMap(([layer, outcomes]) =>
        entries(outcomes as Record<string, number>, 'outcome', { layer }),
      ),
    ),
  );
  readCounter(
    registry,
    'coap_edge_registry_failures_total',
    'Registry requests that failed (error, timeout, circuit open).',
    [],
    one((x) => x.auth.registryFailures),
  );
  readCounter(
    registry,
    'coap_edge_activations_total',
    'Dynamic activations (secureMode 3), by outcome.',
    ['outcome'],
    from((x) => entries(x.auth.activations, 'outcome')),
  );
  readGauge(
    registry,
    'coap_edge_redis_up',
    'Redis connection state by client (1 connected, 0 not); absent when Redis is not configured.',
    ['client'],
    from((x) => {
      const out: [string, number][] = [];
      const secrets = x.auth.redisState;
      if (secrets !== 'off') out.push(['secrets', up(secrets === 'connected')]);
      const commands = x.commandsRedisUp?.();
      if (commands !== undefined) out.push(['commands', up(commands)]);
      const presence = x.presence?.();
      if (presence !== undefined && secrets !== 'off')
        out.push(['presence', up(presence.storeAvailable)]);
      return named('client', out);
    }),
  );

  // --- backends ---------------------------------------------------------------------------
  readCounter(
    registry,
    'coap_edge_backend_requests_total',
    'Backend publishes and calls, by backend and outcome.',
    ['backend', 'outcome'],
    from((x) => {
      const out: [LabelValues<'backend' | 'outcome'>, number][] = [];
      const m = x.mqtt?.();
      if (m !== undefined) {
        out.push([{ backend: 'mqtt', outcome: 'ok' }, m.publishes.ok]);
        out.push(...entries(m.publishes.failed, 'outcome', { backend: 'mqtt' }));
      }
      const d = x.deviceSessions?.();
      if (d !== undefined) {
        out.push([{ backend: 'mqtt_device', outcome: 'ok' }, d.publishes.ok]);
        out.push(...entries(d.publishes.failed, 'outcome', { backend: 'mqtt_device' }));
      }
      const h = x.http?.();
      if (h !== undefined) out.push(...entries(h.calls, 'outcome', { backend: 'http' }));
      return out;
    }),
  );
  new SnapshotHistogram(
    registry,
    'coap_edge_backend_request_duration_seconds',
    'Backend latency: MQTT publish to PUBACK, HTTP call to answer.',
    () => {
      if (src === undefined) return [];
      const out: [string, LatencySnapshot][] = [];
      const m = src.mqtt?.();
      if (m !== undefined) out.push(['mqtt', m.pubackLatency]);
      const d = src.deviceSessions?.();
      if (d !== undefined) out.push(['mqtt_device', d.pubackLatency]);
      const h = src.http?.();
      if (h !== undefined) out.push(['http', h.latency]);
      return out;
    },
  );
  readGauge(
    registry,
    'coap_edge_backend_up',
    'Whether a backend is reachable (1) or not (0), by backend.',
    ['backend'],
    from((x) => {
      const out: [string, number][] = [];
      const m = x.mqtt?.();
      if (m !== undefined) out.push(['mqtt', up(m.state === 'connected')]);
      const d = x.deviceSessions?.();
      if (d !== undefined) out.push(['mqtt_device', up(d.state !== 'down')]);
      return named('backend', out);
    }),
  );
  readCounter(
    registry,
    'coap_edge_mqtt_replies_total',
    'Platform replies awaited on _reply topics, by outcome.',
    ['outcome'],
    from((x) => {
      const r = x.mqtt?.().replies ?? x.deviceSessions?.().replies;
      return r === undefined
        ? []
        : named('outcome', [
            ['matched', r.matched],
            ['timeout', r.timedOut],
            ['unmatched', r.unmatched],
          ]);
    }),
  );
  readCounter(
    registry,
    'coap_edge_mqtt_reconnects_total',
    'MQTT bridge connection attempts after the first.',
    [],
    one((x) => x.mqtt?.().reconnects),
  );
  readCounter(
    registry,
    'coap_edge_mqtt_suspects_total',
    'Bridge pool: devices struck because the broker dropped a connection with their publish in flight (strike), and their publishes refused unsent while suspended (refused).',
    ['event'],
    from((x) => {
      const m = x.mqtt?.().suspects;
      return m === undefined
        ? []
        : named('event', [
            ['strike', m.strikes],
            ['refused', m.refused],
          ]);
    }),
  );
  readGauge(
    registry,
    'coap_edge_mqtt_device_sessions',
    'Per-device MQTT connections open.',
    [],
    one((x) => x.deviceSessions?.().sessions.open),
  );
  readCounter(
    registry,
    'coap_edge_mqtt_device_connects_total',
    'Per-device MQTT logins, by outcome.',
    ['outcome'],
    from((x) => {
      const d = x.deviceSessions?.();
      if (d === undefined) return [];
      return [
        [{ outcome: 'ok' }, d.connects.ok],
        ...entries(d.connects.failed, 'outcome'),
        ...entries(d.connects.refused, 'outcome'),
      ];
    }),
  );
  readGauge(
    registry,
    'coap_edge_http_requests_in_flight',
    'HTTP route calls in flight.',
    [],
    one((x) => x.http?.().inflight),
  );

  // --- commands and presence ---------------------------------------------------------------
  readCounter(
    registry,
    'coap_edge_commands_total',
    'Commands for devices, by event.',
    ['event'],
    from((x) => {
      const c = x.commands?.();
      return c === undefined
        ? []
        : named('event', [
            ['enqueued', c.enqueued],
            ['refused_full', c.refusedFull],
            ['duplicate', c.duplicates],
            ['expired', c.expired],
            ['delivered', c.delivered],
            ['acknowledged', c.acknowledged],
            ['peek_skipped', c.peeksSkipped],
          ]);
    }),
  );
  readCounter(
    registry,
    'coap_edge_command_intake_total',
    'Messages the MQTT command intake received, by outcome: enqueued, refused_full (the queue was full), too_large, not_command (replies and other topics), retained, foreign (outside topicPrefix), lost (a store error other than unavailable), and retry (a store attempt that found Redis unavailable; the command waits, unacknowledged).',
    ['outcome'],
    from((x) => {
      const c = x.commandIntake?.();
      return c === undefined
        ? []
        : named('outcome', [
            ['enqueued', c.enqueued],
            ['refused_full', c.refusedFull],
            ['too_large', c.tooLarge],
            ['not_command', c.ignored.notCommand],
            ['retained', c.ignored.retained],
            ['foreign', c.ignored.foreign],
            ['lost', c.storeErrors],
            ['retry', c.storeRetries],
          ]);
    }),
  );
  readCounter(
    registry,
    'coap_edge_ttd_refused_total',
    'Requests with ttd answered 4.29 (not forwarded), by the bound they hit: device (maxTtdWaitersPerDevice) or total (maxTtdWaiters).',
    ['bound'],
    from((x) => {
      const t = x.ttd?.();
      return t === undefined
        ? []
        : named('bound', [
            ['device', t.refusedDevice],
            ['total', t.refusedTotal],
          ]);
    }),
  );
  readGauge(
    registry,
    'coap_edge_commands_waiters',
    'Requests held open for a command (ttd).',
    [],
    one((x) => x.commands?.().waiters),
  );
  new SnapshotHistogram(
    registry,
    'coap_edge_command_age_seconds',
    'Age of a command when it is handed to its device.',
    () => {
      const a = src?.commandAge?.();
      return a === undefined ? [] : [[undefined, a]];
    },
  );
  readGauge(
    registry,
    'coap_edge_devices_online',
    'Devices online across all instances (from the shared presence store).',
    [],
    async () => {
      const n = await src?.onlineDevices?.();
      return n === undefined ? [] : [[{}, n]];
    },
  );
  readCounter(
    registry,
    'coap_edge_presence_transitions_total',
    'Presence transitions decided by this instance, by status and reason.',
    ['status', 'reason'],
    from((x) => {
      const p = x.presence?.();
      if (p === undefined) return [];
      return [
        [{ status: 'online', reason: 'first_request' }, p.online],
        ...entries(p.offline, 'reason', { status: 'offline' }),
      ];
    }),
  );

  return {
    registry,
    requests,
    handshakeDuration,
    adoptionDuration,
    bind(sources) {
      src = sources;
    },
  };
}
