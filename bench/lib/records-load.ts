/**
 * Application-record load: K established associations, each sending CON GET /nothing in a
 * closed loop (one request outstanding per association, a new message ID and token each
 * time). Each request is one application-data record each way. After a warm-up the
 * counters and the server's CPU are snapshot over a measured window.
 */
import { createSocket, type Socket } from 'node:dgram';
import { decode } from '../../src/coap/codec.js';
import type { DtlsClient } from '../../src/dtls/client.js';
import { formatCode } from '../../src/coap/constants.js';
import {
  EXPECTED_CODE,
  EXPECTED_TYPE,
  connect,
  failureName,
  nthCredentials,
  nothingRequest,
  type PooledCredentials,
} from './client.js';
import { openWindow, windowReport } from './harness.js';
import type { ServerProcess } from './servers.js';
import { Samples, increment, round, sleep } from './stats.js';

export interface RecordsLoad {
  readonly creds: PooledCredentials;
  readonly suite: number;
  readonly clients: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** A request unanswered this long is counted as a timeout and replaced by a new one. */
  readonly requestTimeoutMs: number;
}

export interface RecordsResult {
  readonly requestsPerSec: number | null;
  readonly serverCpuUsPerRequest: number | null;
  readonly serverCpuUsPerRequestSchedstat: number | null;
  /** The kernel (stime) part of serverCpuUsPerRequest. */
  readonly serverSystemCpuUsPerRequest: number | null;
  readonly loadGenCpuUsPerRequest: number | null;
  readonly requests: number;
  readonly latency: { p50Ms: number | null; p99Ms: number | null; maxMs: number | null };
  readonly associations: number;
  readonly setupFailures: Record<string, number>;
  /** Answers other than ACK 4.04, by "TYPE code" (whole phase). */
  readonly unexpectedResponses: Record<string, number>;
  readonly timeouts: number;
  /** Responses that matched no outstanding request (late after a timeout, duplicates). */
  readonly unmatched: number;
  readonly associationsLost: number;
  readonly window: Record<string, number | null>;
  readonly serverRssKiB: number | null;
}

const CONNECT_PARALLEL = 16;
const TYPE_NAMES = ['CON', 'NON', 'ACK', 'RST'];

interface Counters {
  measuring: boolean;
  running: boolean;
  requests: number;
  timeouts: number;
  unmatched: number;
  lost: number;
  readonly unexpected: Record<string, number>;
  readonly latency: Samples;
}

let tokenSeq = Math.floor(Math.random() * 0x1_0000_0000);

/** One sender of a closed loop (one request outstanding), what {@link measure} drives. */
abstract class Sender {
  private sentAt = 0;
  outstanding = false;

  constructor(protected readonly c: Counters) {}

  abstract send(): void;
  abstract close(): Promise<void>;

  /** Call when a request went out. */
  protected sent(): void {
    this.outstanding = true;
    this.sentAt = performance.now();
  }

  /** Replaces a request older than the timeout; returns true when it did. */
  expire(now: number, timeoutMs: number): boolean {
    if (!this.outstanding || now - this.sentAt < timeoutMs) return false;
    this.outstanding = false;
    if (this.c.running) this.send();
    return true;
  }

  /** The outstanding request was answered (`unexpected`: what was wrong with the answer). */
  protected answered(unexpected: string | undefined): void {
    this.outstanding = false;
    if (this.c.measuring) {
      this.c.requests++;
      this.c.latency.push(performance.now() - this.sentAt);
    }
    if (unexpected !== undefined) increment(this.c.unexpected, unexpected);
    if (this.c.running) this.send();
  }
}

/** One association in the closed loop. */
class Looper extends Sender {
  private mid = Math.floor(Math.random() * 0x10000);
  private readonly token = Buffer.alloc(4);

  constructor(
    private readonly client: DtlsClient,
    c: Counters,
  ) {
    super(c);
    client.on('message', (m) => this.onMessage(m));
    client.on('close', () => {
      if (this.c.running) this.c.lost++;
      this.outstanding = false;
    });
  }

  send(): void {
    if (!this.client.established) return;
    this.mid = (this.mid + 1) & 0xffff;
    tokenSeq = (tokenSeq + 1) >>> 0;
    this.token.writeUInt32BE(tokenSeq, 0);
    this.sent();
    this.client.send(nothingRequest(this.mid, this.token));
  }

  private onMessage(raw: Buffer): void {
    let m;
    try {
      m = decode(raw);
    } catch {
      increment(this.c.unexpected, 'undecodable');
      return;
    }
    if (!this.outstanding || m.messageId !== this.mid || !m.token.equals(this.token)) {
      this.c.unmatched++;
      return;
    }
    this.answered(
      m.type !== EXPECTED_TYPE || m.code !== EXPECTED_CODE
        ? `${TYPE_NAMES[m.type] ?? '?'} ${formatCode(m.code)}`
        : undefined,
    );
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

async function establish(
  server: ServerProcess,
  load: RecordsLoad,
  setupFailures: Record<string, number>,
): Promise<DtlsClient[]> {
  const clients: DtlsClient[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < load.clients) {
      const creds = nthCredentials(load.creds, next++);
      try {
        clients.push(
          await connect(server.target, creds, {
            suite: load.suite,
            handshakeTimeoutMs: 10_000,
          }),
        );
      } catch (err) {
        increment(setupFailures, failureName(err));
      }
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(CONNECT_PARALLEL, load.clients) }, () => worker()),
  );
  return clients;
}

