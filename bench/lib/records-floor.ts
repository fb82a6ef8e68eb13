/**
 * The floor reference of bench/dtls-records.ts: the least a correct Node server must do per
 * request of that bench, in a process of its own so its CPU per request can be set beside
 * coap-edge's and libcoap's.
 *
 * Handshakes are not measured: coap-edge's own `DtlsServer` does them and hands each
 * completed CCM_8 association to this program (bench/lib/floor-takeover.ts). From then on,
 * per datagram of a known peer, this file's own straight code:
 *   DTLS record header, every length checked → AES-128-CCM-8 open on the long-lived
 *   node:crypto objects coap-edge uses (`Ccm8` of src/dtls/record-cipher.ts: an ECB keystream
 *   and a running CBC-MAC, two objects per direction made once per association) → 64-record
 *   replay window (src/dtls/replay-window.ts) → CoAP header, token and options (delta and
 *   length extensions checked; a message format error is dropped) → piggybacked ACK 4.04
 *   with the token → AES-128-CCM-8 seal → UDP send.
 * Left out (so coap-edge / floor is the price of these and of coap-edge's structure): tracing,
 * metrics, logs, deduplication, routing, blockwise, Connection IDs, association limits, idle
 * expiry, address moves, answering close_notify (it only drops the floor's association).
 *
 * With `--native crypto` the two CCM_8 objects per direction are one OpenSSL EVP AES-128-CCM
 * context each instead, one native call per record; with `--native io` the socket is not
 * node:dgram but a UDP socket read with recvmmsg into a preallocated arena, one JavaScript
 * call per batch of datagrams, answers sent with one sendmmsg after the batch, peers keyed by
 * a number instead of an address string; `--native crypto,io` both. Bench-only prototypes
 * (bench/native/edge_native.c, `npm run bench:native`; bench/history/native.md "What a native
 * path would gain"); `RECORDS_FLOOR_NATIVE=crypto,io` in the environment does the same). Everything
 * else is the same code.
 *
 * With `--echo <bytes>` it is the pure Node UDP cost instead: no DTLS at all, every datagram
 * is answered with one preallocated datagram of that many bytes (bench/lib/records-load.ts
 * `runUdpEcho` sends datagrams the size of the bench's request records).
 *
 * Usage: node dist/bench/lib/records-floor.js --port <udp> (--devices <file> [--native
 *   crypto,io] [--batch <n>] | --echo <bytes>)   (listens on 127.0.0.1)
 */
import { createSocket } from 'node:dgram';
import { isIPv4 } from 'node:net';
import { Ccm8 } from '../../src/dtls/record-cipher.js';
import { ReplayWindow } from '../../src/dtls/replay-window.js';
import {
  EXPLICIT_NONCE,
  RECORD_HEADER,
  TAG,
  checkRecord,
  floorDatagrams,
  floorRecords,
  newRecord,
  peerKey,
  peerRecordType,
  takeOverServer,
  type FloorPeer,
} from './floor-takeover.js';
import {
  NATIVE_MAX_BATCH,
  NATIVE_SLOT,
  loadNative,
  type EdgeNative,
  type NativeHandle,
} from './native.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const HOST = '127.0.0.1';
const port = Number(arg('port'));
const echoBytes = arg('echo');
const devicesFile = arg('devices');
// also from the environment, for drivers that start the floor with fixed arguments
// (bench/instructions.js --server floor)
const nativeArg = arg('native') ?? process.env.RECORDS_FLOOR_NATIVE ?? '';
const nativeParts = new Set(nativeArg.split(',').filter((x) => x !== ''));
const nativeCrypto = nativeParts.has('crypto');
const nativeIo = nativeParts.has('io');
const batch = Number(arg('batch') ?? NATIVE_MAX_BATCH);
const native: EdgeNative | undefined = nativeParts.size > 0 ? loadNative() : undefined;

const COAP_ACK = 2;
const NOT_FOUND = 0x84;

/** `Ccm8`'s two calls on one EVP AES-128-CCM context (`--native crypto`). */
class NativeCcm8 {
  private readonly ctx: NativeHandle;

  constructor(
    private readonly n: EdgeNative,
    key: Buffer,
    encrypt: boolean,
  ) {
    this.ctx = n.ccmNew(key, encrypt);
  }

  seal(nonce: Buffer, aad: Buffer, plaintext: Buffer, out: Buffer, at: number): void {
    this.n.ccmSeal(this.ctx, nonce, aad, plaintext, out, at);
  }

