#!/usr/bin/env node
// A time-based view of one server under the handshake bench's load (bench/history/handshake.md,
// "The
// handshake in time"): starts coap-edge, libcoap or the handshake floor as dtls-handshakes.js
// does, runs its load (16 connectors, connect → close_notify), and over the measured window
// attaches a tool to the server's pid:
//   perf    `perf record -e cpu-clock -F 2000 -g -p <pid>` into <out>/perf-<server>.data
//   strace  `strace -c -f -p <pid>` into <out>/strace-<server>.txt (system calls per handshake)
//   signal  SIGUSR2 at the window's start and end (for a preload that counts, e.g. async hooks)
// and prints the window's handshakes and server CPU as one JSON line (then the server's output
// tail). Node flags after `--` go to the server (coap-edge, floor), e.g. `--perf-basic-prof`.
//
//   node bench/handshake-view.mjs --server coap-edge|libcoap|floor [--tool perf|strace|signal]
//     [--warmup 5] [--duration 5] [--concurrency 16] [--rate n] [--out /tmp] [-- node flags]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const argv = process.argv.slice(2);
const dash = argv.indexOf('--');
const own = dash >= 0 ? argv.slice(0, dash) : argv;
const nodeFlags = dash >= 0 ? argv.slice(dash + 1) : [];
const opt = (k, d) => {
  const i = own.indexOf(`--${k}`);
  return i >= 0 ? own[i + 1] : d;
};
const which = opt('server', 'coap-edge');
const tool = opt('tool', 'none');
const out = opt('out', tmpdir());
const lib = (p) => import(new URL(`../dist/bench/lib/${p}`, import.meta.url).href);
const { withClones, SUITES } = await lib('client.js');
const servers = await lib('servers.js');
const { runHandshakes, runPingPong } = await lib('handshake-load.js');
const { handshakeCensus } = await lib('handshake-census.js');

const dir = mkdtempSync(join(tmpdir(), 'handshake-view-'));
const devices = new URL('../deploy/examples/devices.json', import.meta.url).pathname;
const concurrency = Number(opt('concurrency', '16'));
const { file, creds } = withClones(devices, 'device001', concurrency, dir);
let server;
let steps;
if (which === 'coap-edge')
  server = await servers.startCoapEdge({ devicesFile: file, nodeFlags }, creds);
else if (which === 'libcoap') server = await servers.startLibcoap(creds.psk, creds);
else if (which === 'floor') {
  steps = (await handshakeCensus(file, creds, SUITES.ccm8)).steps;
  const scriptFile = join(dir, 'script.json');
  writeFileSync(scriptFile, JSON.stringify(steps));
  server = await servers.startHandshakeFloor({
    name: 'floor',
    scriptFile,
    crypto: true,
    nodeFlags,
  });
} else throw new Error(`--server ${which}?`);
const rate = opt('rate');
const load = {
  creds,
  suite: SUITES.ccm8,
  concurrency,
  warmupMs: Number(opt('warmup', '5')) * 1000,
  durationMs: Number(opt('duration', '5')) * 1000,
  handshakeTimeoutMs: 5000,
  handshakesPerSec: rate === undefined ? undefined : Number(rate),
};
const pid = String(server.pid);
let attached;
setTimeout(() => {
  if (tool === 'perf') {
    const data = join(out, `perf-${which}.data`);
    attached = spawn(
      'perf',
      ['record', '-e', 'cpu-clock', '-F', '2000', '-g', '-p', pid, '-o', data],
      { stdio: 'inherit' },
    );
  } else if (tool === 'strace') {
    attached = spawn('strace', ['-c', '-f', '-p', pid, '-o', join(out, `strace-${which}.txt`)], {
      stdio: 'inherit',
    });
  } else if (tool === 'signal') process.kill(server.pid, 'SIGUSR2');
}, load.warmupMs);
const r =
  steps !== undefined ? await runPingPong(server, load, steps) : await runHandshakes(server, load);
if (tool === 'signal') process.kill(server.pid, 'SIGUSR2');
if (attached !== undefined) {
  attached.kill('SIGINT');
  await new Promise((resolve) => attached.on('exit', resolve));
}
const {
  handshakes,
  handshakesPerSec,
  serverCpuUsPerHandshake,
  serverSystemCpuUsPerHandshake,
  failures,
} = r;
const util = r.window.serverCpuUtilisation;
console.log(
  JSON.stringify({
    server: which,
    pid: server.pid,
    handshakes,
    handshakesPerSec,
    serverCpuUsPerHandshake,
    serverSystemCpuUsPerHandshake,
    serverCpuUtilisation: util,
    failures,
  }),
);
console.log(server.outputTail());
await servers.stopAll();
rmSync(dir, { recursive: true, force: true });
process.exit(0);
