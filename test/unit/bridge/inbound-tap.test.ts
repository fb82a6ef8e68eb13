/**
 * The tap (`src/bridge/mqtt/inbound-tap.ts`) takes a chunk off the broker's byte stream only
 * when it is nothing but whole packets it handles — success PUBACKs of pending publishes and
 * (with a deliver function) QoS 0/1 PUBLISHes its parser takes — starting at a packet
 * boundary, while mqtt.js is idle; it handles them in order, and what it passes on is the
 * stream minus those packets, which mqtt-packet's parser (mqtt.js's) reads without an error.
 * Generated packet sequences (PUBACKs of pending, unknown and refused publishes; PUBLISHes of
 * QoS 0, 1 and 2, with and without MQTT 5 properties and topic aliases, across the Remaining
 * Length sizes; malformed PUBLISHes; PINGRESP; SUBACK) at 3.1.1 and 5, cut into chunks at
 * generated places, against a model: every message reaches the handler once and in order (by
 * the tap or by mqtt.js), every PUBACK is settled once, in order with them.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import type { EventEmitter } from 'node:events';
import fc from 'fast-check';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { InboundTap } from '../../../src/bridge/mqtt/inbound-tap.js';

const require = createRequire(import.meta.url);
const mqttPacket = require('mqtt-packet') as {
  generate(packet: object, opts: { protocolVersion: number }): Buffer;
  parser(opts: { protocolVersion: number }): EventEmitter & { parse(buf: Buffer): number };
};

type Item =
  | {
      readonly kind: 'ack';
      readonly id: number;
      readonly pending: boolean;
      /** 2: `40 02 id id`; 3: with the reason code; 4: and an empty property length. */
      readonly form?: 2 | 3 | 4;
      /** 0, or 0x10 "no matching subscribers" (a success too). */
      readonly reason?: 0 | 0x10;
    }
  | { readonly kind: 'refused'; readonly id: number }
  | {
      readonly kind: 'publish';
      readonly id: number;
      readonly size: number;
      readonly qos: 0 | 1 | 2;
      /** MQTT 5 properties: none, a traceparent and more, or a topic alias (left to mqtt.js). */
      readonly props: 'none' | 'some' | 'alias';
    }
  /** A PUBLISH whose topic length says more than the packet holds (mqtt-packet's error). */
  | { readonly kind: 'malformed'; readonly id: number }
  | { readonly kind: 'pingresp' }
  | { readonly kind: 'suback'; readonly id: number };

type Level = 4 | 5;

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

function publishTopic(id: number): string {
  return `t/${id}`;
}

function bytes(item: Item, level: Level): Buffer {
  const v = { protocolVersion: level };
  switch (item.kind) {
    case 'ack': {
      const form = item.form ?? 2;
      const head = [0x40, form, item.id >> 8, item.id & 0xff];
      if (form === 2) return Buffer.from(head);
      return Buffer.from(form === 3 ? [...head, item.reason ?? 0] : [...head, item.reason ?? 0, 0]);
    }
    case 'refused':
      return mqttPacket.generate({ cmd: 'puback', messageId: item.id, reasonCode: 0x87 }, V5);
    case 'publish': {
      const packet: Record<string, unknown> = {
        cmd: 'publish',
        topic: publishTopic(item.id),
        payload: Buffer.alloc(item.size, 0x40),
        qos: item.qos,
        retain: false,
        dup: false,
      };
      if (item.qos > 0) packet['messageId'] = item.id;
      if (level === 5 && item.props === 'some') {
        packet['properties'] = {
          userProperties: { traceparent: TRACEPARENT },
          correlationData: Buffer.from([1, 2, 3]),
          contentType: 'application/json',
        };
      } else if (level === 5 && item.props === 'alias') {
        packet['properties'] = { topicAlias: 1 };
      }
      return mqttPacket.generate(packet, v);
    }
    case 'malformed':
      // topic length 0x0100 in a body of 5 bytes
      return Buffer.from([0x30, 0x05, 0x01, 0x00, 0x74, 0x78, 0x79]);
    case 'pingresp':
      return mqttPacket.generate({ cmd: 'pingresp' }, v);
    case 'suback':
      return mqttPacket.generate({ cmd: 'suback', messageId: item.id, granted: [1] }, v);
  }
}

