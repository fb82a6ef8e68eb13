/**
 * Shared machinery for the hostile-input tests (test/hostile/): the whole gateway on loopback
 * with the example devices file, a "good client" that keeps asking and counts its answers,
 * pools of plain UDP attacker sockets, a seeded PRNG, a hand-driven handshake for fragment
 * games, and a heap measurement that forces GC.
 *
 * Every wait here has a deadline: a test fails with a message instead of hanging.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { Writable } from 'node:stream';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { Gateway } from '../../src/gateway/index.js';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/telemetry/log.js';
import { derivePsk } from '../../src/enos/psk.js';
import type { DtlsServer } from '../../src/dtls/server.js';
import type { DtlsStats } from '../../src/dtls/types.js';
import { DtlsClient, type DtlsClientOptions } from '../../src/dtls/client.js';
import {
  CipherSuite,
  ContentType,
  DTLS_1_2,
  ExtensionType,
  HandshakeType,
} from '../../src/dtls/constants.js';
import {
  clientHelloBody,
  clientKeyExchangeBody,
  handshakeMessage,
  parseFinished,
  parseHelloVerifyRequest,
  parseServerHello,
  readFragments,
} from '../../src/dtls/handshake.js';
import { plainRecord, readRecord, type DtlsRecord } from '../../src/dtls/record.js';
import {
  CHANGE_CIPHER_SPEC,
  EpochState,
  Transcript,
  deriveSessionKeys,
} from '../../src/dtls/keys.js';
import { verifyData } from '../../src/dtls/prf.js';
import { decode, encode, type CoapMessage } from '../../src/coap/codec.js';
import { CON, Code, OptionNumber } from '../../src/coap/constants.js';

// ---------------------------------------------------------------------------------------------
// time

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Rejects with `what` when `p` does not settle within `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `pred` (every few ms) until it holds; throws `what` after `ms`. */
export async function waitFor(pred: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await sleep(2);
  }
}

// ---------------------------------------------------------------------------------------------
// seeded randomness (mulberry32): the same seed gives the same hostile inputs on every run

export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

// ---------------------------------------------------------------------------------------------
// servers

/** Device demoPK01/device001 of deploy/examples/devices.json. */
export const GOOD_IDENTITY = 'demoPK01,device001,2,3600';
export const GOOD_PSK = derivePsk('demo-device-secret-0001');
/** Second device of the same file, for "a new client can still connect". */
export const OTHER_IDENTITY = 'demoPK01,device002,2,3600';
export const OTHER_PSK = derivePsk('demo-device-secret-0002');
/** Device demoPK02/device003: a third association. */
export const THIRD_IDENTITY = 'demoPK02,device003,2,3600';
export const THIRD_PSK = derivePsk('demo-device-secret-0003');
/** Key of every secureMode 3 identity of product demoPK01 (dynamic registration on). */
export const PRODUCT_PSK = derivePsk('demo-product-secret');

/** A secureMode 3 identity of demoPK01: a unit asking to be activated. */
export function activationIdentity(deviceKey: string): string {
  return `demoPK01,${deviceKey},3,3600`;
}

/** dist/test/helpers/hostile.js → <repo>/deploy/examples/devices.json */
export const DEVICES_FILE = new URL('../../../deploy/examples/devices.json', import.meta.url)
  .pathname;

export interface HostileServer {
  readonly port: number;
  readonly dtls: DtlsServer<unknown>;
  readonly stats: DtlsStats;
  /** Exceptions that escaped into the datagram path (the server's onInternalError). */
  readonly internalErrors: unknown[];
  close(): Promise<void>;
}

export interface GatewayOptions {
  readonly maxHandshakes?: number;
  readonly maxAssociations?: number;
  readonly maxHandshakesPerAddress?: number;
  readonly maxHandshakesPerPrefix?: number;
  readonly stalledHandshakeTimeoutSeconds?: number;
  readonly maxActivationSessions?: number;
  readonly handshakeTimeoutSeconds?: number;
  readonly retransmitTimeoutMs?: number;
  /** The devices file (default: deploy/examples/devices.json). */
  readonly devices?: string;
  /** Shared secret cache and activation store (default: none, in-process stores). */
  readonly redisUrl?: string;
  readonly redisPrefix?: string;
  /** A device registry (default: none, the devices file only). */
  readonly registryUrl?: string;
  readonly registryToken?: string;
  readonly maxUploadsPerPeer?: number;
  readonly maxUploads?: number;
  readonly maxUploadBytes?: number;
}

