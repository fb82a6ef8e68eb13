/**
 * Each OTLP protocol coap-edge can export with (OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf,
 * http/json, grpc) delivers spans to a receiver that decodes that wire format, with the
 * headers of OTEL_EXPORTER_OTLP_HEADERS. The exporters run under a provider of this test
 * (nothing is registered globally).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { otlpExporter } from '../../src/telemetry/setup.js';
import { OtlpGrpcReceiver, OtlpReceiver } from '../helpers/otlp.js';

async function exportOneSpan(
  exporter: ReturnType<typeof otlpExporter>,
  name: string,
): Promise<void> {
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const span = provider.getTracer('coap-edge-test').startSpan(name, {
    attributes: { 'coap.code': '2.04', 'coap.mid': 42 },
  });
  span.end();
  await provider.forceFlush();
  await provider.shutdown();
}

describe('OTLP protocols', () => {
  const closers: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of closers) await c();
  });

  for (const protocol of ['http/protobuf', 'http/json'] as const) {
    it(`${protocol}: spans and headers reach an OTLP/HTTP receiver`, async () => {
      const rx = await OtlpReceiver.start();
      closers.push(() => rx.close());
      await exportOneSpan(
        otlpExporter(protocol, rx.url, { authorization: 'Bearer t0k', 'x-tenant': 'fleet-a' }),
        `span-${protocol}`,
      );
      await rx.waitFor((s) => s.some((x) => x.name === `span-${protocol}`), protocol);
      assert.deepEqual(rx.rejected, []);
      const req = rx.requests[0];
      assert.ok(req !== undefined);
      assert.match(
        req.contentType ?? '',
        protocol === 'http/json' ? /^application\/json/ : /^application\/x-protobuf/,
      );
      assert.equal(req.headers.authorization, 'Bearer t0k');
      assert.equal(req.headers['x-tenant'], 'fleet-a');
      const span = rx.spans.find((x) => x.name === `span-${protocol}`);
      assert.equal(span?.attributes['coap.mid'], 42);
      assert.match(span?.traceId ?? '', /^[0-9a-f]{32}$/);
    });
  }

  it('grpc: spans reach an OTLP/gRPC receiver, headers as metadata', async () => {
    const rx = await OtlpGrpcReceiver.start();
    closers.push(() => rx.close());
    // the gRPC exporter reads its headers from the process environment
    process.env.OTEL_EXPORTER_OTLP_HEADERS = 'x-tenant=fleet-b';
    try {
      await exportOneSpan(otlpExporter('grpc', rx.url, {}), 'span-grpc');
    } finally {
      delete process.env.OTEL_EXPORTER_OTLP_HEADERS;
    }
    const span = rx.spans.find((x) => x.name === 'span-grpc');
    assert.ok(span !== undefined, `spans: ${rx.spans.map((s) => s.name).join(', ')}`);
    assert.equal(span.attributes['coap.code'], '2.04');
    assert.equal(rx.metadata[0]?.['x-tenant'], 'fleet-b');
  });
});
