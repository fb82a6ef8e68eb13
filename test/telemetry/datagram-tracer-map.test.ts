/**
 * A full GC between two sampled datagrams must not deoptimize the datagram tracer's `handle`
 * (src/gateway/datagram-tracing.ts), which every received datagram runs, traced or not
 * (bench/history/tracing.md, "Tracing at 1 %, settled"). A traced datagram's span attributes are an
 * object literal made per trace, with two keys added for a known device; at 1 % sampling and
 * a few datagrams per second none of those objects is alive when a mark-compact runs. If
 * their maps die with them, V8 throws away `handle`'s code compiled against them ("weak
 * objects"), and at a few datagrams per second it runs as baseline code for minutes.
 *
 * A child node (`--allow-natives-syntax --expose-gc`, no automatic tier-up) sets tracing up
 * as the gateway does, sends datagrams through a `DatagramTracer` over a stand-in DTLS server,
 * traced and untraced (the tracing's ratio 1 and 0), has TurboFan compile `handle`
 * (`%OptimizeFunctionOnNextCall`: no timing involved), exports the spans, runs full `gc()`s
 * and reports whether it is still optimized, and again after one more traced datagram.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TRACING_CHILD_SETUP, runJitChild, type JitStatus } from '../helpers/jit-child.js';

const CHILD = `${TRACING_CHILD_SETUP}
const { DatagramTracer } = await import(src + 'gateway/datagram-tracing.js');
const principal = { productKey: 'pk', deviceKey: 'dev' };
let handled = 0;
// the DtlsServer calls handle makes: a known device's association
const dtls = {
  stats: { dropEvents: false },
  principalOf: () => principal,
  handshaking: () => false,
  handleDatagram: () => { handled++; },
};
const tracer = new DatagramTracer(dtls, { duplicateEvents: false }, () => 5684, tracing);
const msg = Buffer.alloc(40);
function datagram(i, traced) {
  tracing.ratio = traced ? 1 : 0;
  tracer.handle(msg, '127.0.0.1', 40000 + (i % 4));
}

const optimized = (f) => (%GetOptimizationStatus(f) & 16) !== 0;
const f = DatagramTracer.prototype.handle;
const out = {};
%PrepareFunctionForOptimization(f);
let i = 0;
for (; i < 40; i++) { datagram(i, true); datagram(i, false); }
%OptimizeFunctionOnNextCall(f);
datagram(i++, true);
out.compiled = optimized(f);

// the spans exported, no reference of this script left to a traced datagram's objects; a
// few full GCs (V8 may retain a map without objects for a GC or two)
await flush();
await turn();
for (let k = 0; k < 3; k++) gc();
out.afterGc = optimized(f);
datagram(i++, true);
out.afterNextCall = optimized(f);
await flush();
out.exported = exported;
out.handled = handled;
tracer.close();
await handle.shutdown();
process.stdout.write(JSON.stringify(out));
`;

test('a full GC between traces leaves the datagram tracer optimized', async () => {
  const out = (await runJitChild(CHILD, {
    SRC_ROOT: new URL('../../src/', import.meta.url).href,
  })) as unknown as JitStatus & { exported: number; handled: number };
  // 42 traced datagrams of one span each (the stand-in server makes none), 40 untraced
  assert.equal(out.exported, 42);
  assert.equal(out.handled, 82);
  assert.deepEqual(
    { compiled: out.compiled, afterGc: out.afterGc, afterNextCall: out.afterNextCall },
    { compiled: true, afterGc: true, afterNextCall: true },
    'handle: optimized, still after a full GC and after the next traced datagram',
  );
});
