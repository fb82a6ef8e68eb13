/**
 * The bridge pool's suspect list: suspension doubles per drop, expires,
 * is forgotten, is struck once per drop, and is bounded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Suspects } from '../../../src/bridge/mqtt/suspects.js';
import { checkTopic } from '../../../src/bridge/mqtt/exchange.js';
import { validateKey } from '../../../src/enos/identity.js';
import { compileRoutes, type CompiledHttpRoute } from '../../../src/bridge/routes.js';
import { uriPathStrict } from '../../../src/coap/options.js';
import { decode, encode } from '../../../src/coap/codec.js';
import { CON, Code, OptionNumber } from '../../../src/coap/constants.js';

function make(maxEntries = 100) {
  let now = 0;
  const s = new Suspects({
    baseMs: 10_000,
    maxMs: 60_000,
    probationMs: 20_000,
    maxEntries,
    now: () => now,
  });
  return { s, at: (ms: number) => (now = ms) };
}

test('a refused packet (certain drop): suspension starts at baseMs, doubles per drop, is capped and then forgotten', () => {
  const { s, at } = make();
  s.strike('d', '0:1', true);
  assert.equal(s.remainingMs('d'), 10_000);
  s.strike('d', '0:1', true); // same drop, second publish: no second strike
  assert.equal(s.remainingMs('d'), 10_000);
  at(10_000);
  assert.equal(s.remainingMs('d'), 0, 'expired');
  s.strike('d', '1:1', true);
  assert.equal(s.remainingMs('d'), 20_000, 'doubled');
  at(30_000);
  s.strike('d', '0:2', true);
  s.strike('d', '1:2', true);
  s.strike('d', '0:3', true);
  assert.equal(s.remainingMs('d'), 60_000, 'capped at maxMs');
  at(30_000 + 60_000 + 60_001);
  assert.equal(s.remainingMs('d'), 0);
  s.strike('d', '1:3', true);
  assert.equal(s.remainingMs('d'), 10_000, 'strikes forgotten maxMs after the suspension');
  assert.equal(s.remainingMs('other'), 0);
});

test('an unexplained drop (a broker restart) suspends nobody; the same device at a second one is suspended', () => {
  const { s, at } = make();
  s.strike('d', '0:1', false);
  s.strike('bystander', '0:1', false);
  assert.equal(s.remainingMs('d'), 0, 'one unexplained drop: no pause');
  assert.equal(s.remainingMs('bystander'), 0);
  at(3_000);
  s.strike('d', '1:1', false); // in flight again when the next connection dropped
  assert.equal(s.remainingMs('d'), 10_000, 'suspended from the second strike');
  at(13_000);
  s.strike('d', '0:2', false);
  assert.equal(s.remainingMs('d'), 20_000, 'then doubling');
  // the bystander's strike is forgotten after probationMs
  at(3_000 + 20_001 + 10_000);
  s.strike('bystander', '1:2', false);
  assert.equal(s.remainingMs('bystander'), 0, 'a strike long ago does not count');
});

test('at most maxEntries devices are remembered, least recently struck first out', () => {
  const { s } = make(3);
  for (const d of ['a', 'b', 'c', 'd']) s.strike(d, 'x', true);
  assert.equal(s.size, 3);
  assert.equal(s.remainingMs('a'), 0);
  assert.ok(s.remainingMs('d') > 0);
  assert.equal(s.strikes, 4);
});

test('checkTopic refuses what Mosquitto disconnects on', () => {
  for (const bad of ['', '/a/+', '/a/#', '/a/\u0000', '/a/\u0001', '/a/\u007f', '/a/\u0085']) {
    assert.ok(checkTopic(bad) !== undefined, JSON.stringify(bad));
  }
  for (const bad of ['/a/\uffff', '/a/\ufffe', '/a/\ufdd0', '/a/\u{1fffe}', '/a/\ud800']) {
    assert.ok(checkTopic(bad) !== undefined, JSON.stringify(bad));
  }
  for (const good of ['/a/b', '/a/\u00a0', '/a/\ufeff', '/a/\ufffd', '/a/\u{10fffd}']) {
    assert.equal(checkTopic(good), undefined, JSON.stringify(good));
  }
  // at most 65 535 UTF-8 bytes (MQTT's string length), however few UTF-16 code units
  assert.equal(checkTopic(`/${'a'.repeat(0xfffe)}`), undefined);
  assert.ok(checkTopic(`/${'a'.repeat(0xffff)}`) !== undefined);
  assert.equal(checkTopic(`/${'€'.repeat(21844)}`), undefined); // 65 533 bytes
  assert.ok(checkTopic(`/${'€'.repeat(21845)}`) !== undefined); // 65 536 bytes
});

test('checkTopic counts no bytes of a topic too short to exceed 65 535 of them', () => {
  // per request, twice with a reply (bench/history/uplink.md, "The uplink against its floor,
  // fourth pass")
  const buffer = Buffer as unknown as { byteLength: (s: string) => number };
  const byteLength = buffer.byteLength;
  let calls = 0;
  buffer.byteLength = (s: string) => {
    calls++;
    return byteLength(s);
  };
  try {
    assert.equal(checkTopic('/sys/pk1/dev1/thing/measurepoint/post_reply'), undefined);
    assert.equal(checkTopic(`/${'€'.repeat(21844)}`), undefined);
  } finally {
    buffer.byteLength = byteLength;
  }
  assert.equal(calls, 0);
});

test('keys with non-characters are refused', () => {
  for (const k of ['\uffff', 'a\ufffe', '\ufdd0', '\ufdef', '\u{2ffff}', '\u{10ffff}']) {
    assert.equal(validateKey(k), 'bad-character', JSON.stringify(k));
  }
  assert.equal(validateKey('\ufdcf'), undefined);
});

test('uriPathStrict: undefined for invalid UTF-8 in any segment', () => {
  const msg = (segs: Buffer[]) =>
    decode(
      encode({
        type: CON,
        code: Code.GET,
        messageId: 1,
        token: Buffer.alloc(0),
        options: segs.map((value) => ({ number: OptionNumber.URI_PATH, value })),
        payload: Buffer.alloc(0),
      }),
    );
  assert.deepEqual(uriPathStrict(msg([Buffer.from('a'), Buffer.from('é')])), ['a', 'é']);
  assert.deepEqual(uriPathStrict(msg([Buffer.from('a'), Buffer.alloc(0)])), ['a', '']);
  assert.equal(uriPathStrict(msg([Buffer.from('a'), Buffer.from([0xc0, 0xaf])])), undefined);
  assert.equal(uriPathStrict(msg([Buffer.from([0xed, 0xa0, 0x80])])), undefined);
});

test('HTTP routes: no dot segment in a rendered path; none in a template', () => {
  const table = compileRoutes([
    { match: '#', backend: 'http', method: 'POST', url: 'http://h/in{topic}?k={dk}', headers: {} },
  ]);
  const r = table.routes[0] as CompiledHttpRoute;
  const dev = { productKey: 'pk', deviceKey: '..' };
  assert.equal(r.renderPath('/sys/pk/dk/thing/event/../post', dev), undefined);
  assert.equal(r.renderPath('/sys/pk/dk/thing/event/./post', dev), undefined);
  assert.equal(r.renderPath('/sys/pk/dk/rrpc/response/..', dev), undefined);
  assert.equal(r.renderPath('/sys/../dk/x', dev), undefined);
  // `..` in the query is not a path segment
  assert.equal(r.renderPath('/sys/pk/dk/x', dev), '/in/sys/pk/dk/x?k=..');
  assert.equal(r.renderPath('/sys/pk/dk/%2F..', dev), '/in/sys/pk/dk/%252F..?k=..');
  assert.equal(r.renderUrl('/sys/pk/dk/..x', dev), 'http://h/in/sys/pk/dk/..x?k=..');
  assert.throws(
    () =>
      compileRoutes([
        { match: '#', backend: 'http', method: 'POST', url: 'http://h/a/../{topic}', headers: {} },
      ]),
    /'\.' or '\.\.' path segments/,
  );
});
