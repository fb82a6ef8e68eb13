/**
 * The OpenTelemetry trace SDK, set up only when an OTLP endpoint is configured: tracing
 * off costs the datagram path one branch (see trace.ts). Honours the standard OTEL_*
 * variables: OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
 * OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER_ARG (ratio).
 */
import { hostname } from 'node:os';
import type { Attributes, Context, Link, SpanKind } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  SamplingDecision,
  TraceIdRatioBasedSampler,
  type Sampler,
  type SamplingResult,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { DEVICE_KEY } from './attributes.js';
import { tracing } from './trace.js';

/**
 * Samples datagrams of listed devices always and the rest by ratio. It sees the device key
 * among the start attributes of the datagram span (known once an association exists).
 */
export class DeviceSampler implements Sampler {
  private readonly ratio: TraceIdRatioBasedSampler;

  constructor(
    ratio: number,
    private readonly forced: ReadonlySet<string>,
  ) {
    this.ratio = new TraceIdRatioBasedSampler(ratio);
  }

  shouldSample(
    ctx: Context,
    traceId: string,
    _name: string,
    _kind: SpanKind,
    attributes: Attributes,
    _links: Link[],
  ): SamplingResult {
    const dk = attributes[DEVICE_KEY];
    if (typeof dk === 'string' && this.forced.has(dk)) {
      return { decision: SamplingDecision.RECORD_AND_SAMPLED };
    }
    return this.ratio.shouldSample(ctx, traceId);
  }

  toString(): string {
    return `DeviceSampler{forced=${this.forced.size}, ${this.ratio.toString()}}`;
  }
}

export interface TracingOptions {
  /** OTLP/HTTP traces URL; falls back to the OTEL_EXPORTER_OTLP_* variables. */
  readonly endpoint: string | undefined;
  readonly sampleRatio: number;
  readonly forcedDevices: readonly string[];
  readonly serviceName: string;
  readonly serviceVersion: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Test hook: export somewhere else than OTLP. */
  readonly exporter?: SpanExporter;
}

export interface TracingHandle {
  readonly endpoint: string | undefined;
  /** Flushes spans and stops the exporter. */
  shutdown(): Promise<void>;
}

/** The traces endpoint from the setting or the standard environment variables. */
export function tracesEndpoint(
  setting: string | undefined,
  env: TracingOptions['env'],
): string | undefined {
  if (setting !== undefined) return setting;
  const traces = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  if (traces !== undefined && traces !== '') return traces;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (base !== undefined && base !== '') return `${base.replace(/\/+$/, '')}/v1/traces`;
  return undefined;
}

/** Sets up tracing when an endpoint (or a test exporter) is given; undefined otherwise. */
export function setupTracing(o: TracingOptions): TracingHandle | undefined {
  const endpoint = tracesEndpoint(o.endpoint, o.env);
  if (endpoint === undefined && o.exporter === undefined) return undefined;
  const fromEnv = Number(o.env.OTEL_TRACES_SAMPLER_ARG);
  const ratio =
    o.env.OTEL_TRACES_SAMPLER_ARG !== undefined && Number.isFinite(fromEnv)
      ? fromEnv
      : o.sampleRatio;
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
  const exporter = o.exporter ?? new OTLPTraceExporter({ url: endpoint });
  const provider = new NodeTracerProvider({
    resource: base.merge(detected),
    sampler: new ParentBasedSampler({ root: new DeviceSampler(ratio, new Set(o.forcedDevices)) }),
    spanProcessors: [
      new BatchSpanProcessor(exporter, {
        maxQueueSize: 8192,
        maxExportBatchSize: 512,
        scheduledDelayMillis: 1000,
      }),
    ],
  });
  provider.register();
  tracing.on = true;
  return {
    endpoint,
    async shutdown() {
      tracing.on = false;
      await provider.shutdown().catch(() => undefined);
    },
  };
}
