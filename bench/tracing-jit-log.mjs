#!/usr/bin/env node
/**
 * V8's JIT log of a coap-edge process whose tracing alternates between off and a sampling
 * ratio, outside valgrind (bench/history/tracing.md, "i11-trace1pct"): the uplink-reply rig of
 * `instructions.js --alternate` (Mosquitto, the platform stand-in, the OTLP sink, four
 * devices; bench/lib/tracing-switch.ts between segments, with a full GC before each unless
 * `NOGC=1`), coap-edge started with the given node flags and its stdout and stderr written to
 * `<log>`, with `### segment r<round> <variant>` and `### end …` lines around each segment.
 * `--summary <log>` prints, per segment, the TurboFan compiles (count, ms as V8 reports
 * them) and the deopts (reason and function).
 *
 *   node bench/tracing-jit-log.mjs <build dir> <log> <variants, e.g. off,1> <rounds> <ops> \
 *     <rate per s> <warm-up ops> [node flags, e.g. --trace-opt --trace-deopt --trace-gc]
 *   node bench/tracing-jit-log.mjs --summary <log>
 *
 * Needs the build's `dist/` (bench included). Plain Node, not compiled.
 */
import { appendFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

if (process.argv[2] === '--summary') {
  summary(readFileSync(process.argv[3], 'utf8'));
  process.exit(0);
}
const [rootArg, logFile, list, roundsArg, opsArg, rateArg, warmArg, ...flags] =
  process.argv.slice(2);
if (warmArg === undefined) {
  process.stderr.write(
    'usage: tracing-jit-log.mjs <build> <log> <variants> <rounds> <ops> <rate> <warmup> [node flags]\n',
  );
  process.exit(2);
}
const root = resolve(rootArg);
const imp = (p) => import(pathToFileURL(join(root, p)).href);
const { ContentFormat } = await imp('dist/src/coap/constants.js');
const { CipherSuite } = await imp('dist/src/dtls/constants.js');
const { derivePsk } = await imp('dist/src/enos/index.js');
const { CoapDtlsClient } = await imp('dist/src/tools/coap-client.js');
const { generateDevices } = await imp('dist/src/tools/load.js');
const { connect } = await imp('dist/bench/lib/client.js');
const { freeTcpPort, installCleanup, startCoapEdge, stopAll } = await imp(
  'dist/bench/lib/servers.js',
);
const { measurepointBody } = await imp('dist/bench/lib/uplink-load.js');
const { IpcChild, startMosquitto } = await imp('dist/bench/lib/uplink-procs.js');

installCleanup();
const tmp = mkdtempSync(join(tmpdir(), 'tracing-jit-log-'));
const broker = await startMosquitto();
await IpcChild.start('platform', 'uplink-platform', [broker.url], 120_000);
const sinkPort = await freeTcpPort();
const sink = await IpcChild.start('spanSink', 'otlp-sink', [String(sinkPort)], 120_000);
const n = 4;
const generated = generateDevices(n, 'benchPK', 'bench-secret');
const devicesFile = join(tmp, 'devices.json');
writeFileSync(devicesFile, `${JSON.stringify(generated)}\n`);
const devices = generated.devices.map((d) => ({
  identity: `${d.productKey},${d.deviceKey},2,86400`,
  psk: derivePsk(d.deviceSecret),
  path: `/topic/sys/${d.productKey}/${d.deviceKey}/thing/measurepoint/post`,
}));
const switchFile = join(tmp, 'switch.json');
process.env.BENCH_TRACING_SWITCH_FILE = switchFile;
writeFileSync(logFile, '');
const server = await startCoapEdge(
  {
    devicesFile,
    cliPath: join(root, 'dist/src/cli.js'),
    // the server's whole output to the log (the bench keeps only a tail)
    launcher: ['sh', '-c', `exec "$@" >>'${logFile}' 2>&1`, 'sh'],
    extraArgs: [
      '--mqtt-url',
      broker.url,
      '--otlp-endpoint',
      `http://127.0.0.1:${sinkPort}/v1/traces`,
      '--trace-sample-ratio',
      '0.01',
    ],
    nodeFlags: [
      '--expose-gc',
      `--import=${pathToFileURL(join(root, 'dist/bench/lib/tracing-switch.js')).href}`,
      ...flags,
    ],
  },
  devices[0],
);
const clients = [];
for (const d of devices) {
  const dtls = await connect(server.target, d, {
    suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
    handshakeTimeoutMs: 60_000,
    retransmitTimeoutMs: 20_000,
  });
  clients.push(CoapDtlsClient.over(dtls));
}
let bad = 0;
const op = async (i) => {
  const k = i % n;
  const id = `jit-${i}`;
  const r = await clients[k].request({
    method: 'POST',
    path: devices[k].path,
    payload: measurepointBody(id),
    contentFormat: ContentFormat.JSON,
    timeoutMs: 60_000,
    ackTimeoutMs: 20_000,
    followBlocks: false,
  });
  if (r.payload.toString('utf8') !== `{"id":"${id}","code":200,"data":null}`) bad++;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const mark = (s) => appendFileSync(logFile, `\n### ${s}\n`);
let switches = 0;
async function switchTo(cmd) {
  writeFileSync(switchFile, JSON.stringify(cmd));
  switches++;
  process.kill(server.pid, 'SIGUSR2');
  while (!readFileSync(logFile, 'utf8').includes(`tracing-switch: ${switches} done`))
    await sleep(20);
}
const spans = async () => Number((await sink.request({ type: 'stats' })).spans ?? 0);

let i = 0;
mark('warmup');
for (let w = 0; w < Number(warmArg); w++) await op(i++);
await switchTo({ flush: true });
const variants = list.split(',');
const gap = 1000 / Number(rateArg);
const out = [];
for (let r = 0; r < Number(roundsArg); r++) {
  for (let v = 0; v < variants.length; v++) {
    const mode = variants[(v + r) % variants.length];
    await switchTo({ gc: process.env.NOGC !== '1', mode });
    const before = await spans();
    mark(`segment r${r} ${mode}`);
    const t0 = performance.now();
    const pending = [];
    for (let k = 0; k < Number(opsArg); k++) {
      const wait = t0 + k * gap - performance.now();
      if (wait > 0) await sleep(wait);
      pending.push(op(i++));
    }
    await Promise.all(pending);
    await switchTo({ flush: true });
    const got = (await spans()) - before;
    mark(`end r${r} ${mode} spans ${got}`);
    out.push({ round: r, mode, spans: got });
  }
}
process.stdout.write(`${JSON.stringify({ segments: out, badReplies: bad })}\n`);
await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
broker.cleanup();
await stopAll();
process.exit(0);

function summary(text) {
  let seg;
  const rows = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('### segment')) {
      seg = { name: line.slice(4), compiles: 0, ms: 0, deopts: [] };
      rows.push(seg);
    } else if (line.startsWith('### end')) seg = undefined;
    else if (seg === undefined) continue;
    else if (line.includes('completed compiling')) {
      const t = /took ([\d.]+), ([\d.]+), ([\d.]+) ms/.exec(line);
      seg.compiles++;
      if (t !== null) seg.ms += Number(t[1]) + Number(t[2]) + Number(t[3]);
    } else if (line.startsWith('[bailout')) {
      const reason = /reason: ([^)]*)\)/.exec(line)?.[1] ?? '?';
      const fn = /<JSFunction ([^ >]*)/.exec(line)?.[1] ?? '?';
      seg.deopts.push(`${fn === '(sfi' ? '<anonymous>' : fn} (${reason})`);
    }
  }
  for (const s of rows) {
    process.stdout.write(
      `${s.name}: ${s.compiles} compiles, ${s.ms.toFixed(1)} ms, ${s.deopts.length} deopts\n`,
    );
    for (const d of s.deopts) process.stdout.write(`    ${d}\n`);
  }
}
