/**
 * The OpenTelemetry trace SDK, set up only when an OTLP endpoint is configured: tracing
 * off costs the datagram path one branch (see trace.ts). Honours the standard OTEL_*
 * variables: OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
 * OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER_ARG (ratio).
 */
import { hostname } from 'node:os';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { SyncContextManager } from './sync-context.js';
import { tracing } from './trace.js';

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
    // Datagram spans are only started for datagrams the gateway chose to trace
    // (sampleDatagram: ratio, forced devices); spans with a platform parent follow its flag.
    sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
    spanProcessors: [
      new BatchSpanProcessor(exporter, {
        maxQueueSize: 8192,
        maxExportBatchSize: 512,
        scheduledDelayMillis: 1000,
      }),
    ],
  });
  provider.register({ contextManager: new SyncContextManager() });
  tracing.ratio = ratio;
  tracing.forced = new Set(o.forcedDevices);
  tracing.on = true;
  return {
    endpoint,
    async shutdown() {
      tracing.on = false;
      await provider.shutdown().catch(() => undefined);
    },
  };
}
