/**
 * A strict parser of the QoS 0 and 1 PUBLISH packets a broker sends us, for the tap that takes
 * whole packets off the broker socket before mqtt.js's parser (inbound-tap.ts).
 *
 * Why our own parser where mqtt-packet parses: a platform reply's PUBLISH went from the socket
 * through a stream pipe into mqtt.js's Writable and mqtt-packet's parser (a `bl` BufferList
 * whose every one- and two-byte read slices and copies a new Buffer, a `debug` call per step
 * even when off, a state machine of four steps per packet), then mqtt.js's packet pump and
 * handlers. Measured under callgrind per uplink with a reply: mqtt-packet's `parse` 19–33 k
 * instructions inclusive and mqtt.js's `handle` 10–13 k, the libraries 37–57 k in all; with
 * this parser and the tap, the libraries 1–3 k and the parse itself about 2.5 k
 * (bench/history/uplink.md, "i11-replyparse").
 *
 * It returns the packet mqtt-packet would (the same fields, topic, payload and MQTT 5
 * properties in the same shape), or undefined for anything it does not fully understand: QoS
 * 2 or 3, a DUP flag on QoS 0, packet id 0, an empty topic, a topic alias, a property other
 * than those a PUBLISH may carry, a property given twice that may only be given once, a
 * length that does not fit, a property that crosses the end of the properties. The caller
 * leaves those packets to mqtt.js unchanged: mqtt-packet is laxer and mqtt.js decides what a
 * malformed packet means.
 */
import type { IPublishPacket } from 'mqtt';

/** PUBLISH packet type in the high nibble of the first byte. */
const PUBLISH_TYPE = 3;

type PublishProperties = NonNullable<IPublishPacket['properties']>;
type UserProperties = NonNullable<PublishProperties['userProperties']>;

/** MQTT 5 property identifiers a PUBLISH may carry (MQTT 5 §3.3.2.3). */
const PAYLOAD_FORMAT_INDICATOR = 0x01;
const MESSAGE_EXPIRY_INTERVAL = 0x02;
const CONTENT_TYPE = 0x03;
const RESPONSE_TOPIC = 0x08;
const CORRELATION_DATA = 0x09;
const SUBSCRIPTION_IDENTIFIER = 0x0b;
const USER_PROPERTY = 0x26;

/** A Variable Byte Integer is at most four bytes (MQTT 5 §1.5.5). */
const MAX_VARINT_BYTES = 4;

/**
 * mqtt-packet's packet object for a PUBLISH: its fields in its order (`messageId` undefined
 * for QoS 0, `properties` undefined when there are none), one shape for every packet.
 */
export class ReceivedPublish implements IPublishPacket {
  readonly cmd = 'publish' as const;
  constructor(
    readonly retain: boolean,
    readonly qos: 0 | 1,
    readonly dup: boolean,
    /** The Remaining Length. */
    readonly length: number,
    readonly topic: string,
    readonly payload: Buffer,
    readonly messageId: number | undefined,
    readonly properties: PublishProperties | undefined,
  ) {}
}

/**
 * The PUBLISH whose first byte is `first` and whose variable header and payload (the
 * Remaining Length's bytes) are `chunk[start, end)`, at protocol `level` (4: 3.1.1, 5: MQTT
 * 5), or undefined when it is not one this parser takes (see the file comment).
 */
export function parsePublish(
  chunk: Buffer,
  first: number,
  start: number,
  end: number,
  level: number,
): ReceivedPublish | undefined {
  if (first >> 4 !== PUBLISH_TYPE) return undefined;
  const qos = (first >> 1) & 3;
  const dup = (first & 8) !== 0;
  if (qos > 1 || (qos === 0 && dup)) return undefined;
  let at = start;
  if (end - at < 2) return undefined;
  const topicLength = u16(chunk, at);
  at += 2;
  if (topicLength === 0 || end - at < topicLength) return undefined;
  const topic = chunk.toString('utf8', at, at + topicLength);
  at += topicLength;
  let messageId: number | undefined;
  if (qos === 1) {
    if (end - at < 2) return undefined;
    messageId = u16(chunk, at);
    if (messageId === 0) return undefined;
    at += 2;
  }
  let properties: PublishProperties | undefined;
  if (level === 5) {
    const v = readVarInt(chunk, at, end);
    if (v < 0) return undefined;
    const length = v >>> 3;
    at += v & 7;
    if (end - at < length) return undefined;
    if (length > 0) {
      properties = parseProperties(chunk, at, at + length);
      if (properties === undefined) return undefined;
      at += length;
    }
  }
  return new ReceivedPublish(
    (first & 1) !== 0,
    qos === 1 ? 1 : 0,
    dup,
    end - start,
    topic,
    chunk.subarray(at, end),
    messageId,
    properties,
  );
}

