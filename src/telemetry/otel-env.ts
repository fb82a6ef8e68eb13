/**
 * The OpenTelemetry SDK environment variables that coap-edge honours, read as the
 * specification lists them ("General SDK Configuration" and "OTLP Exporter"):
 *
 * - `OTEL_SDK_DISABLED=true`: no tracing, whatever else is set.
 * - `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`: always_on, always_off, traceidratio,
 *   parentbased_always_on, parentbased_always_off, parentbased_traceidratio.
 * - `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`: http/protobuf (the specification's default),
 *   http/json, grpc.
 * - `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`: the signal-specific one is used as is; the
 *   general one gets `/v1/traces` appended for the HTTP protocols (not for gRPC).
 * - `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`: `key=value` pairs, comma-separated, values
 *   URL-encoded.
 * - `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_EXPORT_TIMEOUT`, `OTEL_BSP_MAX_QUEUE_SIZE`,
 *   `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: the batch span processor ("Batching processor").
 *
 * coap-edge's own settings (`traceSampleRatio`, `otlpEndpoint`) win where they are given.
 * Pure functions over an environment record, so each rule is tested without an SDK.
 */

export type OtlpProtocol = 'http/protobuf' | 'http/json' | 'grpc';

/**
 * What decides a span's sampling. Datagram root spans are chosen by `ratio` before any span
 * work (telemetry/trace.ts); `remoteParent` says what happens to a span that continues a
 * platform's trace (a `traceparent` on a reply or command): follow the parent's flag, decide
 * by trace id ratio, or always / never sample.
 */
export interface SamplingPolicy {
  readonly ratio: number;
  readonly remoteParent: 'follow' | 'ratio' | 'always' | 'never';
  /** The sampler name in effect, for the start-up log line. */
  readonly sampler: string;
}

export type Env = Readonly<Record<string, string | undefined>>;

/** Problems with the variables (unknown values): logged at start, then the defaults apply. */
export type EnvWarnings = string[];

function value(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? undefined : v;
}

/** `OTEL_SDK_DISABLED`: only the (case-insensitive) value `true` disables. */
export function sdkDisabled(env: Env): boolean {
  return value(env, 'OTEL_SDK_DISABLED')?.toLowerCase() === 'true';
}

const SAMPLERS = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
] as const;
type SamplerName = (typeof SAMPLERS)[number];

function isSampler(s: string): s is SamplerName {
  return (SAMPLERS as readonly string[]).includes(s);
}

/**
 * The sampling policy: `setting` is coap-edge's `traceSampleRatio` when the operator gave it
 * (flag, YAML or COAP_EDGE_ variable), `fallback` its default ratio otherwise.
 */
export function samplingPolicy(
  setting: number | undefined,
  fallback: number,
  env: Env,
  warnings: EnvWarnings = [],
): SamplingPolicy {
  const raw = value(env, 'OTEL_TRACES_SAMPLER')?.toLowerCase();
  let name: SamplerName | undefined;
  if (raw !== undefined) {
    if (isSampler(raw)) name = raw;
    else warnings.push(`OTEL_TRACES_SAMPLER=${raw} is not supported; using the default sampler`);
  }
  const argText = value(env, 'OTEL_TRACES_SAMPLER_ARG');
  let arg: number | undefined;
  if (argText !== undefined) {
    const n = Number(argText);
    if (Number.isFinite(n) && n >= 0 && n <= 1) arg = n;
    else warnings.push(`OTEL_TRACES_SAMPLER_ARG=${argText} is not a ratio in [0, 1]; ignored`);
  }
  if (name === undefined) {
    // coap-edge's default: parent-based, datagrams by ratio (an ARG alone still sets it)
    return {
      ratio: setting ?? arg ?? fallback,
      remoteParent: 'follow',
      sampler: 'parentbased_traceidratio',
    };
  }
  const ratioOf = (): number => setting ?? arg ?? 1;
  switch (name) {
    case 'always_on':
      return { ratio: setting ?? 1, remoteParent: 'always', sampler: name };
    case 'always_off':
      return { ratio: setting ?? 0, remoteParent: 'never', sampler: name };
    case 'traceidratio':
      return { ratio: ratioOf(), remoteParent: 'ratio', sampler: name };
    case 'parentbased_always_on':
      return { ratio: setting ?? 1, remoteParent: 'follow', sampler: name };
    case 'parentbased_always_off':
      return { ratio: setting ?? 0, remoteParent: 'follow', sampler: name };
    case 'parentbased_traceidratio':
      return { ratio: ratioOf(), remoteParent: 'follow', sampler: name };
  }
}

/** `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else http/protobuf. */
export function otlpProtocol(env: Env, warnings: EnvWarnings = []): OtlpProtocol {
  for (const name of ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL']) {
    const v = value(env, name)?.toLowerCase();
    if (v === undefined) continue;
    if (v === 'http/protobuf' || v === 'http/json' || v === 'grpc') return v;
    warnings.push(
      `${name}=${v} is not supported (http/protobuf, http/json, grpc); using http/protobuf`,
    );
    return 'http/protobuf';
  }
  return 'http/protobuf';
}