const V5 = { protocolVersion: 5 };

/** What the tap's PUBLISH parser takes (and so what it handles itself when it takes a chunk). */
function tapParses(item: Item, level: Level): boolean {
  return item.kind === 'publish' && item.qos < 2 && !(level === 5 && item.props === 'alias');
}

/**
 * A stand-in for the mqtt.js client fields the tap uses; `log` records, in order, each PUBACK
 * settled and each message delivered (by the tap, or by the test for what mqtt.js parsed).
 */
function fakeClient(pendingIds: Iterable<number>, level: Level = 5) {
  const acked: number[] = [];
  const log: string[] = [];
  const outgoing: Record<number, { volatile: boolean; cmd: string; cb: (err?: Error) => void }> =
    {};
  for (const id of pendingIds) {
    outgoing[id] = {
      volatile: false,
      cmd: 'publish',
      cb: (err) => {
        assert.equal(err, undefined);
        acked.push(id);
        log.push(`ack ${id}`);
      },
    };
  }
  let pings = 0;
  const client = {
    outgoing,
    options: { protocolVersion: level },
    messageIdProvider: { deallocate: () => undefined },
    reschedulePing: () => pings++,
  };
  return { client: client as unknown as MqttClient, acked, log, pings: () => pings };
}

/** How a delivered message is logged: by its topic and what the handler reads of it. */
function messageEntry(p: IPublishPacket): string {
  const tp = p.properties?.userProperties?.['traceparent'];
  return `msg ${p.topic} ${p.qos} ${p.payload.length} ${typeof tp === 'string' ? 'tp' : '-'}`;
}

const itemArb: fc.Arbitrary<Item> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('ack' as const),
      id: fc.integer({ min: 1, max: 65535 }),
      pending: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('refused' as const),
      id: fc.integer({ min: 1, max: 65535 }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('publish' as const),
      id: fc.integer({ min: 1, max: 65535 }),
      size: fc.oneof(
        fc.integer({ min: 0, max: 200 }),
        fc.constantFrom(113, 114, 115, 16_370, 16_371, 16_380),
      ),
      qos: fc.constantFrom(0 as const, 1 as const, 1 as const, 2 as const),
      props: fc.constantFrom('none' as const, 'some' as const, 'some' as const, 'alias' as const),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('malformed' as const),
      id: fc.integer({ min: 1, max: 65535 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'pingresp' as const }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('suback' as const),
      id: fc.integer({ min: 1, max: 65535 }),
    }),
  },
);

