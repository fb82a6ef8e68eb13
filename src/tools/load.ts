/**
 * Load generator behind `coap-edge bench`: N simulated devices, each with its own DTLS
 * association (CCM_8 by default), connected at a given ramp rate, then posting EnOS
 * measurepoints (CON or NON, a chosen payload size) in a closed loop (one request
 * outstanding per device) or at a fixed rate, for a duration (at a rate: every request due
 * within it is sent, however late). Progress snapshots while it runs; a result with
 * throughput, latency percentiles, errors by kind and, given coap-edge's /metrics,
 * coap-edge's resident memory per association.
 *
 * With `cid` the devices offer an RFC 9146 Connection ID; with `rebindEveryMs` each moves its
 * association to a new source port now and then (a NAT rebinding), and the result says how
 * the first request after each move fared.
 *
 * With `idleSockets` (needs `cid`) a device holds no socket while idle, as a sleeping device:
 * it suspends its association after the handshake and after each request, and resumes it on
 * a new socket (a new source port) for the next request; the gateway follows it by its
 * Connection ID (docs/design.md). At most `maxSockets` sockets are open at once, so one
 * process can simulate a fleet far larger than its file descriptors and ephemeral ports.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { CipherSuite } from '../dtls/constants.js';
import { DtlsError } from '../dtls/errors.js';
import { derivePsk, formatIdentity } from '../enos/index.js';
import { ContentFormat } from '../coap/constants.js';
import { CoapClientError, CoapDtlsClient } from './coap-client.js';

export interface LoadDevice {
  readonly productKey: string;
  readonly deviceKey: string;
  readonly secret: string;
}

export interface LoadOptions {
  readonly host: string;
  readonly port: number;
  readonly devices: readonly LoadDevice[];
  readonly durationMs: number;
  /** Requests per second per device; 0 = closed loop (next request when the answer came). */
  readonly ratePerDevice: number;
  readonly suite: 'ccm8' | 'cbc';
  /** Path relative to /topic/sys/{pk}/{dk}/ (default thing/measurepoint/post). */
  readonly topic?: string;
  /** Handshakes in flight at once (default 32). */
  readonly connectConcurrency?: number;
  /** Handshakes started per second during the ramp-up; 0 or absent: as fast as possible. */
  readonly rampPerSecond?: number;
  /** NON requests instead of CON (default false). */
  readonly nonConfirmable?: boolean;
  /** Size of each request body in bytes (a measurepoint post padded to it; default ~120). */
  readonly payloadSize?: number;
  readonly requestTimeoutMs?: number;
  /** Local address for the devices' sockets (default: any). */
  readonly bindAddress?: string;
  /** coap-edge's /metrics URL: read before and after the ramp for memory per association. */
  readonly metricsUrl?: string;
  /** Called when every device is connected, before the measured phase. */
  readonly onConnected?: () => void | Promise<void>;
  /** Offer a 4-byte RFC 9146 Connection ID (as mbedTLS devices do). */
  readonly cid?: boolean;
  /** Each device moves to a new UDP source port this often during the measured phase. */
  readonly rebindEveryMs?: number;
  /** Share of the devices that move (0 to 1; default 1): the first that many of them. */
  readonly rebindShare?: number;
  /**
   * Devices hold no socket while idle: suspend after the handshake and after each request,
   * resume on a new socket for the next one. Needs `cid`; `rebindEveryMs` is ignored.
   */
  readonly idleSockets?: boolean;
  /** With `idleSockets`: most sockets open at once (default 2000). */
  readonly maxSockets?: number;
  /** Called every `progressIntervalMs` (default 1000) while running. */
  readonly onProgress?: (p: LoadProgress) => void;
  readonly progressIntervalMs?: number;
}

