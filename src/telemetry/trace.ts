/**
 * Tracing as core code sees it: only `@opentelemetry/api`, and a {@link Tracing} object that
 * the telemetry setup creates and the composition root hands to the components that trace
 * (no process-global flag: two gateways in one process may trace differently). With tracing
 * off ({@link NO_TRACING}) a component pays one branch on its own field. Child spans are made
 * only under a recording parent: a datagram that was not sampled creates no spans at all.
 *
 * The context of a traced datagram names its `Tracing` (see {@link Tracing.rootContext}), so
 * code below it (bridge backends, key lookups) starts children with the right tracer by
 * looking at the parent context alone, without a `Tracing` of its own.
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
  createContextKey,
  propagation,
  trace,
  type Attributes,
  type Context,
  type Span,
  type Tracer,
} from '@opentelemetry/api';

export { SpanKind, SpanStatusCode, type Span, type Context, type Attributes };

/**
 * The diagnostics channel on which `setupTracing` publishes, once, a {@link TracingSetupEvent}
 * for the set-up it made (nobody subscribes in production: a publish without subscribers does
 * nothing). The bench's tracing switch (bench/lib/tracing-switch.ts) subscribes to it.
 */
export const TRACING_SETUP_CHANNEL = 'coap-edge:tracing-setup';

/** What {@link TRACING_SETUP_CHANNEL} carries. */
export interface TracingSetupEvent {
  readonly tracing: Tracing;
  /** Exports the spans waiting in the batch processor now (the bench's segment ends). */
  readonly forceFlush: () => Promise<void>;
}

/** The context value naming the {@link Tracing} a traced datagram's spans belong to. */
const TRACING_KEY = createContextKey('coap-edge tracing');

/**
 * Whether and how a gateway traces: its tracer (of its own tracer provider), whether tracing
 * is on, the share of datagrams traced and the device keys always traced. Made by
 * `setupTracing` (telemetry/setup.ts); {@link NO_TRACING} everywhere else.
 */
export class Tracing {
  /** The root of every datagram trace of this Tracing (names it, for {@link startChild}). */
  private readonly root: Context;

  constructor(
    readonly tracer: Tracer,
    /** Turned off once, at shutdown; components read it before any span work. */
    public on: boolean,
    /**
     * Share of datagrams traced. Fixed by the configuration; only the bench's tracing switch
     * (bench/lib/tracing-switch.ts, through {@link TRACING_SETUP_CHANNEL}) changes it (and
     * `on`) at run time, to measure tracing off and on within one process.
     */
    public ratio: number,
    readonly forced: ReadonlySet<string>,
  ) {
    this.root = ROOT_CONTEXT.setValue(TRACING_KEY, this);
  }

  /**
   * Whether a received datagram gets a trace: always for a listed device, else by ratio. It
   * is decided before any span work, so a datagram that is not traced costs one random number.
   */
  sampleDatagram(deviceKey: string | undefined): boolean {
    if (deviceKey !== undefined && this.forced.has(deviceKey)) return true;
    const r = this.ratio;
    return r >= 1 || (r > 0 && Math.random() < r);
  }

  /** The context a datagram's root span is active in: the span, and this Tracing. */
  rootContext(span: Span): Context {
    return trace.setSpan(this.root, span);
  }
}

/** No tracing: the default of every component that takes a `Tracing`. */
export const NO_TRACING = new Tracing(trace.getTracer('coap-edge'), false, 0, new Set());

/** The Tracing of a traced datagram's context, while it is on; else undefined. */
export function tracingOf(ctx: Context): Tracing | undefined {
  const t = ctx.getValue(TRACING_KEY);
  return t instanceof Tracing && t.on ? t : undefined;
}

/** The active span when it records (in a traced datagram's context), else undefined. */
export function recordingSpan(): Span | undefined {
  const ctx = context.active();
  if (ctx === ROOT_CONTEXT) return undefined;
  const span = trace.getSpan(ctx);
  return span?.isRecording() === true ? span : undefined;
}

/**
 * Whether `ctx` (default: the active context) is that of a recording span of a traced
 * datagram: children started under it will record. Asked before building a child's
 * attributes, so an untraced request builds none.
 */
export function isTraced(ctx: Context = context.active()): boolean {
  return (
    ctx !== ROOT_CONTEXT &&
    tracingOf(ctx) !== undefined &&
    trace.getSpan(ctx)?.isRecording() === true
  );
}

/**
 * Starts a child of `parent` (default: the active context) with the tracer of the datagram's
 * {@link Tracing}; undefined when the parent is not a recording span of a traced datagram.
 * The active context lasts only for the synchronous extent of `withSpan`/`context.with` (see
 * sync-context.ts): code that creates spans after an `await` captures the context first
 * (`activeContext()`) and passes it here.
 */
export function startChild(
  name: string,
  attributes?: Attributes,
  kind?: SpanKind,
  parent?: Context,
): Span | undefined {
  const ctx = parent ?? context.active();
  if (ctx === ROOT_CONTEXT) return undefined;
  const t = tracingOf(ctx);
  if (t === undefined || trace.getSpan(ctx)?.isRecording() !== true) return undefined;
  return t.tracer.startSpan(name, { attributes, kind: kind ?? SpanKind.INTERNAL }, ctx);
}

/** The active context, to carry across an `await` (ROOT outside a traced datagram). */
export function activeContext(): Context {
  return context.active();
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

/**
 * W3C `traceparent` naming `span` as the parent. The carrier is made with its `traceparent`
 * field from the start: an empty object that the propagator adds the field to would get a map
 * of its own, which no object keeps between two rare traces, and the publish path compiled
 * against it would be deoptimized by the mark-compact that frees it. This literal's map is
 * the one of the `{ traceparent }` user properties an MQTT publish carries, which
 * bridge/mqtt/exchange.ts keeps alive.
 */
export function traceparentOf(span: Span): string | undefined {
  const carrier: { traceparent?: string } = { traceparent: undefined };
  propagation.inject(trace.setSpan(context.active(), span), carrier);
  return carrier.traceparent;
}

/** A context continuing the trace of a `traceparent` (and `tracestate`) received from a platform. */
export function contextFrom(traceparent: string, tracestate?: string): Context {
  const carrier: Record<string, string> = { traceparent };
  if (tracestate !== undefined) carrier.tracestate = tracestate;
  return propagation.extract(ROOT_CONTEXT, carrier);
}