function newCounters(): Counters {
  return {
    measuring: false,
    running: true,
    requests: 0,
    timeouts: 0,
    unmatched: 0,
    lost: 0,
    unexpected: {},
    latency: new Samples(),
  };
}

export async function runRecords(server: ServerProcess, load: RecordsLoad): Promise<RecordsResult> {
  const setupFailures: Record<string, number> = {};
  const clients = await establish(server, load, setupFailures);
  if (clients.length === 0) throw new Error(`${server.name}: no association could be established`);
  const c = newCounters();
  const loopers = clients.map((client) => new Looper(client, c));
  return measure(server, load, c, loopers, setupFailures);
}

/**
 * The pure Node UDP cost of the same exchange: K connected UDP sockets, one datagram
 * outstanding each, sending datagrams of the size of this bench's request record to the
 * records floor's `--echo` server, which answers each with one datagram of the size of the
 * sealed 4.04 (`echoAnswerBytes`). No DTLS, no CoAP: a reply of the expected size counts.
 */
export async function runUdpEcho(server: ServerProcess, load: RecordsLoad): Promise<RecordsResult> {
  const c = newCounters();
  const echoers: Echoer[] = [];
  for (let i = 0; i < load.clients; i++) echoers.push(await Echoer.open(server, c));
  return measure(server, load, c, echoers, {});
}

/** CON GET /nothing with a 4-byte token in a CCM_8 record: header, explicit nonce, tag. */
export const echoRequestBytes = nothingRequest(0, Buffer.alloc(4)).length + 13 + 8 + 8;
/** ACK 4.04 with a 4-byte token and no payload in a CCM_8 record (coap-edge's answer). */
export const echoAnswerBytes = 4 + 4 + 13 + 8 + 8;

/** One connected UDP socket in the echo's closed loop. */
class Echoer extends Sender {
  private readonly request = Buffer.alloc(echoRequestBytes, 0x17);

  private constructor(
    private readonly socket: Socket,
    c: Counters,
  ) {
    super(c);
    socket.on('message', (m) => this.onMessage(m));
  }

  static async open(server: ServerProcess, c: Counters): Promise<Echoer> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) =>
      socket.connect(server.target.port, server.target.host, resolve),
    );
    return new Echoer(socket, c);
  }

  send(): void {
    this.sent();
    this.socket.send(this.request);
  }

  private onMessage(m: Buffer): void {
    if (!this.outstanding) {
      this.c.unmatched++;
      return;
    }
    this.answered(m.length !== echoAnswerBytes ? `length ${m.length}` : undefined);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(resolve));
  }
}

async function measure(
  server: ServerProcess,
  load: RecordsLoad,
  c: Counters,
  loopers: readonly Sender[],
  setupFailures: Record<string, number>,
): Promise<RecordsResult> {
  const sweeper = setInterval(() => {
    const now = performance.now();
    for (const l of loopers) if (l.expire(now, load.requestTimeoutMs)) c.timeouts++;
  }, 100);

  try {
    for (const l of loopers) l.send();
    await sleep(load.warmupMs);
    const close = openWindow(server);
    c.measuring = true;
    await sleep(load.durationMs);
    c.measuring = false;
    const w = close();
    const serverRssKiB = server.rssKiB() ?? null;

    // drain: stop sending, give outstanding requests a moment to come back
    c.running = false;
    const drainUntil = performance.now() + load.requestTimeoutMs;
    while (loopers.some((l) => l.outstanding) && performance.now() < drainUntil) await sleep(10);

    const per = (us: number | null): number | null =>
      us !== null && c.requests > 0 ? round(us / c.requests, 2) : null;
    return {
      requestsPerSec: round((c.requests * 1000) / w.wallMs, 1),
      serverCpuUsPerRequest: per(w.serverCpuUs),
      serverCpuUsPerRequestSchedstat: per(w.serverCpuUsSchedstat),
      serverSystemCpuUsPerRequest: per(w.serverSystemCpuUs),
      loadGenCpuUsPerRequest: per(w.loadGenCpuUtilisation * w.wallMs * 1000),
      requests: c.requests,
      latency: c.latency.summary(),
      associations: loopers.length,
      setupFailures,
      unexpectedResponses: c.unexpected,
      timeouts: c.timeouts,
      unmatched: c.unmatched,
      associationsLost: c.lost,
      window: windowReport(w),
      serverRssKiB,
    };
  } finally {
    c.running = false;
    clearInterval(sweeper);
    await Promise.all(loopers.map((l) => l.close()));
  }
}
