/**
 * coap-edge's parser of the PUBLISHes a broker sends (`src/bridge/mqtt/received-publish.ts`)
 * gives what mqtt-packet's parser (mqtt.js's) gives for the same bytes — the same fields,
 * topic, payload and MQTT 5 properties in the same shape — at 3.1.1 and 5, across the
 * Remaining Length sizes, on generated topics, payloads and properties; it takes nothing it
 * does not fully understand (QoS 2, a topic alias, packet id 0, lengths that lie), and on
 * hostile bytes it never throws and never takes a packet that mqtt-packet reads otherwise.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import type { EventEmitter } from 'node:events';
import fc from 'fast-check';
import type { IPublishPacket } from 'mqtt';
import { parsePublish } from '../../../src/bridge/mqtt/received-publish.js';

const require = createRequire(import.meta.url);
const mqttPacket = require('mqtt-packet') as {
  generate(packet: object, opts: { protocolVersion: number }): Buffer;
  parser(opts: { protocolVersion: number }): EventEmitter & { parse(buf: Buffer): number };
};

type Level = 4 | 5;

/** Where the packet in `buf` starts its body: after the fixed header's varint. */
function bodyStart(buf: Buffer): number {
  let at = 1;
  while (((buf[at] ?? 0) & 0x80) !== 0) at++;
  return at + 1;
}

/** Our parse of the whole packet `buf` (its body up to `buf`'s end). */
function ours(buf: Buffer, level: Level): IPublishPacket | undefined {
  return parsePublish(buf, buf[0] ?? 0, bodyStart(buf), buf.length, level);
}

/** mqtt-packet's packets and errors for `buf`. */
function reference(buf: Buffer, level: Level): { packets: object[]; errors: number } {
  const parser = mqttPacket.parser({ protocolVersion: level });
  const packets: object[] = [];
  let errors = 0;
  parser.on('packet', (p: object) => packets.push(p));
  parser.on('error', () => errors++);
  parser.parse(buf);
  return { packets, errors };
}

/** The packet's own fields that are not undefined, as a plain object. */
function fields(packet: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(packet).filter(([, v]) => v !== undefined));
}

/** Ours equals mqtt-packet's reading of `buf`, which it reads as one packet without error. */
function same(buf: Buffer, level: Level): void {
  const mine = ours(buf, level);
  assert.ok(mine !== undefined, 'taken');
  const ref = reference(buf, level);
  assert.equal(ref.errors, 0);
  assert.equal(ref.packets.length, 1);
  assert.deepStrictEqual(fields(mine), fields(ref.packets[0] ?? {}));
}

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

const text = fc.string({ unit: 'grapheme', maxLength: 30 });
const propertiesArb = fc.record(
  {
    payloadFormatIndicator: fc.boolean(),
    messageExpiryInterval: fc.integer({ min: 0, max: 0xffffffff }),
    contentType: text,
    responseTopic: text,
    correlationData: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
    subscriptionIdentifier: fc.oneof(
      fc.integer({ min: 1, max: 268_435_455 }),
      fc.array(fc.integer({ min: 1, max: 268_435_455 }), { minLength: 2, maxLength: 3 }),
    ),
    userProperties: fc.dictionary(
      text.filter((k) => k !== '__proto__'),
      fc.oneof(
        text,
        // '' among the values: mqtt-packet overwrites a name whose value so far is ''
        fc.array(fc.oneof(text, fc.constant('')), { minLength: 2, maxLength: 3 }),
      ),
      { minKeys: 1, maxKeys: 4 },
    ),
  },
  { requiredKeys: [] },
);

const publishArb = fc.record({
  topic: text.filter((t) => t.length > 0),
  payload: fc.oneof(
    fc.uint8Array({ maxLength: 300 }),
    fc.constantFrom(100, 110, 120, 16_360, 16_370, 16_380).map((n) => new Uint8Array(n)),
  ),
  qos: fc.constantFrom(0 as const, 1 as const),
  dup: fc.boolean(),
  retain: fc.boolean(),
  id: fc.integer({ min: 1, max: 65535 }),
  properties: fc.option(propertiesArb, { nil: undefined }),
});

