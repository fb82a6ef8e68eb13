/**
 * Handshake load: N concurrent connectors, each doing connect (full handshake including
 * the HelloVerifyRequest round trip) → close_notify, again and again. After a warm-up the
 * server's CPU and the count of completed handshakes are snapshot at the start and end of
 * a measured window, so handshakes in flight at the edges balance out (steady state).
 */
import { createSocket } from 'node:dgram';
import type { DtlsClient } from '../../src/dtls/client.js';
import {
  connect,
  failureName,
  nthCredentials,
  type PooledCredentials,
  type Target,
} from './client.js';
import type { Step } from './handshake-floor.js';
import { openWindow, windowReport, type Window } from './harness.js';
import type { ServerProcess } from './servers.js';
import { Samples, increment, round, sleep } from './stats.js';

export interface HandshakeLoad {
  readonly creds: PooledCredentials;
  readonly suite: number;
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly handshakeTimeoutMs: number;
  /**
   * At most this many handshakes started per second by all connectors together (undefined:
   * each connector starts its next handshake as soon as the last ends).
   */
  readonly handshakesPerSec?: number | undefined;
  /**
   * The window opens only once this many handshakes completed in the phase (and `warmupMs`
   * passed; at most {@link MAX_WARMUP_MS}): coap-edge's handshake path needs some 2 000
   * handshakes before V8 has optimized it, which a time-based warm-up at a low rate never gives.
   */
  readonly warmupHandshakes?: number | undefined;
}

/** The longest a warm-up waits for its handshakes. */
export const MAX_WARMUP_MS = 120_000;

export interface HandshakeResult {
  readonly handshakesPerSec: number | null;
  readonly serverCpuUsPerHandshake: number | null;
  readonly serverCpuUsPerHandshakeSchedstat: number | null;
  /** The kernel (stime) part of serverCpuUsPerHandshake. */
  readonly serverSystemCpuUsPerHandshake: number | null;
  readonly loadGenCpuUsPerHandshake: number | null;
  readonly handshakes: number;
  readonly failures: number;
  readonly failureKinds: Record<string, number>;
  readonly retransmissions: number;
  readonly withoutHelloVerify: number;
  readonly latency: { p50Ms: number | null; p99Ms: number | null; maxMs: number | null };
  readonly window: Record<string, number | null>;
  readonly serverRssKiB: number | null;
  /** Handshakes completed and ms spent before the window opened. */
  readonly warmup: { readonly handshakes: number; readonly ms: number };
}

interface Tally {
  measuring: boolean;
  /** Completed before the window opened. */
  warmupHandshakes: number;
  handshakes: number;
  retransmissions: number;
  withoutHelloVerify: number;
  failures: number;
  readonly failureKinds: Record<string, number>;
  readonly latency: Samples;
}

function newTally(): Tally {
  return {
    measuring: false,
    warmupHandshakes: 0,
    handshakes: 0,
    retransmissions: 0,
    withoutHelloVerify: 0,
    failures: 0,
    failureKinds: {},
    latency: new Samples(),
  };
}

export async function runHandshakes(
  server: ServerProcess,
  load: HandshakeLoad,
): Promise<HandshakeResult> {
  const t = newTally();
  return tallied(server, load, t, async (i) => {
    const t0 = performance.now();
    let client: DtlsClient;
    try {
      client = await connect(server.target, nthCredentials(load.creds, i), {
        suite: load.suite,
        handshakeTimeoutMs: load.handshakeTimeoutMs,
      });
    } catch (err) {
      return failureName(err);
    }
    const ms = performance.now() - t0;
    if (t.measuring) {
      t.retransmissions += client.trace.retransmissions;
      if (!client.trace.helloVerify) t.withoutHelloVerify++;
    }
    await client.close();
    return ms;
  });
}

/**
 * One start schedule shared by concurrent loops: {@link turn} resolves at the next start, a
 * start every `1000 / perSec` ms, so all of them together start at most `perSec` a second
 * (a loop whose turn came while it was busy starts at once, and the schedule does not run
 * ahead of the clock to make up for a slow server).
 */
export class StartPace {
  #next: number;

  constructor(
    private readonly perSec: number,
    private readonly now: () => number = () => performance.now(),
    private readonly wait: (ms: number) => Promise<void> = sleep,
  ) {
    this.#next = now();
  }

