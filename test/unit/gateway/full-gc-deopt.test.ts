/**
 * A full GC must not deoptimize the request path (docs/design.md, "One datagram's way";
 * bench/history/dedup-and-gc.md, "A full GC no longer deoptimizes the request path"). Short-lived
 * objects
 * of the path (the record a datagram holds, a CoAP exchange, the Buffers node:crypto and the
 * UDP socket make in C++) have maps that V8 keeps only while some object has them; the
 * functions compiled against those maps were thrown away at every mark-compact ("weak
 * objects") when none was alive.
 *
 * A child node (`--allow-natives-syntax --expose-gc`) drives each function through its real
 * path (records sealed, read and opened with the record cipher, one of them received from a
 * UDP socket; requests through a CoapEndpoint whose handler answers asynchronously; publishes
 * through the MQTT bridge backend to the shared Mosquitto, answered by PUBACKs), has
 * TurboFan compile it (`%OptimizeFunctionOnNextCall`: no timing involved), runs a full
 * `gc()` with no object of the path alive, and reports whether the function is still
 * optimized, then again after one more call. On the code before the fix the first answer
 * was false for every function listed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SHARED_MQTT_PORT } from '../../helpers/e2e.js';
import { runJitChild, type JitStatus } from '../../helpers/jit-child.js';

const CHILD = `
const src = process.env.SRC_ROOT;
const { CipherSuite, DTLS_1_2 } = await import(src + 'dtls/constants.js');
const { Ccm8, createRecordCipher, splitKeyBlock, NATIVE_BUFFER_MAP_HOLDER } = await import(src + 'dtls/record-cipher.js');
const { readRecord } = await import(src + 'dtls/record.js');
const { CoapEndpoint } = await import(src + 'coap/endpoint.js');
const { encode } = await import(src + 'coap/codec.js');
const { CON, Code, OptionNumber } = await import(src + 'coap/constants.js');
const { ManualClock } = await import(src + 'time/clock.js');
const { COAP_ENDPOINT_DEFAULTS } = await import(process.env.HELPERS + 'component-defaults.js');
const { createSocket } = await import('node:dgram');
const { once } = await import('node:events');

const optimized = (f) => (%GetOptimizationStatus(f) & 16) !== 0;
const out = {};
const checked = [];
/** Has TurboFan compile f after warm-up calls of run. */
async function compile(name, f, run) {
  %PrepareFunctionForOptimization(f);
  for (let i = 0; i < 40; i++) await run();
  %OptimizeFunctionOnNextCall(f);
  await run();
  checked.push([name, f, run]);
  out[name] = { compiled: optimized(f) };
}

// records: sealed (the long-lived CCM_8 objects from the second record on), read, opened
const ccm = CipherSuite.TLS_PSK_WITH_AES_128_CCM_8;
const keys = splitKeyBlock(ccm, Buffer.alloc(40, 7)).client;
const sealer = createRecordCipher(ccm, keys, false);
const opener = createRecordCipher(ccm, keys, false);
const pt = Buffer.from('{"id":"1","params":{"measurepoints":{"t":21.5}}}');
let seq = 1;
const roundTrip = (wire = sealer.seal(23, 1, seq++, pt)) => {
  const rec = readRecord(wire, 0);
  const back = opener.open(rec.type, rec.version, rec.epoch, rec.seq, rec.body);
  if (back === undefined || !back.equals(pt)) throw new Error('record round trip failed');
};
// the first record as a datagram from a UDP socket (a Buffer made in C++, as every datagram
// is), handled in a function of its own: no frame of this script keeps it past that
async function receiveOne() {
  const rx = createSocket('udp4');
  rx.bind(0, '127.0.0.1');
  await once(rx, 'listening');
  const tx = createSocket('udp4');
  const got = once(rx, 'message');
  tx.send(sealer.seal(23, 1, seq++, pt), rx.address().port, '127.0.0.1');
  const [datagram] = await got;
  rx.close();
  tx.close();
  out.datagramHasHolderMap = %HaveSameMap(datagram, NATIVE_BUFFER_MAP_HOLDER);
  roundTrip(datagram);
}
await receiveOne();
await compile('readRecord', readRecord, roundTrip);
await compile('Ccm8.seal', Ccm8.prototype.seal, roundTrip);
// the record path opens in place (Ccm8.openIn, on the body Ccm8.open shares)
await compile('Ccm8.openIn', Ccm8.prototype.openIn, roundTrip);

