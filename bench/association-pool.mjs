#!/usr/bin/env node
// Memory per DTLS association of the DtlsServer alone, and how much of it is Node's Buffer
// pool (bench/history/handshake.md, "Association memory and the Buffer pool"). Plain Node, like
// ab.mjs: it runs a build's dist/ (--build <dir>, default this checkout), so two builds can be
// compared with the same script.
//
//   node --expose-gc bench/association-pool.mjs [--build <dir>] [--n 3000] [--concurrency 16]
//     [--noise 0] [--send 1|0]
//
// The server (this process) answers over loopback UDP; the clients (DtlsClient of the same
// build) run in a child process, so their buffers are not counted. --concurrency handshakes
// are in flight at once, so the server's allocations for one handshake (flights, cookies,
// records) fall between another's; --noise <bytes> adds that many bytes of short-lived pool
// allocations (Buffer.from of 64-byte strings) per handshake, as a gateway's other traffic
// would. Each association then sends one application record (echoed; --send 0: none, so the
// server keeps its last flight for retransmission). Before and after: gc()
// three times, process.memoryUsage(). Prints one JSON object: bytes per association of
// heapUsed, external, arrayBuffers and RSS, and the pool slabs and slices the associations hold.
import { fork } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const a = process.argv.slice(2);
const opt = (k, d) => {
  const i = a.indexOf('--' + k);
  return i >= 0 ? a[i + 1] : d;
};
const build = resolve(opt('build', new URL('..', import.meta.url).pathname));
const mod = (p) => import(pathToFileURL(`${build}/dist/${p}`).href);
const PSK = Buffer.from('0123456789abcdef');
const IDENTITY = 'benchPK,device001,2,3600';

if (process.env.ASSOC_POOL_CHILD === '1') {
  // the clients: connect, send one record, wait for its echo, keep the association open
  const { DtlsClient } = await mod('src/dtls/client.js');
  const port = Number(opt('port'));
  const n = Number(opt('n', '3000'));
  const conc = Number(opt('concurrency', '16'));
  const clients = [];
  let next = 0;
  const one = async () => {
    while (next < n) {
      next++;
      const c = await DtlsClient.connect({ host: '127.0.0.1', port, identity: IDENTITY, psk: PSK });
      if (opt('send', '1') === '1') {
        const echoed = new Promise((r) => c.once('message', r));
        c.send(Buffer.from('hello'));
        await echoed;
      }
      clients.push(c);
    }
  };
  await Promise.all(Array.from({ length: conc }, one));
  process.send({ type: 'done', n: clients.length });
  process.on('message', async () => {
    process.exit(0);
  });
} else {
  const gc = globalThis.gc;
  if (gc === undefined) throw new Error('run with node --expose-gc');
  const n = Number(opt('n', '3000'));
  const noise = Number(opt('noise', '0'));
  const { DtlsServer } = await mod('src/dtls/server.js');
  const { loadConfig } = await mod('src/config/load.js');
  const { dtlsServerSettings } = await mod('src/gateway/component-settings.js');
  const socket = createSocket('udp4');
  await new Promise((r) => socket.bind(0, '127.0.0.1', r));
  const noiseBlock = 'x'.repeat(64);
  let sink;
  const server = new DtlsServer({
    ...dtlsServerSettings(loadConfig()),
    send: (data, p, address) => socket.send(data, p, address),
    handler: {
      resolvePsk: (identity) => {
        for (let i = 0; i < noise; i += 64) sink = Buffer.from(noiseBlock);
        return identity.toString() === IDENTITY
          ? { ok: true, psk: Buffer.from(PSK), principal: 'device001' }
          : { ok: false, alert: 'unknown_psk_identity', reason: 'unknown-device' };
      },
      onData: (assoc, data) => void assoc.send(data),
      onUnknownRecord: () => undefined,
    },
  });
  socket.on('message', (msg, rinfo) => server.handleDatagram(msg, rinfo.address, rinfo.port));
  const turn = () => new Promise((r) => setImmediate(r));
  const sample = async () => {
    for (let i = 0; i < 3; i++) {
      await turn();
      gc();
    }
    return process.memoryUsage();
  };
  // warm-up: a few associations made and closed by a first child
  const before = await sample();
  const child = fork(
    new URL(import.meta.url).pathname,
    [...a, '--port', String(socket.address().port)],
    {
      env: { ...process.env, ASSOC_POOL_CHILD: '1' },
    },
  );
  const done = await new Promise((r) => child.once('message', r));
  const after = await sample();
  // what the associations hold from the pool: slices of Buffer.poolSize slabs
  const slabs = new Set();
  let slices = 0;
  const owned = new Set();
  let ownedBytes = 0;
  const seen = new Set();
  const walk = (v, depth) => {
    if (v === null || typeof v !== 'object' || seen.has(v) || depth > 12) return;
    seen.add(v);
    if (ArrayBuffer.isView(v)) {
      if (v.buffer.byteLength === Buffer.poolSize && v.byteLength < Buffer.poolSize) {
        slices++;
        slabs.add(v.buffer);
      } else if (!owned.has(v.buffer)) {
        owned.add(v.buffer);
        ownedBytes += v.buffer.byteLength;
      }
      return;
    }
    for (const k of Object.keys(v)) if (k !== 'host') walk(v[k], depth + 1);
  };
  let count = 0;
  for (const x of server.listAssociations()) {
    count++;
    walk(x, 0);
  }
  const per = (k) => Math.round((after[k] - before[k]) / count);
  process.stdout.write(
    JSON.stringify({
      build,
      n,
      associations: count,
      clientsDone: done.n,
      noiseBytesPerHandshake: noise,
      bytesPerAssociation: {
        heapUsed: per('heapUsed'),
        external: per('external'),
        arrayBuffers: per('arrayBuffers'),
        rss: per('rss'),
      },
      poolSlicesHeld: slices,
      poolSlabsHeld: slabs.size,
      poolSlabBytesPerAssociation: Math.round((slabs.size * Buffer.poolSize) / count),
      // ArrayBuffers of their own (not the pool) reachable from the associations, shared
      // constants counted once
      ownArrayBufferBytesPerAssociation: Math.round(ownedBytes / count),
      sinkLength: sink?.length ?? 0,
    }) + '\n',
  );
  child.send('stop');
  server.close();
  socket.close();
}
