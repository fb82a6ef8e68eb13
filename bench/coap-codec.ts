/**
 * Micro-benchmark: our CoAP codec (src/coap/codec.ts) against coap-packet, side by side in
 * one process, on a typical EnOS uplink request and its piggybacked 2.04 response.
 *
 * Each round runs every case once, with the order of the two codecs alternating between
 * rounds; each case runs a fixed iteration count calibrated during warm-up to take about
 * ROUND_TARGET_MS. The reported figure is the median ops/s over the rounds.
 *
 * Prints one JSON object. Run: `node dist/bench/coap-codec.js`.
 */
import { createRequire } from 'node:module';
import os from 'node:os';
import packet from 'coap-packet';

import { decode, encode, type CoapMessage } from '../src/coap/codec.js';
import { ACK, CON, Code, ContentFormat, OptionNumber } from '../src/coap/constants.js';
import { encodeUint } from '../src/coap/options.js';

type Packet = Parameters<typeof packet.generate>[0];

const ROUNDS = 15;
const ROUND_TARGET_MS = 60;

// --- the two messages -------------------------------------------------------------------

const TOKEN = Buffer.from([0x5c, 0xa1]);
const MID = 0x3a7f;
const PATH = ['topic', 'sys', 'pk', 'dk', 'thing', 'measurepoint', 'post'];
const REQUEST_PAYLOAD = Buffer.from(
  '{"id":"1024","version":"1.0","method":"thing.measurepoint.post",' +
    '"params":{"measurepoints":{"temp":21.5},"time":1700000000000}}',
);
const RESPONSE_PAYLOAD = Buffer.from('{"id":"1024","code":200,"data":{}}');
const JSON_FORMAT = encodeUint(ContentFormat.JSON);

const requestMsg: CoapMessage = {
  type: CON,
  code: Code.POST,
  messageId: MID,
  token: TOKEN,
  options: [
    ...PATH.map((s) => ({ number: OptionNumber.URI_PATH, value: Buffer.from(s) })),
    { number: OptionNumber.CONTENT_FORMAT, value: JSON_FORMAT },
  ],
  payload: REQUEST_PAYLOAD,
};

const responseMsg: CoapMessage = {
  type: ACK,
  code: Code.CHANGED,
  messageId: MID,
  token: TOKEN,
  options: [{ number: OptionNumber.CONTENT_FORMAT, value: JSON_FORMAT }],
  payload: RESPONSE_PAYLOAD,
};

// coap-packet's input shape for the same messages (named options, as its users write them).
const requestPacket: Packet = {
  confirmable: true,
  code: '0.02',
  messageId: MID,
  token: TOKEN,
  options: [
    ...PATH.map((s) => ({ name: 'Uri-Path' as const, value: Buffer.from(s) })),
    { name: 'Content-Format' as const, value: JSON_FORMAT },
  ],
  payload: REQUEST_PAYLOAD,
};

const responsePacket: Packet = {
  ack: true,
  code: '2.04',
  messageId: MID,
  token: TOKEN,
  options: [{ name: 'Content-Format' as const, value: JSON_FORMAT }],
  payload: RESPONSE_PAYLOAD,
};

const requestWire = encode(requestMsg);
const responseWire = encode(responseMsg);

// --- one loop per case, so every call site stays monomorphic -----------------------------

let sink = 0;

function oursDecode(buf: Buffer, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += decode(buf).options.length;
  return s;
}

function theirsParse(buf: Buffer, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += packet.parse(buf).options.length;
  return s;
}

function oursEncode(msg: CoapMessage, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += encode(msg).length;
  return s;
}

function theirsGenerate(pkt: Packet, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += packet.generate(pkt).length;
  return s;
}

interface Case {
  readonly name: string;
  readonly run: (n: number) => number;
  iterations: number;
  readonly samples: number[];
}

function makeCase(name: string, run: (n: number) => number): Case {
  return { name, run, iterations: 1000, samples: [] };
}

