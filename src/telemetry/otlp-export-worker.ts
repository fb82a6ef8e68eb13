/**
 * The worker thread of {@link WorkerOtlpExporter} (otlp-worker-exporter.ts): it sends the
 * already serialized OTLP/HTTP export requests the main thread posts it, with the SDK's own
 * HTTP export delegate (the one the SDK's OTLP/HTTP exporters use: its agent, retries,
 * timeout, compression, certificates and partial-success handling, configured from the same
 * options and OTEL_EXPORTER_OTLP_* variables). The main thread's `node:http` client code then
 * never runs: bench/README.md ("Measuring tracing") shows why that matters.
 *
 * Messages in: `{ kind: 'export', id, body }`, `{ kind: 'flush', id }`, `{ kind: 'shutdown', id }`;
 * out: `{ id, ok, error? }` (`error` a message, never a header value).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ExportResultCode } from '@opentelemetry/core';
import {
  convertLegacyHttpOptions,
  createOtlpHttpExportDelegate,
} from '@opentelemetry/otlp-exporter-base/node-http';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';

/** What the main thread gives the worker at its start (`workerData`). */
export interface ExportWorkerData {
  readonly url: string | undefined;
  readonly headers: Record<string, string>;
  readonly protocol: 'http/protobuf' | 'http/json';
}

/** A message to the worker. */
export type ToExportWorker =
  | { readonly kind: 'export'; readonly id: number; readonly body: Uint8Array }
  | { readonly kind: 'flush' | 'shutdown'; readonly id: number };

/** The worker's answer to one message. */
export interface FromExportWorker {
  readonly id: number;
  readonly ok: boolean;
  readonly error?: string;
}

const port = parentPort;
if (port === null) throw new Error('otlp-export-worker runs as a worker thread only');
const data = workerData as ExportWorkerData;
const json = data.protocol === 'http/json';
const responses = json ? JsonTraceSerializer : ProtobufTraceSerializer;

/** The request is serialized already; responses are read as the SDK's exporter reads them. */
const passThrough = {
  serializeRequest: (body: Uint8Array): Uint8Array => body,
  deserializeResponse: (bytes: Uint8Array) => responses.deserializeResponse(bytes),
};

const delegate = createOtlpHttpExportDelegate(
  convertLegacyHttpOptions(
    { ...(data.url !== undefined ? { url: data.url } : {}), headers: data.headers },
    'TRACES',
    'v1/traces',
    { 'Content-Type': json ? 'application/json' : 'application/x-protobuf' },
  ),
  passThrough,
);

function answer(id: number, err?: unknown): void {
  const m: FromExportWorker =
    err === undefined
      ? { id, ok: true }
      : {
          id,
          ok: false,
          error: err instanceof Error ? err.message : typeof err === 'string' ? err : 'failed',
        };
  port!.postMessage(m);
}

port.on('message', (m: ToExportWorker) => {
  switch (m.kind) {
    case 'export':
      delegate.export(m.body, (r) =>
        answer(
          m.id,
          r.code === ExportResultCode.SUCCESS ? undefined : (r.error ?? new Error('export failed')),
        ),
      );
      return;
    case 'flush':
      delegate.forceFlush().then(
        () => answer(m.id),
        (err: unknown) => answer(m.id, err),
      );
      return;
    case 'shutdown':
      delegate.shutdown().then(
        () => {
          answer(m.id);
          port.close();
        },
        (err: unknown) => {
          answer(m.id, err);
          port.close();
        },
      );
      return;
  }
});
