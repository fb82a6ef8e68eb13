/**
 * Child process of bench/uplink.ts: the HTTP endpoint of the HTTP-route variant, in a process
 * of its own so its CPU is measured apart from coap-edge and the load generator. It plays
 * the platform of that variant: every POST is read to the end and answered `200` with
 * `{"id":<the request's JSON id>,"code":200,"data":null}` (`application/json`), the body the
 * MQTT platform stand-in sends as its reply, so the device gets the same 2.04 payload in the
 * MQTT and the HTTP variants and the load generator checks it the same way.
 *
 * The id is taken from the start of the body with a regular expression (the measurepoint
 * body starts with `{"id":"…"`); a body without one is answered `400`.
 *
 * Usage: node dist/bench/lib/uplink-http-sink.js <port>   (with an IPC channel)
 * IPC: sends {type:'ready', port} once listening; answers {type:'stats', seq} with its counters.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || process.send === undefined) {
  process.stderr.write('usage: node uplink-http-sink.js <port> (as a child with IPC)\n');
  process.exit(2);
}
const send = process.send.bind(process);
const ID = /^\{"id":"([^"\\]+)"/;

let requests = 0;
let bytesIn = 0;
let answered200 = 0;
let noId = 0;
const methods: Record<string, number> = {};
const headerSeen = { productKey: 0, deviceKey: 0, traceparent: 0 };

function handle(req: IncomingMessage, res: ServerResponse): void {
  requests++;
  methods[req.method ?? '?'] = (methods[req.method ?? '?'] ?? 0) + 1;
  if (req.headers['x-device-product-key'] !== undefined) headerSeen.productKey++;
  if (req.headers['x-device-key'] !== undefined) headerSeen.deviceKey++;
  if (req.headers.traceparent !== undefined) headerSeen.traceparent++;
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    bytesIn += body.length;
    const m = ID.exec(body.toString('utf8', 0, Math.min(body.length, 96)));
    if (m?.[1] === undefined) {
      noId++;
      res.writeHead(400, { 'content-type': 'application/json', 'content-length': 2 });
      res.end('{}');
      return;
    }
    const reply = `{"id":"${m[1]}","code":200,"data":null}`;
    answered200++;
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(reply),
    });
    res.end(reply);
  });
}

const server = createServer({ keepAliveTimeout: 60_000 }, handle);
// Nagle off on every accepted socket: answers leave at once
let connections = 0;
let connectionsOpened = 0;
server.on('connection', (s) => {
  s.setNoDelay(true);
  connections++;
  connectionsOpened++;
  s.once('close', () => connections--);
});
server.listen(port, '127.0.0.1', () => send({ type: 'ready', port }));
server.on('error', (err) => {
  process.stderr.write(`http-sink: ${err.message}\n`);
  process.exit(1);
});

process.on('message', (m: { type?: unknown; seq?: unknown }) => {
  if (m.type === 'stats') {
    send({
      type: 'stats',
      seq: m.seq,
      requests,
      bytesIn,
      answered200,
      noId,
      methods,
      headerSeen,
      connections,
      connectionsOpened,
    });
  }
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