/** What a progress line shows: totals so far and rates over the last interval. */
export interface LoadProgress {
  readonly phase: 'connecting' | 'running';
  readonly elapsedMs: number;
  readonly devices: number;
  readonly connected: number;
  readonly handshakesPerSecond: number;
  readonly requests: number;
  readonly requestsPerSecond: number;
  /** Request latency so far; 0 before the first answer. */
  readonly latencyMs: { readonly p50: number; readonly p99: number };
  readonly errors: Readonly<Record<string, number>>;
  /** With `idleSockets`: sockets open right now. */
  readonly socketsOpen?: number;
}

export interface MemoryResult {
  readonly rssBeforeBytes: number;
  readonly rssAfterBytes: number;
  /** Associations coap-edge added over the ramp (its own gauge, after minus before). */
  readonly associations: number;
  /** (RSS after − RSS before) / associations; 0 when no association was added. */
  readonly bytesPerAssociation: number;
  /** RSS at the end of the measured phase, before the devices close (when scraped). */
  readonly rssEndBytes?: number;
  /** (RSS at the end − RSS before) / associations at the end: after the devices' requests. */
  readonly bytesPerAssociationEnd?: number;
}

/** With `idleSockets`: how the sockets were shared. */
export interface IdleSocketsResult {
  readonly maxSockets: number;
  /** Most sockets the devices held open at once (the tool's own count). */
  readonly peakSockets: number;
  /** Handshakes the tool started: one per device, none later. */
  readonly handshakes: number;
  /** Associations resumed on a new socket (one per request sent). */
  readonly resumes: number;
  /** Time a device waited for a free socket before a request. */
  readonly socketWaitMs: { readonly p50: number; readonly p99: number };
}

export interface LoadResult {
  readonly devices: number;
  readonly connected: number;
  readonly connectFailures: number;
  readonly type: 'CON' | 'NON';
  readonly payloadBytes: number;
  readonly rampMs: number;
  readonly handshakesPerSecond: number;
  readonly handshakeMs: { readonly p50: number; readonly p99: number };
  readonly durationMs: number;
  readonly requests: number;
  readonly ok: number;
  readonly failed: number;
  readonly codes: Readonly<Record<string, number>>;
  /** Failed handshakes, failed requests and non-2.xx answers, by kind. */
  readonly errors: Readonly<Record<string, number>>;
  readonly messagesPerSecond: number;
  readonly latencyMs: {
    readonly p50: number;
    readonly p90: number;
    readonly p99: number;
    readonly max: number;
  };
  /** Present when `metricsUrl` was given and both scrapes worked. */
  readonly memory?: MemoryResult;
  /** With `idleSockets`: socket sharing. */
  readonly idleSockets?: IdleSocketsResult;
  /** With `rebindEveryMs`: the moves, and the first request after each. */
  readonly rebinding?: {
    readonly rebinds: number;
    /** Answered 2.xx without a CoAP retransmission. */
    readonly answeredFirstTry: number;
    readonly answeredAfterRetransmission: number;
    readonly failed: number;
  };
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/**
 * Latencies in logarithmic buckets (4 % wide, 10 µs to ~10 min): constant memory for any
 * number of samples, percentiles at any time for the progress line, within 4 %.
 */
export class LatencyHistogram {
  private static readonly MIN_MS = 0.01;
  private static readonly LOG_GROWTH = Math.log(1.04);
  private readonly buckets = new Uint32Array(460);
  count = 0;
  max = 0;

  record(ms: number): void {
    const b = this.buckets;
    const i =
      ms <= LatencyHistogram.MIN_MS
        ? 0
        : Math.min(
            b.length - 1,
            Math.ceil(Math.log(ms / LatencyHistogram.MIN_MS) / LatencyHistogram.LOG_GROWTH),
          );
    b[i] = (b[i] ?? 0) + 1;
    this.count++;
    if (ms > this.max) this.max = ms;
  }

  /** The upper bound of the bucket holding the p-th percentile (at most the maximum seen). */
  quantile(p: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i] ?? 0;
      if (seen >= rank) {
        return Math.min(
          this.max,
          LatencyHistogram.MIN_MS * Math.exp(i * LatencyHistogram.LOG_GROWTH),
        );
      }
    }
    return this.max;
  }
}

