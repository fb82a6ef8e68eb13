/**
 * Child process of bench/uplink.ts: an OTLP/HTTP traces endpoint that accepts and discards
 * what coap-edge's exporter sends, in a process of its own so its CPU is measured apart. It
 * counts requests, body bytes as received (after any Content-Encoding) and spans, and
 * answers `200 {}` (`application/json`, an empty ExportTraceServiceResponse) — or an empty
 * `application/x-protobuf` body when the request was protobuf.
 *
 * Spans are counted without parsing: in OTLP JSON every span object carries exactly one
 * `"spanId":"…"` key (the parent's is `"parentSpanId"`). Span links also carry a `"spanId"`:
 * a body with a non-empty `"links":[{` is parsed in full instead. The first few JSON bodies
 * are parsed too and the two counts compared (`countCheck`), so a change of the exporter's
 * format shows. Protobuf bodies (Content-Type application/x-protobuf, coap-edge's default
 * http/protobuf) are counted by walking the wire format three levels deep
 * (ExportTraceServiceRequest.resource_spans = 1 → ResourceSpans.scope_spans = 2 →
 * ScopeSpans.spans = 2) without decoding the spans; the first few are also decoded in full
 * with the exporter's own generated schema (@opentelemetry/otlp-transformer, as
 * test/helpers/otlp.ts does) and both counts kept in `countCheck`.
 *
 * Usage: node dist/bench/lib/otlp-sink.js <port>   (with an IPC channel)
 * IPC: sends {type:'ready', port} once listening; answers {type:'stats', seq} with its counters.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { gunzipSync, inflateSync } from 'node:zlib';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || process.send === undefined) {
  process.stderr.write('usage: node otlp-sink.js <port> (as a child with IPC)\n');
  process.exit(2);
}
const send = process.send.bind(process);

const SPAN_ID = Buffer.from('"spanId":"');
const LINKS = Buffer.from('"links":[{');
const CHECKS = 5;

let requests = 0;
let wireBytes = 0;
let bodyBytes = 0;
let spans = 0;
let protobufRequests = 0;
let otherRequests = 0;
let decodeErrors = 0;
let linkedBodies = 0;
const paths: Record<string, number> = {};
const countCheck: { counted: number; parsed: number }[] = [];

function countOccurrences(buf: Buffer, needle: Buffer): number {
  let n = 0;
  let at = buf.indexOf(needle);
  while (at >= 0) {
    n++;
    at = buf.indexOf(needle, at + needle.length);
  }
  return n;
}

interface OtlpJson {
  resourceSpans?: { scopeSpans?: { spans?: unknown[] }[] }[];
}

function parsedSpans(text: string): number {
  return spansOf(JSON.parse(text) as OtlpJson);
}

/** Spans in an OTLP document (JSON mapping). */
function spansOf(doc: OtlpJson): number {
  let n = 0;
  for (const rs of doc.resourceSpans ?? []) {
    for (const ss of rs.scopeSpans ?? []) n += ss.spans?.length ?? 0;
  }
  return n;
}

/** Reads a varint at `at`: [value, next offset]; undefined past the end or too long. */
function varint(b: Buffer, at: number): [number, number] | undefined {
  let v = 0;
  let mul = 1;
  for (let i = at; i < b.length && i < at + 8; i++) {
    const x = b[i]!;
    v += (x & 0x7f) * mul;
    if (x < 0x80) return [v, i + 1];
    mul *= 128;
  }
  return undefined;
}

/**
 * Calls `each(start, end)` for every length-delimited field numbered `field` in
 * b[start, end); false when the bytes are not a well-formed message.
 */
