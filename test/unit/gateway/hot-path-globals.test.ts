/**
 * Node 20 defines the globals `Buffer` and `performance` as getters on `globalThis`: every
 * read of them from the record path was a getter call that the optimizing compiler does not
 * fold away (bench/history/records.md, "The record path, third pass"). The modules on that path
 * import them instead; these
 * tests count the global getters' calls while a record is sealed, opened, a CoAP message
 * encoded, the clock read and a request handled.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';

import type { Router } from '../../../src/bridge/router.js';
import { encode } from '../../../src/coap/codec.js';
import { ACK, CON, Code, OptionNumber } from '../../../src/coap/constants.js';
import type { CoapPeer, CoapRequest } from '../../../src/coap/endpoint.js';
import { CipherSuite, DTLS_1_2 } from '../../../src/dtls/constants.js';
import { createRecordCipher, splitKeyBlock } from '../../../src/dtls/record-cipher.js';
import { readRecord } from '../../../src/dtls/record.js';
import { createRequestHandler } from '../../../src/gateway/translation/request-handler.js';
import { RequestStats } from '../../../src/telemetry/metrics.js';
import { SystemClock } from '../../../src/time/clock.js';

const GETTERS = ['Buffer', 'performance'] as const;

/** Runs `run` with the global getters of `Buffer` and `performance` counted. */
function countingGlobals(run: () => void): Record<(typeof GETTERS)[number], number> {
  const calls = { Buffer: 0, performance: 0 };
  const saved = GETTERS.map((name) => Object.getOwnPropertyDescriptor(globalThis, name));
  GETTERS.forEach((name, i) => {
    const d = saved[i];
    assert.ok(d?.get !== undefined, `global ${name} is a getter in this Node`);
    const value: unknown = Reflect.get(globalThis, name);
    Object.defineProperty(globalThis, name, {
      configurable: true,
      enumerable: d.enumerable,
      get() {
        calls[name]++;
        return value;
      },
    });
  });
  try {
    run();
  } finally {
    GETTERS.forEach((name, i) => Object.defineProperty(globalThis, name, saved[i]!));
  }
  return calls;
}

test('sealing, reading and opening a CCM_8 record reads neither global', () => {
  const ccm = CipherSuite.TLS_PSK_WITH_AES_128_CCM_8;
  const keys = splitKeyBlock(ccm, Buffer.alloc(40, 7)).client;
  const sealer = createRecordCipher(ccm, keys, false);
  const opener = createRecordCipher(ccm, keys, false);
  const pt = Buffer.from('a CoAP message of 20');
  // the first records go through one-shot ciphers; from the second on, the long-lived objects
  for (let seq = 1; seq <= 2; seq++) {
    const rec = readRecord(sealer.seal(23, 1, seq, pt), 0);
    assert.ok(rec !== undefined && opener.open(23, DTLS_1_2, 1, seq, rec.body)?.equals(pt));
  }
  let out: Buffer | undefined;
  const calls = countingGlobals(() => {
    const rec = readRecord(sealer.seal(23, 1, 3, pt), 0);
    if (rec !== undefined) out = opener.open(rec.type, rec.version, rec.epoch, rec.seq, rec.body);
  });
  assert.ok(out?.equals(pt));
  assert.deepEqual(calls, { Buffer: 0, performance: 0 });
});

test('encoding a CoAP answer and reading the system clock read neither global', () => {
  const token = Buffer.from([1, 2, 3, 4]);
  const empty = Buffer.alloc(0);
  const clock = new SystemClock();
  let bytes: Buffer | undefined;
  let now = -1;
  const calls = countingGlobals(() => {
    bytes = encode({
      type: ACK,
      code: Code.NOT_FOUND,
      messageId: 0x1234,
      token,
      options: [],
      payload: empty,
    });
    now = clock.now();
  });
  assert.equal(bytes?.toString('hex'), '64841234' + '01020304');
  assert.ok(now > 0);
  assert.deepEqual(calls, { Buffer: 0, performance: 0 });
});

test('the request handler times a request without reading the global performance', () => {
  const stats = new RequestStats([1, 10, 100]);
  const router = { handle: () => ({ status: 'not-found' }) } as unknown as Router;
  const handler = createRequestHandler(router, stats);
  const message = {
    type: CON,
    code: Code.GET,
    messageId: 1,
    token: Buffer.alloc(0),
    options: [{ number: OptionNumber.URI_PATH, value: Buffer.from('nothing') }],
    payload: Buffer.alloc(0),
  } as const;
  const peer = {
    key: 'p',
    principal: undefined,
    send: () => undefined,
  } as unknown as CoapPeer<undefined>;
  const req: CoapRequest<undefined> = {
    peer,
    message,
    payload: message.payload,
    method: Code.GET,
    confirmable: true,
  };
  let code = 0;
  const calls = countingGlobals(() => {
    const reply = handler(req);
    if (!(reply instanceof Promise)) code = reply.code;
  });
  assert.equal(code, Code.NOT_FOUND);
  assert.equal(calls.performance, 0);
  assert.deepEqual(
    stats.entries().map(([labels, n]) => [labels.method, labels.code, n]),
    [['GET', '4.04', 1]],
  );
});