describe('InboundTap', () => {
  it('takes whole chunks of pending success PUBACKs and PUBLISHes it parses, in order; mqtt.js parses the rest in step', () => {
    fc.assert(
      fc.property(
        fc.array(itemArb, { maxLength: 30 }),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 30 }),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 30 }),
        fc.constantFrom(4 as const, 5 as const),
        fc.boolean(),
        (items, cuts, idles, level, publishes) => {
          // distinct ids, so that which publish each PUBACK settles is known
          const seen = new Set<number>();
          const distinct = items.filter((it) => {
            if (!('id' in it)) return true;
            if (seen.has(it.id)) return false;
            seen.add(it.id);
            return true;
          });
          // a malformed PUBLISH ends the stream: mqtt-packet's parser drops what it holds then
          // and reads on from wherever the next read starts (the tap stops: the next test)
          const bad = distinct.findIndex((it) => it.kind === 'malformed');
          const unique = bad < 0 ? distinct : distinct.slice(0, bad + 1);
          const pending = unique.flatMap((it) => (it.kind === 'ack' && it.pending ? [it.id] : []));
          const f = fakeClient(pending, level);
          // without a deliver function the tap takes PUBACKs only (the PUBACK tap as it was)
          const tap = new InboundTap(
            f.client,
            publishes ? (p) => f.log.push(messageEntry(p)) : undefined,
          );
          const parser = mqttPacket.parser({ protocolVersion: level });
          const parsed: { cmd: string; messageId?: number }[] = [];
          parser.on('packet', (p: { cmd: string; messageId?: number }) => {
            parsed.push(p);
            // what mqtt.js would hand the connection's message listener
            if (p.cmd === 'publish') f.log.push(messageEntry(p as IPublishPacket));
          });
          parser.on('error', (err: Error) => {
            f.log.push(`error ${err.message}`);
            tap.stop(); // as the connection does on mqtt.js's error
          });

          // the stream cut into chunks: a packet per chunk as often as across packets
          const packets = unique.map((it) => bytes(it, level));
          const chunks: Buffer[] = [];
          let k = 0;
          for (const p of packets) {
            if ((cuts[k % cuts.length] ?? 1) % 2 === 0) chunks.push(p);
            else {
              for (let at = 0; at < p.length;) {
                const n = Math.min(p.length - at, cuts[k++ % cuts.length] ?? 1);
                chunks.push(p.subarray(at, at + n));
                at += n;
              }
            }
            k++;
          }
          // expected: a chunk of whole packets the tap handles, from a boundary, idle
          let expectedTaken = 0;
          let offset = 0;
          const starts = new Map<number, number>(); // packet start offset -> index
          let s = 0;
          packets.forEach((p, idx) => {
            starts.set(s, idx);
            s += p.length;
          });
          starts.set(s, packets.length);
          const takenIds: number[] = [];
          const takenItems = new Set<Item>();
          chunks.forEach((chunk, i) => {
            const idle = idles[i % idles.length] ?? true;
            const first = starts.get(offset);
            const end = starts.get(offset + chunk.length);
            const ids: number[] = [];
            const these: Item[] = [];
            let handled = chunk.length > 0 && first !== undefined && end !== undefined;
            for (let q = first ?? 0; handled && q < (end ?? 0); q++) {
              const it = unique[q];
              if (it === undefined) break;
              handled = (it.kind === 'ack' && it.pending) || (publishes && tapParses(it, level));
              if (it.kind === 'ack') ids.push(it.id);
              these.push(it);
            }
            const expect = idle && handled;
            if (expect) {
              expectedTaken++;
              takenIds.push(...ids);
              for (const it of these) takenItems.add(it);
            }
            const taken = tap.take(chunk, idle);
            assert.equal(taken, expect, `chunk ${i}`);
            if (!taken) parser.parse(chunk);
            offset += chunk.length;
          });
          assert.equal(tap.taken, expectedTaken);
          assert.deepEqual(f.acked, takenIds);
          assert.equal(f.pings(), takenIds.length);
          // mqtt.js got every packet but those taken, whole and in order
          const remaining = unique.filter((it) => !takenItems.has(it));
          assert.deepEqual(
            parsed.map((p) => [p.cmd, p.messageId]),
            remaining
              .filter((it) => it.kind !== 'malformed')
              .map((it) => [
                it.kind === 'ack' || it.kind === 'refused' ? 'puback' : it.kind,
                'id' in it && !(it.kind === 'publish' && it.qos === 0) ? it.id : undefined,
              ]),
          );
          // every message once and in order, with the PUBACKs the tap settled in their place
          // (a malformed PUBLISH is mqtt-packet's error, where it stands in the stream)
          const expectedLog = unique.flatMap((it) => {
            if (it.kind === 'publish') {
              const traced = level === 5 && it.props === 'some';
              return [`msg ${publishTopic(it.id)} ${it.qos} ${it.size} ${traced ? 'tp' : '-'}`];
            }
            if (it.kind === 'ack' && takenItems.has(it)) return [`ack ${it.id}`];
            if (it.kind === 'malformed') return ['error Cannot parse topic'];
            return [];
          });
          assert.deepEqual(f.log, expectedLog);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('takes a read of several PUBACKs at once, and none while mqtt.js is not idle', () => {
    const f = fakeClient([1, 2, 3]);
    const tap = new InboundTap(f.client);
    const two = Buffer.concat([
      bytes({ kind: 'ack', id: 1, pending: true }, 5),
      bytes({ kind: 'ack', id: 2, pending: true }, 5),
    ]);
    assert.equal(tap.take(bytes({ kind: 'ack', id: 3, pending: true }, 5), false), false);
    assert.equal(tap.take(two, true), true);
    assert.deepEqual(f.acked, [1, 2]);
  });

  it("takes nothing after mqtt.js's parser failed on a malformed packet", () => {
    const f = fakeClient([7, 8], 5);
    const delivered: string[] = [];
    const tap = new InboundTap(f.client, (p) => delivered.push(p.topic));
    const parser = mqttPacket.parser(V5);
    const errors: string[] = [];
    parser.on('error', (err: Error) => {
      errors.push(err.message);
      tap.stop();
    });
    const malformed = bytes({ kind: 'malformed', id: 1 }, 5);
    assert.equal(tap.take(malformed, true), false);
    parser.parse(malformed);
    assert.deepEqual(errors, ['Cannot parse topic']);
    // whole and well formed, but mqtt.js is out of step now: all of it goes to mqtt.js
    const publish = bytes({ kind: 'publish', id: 2, size: 3, qos: 1, props: 'some' }, 5);
    assert.equal(tap.take(publish, true), false);
    assert.equal(tap.take(bytes({ kind: 'ack', id: 7, pending: true }, 5), true), false);
    assert.deepEqual([delivered, f.acked, tap.taken], [[], [], 0]);
  });

  it('passes on a chunk with a PUBLISH it does not take, PUBACKs and PUBLISHes around it included', () => {
    const f = fakeClient([7], 5);
    const delivered: string[] = [];
    const tap = new InboundTap(f.client, (p) => delivered.push(p.topic));
    const chunk = Buffer.concat([
      bytes({ kind: 'publish', id: 1, size: 3, qos: 1, props: 'some' }, 5),
      bytes({ kind: 'ack', id: 7, pending: true }, 5),
      bytes({ kind: 'publish', id: 2, size: 3, qos: 2, props: 'none' }, 5),
    ]);
    assert.equal(tap.take(chunk, true), false);
    assert.deepEqual([delivered, f.acked, f.pings()], [[], [], 0]);
    // and takes the next one, at the boundary it followed
    const next = Buffer.concat([
      bytes({ kind: 'ack', id: 7, pending: true }, 5),
      bytes({ kind: 'publish', id: 3, size: 0, qos: 0, props: 'some' }, 5),
    ]);
    assert.equal(tap.take(next, true), true);
    assert.deepEqual([delivered, f.acked, f.pings()], [['t/3'], [7], 1]);
  });

  it('passes on a PUBLISH whose Remaining Length is not at its fewest bytes, and follows it', () => {
    const f = fakeClient([7], 4);
    const delivered: string[] = [];
    const tap = new InboundTap(f.client, (p) => delivered.push(p.topic));
    // 4 in two bytes (84 00): mqtt-packet reads it; the tap leaves it to mqtt.js
    const odd = Buffer.from([0x30, 0x84, 0x00, 0x00, 0x01, 0x74, 0x78]);
    assert.equal(tap.take(odd, true), false);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const topics: string[] = [];
    parser.on('packet', (p: { topic: string }) => topics.push(p.topic));
    parser.parse(odd);
    assert.deepEqual(topics, ['t']);
    assert.equal(tap.take(bytes({ kind: 'ack', id: 7, pending: true }, 4), true), true);
    assert.deepEqual([delivered, f.acked], [[], [7]]);
  });

  it('stops taking after a length it cannot follow', () => {
    const f = fakeClient([9]);
    const tap = new InboundTap(f.client);
    assert.equal(tap.take(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), true), false);
    assert.equal(tap.take(bytes({ kind: 'ack', id: 9, pending: true }, 5), true), false);
    assert.deepEqual(f.acked, []);
  });
});
