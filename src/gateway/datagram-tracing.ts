/**
 * The root span of a received datagram, `coap-edge.datagram` (tracing on only), for the
 * datagrams `sampleDatagram` picks (by ratio, and always for the devices listed in
 * `traceDevices`: the device is known once the peer has an association). Datagrams from unknown peers (ClientHellos, garbage, floods) get spans
 * only within a small budget per second; beyond it they are counted, not traced. Drops and
 * CoAP duplicates become span events.
 */
import { ROOT_CONTEXT, context, trace } from '@opentelemetry/api';
import type { Principal } from '../bridge/types.js';
import type { CoapStats } from '../coap/stats.js';
import type { DtlsServer } from '../dtls/server.js';
import { DROP_REASONS } from '../dtls/types.js';
import { SpanKind, sampleDatagram, tracer, type Attributes } from '../telemetry/trace.js';

/** Spans per second for datagrams of peers without an association or handshake. */
const ANONYMOUS_SPANS_PER_SECOND = 20;

export class DatagramTracer {
  private tokens = ANONYMOUS_SPANS_PER_SECOND;
  private refilledAt = Date.now();
  private readonly drops = new Array<number>(DROP_REASONS.length).fill(0);

  constructor(
    private readonly dtls: DtlsServer<Principal>,
    private readonly coap: CoapStats,
    private readonly localPort: () => number,
  ) {}

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
    const principal = dtls.principalOf(address, port);
    if (
      !sampleDatagram(principal?.deviceKey) ||
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
    const span = tracer.startSpan(
      'coap-edge.datagram',
      { kind: SpanKind.SERVER, attributes },
      ROOT_CONTEXT,
    );
    if (!span.isRecording()) {
      dtls.handleDatagram(msg, address, port);
      return;
    }
    const stats = dtls.stats;
    DROP_REASONS.forEach((r, i) => (this.drops[i] = stats.drops[r]));
    const duplicates = this.coap.duplicates;
    context.with(trace.setSpan(ROOT_CONTEXT, span), () => dtls.handleDatagram(msg, address, port));
    DROP_REASONS.forEach((r, i) => {
      if (stats.drops[r] !== this.drops[i])
        span.addEvent('dtls.dropped', { 'dtls.drop_reason': r });
    });
    if (this.coap.duplicates !== duplicates) span.addEvent('coap.duplicate');
    span.end();
  }
}
