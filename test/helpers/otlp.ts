/**
 * An in-process OTLP/HTTP trace receiver for the telemetry tests: a `node:http` server on
 * 127.0.0.1 port 0 that accepts `POST /v1/traces` the way a collector does and keeps every
 * span it gets, flattened ({@link OtlpSpan}).
 *
 * It decodes both HTTP encodings coap-edge can send (OTEL_EXPORTER_OTLP_PROTOCOL): http/json
 * (`application/json`; ids as hex strings, 64-bit integers as numbers or decimal strings) and
 * http/protobuf (`application/x-protobuf`), gzip-compressed or not. Anything else (another
 * content type or path) is answered 415/404 and recorded in {@link OtlpReceiver.rejected}, so
 * a test can tell the wire format changed. {@link OtlpGrpcReceiver} is the gRPC counterpart.
 *
 * Also: {@link fromReadableSpan} puts spans of the SDK's `InMemorySpanExporter` in the same
 * shape, and small readers for span trees, W3C `traceparent` and every value a span carries.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { gunzipSync } from 'node:zlib';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Server as GrpcServer, ServerCredentials, type ServiceDefinition } from '@grpc/grpc-js';

/** A decoded OTLP attribute value. */
export type AttrValue = string | number | boolean | AttrValue[] | { [key: string]: AttrValue };

export type Attrs = Readonly<Record<string, AttrValue>>;

/** OTLP SpanKind numbers (proto enum): the SDK's `SpanKind` plus one. */
export const OtlpKind = {
  INTERNAL: 1,
  SERVER: 2,
  CLIENT: 3,
  PRODUCER: 4,
  CONSUMER: 5,
} as const;

/** OTLP status codes: 0 unset, 1 ok, 2 error. */
export const OtlpStatus = { UNSET: 0, OK: 1, ERROR: 2 } as const;

export interface OtlpEvent {
  readonly name: string;
  readonly attributes: Attrs;
}

export interface OtlpLink {
  readonly traceId: string;
  readonly spanId: string;
  readonly attributes: Attrs;
}

/** One span as received, with its resource and instrumentation scope. */
export interface OtlpSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** Undefined for a root span. */
  readonly parentSpanId: string | undefined;
  readonly name: string;
  /** {@link OtlpKind}. */
  readonly kind: number;
  readonly startNs: bigint;
  readonly endNs: bigint;
  readonly attributes: Attrs;
  readonly events: readonly OtlpEvent[];
  readonly links: readonly OtlpLink[];
  readonly status: { readonly code: number; readonly message: string | undefined };
  readonly resource: Attrs;
  readonly scope: string;
}