/** A short stable name for what went wrong, for the errors-by-kind counts. */
export function errorKind(stage: 'handshake' | 'request' | 'resume', err: unknown): string {
  let code = 'unknown';
  if (err instanceof DtlsError || err instanceof CoapClientError) code = err.code;
  else if (err instanceof Error) code = (err as NodeJS.ErrnoException).code ?? err.name;
  return `${stage}:${code.replace(/^(DTLS|COAP)_/, '').toLowerCase()}`;
}

function bump(rec: Record<string, number>, key: string): void {
  rec[key] = (rec[key] ?? 0) + 1;
}

let counter = 0;
/** An EnOS measurepoint post, padded with a `pad` param to `size` bytes when that is larger. */
export function measurepointBody(size = 0): Buffer {
  counter = (counter + 1) % 2 ** 31;
  const base = {
    id: String(counter),
    version: '1.0',
    method: 'thing.measurepoint.post',
    params: { measurepoints: { temperature: 21.5, humidity: 40 }, time: Date.now() },
  };
  const text = JSON.stringify(base);
  // `,"pad":""` adds 9 bytes inside params
  const missing = size - Buffer.byteLength(text) - 9;
  if (missing < 0) return Buffer.from(text);
  return Buffer.from(
    JSON.stringify({ ...base, params: { ...base.params, pad: 'x'.repeat(missing) } }),
  );
}

/** One value of a Prometheus text exposition: the sum of the samples of a label-less family. */
export function scrapeValue(text: string, name: string): number | undefined {
  let sum: number | undefined;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const v = Number(rest.slice(rest.lastIndexOf(' ') + 1));
    if (Number.isFinite(v)) sum = (sum ?? 0) + v;
  }
  return sum;
}

async function memorySample(
  url: string,
): Promise<{ rss: number; associations: number } | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) return undefined;
    const text = await res.text();
    const rss = scrapeValue(text, 'process_resident_memory_bytes');
    const associations = scrapeValue(text, 'coap_edge_dtls_associations');
    return rss === undefined || associations === undefined ? undefined : { rss, associations };
  } catch {
    return undefined;
  }
}

/**
 * A counting semaphore for sockets: `acquire` waits (first come, first served) while `limit`
 * are open; `peak` is the most ever open at once.
 */
export class SocketBudget {
  open = 0;
  peak = 0;
  private readonly waiters: (() => void)[] = [];
  private head = 0;

  constructor(readonly limit: number) {
    if (!(limit >= 1)) throw new RangeError('limit must be at least 1');
  }

  acquire(): Promise<void> {
    if (this.open < this.limit && this.head === this.waiters.length) {
      this.take();
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    this.open--;
    const next = this.waiters[this.head];
    if (next === undefined) return;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.waiters.length) {
      this.waiters.splice(0, this.head);
      this.head = 0;
    }
    this.take();
    next();
  }

  /** Devices waiting for a socket. */
  get waiting(): number {
    return this.waiters.length - this.head;
  }

  private take(): void {
    this.open++;
    if (this.open > this.peak) this.peak = this.open;
  }
}

function isLoopbackV4(host: string): boolean {
  return /^127\.\d+\.\d+\.\d+$/.test(host) || host === 'localhost';
}

/**
 * The source address of device `i` in idle-sockets mode against a loopback gateway: one
 * address of 127.0.0.0/8 per device (127.1.0.0 onwards). Each resume takes a new port, and
 * no other device can then take the address the gateway last saw this one at: the kernel
 * hands out ports again soon, and the gateway lets a newcomer at a device's last address
 * displace that device's association (docs/operations.md).
 */