/** The traces endpoint from the setting or the standard environment variables. */
export function tracesEndpoint(
  setting: string | undefined,
  env: Env,
  protocol: OtlpProtocol = 'http/protobuf',
): string | undefined {
  if (setting !== undefined) return setting;
  const traces = value(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  if (traces !== undefined) return traces;
  const base = value(env, 'OTEL_EXPORTER_OTLP_ENDPOINT');
  if (base === undefined) return undefined;
  return protocol === 'grpc' ? base : `${base.replace(/\/+$/, '')}/v1/traces`;
}

/**
 * Whether tracing is asked for: an endpoint from the setting or the variables, and the SDK not
 * disabled. The same test `setupTracing` makes before it builds anything, so the CLI loads the
 * trace SDK and its exporters (setup.ts) only when this holds.
 */
export function tracingRequested(setting: string | undefined, env: Env): boolean {
  return !sdkDisabled(env) && tracesEndpoint(setting, env, otlpProtocol(env)) !== undefined;
}

/** How the batch span processor queues and exports spans (the SDK's `BufferConfig`). */
export interface BatchConfig {
  /** Longest a finished span waits before its batch is exported (ms). */
  readonly scheduledDelayMillis: number;
  /** How long one export may take before it is given up (ms). */
  readonly exportTimeoutMillis: number;
  /** Spans held at most; beyond that new spans are dropped (never datagrams). */
  readonly maxQueueSize: number;
  /** Spans per export at most; a full batch is exported at once, without waiting. */
  readonly maxExportBatchSize: number;
}

/**
 * The batch span processor's settings when no OTEL_BSP_* variable is set: the specification's
 * defaults (5 s delay, 30 s timeout, batches of 512), but a queue of 8192 instead of 2048, so a
 * burst at 100 % sampling does not lose spans while an export is in flight. A longer delay puts
 * more traces in one export, and an export (an HTTP request) costs several traces' worth of CPU
 * (bench/history/tracing.md, "The export delay and the publish shape").
 */
export const DEFAULT_BATCH: BatchConfig = {
  scheduledDelayMillis: 5000,
  exportTimeoutMillis: 30_000,
  maxQueueSize: 8192,
  maxExportBatchSize: 512,
};

/**
 * The batch span processor's settings from `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_EXPORT_TIMEOUT`
 * (ms, integers >= 0), `OTEL_BSP_MAX_QUEUE_SIZE` and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
 * (integers >= 1), each defaulting to {@link DEFAULT_BATCH}. A value that is not such an
 * integer is ignored with a warning; a batch size above the queue size is cut to it (as the
 * SDK does). Read here rather than by the SDK, which reads `process.env` only when no option
 * is passed: the setup's environment record decides, as for every other variable.
 */
export function batchConfig(env: Env, warnings: EnvWarnings = []): BatchConfig {
  const int = (name: string, min: number, fallback: number): number => {
    const v = value(env, name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (Number.isInteger(n) && n >= min) return n;
    warnings.push(`${name}=${v} is not an integer >= ${min}; using ${fallback}`);
    return fallback;
  };
  const d = DEFAULT_BATCH;
  const maxQueueSize = int('OTEL_BSP_MAX_QUEUE_SIZE', 1, d.maxQueueSize);
  let maxExportBatchSize = int('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 1, d.maxExportBatchSize);
  if (maxExportBatchSize > maxQueueSize) {
    warnings.push(
      `OTEL_BSP_MAX_EXPORT_BATCH_SIZE=${maxExportBatchSize} is above the queue size ` +
        `${maxQueueSize}; using ${maxQueueSize}`,
    );
    maxExportBatchSize = maxQueueSize;
  }
  return {
    scheduledDelayMillis: int('OTEL_BSP_SCHEDULE_DELAY', 0, d.scheduledDelayMillis),
    exportTimeoutMillis: int('OTEL_BSP_EXPORT_TIMEOUT', 0, d.exportTimeoutMillis),
    maxQueueSize,
    maxExportBatchSize,
  };
}

/**
 * `OTEL_EXPORTER_OTLP_HEADERS` merged with (and overridden by) `OTEL_EXPORTER_OTLP_TRACES_HEADERS`.
 * A malformed pair is skipped with a warning that names its position, never its value (headers
 * carry credentials).
 */
export function otlpHeaders(env: Env, warnings: EnvWarnings = []): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of ['OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS']) {
    const v = value(env, name);
    if (v === undefined) continue;
    v.split(',').forEach((pair, i) => {
      const eq = pair.indexOf('=');
      const key = eq > 0 ? pair.slice(0, eq).trim() : '';
      let val: string | undefined;
      try {
        val = eq > 0 ? decodeURIComponent(pair.slice(eq + 1).trim()) : undefined;
      } catch {
        val = undefined;
      }
      if (key === '' || val === undefined) {
        if (pair.trim() !== '') warnings.push(`${name}: entry ${i + 1} is not key=value; skipped`);
        return;
      }
      out[key.toLowerCase()] = val;
    });
  }
  return out;
}
