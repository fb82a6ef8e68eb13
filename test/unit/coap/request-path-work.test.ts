/**
 * The exchange layer's own work per request on the uplink path (bench/history/uplink.md,
 * "The CoAP decode, the Uri-Path and the exchange timer"), counted: the Buffer views a request's
 * decode
 * and its Uri-Path and Content-Format reading make, and the timer-queue operations of a CON
 * request answered through a promise before its ACK deadline. Beside them, the behaviour the
 * cuts must keep: every option value still reads the same, and empty ACKs still go out at each
 * unanswered exchange's own deadline.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { decode, decodeWire } from '../../../src/coap/codec.js';
import { Code, ContentFormat, OptionNumber } from '../../../src/coap/constants.js';
import type { CoapRequest } from '../../../src/coap/endpoint.js';
import {
  contentFormat,
  getOption,
  getOptions,
  uriPath,
  uriPathStrict,
} from '../../../src/coap/options.js';
import { endpointSetup, req } from './exchange-harness.js';

const PATH = ['topic', 'sys', 'pk0001', 'dk000001', 'thing', 'measurepoint', 'post'];
const BODY = Buffer.from('{"id":"1","params":{}}');
const JSON_CF = { number: OptionNumber.CONTENT_FORMAT, value: Buffer.from([ContentFormat.JSON]) };

const setup = endpointSetup;

/** The uplink request of the benches: seven Uri-Path segments, Content-Format, a 4-byte token. */
function uplink(mid: number): Buffer {
  return req({
    mid,
    code: Code.POST,
    token: Buffer.from([0x5c, 0xa1, 0, mid & 0xff]),
    path: PATH,
    options: [JSON_CF],
    payload: BODY,
  });
}

/** Runs `run` (and awaits it) with the calls of `proto[name]` counted. */
async function counting<T extends object>(
  proto: T,
  names: readonly (keyof T)[],
  run: () => unknown,
): Promise<Record<keyof T, number>> {
  const calls = new Map<keyof T, number>(names.map((n) => [n, 0]));
  const saved = names.map((n) => Object.getOwnPropertyDescriptor(proto, n));
  names.forEach((n, i) => {
    const original = saved[i]?.value as (...args: unknown[]) => unknown;
    assert.equal(typeof original, 'function');
    Object.defineProperty(proto, n, {
      configurable: true,
      writable: true,
      value: function (this: unknown, ...args: unknown[]) {
        calls.set(n, (calls.get(n) ?? 0) + 1);
        return original.apply(this, args);
      },
    });
  });
  try {
    await run();
  } finally {
    names.forEach((n, i) => Object.defineProperty(proto, n, saved[i]!));
  }
  return Object.fromEntries(calls) as Record<keyof T, number>;
}

describe('a decoded request (the exchange layer decodes with decodeWire)', () => {
  test('reading its Uri-Path, Uri-Query and Content-Format makes no view: the token and the payload are the only ones', async () => {
    let path: string[] | undefined;
    let cf: number | undefined;
    let query: Buffer | undefined = Buffer.alloc(0);
    const { ep, peer } = setup((r) => {
      path = uriPathStrict(r.message);
      cf = contentFormat(r.message);
      query = getOption(r.message, OptionNumber.URI_QUERY);
      return { code: Code.CHANGED };
    });
    const datagram = uplink(1);
    const calls = await counting(Buffer.prototype, ['subarray'], () => ep.receive(peer, datagram));
    assert.deepEqual(path, PATH);
    assert.equal(cf, ContentFormat.JSON);
    assert.equal(query, undefined);
    assert.equal(peer.take()[0]?.code, Code.CHANGED);
    // main: 10 (token, 7 Uri-Path segments, Content-Format, payload)
    assert.deepEqual(calls, { subarray: 2 });
  });

  test('every option value still reads as the bytes it was sent as, a view into the datagram', () => {
    const seen: CoapRequest<string>[] = [];
    const { ep, peer } = setup((r) => {
      seen.push(r);
      return { code: Code.CHANGED };
    });
    const long = 'x'.repeat(300); // past the ASCII fast path's 255 bytes
    const datagram = req({
      mid: 2,
      path: ['pöst', '', long, 'a'],
      options: [
        { number: OptionNumber.CONTENT_FORMAT, value: Buffer.from([0x01, 0x2c]) },
        { number: OptionNumber.URI_QUERY, value: Buffer.from('q=1') },
      ],
    });
    ep.receive(peer, datagram);
    const m = seen[0]?.message;
    assert.ok(m);
    assert.deepEqual(uriPathStrict(m), ['pöst', '', long, 'a']);
    assert.deepEqual(uriPath(m), ['pöst', '', long, 'a']);
    assert.equal(contentFormat(m), 300);
    assert.equal(getOption(m, OptionNumber.URI_QUERY)?.toString(), 'q=1');
    const segments = getOptions(m, OptionNumber.URI_PATH);
    assert.equal(segments[1]?.length, 0);
    for (const o of m.options) {
      // a second read gives the same view
      assert.equal(o.value, o.value);
      if (o.value.length > 0) assert.equal(o.value.buffer, datagram.buffer);
    }
  });

  test('a Uri-Path segment read before is not built again: no String.fromCharCode call for a repeated path', async () => {
    const paths: (string[] | undefined)[] = [];
    const { ep, peer } = setup((r) => {
      paths.push(uriPathStrict(r.message));
      return { code: Code.CHANGED };
    });
    ep.receive(peer, uplink(10));
    const calls = await counting(String, ['fromCharCode'], () => ep.receive(peer, uplink(11)));
    assert.deepEqual(paths, [PATH, PATH]);
    // main: 43, one per character of the seven segments
    assert.deepEqual(calls, { fromCharCode: 0 });
  });

  test('segments that share a cache slot or a length, or differ in one byte, still read as their own bytes', () => {
    const m = (segments: readonly string[]) => decodeWire(req({ mid: 1, path: segments }));
    // far more distinct segments than the cache has slots, each read twice: every read is right
    const words: string[] = [];
    for (let i = 0; i < 3000; i++) words.push(`dk${i.toString(36)}`, `pk${i}`.padEnd(32, 'z'));
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < words.length; i += 7) {
        const segments = words.slice(i, i + 7);
        assert.deepEqual(uriPathStrict(m(segments)), segments);
      }
    }
    // one byte apart, same length; then the first again
    for (const s of ['post', 'posu', 'Post', 'post', 'pöst', 'post', '', 'p', '']) {
      assert.deepEqual(uriPathStrict(m([s])), [s]);
    }
    // past the cached length and past the ASCII path's: built each time, the same strings
    const long33 = 'a'.repeat(33);
    const long300 = 'b'.repeat(300);
    for (let round = 0; round < 2; round++) {
      assert.deepEqual(uriPathStrict(m([long33, long300])), [long33, long300]);
    }
    // a plain decode (views, no WireOption) reads through the same cache
    assert.deepEqual(uriPathStrict(decode(req({ mid: 2, path: ['topic', 'posu'] }))), [
      'topic',
      'posu',
    ]);
  });

  test('a Uri-Path segment that is not UTF-8 still makes uriPathStrict undefined', () => {
    let strict: string[] | undefined = [];
    const { ep, peer } = setup((r) => {
      strict = uriPathStrict(r.message);
      return { code: Code.BAD_REQUEST };
    });
    const bad = Buffer.from([0x74, 0xc3]); // a truncated two-byte sequence
    ep.receive(peer, req({ mid: 3, options: [{ number: OptionNumber.URI_PATH, value: bad }] }));
    assert.equal(strict, undefined);
  });
});
