/**
 * The OpenTelemetry trace SDK, set up only when an OTLP endpoint is configured; the
 * {@link Tracing} it returns is handed to the gateway. Tracing off costs the datagram path one
 * branch (see trace.ts). The standard OTEL_* variables are
 * read in otel-env.ts (sampler, protocol, endpoint, headers, batching, SDK disabled);
 * OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the resource.
 */
import { channel } from 'node:diagnostics_channel';
import { hostname } from 'node:os';
import { isSpanContextValid, trace, TraceFlags, type Context } from '@opentelemetry/api';
import { OTLPTraceExporter as OtlpHttpJsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OtlpGrpcExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchSpanProcessor,
  SamplingDecision,
  TraceIdRatioBasedSampler,
  type Sampler,
  type SamplingResult,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import {
  batchConfig,
  otlpHeaders,
  otlpProtocol,
  samplingPolicy,
  sdkDisabled,
  tracesEndpoint,
  type BatchConfig,
  type OtlpProtocol,
  type SamplingPolicy,
} from './otel-env.js';
import { OtlpProtoTraceExporter } from './otlp-proto.js';
import { SpanKeeper } from './span-keeper.js';
import { SyncContextManager } from './sync-context.js';
import { TRACING_SETUP_CHANNEL, Tracing, type TracingSetupEvent } from './trace.js';

export { tracesEndpoint };

/** Share of datagrams traced when neither `traceSampleRatio` nor OTEL_TRACES_SAMPLER says. */
const DEFAULT_TRACE_SAMPLE_RATIO = 0.01;

export interface TracingOptions {
  /** OTLP traces URL; falls back to the OTEL_EXPORTER_OTLP_* variables. */
  readonly endpoint: string | undefined;
  /** `traceSampleRatio` when the operator set it; it wins over OTEL_TRACES_SAMPLER(_ARG). */
  readonly sampleRatio: number | undefined;
  readonly forcedDevices: readonly string[];
  readonly serviceName: string;
  readonly serviceVersion: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Test hook: export somewhere else than OTLP. */
  readonly exporter?: SpanExporter;
}

export interface TracingHandle {
  /** What the gateway is given (`Gateway.start`) to trace with. */
  readonly tracing: Tracing;
  readonly endpoint: string | undefined;
  readonly protocol: OtlpProtocol;
  readonly policy: SamplingPolicy;
  /** The batch span processor's settings (OTEL_BSP_* or the defaults). */
  readonly batch: BatchConfig;
  /** Unsupported OTEL_* values that were ignored (to log at start). */
  readonly warnings: readonly string[];
  /** Flushes spans and stops the exporter. */
  shutdown(): Promise<void>;
}

/**
 * Datagram root spans are only started for datagrams `sampleDatagram` chose, so a span
 * without a parent is sampled; a span under a local parent follows it (its trace is already
 * decided). A remote parent (a platform's `traceparent`) is treated as the policy says.
 */
export class GatewaySampler implements Sampler {
  private readonly byRatio: TraceIdRatioBasedSampler;

  constructor(private readonly policy: SamplingPolicy) {
    this.byRatio = new TraceIdRatioBasedSampler(policy.ratio);
  }

  shouldSample(ctx: Context, traceId: string): SamplingResult {
    const parent = trace.getSpanContext(ctx);
    if (parent === undefined || !isSpanContextValid(parent)) {
      return { decision: SamplingDecision.RECORD_AND_SAMPLED };
    }
    const parentSampled = (parent.traceFlags & TraceFlags.SAMPLED) !== 0;
    const rule = parent.isRemote === true ? this.policy.remoteParent : 'follow';
    const sampled =
      rule === 'always' ||
      (rule === 'follow' && parentSampled) ||
      (rule === 'ratio' &&
        this.byRatio.shouldSample(ctx, traceId).decision === SamplingDecision.RECORD_AND_SAMPLED);
    return {
      decision: sampled ? SamplingDecision.RECORD_AND_SAMPLED : SamplingDecision.NOT_RECORD,
    };
  }

  toString(): string {
    return `GatewaySampler{${this.policy.sampler}, ratio=${this.policy.ratio}}`;
  }
}

export function otlpExporter(
  protocol: OtlpProtocol,
  url: string | undefined,
  headers: Record<string, string>,
): SpanExporter {
  switch (protocol) {
    case 'grpc':
      // the gRPC exporter reads OTEL_EXPORTER_OTLP_(TRACES_)HEADERS into its metadata itself
      return new OtlpGrpcExporter({ url });
    case 'http/json':
      return new OtlpHttpJsonExporter({ url, headers });
    case 'http/protobuf':
      // the SDK's exporter with our own serializer (otlp-proto.ts)
      return new OtlpProtoTraceExporter({ url, headers });
  }
}

/** Sets up tracing when an endpoint (or a test exporter) is given; undefined otherwise. */
export function setupTracing(o: TracingOptions): TracingHandle | undefined {
  if (sdkDisabled(o.env)) return undefined;
  const warnings: string[] = [];
  const protocol = otlpProtocol(o.env, warnings);
  const endpoint = tracesEndpoint(o.endpoint, o.env, protocol);
  if (endpoint === undefined && o.exporter === undefined) return undefined;
  const policy = samplingPolicy(o.sampleRatio, DEFAULT_TRACE_SAMPLE_RATIO, o.env, warnings);
  const headers = otlpHeaders(o.env, warnings);
  const batch = batchConfig(o.env, warnings);
  // OTEL_RESOURCE_ATTRIBUTES (and OTEL_SERVICE_NAME) override what is set here
  const detected = detectResources({ detectors: [envDetector] });
  const pod = o.env.POD_NAME ?? o.env.HOSTNAME ?? hostname();
  const base = resourceFromAttributes({
    'service.name': o.env.OTEL_SERVICE_NAME ?? o.serviceName,
    'service.version': o.serviceVersion,
    'service.instance.id': pod,
    ...(o.env.POD_NAME !== undefined ? { 'k8s.pod.name': o.env.POD_NAME } : {}),
    ...(o.env.POD_NAMESPACE !== undefined ? { 'k8s.namespace.name': o.env.POD_NAMESPACE } : {}),
    ...(o.env.NODE_NAME !== undefined ? { 'k8s.node.name': o.env.NODE_NAME } : {}),
  });
  const exporter = o.exporter ?? otlpExporter(protocol, endpoint, headers);
  const provider = new NodeTracerProvider({
    resource: base.merge(detected),
    sampler: new GatewaySampler(policy),
    // every field given, so the SDK reads no OTEL_BSP_* of process.env behind the env record
    // the keeper holds the last spans so a full GC keeps the traced path's maps (span-keeper.ts)
    spanProcessors: [new BatchSpanProcessor(exporter, { ...batch }), new SpanKeeper()],
  });
  // The context manager and the W3C propagator are process-wide (the first setup's stay, and
  // are alike); the tracer is this provider's own, so spans go to this setup's exporter.
  provider.register({ contextManager: new SyncContextManager() });
  const tracing = new Tracing(
    provider.getTracer('coap-edge'),
    true,
    policy.ratio,
    new Set(o.forcedDevices),
  );
  const setupChannel = channel(TRACING_SETUP_CHANNEL);
  if (setupChannel.hasSubscribers) {
    const event: TracingSetupEvent = { tracing, forceFlush: () => provider.forceFlush() };
    setupChannel.publish(event);
  }
  return {
    tracing,
    endpoint,
    protocol,
    policy,
    batch,
    warnings,
    async shutdown() {
      tracing.on = false;
      await provider.shutdown().catch(() => undefined);
    },
  };
}
