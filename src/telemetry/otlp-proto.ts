/**
 * The OTLP/HTTP protobuf body of a batch of finished spans (`ExportTraceServiceRequest`),
 * written straight from the SDK's spans into one buffer. It replaces, for the default
 * protocol only, the serializer the SDK's `exporter-trace-otlp-proto` uses: that one first
 * builds an object tree of every span (hex ids to new arrays, each timestamp through three
 * BigInt operations, an object per attribute and per value) and then walks it with protobufjs
 * (a forked writer per nested message). Measured under callgrind that was 0.47 M (JIT, compile
 * left out) to 1.7 M (unoptimized) instructions per trace of five spans, as much as making the
 * spans to three times as much; this writer takes 0.2–0.37 M (bench/README.md, "The
 * serializer"). No maintained library writes OTLP from `ReadableSpan`s without that tree. The
 * transport stays the SDK's (`createOtlpHttpExportDelegate`: URL, headers, compression,
 * retries, timeout, agent options, OTEL_EXPORTER_OTLP_* variables), and so does the response's
 * decoding.
 *
 * The bytes are those of the SDK's serializer, field for field and in the same order (its
 * test compares the two on spans with every kind of attribute, event, link and status), so
 * what a collector and Jaeger show is unchanged; an SDK upgrade that writes another field
 * fails that test.
 *
 * Nested messages are written with a one-byte length, moved when the body turns out longer
 * than 127 bytes: lengths are not known before the body is written, and a second pass to
 * size everything first would run the span's attributes twice.
 */
import type { HrTime, Link, AttributeValue, Attributes } from '@opentelemetry/api';
import type { InstrumentationScope } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, SpanExporter, TimedEvent } from '@opentelemetry/sdk-trace-base';
import {
  OTLPExporterBase,
  type OTLPExporterNodeConfigBase,
} from '@opentelemetry/otlp-exporter-base';
import {
  convertLegacyHttpOptions,
  createOtlpHttpExportDelegate,
} from '@opentelemetry/otlp-exporter-base/node-http';
import {
  ProtobufTraceSerializer,
  type IExportTraceServiceResponse,
  type ISerializer,
} from '@opentelemetry/otlp-transformer';

const SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK = 0x100;
const SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK = 0x200;
const TWO_32 = 4294967296;
/** The writer's buffer is kept between requests up to this size. */
const KEPT_BUFFER_BYTES = 1 << 20;

/*
 * The writer: one buffer and a position, module variables rather than an object's fields
 * (the SDK's code and this run rarely, mostly unoptimized, where a field access is an inline
 * cache call and a module variable a slot load). Encoding is synchronous, so one writer
 * serves every encoder of the process.
 */
let buf = rawWrites(Buffer.allocUnsafe(4096));
let pos = 0;

/**
 * Node's own Buffer writers behind `buf.write(s, offset, length, encoding)`, without its
 * argument handling; not in @types/node, but on every Buffer since Node 0.x (protobufjs
 * writes its strings with `utf8Write` too).
 */
interface RawWrites extends Buffer {
  utf8Write(s: string, offset: number, length?: number): number;
  hexWrite(s: string, offset: number, length: number): number;
}

function rawWrites(b: Buffer): RawWrites {
  return b as RawWrites;
}

/** Room for `n` more bytes. */
function ensure(n: number): void {
  if (pos + n <= buf.length) return;
  let size = buf.length * 2;
  while (size < pos + n) size *= 2;
  const next = rawWrites(Buffer.allocUnsafe(size));
  buf.copy(next, 0, 0, pos);
  buf = next;
}

/** A varint of an unsigned 32-bit value (tags, lengths, counts, enums ≥ 0); room reserved. */
function varint(v: number): void {
  while (v > 127) {
    buf[pos++] = (v & 127) | 128;
    v >>>= 7;
  }
  buf[pos++] = v;
}

/** A varint of a 64-bit value given as its high and low 32 bits (unsigned); room reserved. */
function varint64(hi: number, lo: number): void {
  while (hi !== 0) {
    buf[pos++] = (lo & 127) | 128;
    lo = ((lo >>> 7) | (hi << 25)) >>> 0;
    hi >>>= 7;
  }
  varint(lo);
}