/** The big-endian 16-bit integer at `at` (a length or a packet id; the caller checked 2 bytes). */
export function u16(chunk: Buffer, at: number): number {
  return ((chunk[at] ?? 0) << 8) | (chunk[at + 1] ?? 0);
}

/**
 * The Variable Byte Integer at `at` in `chunk`, before `end`, as `value * 8 + its bytes` (one
 * number, no object: a value is below 2^28), or -1 when it runs past `end` or past four
 * bytes, or is not at its fewest bytes (MQTT 5 §1.5.5; mqtt-packet reads what it is given,
 * and those few packets are left to it).
 */
export function readVarInt(chunk: Buffer, at: number, end: number): number {
  let value = 0;
  let multiplier = 1;
  for (let k = 0; k < MAX_VARINT_BYTES && at + k < end; k++) {
    const byte = chunk[at + k] ?? 0;
    value += (byte & 0x7f) * multiplier;
    multiplier *= 128;
    if ((byte & 0x80) === 0) {
      // a last byte of 0 after others: not the fewest bytes
      return byte === 0 && k > 0 ? -1 : value * 8 + k + 1;
    }
  }
  return -1;
}

/**
 * The properties in `chunk[start, end)` as mqtt-packet gives them (an object with a key per
 * property in the order they first appear; `payloadFormatIndicator` a boolean; User
 * Properties in an object without prototype, a name given again making its value an array;
 * Subscription Identifiers, which may repeat, an array when they do), or undefined.
 */
function parseProperties(chunk: Buffer, start: number, end: number): PublishProperties | undefined {
  const props: PublishProperties = {};
  let at = start;
  while (at < end) {
    const id = chunk[at++] ?? 0;
    switch (id) {
      case PAYLOAD_FORMAT_INDICATOR: {
        const value = chunk[at];
        if (props.payloadFormatIndicator !== undefined || at >= end || value === undefined) {
          return undefined;
        }
        if (value > 1) return undefined;
        props.payloadFormatIndicator = value !== 0;
        at++;
        break;
      }
      case MESSAGE_EXPIRY_INTERVAL:
        if (props.messageExpiryInterval !== undefined || end - at < 4) return undefined;
        props.messageExpiryInterval = chunk.readUInt32BE(at);
        at += 4;
        break;
      case CONTENT_TYPE:
      case RESPONSE_TOPIC: {
        const key = id === CONTENT_TYPE ? 'contentType' : 'responseTopic';
        if (props[key] !== undefined || end - at < 2) return undefined;
        const n = u16(chunk, at);
        at += 2;
        if (end - at < n) return undefined;
        props[key] = chunk.toString('utf8', at, at + n);
        at += n;
        break;
      }
      case CORRELATION_DATA: {
        if (props.correlationData !== undefined || end - at < 2) return undefined;
        const n = u16(chunk, at);
        at += 2;
        if (end - at < n) return undefined;
        props.correlationData = chunk.subarray(at, at + n);
        at += n;
        break;
      }
      case SUBSCRIPTION_IDENTIFIER: {
        const v = readVarInt(chunk, at, end);
        // 0 is a protocol error (MQTT 5 §3.3.2.3.8)
        if (v < 8) return undefined;
        const value = v >>> 3;
        at += v & 7;
        const seen = props.subscriptionIdentifier;
        if (seen === undefined) props.subscriptionIdentifier = value;
        else if (typeof seen === 'number') props.subscriptionIdentifier = [seen, value];
        else seen.push(value);
        break;
      }
      case USER_PROPERTY: {
        if (end - at < 2) return undefined;
        const nameLength = u16(chunk, at);
        at += 2;
        if (end - at < nameLength + 2) return undefined;
        const name = chunk.toString('utf8', at, at + nameLength);
        at += nameLength;
        const valueLength = u16(chunk, at);
        at += 2;
        if (end - at < valueLength) return undefined;
        const value = chunk.toString('utf8', at, at + valueLength);
        at += valueLength;
        addUserProperty(props, name, value);
        break;
      }
      default:
        // a topic alias (mqtt.js keeps the alias table), or a property a PUBLISH may not carry
        return undefined;
    }
  }
  return props;
}

/**
 * mqtt-packet's way with a User Property: the first value of a name as a string, later ones
 * making it an array; a name whose value so far is the empty string is overwritten rather
 * than made an array (mqtt-packet tests the value's truthiness), so it is here too.
 */
function addUserProperty(props: PublishProperties, name: string, value: string): void {
  let user = props.userProperties;
  if (user === undefined) {
    user = Object.create(null) as UserProperties;
    props.userProperties = user;
  }
  const seen = user[name];
  if (seen === undefined || seen === '') user[name] = value;
  else if (typeof seen === 'string') user[name] = [seen, value];
  else seen.push(value);
}