/**
 * The composition root on 127.0.0.1, port 0, with the example devices file. The logger writes
 * error lines only, into memory: "datagram processing failed" lines are the gateway's
 * onInternalError, collected into `internalErrors`.
 */
export async function startGateway(
  opts: GatewayOptions = {},
): Promise<HostileServer & { readonly gateway: Gateway }> {
  const internalErrors: unknown[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb): void {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() === '') continue;
        try {
          const o = JSON.parse(line) as { msg?: string };
          if (o.msg === 'datagram processing failed') internalErrors.push(o);
        } catch {
          internalErrors.push(line);
        }
      }
      cb();
    },
  });
  const config = loadConfig({
    overrides: {
      bind: '127.0.0.1',
      dtlsPort: 0,
      devices: DEVICES_FILE,
      logLevel: 'silent',
      ...opts,
    },
  });
  const gateway = await Gateway.start(config, createLogger('error', sink));
  const dtls = gateway.dtls as DtlsServer<unknown>;
  return {
    gateway,
    port: gateway.dtlsPort,
    dtls,
    stats: dtls.stats,
    internalErrors,
    close: () => gateway.close(),
  };
}

/** Shallow copy of the counters, to compare before/after. */
export function snapshot(stats: DtlsStats): {
  readonly drops: DtlsStats['drops'];
  readonly handshakesFailed: DtlsStats['handshakesFailed'];
  readonly closed: DtlsStats['closed'];
  readonly datagramsIn: number;
  readonly datagramsOut: number;
  readonly recordsIn: number;
  readonly helloVerifySent: number;
  readonly handshakesStarted: number;
  readonly handshakesCompleted: number;
  readonly applicationRecordsIn: number;
} {
  return {
    drops: { ...stats.drops },
    handshakesFailed: { ...stats.handshakesFailed },
    closed: { ...stats.closed },
    datagramsIn: stats.datagramsIn,
    datagramsOut: stats.datagramsOut,
    recordsIn: stats.recordsIn,
    helloVerifySent: stats.helloVerifySent,
    handshakesStarted: stats.handshakesStarted,
    handshakesCompleted: stats.handshakesCompleted,
    applicationRecordsIn: stats.applicationRecordsIn,
  };
}

