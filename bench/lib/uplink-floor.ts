/**
 * The floor reference of bench/uplink.ts: the least a correct Node gateway must do
 * per uplink, in a process of its own so its CPU per message can be set beside coap-edge's.
 * The bench starts it as the `floorReply` / `floorPublish` phases.
 *
 * Handshakes are not measured, so they are left to coap-edge's own `DtlsServer` (src/dtls),
 * set up by bench/lib/floor-takeover.ts: association sharing on an in-process store hands the
 * floor each completed association's keys and first write sequence number, and from then on
 * the floor handles that peer's records itself — read only, nothing in src/ changed.
 * Everything else (ClientHello, handshake records, records of peers it does not know) still
 * goes to the DtlsServer.
 *
 * The measured path, per datagram, is this file's own straight code:
 *   DTLS record header, every length checked → AES-128-CCM-8 open with node:crypto (nonce =
 *   salt ‖ explicit nonce, AAD = epoch ‖ seq ‖ type ‖ version ‖ length) → 64-bit replay window
 *   (src/dtls/replay-window.ts: a 60-line pure class, the window any gateway needs) → CoAP
 *   header, token, options (delta/length extensions checked) and payload → the Uri-Path
 *   `/topic/sys/{pk}/{dk}/...` must name the association's own device → JSON.parse of the
 *   body for its `id` → mqtt.js publish QoS 1 on `/sys/{pk}/{dk}/...` (MQTT 5, as coap-edge's
 *   `mqttProtocol: auto` gets from Mosquitto 2), the socket corked for the event-loop turn
 *   and uncorked on setImmediate → PUBACK (publish flavour) or PUBACK and the platform's
 *   message on `{topic}_reply` whose JSON `id` is the request's (reply flavour; one wildcard
 *   subscription made at start) → CoAP 2.04 piggybacked ACK carrying the reply (Content-Format
 *   JSON) → AES-128-CCM-8 seal → UDP send.
 * A topic whose last level is `post` expects a reply (EnOS uplinks), any other is publish only.
 * Replies not there after --reply-timeout ms are answered 5.04 (checked once a second).
 *
 * Deliberately left out (so the ratio coap-edge / floor is the price of these, and of
 * coap-edge's structure): tracing, metrics, logs; CoAP message deduplication (a retransmitted
 * CON is published again); separate responses (the answer is always piggybacked); blockwise;
 * Connection IDs (the server negotiates none: cidLength 0); authorisation beyond the key and
 * the topic naming the device (no activation, rate limits, routes, command look-ups, TTD);
 * per-reply-topic subscriptions (one wildcard for the measurepoint replies of --product-key);
 * a pool of MQTT connections (one), reconnects, MQTT backpressure; association limits,
 * idle expiry, peer address moves and sharing of the floor's side; answering close_notify
 * (the device's close_notify drops the floor's association, the DtlsServer's copy idles out).
 *
 * Usage: node dist/bench/lib/uplink-floor.js --port <udp> --devices <file> --mqtt-url <url>
 *   --product-key <pk> [--reply-timeout 10000]   (listens on 127.0.0.1)
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect, type MqttClient } from 'mqtt';
import { ReplayWindow } from '../../src/dtls/replay-window.js';
import {
  EXPLICIT_NONCE,
  RECORD_HEADER,
  TAG,
  checkRecord,
  floorDatagrams,
  newRecord,
  peerKey,
  takeOverServer,
  type FloorPeer,
} from './floor-takeover.js';

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : fallback;
  if (v === undefined) {
    process.stderr.write(`uplink-floor: --${name} missing\n`);
    process.exit(2);
  }
  return v;
}

const HOST = '127.0.0.1';
const port = Number(arg('port'));
const mqttUrl = arg('mqtt-url');
const productKey = arg('product-key');
const replyTimeoutMs = Number(arg('reply-timeout', '10000'));

/** CoAP: ACK, 2.04 Changed, 4.00, 4.03, 4.04, 5.02, 5.04, Uri-Path, Content-Format JSON. */
const COAP_ACK = 2;
const CHANGED = 0x44;
const BAD_REQUEST = 0x80;
const FORBIDDEN = 0x83;
const NOT_FOUND = 0x84;
const BAD_GATEWAY = 0xa2;
const GATEWAY_TIMEOUT = 0xa4;
const POST = 2;
const URI_PATH = 11;
const CONTENT_FORMAT = 12;
const JSON_FORMAT = 50;

/** One association the floor took over from the DtlsServer. */
interface Peer extends FloorPeer {
  readonly readKey: Buffer;
  readonly writeKey: Buffer;
  /** `sys/{pk}/{dk}/` of the identity: the only topics this device may post to. */
  readonly topicPrefix: string;
}