// CoAP requests answered asynchronously: an Exchange each
const clock = new ManualClock();
const ep = new CoapEndpoint({
  ...COAP_ENDPOINT_DEFAULTS,
  clock,
  handler: () => Promise.resolve({ code: Code.CHANGED }),
});
const peer = { key: 'p', principal: 'd', sent: 0, send() { this.sent++; return true; } };
const token = Buffer.from([0xca, 0xfe]);
const path = Buffer.from('t');
const flush = () => new Promise((r) => setImmediate(r));
let mid = 0;
const request = async () => {
  mid = (mid + 1) & 0xffff;
  ep.receive(peer, encode({ type: CON, code: Code.POST, messageId: mid, token,
    options: [{ number: OptionNumber.URI_PATH, value: path }], payload: pt }));
  await flush();
};
await compile('CoapEndpoint.startAsync', CoapEndpoint.prototype.startAsync, request);
await compile('CoapEndpoint.settle', CoapEndpoint.prototype.settle, request);

// publishes through the bridge backend to the shared Mosquitto, each answered by its PUBACK:
// a PublishJob each, the socket's writes corked until an Immediate
const { MqttBridgeBackend } = await import(src + 'bridge/mqtt/backend.js');
const { MQTT_BRIDGE_DEFAULTS } = await import(process.env.HELPERS + 'component-defaults.js');
const backend = new MqttBridgeBackend({ ...MQTT_BRIDGE_DEFAULTS, url: process.env.MQTT_URL, poolSize: 1 });
backend.start();
if (!(await backend.waitConnected(10000))) throw new Error('no broker at ' + process.env.MQTT_URL);
const topic = 'coap-edge-test/full-gc-deopt/' + process.pid;
const publish = () => backend.publish(topic, pt);
await compile('MqttBridgeBackend.send', MqttBridgeBackend.prototype.send, publish);

// full GCs with nothing of the path alive: V8 keeps a map that optimized code embeds for at
// most retain_maps_for_n_gc (2) full GCs without an object of it, and only when it finds the
// map's constructor early; three, as a long-running process has many
for (let k = 0; k < 3; k++) gc();
for (const [name, f] of checked) out[name].afterGc = optimized(f);
for (const [, , run] of checked) await run();
for (const [name, f] of checked) out[name].afterNextCall = optimized(f);
ep.close();
await backend.close();
out.answered = peer.sent;
process.stdout.write(JSON.stringify(out));
`;

test('a full GC leaves the record and exchange functions optimized', async () => {
  const out = (await runJitChild(CHILD, {
    SRC_ROOT: new URL('../../../src/', import.meta.url).href,
    HELPERS: new URL('../../helpers/', import.meta.url).href,
    MQTT_URL: `mqtt://127.0.0.1:${SHARED_MQTT_PORT}`,
  })) as Record<string, JitStatus | boolean | number>;
  // the datagram's Buffer has the map the held Buffer keeps alive
  assert.equal(out.datagramHasHolderMap, true);
  assert.equal(out.answered, 42 * 2, 'every request was answered');
  const names = [
    'readRecord',
    'Ccm8.seal',
    'Ccm8.openIn',
    'CoapEndpoint.startAsync',
    'CoapEndpoint.settle',
    'MqttBridgeBackend.send',
  ];
  for (const name of names) {
    assert.deepEqual(
      out[name],
      { compiled: true, afterGc: true, afterNextCall: true },
      `${name}: optimized, still after a full GC and after the next call`,
    );
  }
});