  async turn(): Promise<void> {
    const now = this.now();
    const at = Math.max(this.#next, now);
    this.#next = at + 1000 / this.perSec;
    // timers have a 1-ms resolution: less than that is started now
    if (at - now >= 1) await this.wait(at - now);
  }
}

/**
 * `load.concurrency` connectors (connector i) each run `once` in a loop: it answers the
 * handshake's latency in ms, or the name of its failure. Failures are counted over the whole
 * phase (warm-up and drain included), handshakes and latencies over the window. With
 * `load.handshakesPerSec` they take their starts from one {@link StartPace}.
 */
async function tallied(
  server: ServerProcess,
  load: HandshakeLoad,
  t: Tally,
  once: (connector: number) => Promise<number | string>,
): Promise<HandshakeResult> {
  let stopping = false;
  const pace =
    load.handshakesPerSec !== undefined ? new StartPace(load.handshakesPerSec) : undefined;
  const connector = async (i: number): Promise<void> => {
    while (!stopping) {
      if (pace !== undefined) {
        await pace.turn();
        if (stopping) break;
      }
      const r = await once(i);
      if (typeof r === 'string') {
        t.failures++;
        increment(t.failureKinds, r);
      } else if (t.measuring) {
        t.handshakes++;
        t.latency.push(r);
      } else if (!opened) t.warmupHandshakes++;
    }
  };
  let opened = false;
  const connectors = Array.from({ length: load.concurrency }, (_, i) => connector(i));
  const warmupMs = await warmUp(load, () => t.warmupHandshakes);
  opened = true;
  const close = openWindow(server);
  t.measuring = true;
  await sleep(load.durationMs);
  t.measuring = false;
  const w = close();
  const serverRssKiB = server.rssKiB() ?? null;
  stopping = true;
  await Promise.all(connectors);
  return result(w, t.handshakes, serverRssKiB, t, {
    handshakes: t.warmupHandshakes,
    ms: Math.round(warmupMs),
  });
}

/**
 * Waits `load.warmupMs`, then until `completed()` reaches `load.warmupHandshakes` (polled
 * every 50 ms), at most {@link MAX_WARMUP_MS} in all; answers the ms it waited.
 */
export async function warmUp(
  load: Pick<HandshakeLoad, 'warmupMs' | 'warmupHandshakes'>,
  completed: () => number,
  now: () => number = () => performance.now(),
  wait: (ms: number) => Promise<void> = sleep,
): Promise<number> {
  const t0 = now();
  await wait(load.warmupMs);
  const wanted = load.warmupHandshakes ?? 0;
  while (completed() < wanted && now() - t0 < MAX_WARMUP_MS) await wait(50);
  return now() - t0;
}

function result(
  w: Window,
  handshakes: number,
  serverRssKiB: number | null,
  t: Omit<Tally, 'measuring' | 'handshakes' | 'warmupHandshakes'>,
  warmup: HandshakeResult['warmup'],
): HandshakeResult {
  const per = (us: number | null): number | null =>
    us !== null && handshakes > 0 ? round(us / handshakes, 1) : null;
  return {
    handshakesPerSec: round((handshakes * 1000) / w.wallMs, 1),
    serverCpuUsPerHandshake: per(w.serverCpuUs),
    serverCpuUsPerHandshakeSchedstat: per(w.serverCpuUsSchedstat),
    serverSystemCpuUsPerHandshake: per(w.serverSystemCpuUs),
    loadGenCpuUsPerHandshake: per(w.loadGenCpuUtilisation * w.wallMs * 1000),
    handshakes,
    failures: t.failures,
    failureKinds: t.failureKinds,
    retransmissions: t.retransmissions,
    withoutHelloVerify: t.withoutHelloVerify,
    latency: t.latency.summary(),
    window: windowReport(w),
    serverRssKiB,
    warmup,
  };
}

/**
 * The UDP part of the handshake floor: N connectors replay the census's steps against
 * bench/lib/handshake-floor.ts, each handshake from a new connected UDP socket (as the
 * DtlsClient does): the step's datagrams `[step, index, …]` of the recorded sizes, then wait
 * for the step's answers. A handshake not done in `handshakeTimeoutMs` is a failure.
 */
export async function runPingPong(
  server: ServerProcess,
  load: HandshakeLoad,
  steps: readonly Step[],
): Promise<HandshakeResult> {
  const requests = pingPongRequests(steps);
  return tallied(server, load, newTally(), async () => {
    const t0 = performance.now();
    const ok = await pingPongHandshake(server.target, steps, requests, load.handshakeTimeoutMs);
    return ok ? performance.now() - t0 : 'timeout';
  });
}

/** Per step, the client's datagrams `[step, index, …padding]` of the recorded sizes. */
export function pingPongRequests(steps: readonly Step[]): Buffer[][] {
  return steps.map((s, k) =>
    s.in.map((bytes, i) => {
      const b = Buffer.alloc(Math.max(2, bytes), 0x16);
      b[0] = k;
      b[1] = i;
      return b;
    }),
  );
}

/**
 * One floor handshake from a new connected UDP socket: each step's datagrams, then its
 * answers. Resolves false when it is not done in `timeoutMs`.
 */
export function pingPongHandshake(
  target: Target,
  steps: readonly Step[],
  requests: readonly (readonly Buffer[])[],
  timeoutMs: number,
): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    let step = 0;
    let answers = 0;
    const finish = (ok: boolean): void => {
      clearTimeout(timer);
      socket.close();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    const sendStep = (): void => {
      for (const r of requests[step] ?? []) socket.send(r);
      if ((steps[step]?.out.length ?? 0) === 0) next();
    };
    const next = (): void => {
      step++;
      answers = 0;
      if (step >= steps.length) finish(true);
      else sendStep();
    };
    socket.on('message', () => {
      if (++answers === steps[step]?.out.length) next();
    });
    socket.connect(target.port, target.host, sendStep);
  });
}

/**
 * The crypto part of the handshake floor alone: the floor process runs the crypto of all
 * steps in a loop (its `[0xfe, n]` command) in batches of `batch` handshakes until the window
 * closes; no UDP per step.
 */
export async function runCryptoOnly(
  server: ServerProcess,
  load: HandshakeLoad,
  batch = 200,
): Promise<HandshakeResult> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) =>
    socket.connect(server.target.port, server.target.host, resolve),
  );
  const command = Buffer.alloc(5);
  command[0] = 0xfe;
  command.writeUInt32BE(batch, 1);
  const run = (): Promise<void> =>
    new Promise((resolve) => {
      socket.once('message', () => resolve());
      socket.send(command);
    });
  let handshakes = 0;
  let measuring = false;
  let stopping = false;
  const loop = (async () => {
    while (!stopping) {
      await run();
      if (measuring) handshakes += batch;
    }
  })();
  try {
    await sleep(load.warmupMs);
    const close = openWindow(server);
    measuring = true;
    await sleep(load.durationMs);
    measuring = false;
    const w = close();
    stopping = true;
    await loop;
    return result(w, handshakes, server.rssKiB() ?? null, newTally(), {
      handshakes: 0,
      ms: load.warmupMs,
    });
  } finally {
    socket.close();
  }
}