/** An int32 enum (negative values as ten-byte varints, as protobuf writes them). */
function int32(v: number): void {
  if (v >= 0) varint(v);
  else varint64(0xffffffff, v >>> 0);
}

/** An int64 from an integer (two's complement for negative values); room reserved. */
function int64(v: number): void {
  if (v >= 0 && v < TWO_32) {
    varint(v);
    return;
  }
  const neg = v < 0;
  const abs = neg ? -v : v;
  let lo = abs % TWO_32;
  let hi = ((abs - lo) / TWO_32) % TWO_32;
  if (neg) {
    lo = ~lo >>> 0;
    hi = ~hi >>> 0;
    if (lo === 0xffffffff) {
      lo = 0;
      hi = (hi + 1) >>> 0;
    } else lo += 1;
  }
  varint64(hi, lo);
}

function fixed32(v: number): void {
  buf.writeUInt32LE(v >>> 0, pos);
  pos += 4;
}

/** fixed64 nanoseconds of an HrTime, exact without BigInt (the value exceeds 2^53). */
function hrTime(t: HrTime): void {
  const s = Math.trunc(t[0]);
  const ns = Math.trunc(t[1]);
  // s × 10^9 + ns = (sHi × 10^9) × 2^16 + sLo × 10^9 + ns, each part exact in a double
  const sLo = s % 65536;
  const a = ((s - sLo) / 65536) * 1e9;
  const aLo = a % 65536;
  const c = aLo * 65536 + sLo * 1e9 + ns;
  const cLo = c % TWO_32;
  buf.writeUInt32LE(cLo, pos);
  buf.writeUInt32LE(((a - aLo) / 65536 + (c - cLo) / TWO_32) >>> 0, pos + 4);
  pos += 8;
}

/** A length-prefixed UTF-8 string (tag written by the caller). */
function string(s: string): void {
  if (s.length < 43) {
    // at most 126 bytes: a one-byte length, known once written
    ensure(1 + 3 * s.length);
    const at = pos++;
    const n = buf.utf8Write(s, pos);
    buf[at] = n;
    pos += n;
    return;
  }
  const n = Buffer.byteLength(s);
  ensure(5 + n);
  varint(n);
  pos += buf.utf8Write(s, pos, n);
}

/** A string field: its tag (one byte) and the string. */
function stringField(tag: number, s: string): void {
  ensure(1);
  buf[pos++] = tag;
  string(s);
}

/** A span or trace id: hex text written as its bytes (length prefixed); room reserved. */
function hexId(hex: string): void {
  const n = hex.length >>> 1;
  buf[pos++] = n;
  // the SDK's ids are valid hex; were one not, the bytes after the bad digit are zeros
  const written = buf.hexWrite(hex, pos, n);
  if (written < n) buf.fill(0, pos + written, pos + n);
  pos += n;
}

/** Starts a nested message: its tag (one byte) and a one-byte length to fill by {@link end}. */
function begin(tag: number): number {
  ensure(2);
  buf[pos++] = tag;
  return pos++;
}

/** Ends the nested message begun at `at`: its length, the body moved if it needs more bytes. */
function end(at: number): void {
  const len = pos - at - 1;
  if (len < 128) {
    buf[at] = len;
    return;
  }
  let extra = 1;
  while (len >= 2 ** (7 * (extra + 1))) extra++;
  ensure(extra);
  buf.copyWithin(at + 1 + extra, at + 1, pos);
  pos += extra;
  const after = pos;
  pos = at;
  varint(len);
  pos = after;
}

function anyValue(v: AttributeValue | null | undefined): void {
  switch (typeof v) {
    case 'string':
      stringField(10, v);
      return;
    case 'number':
      ensure(11);
      if (Number.isInteger(v)) {
        buf[pos++] = 24;
        int64(v);
      } else {
        buf[pos++] = 33;
        buf.writeDoubleLE(v, pos);
        pos += 8;
      }
      return;
    case 'boolean':
      ensure(2);
      buf[pos++] = 16;
      buf[pos++] = v ? 1 : 0;
      return;
  }
  if (v instanceof Uint8Array) {
    ensure(6 + v.length);
    buf[pos++] = 58;
    varint(v.length);
    buf.set(v, pos);
    pos += v.length;
  } else if (Array.isArray(v)) {
    const at = begin(42);
    for (const x of v as readonly (AttributeValue | null | undefined)[]) {
      const inner = begin(10);
      anyValue(x);
      end(inner);
    }
    end(at);
  }
  // anything else: an empty AnyValue, as the SDK's serializer writes it
}

