/**
 * The OTLP/HTTP exporters send from a worker thread: the process's main thread makes no
 * `node:http` client request for an export (watched through Node's `http.client.request.start`
 * diagnostics channel, which sees the requests of its own thread only), while the spans still
 * reach a real OTLP receiver; a failed export is reported to the span processor as failed, and
 * shutdown ends the worker. Why it matters: bench/README.md, "Measuring tracing".
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import {
  BasicTracerProvider,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import { otlpExporter } from '../../src/telemetry/setup.js';
import { OtlpReceiver } from '../helpers/otlp.js';

/** One finished span of a throwaway provider, to hand an exporter directly. */
function oneSpan(name: string): ReadableSpan {
  let captured: ReadableSpan | undefined;
  const provider = new BasicTracerProvider({
    spanProcessors: [
      {
        onStart: () => undefined,
        onEnd: (s: ReadableSpan) => {
          captured = s;
        },
        forceFlush: () => Promise.resolve(),
        shutdown: () => Promise.resolve(),
      },
    ],
  });
  provider.getTracer('coap-edge-test').startSpan(name).end();
  assert.ok(captured !== undefined);
  return captured;
}

function exportOnce(
  exporter: ReturnType<typeof otlpExporter>,
  span: ReadableSpan,
): Promise<ExportResult> {
  return new Promise((resolve) => exporter.export([span], resolve));
}

describe('OTLP/HTTP export from a worker thread', () => {
  const closers: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of closers) await c();
  });

  for (const protocol of ['http/protobuf', 'http/json'] as const) {
    it(`${protocol}: the spans arrive, and the main thread made no HTTP client request`, async () => {
      const rx = await OtlpReceiver.start();
      closers.push(() => rx.close());
      let clientRequests = 0;
      const seen = (): void => {
        clientRequests++;
      };
      subscribe('http.client.request.start', seen);
      try {
        const provider = new BasicTracerProvider({
          spanProcessors: [
            new SimpleSpanProcessor(otlpExporter(protocol, rx.url, { 'x-tenant': 'fleet-w' })),
          ],
        });
        provider.getTracer('coap-edge-test').startSpan(`worker-${protocol}`).end();
        await provider.forceFlush();
        await rx.waitFor((s) => s.some((x) => x.name === `worker-${protocol}`), protocol);
        await provider.shutdown();
      } finally {
        unsubscribe('http.client.request.start', seen);
      }
      assert.deepEqual(rx.rejected, []);
      assert.equal(rx.requests[0]?.headers['x-tenant'], 'fleet-w');
      assert.equal(clientRequests, 0, 'no node:http client request on the main thread');
    });
  }

  it('a refused export is reported failed; after shutdown exports fail at once', async () => {
    const rx = await OtlpReceiver.start();
    closers.push(() => rx.close());
    rx.failWith = 400;
    const exporter = otlpExporter('http/protobuf', rx.url, {});
    const refused = await exportOnce(exporter, oneSpan('refused'));
    assert.equal(refused.code, ExportResultCode.FAILED);
    assert.ok(refused.error instanceof Error);
    rx.failWith = undefined;
    const accepted = await exportOnce(exporter, oneSpan('accepted'));
    assert.equal(accepted.code, ExportResultCode.SUCCESS);
    assert.ok(rx.spans.some((s) => s.name === 'accepted'));
    await exporter.shutdown();
    const late = await exportOnce(exporter, oneSpan('late'));
    assert.equal(late.code, ExportResultCode.FAILED);
  });
});
