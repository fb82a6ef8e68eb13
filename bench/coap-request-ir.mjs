#!/usr/bin/env node
// Instructions per CoAP request on coap-edge's own part of the uplink path, for callgrind
// (bench/history/uplink.md, "The CoAP decode, the Uri-Path and the exchange timer"): the bench's
// uplink
// request (CON POST /topic/sys/pk/dk/thing/measurepoint/post, 4-byte token, Content-Format
// JSON, a measurepoint body), `ops` times, through one of
//   decode    the exchange layer's decoder and the translation's toBridgeRequest (Uri-Path
//             strings, query, Content-Format);
//   endpoint  CoapEndpoint.receive with a handler that calls toBridgeRequest and answers 2.04
//             through a promise (as the MQTT publish does), so the exchange's ACK deadline is
//             set and cancelled; one microtask turn per request;
//   records   the records bench's request instead (CON GET /nothing, 4-byte token) through
//             CoapEndpoint.receive and the gateway's request handler (createRequestHandler on a
//             Router without backends, request metrics): a piggybacked ACK 4.04 in the same
//             turn. The dedup cache is full from the first thousand requests on, so every
//             request evicts one entry, as in the bench's steady state (100 000 entries are
//             full after a few seconds at its rate). A fifth argument sets that cap (e.g.
//             100000, the default of a pod: the old generation then holds that many entries).
// `build` is a checkout's root (its dist/ is loaded), so two builds run the same script.
// Run it twice under `valgrind --tool=callgrind` with two op counts and take
// (Ir(M) − Ir(N)) / (M − N): start-up and the first compiles cancel out. Prints nothing.
//
//   valgrind --tool=callgrind node bench/coap-request-ir.mjs <build> decode|endpoint|records <ops> [cap]
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [, , build, mode, opsS, capS] = process.argv;
const dist = (p) => import(pathToFileURL(resolve(build ?? '.', 'dist/src', p)).href);
const codec = await dist('coap/codec.js');
const { CON, Code, ContentFormat, OptionNumber } = await dist('coap/constants.js');
const { CoapEndpoint } = await dist('coap/endpoint.js');
const { encodeUint } = await dist('coap/options.js');
const { toBridgeRequest } = await dist('gateway/translation/coap-adapter.js');
const { ManualClock } = await dist('time/clock.js');

const PATH = ['topic', 'sys', 'pk0001', 'dk000001', 'thing', 'measurepoint', 'post'];
const token = Buffer.from([0x5c, 0xa1, 0x00, 0x01]);
const payload = Buffer.from(
  '{"id":"1024","version":"1.0","method":"thing.measurepoint.post",' +
    '"params":{"measurepoints":{"temperature":21.5,"humidity":40},"time":1765000000000}}',
);
const options = [
  ...PATH.map((s) => ({ number: OptionNumber.URI_PATH, value: Buffer.from(s) })),
  { number: OptionNumber.CONTENT_FORMAT, value: encodeUint(ContentFormat.JSON) },
];
// distinct message IDs: the endpoint's dedup cache (1 000 entries) has forgotten an ID
// before it comes round again
const datagrams = [];
for (let mid = 0; mid < 4096; mid++) {
  datagrams.push(
    codec.encode({ type: CON, code: Code.POST, messageId: mid, token, options, payload }),
  );
}
const decodeRequest = codec.decodeWire ?? codec.decode; // a build before decodeWire: decode
const peer = { key: 'p', principal: undefined, send: () => true };
const CHANGED = { code: Code.CHANGED };

/** The endpoint of the endpoint and records modes: `handler`, a dedup cap of `cap` entries. */
function endpointOptions(handler, cap) {
  return {
    handler,
    ackTimeoutMs: 20_000,
    maxPayload: 16_384,
    blockSize: 1024,
    maxUploadsPerPeer: 1,
    maxUploads: 1,
    maxUploadBytes: 1,
    dedupMaxEntries: cap,
    clock: new ManualClock(),
  };
}

const ops = Number(opsS);
let ok = 0;
if (mode === 'decode') {
  for (let i = 0; i < ops; i++) {
    const message = decodeRequest(datagrams[i & 4095]);
    const r = toBridgeRequest({
      peer,
      message,
      payload: message.payload,
      method: message.code,
      confirmable: true,
    });
    if (r !== undefined && r.path.length === 7 && r.contentFormat === ContentFormat.JSON) ok++;
  }
} else if (mode === 'endpoint') {
  const endpoint = new CoapEndpoint(
    endpointOptions((req) => {
      if (toBridgeRequest(req)?.path.length === 7) ok++;
      return Promise.resolve(CHANGED);
    }, 1000),
  );
  for (let i = 0; i < ops; i++) {
    endpoint.receive(peer, datagrams[i & 4095]);
    await null; // the handler's promise settles: the answer goes out
  }
  if (endpoint.stats.responses !== ops) throw new Error(`${endpoint.stats.responses} answers`);
  endpoint.close();
} else if (mode === 'records') {
  const { Router } = await dist('bridge/router.js');
  const { RequestStats } = await dist('telemetry/metrics.js');
  const { createRequestHandler } = await dist('gateway/translation/request-handler.js');
  const router = new Router({
    mqtt: undefined,
    http: undefined,
    routes: undefined,
    activation: undefined,
    commands: undefined,
    presence: undefined,
    unavailableMaxAge: 5,
    maxInlineCommand: 256,
    maxTtd: 60,
    maxTtdWaitersPerDevice: 4,
    maxTtdWaiters: 1000,
  });
  const requests = new RequestStats([1, 10, 100]);
  const nothing = [{ number: OptionNumber.URI_PATH, value: Buffer.from('nothing') }];
  const gets = [];
  for (let mid = 0; mid < 0x10000; mid++) {
    gets.push(
      codec.encode({
        type: CON,
        code: Code.GET,
        messageId: mid,
        token,
        options: nothing,
        payload: Buffer.alloc(0),
      }),
    );
  }
  let notFound = 0;
  const send = (b) => {
    if (b[1] === Code.NOT_FOUND) notFound++;
    return true;
  };
  // the bench's 50 associations, one request of each in turn
  const peers = Array.from({ length: 50 }, (_, i) => ({
    key: `127.0.0.1:${40000 + i}`,
    principal: undefined,
    send,
  }));
  const endpoint = new CoapEndpoint(
    endpointOptions(
      createRequestHandler(router, requests),
      capS === undefined ? 1000 : Number(capS),
    ),
  );
  for (let i = 0; i < ops; i++) endpoint.receive(peers[i % 50], gets[Math.floor(i / 50) & 0xffff]);
  if (notFound !== ops) throw new Error(`${notFound} answers 4.04`);
  endpoint.close();
  ok = ops;
} else throw new Error('mode: decode | endpoint | records');
if (ok !== ops) throw new Error(`${ok} of ${ops} requests translated`);