/** What arrived in one export request (for checks on the wire format). */
export interface OtlpRequest {
  readonly path: string;
  readonly contentType: string | undefined;
  readonly contentEncoding: string | undefined;
  readonly bytes: number;
  readonly spans: number;
  /** Request headers (lower-case names), to check OTEL_EXPORTER_OTLP_HEADERS. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

// --- decoding the OTLP JSON encoding -----------------------------------------------------------

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function asArray(v: unknown): unknown[] {
  return Array.isArray(v) ? (v as unknown[]) : [];
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function anyValue(v: unknown): AttrValue {
  if (!isObject(v)) return '';
  if ('stringValue' in v) return String(v.stringValue);
  if ('boolValue' in v) return v.boolValue === true;
  // int64 is a number or a decimal string in OTLP JSON
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return Number(v.doubleValue);
  if ('bytesValue' in v) return String(v.bytesValue);
  if ('arrayValue' in v) {
    const a = v.arrayValue;
    return asArray(isObject(a) ? a.values : undefined).map(anyValue);
  }
  if ('kvlistValue' in v) {
    const l = v.kvlistValue;
    return keyValues(isObject(l) ? l.values : undefined);
  }
  return '';
}

function keyValues(list: unknown): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const kv of asArray(list)) {
    if (!isObject(kv)) continue;
    const key = str(kv.key);
    if (key !== undefined) out[key] = anyValue(kv.value);
  }
  return out;
}

function nanos(v: unknown): bigint {
  if (typeof v === 'string' && /^\d+$/.test(v)) return BigInt(v);
  if (typeof v === 'number' && Number.isFinite(v)) return BigInt(Math.round(v));
  if (isObject(v)) {
    // { low, high } long bits (protobuf-style JSON)
    const low = BigInt(Number(v.low) >>> 0);
    const high = BigInt(Number(v.high) >>> 0);
    return (high << 32n) | low;
  }
  return 0n;
}

/** Flattens an OTLP JSON `ExportTraceServiceRequest`. */
export function decodeOtlpJson(body: unknown): OtlpSpan[] {
  const out: OtlpSpan[] = [];
  if (!isObject(body)) throw new Error('OTLP request is not a JSON object');
  for (const rs of asArray(body.resourceSpans)) {
    if (!isObject(rs)) continue;
    const resource = keyValues(isObject(rs.resource) ? rs.resource.attributes : undefined);
    for (const ss of asArray(rs.scopeSpans)) {
      if (!isObject(ss)) continue;
      const scope = isObject(ss.scope) ? (str(ss.scope.name) ?? '') : '';
      for (const s of asArray(ss.spans)) {
        if (!isObject(s)) continue;
        const parent = str(s.parentSpanId);
        const status = isObject(s.status) ? s.status : {};
        out.push({
          traceId: str(s.traceId) ?? '',
          spanId: str(s.spanId) ?? '',
          parentSpanId: parent === undefined || parent === '' ? undefined : parent,
          name: str(s.name) ?? '',
          kind: Number(s.kind ?? 0),
          startNs: nanos(s.startTimeUnixNano),
          endNs: nanos(s.endTimeUnixNano),
          attributes: keyValues(s.attributes),
          events: asArray(s.events)
            .filter(isObject)
            .map((e) => ({ name: str(e.name) ?? '', attributes: keyValues(e.attributes) })),
          links: asArray(s.links)
            .filter(isObject)
            .map((l) => ({
              traceId: str(l.traceId) ?? '',
              spanId: str(l.spanId) ?? '',
              attributes: keyValues(l.attributes),
            })),
          status: { code: Number(status.code ?? 0), message: str(status.message) },
          resource,
          scope,
        });
      }
    }
  }
  return out;
}

// --- decoding the OTLP protobuf encoding --------------------------------------------------------

/** The protobufjs message type of `ExportTraceServiceRequest`, as far as it is used here. */
interface ProtoType {
  decode(bytes: Uint8Array): unknown;
  toObject(message: unknown, options: Record<string, unknown>): Record<string, unknown>;
}

/**
 * The OTLP protobuf schema as compiled into `@opentelemetry/otlp-transformer` (the exporters'
 * own encoder; the package has no decoder API, so its generated static module is loaded).
 */
function exportTraceServiceRequest(): ProtoType {
  const require = createRequire(import.meta.url);
  const root = require('@opentelemetry/otlp-transformer/build/src/generated/root.js') as {
    opentelemetry: {
      proto: { collector: { trace: { v1: { ExportTraceServiceRequest: ProtoType } } } };
    };
  };
  return root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
}

function base64ToHex(v: unknown): unknown {
  return typeof v === 'string' ? Buffer.from(v, 'base64').toString('hex') : v;
}

/**
 * Flattens an OTLP protobuf `ExportTraceServiceRequest` (http/protobuf body or gRPC message):
 * decoded to the JSON mapping, ids turned from bytes into hex as OTLP JSON has them.
 */
export function decodeOtlpProtobuf(bytes: Uint8Array): OtlpSpan[] {
  const type = exportTraceServiceRequest();
  const obj = type.toObject(type.decode(bytes), { longs: String, bytes: String, enums: Number });
  for (const rs of asArray(obj.resourceSpans)) {
    for (const ss of asArray(isObject(rs) ? rs.scopeSpans : undefined)) {
      for (const span of asArray(isObject(ss) ? ss.spans : undefined)) {
        if (!isObject(span)) continue;
        for (const k of ['traceId', 'spanId', 'parentSpanId']) span[k] = base64ToHex(span[k]);
        for (const l of asArray(span.links)) {
          if (!isObject(l)) continue;
          l.traceId = base64ToHex(l.traceId);
          l.spanId = base64ToHex(l.spanId);
        }
      }
    }
  }
  return decodeOtlpJson(obj);
}

/** A span of the SDK (e.g. from `InMemorySpanExporter`) in the receiver's shape. */
export function fromReadableSpan(s: ReadableSpan): OtlpSpan {
  const ctx = s.spanContext();
  const hr = (t: readonly [number, number]): bigint => BigInt(t[0]) * 1_000_000_000n + BigInt(t[1]);
  const attrs = (a: Readonly<Record<string, unknown>> | undefined): Attrs => {
    const out: Record<string, AttrValue> = {};
    for (const [k, v] of Object.entries(a ?? {})) {
      if (v !== undefined && v !== null) out[k] = v as AttrValue;
    }
    return out;
  };
  return {
    traceId: ctx.traceId,
    spanId: ctx.spanId,
    parentSpanId: s.parentSpanContext?.spanId,
    name: s.name,
    kind: s.kind + 1,
    startNs: hr(s.startTime),
    endNs: hr(s.endTime),
    attributes: attrs(s.attributes),
    events: s.events.map((e) => ({ name: e.name, attributes: attrs(e.attributes) })),
    links: s.links.map((l) => ({
      traceId: l.context.traceId,
      spanId: l.context.spanId,
      attributes: attrs(l.attributes),
    })),
    status: { code: s.status.code, message: s.status.message },
    resource: attrs(s.resource.attributes),
    scope: s.instrumentationScope.name,
  };
}

// --- the receiver ------------------------------------------------------------------------------

const MAX_BODY = 16 * 1024 * 1024;

export class OtlpReceiver {
  readonly spans: OtlpSpan[] = [];
  readonly requests: OtlpRequest[] = [];
  /** Requests not accepted, with why (wrong path, method, content type, undecodable). */
  readonly rejected: string[] = [];
  /** Answer every export with this status instead (e.g. 503 to test retries); undefined: 200. */
  failWith: number | undefined;
  private readonly waiters = new Set<() => void>();

