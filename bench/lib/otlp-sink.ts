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
 * format shows. Protobuf bodies (Content-Type application/x-protobuf) are
 * counted in requests and bytes only.
 *
 * Usage: node dist/bench/lib/otlp-sink.js <port>   (with an IPC channel)
 * IPC: sends {type:'ready', port} once listening; answers {type:'stats', seq} with its counters.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
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
  const doc = JSON.parse(text) as OtlpJson;
  let n = 0;
  for (const rs of doc.resourceSpans ?? []) {
    for (const ss of rs.scopeSpans ?? []) n += ss.spans?.length ?? 0;
  }
  return n;
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