/** ns taken by `c` for `n` iterations. */
function time(c: Case, n: number): number {
  const t0 = process.hrtime.bigint();
  sink += c.run(n);
  return Number(process.hrtime.bigint() - t0);
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

// [ours, theirs] pairs, each alternated per round.
const pairs: [Case, Case][] = [
  [
    makeCase('request.decode.coapEdge', (n) => oursDecode(requestWire, n)),
    makeCase('request.decode.coapPacket', (n) => theirsParse(requestWire, n)),
  ],
  [
    makeCase('request.encode.coapEdge', (n) => oursEncode(requestMsg, n)),
    makeCase('request.encode.coapPacket', (n) => theirsGenerate(requestPacket, n)),
  ],
  [
    makeCase('response.decode.coapEdge', (n) => oursDecode(responseWire, n)),
    makeCase('response.decode.coapPacket', (n) => theirsParse(responseWire, n)),
  ],
  [
    makeCase('response.encode.coapEdge', (n) => oursEncode(responseMsg, n)),
    makeCase('response.encode.coapPacket', (n) => theirsGenerate(responsePacket, n)),
  ],
];

// --- sanity: both codecs agree on these messages ----------------------------------------

const sameBytes = {
  request: packet.generate(requestPacket).equals(requestWire),
  response: packet.generate(responsePacket).equals(responseWire),
};
for (const wire of [requestWire, responseWire]) {
  const ours = decode(wire);
  const theirs = packet.parse(wire);
  const agree =
    ours.messageId === theirs.messageId &&
    ours.token.equals(theirs.token) &&
    ours.payload.equals(theirs.payload) &&
    ours.options.length === theirs.options.length &&
    ours.options.every((o, i) => theirs.options[i]?.value.equals(o.value) === true);
  if (!agree) throw new Error('codecs disagree on a benchmark message');
}

// --- warm-up and calibration ------------------------------------------------------------

for (const c of pairs.flat()) {
  for (let k = 0; k < 3; k++) time(c, 20_000); // let the JIT settle
  let n = 1000;
  while (time(c, n) < ROUND_TARGET_MS * 1e6) n *= 2;
  c.iterations = n;
}

// --- measured rounds --------------------------------------------------------------------

for (let r = 0; r < ROUNDS; r++) {
  for (const [ours, theirs] of pairs) {
    const order = r % 2 === 0 ? [ours, theirs] : [theirs, ours];
    for (const c of order) c.samples.push((c.iterations / time(c, c.iterations)) * 1e9);
  }
}

if (sink === 0) throw new Error('benchmark loops did no work');

const require = createRequire(import.meta.url);
const coapPacketVersion = (require('coap-packet/package.json') as { version: string }).version;

function result(ours: Case, theirs: Case): Record<string, number> {
  const a = median(ours.samples);
  const b = median(theirs.samples);
  return {
    coapEdge: Math.round(a),
    coapPacket: Math.round(b),
    ratio: Math.round((a / b) * 100) / 100,
  };
}

const [reqDec, reqEnc, resDec, resEnc] = pairs;

console.log(
  JSON.stringify(
    {
      bench: 'coap-codec',
      unit: 'ops/s, median of rounds (ratio = coapEdge / coapPacket)',
      node: process.version,
      v8: process.versions.v8,
      platform: `${os.platform()} ${os.arch()}`,
      cpu: os.cpus()[0]?.model ?? 'unknown',
      coapPacketVersion,
      rounds: ROUNDS,
      roundTargetMs: ROUND_TARGET_MS,
      messages: {
        request: {
          description: 'CON 0.02 POST, 2-byte token, 7 Uri-Path, Content-Format 50, JSON payload',
          bytes: requestWire.length,
          payloadBytes: REQUEST_PAYLOAD.length,
        },
        response: {
          description: 'ACK 2.04, 2-byte token, Content-Format 50, JSON payload',
          bytes: responseWire.length,
          payloadBytes: RESPONSE_PAYLOAD.length,
        },
      },
      sameBytes,
      results: {
        request: { decode: result(...reqDec!), encode: result(...reqEnc!) },
        response: { decode: result(...resDec!), encode: result(...resEnc!) },
      },
    },
    null,
    2,
  ),
);