export function loopbackAddress(i: number): string {
  const n = (1 << 16) + i; // 127.1.0.0 + i, up to 127.255.255.254
  if (n >= 0xffffff) throw new RangeError('too many devices for 127.0.0.0/8');
  return `127.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const suite =
    o.suite === 'cbc'
      ? CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256
      : CipherSuite.TLS_PSK_WITH_AES_128_CCM_8;
  const clients: { c: CoapDtlsClient; path: string }[] = [];
  const handshakes = new LatencyHistogram();
  const latencies = new LatencyHistogram();
  const codes: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let connectFailures = 0;
  let failed = 0;
  let phase: LoadProgress['phase'] = 'connecting';
  const idle = o.idleSockets === true;
  if (idle && o.cid !== true) throw new RangeError('idleSockets needs cid');
  const sockets = idle ? new SocketBudget(Math.max(1, o.maxSockets ?? 2000)) : undefined;
  const socketWait = new LatencyHistogram();
  let resumes = 0;
  const t0 = performance.now();

  // progress: totals, and rates over the last interval
  const intervalMs = Math.max(100, o.progressIntervalMs ?? 1000);
  let last = { at: t0, handshakes: 0, requests: 0 };
  const progress =
    o.onProgress === undefined
      ? undefined
      : setInterval(() => {
          const now = performance.now();
          const hs = clients.length + connectFailures;
          const reqs = latencies.count + failed;
          const dt = Math.max(1, now - last.at) / 1000;
          o.onProgress?.({
            phase,
            elapsedMs: Math.round(now - t0),
            devices: o.devices.length,
            connected: clients.length,
            handshakesPerSecond: round((hs - last.handshakes) / dt),
            requests: reqs,
            requestsPerSecond: round((reqs - last.requests) / dt),
            latencyMs: { p50: round(latencies.quantile(50)), p99: round(latencies.quantile(99)) },
            errors: { ...errors },
            ...(sockets !== undefined ? { socketsOpen: sockets.open } : {}),
          });
          last = { at: now, handshakes: hs, requests: reqs };
        }, intervalMs);

  try {
    const before = o.metricsUrl === undefined ? undefined : await memorySample(o.metricsUrl);
    const topic = o.topic ?? 'thing/measurepoint/post';
    const spacing = (o.rampPerSecond ?? 0) > 0 ? 1000 / (o.rampPerSecond ?? 1) : 0;
    let nextStart = performance.now();
    let index = 0;
    const ownAddresses = idle && o.bindAddress === undefined && isLoopbackV4(o.host);
    const worker = async (): Promise<void> => {
      for (let d = o.devices[index++]; d !== undefined; d = o.devices[index++]) {
        const bindAddress = ownAddresses ? loopbackAddress(index - 1) : o.bindAddress;
        if (spacing > 0) {
          const wait = nextStart - performance.now();
          nextStart = Math.max(nextStart, performance.now()) + spacing;
          if (wait > 0) await sleep(wait);
        }
        await sockets?.acquire();
        const started = performance.now();
        try {
          const c = await CoapDtlsClient.connect({
            host: o.host,
            port: o.port,
            identity: formatIdentity({
              productKey: d.productKey,
              deviceKey: d.deviceKey,
              secureMode: 2,
              lifetime: 3600,
            }),
            psk: derivePsk(d.secret),
            cipherSuites: [suite],
            handshakeTimeoutMs: 20_000,
            ...(bindAddress !== undefined ? { bindAddress } : {}),
            ...(o.cid === true ? { connectionId: randomBytes(4) } : {}),
          });
          handshakes.record(performance.now() - started);
          // a sleeping device: no socket until its first request
          if (sockets !== undefined) c.dtls.suspend();
          clients.push({ c, path: `/topic/sys/${d.productKey}/${d.deviceKey}/${topic}` });
        } catch (err) {
          connectFailures++;
          bump(errors, errorKind('handshake', err));
        } finally {
          sockets?.release();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, o.connectConcurrency ?? 32) }, worker));
    const rampMs = performance.now() - t0;
    const after =
      before === undefined || o.metricsUrl === undefined
        ? undefined
        : await memorySample(o.metricsUrl);
    await o.onConnected?.();

    phase = 'running';
    const started = performance.now();
    const end = started + o.durationMs;
    const interval = o.ratePerDevice > 0 ? 1000 / o.ratePerDevice : 0;
    const nonConfirmable = o.nonConfirmable === true;
    // with idle sockets every request comes from a new port anyway
    const rebindEvery = idle ? 0 : (o.rebindEveryMs ?? 0);
    const movers = Math.round(clients.length * Math.min(1, Math.max(0, o.rebindShare ?? 1)));
    const moves = { rebinds: 0, answeredFirstTry: 0, answeredAfterRetransmission: 0, failed: 0 };
    await Promise.all(
      clients.map(async ({ c, path }, i) => {
        let next = started + (interval > 0 ? (i / clients.length) * interval : 0);
        // staggered, so that not every device moves at once
        let nextRebind =
          rebindEvery > 0 && i < movers
            ? started + rebindEvery * (1 + i / clients.length)
            : Infinity;
        // at a rate, every turn due before the end is taken, however late a slow machine or
        // the socket budget makes it (the offered load does not depend on the machine's
        // speed); in closed loop the requests started before the end count
        while (interval > 0 ? next < end : performance.now() < end) {
          // when this turn is (at a rate: when it was due, so that moves come with the same
          // turns whatever the machine's speed)
          let turn = next;
          if (interval > 0) {
            const wait = next - performance.now();
            if (wait > 0) await sleep(wait);
            next += interval;
          } else turn = performance.now();
          if (sockets !== undefined) {
            const w = performance.now();
            await sockets.acquire();
            socketWait.record(performance.now() - w);
            if (interval === 0 && performance.now() >= end) {
              sockets.release();
              break;
            }
            try {
              await c.dtls.resume();
              resumes++;
            } catch (err) {
              sockets.release();
              failed++;
              bump(errors, errorKind('resume', err));
              continue;
            }
          }
          let moved = false;
          if (turn >= nextRebind) {
            nextRebind += rebindEvery;
            try {
              await c.dtls.rebind();
              moves.rebinds++;
              moved = true;
            } catch {
              moves.failed++;
            }
          }
          const t = performance.now();
          try {
            const r = await c.request({
              method: 'POST',
              path,
              payload: measurepointBody(o.payloadSize),
              contentFormat: ContentFormat.JSON,
              timeoutMs: o.requestTimeoutMs ?? 30_000,
              nonConfirmable,
            });
            latencies.record(performance.now() - t);
            const k = `${r.code >> 5}.${String(r.code & 31).padStart(2, '0')}`;
            bump(codes, k);
            if (r.code >> 5 !== 2) bump(errors, `response:${k}`);
            if (moved) {
              if (r.code >> 5 !== 2) moves.failed++;
              else if (r.retransmissions === 0) moves.answeredFirstTry++;
              else moves.answeredAfterRetransmission++;
            }
          } catch (err) {
            failed++;
            bump(errors, errorKind('request', err));
            if (moved) moves.failed++;
          } finally {
            if (sockets !== undefined) {
              c.dtls.suspend();
              sockets.release();
            }
          }
        }
      }),
    );
    const durationMs = performance.now() - started;
    const atEnd =
      before === undefined || o.metricsUrl === undefined
        ? undefined
        : await memorySample(o.metricsUrl);
    if (sockets === undefined) {
      await Promise.all(clients.map(({ c }) => c.close().catch(() => undefined)));
    } else {
      // close_notify needs a socket: resume each association once more to close it, as many
      // at once and at the rate of the ramp-up (a burst of them overflows a busy gateway's
      // receive buffer, and the lost ones stay until idleTimeoutSeconds)
      let next = 0;
      let nextClose = performance.now();
      const closer = async (): Promise<void> => {
        for (let e = clients[next++]; e !== undefined; e = clients[next++]) {
          if (spacing > 0) {
            const wait = nextClose - performance.now();
            nextClose = Math.max(nextClose, performance.now()) + spacing;
            if (wait > 0) await sleep(wait);
          }
          await sockets.acquire();
          try {
            await e.c.dtls.resume();
            await e.c.close();
          } catch {
            // the gateway drops it when idle
          } finally {
            sockets.release();
          }
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, o.connectConcurrency ?? 32) }, closer));
    }
    const ok = Object.entries(codes).reduce((n, [k, v]) => (k.startsWith('2.') ? n + v : n), 0);
    let memory: MemoryResult | undefined;
    if (before !== undefined && after !== undefined) {
      const associations = after.associations - before.associations;
      memory = {
        rssBeforeBytes: before.rss,
        rssAfterBytes: after.rss,
        associations,
        bytesPerAssociation:
          associations > 0 ? Math.round((after.rss - before.rss) / associations) : 0,
        ...(atEnd !== undefined
          ? {
              rssEndBytes: atEnd.rss,
              bytesPerAssociationEnd:
                atEnd.associations > before.associations
                  ? Math.round(
                      (atEnd.rss - before.rss) / (atEnd.associations - before.associations),
                    )
                  : 0,
            }
          : {}),
      };
    }
    return {
      devices: o.devices.length,
      connected: clients.length,
      connectFailures,
      type: nonConfirmable ? 'NON' : 'CON',
      payloadBytes: measurepointBody(o.payloadSize).length,
      rampMs: Math.round(rampMs),
      handshakesPerSecond: round(((clients.length + connectFailures) / rampMs) * 1000),
      handshakeMs: { p50: round(handshakes.quantile(50)), p99: round(handshakes.quantile(99)) },
      durationMs: Math.round(durationMs),
      requests: latencies.count + failed,
      ok,
      failed,
      codes,
      errors,
      messagesPerSecond: round((latencies.count / durationMs) * 1000),
      latencyMs: {
        p50: round(latencies.quantile(50)),
        p90: round(latencies.quantile(90)),
        p99: round(latencies.quantile(99)),
        max: round(latencies.max),
      },
      ...(memory !== undefined ? { memory } : {}),
      ...(sockets !== undefined
        ? {
            idleSockets: {
              maxSockets: sockets.limit,
              peakSockets: sockets.peak,
              handshakes: clients.length + connectFailures,
              resumes,
              socketWaitMs: {
                p50: round(socketWait.quantile(50)),
                p99: round(socketWait.quantile(99)),
              },
            },
          }
        : {}),
      ...(rebindEvery > 0 ? { rebinding: moves } : {}),
    };
  } finally {
    if (progress !== undefined) clearInterval(progress);
  }
}

function ms(n: number): string {
  return n >= 100 ? `${Math.round(n)} ms` : `${n.toFixed(1)} ms`;
}

function errorList(errors: Readonly<Record<string, number>>): string {
  const e = Object.entries(errors).sort((a, b) => b[1] - a[1]);
  return e.length === 0 ? 'none' : e.map(([k, v]) => `${k} ${v}`).join(', ');
}

/** The one-line live progress (no newline; the caller rewrites the line on a terminal). */
export function formatProgress(p: LoadProgress): string {
  const secs = String(Math.round(p.elapsedMs / 1000)).padStart(4);
  const parts = [
    `[${secs} s] ${p.phase === 'connecting' ? 'ramp' : 'load'}`,
    `${p.connected}/${p.devices} devices connected`,
    `${p.handshakesPerSecond.toFixed(0)} handshakes/s`,
    `${p.requestsPerSecond.toFixed(0)} req/s`,
    `p50 ${ms(p.latencyMs.p50)} p99 ${ms(p.latencyMs.p99)}`,
    `errors: ${errorList(p.errors)}`,
  ];
  if (p.socketsOpen !== undefined) parts.splice(2, 0, `${p.socketsOpen} sockets open`);
  return parts.join(' | ');
}

/** The human summary printed when a run ends (several lines, ending in a newline). */
export function formatSummary(r: LoadResult): string {
  const rows: [string, string][] = [
    [
      'devices',
      `${r.connected}/${r.devices} connected` +
        (r.connectFailures > 0 ? ` (${r.connectFailures} failed)` : ''),
    ],
    [
      'ramp-up',
      `${(r.rampMs / 1000).toFixed(1)} s, ${r.handshakesPerSecond.toFixed(1)} handshakes/s`,
    ],
    ['handshake time', `p50 ${ms(r.handshakeMs.p50)}, p99 ${ms(r.handshakeMs.p99)}`],
    ['requests', `${r.type}, ${r.payloadBytes}-byte body, ${(r.durationMs / 1000).toFixed(1)} s`],
    [
      'answered',
      `${r.requests} sent, ${r.ok} ok (2.xx), ${r.failed} unanswered; ` +
        `${r.messagesPerSecond.toFixed(1)} answers/s`,
    ],
    [
      'latency',
      `p50 ${ms(r.latencyMs.p50)}, p90 ${ms(r.latencyMs.p90)}, ` +
        `p99 ${ms(r.latencyMs.p99)}, max ${ms(r.latencyMs.max)}`,
    ],
    [
      'response codes',
      Object.entries(r.codes)
        .sort()
        .map(([k, v]) => `${k} ${v}`)
        .join(', ') || 'none',
    ],
    ['errors', errorList(r.errors)],
  ];
  if (r.memory !== undefined) {
    const m = r.memory;
    rows.push([
      'coap-edge memory',
      `${(m.bytesPerAssociation / 1024).toFixed(1)} KiB RSS per association ` +
        `(${(m.rssBeforeBytes / 2 ** 20).toFixed(0)} → ${(m.rssAfterBytes / 2 ** 20).toFixed(0)} MiB ` +
        `for ${m.associations} associations)` +
        (m.rssEndBytes !== undefined
          ? `; ${(m.rssEndBytes / 2 ** 20).toFixed(0)} MiB after the load` +
            ` (${((m.bytesPerAssociationEnd ?? 0) / 1024).toFixed(1)} KiB per association)`
          : ''),
    ]);
  }
  if (r.idleSockets !== undefined) {
    const s = r.idleSockets;
    rows.push([
      'idle sockets',
      `at most ${s.peakSockets} of ${s.maxSockets} open at once; ${s.handshakes} handshakes, ` +
        `${s.resumes} resumed on a new socket; wait for a socket p50 ${ms(s.socketWaitMs.p50)}, ` +
        `p99 ${ms(s.socketWaitMs.p99)}`,
    ]);
  }
  if (r.rebinding !== undefined) {
    const m = r.rebinding;
    rows.push([
      'source-port moves',
      `${m.rebinds}; first request after a move: ${m.answeredFirstTry} answered at once, ` +
        `${m.answeredAfterRetransmission} after a retransmission, ${m.failed} failed`,
    ]);
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  return `${rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n')}\n`;
}

/**
 * Writes a generated devices file (secrets inside: owner-only permissions). A workstation
 * tool: the proxy itself never writes to the filesystem.
 */
export function writeDevicesFile(path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o600 });
}

/** A devices file with `count` devices of one product, secrets derived from a seed. */
export function generateDevices(
  count: number,
  productKey: string,
  seed: string,
): {
  products: { productKey: string; productSecret: string; dynamicRegistration: boolean }[];
  devices: { productKey: string; deviceKey: string; deviceSecret: string }[];
} {
  const devices = Array.from({ length: count }, (_, i) => ({
    productKey,
    deviceKey: `dev${String(i).padStart(6, '0')}`,
    deviceSecret: `${seed}-${i}`,
  }));
  return {
    products: [{ productKey, productSecret: `${seed}-product`, dynamicRegistration: true }],
    devices,
  };
}