  private constructor(
    private readonly server: Server,
    /** The traces URL to give the exporter: `http://127.0.0.1:<port>/v1/traces`. */
    readonly url: string,
  ) {}

  static async start(): Promise<OtlpReceiver> {
    const ref: { self?: OtlpReceiver } = {};
    const server = createServer((req, res) => ref.self?.handle(req, res));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    ref.self = new OtlpReceiver(server, `http://127.0.0.1:${port}/v1/traces`);
    return ref.self;
  }

  private reject(res: ServerResponse, status: number, why: string): void {
    this.rejected.push(why);
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ code: status, message: why }));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0] ?? '';
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      if (req.method !== 'POST') return this.reject(res, 405, `method ${req.method ?? '?'}`);
      if (path !== '/v1/traces') return this.reject(res, 404, `path ${path}`);
      if (size > MAX_BODY) return this.reject(res, 413, `body of ${size} bytes`);
      const contentType = req.headers['content-type'];
      const contentEncoding = req.headers['content-encoding'];
      const type = (contentType ?? '').toLowerCase();
      const json = type.startsWith('application/json');
      if (!json && !type.startsWith('application/x-protobuf')) {
        return this.reject(res, 415, `content-type ${contentType ?? '(none)'}`);
      }
      let spans: OtlpSpan[];
      try {
        let body = Buffer.concat(chunks);
        if (contentEncoding === 'gzip') body = gunzipSync(body);
        else if (contentEncoding !== undefined && contentEncoding !== 'identity') {
          return this.reject(res, 415, `content-encoding ${contentEncoding}`);
        }
        spans = json ? decodeOtlpJson(JSON.parse(body.toString('utf8'))) : decodeOtlpProtobuf(body);
      } catch (err) {
        return this.reject(res, 400, `undecodable: ${String(err)}`);
      }
      if (this.failWith !== undefined) return this.reject(res, this.failWith, 'told to fail');
      this.requests.push({
        path,
        contentType,
        contentEncoding,
        bytes: size,
        spans: spans.length,
        headers: req.headers,
      });
      this.spans.push(...spans);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
      for (const w of [...this.waiters]) w();
    });
  }

  /**
   * Resolves once `pred` holds for the spans received so far (checked on every export);
   * rejects naming `what` after `timeoutMs`.
   */
  waitFor(
    pred: (spans: readonly OtlpSpan[]) => boolean,
    what: string,
    timeoutMs = 10_000,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (!pred(this.spans)) return;
        done();
        resolve();
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(
            `OTLP receiver: timed out after ${timeoutMs} ms waiting for ${what}; ` +
              `${this.spans.length} spans so far: ${describeSpans(this.spans)}`,
          ),
        );
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  async close(): Promise<void> {
    for (const w of [...this.waiters]) w();
    this.server.closeAllConnections();
    const closed = once(this.server, 'close');
    this.server.close();
    await closed;
  }
}

/**
 * An OTLP/gRPC trace receiver (`opentelemetry.proto.collector.trace.v1.TraceService/Export`)
 * on 127.0.0.1 port 0, made with grpc-js's generic service definition: messages stay bytes
 * and are decoded with {@link decodeOtlpProtobuf}; every call's metadata is kept.
 */
export class OtlpGrpcReceiver {
  readonly spans: OtlpSpan[] = [];
  readonly metadata: Record<string, string>[] = [];

  private constructor(
    private readonly server: GrpcServer,
    /** The endpoint to give the exporter: `http://127.0.0.1:<port>`. */
    readonly url: string,
  ) {}

