/**
 * The OTLP/HTTP span exporter (http/protobuf, the default, and http/json): the batch is
 * serialized here with the SDK's own serializer, and the request is made by a worker thread
 * (otlp-export-worker.ts) with the SDK's own HTTP export delegate. What reaches the collector
 * is what the SDK's exporter sends, byte for byte.
 *
 * Why a thread: a process whose main thread has made `node:http` client requests runs every
 * later uplink several per cent dearer, with no HTTP in sight — Node's shared stream and socket
 * code, which the MQTT and UDP paths of every datagram run through, gets the HTTP client's
 * shapes in its inline caches and optimized code. A worker has its own isolate: its HTTP code
 * leaves the main thread's feedback alone (bench/README.md, "Measuring tracing").
 *
 * The worker is started on the first export (tracing with no sampled datagram starts none) and
 * started again after it exits; it holds the event loop only while an answer is awaited.
 */
import { Worker } from 'node:worker_threads';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { ExportWorkerData, FromExportWorker, ToExportWorker } from './otlp-export-worker.js';

const WORKER_URL = new URL('./otlp-export-worker.js', import.meta.url);

type Pending = (error: Error | undefined) => void;

export class WorkerOtlpExporter implements SpanExporter {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private stopped = false;
  private readonly data: ExportWorkerData;

  constructor(
    protocol: 'http/protobuf' | 'http/json',
    url: string | undefined,
    headers: Record<string, string>,
  ) {
    this.data = { protocol, url, headers: { ...headers } };
  }

  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    if (this.stopped) {
      done({ code: ExportResultCode.FAILED, error: new Error('exporter is shut down') });
      return;
    }
    const serializer =
      this.data.protocol === 'http/json' ? JsonTraceSerializer : ProtobufTraceSerializer;
    let body: Uint8Array | undefined;
    try {
      body = serializer.serializeRequest(spans);
    } catch (err) {
      done({ code: ExportResultCode.FAILED, error: asError(err) });
      return;
    }
    if (body === undefined) {
      done({ code: ExportResultCode.FAILED, error: new Error('Nothing to send') });
      return;
    }
    this.send({ kind: 'export', id: ++this.seq, body }, (error) =>
      done(
        error === undefined
          ? { code: ExportResultCode.SUCCESS }
          : { code: ExportResultCode.FAILED, error },
      ),
    );
  }

  /** Resolves once the exports handed to the worker so far have been answered. */
  forceFlush(): Promise<void> {
    if (this.worker === undefined) return Promise.resolve();
    return new Promise((resolve) => this.send({ kind: 'flush', id: ++this.seq }, () => resolve()));
  }

  /** Waits for the exports in flight (the SDK delegate's shutdown), then ends the worker. */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const w = this.worker;
    if (w === undefined) return;
    await new Promise<void>((resolve) =>
      this.send({ kind: 'shutdown', id: ++this.seq }, () => resolve()),
    );
    await w.terminate();
  }

  private send(m: ToExportWorker, answer: Pending): void {
    const w = this.worker ?? this.start();
    if (this.pending.size === 0) w.ref();
    this.pending.set(m.id, answer);
    w.postMessage(m);
  }

  private start(): Worker {
    const w = new Worker(WORKER_URL, { workerData: this.data });
    w.unref();
    w.on('message', (m: FromExportWorker) => {
      const answer = this.pending.get(m.id);
      if (answer === undefined) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) w.unref();
      answer(m.ok ? undefined : new Error(m.error ?? 'export failed'));
    });
    w.on('error', (err) => this.lost(w, err));
    w.on('exit', (code) => this.lost(w, new Error(`OTLP export worker exited (${code})`)));
    this.worker = w;
    return w;
  }

  /** The worker ended: what it still owed fails, and the next export starts a new one. */
  private lost(w: Worker, err: Error): void {
    if (this.worker !== w) return;
    this.worker = undefined;
    const owed = [...this.pending.values()];
    this.pending.clear();
    for (const answer of owed) answer(err);
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
