/**
 * The root span of a received datagram, `coap-edge.datagram` (tracing on only), for the
 * datagrams the gateway's {@link Tracing} samples (by ratio, and always for the devices listed
 * in `traceDevices`: the device is known once the peer has an association). Datagrams from
 * unknown peers (ClientHellos, garbage, floods) get spans only within a small budget per
 * second; beyond it they are counted, not traced.
 *
 * What happens to a traced datagram becomes events on its span: DTLS drops and CoAP
 * duplicates, which the protocol layers publish on their diagnostics channels
 * (dtls/events.ts, coap/events.ts). One subscription per channel lives as long as the tracer
 * (while tracing is on); an event counts when it comes from this gateway's server or endpoint
 * while one of its datagrams is traced, which is synchronous (`handleDatagram` runs to its
 * end before the span does). Subscribing per traced datagram instead was measured at ~10 µs
 * a subscribe/unsubscribe pair on Node 20, and flips the channel's prototype each time. So
 * that the datagrams it does not trace build no event (a replay flood drops every record),
 * the tracer turns its server's and endpoint's events off (`DtlsStats.dropEvents`,
 * `CoapStats.duplicateEvents`) and on only while it traces one of their datagrams.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { ROOT_CONTEXT, context } from '@opentelemetry/api';
import type { Principal } from '../bridge/types.js';
import { COAP_DUPLICATE_CHANNEL, type CoapDuplicateEvent } from '../coap/events.js';
import type { CoapStats } from '../coap/stats.js';
import { DTLS_DROP_CHANNEL, type DtlsDropEvent } from '../dtls/events.js';
import type { DtlsServer } from '../dtls/server.js';
import { SpanKind, type Attributes, type Span, type Tracing } from '../telemetry/trace.js';

/** Spans per second for datagrams of peers without an association or handshake. */
const ANONYMOUS_SPANS_PER_SECOND = 20;

/**
 * The last traced datagram's span attributes, kept reachable. Such an object (a literal, and
 * the maps of the two keys a known device adds) is the only one of its maps; at a trace every
 * few seconds none is alive when a mark-compact runs, the maps die, and V8 throws away
 * `handle`'s optimized code, which every datagram runs, and at a few datagrams per second
 * does not compile it again for minutes (bench/history/tracing.md, "Tracing at 1 %, settled"). One
 * kept object holds the maps; as the MQTT path's `{ traceparent }` (bridge/mqtt/exchange.ts).
 */
const kept: { attributes: Attributes | undefined } = { attributes: undefined };

export class DatagramTracer {
  private tokens = ANONYMOUS_SPANS_PER_SECOND;
  private refilledAt = Date.now();
  /** The root span of the datagram being handled, while it is traced. */
  private current: Span | undefined = undefined;
  private subscribed = false;

  private readonly onDrop = (message: unknown): void => {
    const e = message as DtlsDropEvent;
    if (this.current !== undefined && e.source === this.dtls.stats)
      this.current.addEvent('dtls.dropped', { 'dtls.drop_reason': e.reason });
  };

  private readonly onDuplicate = (message: unknown): void => {
    const e = message as CoapDuplicateEvent;
    if (this.current !== undefined && e.source === this.coap)
      this.current.addEvent('coap.duplicate');
  };

  constructor(
    private readonly dtls: DtlsServer<Principal>,
    private readonly coap: CoapStats,
    private readonly localPort: () => number,
    private readonly tracing: Tracing,
  ) {
    if (!tracing.on) return;
    subscribe(DTLS_DROP_CHANNEL, this.onDrop);
    subscribe(COAP_DUPLICATE_CHANNEL, this.onDuplicate);
    this.subscribed = true;
    this.events(false);
  }

  /** Ends the subscriptions (the gateway closes). */
  close(): void {
    if (!this.subscribed) return;
    this.subscribed = false;
    this.events(true);
    unsubscribe(DTLS_DROP_CHANNEL, this.onDrop);
    unsubscribe(COAP_DUPLICATE_CHANNEL, this.onDuplicate);
  }

  /** Whether the server and the endpoint publish their drops and duplicates. */
  private events(on: boolean): void {
    this.dtls.stats.dropEvents = on;
    this.coap.duplicateEvents = on;
  }

  private takeToken(): boolean {
    const now = Date.now();
    if (now - this.refilledAt >= 1000) {
      this.tokens = ANONYMOUS_SPANS_PER_SECOND;
      this.refilledAt = now;
    }
    if (this.tokens <= 0) return false;
    this.tokens--;
    return true;
  }

  handle(msg: Buffer, address: string, port: number): void {
    const dtls = this.dtls;
    const tracing = this.tracing;
    // without forced devices the ratio alone decides: no association lookup for the
    // datagrams that are not traced
    if (
      !this.subscribed ||
      !tracing.on ||
      (tracing.forced.size === 0 && !tracing.sampleDatagram(undefined))
    ) {
      dtls.handleDatagram(msg, address, port);
      return;
    }
    const principal = dtls.principalOf(address, port);
    if (
      (tracing.forced.size > 0 && !tracing.sampleDatagram(principal?.deviceKey)) ||
      (principal === undefined && !dtls.handshaking(address, port) && !this.takeToken())
    ) {
      dtls.handleDatagram(msg, address, port);
      return;
    }
    const attributes: Attributes = {
      'network.transport': 'udp',
      'network.peer.address': address,
      'network.peer.port': port,
      'server.port': this.localPort(),
      'coap_edge.datagram.size': msg.length,
    };
    if (principal !== undefined) {
      attributes['coap_edge.product_key'] = principal.productKey;
      attributes['coap_edge.device_key'] = principal.deviceKey;
    }
    kept.attributes = attributes;
    const span = tracing.tracer.startSpan(
      'coap-edge.datagram',
      { kind: SpanKind.SERVER, attributes },
      ROOT_CONTEXT,
    );
    if (!span.isRecording()) {
      dtls.handleDatagram(msg, address, port);
      return;
    }
    const outer = this.current;
    this.current = span;
    this.events(true);
    try {
      context.with(tracing.rootContext(span), () => dtls.handleDatagram(msg, address, port));
    } finally {
      this.current = outer;
      this.events(outer !== undefined);
      span.end();
    }
  }
}
