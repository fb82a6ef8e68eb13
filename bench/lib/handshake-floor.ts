/**
 * The floor reference of bench/dtls-handshakes.ts: the unavoidable Node work of a DTLS 1.2
 * PSK handshake with cookie and Extended Master Secret, CCM_8, followed by close_notify, in a
 * process of its own so its CPU per handshake is measured from /proc like the servers'.
 *
 * It speaks no DTLS. The bench first takes a census of a real handshake against coap-edge
 * (bench/lib/handshake-census.ts): the datagrams each way, grouped into steps (what the
 * client sends, then what the server answers). This program replays that script: a datagram
 * `[step, index, …padding]` of the recorded size comes in, and after the last datagram of a
 * step it sends the step's answers, datagrams of the recorded sizes. The load
 * (`runPingPong`, bench/lib/handshake-load.ts) plays the client.
 *
 * With `--crypto` each step also does the node:crypto calls a minimal server must do there,
 * on inputs of the recorded sizes (keys and random values are fixed per process; the
 * transcript hash is per peer, as it must be):
 *   step 0 (ClientHello): the cookie, HMAC-SHA256 over address, port and the hello;
 *   step 1 (ClientHello with cookie): the cookie again and timingSafeEqual; the 32-byte
 *     server random; a new SHA-256 transcript over ClientHello and the server's flight;
 *   step 2 (ClientKeyExchange, ChangeCipherSpec, Finished): transcript; session hash (copy,
 *     digest); extended master secret and key block (P_SHA256, src/dtls/prf.ts: 4 + 4 HMACs);
 *     the client Finished record opened with a one-shot aes-128-ccm decipher; client
 *     verify_data (2 HMACs), timingSafeEqual; transcript, digest; server verify_data
 *     (2 HMACs); the server Finished sealed with a one-shot aes-128-ccm cipher;
 *   step 3 (close_notify): the alert record opened with a one-shot decipher, and the answering
 *     close_notify (coap-edge sends one) sealed with a one-shot cipher.
 * That is 14 HMACs, 1 hash with 2 copies and digests, 1 randomBytes, 2 timingSafeEqual and
 * 4 one-shot CCM objects per handshake. Not done: deriving the PSK from the device secret
 * (coap-edge hashes it per handshake; a server may keep keys instead), ids for logs.
 *
 * Control datagrams: `[0xff]` is answered `[0xff]` (ready probe); `[0xfe, n (u32)]` runs the
 * crypto of all steps n times in a loop, then answers `[0xfe]` (the crypto alone, no UDP
 * per step: `runCryptoOnly`).
 *
 * Usage: node dist/bench/lib/handshake-floor.js --port <udp> --script <json file> [--crypto]
 *   (listens on 127.0.0.1; the script is `[{ "in": [bytes…], "out": [bytes…] }, …]`)
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  randomBytes,
  timingSafeEqual,
  type Hash,
} from 'node:crypto';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import {
  extendedMasterSecret,
  keyBlock,
  pskPremasterSecret,
  verifyData,
} from '../../src/dtls/prf.js';

export interface Step {
  /** Sizes of the datagrams the client sends in this step. */
  readonly in: readonly number[];
  /** Sizes of the datagrams the server answers with once all of them arrived. */
  readonly out: readonly number[];
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const HOST = '127.0.0.1';
const PROBE = 0xff;
const RUN = 0xfe;
const CCM_TAG = 8;
const KEY_BLOCK_CCM8 = 40;

const port = Number(arg('port'));
const scriptFile = arg('script');
const withCrypto = process.argv.includes('--crypto');
if (!Number.isInteger(port) || port <= 0 || scriptFile === undefined) {
  process.stderr.write('handshake-floor: --port and --script needed\n');
  process.exit(2);
}
const steps = JSON.parse(readFileSync(scriptFile, 'utf8')) as Step[];
/** Per step, the answers (preallocated, sent as they are). */
const answers = steps.map((s) => s.out.map((n) => Buffer.alloc(n, 0x16)));

// --- the crypto, on inputs of the recorded sizes --------------------------------------------