function lenFields(
  b: Buffer,
  start: number,
  end: number,
  field: number,
  each: (s: number, e: number) => boolean,
): boolean {
  let at = start;
  while (at < end) {
    const tag = varint(b, at);
    if (tag === undefined) return false;
    at = tag[1];
    const wire = tag[0] % 8;
    if (wire === 0) {
      const v = varint(b, at);
      if (v === undefined) return false;
      at = v[1];
    } else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      const len = varint(b, at);
      if (len === undefined || len[1] + len[0] > end) return false;
      if (Math.floor(tag[0] / 8) === field && !each(len[1], len[1] + len[0])) return false;
      at = len[1] + len[0];
    } else return false;
  }
  return at === end;
}

/** Spans in an OTLP protobuf ExportTraceServiceRequest, or undefined when malformed. */
function protobufSpans(b: Buffer): number | undefined {
  let n = 0;
  const ok = lenFields(b, 0, b.length, 1, (rs, re) =>
    lenFields(b, rs, re, 2, (ss, se) =>
      lenFields(b, ss, se, 2, () => {
        n++;
        return true;
      }),
    ),
  );
  return ok ? n : undefined;
}

interface ProtoType {
  decode(bytes: Uint8Array): unknown;
  toObject(message: unknown, options: Record<string, unknown>): OtlpJson;
}

/** The full decode of the exporter's own schema, for the first few bodies (countCheck). */
function decodedProtobufSpans(b: Buffer): number {
  const root = createRequire(import.meta.url)(
    '@opentelemetry/otlp-transformer/build/src/generated/root.js',
  ) as {
    opentelemetry: {
      proto: { collector: { trace: { v1: { ExportTraceServiceRequest: ProtoType } } } };
    };
  };
  const t = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
  return spansOf(t.toObject(t.decode(b), { longs: String, bytes: String }));
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  requests++;
  paths[req.url ?? '?'] = (paths[req.url ?? '?'] ?? 0) + 1;
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const raw = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    wireBytes += raw.length;
    const type = req.headers['content-type'] ?? '';
    const encoding = req.headers['content-encoding'] ?? '';
    let body = raw;
    try {
      if (encoding === 'gzip') body = gunzipSync(raw);
      else if (encoding === 'deflate') body = inflateSync(raw);
    } catch {
      decodeErrors++;
    }
    bodyBytes += body.length;
    if (type.includes('json')) {
      const check = countCheck.length < CHECKS;
      const hasLinks = body.includes(LINKS);
      const counted = countOccurrences(body, SPAN_ID);
      let parsed: number | undefined;
      if (check || hasLinks) {
        try {
          parsed = parsedSpans(body.toString('utf8'));
        } catch {
          decodeErrors++;
        }
      }
      if (check && parsed !== undefined) countCheck.push({ counted, parsed });
      if (hasLinks) linkedBodies++;
      spans += hasLinks && parsed !== undefined ? parsed : counted;
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
      res.end('{}');
    } else if (type.includes('protobuf')) {
      protobufRequests++;
      const counted = protobufSpans(body);
      if (counted === undefined) decodeErrors++;
      else spans += counted;
      if (countCheck.length < CHECKS && counted !== undefined) {
        try {
          countCheck.push({ counted, parsed: decodedProtobufSpans(body) });
        } catch {
          decodeErrors++;
        }
      }
      res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': 0 });
      res.end();
    } else {
      otherRequests++;
      res.writeHead(200, { 'content-length': 0 });
      res.end();
    }
  });
}

const server = createServer({ keepAliveTimeout: 60_000 }, handle);
server.on('connection', (s) => s.setNoDelay(true));
server.listen(port, '127.0.0.1', () => send({ type: 'ready', port }));
server.on('error', (err) => {
  process.stderr.write(`otlp-sink: ${err.message}\n`);
  process.exit(1);
});

process.on('message', (m: { type?: unknown; seq?: unknown }) => {
  if (m.type === 'stats') {
    send({
      type: 'stats',
      seq: m.seq,
      requests,
      wireBytes,
      bodyBytes,
      spans,
      protobufRequests,
      otherRequests,
      decodeErrors,
      linkedBodies,
      paths,
      countCheck,
    });
  }
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
