/**
 * The bytes of a QoS 1 PUBLISH, in one Buffer, for {@link MqttConnection.publish}
 * (connection.ts), which writes it on mqtt.js's stream itself, and of the PUBACK it writes for
 * a QoS 1 message received.
 *
 * Why our own encoder where mqtt.js and mqtt-packet exist: per QoS 1 publish, mqtt.js's
 * `publish` spreads its defaults and the options into a new object, builds the packet, deep-
 * copies it with `rfdc` (the payload too: a new Buffer and a copy) for its outgoing store, and
 * mqtt-packet's writer then makes six to eight `stream.write` calls (header, length, topic
 * length, topic, packet id, properties, payload; a closure pair per MQTT 5 properties block).
 * With our connections none of that store is needed (a fresh client per attempt, clean
 * session, no resend: connection.ts says why), and one write of one Buffer is the same bytes.
 * Likewise the PUBACK mqtt.js answers a QoS 1 message received with: a packet object through
 * its `_sendPacket` and mqtt-packet's writer (three writes, a cork and a next-tick uncork), for
 * four bytes.
 * bench/history/uplink.md, "The MQTT path", has the figures.
 *
 * Only the case coap-edge sends is encoded here (QoS 1, no retain, no DUP, no topic alias;
 * MQTT 5 properties: user properties only); the rest stays with mqtt.js. The bytes are
 * mqtt-packet's for the same packet (test/unit/bridge/publish-packet.test.ts compares them).
 */
import type { UserProperties } from './connection.js';

/** PUBLISH (3), QoS 1, no DUP, no RETAIN. */
const PUBLISH_QOS1 = 0x32;
/** PUBACK (4). */
const PUBACK = 0x40;
/** MQTT 5 property identifier of a User Property (a UTF-8 string pair). */
const USER_PROPERTY = 0x26;
/** Largest Remaining Length a four-byte variable byte integer holds (MQTT §1.5.5). */
const MAX_REMAINING = 268_435_455;
const MAX_U16 = 0xffff;

/**
 * The PUBLISH packet of `payload` on `topic` with packet id `messageId` at protocol `level`
 * (4: 3.1.1, 5: MQTT 5, with `userProperties` as User Properties), or undefined when it is not
 * one this encoder writes (a string longer than a two-byte length, a packet past MQTT's
 * largest): the caller leaves those to mqtt.js.
 */
export function publishPacket(
  topic: string,
  payload: Buffer,
  messageId: number,
  level: 4 | 5,
  userProperties: UserProperties | undefined,
): Buffer | undefined {
  const topicLength = Buffer.byteLength(topic, 'utf8');
  if (topicLength > MAX_U16) return undefined;
  let propertiesLength = 0;
  if (level === 5 && userProperties !== undefined) {
    propertiesLength = userPropertiesLength(userProperties);
    if (propertiesLength < 0) return undefined;
  }
  let remaining = 2 + topicLength + 2 + payload.length;
  if (level === 5) remaining += varIntSize(propertiesLength) + propertiesLength;
  if (remaining > MAX_REMAINING) return undefined;
  const buf = Buffer.allocUnsafe(1 + varIntSize(remaining) + remaining);
  buf[0] = PUBLISH_QOS1;
  let at = writeVarInt(buf, 1, remaining);
  at = writeString(buf, at, topic);
  buf[at] = messageId >>> 8;
  buf[at + 1] = messageId & 0xff;
  at += 2;
  if (level === 5) {
    at = writeVarInt(buf, at, propertiesLength);
    if (userProperties !== undefined && propertiesLength > 0) {
      at = writeUserProperties(buf, at, userProperties);
    }
  }
  payload.copy(buf, at);
  return buf;
}

/**
 * The PUBACK of a QoS 1 message received with packet id `messageId`: success at 3.1.1 and at
 * MQTT 5 (reason code 0 and no properties are left out, §3.4.2.1), as mqtt-packet writes it.
 */
export function pubackPacket(messageId: number): Buffer {
  const buf = Buffer.allocUnsafe(4);
  buf[0] = PUBACK;
  buf[1] = 2;
  buf[2] = messageId >>> 8;
  buf[3] = messageId & 0xff;
  return buf;
}

function varIntSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : 4;
}

function writeVarInt(buf: Buffer, at: number, n: number): number {
  let rest = n;
  do {
    let byte = rest & 0x7f;
    rest >>>= 7;
    if (rest > 0) byte |= 0x80;
    buf[at++] = byte;
  } while (rest > 0);
  return at;
}

/**
 * The bytes of `props` as User Properties, in mqtt-packet's order (own property names; an
 * array value is one pair per element), or -1 when a string is longer than a two-byte length.
 */
function userPropertiesLength(props: UserProperties): number {
  let length = 0;
  for (const name of Object.getOwnPropertyNames(props)) {
    const nameLength = Buffer.byteLength(name, 'utf8');
    if (nameLength > MAX_U16) return -1;
    const value = props[name];
    const values = typeof value === 'string' ? [value] : (value ?? []);
    for (const v of values) {
      const valueLength = Buffer.byteLength(v, 'utf8');
      if (valueLength > MAX_U16) return -1;
      length += 1 + 2 + nameLength + 2 + valueLength;
    }
  }
  return length;
}

function writeUserProperties(buf: Buffer, start: number, props: UserProperties): number {
  let at = start;
  for (const name of Object.getOwnPropertyNames(props)) {
    const value = props[name];
    const values = typeof value === 'string' ? [value] : (value ?? []);
    for (const v of values) {
      buf[at++] = USER_PROPERTY;
      at = writeString(buf, at, name);
      at = writeString(buf, at, v);
    }
  }
  return at;
}

function writeString(buf: Buffer, at: number, s: string): number {
  const n = buf.write(s, at + 2, 'utf8');
  buf[at] = n >>> 8;
  buf[at + 1] = n & 0xff;
  return at + 2 + n;
}