const inBytes = (step: number): number => steps[step]?.in.reduce((a, b) => a + b, 0) ?? 0;
const outBytes = (step: number): number => steps[step]?.out.reduce((a, b) => a + b, 0) ?? 0;
const cookieSecret = randomBytes(32);
const clientHello = randomBytes(Math.max(1, inBytes(0)));
const clientHello2 = randomBytes(Math.max(1, inBytes(1)));
const serverFlight = randomBytes(Math.max(1, outBytes(1)));
const clientKeyExchange = randomBytes(Math.max(1, inBytes(2) - 3 * 13 - 1 - 40));
const clientRandom = randomBytes(32);
const pms = pskPremasterSecret(randomBytes(16));
const addressPort = Buffer.from('127.0.0.1:40000', 'latin1');
const recordKey = randomBytes(16);
const nonce = randomBytes(12);
const aad = randomBytes(13);

/** A valid one-shot CCM_8 record body (ciphertext ‖ tag) of a `length`-byte plaintext. */
function sealed(length: number): { ct: Buffer; tag: Buffer } {
  const c = createCipheriv('aes-128-ccm', recordKey, nonce, { authTagLength: CCM_TAG });
  c.setAAD(aad, { plaintextLength: length });
  const ct = c.update(Buffer.alloc(length));
  c.final();
  return { ct, tag: c.getAuthTag() };
}
const finishedRecord = sealed(12 + 12);
const alertRecord = sealed(2);

function seal(plain: Buffer): Buffer {
  const c = createCipheriv('aes-128-ccm', recordKey, nonce, { authTagLength: CCM_TAG });
  c.setAAD(aad, { plaintextLength: plain.length });
  const ct = c.update(plain);
  c.final();
  return Buffer.concat([ct, c.getAuthTag()]);
}

function open(r: { ct: Buffer; tag: Buffer }): Buffer {
  const d = createDecipheriv('aes-128-ccm', recordKey, nonce, { authTagLength: CCM_TAG });
  d.setAuthTag(r.tag);
  d.setAAD(aad, { plaintextLength: r.ct.length });
  const pt = d.update(r.ct);
  d.final();
  return pt;
}

function cookie(hello: Buffer): Buffer {
  return createHmac('sha256', cookieSecret).update(addressPort).update(hello).digest();
}

const transcripts = new Map<string, Hash>();

/** The crypto of step `i` for the peer `peer`. */
function stepCrypto(i: number, peer: string): void {
  if (i === 0) {
    cookie(clientHello);
  } else if (i === 1) {
    const c = cookie(clientHello2);
    timingSafeEqual(c, c);
    randomBytes(32);
    transcripts.set(peer, createHash('sha256').update(clientHello2).update(serverFlight));
  } else if (i === 2) {
    const t = transcripts.get(peer) ?? createHash('sha256');
    transcripts.delete(peer);
    t.update(clientKeyExchange);
    const sessionHash = t.copy().digest();
    const master = extendedMasterSecret(pms, sessionHash);
    keyBlock(master, clientRandom, clientRandom, KEY_BLOCK_CCM8);
    const finished = open(finishedRecord);
    const expected = verifyData(master, 'client finished', sessionHash);
    timingSafeEqual(expected, finished.subarray(12));
    t.update(finished);
    const serverVerify = verifyData(master, 'server finished', t.digest());
    seal(Buffer.concat([finished.subarray(0, 12), serverVerify]));
  } else if (i === 3) {
    seal(open(alertRecord));
  }
}

// --- the script -----------------------------------------------------------------------------

const socket = createSocket('udp4');
const probeAnswer = Buffer.from([PROBE]);
const runAnswer = Buffer.from([RUN]);

socket.on('message', (msg, rinfo) => {
  const step = msg[0] ?? PROBE;
  if (step === PROBE) {
    socket.send(probeAnswer, rinfo.port, rinfo.address);
    return;
  }
  if (step === RUN && msg.length >= 5) {
    const n = msg.readUInt32BE(1);
    for (let k = 0; k < n; k++) {
      for (let i = 0; i < steps.length; i++) stepCrypto(i, 'run');
    }
    socket.send(runAnswer, rinfo.port, rinfo.address);
    return;
  }
  const s = steps[step];
  if (s === undefined || msg[1] !== s.in.length - 1) return;
  if (withCrypto) stepCrypto(step, `${rinfo.address}|${rinfo.port}`);
  for (const a of answers[step] ?? []) socket.send(a, rinfo.port, rinfo.address);
});

process.on('SIGTERM', () => socket.close(() => process.exit(0)));
socket.bind(port, HOST, () => process.stderr.write(`handshake-floor: listening on ${port}\n`));
