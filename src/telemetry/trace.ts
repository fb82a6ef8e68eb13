/**
 * Tracing as core code sees it: only `@opentelemetry/api`, behind one flag. With tracing
 * off (no SDK set up), every helper here returns after one branch, so the datagram path
 * pays nothing else. Child spans are made only under a recording parent: a datagram that
 * was not sampled creates no spans at all.
 *
 * Span layout (one trace per received datagram):
 *   coap-edge.datagram (root, per datagram, made by the gateway)
 *     dtls.handshake | dtls.decrypt
 *       auth.psk_lookup
 *     coap.exchange
 *       mqtt.publish | http.request
 *       mqtt.reply_wait
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  propagation,
  trace,
  type Attributes,
  type Context,
  type Span,
} from '@opentelemetry/api';

export { SpanKind, SpanStatusCode, type Span, type Context, type Attributes };

export const tracer = trace.getTracer('coap-edge');

/**
 * Set by the telemetry setup when an SDK with an exporter is registered: whether tracing is
 * on, the share of datagrams traced, and the device keys always traced.
 */
export const tracing: { on: boolean; ratio: number; forced: ReadonlySet<string> } = {
  on: false,
  ratio: 1,
  forced: new Set(),
};

/**
 * Whether a received datagram gets a trace: always for a listed device, else by ratio. It is
 * decided before any span work, so a datagram that is not traced costs one random number.
 */
export function sampleDatagram(deviceKey: string | undefined): boolean {
  if (deviceKey !== undefined && tracing.forced.has(deviceKey)) return true;
  const r = tracing.ratio;
  return r >= 1 || (r > 0 && Math.random() < r);
}

/** The active span when it records, else undefined. */
export function recordingSpan(): Span | undefined {
  if (!tracing.on) return undefined;
  const span = trace.getSpan(context.active());
  return span?.isRecording() === true ? span : undefined;
}

/**
 * Starts a child of `parent` (default: the active context); undefined when tracing is off or
 * the parent is not sampled. The active context lasts only for the synchronous extent of
 * `withSpan`/`context.with` (see sync-context.ts): code that creates spans after an `await`
 * captures the context first (`activeContext()`) and passes it here.
 */
export function startChild(
  name: string,
  attributes?: Attributes,
  kind?: SpanKind,
  parent?: Context,
): Span | undefined {
  if (!tracing.on) return undefined;
  const ctx = parent ?? context.active();
  if (trace.getSpan(ctx)?.isRecording() !== true) return undefined;
  return tracer.startSpan(name, { attributes, kind: kind ?? SpanKind.INTERNAL }, ctx);
}

/** The active context, to carry across an `await` (ROOT when tracing is off). */
export function activeContext(): Context {
  return tracing.on ? context.active() : ROOT_CONTEXT;
}

/** Runs `fn` with `span` active (or just runs it). */
export function withSpan<T>(span: Span | undefined, fn: () => T): T {
  return span === undefined ? fn() : context.with(trace.setSpan(context.active(), span), fn);
}

/** Ends a span with an error status (no message: never echo internal or peer text). */
export function endWithError(span: Span | undefined, errorType: string): void {
  if (span === undefined) return;
  span.setAttribute('error.type', errorType);
  span.setStatus({ code: SpanStatusCode.ERROR });
  span.end();
}

/** W3C `traceparent` naming `span` as the parent. */
export function traceparentOf(span: Span): string | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(trace.setSpan(context.active(), span), carrier);
  return carrier.traceparent;
}

/** A context continuing the trace of a `traceparent` (and `tracestate`) received from a platform. */
export function contextFrom(traceparent: string, tracestate?: string): Context {
  const carrier: Record<string, string> = { traceparent };
  if (tracestate !== undefined) carrier.tracestate = tracestate;
  return propagation.extract(ROOT_CONTEXT, carrier);
}