/** A request waiting for its PUBACK and (reply flavour) its platform reply. */
interface Pending {
  readonly peer: Peer;
  readonly messageId: number;
  readonly token: Buffer;
  readonly startedAt: number;
  acked: boolean;
  reply: Buffer | undefined;
}

// --- handshakes: coap-edge's DtlsServer, keys read from the snapshot it stores ---------------

const peers = new Map<string, Peer>();
const socket = createSocket('udp4');
const dtls = takeOverServer({
  devicesFile: arg('devices'),
  send: (data, p, address) => socket.send(data, p, address),
  onPeer: (s, txNext) => {
    const [pk, dk] = s.identity.split(',');
    const salt = (k: Buffer): Buffer => Buffer.concat([k, Buffer.alloc(EXPLICIT_NONCE)]);
    peers.set(peerKey(s.address, s.port), {
      address: s.address,
      port: s.port,
      epoch: s.epoch,
      readKey: s.client.encKey,
      writeKey: s.server.encKey,
      readNonce: salt(s.client.salt),
      writeNonce: salt(s.server.salt),
      aad: Buffer.alloc(13),
      window: new ReplayWindow(),
      writeSeq: txNext,
      topicPrefix: `sys/${pk}/${dk}/`,
    });
  },
});

// --- MQTT: one connection, writes corked per event-loop turn ---------------------------------

const pending = new Map<string, Pending>();
const mqtt: MqttClient = connect(mqttUrl, {
  protocolVersion: 5,
  clientId: `bench-floor-${process.pid}`,
  clean: true,
  reconnectPeriod: 0,
});
let corked = false;
function uncork(): void {
  corked = false;
  mqtt.stream.uncork();
}
function cork(): void {
  if (corked) return;
  corked = true;
  mqtt.stream.cork();
  setImmediate(uncork);
}

mqtt.on('error', (err) => process.stderr.write(`uplink-floor: mqtt ${err.message}\n`));
mqtt.on('close', () => {
  process.stderr.write('uplink-floor: mqtt connection closed\n');
  process.exit(1);
});
mqtt.on('message', (topic, payload) => {
  const id = jsonId(payload);
  if (id === undefined) return;
  const key = `${topic} ${id}`;
  const p = pending.get(key);
  if (p === undefined) return;
  if (p.acked) {
    pending.delete(key);
    answer(p.peer, p.messageId, p.token, CHANGED, payload);
  } else p.reply = payload;
});

function jsonId(payload: Buffer): string | undefined {
  try {
    const id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
    return typeof id === 'string' ? id : typeof id === 'number' ? String(id) : undefined;
  } catch {
    return undefined;
  }
}

setInterval(() => {
  const before = performance.now() - replyTimeoutMs;
  for (const [key, p] of pending) {
    if (p.startedAt > before) continue;
    pending.delete(key);
    answer(p.peer, p.messageId, p.token, GATEWAY_TIMEOUT, undefined);
  }
}, 1000).unref();

// --- the record path -------------------------------------------------------------------------

socket.on('message', floorDatagrams(dtls, peers, open, onCoap));

/** The plaintext of the record at `offset`, or undefined (dropped silently, RFC 6347). */
function open(peer: Peer, msg: Buffer, offset: number, length: number): Buffer | undefined {
  const seq = checkRecord(peer, msg, offset, length);
  if (seq < 0) return undefined;
  const body = offset + RECORD_HEADER;
  const plainLength = length - EXPLICIT_NONCE - TAG;
  msg.copy(peer.readNonce, 4, body, body + EXPLICIT_NONCE);
  const d = createDecipheriv('aes-128-ccm', peer.readKey, peer.readNonce, { authTagLength: TAG });
  d.setAuthTag(msg.subarray(body + length - TAG, body + length));
  d.setAAD(peer.aad, { plaintextLength: plainLength });
  const plain = d.update(msg.subarray(body + EXPLICIT_NONCE, body + length - TAG));
  try {
    d.final();
  } catch {
    return undefined;
  }
  peer.window.accept(seq);
  return plain;
}

/** Read position of {@link extended} (module state: no allocation per option). */
let at = 0;

/** An option delta or length nibble with its extension bytes at `at` (RFC 7252 §3.1); -1 when cut off. */
function extended(m: Buffer, nibble: number): number {
  if (nibble < 13) return nibble;
  if (nibble === 13) return at + 1 > m.length ? -1 : 13 + m[at++]!;
  if (at + 2 > m.length) return -1;
  at += 2;
  return 269 + m.readUInt16BE(at - 2);
}

