/**
 * Plain-number counters of the HTTP backend, read by readiness and metrics (telemetry/ turns
 * them into instruments; nothing here depends on it).
 */
import { LatencyHistogram, type LatencySnapshot } from '../mqtt/stats.js';
import { HTTP_OUTCOMES, type HttpOutcome } from './status.js';

/** Upper bounds (ms) of the call latency buckets; the last, implicit bucket is +Inf. */
const HTTP_LATENCY_BOUNDS_MS: readonly number[] = [
  1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
];

export type OutcomeCounts = { readonly [O in HttpOutcome]: number };

export interface HttpBackendStats {
  /** Calls in flight now (the gauge the concurrency cap applies to). */
  readonly inflight: number;
  /** Connection pools (one per origin) open now. */
  readonly pools: number;
  /** Calls by outcome, all routes. */
  readonly calls: OutcomeCounts;
  /** Calls by outcome per route label (`name`, else `routes[<index>]`). */
  readonly byRoute: { readonly [label: string]: OutcomeCounts };
  /** Latency of calls that were sent (not `overloaded`), start to answer. */
  readonly latency: LatencySnapshot;
  /** `traceparent`/`tracestate` values not forwarded because they were malformed. */
  readonly traceContextDropped: number;
}

function zero(): Record<HttpOutcome, number> {
  const c = {} as Record<HttpOutcome, number>;
  for (const o of HTTP_OUTCOMES) c[o] = 0;
  return c;
}

/** Mutable counters behind {@link HttpBackendStats}. */
export class HttpStatsRecorder {
  inflight = 0;
  traceContextDropped = 0;
  private readonly total = zero();
  private readonly perRoute = new Map<string, Record<HttpOutcome, number>>();
  private readonly latency = new LatencyHistogram(HTTP_LATENCY_BOUNDS_MS);

  count(label: string, outcome: HttpOutcome): void {
    this.total[outcome]++;
    let r = this.perRoute.get(label);
    if (r === undefined) {
      r = zero();
      this.perRoute.set(label, r);
    }
    r[outcome]++;
  }

  observe(ms: number): void {
    this.latency.observe(ms);
  }

  snapshot(pools: number): HttpBackendStats {
    const byRoute: Record<string, OutcomeCounts> = {};
    for (const [label, c] of this.perRoute) byRoute[label] = { ...c };
    return {
      inflight: this.inflight,
      pools,
      calls: { ...this.total },
      byRoute,
      latency: this.latency.snapshot(),
      traceContextDropped: this.traceContextDropped,
    };
  }
}
