/**
 * coap-edge's own OTLP protobuf serializer (src/telemetry/otlp-proto.ts): the bytes are those
 * of the SDK's (`ProtobufTraceSerializer` of @opentelemetry/otlp-transformer, what
 * exporter-trace-otlp-proto sends), on spans with every kind of value, event, link, status,
 * parent, resource and scope; and the default exporter (http/protobuf) sends them without
 * running the SDK's serializer, to a receiver that decodes them.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { SpanKind, SpanStatusCode, TraceFlags, context, trace } from '@opentelemetry/api';
import { TraceState } from '@opentelemetry/core';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import { OtlpTraceEncoder } from '../../src/telemetry/otlp-proto.js';
import { otlpExporter } from '../../src/telemetry/setup.js';
import { OtlpReceiver, fromReadableSpan } from '../helpers/otlp.js';

/** Finished spans of `make`, made under a provider of `resource` (never registered). */
function spansOf(
  resource: Record<string, string | number>,
  make: (provider: BasicTracerProvider) => void,
): ReadableSpan[] {
  const mem = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes(resource),
    spanProcessors: [new SimpleSpanProcessor(mem)],
  });
  make(provider);
  return mem.getFinishedSpans();
}

/** Spans with every field the SDK's serializer writes, in every form. */
function everyKindOfSpan(): ReadableSpan[] {
  const remote = trace.setSpanContext(context.active(), {
    traceId: '0af7651916cd43dd8448eb211c80319c',
    spanId: 'b7ad6b7169203331',
    traceFlags: TraceFlags.SAMPLED,
    isRemote: true,
    traceState: new TraceState('vendor=a,other=b'),
  });
  const a = spansOf({ 'service.name': 'coap-edge', 'service.instance.id': 'pod-1', n: 7 }, (p) => {
    const t = p.getTracer('coap-edge');
    const root = t.startSpan('coap-edge.datagram', {
      kind: SpanKind.SERVER,
      attributes: {
        'network.peer.address': '127.0.0.1',
        'network.peer.port': 40000,
        zero: 0,
        negative: -5,
        minInt32: -2147483648,
        big: 2 ** 40 + 3,
        bigNegative: -(2 ** 45) - 1,
        maxSafe: Number.MAX_SAFE_INTEGER,
        double: 1.5,
        negativeDouble: -0.25,
        yes: true,
        no: false,
        empty: '',
        unicode: 'Grüße, 温度 ✓ 🙂',
        strings: ['a', 'bc'],
        numbers: [1, 2.5, -3],
        bools: [true, false],
        withGaps: ['x', null, undefined, 'y'],
        emptyArray: [],
        long: 'x'.repeat(200),
        veryLong: 'y'.repeat(20000),
      },
    });
    root.addEvent('dtls.dropped', { 'dtls.drop_reason': 'bad_mac' });
    root.addEvent('coap.duplicate');
    const ctx = trace.setSpan(context.active(), root);
    const remoteSpan = trace.getSpanContext(remote);
    assert.ok(remoteSpan !== undefined);
    const child = t.startSpan(
      'mqtt.publish',
      {
        kind: SpanKind.PRODUCER,
        links: [{ context: remoteSpan, attributes: { 'link.kind': 'reply' } }],
      },
      ctx,
    );
    child.addLink({ context: root.spanContext() });
    child.setStatus({ code: SpanStatusCode.ERROR, message: 'timeout' });
    child.end();
    const ok = t.startSpan('coap.exchange', { kind: SpanKind.INTERNAL }, ctx);
    ok.setStatus({ code: SpanStatusCode.OK, message: '' });
    ok.end();
    root.end();
    // a remote parent with a trace state; a second scope with a version and a schema URL
    t.startSpan('command.deliver', { kind: SpanKind.CONSUMER }, remote).end();
    p.getTracer('other', '1.2.3', { schemaUrl: 'https://opentelemetry.io/schemas/1.24.0' })
      .startSpan('client', { kind: SpanKind.CLIENT })
      .end();
  });
  // a second resource in the same batch
  const b = spansOf({ 'service.name': 'another' }, (p) => {
    p.getTracer('coap-edge').startSpan('second-resource').end();
  });
  return [...a, ...b];
}