/** Parses a CoAP request and starts its publish; answers errors at once. */
function onCoap(peer: Peer, m: Buffer): void {
  if (m.length < 4 || m[0]! >> 6 !== 1) return;
  const type = (m[0]! >> 4) & 3;
  const tkl = m[0]! & 15;
  const code = m[1]!;
  const messageId = m.readUInt16BE(2);
  if (tkl > 8 || m.length < 4 + tkl) return;
  if (type !== 0) return; // CON only: NON, ACK and RST are not requests we answer here
  const token = m.subarray(4, 4 + tkl);
  let i = 4 + tkl;
  let number = 0;
  let path = '';
  let payload: Buffer | undefined;
  while (i < m.length) {
    const b = m[i++]!;
    if (b === 0xff) {
      if (i >= m.length) return answer(peer, messageId, token, BAD_REQUEST, undefined);
      payload = m.subarray(i);
      break;
    }
    if (b >> 4 === 15 || (b & 15) === 15) {
      return answer(peer, messageId, token, BAD_REQUEST, undefined);
    }
    at = i;
    const delta = extended(m, b >> 4);
    const len = extended(m, b & 15);
    if (delta < 0 || len < 0) return;
    i = at;
    if (i + len > m.length) return answer(peer, messageId, token, BAD_REQUEST, undefined);
    number += delta;
    if (number === URI_PATH) path += `/${m.toString('utf8', i, i + len)}`;
    i += len;
  }
  // /topic/sys/{pk}/{dk}/...: the MQTT topic is what follows /topic
  if (code !== POST || !path.startsWith('/topic/')) {
    return answer(peer, messageId, token, NOT_FOUND, undefined);
  }
  const topic = path.slice(6);
  if (!topic.startsWith(peer.topicPrefix, 1)) {
    return answer(peer, messageId, token, FORBIDDEN, undefined);
  }
  if (payload === undefined) return answer(peer, messageId, token, BAD_REQUEST, undefined);
  const wantsReply = topic.endsWith('/post');
  const id = wantsReply ? jsonId(payload) : undefined;
  if (wantsReply && id === undefined) return answer(peer, messageId, token, BAD_REQUEST, undefined);
  const p: Pending = {
    peer,
    messageId,
    token: Buffer.from(token),
    startedAt: performance.now(),
    acked: false,
    reply: undefined,
  };
  const key = wantsReply ? `${topic}_reply ${id}` : undefined;
  if (key !== undefined) pending.set(key, p);
  cork();
  mqtt.publish(topic, payload, { qos: 1 }, (err) => {
    if (err !== undefined && err !== null) {
      if (key !== undefined) pending.delete(key);
      answer(peer, messageId, p.token, BAD_GATEWAY, undefined);
    } else if (key === undefined) answer(peer, messageId, p.token, CHANGED, undefined);
    else if (p.reply !== undefined) {
      pending.delete(key);
      answer(peer, messageId, p.token, CHANGED, p.reply);
    } else p.acked = true;
  });
}

/** A piggybacked ACK with `code` (and a JSON payload), sealed and sent. */
function answer(
  peer: Peer,
  messageId: number,
  token: Buffer,
  code: number,
  payload: Buffer | undefined,
): void {
  const coapLength = 4 + token.length + (payload !== undefined ? 2 + 1 + payload.length : 0);
  const plain = Buffer.allocUnsafe(coapLength);
  plain[0] = 0x40 | (COAP_ACK << 4) | token.length;
  plain[1] = code;
  plain.writeUInt16BE(messageId, 2);
  token.copy(plain, 4);
  if (payload !== undefined) {
    let i = 4 + token.length;
    plain[i++] = (CONTENT_FORMAT << 4) | 1;
    plain[i++] = JSON_FORMAT;
    plain[i++] = 0xff;
    payload.copy(plain, i);
  }
  const record = newRecord(peer, coapLength);
  const c = createCipheriv('aes-128-ccm', peer.writeKey, peer.writeNonce, { authTagLength: TAG });
  c.setAAD(peer.aad, { plaintextLength: coapLength });
  const body = c.update(plain);
  c.final();
  body.copy(record, RECORD_HEADER + EXPLICIT_NONCE);
  c.getAuthTag().copy(record, RECORD_HEADER + EXPLICIT_NONCE + coapLength);
  socket.send(record, peer.port, peer.address);
}

// --- start-up --------------------------------------------------------------------------------

mqtt.once('connect', () => {
  (mqtt.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
  const filter = `/sys/${productKey}/+/thing/measurepoint/post_reply`;
  mqtt.subscribe(filter, { qos: 1 }, (err) => {
    if (err !== undefined && err !== null) {
      process.stderr.write(`uplink-floor: subscribe failed: ${err.message}\n`);
      process.exit(1);
    }
    socket.bind(port, HOST, () => process.stderr.write(`uplink-floor: listening on ${port}\n`));
  });
});
process.on('SIGTERM', () => {
  dtls.close();
  socket.close();
  mqtt.end(true, () => process.exit(0));
});
