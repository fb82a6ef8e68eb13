/**
 * The PUBACKs of our QoS 1 publishes, and the QoS 0 and 1 PUBLISHes the broker sends us, taken
 * off the broker socket before mqtt.js's parser.
 *
 * Why our own code where mqtt.js parses: every uplink's PUBACK, and a platform reply's
 * PUBLISH, went from the socket through a stream pipe into mqtt.js's Writable, mqtt-packet's
 * parser (a `bl` BufferList whose every one- and two-byte read slices and copies a new
 * Buffer, a `debug` call per step, a packet object) and mqtt.js's packet pump and handlers:
 * about a tenth of a publish-only uplink's instructions for the PUBACK, four or five bytes,
 * and for the reply mqtt-packet's `parse` and mqtt.js's `handle`, 30–45 k instructions per
 * reply uplink (bench/history/uplink.md, "The MQTT path" and "i11-replyparse"). The tap
 * reads a chunk the socket receives before it is pushed to its readers; a chunk made only of
 * whole packets it fully understands — success PUBACKs ({@link successPubackSize}) of
 * publishes mqtt.js has pending, PUBLISHes our strict parser takes (received-publish.ts) —
 * starting where a packet starts, is handled here in order, as mqtt.js's handlers would, and
 * never reaches mqtt.js. Every other chunk goes to mqtt.js unchanged (with a PUBACK of a
 * refusal or of an unknown id, a QoS 2 PUBLISH, a topic alias, a malformed packet, anything
 * else in it, or a packet split across reads), and the tap only follows where its packets
 * end. mqtt.js's parser therefore sees the same stream minus whole packets, and stays in
 * step; nothing is half handled by both. After any mqtt.js error (its parser's, on a
 * malformed packet, leaves it out of step) the tap takes nothing more ({@link InboundTap.stop}).
 *
 * Order: a chunk is only taken when mqtt.js has handled everything before it: the socket
 * is flowing with nothing buffered (so every earlier chunk went to mqtt.js's Writable) and
 * the connection's owner handles messages synchronously (no `handleMessage` hook that holds
 * mqtt.js's packet pump: connection.ts installs the tap only then), so that what was written
 * to mqtt.js was handled before the next socket read.
 */
import type { Duplex } from 'node:stream';
import type { MqttClient } from 'mqtt';
import { parsePublish, readVarInt, u16, type ReceivedPublish } from './received-publish.js';

/** PUBACK packet type with no flags. */
const PUBACK = 0x40;
/** MQTT 5 PUBACK reason code 0x10: accepted, no subscriber (a success to mqtt.js). */
const NO_MATCHING_SUBSCRIBERS = 0x10;

/** A fixed header's Remaining Length is at most four bytes (MQTT §1.5.5). */
const MAX_LENGTH_BYTES = 4;

/**
 * What the tap does with a PUBLISH it takes: what mqtt.js would do with it (the connection's
 * `message` listener, then its `handleMessage`: the PUBACK of a QoS 1 message).
 */
export type DeliverPublish = (packet: ReceivedPublish) => void;

/**
 * Follows the packet boundaries of the bytes a broker sends (whatever the chunking) and says
 * which chunks are only whole packets it handles itself (success PUBACKs of pending
 * publishes; with a `deliver`, the PUBLISHes {@link parsePublish} takes).
 */
export class InboundTap {
  /** Bytes of the current packet's body still to come. */
  private rest = 0;
  /** Bytes of the current packet's fixed header seen so far (0: at a packet boundary). */
  private header = 0;
  private length = 0;
  private multiplier = 1;
  /** Lost track of the packets (a malformed length, or {@link stop}): takes nothing more. */
  private lost = false;
  /** Chunks taken so far (counts for tests). */
  taken = 0;
  /** The PUBLISHes of the chunk being settled, parsed before any is delivered. */
  private readonly publishes: ReceivedPublish[] = [];

  /**
   * `deliver`: takes PUBLISHes too (at `client.options.protocolVersion`); without it, only
   * PUBACKs.
   */
  constructor(
    private readonly client: MqttClient,
    private readonly deliver?: DeliverPublish,
  ) {}

  /**
   * Called with each chunk read from the socket, before anyone else sees it; `idle`: mqtt.js
   * has handled every earlier chunk. True: the chunk was only packets the tap handles, now
   * handled, and must not be passed on.
   */
  take(chunk: Buffer, idle: boolean): boolean {
    if (idle && this.header === 0 && this.rest === 0 && !this.lost && this.settle(chunk)) {
      this.taken++;
      return true;
    }
    this.follow(chunk);
    return false;
  }

  /**
   * Takes nothing from now on: mqtt.js reported an error (its parser's on a malformed packet,
   * after which mqtt-packet drops what it holds and no longer reads the packets where the tap
   * would; or any other), so every later byte goes to mqtt.js as it would without the tap.
   */
  stop(): void {
    this.lost = true;
  }