/** Per-reason difference of two drop tables, zero entries left out. */
export function dropDelta(
  before: Record<string, number>,
  after: Record<string, number>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// the good client

/** CoAP CON GET of the activation topic, what a secureMode 3 session may ask. */
export function activationRequest(messageId: number, deviceKey: string): Buffer {
  const path = ['topic', 'ext', 'session', 'demoPK01', deviceKey, 'thing', 'activate', 'info'];
  return encode({
    type: CON,
    code: Code.GET,
    messageId,
    token: Buffer.from([messageId >>> 8, messageId & 0xff]),
    options: path.map((p) => ({ number: OptionNumber.URI_PATH, value: Buffer.from(p) })),
    payload: Buffer.alloc(0),
  });
}

/** CoAP CON POST to a device's own measurepoint topic (answered 5.03 without a backend). */
export function coapRequest(messageId: number, token: Buffer, deviceKey = 'device001'): Buffer {
  const path = ['topic', 'sys', 'demoPK01', deviceKey, 'thing', 'measurepoint', 'post'];
  return encode({
    type: CON,
    code: Code.POST,
    messageId,
    token,
    options: path.map((p) => ({ number: OptionNumber.URI_PATH, value: Buffer.from(p) })),
    payload: Buffer.from('{"id":"1","params":{"measurepoints":{"t":1}}}'),
  });
}

export interface GoodClientOptions {
  readonly identity?: string;
  readonly psk?: Buffer;
  readonly cipherSuites?: readonly number[];
  readonly extensions?: 'standard' | 'none';
  readonly handshakeTimeoutMs?: number;
  readonly retransmitTimeoutMs?: number;
}

/**
 * An established DtlsClient that asks a question, waits for its answer and retries like a
 * CoAP client would (the network under a flood may drop its datagram). Every application
 * message it receives is kept in `received`.
 */
export class GoodClient {
  readonly received: Buffer[] = [];
  private nextId = 0x1000;
  private waiters: ((m: Buffer) => boolean)[] = [];

  private constructor(
    readonly client: DtlsClient,
    private readonly deviceKey: string,
  ) {
    client.on('message', (m) => {
      this.received.push(Buffer.from(m));
      this.waiters = this.waiters.filter((w) => !w(m));
    });
  }

  static async connect(port: number, o: GoodClientOptions = {}): Promise<GoodClient> {
    const opts: DtlsClientOptions = {
      host: '127.0.0.1',
      port,
      identity: o.identity ?? GOOD_IDENTITY,
      psk: o.psk ?? GOOD_PSK,
      handshakeTimeoutMs: o.handshakeTimeoutMs ?? 10_000,
      retransmitTimeoutMs: o.retransmitTimeoutMs ?? 300,
      ...(o.cipherSuites !== undefined ? { cipherSuites: o.cipherSuites } : {}),
      ...(o.extensions !== undefined ? { extensions: o.extensions } : {}),
    };
    const client = await withTimeout(
      DtlsClient.connect(opts),
      (opts.handshakeTimeoutMs ?? 10_000) + 2_000,
      'good client handshake',
    );
    const identity = typeof opts.identity === 'string' ? opts.identity : GOOD_IDENTITY;
    return new GoodClient(client, identity.split(',')[1] ?? 'device001');
  }

  get localPort(): number {
    return this.client.localPort;
  }

  /** The CoAP request with this id (message ID and token derived from it). */
  payload(id: number): Buffer {
    return coapRequest(id & 0xffff, Buffer.from([id >>> 8, id & 0xff]), this.deviceKey);
  }

  /** Whether `m` is the CoAP response to the request with this id. */
  matches(id: number, m: Buffer): boolean {
    let msg: CoapMessage;
    try {
      msg = decode(m);
    } catch {
      return false;
    }
    return msg.messageId === (id & 0xffff) && msg.token.equals(Buffer.from([id >>> 8, id & 0xff]));
  }

  /** Resolves when a message matching `pred` arrives; rejects after `ms`. */
  waitMessage(pred: (m: Buffer) => boolean, ms: number, what: string): Promise<Buffer> {
    let fn: ((m: Buffer) => boolean) | undefined;
    const p = new Promise<Buffer>((resolve) => {
      fn = (m: Buffer): boolean => {
        if (!pred(m)) return false;
        resolve(m);
        return true;
      };
      this.waiters.push(fn);
    });
    return withTimeout(p, ms, what).finally(() => {
      this.waiters = this.waiters.filter((w) => w !== fn);
    });
  }

  /**
   * Sends a fresh request and waits for its answer; retransmits (a new record, the same
   * request) every `everyMs`, at most `tries` times. Returns the answer and the attempts used.
   */
  async ask(everyMs = 500, tries = 6): Promise<{ answer: Buffer; attempts: number }> {
    const id = this.nextId++;
    const data = this.payload(id);
    const answered = this.waitMessage((m) => this.matches(id, m), everyMs * tries, `answer ${id}`);
    let attempts = 0;
    let done = false;
    void answered.then(
      () => (done = true),
      () => (done = true),
    );
    let sendError: Error | undefined;
    const loop = (async (): Promise<void> => {
      while (!done && attempts < tries) {
        attempts++;
        this.client.send(data);
        const t = Date.now();
        while (!done && Date.now() - t < everyMs) await sleep(5);
      }
    })().catch((err: unknown) => {
      // e.g. the association is closed; `answered` times out then
      sendError = err instanceof Error ? err : new Error(String(err));
    });
    const answer = await answered.catch((err: unknown) => err);
    done = true;
    await loop;
    if (sendError !== undefined) throw sendError;
    if (!(answer instanceof Buffer)) {
      throw answer instanceof Error ? answer : new Error(String(answer));
    }
    return { answer, attempts };
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

/**
 * The good client asks in a loop (while a flood runs) until stop(); stop() resolves to the
 * number of answers, or rejects with the first unanswered question. Safe to call twice (use
 * it in `finally`, so no loop outlives a failed test).
 */
export function keepAsking(c: GoodClient): { stop: () => Promise<number> } {
  let stopped = false;
  let answers = 0;
  let failure: Error | undefined;
  const loop = (async () => {
    while (!stopped) {
      try {
        await c.ask(300, 10);
        answers++;
      } catch (err) {
        failure = err instanceof Error ? err : new Error(String(err));
        return;
      }
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      if (failure !== undefined) throw failure;
      return answers;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// attackers

/** Plain UDP sockets on 127.0.0.1 (or another loopback address), each on its own port. */
export class SocketPool {
  readonly received: { socket: number; data: Buffer }[] = [];
  receivedCount = 0;
  keepReceived = true;
  private constructor(readonly sockets: Socket[]) {
    sockets.forEach((s, i) =>
      s.on('message', (m) => {
        this.receivedCount++;
        if (this.keepReceived) this.received.push({ socket: i, data: m });
      }),
    );
  }

  static async open(n: number, address = '127.0.0.1'): Promise<SocketPool> {
    const sockets: Socket[] = [];
    for (let i = 0; i < n; i++) {
      const s = createSocket('udp4');
      s.on('error', () => undefined);
      await new Promise<void>((r) => s.bind(0, address, () => r()));
      sockets.push(s);
    }
    return new SocketPool(sockets);
  }

  socket(i: number): Socket {
    const s = this.sockets[i];
    if (s === undefined) throw new RangeError(`no socket ${i}`);
    return s;
  }

  async close(): Promise<void> {
    await Promise.all(
      this.sockets.map(
        (s) =>
          new Promise<void>((r) => {
            try {
              s.close(() => r());
            } catch {
              r();
            }
          }),
      ),
    );
  }
}

export interface PumpOptions {
  /** Datagrams per burst before waiting for the server to catch up (default 64). */
  readonly burst?: number;
  /** Called after every burst. */
  readonly between?: () => Promise<void> | void;
  /** Sends datagrams whose socket index is -1 (e.g. from the good client's own port). */
  readonly other?: (d: Buffer) => void;
}

/**
 * Sends `datagrams` (socket index, bytes) to the server in bursts, then waits until the
 * server has read them (its datagramsIn counter) so the kernel's receive buffer never
 * overflows and the counters stay exact. Returns how many were sent.
 */
export async function pump(
  server: { readonly stats: DtlsStats },
  port: number,
  pool: SocketPool,
  datagrams: Iterable<readonly [number, Buffer]>,
  opts: PumpOptions = {},
): Promise<number> {
  const burst = opts.burst ?? 64;
  let sent = 0;
  const base = server.stats.datagramsIn;
  let inBurst = 0;
  // spin on setImmediate: each turn runs the poll phase, where the server reads its socket
  const caughtUp = async (): Promise<void> => {
    const deadline = Date.now() + 5_000;
    while (server.stats.datagramsIn < base + sent) {
      if (Date.now() > deadline) {
        throw new Error(
          `timed out: server read ${server.stats.datagramsIn - base} of ${sent} datagrams`,
        );
      }
      await new Promise((r) => setImmediate(r));
    }
  };
  for (const [i, d] of datagrams) {
    if (i === -1) {
      if (opts.other === undefined) throw new Error('pump: no sender for socket -1');
      opts.other(d);
    } else {
      pool.socket(i).send(d, port, '127.0.0.1');
    }
    sent++;
    if (++inBurst >= burst) {
      inBurst = 0;
      await caughtUp();
      if (opts.between !== undefined) await opts.between();
    }
  }
  await caughtUp();
  return sent;
}

// ---------------------------------------------------------------------------------------------
// handshake pieces built by hand

/** A standalone epoch-0 ClientHello record (what a flood sends). */
export function clientHelloRecord(opts: {
  readonly random: Buffer;
  readonly cookie?: Buffer;
  readonly messageSeq?: number;
  readonly recordSeq?: number;
  readonly cipherSuites?: readonly number[];
  readonly extensions?: readonly (readonly [number, Buffer])[] | undefined;
}): Buffer {
  const body = clientHelloBody({
    random: opts.random,
    cookie: opts.cookie ?? Buffer.alloc(0),
    cipherSuites: opts.cipherSuites ?? [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
    extensions: opts.extensions,
  });
  return plainRecord(
    ContentType.handshake,
    DTLS_1_2,
    0,
    opts.recordSeq ?? 0,
    handshakeMessage(HandshakeType.clientHello, opts.messageSeq ?? 0, body),
  );
}

/**
 * Round trip 2 of a stalling flood: for socket i of a pool, its ClientHello again (same
 * random) with the cookie the HelloVerifyRequest gave it; message_seq and record seq 1.
 */
export function cookieHellos(
  randoms: readonly Buffer[],
  cookies: ReadonlyMap<number, Buffer | undefined>,
  extensions?: readonly (readonly [number, Buffer])[],
): (readonly [number, Buffer])[] {
  return randoms.map(
    (random, i) =>
      [
        i,
        clientHelloRecord({
          random,
          cookie: cookies.get(i),
          messageSeq: 1,
          recordSeq: 1,
          extensions,
        }),
      ] as const,
  );
}

export { fragment } from './fuzz.js';

/** Every record of a datagram (stops at the first malformed one). */
export function records(buf: Buffer): DtlsRecord[] {
  const out: DtlsRecord[] = [];
  let off = 0;
  while (off < buf.length) {
    const r = readRecord(buf, off);
    if (r === undefined) break;
    off += r.raw.length;
    out.push(r);
  }
  return out;
}

/** The HelloVerifyRequest cookie in a datagram, if it is one. */
export function hvrCookie(buf: Buffer): Buffer | undefined {
  const rec = records(buf)[0];
  if (rec === undefined || rec.type !== ContentType.handshake || rec.epoch !== 0) return undefined;
  const f = readFragments(rec.body)[0];
  if (f === undefined || f.msgType !== HandshakeType.helloVerifyRequest) return undefined;
  return Buffer.from(parseHelloVerifyRequest(f.fragment).cookie);
}

const STANDARD_EXTENSIONS: readonly (readonly [number, Buffer])[] = [
  [ExtensionType.renegotiationInfo, Buffer.from([0])],
  [ExtensionType.extendedMasterSecret, Buffer.alloc(0)],
];

/**
 * A PSK client driven step by step, to send the ClientKeyExchange in whatever fragments a
 * test wants. Offers CCM_8 with EMS. message_seq: CH 0, CH2 1, CKE 2, Finished 3.
 */
export class ManualHandshake {
  private readonly datagrams: Buffer[] = [];
  private wake: (() => void) | undefined;
  private readonly random = randomBytes(32);
  private readonly transcript = new Transcript();
  private serverRandom: Buffer | undefined;
  private ems = false;
  private recordSeq = 0;
  private state: EpochState | undefined;
  private master: Buffer | undefined;
  /** Everything the server sent, as records. */
  readonly log: DtlsRecord[] = [];
  /** Every datagram this client sent, in order (for replays). */
  readonly sent: Buffer[] = [];

  private constructor(
    readonly socket: Socket,
    readonly port: number,
    readonly identity: Buffer,
    readonly psk: Buffer,
  ) {
    socket.on('message', (m) => {
      this.datagrams.push(m);
      for (const r of records(m)) this.log.push(r);
      this.wake?.();
    });
  }

  static async open(port: number, identity: string, psk: Buffer): Promise<ManualHandshake> {
    const s = createSocket('udp4');
    s.on('error', () => undefined);
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    return new ManualHandshake(s, port, Buffer.from(identity), psk);
  }

  get localPort(): number {
    return this.socket.address().port;
  }

  send(d: Buffer): void {
    this.sent.push(d);
    this.socket.send(d, this.port, '127.0.0.1');
  }

  /** Sends handshake fragments (already with headers) in one epoch-0 record. */
  sendHandshakeRecord(...fragments: Buffer[]): void {
    this.send(
      plainRecord(ContentType.handshake, DTLS_1_2, 0, this.recordSeq++, Buffer.concat(fragments)),
    );
  }

  /** Waits for the next datagram from the server. */
  async next(ms: number, what: string): Promise<Buffer> {
    const deadline = Date.now() + ms;
    for (;;) {
      const d = this.datagrams.shift();
      if (d !== undefined) return d;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms: ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** Alerts the server sent in the clear (level, description). */
  plainAlerts(): [number, number][] {
    return this.log
      .filter((r) => r.type === ContentType.alert && r.epoch === 0 && r.body.length === 2)
      .map((r) => [r.body[0] ?? -1, r.body[1] ?? -1]);
  }

  /** Discards anything received so far. */
  drain(): void {
    this.datagrams.length = 0;
  }

  private clientHello(cookie: Buffer, messageSeq: number): Buffer {
    return handshakeMessage(
      HandshakeType.clientHello,
      messageSeq,
      clientHelloBody({
        random: this.random,
        cookie,
        cipherSuites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
        extensions: STANDARD_EXTENSIONS,
      }),
    );
  }

  /**
   * ClientHello, HelloVerifyRequest, ClientHello with cookie, then the server's flight up to
   * ServerHelloDone. Afterwards the server holds a handshake for this socket.
   */
  async hello(ms = 3_000): Promise<void> {
    this.sendHandshakeRecord(this.clientHello(Buffer.alloc(0), 0));
    const hvr = hvrCookie(await this.next(ms, 'HelloVerifyRequest'));
    if (hvr === undefined) throw new Error('expected a HelloVerifyRequest');
    const ch2 = this.clientHello(hvr, 1);
    this.transcript.add(ch2);
    this.sendHandshakeRecord(ch2);
    let done = false;
    const seen = new Set<number>();
    while (!done) {
      const d = await this.next(ms, 'ServerHello flight');
      for (const r of records(d)) {
        if (r.type !== ContentType.handshake || r.epoch !== 0) continue;
        for (const f of readFragments(r.body)) {
          if (f.fragmentOffset !== 0 || f.fragment.length !== f.length) {
            throw new Error('test client does not reassemble server fragments');
          }
          if (f.msgType === HandshakeType.serverHello) {
            const sh = parseServerHello(f.fragment);
            this.serverRandom = Buffer.from(sh.random);
            this.ems = sh.extensions.has(ExtensionType.extendedMasterSecret);
          }
          if (f.msgType === HandshakeType.helloVerifyRequest || seen.has(f.messageSeq)) continue;
          seen.add(f.messageSeq);
          this.transcript.add(handshakeMessage(f.msgType, f.messageSeq, f.fragment));
          if (f.msgType === HandshakeType.serverHelloDone) done = true;
        }
      }
    }
  }

  /** The ClientKeyExchange body (psk_identity). */
  ckeBody(): Buffer {
    return clientKeyExchangeBody(this.identity);
  }

  /** Sends the ClientKeyExchange whole, in one record (message_seq 2). */
  sendCke(): void {
    this.sendHandshakeRecord(handshakeMessage(HandshakeType.clientKeyExchange, 2, this.ckeBody()));
  }

  /** hello(), sendCke(), finish(): a complete handshake. */
  async establish(ms = 3_000): Promise<void> {
    await this.hello(ms);
    this.sendCke();
    await this.finish(ms);
  }

  /**
   * Sends CCS and Finished, computed as if the server reassembled `ckeBody` exactly, and waits
   * for the server's CCS + Finished. Throws when the server's Finished does not verify or an
   * alert comes back.
   */
  async finish(ms = 3_000, cke: Buffer = this.ckeBody()): Promise<void> {
    if (this.serverRandom === undefined) throw new Error('hello() first');
    this.transcript.add(handshakeMessage(HandshakeType.clientKeyExchange, 2, cke));
    const keys = deriveSessionKeys({
      suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
      psk: this.psk,
      clientRandom: this.random,
      serverRandom: this.serverRandom,
      sessionHash: this.ems ? this.transcript.digest() : undefined,
      encryptThenMac: false,
    });
    this.master = keys.master;
    this.state = new EpochState(1, keys.serverWrite, keys.clientWrite);
    const fin = handshakeMessage(
      HandshakeType.finished,
      3,
      verifyData(keys.master, 'client finished', this.transcript.digest()),
    );
    this.transcript.add(fin);
    const sealed = this.state.seal(ContentType.handshake, fin);
    if (sealed === undefined) throw new Error('seal');
    this.send(
      Buffer.concat([
        plainRecord(
          ContentType.changeCipherSpec,
          DTLS_1_2,
          0,
          this.recordSeq++,
          CHANGE_CIPHER_SPEC,
        ),
        sealed,
      ]),
    );
    for (;;) {
      const d = await this.next(ms, 'server Finished');
      for (const r of records(d)) {
        if (r.type === ContentType.alert && r.epoch === 0) {
          throw new Error(`server sent alert ${r.body.toString('hex')}`);
        }
        if (r.epoch !== 1) continue;
        const pt = this.state.open(r);
        if (typeof pt === 'string') throw new Error(`server record: ${pt}`);
        if (r.type !== ContentType.handshake) continue;
        const f = readFragments(pt)[0];
        if (f === undefined || f.msgType !== HandshakeType.finished) continue;
        const expected = verifyData(this.master, 'server finished', this.transcript.digest());
        if (!timingSafeEqual(parseFinished(f.fragment), expected)) {
          throw new Error('server Finished does not verify');
        }
        return;
      }
    }
  }

  /** Sends one application record after finish(). */
  sendData(data: Buffer): void {
    const rec = this.state?.seal(ContentType.applicationData, data);
    if (rec === undefined) throw new Error('not established');
    this.send(rec);
  }

  /** Next application record from the server, decrypted. */
  async nextData(ms: number): Promise<Buffer> {
    const state = this.state;
    if (state === undefined) throw new Error('not established');
    const deadline = Date.now() + ms;
    for (;;) {
      const d = await this.next(Math.max(1, deadline - Date.now()), 'application data');
      for (const r of records(d)) {
        if (r.epoch !== 1 || r.type !== ContentType.applicationData) continue;
        const pt = state.open(r);
        if (typeof pt !== 'string') return pt;
      }
    }
  }

  close(): Promise<void> {
    return new Promise((r) => {
      try {
        this.socket.close(() => r());
      } catch {
        r();
      }
    });
  }
}

/**
 * A gateway on loopback, a good client already answered once, and hand-driven clients that
 * are closed with it: the setup of the tests that play with handshakes by hand.
 */
export class ManualRig {
  private readonly clients: ManualHandshake[] = [];

  private constructor(
    readonly srv: HostileServer & { readonly gateway: Gateway },
    readonly good: GoodClient,
  ) {}

  static async start(): Promise<ManualRig> {
    const srv = await startGateway();
    const good = await GoodClient.connect(srv.port);
    await good.ask();
    return new ManualRig(srv, good);
  }

  /** A fresh hand-driven client (device002), closed with the rig. */
  async client(): Promise<ManualHandshake> {
    const m = await ManualHandshake.open(this.srv.port, OTHER_IDENTITY, OTHER_PSK);
    this.clients.push(m);
    return m;
  }

  /** Runs `send` (one datagram from `m`) and waits until the server read it. */
  async delivered(send: () => void): Promise<void> {
    const n = this.srv.stats.datagramsIn;
    send();
    await waitFor(() => this.srv.stats.datagramsIn > n, 2_000, 'server to read');
  }

  /** The hand-driven client works as an association: a CoAP request is answered. */
  async served(m: ManualHandshake, messageId: number): Promise<void> {
    m.drain();
    m.sendData(this.good.payload(messageId));
    const answer = await m.nextData(3_000);
    assert.ok(answer.length > 0);
  }

  async close(): Promise<void> {
    for (const m of this.clients) await m.close();
    await this.good.close();
    await this.srv.close();
  }
}

// ---------------------------------------------------------------------------------------------
// memory

let gcFn: (() => void) | undefined;

/** global.gc without --expose-gc: the flag is set at run time and gc fetched from a new context. */
export function forceGc(): void {
  if (gcFn === undefined) {
    const g = (globalThis as { gc?: () => void }).gc;
    if (typeof g === 'function') gcFn = g;
    else {
      setFlagsFromString('--expose-gc');
      gcFn = runInNewContext('gc') as () => void;
    }
  }
  gcFn();
}

/** heapUsed after a few full collections with turns of the event loop between them. */
export async function settledHeapUsed(): Promise<number> {
  for (let i = 0; i < 4; i++) {
    await new Promise((r) => setImmediate(r));
    forceGc();
  }
  return process.memoryUsage().heapUsed;
}

/**
 * What the process holds after a few full collections: the V8 heap plus the memory behind
 * ArrayBuffers and Buffers (large Buffers live outside the heap, so heapUsed alone misses
 * them).
 */
export async function settledMemory(): Promise<number> {
  await settledHeapUsed();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}
