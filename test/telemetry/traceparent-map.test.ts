/**
 * A full GC between two sampled traces must not deoptimize the MQTT publish encoder that
 * every uplink runs (src/bridge/mqtt/exchange.ts, `tracedPublish`; bench/history/tracing.md,
 * "i11-trace3"). A traced publish carries its trace context as the MQTT 5 user property
 * `traceparent`, in an object made per traced publish; at 1 % sampling and a few datagrams
 * per second none of those objects is alive when a mark-compact runs. If their map dies with
 * them, V8 throws away the encoder's code compiled against it and clears its feedback, and
 * the next trace deoptimizes it again.
 *
 * A child node (`--allow-natives-syntax --expose-gc`, no automatic tier-up) sets tracing up
 * as the gateway does, publishes through `tracedPublish` traced and untraced into the
 * production encoder (`publishPacket`, MQTT 5), has TurboFan compile both functions
 * (`%OptimizeFunctionOnNextCall`: no timing involved), exports the spans, drops every
 * reference it has, runs full `gc()`s and reports whether each is still optimized, and again
 * after one more traced publish.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TRACING_CHILD_SETUP, runJitChild, type JitStatus } from '../helpers/jit-child.js';

const CHILD = `${TRACING_CHILD_SETUP}
const { tracedPublish } = await import(src + 'bridge/mqtt/exchange.js');
const { publishPacket } = await import(src + 'bridge/mqtt/publish-packet.js');
const { ROOT_CONTEXT, context } = await import('@opentelemetry/api');
const payload = Buffer.from('{"id":"1","params":{"measurepoints":{"t":1}}}');
const topic = '/sys/pk/dev/thing/measurepoint/post';
let withProperty = 0;
// as MqttConnection.publish: the packet of what tracedPublish hands the connection
const send = (t, p, props) => {
  const packet = publishPacket(t, p, 1, 5, props);
  if (packet === undefined) throw new Error('not encoded');
  if (props !== undefined && packet.includes('traceparent')) withProperty++;
  return Promise.resolve();
};

async function traced(i) {
  const root = tracing.tracer.startSpan('coap-edge.datagram', {
    kind: trace.SpanKind.SERVER,
    attributes: { 'network.transport': 'udp', 'network.peer.port': 40000 + i },
  }, ROOT_CONTEXT);
  await context.with(tracing.rootContext(root), () => tracedPublish(send, topic, payload, undefined));
  root.end();
  // an untraced uplink's publish: no user properties
  await tracedPublish(send, topic, payload, undefined);
}

const optimized = (f) => (%GetOptimizationStatus(f) & 16) !== 0;
const checked = { tracedPublish, publishPacket };
const out = {};
for (const f of Object.values(checked)) %PrepareFunctionForOptimization(f);
let i = 0;
for (; i < 40; i++) await traced(i);
for (const f of Object.values(checked)) %OptimizeFunctionOnNextCall(f);
await traced(i++);
for (const [name, f] of Object.entries(checked)) out[name] = { compiled: optimized(f) };

// the spans exported, no reference of this script left to a traced publish's objects; a few
// full GCs (V8 may retain a map without objects for a GC or two)
await flush();
await turn();
for (let k = 0; k < 3; k++) gc();
for (const [name, f] of Object.entries(checked)) out[name].afterGc = optimized(f);
await traced(i++);
for (const [name, f] of Object.entries(checked)) out[name].afterNextCall = optimized(f);
await flush();
out.exported = exported;
out.withProperty = withProperty;
await handle.shutdown();
process.stdout.write(JSON.stringify(out));
`;

test('a full GC between traces leaves the MQTT publish encoder optimized', async () => {
  const out = (await runJitChild(CHILD, {
    SRC_ROOT: new URL('../../src/', import.meta.url).href,
  })) as Record<string, JitStatus | number>;
  // 42 traces of two spans (the root and mqtt.publish), each publish with its traceparent
  assert.equal(out.exported, 42 * 2);
  assert.equal(out.withProperty, 42);
  for (const name of ['tracedPublish', 'publishPacket']) {
    assert.deepEqual(
      out[name],
      { compiled: true, afterGc: true, afterNextCall: true },
      `${name}: optimized, still after a full GC and after the next traced publish`,
    );
  }
});
