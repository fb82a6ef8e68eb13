/**
 * A preload (`node --import file://…/dist/bench/lib/http-posts.js …`) for
 * `instructions.ts --http-posts`: on each SIGUSR2 the process POSTs one 2 000-byte body to
 * `BENCH_HTTP_POSTS_URL` (an `http://host:port/path` sink), through the transport
 * `BENCH_HTTP_POSTS_TRANSPORT` names:
 *
 * - `http`: `node:http` `request` on a keep-alive `Agent` (what the SDK's OTLP/HTTP exporters
 *   use);
 * - `undici`: one undici `Pool` (keep-alive), `pool.request`;
 * - `net`: a plain `net.Socket` kept open, the request head and body written as one
 *   pre-encoded Buffer, the answer read from `'data'` up to the end of its head (the sink
 *   answers with no body);
 * - `worker`: a `worker_threads` worker that makes the `node:http` POST; the main thread only
 *   posts it the body.
 *
 * The question it answers: does a process that has made HTTP client requests run its later
 * uplinks dearer, and through which transport (bench/history/tracing.md, "The HTTP client's
 * lasting cost, looked for again").
 * No tracing is involved.
 */
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';

const url = process.env.BENCH_HTTP_POSTS_URL;
const transport = process.env.BENCH_HTTP_POSTS_TRANSPORT ?? 'http';
const BODY = Buffer.alloc(2000, 0x61);

function fail(err: unknown): void {
  process.stderr.write(`http-posts: ${err instanceof Error ? err.message : String(err)}\n`);
}

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { Agent, request } = require('node:http');
const agent = new Agent({ keepAlive: true });
parentPort.on('message', ({ url, body }) => {
  const req = request(url, { method: 'POST', agent, headers: {
    'content-type': 'application/octet-stream', 'content-length': body.byteLength } }, (res) => {
    res.resume();
    res.on('end', () => parentPort.postMessage('done'));
  });
  req.on('error', (e) => parentPort.postMessage(String(e)));
  req.end(Buffer.from(body));
});
`;

type Post = () => void;

async function makePost(target: URL): Promise<Post> {
  switch (transport) {
    case 'http': {
      const agent = new Agent({ keepAlive: true });
      return () => {
        const req = request(
          target,
          {
            method: 'POST',
            agent,
            headers: {
              'content-type': 'application/octet-stream',
              'content-length': BODY.length,
            },
          },
          (res) => res.resume(),
        );
        req.on('error', fail);
        req.end(BODY);
      };
    }
    case 'undici': {
      const { Pool } = await import('undici');
      const pool = new Pool(target.origin, { connections: 1 });
      return () => {
        pool
          .request({
            path: target.pathname,
            method: 'POST',
            headers: { 'content-type': 'application/octet-stream' },
            body: BODY,
          })
          .then((r) => r.body.dump())
          .catch(fail);
      };
    }
    case 'net': {
      const head = Buffer.from(
        `POST ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\n` +
          `Content-Type: application/octet-stream\r\nContent-Length: ${BODY.length}\r\n\r\n`,
        'latin1',
      );
      const wire = Buffer.alloc(head.length + BODY.length);
      head.copy(wire, 0);
      BODY.copy(wire, head.length);
      let socket: Socket | undefined;
      const open = (): Socket => {
        const s = connect(Number(target.port), target.hostname);
        s.setNoDelay(true);
        s.on('data', () => undefined);
        s.on('error', fail);
        s.on('close', () => {
          if (socket === s) socket = undefined;
        });
        return s;
      };
      return () => {
        socket ??= open();
        socket.write(wire);
      };
    }
    case 'worker': {
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      worker.unref();
      worker.on('message', (m: unknown) => {
        if (m !== 'done') fail(m);
      });
      return () => worker.postMessage({ url: target.href, body: BODY });
    }
    default:
      throw new Error(`BENCH_HTTP_POSTS_TRANSPORT=${transport}: http, undici, net or worker`);
  }
}

if (url !== undefined) {
  const post = await makePost(new URL(url));
  process.on('SIGUSR2', post);
}