  open(nonce: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer): Buffer | undefined {
    const pt = Buffer.allocUnsafe(ciphertext.length);
    return this.n.ccmOpen(this.ctx, nonce, aad, ciphertext, tag, pt) ? pt : undefined;
  }
}

/** One association the floor took over from the DtlsServer. */
interface Peer extends FloorPeer {
  readonly read: Ccm8 | NativeCcm8;
  readonly write: Ccm8 | NativeCcm8;
  /** The IPv4 address as a number (`--native io`). */
  readonly ip: number;
}

const socket = createSocket('udp4');
const peers = new Map<string, Peer>();

function nonceOf(salt: Buffer): Buffer {
  const n = Buffer.alloc(4 + EXPLICIT_NONCE);
  salt.copy(n, 0, 0, 4);
  return n;
}

/** The plaintext of the record at `offset`, or undefined (dropped silently, RFC 6347). */
function open(peer: Peer, msg: Buffer, offset: number, length: number): Buffer | undefined {
  const seq = checkRecord(peer, msg, offset, length);
  if (seq < 0) return undefined;
  const body = offset + RECORD_HEADER;
  const end = body + length;
  msg.copy(peer.readNonce, 4, body, body + EXPLICIT_NONCE);
  const plain = peer.read.open(
    peer.readNonce,
    peer.aad,
    msg.subarray(body + EXPLICIT_NONCE, end - TAG),
    msg.subarray(end - TAG, end),
  );
  if (plain !== undefined) peer.window.accept(seq);
  return plain;
}

/** Skips an option delta or length nibble's extension bytes at `i`; -1 when cut off. */
function skipExtension(m: Buffer, i: number, nibble: number): number {
  const next = nibble === 13 ? i + 1 : nibble === 14 ? i + 2 : i;
  return next > m.length ? -1 : next;
}

/** An option's length from its nibble and extension bytes at `i`. */
function optionLength(m: Buffer, i: number, nibble: number): number {
  if (nibble === 13) return 13 + m[i]!;
  if (nibble === 14) return 269 + m.readUInt16BE(i);
  return nibble;
}

/** Parses a CoAP CON request and answers it ACK 4.04; anything malformed is dropped. */
function onCoap(peer: Peer, m: Buffer): void {
  if (m.length < 4 || m[0]! >> 6 !== 1) return;
  const type = (m[0]! >> 4) & 3;
  const tkl = m[0]! & 15;
  if (tkl > 8 || m.length < 4 + tkl || type !== 0) return;
  let i = 4 + tkl;
  while (i < m.length) {
    const b = m[i++]!;
    if (b === 0xff) {
      if (i >= m.length) return;
      break;
    }
    const dn = b >> 4;
    const ln = b & 15;
    if (dn === 15 || ln === 15) return;
    i = skipExtension(m, i, dn);
    if (i < 0) return;
    const at = i;
    i = skipExtension(m, i, ln);
    if (i < 0) return;
    i += optionLength(m, at, ln);
    if (i > m.length) return;
  }
  answer(peer, m, tkl);
}

const answerScratch = Buffer.alloc(4 + 8);

/** ACK 4.04 with the request's message ID and token, sealed and sent. */
function answer(peer: Peer, request: Buffer, tkl: number): void {
  const coapLength = 4 + tkl;
  const record = newRecord(peer, coapLength);
  // the CoAP answer in scratch (Ccm8.seal reads the plaintext after writing the ciphertext)
  const at = RECORD_HEADER + EXPLICIT_NONCE;
  const plain = answerScratch.subarray(0, coapLength);
  plain[0] = 0x40 | (COAP_ACK << 4) | tkl;
  plain[1] = NOT_FOUND;
  request.copy(plain, 2, 2, 4 + tkl); // message ID ‖ token
  peer.write.seal(peer.writeNonce, peer.aad, plain, record, at);
  if (native !== undefined && nativeIo) native.udpQueue(record, peer.ip, peer.port);
  else socket.send(record, peer.port, peer.address);
}

