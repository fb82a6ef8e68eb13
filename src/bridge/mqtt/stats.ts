/**
 * Plain-number counters of the MQTT backend, read by readiness and metrics (telemetry/ turns
 * them into OpenTelemetry instruments; nothing here depends on it).
 */

/** Upper bounds (ms) of the PUBACK latency buckets; the last, implicit bucket is +Inf. */
const PUBACK_LATENCY_BOUNDS_MS: readonly number[] = [
  1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
];

/** A fixed-bucket histogram of milliseconds, Prometheus style (cumulative counts). */
export interface LatencySnapshot {
  /** Upper bounds in ms, ascending. */
  readonly boundsMs: readonly number[];
  /** `cumulative[i]` = observations <= `boundsMs[i]`; observations above all are in `count`. */
  readonly cumulative: readonly number[];
  readonly count: number;
  readonly sumMs: number;
}

export class LatencyHistogram {
  private readonly buckets: number[];
  private count = 0;
  private sumMs = 0;

  constructor(private readonly boundsMs: readonly number[] = PUBACK_LATENCY_BOUNDS_MS) {
    this.buckets = boundsMs.map(() => 0);
  }

  observe(ms: number): void {
    this.count++;
    this.sumMs += ms;
    for (let i = 0; i < this.boundsMs.length; i++) {
      if (ms <= (this.boundsMs[i] ?? Infinity)) {
        this.buckets[i] = (this.buckets[i] ?? 0) + 1;
        return;
      }
    }
  }

  snapshot(): LatencySnapshot {
    let run = 0;
    const cumulative = this.buckets.map((n) => (run += n));
    return { boundsMs: this.boundsMs, cumulative, count: this.count, sumMs: this.sumMs };
  }
}

/** Why a publish failed; one counter each. */
export type PublishFailureReason =
  'unavailable' | 'connection-lost' | 'puback-timeout' | 'overloaded' | 'rejected' | 'closed';

/**
 * What publishes came to: acknowledged (with their PUBACK latency) or failed, one counter per
 * reason (`reasonOf` tells an error's).
 */
export class PublishCounters<R extends string> {
  ok = 0;
  readonly failed: Record<R, number>;
  readonly latency = new LatencyHistogram();

  constructor(
    reasons: readonly R[],
    private readonly reasonOf: (e: unknown) => R,
  ) {
    this.failed = Object.fromEntries(reasons.map((r) => [r, 0])) as Record<R, number>;
  }

  acked(latencyMs: number): void {
    this.ok++;
    this.latency.observe(latencyMs);
  }

  failure(e: unknown): void {
    this.failed[this.reasonOf(e)]++;
  }
}

export type BackendState = 'connected' | 'connecting' | 'down';

export interface MqttBackendStats {
  readonly state: BackendState;
  /** Connections in the pool and how many are up. */
  readonly connections: { readonly total: number; readonly up: number };
  /** MQTT protocol level of the up connections (5, 4 = 3.1.1), undefined when none is up. */
  readonly protocolVersion: 4 | 5 | undefined;
  readonly publishes: {
    readonly ok: number;
    readonly failed: { readonly [R in PublishFailureReason]: number };
    /** Publishes sent and not yet acknowledged, over all connections. */
    readonly inflight: number;
    /** Publishes waiting for an in-flight slot. */
    readonly queued: number;
  };
  readonly pubackLatency: LatencySnapshot;
  readonly replies: {
    readonly matched: number;
    readonly timedOut: number;
    /** Messages on reply topics that no waiting request took (unknown id, late, duplicate). */
    readonly unmatched: number;
    /** Requests waiting for their reply now. */
    readonly waiting: number;
  };
  readonly subscriptions: {
    /** Reply topics subscribed now (including those lingering after their last use). */
    readonly active: number;
    readonly failed: number;
  };
  /** Connection attempts after the first one of each connection. */
  readonly reconnects: number;
  readonly connectionUps: number;
  readonly connectionDowns: number;
  /** Times `auto` fell back from MQTT 5 to 3.1.1 because the broker refused version 5. */
  readonly protocolFallbacks: number;
  /** Devices suspected of poisoning a connection (`suspects.ts`). */
  readonly suspects: {
    /** A device struck by a connection drop (once per drop). */
    readonly strikes: number;
    /** Publishes refused without being sent because their device was suspended. */
    readonly refused: number;
    /** Devices remembered now. */
    readonly remembered: number;
  };
}