type Generated = typeof publishArb extends fc.Arbitrary<infer T> ? T : never;

function generate(p: Generated, level: Level): Buffer {
  const packet: Record<string, unknown> = {
    cmd: 'publish',
    topic: p.topic,
    payload: Buffer.from(p.payload),
    qos: p.qos,
    dup: p.qos === 1 && p.dup,
    retain: p.retain,
  };
  if (p.qos === 1) packet['messageId'] = p.id;
  if (level === 5 && p.properties !== undefined) packet['properties'] = p.properties;
  return mqttPacket.generate(packet, { protocolVersion: level });
}

describe('parsePublish', () => {
  it("is mqtt-packet's packet for generated PUBLISHes, 3.1.1 and 5", () => {
    fc.assert(
      fc.property(publishArb, fc.constantFrom(4 as const, 5 as const), (p, level) =>
        same(generate(p, level), level),
      ),
      { numRuns: 500 },
    );
  });

  it('at the Remaining Length boundaries (one to four bytes)', () => {
    for (const level of [4, 5] as const) {
      for (const qos of [0, 1] as const) {
        const props = { userProperties: { traceparent: TRACEPARENT } };
        const base = { topic: 't/x', payload: new Uint8Array(0), qos, dup: false, retain: false };
        const fixed = generate({ ...base, id: 7, properties: props }, level).length - 2;
        for (const target of [127, 128, 16_383, 16_384, 2_097_151, 2_097_152]) {
          for (const d of [-1, 0, 1]) {
            const n = target + d - fixed;
            if (n < 0) continue;
            same(
              generate({ ...base, payload: new Uint8Array(n), id: 7, properties: props }, level),
              level,
            );
          }
        }
      }
    }
  });

  it('gives the reply flow what it reads: topic, payload, traceparent', () => {
    const body = Buffer.from('{"id":"1","code":200,"data":{}}');
    const buf = mqttPacket.generate(
      {
        cmd: 'publish',
        topic: '/sys/pk/dk/thing/measurepoint/post_reply',
        payload: body,
        qos: 1,
        messageId: 4660,
        dup: false,
        retain: false,
        properties: { userProperties: { traceparent: TRACEPARENT } },
      },
      { protocolVersion: 5 },
    );
    const p = ours(buf, 5);
    assert.equal(p?.topic, '/sys/pk/dk/thing/measurepoint/post_reply');
    assert.deepEqual(p?.payload, body);
    assert.equal(p?.messageId, 4660);
    assert.equal(p?.properties?.userProperties?.['traceparent'], TRACEPARENT);
  });

  it('takes nothing it does not fully understand', () => {
    const v5 = { protocolVersion: 5 };
    const publish = (extra: object): Buffer =>
      mqttPacket.generate(
        {
          cmd: 'publish',
          topic: 't',
          payload: Buffer.from('x'),
          dup: false,
          retain: false,
          ...extra,
        },
        v5,
      );
    // QoS 2
    assert.equal(ours(publish({ qos: 2, messageId: 1 }), 5), undefined);
    // a topic alias (mqtt.js keeps the table)
    assert.equal(ours(publish({ qos: 0, properties: { topicAlias: 3 } }), 5), undefined);
    // packet id 0
    const zero = publish({ qos: 1, messageId: 1 });
    zero[6] = 0;
    assert.equal(ours(zero, 5), undefined);
    // DUP on QoS 0
    const dup = publish({ qos: 0 });
    dup[0] = (dup[0] ?? 0) | 8;
    assert.equal(ours(dup, 5), undefined);
    // QoS 3
    const three = publish({ qos: 1, messageId: 1 });
    three[0] = (three[0] ?? 0) | 6;
    assert.equal(ours(three, 5), undefined);
    // not a PUBLISH
    assert.equal(ours(Buffer.from([0x40, 0x02, 0x00, 0x01]), 5), undefined);
    // the hand-made frames below are taken when nothing is wrong with them
    assert.equal(ours(Buffer.from([0x30, 0x07, 0, 1, 0x74, 2, 1, 1, 0x78]), 5)?.topic, 't');
    assert.equal(ours(Buffer.from([0x30, 0x04, 0, 1, 0x74, 0x78]), 4)?.topic, 't');
    // a property a PUBLISH may not carry (0x11 session expiry), and the same one twice
    assert.equal(
      ours(Buffer.from([0x30, 0x0a, 0, 1, 0x74, 5, 0x11, 0, 0, 0, 1, 0x78]), 5),
      undefined,
    );
    assert.equal(ours(Buffer.from([0x30, 0x09, 0, 1, 0x74, 4, 1, 1, 1, 0, 0x78]), 5), undefined);
    // a topic length past the packet; a properties length past it; a property past its end
    assert.equal(ours(Buffer.from([0x30, 0x04, 0, 9, 0x74, 0x78]), 4), undefined);
    assert.equal(ours(Buffer.from([0x30, 0x05, 0, 1, 0x74, 9, 0x78]), 5), undefined);
    assert.equal(ours(Buffer.from([0x30, 0x08, 0, 1, 0x74, 2, 0x03, 0, 5, 0x78]), 5), undefined);
    // a properties length varint of five bytes
    assert.equal(
      ours(Buffer.from([0x30, 0x08, 0, 1, 0x74, 0x80, 0x80, 0x80, 0x80, 0x00]), 5),
      undefined,
    );
    // a properties length not at its fewest bytes (0 in two)
    assert.equal(ours(Buffer.from([0x30, 0x06, 0, 1, 0x74, 0x80, 0x00, 0x78]), 5), undefined);
    // the empty topic (an alias without its property, or a 3.1.1 protocol error)
    assert.equal(ours(Buffer.from([0x30, 0x03, 0, 0, 0x78]), 4), undefined);
  });

  it('on hostile bytes: never throws, and whatever it takes mqtt-packet reads the same', () => {
    let taken = 0;
    fc.assert(
      fc.property(
        publishArb,
        fc.constantFrom(4 as const, 5 as const),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.integer({ min: -8, max: 8 }),
        (p, level, edits, cut) => {
          const good = generate(p, level);
          const start = bodyStart(good);
          // bytes changed anywhere (the first byte's flags too), and the body shortened or
          // lengthened with its Remaining Length told to match: inner lengths now lie
          const body = Buffer.from(good.subarray(start));
          const bodyLength = Math.max(0, body.length + cut);
          const resized = Buffer.alloc(bodyLength, 0x61);
          body.copy(resized, 0, 0, Math.min(body.length, bodyLength));
          const length = varint(bodyLength);
          const buf = Buffer.concat([Buffer.from([good[0] ?? 0]), length, resized]);
          // the first byte (its flags) or the body; the Remaining Length stays true
          const s = 1 + length.length;
          for (const [at, value] of edits) {
            const k = at % (buf.length - s + 1);
            buf[k === 0 ? 0 : s + k - 1] = value;
          }
          let mine: IPublishPacket | undefined;
          try {
            mine = parsePublish(buf, buf[0] ?? 0, s, buf.length, level);
          } catch (err) {
            assert.fail(`threw ${String(err)}`);
          }
          if (mine === undefined) return;
          taken++;
          const ref = reference(buf, level);
          assert.equal(ref.errors, 0);
          assert.equal(ref.packets.length, 1);
          assert.deepStrictEqual(fields(mine), fields(ref.packets[0] ?? {}));
        },
      ),
      { numRuns: 1000 },
    );
    // the edits leave many packets whole: the comparison is not vacuous
    assert.ok(taken > 100, `${taken} taken`);
  });
});

function varint(n: number): Buffer {
  const out: number[] = [];
  let rest = n;
  do {
    let byte = rest & 0x7f;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    out.push(byte);
  } while (rest > 0);
  return Buffer.from(out);
}