/** Repeated KeyValue field `tag` of `attributes`. */
function keyValues(tag: number, attributes: Attributes): void {
  for (const key in attributes) {
    if (!Object.prototype.hasOwnProperty.call(attributes, key)) continue;
    const kv = begin(tag);
    stringField(10, key);
    const value = begin(18);
    anyValue(attributes[key]);
    end(value);
    end(kv);
  }
}

function event(e: TimedEvent): void {
  const at = begin(90);
  ensure(10);
  buf[pos++] = 9;
  hrTime(e.time);
  stringField(18, e.name);
  if (e.attributes !== undefined) keyValues(26, e.attributes);
  ensure(6);
  buf[pos++] = 32;
  varint(e.droppedAttributesCount ?? 0);
  end(at);
}

function link(l: Link): void {
  const at = begin(106);
  ensure(2 + 2 * 64);
  buf[pos++] = 10;
  hexId(l.context.traceId);
  buf[pos++] = 18;
  hexId(l.context.spanId);
  const state = l.context.traceState?.serialize();
  if (state !== undefined) {
    stringField(26, state);
  }
  if (l.attributes !== undefined) keyValues(34, l.attributes);
  ensure(11);
  buf[pos++] = 40;
  varint(l.droppedAttributesCount ?? 0);
  buf[pos++] = 53;
  fixed32(flagsOf(l.context.traceFlags, l.context.isRemote));
  end(at);
}

function flagsOf(traceFlags: number, isRemote: boolean | undefined): number {
  const flags = (traceFlags & 0xff) | SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK;
  return isRemote === true ? flags | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK : flags;
}

function span(s: ReadableSpan): void {
  const at = begin(18);
  const ctx = s.spanContext();
  const parent = s.parentSpanContext;
  // ids (hex text of at most 64 characters each), tags, kind and times
  ensure(3 * 34 + 1 + 11 + 18);
  buf[pos++] = 10;
  hexId(ctx.traceId);
  buf[pos++] = 18;
  hexId(ctx.spanId);
  const state = ctx.traceState?.serialize();
  if (state !== undefined) {
    stringField(26, state);
  }
  if (parent !== undefined && parent.spanId !== '') {
    ensure(34);
    buf[pos++] = 34;
    hexId(parent.spanId);
  }
  stringField(42, s.name);
  ensure(11 + 18);
  buf[pos++] = 48;
  int32(s.kind + 1);
  buf[pos++] = 57;
  hrTime(s.startTime);
  buf[pos++] = 65;
  hrTime(s.endTime);
  keyValues(74, s.attributes);
  ensure(6);
  buf[pos++] = 80;
  varint(s.droppedAttributesCount);
  for (const e of s.events) event(e);
  ensure(6);
  buf[pos++] = 96;
  varint(s.droppedEventsCount);
  for (const l of s.links) link(l);
  ensure(6);
  buf[pos++] = 112;
  varint(s.droppedLinksCount);
  const status = begin(122);
  if (s.status.message !== undefined) {
    stringField(18, s.status.message);
  }
  ensure(11);
  buf[pos++] = 24;
  int32(s.status.code);
  end(status);
  // reserved after the status's end, which may have moved its body to a longer length
  ensure(6);
  buf[pos++] = 133;
  buf[pos++] = 1;
  fixed32(flagsOf(ctx.traceFlags, parent?.isRemote));
  end(at);
}

function scope(sc: InstrumentationScope): void {
  const at = begin(10);
  stringField(10, sc.name);
  if (sc.version !== undefined) {
    stringField(18, sc.version);
  }
  end(at);
}

