/**
 * A span processor that keeps the last few ended spans reachable, so that a mark-compact does
 * not take the traced path's hidden classes with it.
 *
 * V8 (Node 20: 11.3) holds the maps that optimized code and inline caches refer to weakly. A
 * span, its attributes objects and its events are the only objects with their maps; at 1 %
 * sampling and a few datagrams per second no span is alive most of the time, so a full GC
 * frees those maps and clears every feedback slot that named them, also in the functions the
 * untraced datagrams run (`isTraced`, `recordingSpan`, the MQTT request/reply, the request
 * handler's answer). The next sampled datagram then meets optimized code without feedback for
 * its branch: V8 deoptimizes those functions and TurboFan compiles them again, once per
 * mark-compact, which at one trace every few seconds cost several times the trace's own work
 * (bench/history/tracing.md, "i11-trace1pct"). Kept alive, the maps (and the feedback) survive.
 *
 * What it holds: {@link KEPT_SPANS} spans, already ended and exported or queued for export (the
 * batch processor holds those anyway); their attributes are what the trace carries (no
 * secrets: see docs/observability.md, "Span attributes"). Its `onEnd` is one array store.
 */
import type { Context } from '@opentelemetry/api';
import type { ReadableSpan, Span, SpanProcessor } from '@opentelemetry/sdk-trace-base';

/** Spans kept: a datagram's trace has up to six (root, DTLS, key lookup, CoAP, backend, reply). */
export const KEPT_SPANS = 16;

export class SpanKeeper implements SpanProcessor {
  private readonly kept: (ReadableSpan | undefined)[] = new Array<ReadableSpan | undefined>(
    KEPT_SPANS,
  ).fill(undefined);
  private next = 0;

  onStart(_span: Span, _parentContext: Context): void {
    // nothing to do before the span ends
  }

  onEnd(span: ReadableSpan): void {
    this.kept[this.next] = span;
    this.next = this.next + 1 === KEPT_SPANS ? 0 : this.next + 1;
  }

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    this.kept.fill(undefined);
    return Promise.resolve();
  }
}
