/**
 * A full GC between two sampled traces must not deoptimize the functions every datagram runs
 * through on its traced branch (src/telemetry/span-keeper.ts; bench/history/tracing.md,
 * "i11-trace1pct"). At 1 % sampling and a low rate no span is alive when a mark-compact runs;
 * without the keeper V8 freed the maps of the spans and their attributes, threw away the code
 * compiled against them and cleared their feedback, so the next trace deoptimized them again.
 *
 * A child node (`--allow-natives-syntax --expose-gc`, no automatic tier-up) sets tracing up
 * as the gateway does (`setupTracing`, a test exporter), runs traced and untraced calls of
 * each function, has TurboFan compile it (`%OptimizeFunctionOnNextCall`: no timing
 * involved), exports the spans, drops every reference it has to them, runs full `gc()`s and
 * reports whether each function is still optimized, and again after one more trace.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TRACING_CHILD_SETUP, runJitChild, type JitStatus } from '../helpers/jit-child.js';

const SRC_ROOT = new URL('../../src/', import.meta.url).href;

const CHILD = `${TRACING_CHILD_SETUP}
const { ROOT_CONTEXT, context } = await import('@opentelemetry/api');

// a datagram's trace as the gateway makes it: a root span with its attributes, a child under
// it, the traced branch of isTraced and recordingSpan; and an untraced call of both
function traced(i) {
  const root = tracing.tracer.startSpan('coap-edge.datagram', {
    kind: trace.SpanKind.SERVER,
    attributes: { 'network.transport': 'udp', 'network.peer.port': 40000 + i },
  }, ROOT_CONTEXT);
  const ok = context.with(tracing.rootContext(root), () => {
    const child = trace.startChild('coap.exchange', { 'coap.type': 'CON', 'coap.message_id': i });
    const r = trace.isTraced() && trace.recordingSpan() !== undefined;
    child?.end();
    return r;
  });
  root.end();
  if (!ok) throw new Error('not traced');
  if (trace.isTraced() || trace.recordingSpan() !== undefined) throw new Error('traced outside');
}

const optimized = (f) => (%GetOptimizationStatus(f) & 16) !== 0;
const checked = { isTraced: trace.isTraced, recordingSpan: trace.recordingSpan };
const out = {};
for (const f of Object.values(checked)) %PrepareFunctionForOptimization(f);
let i = 0;
for (; i < 40; i++) traced(i);
for (const f of Object.values(checked)) %OptimizeFunctionOnNextCall(f);
traced(i++);
for (const [name, f] of Object.entries(checked)) out[name] = { compiled: optimized(f) };

// the spans exported and no reference of this script left; a few full GCs (V8 may retain a
// map without objects for a GC or two)
await flush();
await turn();
for (let k = 0; k < 3; k++) gc();
for (const [name, f] of Object.entries(checked)) out[name].afterGc = optimized(f);
traced(i++);
for (const [name, f] of Object.entries(checked)) out[name].afterNextCall = optimized(f);
await flush();
out.exported = exported;
await handle.shutdown();
process.stdout.write(JSON.stringify(out));
`;

test('a full GC between traces leaves the traced branch of the datagram path optimized', async () => {
  const out = (await runJitChild(CHILD, { SRC_ROOT })) as Record<string, JitStatus | number>;
  // 42 traces of two spans each
  assert.equal(out.exported, 42 * 2);
  for (const name of ['isTraced', 'recordingSpan']) {
    assert.deepEqual(
      out[name],
      { compiled: true, afterGc: true, afterNextCall: true },
      `${name}: optimized, still after a full GC and after the next trace`,
    );
  }
});

// What the keeper is for, seen from outside: which ended spans a full GC cannot take. Each
// span is known to the child only through a WeakRef; a WeakRef's target stays alive until the
// end of the task that made or read it, hence a turn before each gc().
const KEEPER_CHILD = `
const { setImmediate: turn } = await import('node:timers/promises');
const { KEPT_SPANS, SpanKeeper } = await import(process.env.SRC_ROOT + 'telemetry/span-keeper.js');
const keeper = new SpanKeeper();
// in a function of its own: no binding of the module keeps the last span
const end = (n) => {
  const out = [];
  for (let i = 0; i < n; i++) {
    const span = { name: 's' + i };
    out.push(new WeakRef(span));
    keeper.onEnd(span);
  }
  return out;
};
const refs = end(KEPT_SPANS + 4);
const alive = async () => {
  await turn();
  gc();
  return refs.map((r) => r.deref() !== undefined);
};
const out = { kept: KEPT_SPANS, afterEnd: await alive() };
await keeper.shutdown();
out.afterShutdown = await alive();
process.stdout.write(JSON.stringify(out));
`;

test('the keeper holds the last KEPT_SPANS ended spans through a full GC, until shutdown', async () => {
  const out = (await runJitChild(KEEPER_CHILD, { SRC_ROOT })) as {
    kept: number;
    afterEnd: boolean[];
    afterShutdown: boolean[];
  };
  const { KEPT_SPANS } = await import('../../src/telemetry/span-keeper.js');
  assert.equal(out.kept, KEPT_SPANS);
  // the four oldest were pushed out by the newer ones; the last KEPT_SPANS survive
  assert.deepEqual(out.afterEnd, [
    ...Array<boolean>(4).fill(false),
    ...Array<boolean>(KEPT_SPANS).fill(true),
  ]);
  assert.deepEqual(out.afterShutdown, Array<boolean>(KEPT_SPANS + 4).fill(false));
});