  /**
   * Handles the chunk's packets in order when it holds nothing else; false (nothing done)
   * otherwise. Every packet is checked (and each PUBLISH parsed) before the first is handled.
   */
  private settle(chunk: Buffer): boolean {
    const n = chunk.length;
    if (n === 0) return false;
    const outgoing = this.client.outgoing;
    const publishes = this.publishes;
    publishes.length = 0;
    let i = 0;
    while (i < n) {
      const size = successPubackSize(chunk, i);
      if (size > 0) {
        const id = u16(chunk, i + 2);
        if (outgoing[id]?.cmd !== 'publish') break;
        i += size;
        continue;
      }
      const end = this.deliver === undefined ? 0 : this.takePublish(chunk, i);
      if (end === 0) break;
      i = end;
    }
    if (i < n) {
      publishes.length = 0;
      return false;
    }
    let p = 0;
    for (i = 0; i < n;) {
      const size = successPubackSize(chunk, i);
      if (size > 0) {
        this.acked(u16(chunk, i + 2));
        i += size;
        continue;
      }
      const packet = publishes[p++];
      if (packet === undefined) break; // cannot be: every other packet was parsed above
      i += packetSize(packet.length);
      this.deliver?.(packet);
    }
    publishes.length = 0;
    return true;
  }

  /**
   * Parses the whole PUBLISH at `at` in `chunk` into {@link publishes}: the offset after it,
   * or 0 when there is none there that {@link parsePublish} takes.
   */
  private takePublish(chunk: Buffer, at: number): number {
    // the Remaining Length, at most four bytes and at its fewest (as packetSize counts it)
    const v = readVarInt(chunk, at + 1, chunk.length);
    if (v < 0) return 0;
    const start = at + 1 + (v & 7);
    const end = start + (v >>> 3);
    if (end > chunk.length) return 0;
    const level = this.client.options.protocolVersion ?? 4;
    const packet = parsePublish(chunk, chunk[at] ?? 0, start, end, level);
    if (packet === undefined) return 0;
    this.publishes.push(packet);
    return end;
  }

  /**
   * What mqtt.js does for a success PUBACK of a pending publish (handlers/index.js and
   * ack.js): restart the keep-alive, forget the publish and its packet id (its outgoing
   * store keeps nothing: connection.ts), then its callback. mqtt.js's queue of publishes
   * waiting for a packet id is never used by our connections (their packet ids never run
   * out), so there is nothing to start from it.
   */
  private acked(id: number): void {
    const client = this.client;
    const pending = client.outgoing[id];
    if (pending === undefined) return;
    client.reschedulePing();
    delete client.outgoing[id];
    client.messageIdProvider.deallocate(id);
    (pending.cb as (err?: Error) => void)(undefined);
  }

  /** Moves past the chunk's bytes: where the packet it ends in has got to. */
  private follow(chunk: Buffer): void {
    const n = chunk.length;
    let i = 0;
    while (i < n && !this.lost) {
      if (this.rest > 0) {
        const skip = Math.min(this.rest, n - i);
        this.rest -= skip;
        i += skip;
        continue;
      }
      const byte = chunk[i++] ?? 0;
      if (this.header === 0) {
        // the packet type byte
        this.header = 1;
        this.length = 0;
        this.multiplier = 1;
        continue;
      }
      this.length += (byte & 0x7f) * this.multiplier;
      this.multiplier *= 128;
      if ((byte & 0x80) === 0) {
        this.rest = this.length;
        this.header = 0;
      } else if (++this.header > MAX_LENGTH_BYTES) {
        this.lost = true;
      }
    }
  }
}

/** The size of a packet of Remaining Length `length` (its varint at its fewest bytes). */
function packetSize(length: number): number {
  return 1 + (length < 0x80 ? 1 : length < 0x4000 ? 2 : length < 0x200000 ? 3 : 4) + length;
}

/**
 * The size of the success PUBACK at `at` in `chunk` (whole in it), or 0 when there is none:
 * `40 02 id id` (3.1.1, and MQTT 5 with the reason code left out), `40 03 id id rc` and
 * `40 04 id id rc 00` (MQTT 5 with the reason code and no properties, as Mosquitto sends), with
 * a reason code mqtt.js takes for success: 0, or 0x10 "no matching subscribers".
 */
function successPubackSize(chunk: Buffer, at: number): number {
  if (chunk[at] !== PUBACK) return 0;
  const length = chunk[at + 1] ?? 0;
  if (length < 2 || length > 4 || at + 2 + length > chunk.length) return 0;
  if (length > 2) {
    const reason = chunk[at + 4];
    if (reason !== 0 && reason !== NO_MATCHING_SUBSCRIBERS) return 0;
    if (length === 4 && chunk[at + 5] !== 0) return 0;
  }
  return 2 + length;
}

/**
 * Installs a {@link InboundTap} on `socket`, mqtt.js's stream of `client`: its chunks pass the
 * tap before the socket's readers (mqtt.js's pipe) get them. With `deliver`, the PUBLISHes it
 * takes go there.
 */
export function tapInbound(
  client: MqttClient,
  socket: Duplex,
  deliver?: DeliverPublish,
): InboundTap {
  const tap = new InboundTap(client, deliver);
  // called with the socket as `this` below
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const push = socket.push;
  socket.push = function pushTapped(
    this: Duplex,
    chunk: unknown,
    encoding?: BufferEncoding,
  ): boolean {
    if (
      Buffer.isBuffer(chunk) &&
      tap.take(chunk, this.readableFlowing === true && this.readableLength === 0)
    ) {
      return true;
    }
    return push.call(this, chunk, encoding);
  };
  return tap;
}
