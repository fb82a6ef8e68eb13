/**
 * coap-edge's own QoS 1 PUBLISH (`src/bridge/mqtt/publish-packet.ts`) is byte for byte what
 * mqtt-packet (mqtt.js's writer) generates for the same packet, at MQTT 3.1.1 and 5, with and
 * without User Properties, across the one- to three-byte Remaining Length boundaries and
 * non-ASCII strings; what it does not encode is left to mqtt.js (undefined).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import fc from 'fast-check';
import type { IPublishPacket } from 'mqtt';
import type { IPubackPacket } from 'mqtt-packet';
import type { UserProperties } from '../../../src/bridge/mqtt/connection.js';
import { pubackPacket, publishPacket } from '../../../src/bridge/mqtt/publish-packet.js';

const require = createRequire(import.meta.url);
const mqttPacket = require('mqtt-packet') as {
  generate(packet: IPublishPacket | IPubackPacket, opts: { protocolVersion: number }): Buffer;
};

/** mqtt-packet's bytes for the packet mqtt.js's `publish` builds from coap-edge's options. */
function reference(
  topic: string,
  payload: Buffer,
  id: number,
  level: 4 | 5,
  userProperties: UserProperties | undefined,
): Buffer {
  const packet: IPublishPacket = {
    cmd: 'publish',
    topic,
    payload,
    qos: 1,
    retain: false,
    messageId: id,
    dup: false,
  };
  if (level === 5) {
    packet.properties =
      userProperties === undefined ? undefined : { userProperties: { ...userProperties } };
  }
  return mqttPacket.generate(packet, { protocolVersion: level });
}

function check(
  topic: string,
  payload: Buffer,
  id: number,
  level: 4 | 5,
  props: UserProperties | undefined,
): void {
  const ours = publishPacket(topic, payload, id, level, props);
  assert.ok(ours !== undefined);
  assert.deepEqual(ours, reference(topic, payload, id, level, props));
}

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

describe('publishPacket', () => {
  it("is mqtt-packet's PUBLISH for the bridge's packets", () => {
    const body = Buffer.from('{"id":"1","version":"1.0","params":{"measurepoints":{"t":21.5}}}');
    for (const level of [4, 5] as const) {
      check('/sys/pk/dk/thing/measurepoint/post', body, 1, level, undefined);
      check('/sys/pk/dk/thing/measurepoint/post', body, 65535, level, { traceparent: TRACEPARENT });
      check('a', Buffer.alloc(0), 256, level, undefined);
      check('/sys/ünï/cödé/€/𝄞', body, 4660, level, { schlüssel: 'wért', k: ['a', 'b', ''] });
    }
  });

  it('at the Remaining Length boundaries (one to three bytes)', () => {
    for (const level of [4, 5] as const) {
      for (const props of [undefined, { traceparent: TRACEPARENT }]) {
        const fixed = reference('t/x', Buffer.alloc(0), 7, level, props).length - 2;
        for (const target of [127, 128, 16_383, 16_384]) {
          for (const d of [-1, 0, 1]) {
            const n = target + d - fixed;
            if (n < 0) continue;
            check('t/x', Buffer.alloc(n, 0x5a), 7, level, props);
          }
        }
        check('t/x', Buffer.alloc(2_097_152, 1), 7, level, props);
      }
    }
  });

  it('on generated topics, payloads, ids and User Properties', () => {
    const text = fc.string({ unit: 'grapheme', maxLength: 40 });
    fc.assert(
      fc.property(
        text.filter((t) => t.length > 0),
        fc.uint8Array({ maxLength: 300 }),
        fc.integer({ min: 1, max: 65535 }),
        fc.constantFrom(4 as const, 5 as const),
        fc.option(
          fc.dictionary(
            text.filter((k) => k !== '__proto__'),
            fc.oneof(text, fc.array(text, { minLength: 1, maxLength: 3 })),
            { minKeys: 1, maxKeys: 4 },
          ),
          { nil: undefined },
        ),
        (topic, payload, id, level, props) => check(topic, Buffer.from(payload), id, level, props),
      ),
      { numRuns: 400 },
    );
  });

  it('leaves to mqtt.js what it does not encode: a string past a two-byte length', () => {
    const long = 'x'.repeat(65_536);
    assert.equal(publishPacket(long, Buffer.from('1'), 1, 4, undefined), undefined);
    assert.equal(publishPacket('t', Buffer.from('1'), 1, 5, { [long]: 'v' }), undefined);
    assert.equal(publishPacket('t', Buffer.from('1'), 1, 5, { k: ['v', long] }), undefined);
    // at 3.1.1 there are no properties to write, so none is checked
    assert.ok(publishPacket('t', Buffer.from('1'), 1, 4, { k: long }) !== undefined);
    check('y'.repeat(65_535), Buffer.from('1'), 1, 5, undefined);
  });

  it("pubackPacket is mqtt-packet's PUBACK of a success (what mqtt.js answers a QoS 1 message with)", () => {
    for (const level of [4, 5]) {
      for (const id of [1, 255, 256, 4660, 65535]) {
        const packet: IPubackPacket = { cmd: 'puback', messageId: id, reasonCode: 0 };
        assert.deepEqual(pubackPacket(id), mqttPacket.generate(packet, { protocolVersion: level }));
      }
    }
  });
});