describe('OTLP protobuf serializer', () => {
  const closers: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of closers) await c();
  });

  it("writes the SDK serializer's bytes for every kind of span field", () => {
    const spans = everyKindOfSpan();
    assert.equal(spans.length, 6);
    const encoder = new OtlpTraceEncoder();
    const ours = Buffer.from(encoder.encode(spans));
    const sdk = Buffer.from(ProtobufTraceSerializer.serializeRequest(spans) ?? new Uint8Array());
    assert.ok(sdk.length > 20000, `${sdk.length} bytes`);
    assert.ok(ours.equals(sdk), `ours ${ours.length} bytes, the SDK's ${sdk.length}`);
    // the encoder's buffer is reused: a second, smaller request is not mixed with the first
    const one = spans.slice(0, 1);
    assert.ok(
      Buffer.from(encoder.encode(one)).equals(
        Buffer.from(ProtobufTraceSerializer.serializeRequest(one) ?? new Uint8Array()),
      ),
    );
    assert.ok(Buffer.from(encoder.encode(spans)).equals(sdk));
  });

  it('for each span alone, and for no span', () => {
    const encoder = new OtlpTraceEncoder();
    for (const s of everyKindOfSpan()) {
      const ours = Buffer.from(encoder.encode([s]));
      const sdk = Buffer.from(ProtobufTraceSerializer.serializeRequest([s]) ?? new Uint8Array());
      assert.ok(
        ours.equals(sdk),
        `${s.name}: ours ${ours.toString('hex')}, the SDK's ${sdk.toString('hex')}`,
      );
    }
    assert.equal(encoder.encode([]).length, 0);
  });

  it('a request larger than the buffer kept between requests, then a small one', () => {
    const [big] = spansOf({ 'service.name': 'coap-edge' }, (p) => {
      p.getTracer('coap-edge')
        .startSpan('big', { attributes: { a: 'z'.repeat(3 << 20), b: 1 } })
        .end();
    });
    const [small] = spansOf({ 'service.name': 'coap-edge' }, (p) => {
      p.getTracer('coap-edge').startSpan('small').end();
    });
    assert.ok(big !== undefined && small !== undefined);
    const encoder = new OtlpTraceEncoder();
    for (const s of [big, small, big]) {
      const ours = Buffer.from(encoder.encode([s]));
      const sdk = Buffer.from(ProtobufTraceSerializer.serializeRequest([s]) ?? new Uint8Array());
      assert.ok(ours.equals(sdk), `${s.name}: ${ours.length} bytes, the SDK's ${sdk.length}`);
    }
  });

  it('a status whose longest form ends where the kept buffer ends', () => {
    // the status's code as a ten-byte varint (a negative enum) and a message long enough for a
    // two-byte length: the flags after it must still fit, wherever the buffer ends
    const [big] = spansOf({ 'service.name': 'coap-edge' }, (p) => {
      p.getTracer('coap-edge')
        .startSpan('big', { attributes: { a: 'z'.repeat(1100 << 10) } })
        .end();
    });
    assert.ok(big !== undefined);
    const encoder = new OtlpTraceEncoder();
    const sizes = new Set<number>();
    for (let n = 3740; n < 3790; n++) {
      encoder.encode([big]); // leaves the writer with a new 4 KiB buffer
      const [s] = spansOf({ 'service.name': 'coap-edge' }, (p) => {
        const span = p.getTracer('coap-edge').startSpan('n'.repeat(n));
        span.setStatus({ code: -1 as SpanStatusCode, message: 'm'.repeat(200) });
        span.end();
      });
      assert.ok(s !== undefined);
      const ours = Buffer.from(encoder.encode([s]));
      const sdk = Buffer.from(ProtobufTraceSerializer.serializeRequest([s]) ?? new Uint8Array());
      assert.ok(ours.equals(sdk), `name of ${n}: ${ours.length} bytes, the SDK's ${sdk.length}`);
      sizes.add(ours.length);
    }
    // the sweep crossed the 4 KiB buffer's end
    assert.ok(Math.min(...sizes) < 4096 && Math.max(...sizes) > 4096);
  });

  it("http/protobuf, the default: the spans reach a receiver without the SDK's serializer", async () => {
    // the generated protobufjs module the SDK's serializer encodes with (one instance: CJS cache)
    const require = createRequire(import.meta.url);
    const root = require('@opentelemetry/otlp-transformer/build/src/generated/root.js') as {
      opentelemetry: {
        proto: {
          collector: {
            trace: { v1: { ExportTraceServiceRequest: { encode: (...a: unknown[]) => unknown } } };
          };
        };
      };
    };
    const request = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
    const encode = request.encode;
    let sdkEncodes = 0;
    request.encode = (...a: unknown[]) => {
      sdkEncodes++;
      return encode.apply(request, a);
    };
    try {
      const rx = await OtlpReceiver.start();
      closers.push(() => rx.close());
      const mem = new InMemorySpanExporter();
      const provider = new BasicTracerProvider({
        resource: resourceFromAttributes({ 'service.name': 'coap-edge' }),
        spanProcessors: [
          new SimpleSpanProcessor(otlpExporter('http/protobuf', rx.url, {})),
          new SimpleSpanProcessor(mem),
        ],
      });
      const t = provider.getTracer('coap-edge');
      const root = t.startSpan('coap-edge.datagram', {
        kind: SpanKind.SERVER,
        attributes: { 'network.peer.port': 40000, 'coap_edge.device_key': 'dev0001', big: 2 ** 40 },
      });
      root.addEvent('coap.duplicate', { resent: true });
      t.startSpan('coap.exchange', {}, trace.setSpan(context.active(), root)).end();
      root.end();
      await provider.forceFlush();
      await rx.waitFor((s) => s.length >= 2, 'two spans');
      await provider.shutdown();
      assert.deepEqual(rx.rejected, []);
      const sent = mem.getFinishedSpans().map(fromReadableSpan);
      const byName = (n: string): unknown => rx.spans.find((s) => s.name === n);
      for (const s of sent) assert.deepEqual(byName(s.name), s);
      assert.equal(sdkEncodes, 0, "the SDK's serializer ran");
    } finally {
      request.encode = encode;
    }
  });

  it('http/protobuf: the configured headers are read once, not again for every export', async () => {
    const rx = await OtlpReceiver.start();
    closers.push(() => rx.close());
    // a header whose value counts its reads: the SDK merged the configured headers anew for
    // every export (an async merge with a validation pass over them); they are static
    let reads = 0;
    const headers = {
      get 'x-tenant'(): string {
        reads++;
        return 'edge-1';
      },
    };
    Object.defineProperty(headers, 'x-tenant', { enumerable: true });
    const mem = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': 'coap-edge' }),
      spanProcessors: [
        new SimpleSpanProcessor(otlpExporter('http/protobuf', rx.url, headers)),
        new SimpleSpanProcessor(mem),
      ],
    });
    const t = provider.getTracer('coap-edge');
    for (let i = 1; i <= 3; i++) {
      t.startSpan(`export-${i}`).end();
      await provider.forceFlush();
      await rx.waitFor((s) => s.length >= i, `span ${i}`);
    }
    await provider.shutdown();
    assert.deepEqual(rx.rejected, []);
    assert.equal(rx.requests.length, 3);
    for (const r of rx.requests) {
      assert.equal(r.headers['x-tenant'], 'edge-1');
      assert.equal(r.contentType, 'application/x-protobuf');
    }
    assert.equal(reads, 1, 'the configured headers were read for each export');
  });
});
