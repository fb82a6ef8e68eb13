#!/usr/bin/env node
// Instructions per sampled trace, split (bench/history/tracing.md, "The serializer"), for
// callgrind:
// a build's `setupTracing` with a test exporter that answers at once (no HTTP), then one of
//   spans       n × (10 traces of five spans, as otlp-export-ir.mjs makes them; a forceFlush):
//               the SDK's span start, attributes, end and batch span processor
//   sdk-proto   n × the SDK's protobuf serializer (otlp-transformer) on 10 such traces
//   sdk-json    n × the SDK's JSON serializer on them
//   own-proto   n × the build's own serializer (dist/src/telemetry/otlp-proto.js) on them
// Run it under `valgrind --tool=callgrind --smc-check=all-non-file` with two values of n and
// take (Ir(M) − Ir(N)) / (10 × (M − N)): Ir per trace, start-up cancelled. Plain Node.
//
//   valgrind --tool=callgrind --smc-check=all-non-file node [--no-opt] bench/otlp-trace-ir.mjs <build dir> <part> <n>
import { resolve } from 'node:path';
import { oneTrace as makeTrace } from './otlp-trace.mjs';

const [, , buildArg, part, nArg] = process.argv;
const parts = ['spans', 'sdk-proto', 'sdk-json', 'own-proto'];
if (buildArg === undefined || !parts.includes(part) || nArg === undefined) {
  process.stderr.write(`usage: node bench/otlp-trace-ir.mjs <build dir> ${parts.join('|')} <n>\n`);
  process.exit(2);
}
const build = resolve(buildArg);
const n = Number(nArg);
const mod = (p) => import(`file://${build}/${p}`);
const { setupTracing } = await mod('dist/src/telemetry/setup.js');
const api = await mod('node_modules/@opentelemetry/api/build/src/index.js');
const { trace } = api;
const transformer = await mod('node_modules/@opentelemetry/otlp-transformer/build/src/index.js');

const captured = [];
const exporter = {
  export(spans, done) {
    if (captured.length < 50) captured.push(...spans);
    done({ code: 0 });
  },
  shutdown: async () => undefined,
  forceFlush: async () => undefined,
};
const handle = setupTracing({
  endpoint: undefined,
  sampleRatio: 1,
  forcedDevices: [],
  serviceName: 'coap-edge',
  serviceVersion: '0.0.0-bench',
  env: { OTEL_BSP_SCHEDULE_DELAY: '1000000000', POD_NAME: 'pod-1', POD_NAMESPACE: 'ns' },
  exporter,
});
const provider = trace.getTracerProvider().getDelegate();
const tracer = handle.tracing.tracer;

const oneTrace = (i) => makeTrace(api, tracer, i);

for (let t = 0; t < 10; t++) oneTrace(t);
await provider.forceFlush();
const spans = captured.slice(0, 50);
let bytes = 0;
if (part === 'spans') {
  for (let e = 0; e < n; e++) {
    for (let t = 0; t < 10; t++) oneTrace(t);
    await provider.forceFlush();
  }
} else if (part === 'sdk-proto') {
  for (let e = 0; e < n; e++)
    bytes += transformer.ProtobufTraceSerializer.serializeRequest(spans).length;
} else if (part === 'sdk-json') {
  for (let e = 0; e < n; e++)
    bytes += transformer.JsonTraceSerializer.serializeRequest(spans).length;
} else {
  const { OtlpTraceEncoder } = await mod('dist/src/telemetry/otlp-proto.js');
  const encoder = new OtlpTraceEncoder();
  for (let e = 0; e < n; e++) bytes += encoder.encode(spans).length;
}
await handle.shutdown();
process.stderr.write(`otlp-trace-ir: ${part} × ${n} (${spans.length} spans, ${bytes} bytes)\n`);
