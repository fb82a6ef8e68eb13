/**
 * The default exporter's own transport for uncompressed bodies (src/telemetry/otlp-http.ts):
 * what a collector receives (the body whole, with a Content-Length, the SDK's User-Agent and
 * headers) and how answers are taken as the SDK's transport takes them (success, a retry after
 * `Retry-After`, no retry of a 400); with gzip the SDK's transport is used.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { CompressionAlgorithm } from '@opentelemetry/otlp-exporter-base';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import { OtlpProtoTraceExporter, OtlpTraceEncoder } from '../../src/telemetry/otlp-proto.js';

interface Seen {
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** A server answering each POST with the next of `statuses` (then 200), recording them. */
async function collector(statuses: { status: number; headers?: Record<string, string> }[]) {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ headers: req.headers, body: Buffer.concat(chunks) });
      const next = statuses.shift() ?? { status: 200 };
      res.writeHead(next.status, next.headers ?? {});
      res.end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`;
  return { seen, url, close: () => new Promise<void>((r) => server.close(() => r())) };
}

function spans(): ReadableSpan[] {
  const mem = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(mem)] });
  const t = provider.getTracer('coap-edge');
  t.startSpan('a', { attributes: { n: 1 } }).end();
  t.startSpan('b').end();
  return mem.getFinishedSpans();
}

function exportOnce(
  exporter: OtlpProtoTraceExporter,
  batch: ReadableSpan[],
): Promise<{ code: number; error?: Error }> {
  return new Promise((resolve) => exporter.export(batch, resolve));
}

describe('OTLP/HTTP protobuf transport', () => {
  const closers: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of closers) await c();
  });

  it('sends the body whole with its length, the SDK headers and User-Agent; retries a 503 after Retry-After', async () => {
    const c = await collector([{ status: 503, headers: { 'retry-after': '0' } }]);
    closers.push(c.close);
    const exporter = new OtlpProtoTraceExporter({ url: c.url, headers: { 'x-tenant': 't1' } });
    const batch = spans();
    const result = await exportOnce(exporter, batch);
    assert.equal(result.code, 0);
    assert.equal(c.seen.length, 2);
    const expected = Buffer.from(new OtlpTraceEncoder().encode(batch));
    for (const s of c.seen) {
      assert.ok(s.body.equals(expected));
      assert.equal(s.headers['content-length'], String(expected.length));
      assert.equal(s.headers['content-type'], 'application/x-protobuf');
      assert.equal(s.headers['x-tenant'], 't1');
      assert.match(s.headers['user-agent'] ?? '', /^OTel-OTLP-Exporter-JavaScript\/\d+\.\d+\.\d+$/);
    }
    await exporter.shutdown();
  });

  it('a 400 fails the export without a retry', async () => {
    const c = await collector([{ status: 400 }]);
    closers.push(c.close);
    const exporter = new OtlpProtoTraceExporter({ url: c.url });
    const result = await exportOnce(exporter, spans());
    assert.equal(result.code, 1);
    assert.equal(c.seen.length, 1);
    await exporter.shutdown();
  });

  it('a refused connection fails the export once the retries pass the timeout', async () => {
    const c = await collector([]);
    await c.close();
    const exporter = new OtlpProtoTraceExporter({ url: c.url, timeoutMillis: 300 });
    const result = await exportOnce(exporter, spans());
    assert.equal(result.code, 1);
    await exporter.shutdown();
  });

  it('gzip: the compressed body of the same bytes (the SDK transport)', async () => {
    const c = await collector([]);
    closers.push(c.close);
    const exporter = new OtlpProtoTraceExporter({
      url: c.url,
      compression: CompressionAlgorithm.GZIP,
    });
    const batch = spans();
    assert.equal((await exportOnce(exporter, batch)).code, 0);
    const [s] = c.seen;
    assert.ok(s !== undefined);
    assert.equal(s.headers['content-encoding'], 'gzip');
    assert.ok(gunzipSync(s.body).equals(Buffer.from(new OtlpTraceEncoder().encode(batch))));
    await exporter.shutdown();
  });
});