  static async start(): Promise<OtlpGrpcReceiver> {
    const server = new GrpcServer();
    const ref: { self?: OtlpGrpcReceiver } = {};
    const identity = (b: Buffer): Buffer => b;
    const service: ServiceDefinition = {
      Export: {
        path: '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
        requestStream: false,
        responseStream: false,
        requestSerialize: identity,
        requestDeserialize: identity,
        // an empty ExportTraceServiceResponse encodes to zero bytes
        responseSerialize: () => Buffer.alloc(0),
        responseDeserialize: identity,
      },
    };
    server.addService(service, {
      Export: (
        call: { request: Buffer; metadata: { getMap(): Record<string, unknown> } },
        callback: (err: Error | null, value: unknown) => void,
      ) => {
        const self = ref.self;
        if (self !== undefined) {
          const md: Record<string, string> = {};
          for (const [k, v] of Object.entries(call.metadata.getMap())) md[k] = String(v);
          self.metadata.push(md);
          self.spans.push(...decodeOtlpProtobuf(call.request));
        }
        callback(null, {});
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) =>
        err === null ? resolve(p) : reject(err),
      ),
    );
    ref.self = new OtlpGrpcReceiver(server, `http://127.0.0.1:${port}`);
    return ref.self;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.tryShutdown(() => resolve()));
  }
}

// --- reading spans -----------------------------------------------------------------------------

/** Spans of one trace. */
export function traceOf(spans: readonly OtlpSpan[], traceId: string): OtlpSpan[] {
  return spans.filter((s) => s.traceId === traceId);
}

/** Direct children of `parent` (same trace, parentSpanId = its spanId). */
export function childrenOf(spans: readonly OtlpSpan[], parent: OtlpSpan): OtlpSpan[] {
  return spans.filter((s) => s.traceId === parent.traceId && s.parentSpanId === parent.spanId);
}

/** The only child of `parent` named `name`; throws (listing the children) otherwise. */
export function onlyChild(spans: readonly OtlpSpan[], parent: OtlpSpan, name: string): OtlpSpan {
  const kids = childrenOf(spans, parent);
  const named = kids.filter((s) => s.name === name);
  const [first] = named;
  if (named.length !== 1 || first === undefined) {
    throw new Error(
      `expected one ${name} under ${parent.name} ${parent.spanId}, got ${named.length}; ` +
        `children: ${kids.map((k) => k.name).join(', ') || '(none)'}`,
    );
  }
  return first;
}

/** The parent span of `s`, when it was received. */
export function parentOf(spans: readonly OtlpSpan[], s: OtlpSpan): OtlpSpan | undefined {
  return s.parentSpanId === undefined
    ? undefined
    : spans.find((p) => p.traceId === s.traceId && p.spanId === s.parentSpanId);
}

/** `name (parent) {attrs}` per span, for assertion messages. */
export function describeSpans(spans: readonly OtlpSpan[], max = 60): string {
  const lines = spans.slice(0, max).map((s) => {
    const parent = s.parentSpanId === undefined ? 'root' : `<-${s.parentSpanId.slice(0, 6)}`;
    return `${s.name}[${s.traceId.slice(0, 6)}/${s.spanId.slice(0, 6)} ${parent}] ${JSON.stringify(
      s.attributes,
    )}${s.events.length > 0 ? ` events=${s.events.map((e) => e.name).join(',')}` : ''}`;
  });
  if (spans.length > max) lines.push(`... ${spans.length - max} more`);
  return `\n  ${lines.join('\n  ')}`;
}

/**
 * Every text a span exposes to a tracing backend: name, status message, and each attribute
 * key and value (of the span, its events, links and resource), recursively, as strings.
 */
export function exposedTexts(s: OtlpSpan): string[] {
  const out: string[] = [s.name, s.scope];
  if (s.status.message !== undefined) out.push(s.status.message);
  const walk = (v: AttrValue): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        out.push(k);
        walk(x);
      }
    } else out.push(String(v));
  };
  const attrs = (a: Attrs): void => {
    for (const [k, v] of Object.entries(a)) {
      out.push(k);
      walk(v);
    }
  };
  attrs(s.attributes);
  attrs(s.resource);
  for (const e of s.events) {
    out.push(e.name);
    attrs(e.attributes);
  }
  for (const l of s.links) attrs(l.attributes);
  return out;
}

/** An attribute value as text: primitives as they are, arrays and maps as JSON. */
export function attrText(v: AttrValue | undefined): string {
  if (v === undefined) return '(none)';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** `layer:outcome` of each `key_lookup` event of `spans`, e.g. `file:hit`. */
export function keyLookups(spans: readonly OtlpSpan[]): string[] {
  return spans
    .flatMap((s) => s.events)
    .filter((e) => e.name === 'key_lookup')
    .map(
      (e) =>
        `${attrText(e.attributes['coap_edge.key_lookup.layer'])}:${attrText(
          e.attributes['coap_edge.key_lookup.outcome'],
        )}`,
    );
}

/** A W3C `traceparent` (version 00), parsed; undefined when malformed. */
export function parseTraceparent(
  tp: string | undefined,
): { traceId: string; parentId: string; sampled: boolean } | undefined {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(tp ?? '');
  if (m === null || m[1] === undefined || m[2] === undefined || m[3] === undefined) {
    return undefined;
  }
  return { traceId: m[1], parentId: m[2], sampled: (parseInt(m[3], 16) & 1) === 1 };
}