/** Groups spans by resource, then by instrumentation scope, in first-seen order. */
function groups(spans: readonly ReadableSpan[]): Map<Resource, Map<string, ReadableSpan[]>> {
  const byResource = new Map<Resource, Map<string, ReadableSpan[]>>();
  for (const s of spans) {
    let byScope = byResource.get(s.resource);
    if (byScope === undefined) {
      byScope = new Map();
      byResource.set(s.resource, byScope);
    }
    const sc = s.instrumentationScope;
    const key = `${sc.name}@${sc.version ?? ''}:${sc.schemaUrl ?? ''}`;
    const list = byScope.get(key);
    if (list === undefined) byScope.set(key, [s]);
    else list.push(s);
  }
  return byResource;
}

/** Encodes OTLP `ExportTraceServiceRequest`s. */
export class OtlpTraceEncoder {
  encode(spans: readonly ReadableSpan[]): Uint8Array {
    pos = 0;
    for (const [resource, byScope] of groups(spans)) {
      const rs = begin(10);
      const res = begin(10);
      keyValues(10, resource.attributes);
      ensure(2);
      buf[pos++] = 16;
      buf[pos++] = 0;
      end(res);
      for (const list of byScope.values()) {
        const first = list[0];
        if (first === undefined) continue;
        const ss = begin(18);
        scope(first.instrumentationScope);
        for (const s of list) span(s);
        const schemaUrl = first.instrumentationScope.schemaUrl;
        if (schemaUrl !== undefined) {
          stringField(26, schemaUrl);
        }
        end(ss);
      }
      const schemaUrl = resource.schemaUrl;
      if (schemaUrl !== undefined && schemaUrl !== '') {
        stringField(26, schemaUrl);
      }
      end(rs);
    }
    const out = Buffer.allocUnsafe(pos);
    buf.copy(out, 0, 0, pos);
    pos = 0;
    // a rare large batch does not keep its buffer for the life of the process
    if (buf.length > KEPT_BUFFER_BYTES) buf = rawWrites(Buffer.allocUnsafe(4096));
    return out;
  }
}

/** The SDK's serializer interface, writing with {@link OtlpTraceEncoder}. */
function otlpProtoTraceSerializer(): ISerializer<ReadableSpan[], IExportTraceServiceResponse> {
  const encoder = new OtlpTraceEncoder();
  return {
    serializeRequest: (spans) => encoder.encode(spans),
    // a response is a few bytes at most (a partial success): the SDK's decoder is kept
    deserializeResponse: (data) => ProtobufTraceSerializer.deserializeResponse(data),
  };
}

/**
 * The SDK's headers of an export, worked out on the first export and then reused. The SDK
 * merges its required, the OTEL_EXPORTER_OTLP_*_HEADERS and the configured headers anew for
 * every export (an async function of three awaits, object spreads and a validation pass:
 * some 0.4 M instructions an export, measured under callgrind); ours are static (the
 * configured ones are a record, the variables are read once at start), so the result is the
 * same every time. The SDK's transport then sets `User-Agent` on the object it gets, the same
 * value each time. A failed resolution is not kept: the next export tries again.
 */
function headersOnce(
  merge: () => Promise<Record<string, string>>,
): () => Promise<Record<string, string>> {
  let resolved: Promise<Record<string, string>> | undefined;
  return () => {
    if (resolved === undefined) {
      const p = merge();
      resolved = p;
      p.catch(() => {
        if (resolved === p) resolved = undefined;
      });
    }
    return resolved;
  };
}

/**
 * The OTLP/HTTP protobuf trace exporter: the SDK's `exporter-trace-otlp-proto` with
 * {@link OtlpTraceEncoder} as its serializer (the same construction as that package's
 * `OTLPTraceExporter`, whose serializer cannot be passed in).
 */
export class OtlpProtoTraceExporter
  extends OTLPExporterBase<ReadableSpan[]>
  implements SpanExporter
{
  constructor(config: OTLPExporterNodeConfigBase = {}) {
    const http = convertLegacyHttpOptions(config, 'TRACES', 'v1/traces', {
      'Content-Type': 'application/x-protobuf',
    });
    super(
      createOtlpHttpExportDelegate(
        { ...http, headers: headersOnce(http.headers) },
        otlpProtoTraceSerializer(),
      ),
    );
  }
}
