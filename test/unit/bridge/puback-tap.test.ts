/**
 * The PUBACK tap (`src/bridge/mqtt/puback-tap.ts`) takes a chunk off the broker's byte stream
 * only when it is nothing but whole success PUBACKs of pending publishes, starting at a packet
 * boundary, while mqtt.js is idle; what it passes on is the stream minus those packets, which
 * mqtt-packet's parser (mqtt.js's) reads without an error. Generated packet sequences (PUBACKs
 * of pending, unknown and refused publishes, PUBLISHes across the Remaining Length sizes,
 * PINGRESP, SUBACK) cut into chunks at generated places.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import type { EventEmitter } from 'node:events';
import fc from 'fast-check';
import type { MqttClient } from 'mqtt';
import { PubackTap } from '../../../src/bridge/mqtt/puback-tap.js';

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
  | { readonly kind: 'publish'; readonly id: number; readonly size: number }
  | { readonly kind: 'pingresp' }
  | { readonly kind: 'suback'; readonly id: number };

function bytes(item: Item): Buffer {
  switch (item.kind) {
    case 'ack': {
      const form = item.form ?? 2;
      const head = [0x40, form, item.id >> 8, item.id & 0xff];
      if (form === 2) return Buffer.from(head);
      return Buffer.from(form === 3 ? [...head, item.reason ?? 0] : [...head, item.reason ?? 0, 0]);
    }
    case 'refused':
      return mqttPacket.generate({ cmd: 'puback', messageId: item.id, reasonCode: 0x87 }, V5);
    case 'publish':
      return mqttPacket.generate(
        {
          cmd: 'publish',
          topic: 't/x',
          payload: Buffer.alloc(item.size, 0x40),
          qos: 1,
          messageId: item.id,
          retain: false,
          dup: false,
        },
        V5,
      );
    case 'pingresp':
      return mqttPacket.generate({ cmd: 'pingresp' }, V5);
    case 'suback':
      return mqttPacket.generate({ cmd: 'suback', messageId: item.id, granted: [1] }, V5);
  }
}

const V5 = { protocolVersion: 5 };

/** A stand-in for the mqtt.js client fields the tap uses. */
function fakeClient(pendingIds: Iterable<number>) {
  const acked: number[] = [];
  const outgoing: Record<number, { volatile: boolean; cmd: string; cb: (err?: Error) => void }> =
    {};
  for (const id of pendingIds) {
    outgoing[id] = {
      volatile: false,
      cmd: 'publish',
      cb: (err) => {
        assert.equal(err, undefined);
        acked.push(id);
      },
    };
  }
  let pings = 0;
  const client = {
    outgoing,
    messageIdProvider: { deallocate: () => undefined },
    reschedulePing: () => pings++,
  };
  return { client: client as unknown as MqttClient, acked, pings: () => pings };
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
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('publish' as const),
      id: fc.integer({ min: 1, max: 65535 }),
      size: fc.oneof(
        fc.integer({ min: 0, max: 200 }),
        fc.constantFrom(113, 114, 115, 16_370, 16_371, 16_380),
      ),
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

describe('PubackTap', () => {
  it('takes whole chunks of pending success PUBACKs only, and mqtt.js parses the rest in step', () => {
    fc.assert(
      fc.property(
        fc.array(itemArb, { maxLength: 30 }),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 30 }),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 30 }),
        (items, cuts, idles) => {
          // distinct ids, so that which publish each PUBACK settles is known
          const seen = new Set<number>();
          const unique = items.filter((it) => {
            if (!('id' in it)) return true;
            if (seen.has(it.id)) return false;
            seen.add(it.id);
            return true;
          });
          const pending = unique.flatMap((it) => (it.kind === 'ack' && it.pending ? [it.id] : []));
          const f = fakeClient(pending);
          const tap = new PubackTap(f.client);
          const parser = mqttPacket.parser(V5);
          const parsed: { cmd: string; messageId?: number }[] = [];
          parser.on('packet', (p: { cmd: string; messageId?: number }) => parsed.push(p));
          parser.on('error', (err: Error) => assert.fail(err));

          // the stream cut into chunks: a packet per chunk as often as across packets
          const packets = unique.map(bytes);
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
          // expected: a chunk that is whole pending success PUBACKs from a boundary, idle
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
          chunks.forEach((chunk, i) => {
            const idle = idles[i % idles.length] ?? true;
            const first = starts.get(offset);
            const end = starts.get(offset + chunk.length);
            const ids: number[] = [];
            let allAcks = chunk.length > 0 && first !== undefined && end !== undefined;
            for (let q = first ?? 0; allAcks && q < (end ?? 0); q++) {
              const it = unique[q];
              allAcks = it?.kind === 'ack' && it.pending;
              if (it?.kind === 'ack') ids.push(it.id);
            }
            const expect = idle && allAcks;
            if (expect) {
              expectedTaken++;
              takenIds.push(...ids);
            }
            const taken = tap.take(chunk, idle);
            assert.equal(taken, expect, `chunk ${i}`);
            if (!taken) parser.parse(chunk);
            offset += chunk.length;
          });
          assert.equal(tap.taken, expectedTaken);
          assert.deepEqual(f.acked, takenIds);
          assert.equal(f.pings(), takenIds.length);
          // mqtt.js got every packet but the taken PUBACKs, whole and in order
          const remaining = unique.filter((it) => !(it.kind === 'ack' && takenIds.includes(it.id)));
          assert.deepEqual(
            parsed.map((p) => [p.cmd, p.messageId]),
            remaining.map((it) => [
              it.kind === 'ack' || it.kind === 'refused' ? 'puback' : it.kind,
              'id' in it ? it.id : undefined,
            ]),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it('takes a read of several PUBACKs at once, and none while mqtt.js is not idle', () => {
    const f = fakeClient([1, 2, 3]);
    const tap = new PubackTap(f.client);
    const two = Buffer.concat([
      bytes({ kind: 'ack', id: 1, pending: true }),
      bytes({ kind: 'ack', id: 2, pending: true }),
    ]);
    assert.equal(tap.take(bytes({ kind: 'ack', id: 3, pending: true }), false), false);
    assert.equal(tap.take(two, true), true);
    assert.deepEqual(f.acked, [1, 2]);
  });

  it('stops taking after a length it cannot follow', () => {
    const f = fakeClient([9]);
    const tap = new PubackTap(f.client);
    assert.equal(tap.take(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), true), false);
    assert.equal(tap.take(bytes({ kind: 'ack', id: 9, pending: true }), true), false);
    assert.deepEqual(f.acked, []);
  });
});
