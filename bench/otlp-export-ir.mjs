#!/usr/bin/env node
// Instructions per OTLP export of any build, for callgrind (bench/history/tracing.md,
// "The HTTP client's lasting cost, looked for again"): `setupTracing` of the build (its default
// exporter: http/protobuf to a sink), then
// `exports` times: `traces` sampled traces of five spans each (a datagram's root and four
// children with the attributes an uplink's spans carry), and a forceFlush of the provider, so
// each export request holds `traces` traces and is answered before the next. The sink
// (dist/bench/lib/otlp-sink.js of this checkout) runs in a child process, not counted
// (valgrind --trace-children=no). Every thread of this process is counted, a worker
// exporter's thread included. One uncounted-alike export goes first (a worker's start). Run it under `valgrind --tool=callgrind` with two export counts
// and take (Ir(M) − Ir(N)) / (M − N): start-up cancels out. Plain Node; prints the sink's
// counts on stderr.
//
//   valgrind --tool=callgrind --smc-check=all-non-file node bench/otlp-export-ir.mjs <build dir> <exports> [traces=1]
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { oneTrace as makeTrace } from './otlp-trace.mjs';

const [, , buildArg, exportsArg, tracesArg = '1'] = process.argv;
if (buildArg === undefined || exportsArg === undefined) {
  process.stderr.write('usage: node bench/otlp-export-ir.mjs <build dir> <exports> [traces]\n');
  process.exit(2);
}
const build = resolve(buildArg);
const exportsN = Number(exportsArg);
const traces = Number(tracesArg);

const free = createServer().listen(0, '127.0.0.1');
await once(free, 'listening');
const port = free.address().port;
await new Promise((r) => free.close(r));
const sink = fork(new URL('../dist/bench/lib/otlp-sink.js', import.meta.url), [String(port)]);
await new Promise((r) => sink.on('message', (m) => m.type === 'ready' && r()));

const { setupTracing } = await import(`file://${build}/dist/src/telemetry/setup.js`);
const api = await import(`file://${build}/node_modules/@opentelemetry/api/build/src/index.js`);
const { trace } = api;
const handle = setupTracing({
  endpoint: `http://127.0.0.1:${port}/v1/traces`,
  sampleRatio: 1,
  forcedDevices: [],
  serviceName: 'coap-edge',
  serviceVersion: '0.0.0-bench',
  // no timed export: each forceFlush is one export request
  env: { OTEL_BSP_SCHEDULE_DELAY: '1000000000' },
});
const provider = trace.getTracerProvider().getDelegate();
const tracer = handle.tracing.tracer;

const oneTrace = (i) => makeTrace(api, tracer, i);

async function sinkRequests() {
  sink.send({ type: 'stats', seq: 0 });
  const [m] = await once(sink, 'message');
  return m.requests;
}

// one export before the counted ones (in both runs alike): a worker exporter starts its thread
// on the first export, which under callgrind can outlast the provider's 30 s flush timeout
oneTrace(-1);
while ((await sinkRequests()) < 1) await provider.forceFlush().catch(() => undefined);

for (let e = 0; e < exportsN; e++) {
  for (let t = 0; t < traces; t++) oneTrace(e * traces + t);
  await provider.forceFlush();
}
await handle.shutdown();
sink.send({ type: 'stats', seq: 1 });
const [stats] = await once(sink, 'message');
if (stats.requests !== exportsN + 1) process.exitCode = 1;
process.stderr.write(
  `otlp-export-ir: ${exportsN} exports of ${traces} trace(s): sink ${stats.requests} requests, ${stats.spans} spans\n`,
);
sink.kill();