function ipv4Number(address: string): number {
  if (!isIPv4(address)) return 0;
  return address.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

function ipv4String(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}

/** The key of `--native io`'s peer map: IPv4 and port in one number. */
function numericKey(ip: number, port: number): number {
  return ip * 65536 + port;
}

/**
 * `--native io`: the addon's socket instead of node:dgram. Per batch one call of `onBatch`;
 * per datagram a view of its arena slot (the floor keeps none: the plaintext is a new
 * buffer), the peer found by a numeric key. Handshake datagrams are copied for the
 * DtlsServer, which may keep them.
 */
function startNativeIo(n: EdgeNative, dtls: ReturnType<typeof takeOverServer>): void {
  const rx = Buffer.allocUnsafeSlow(NATIVE_MAX_BATCH * NATIVE_SLOT);
  const metaBytes = Buffer.allocUnsafeSlow(NATIVE_MAX_BATCH * 12);
  const meta = new Uint32Array(metaBytes.buffer, metaBytes.byteOffset, NATIVE_MAX_BATCH * 3);
  const tx = Buffer.allocUnsafeSlow(NATIVE_MAX_BATCH * NATIVE_SLOT);
  const byKey = new Map<number, Peer>();
  const onBatch = (count: number): void => {
    inBatch = true;
    for (let i = 0; i < count; i++) {
      const len = meta[3 * i]!;
      const ip = meta[3 * i + 1]!;
      const port = meta[3 * i + 2]!;
      const msg = rx.subarray(i * NATIVE_SLOT, i * NATIVE_SLOT + len);
      const peer = peerRecordType(msg[0]) ? byKey.get(numericKey(ip, port)) : undefined;
      if (peer === undefined) {
        dtls.handleDatagram(Buffer.from(msg), ipv4String(ip), port);
        continue;
      }
      if (!floorRecords(peer, msg, open, onCoap)) byKey.delete(numericKey(ip, port));
    }
    inBatch = false;
  };
  onNativePeer = (p) => byKey.set(numericKey(p.ip, p.port), p);
  n.udpOpen(port, batch, rx, metaBytes, tx, onBatch);
  process.stderr.write(`records-floor: native socket listening on ${port}\n`);
}

/** Whether `--native io` is inside a batch (its answers leave in one sendmmsg after it). */
let inBatch = false;
let onNativePeer: ((p: Peer) => void) | undefined;

function nativeSend(n: EdgeNative, data: Buffer, p: number, address: string): void {
  n.udpQueue(data, ipv4Number(address), p);
  if (!inBatch) n.udpFlush();
}

function startFloor(devices: string): void {
  const n = native;
  const dtls = takeOverServer({
    devicesFile: devices,
    send:
      n !== undefined && nativeIo
        ? (data, p, address) => nativeSend(n, data, p, address)
        : (data, p, address) => socket.send(data, p, address),
    onPeer: (s, txNext) => {
      const peer: Peer = {
        address: s.address,
        port: s.port,
        ip: ipv4Number(s.address),
        epoch: s.epoch,
        read:
          n !== undefined && nativeCrypto
            ? new NativeCcm8(n, s.client.encKey, false)
            : new Ccm8(s.client.encKey),
        write:
          n !== undefined && nativeCrypto
            ? new NativeCcm8(n, s.server.encKey, true)
            : new Ccm8(s.server.encKey),
        readNonce: nonceOf(s.client.salt),
        writeNonce: nonceOf(s.server.salt),
        aad: Buffer.alloc(13),
        window: new ReplayWindow(),
        writeSeq: txNext,
      };
      if (onNativePeer !== undefined) onNativePeer(peer);
      else peers.set(peerKey(s.address, s.port), peer);
    },
  });
  if (n !== undefined && nativeIo) {
    startNativeIo(n, dtls);
    process.on('SIGTERM', () => {
      const [batches, datagrams, sends] = n.udpStats();
      process.stderr.write(
        `records-floor: ${datagrams} datagrams in ${batches} batches, ${sends} sendmmsg\n`,
      );
      dtls.close();
      n.udpClose();
      process.exit(0);
    });
    return;
  }
  socket.on('message', floorDatagrams(dtls, peers, open, onCoap));
  process.on('SIGTERM', () => {
    dtls.close();
    socket.close(() => process.exit(0));
  });
}

function startEcho(bytes: number): void {
  const reply = Buffer.alloc(bytes, 0x17);
  socket.on('message', (_msg, rinfo) => {
    socket.send(reply, rinfo.port, rinfo.address);
  });
  process.on('SIGTERM', () => socket.close(() => process.exit(0)));
}

if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write('records-floor: --port missing\n');
  process.exit(2);
}
if (echoBytes !== undefined) startEcho(Number(echoBytes));
else if (devicesFile !== undefined) startFloor(devicesFile);
else {
  process.stderr.write('records-floor: --devices or --echo missing\n');
  process.exit(2);
}
if (!nativeIo) {
  socket.bind(port, HOST, () => process.stderr.write(`records-floor: listening on ${port}\n`));
}
