/**
 * Shared DTLS associations across a fleet of two pods (docs/design.md, "Shared associations").
 * Two coap-edge processes share Redis (a prefix of their own per run) and the association key;
 * one Mosquitto; an in-process UDP relay plays the load balancer: each client flow leaves from
 * a back socket of its own toward the pod its flow hashes to; when a pod is lost, the relay
 * sends that pod's flows to the other one (the back socket, i.e. the address the pod sees,
 * stays the same).
 *
 * A. Pod loss and rolling update, with CID and without: `--devices` devices post CON requests
 *    (CoapDtlsClient, RFC 7252 retransmission scaled down by `--ack-timeout`) at `--rate` per
 *    device to a publish-only topic (2.04 on PUBACK). After `--before` seconds one pod is
 *    SIGKILLed (the relay moves its flows at once) or SIGTERMed (drain; the relay moves its
 *    flows at the signal, as a Service drops a terminating endpoint; we wait for the exit).
 *    Measured: handshakes and adoptions on the surviving pod after the event (its /metrics),
 *    adoption latency (histogram deltas), per-device recovery (event → first 2.04 after it),
 *    failed requests, and every acknowledged message checked at the broker (a subscriber
 *    counts each (device, message id); lost = acknowledged but never delivered).
 * B. Memory bound: pods with `--max-associations`, `--b-count` CID associations made through
 *    the relay by devices that close their socket without close_notify after the handshake
 *    (DtlsClient.suspend: no fd while idle). RSS of each pod and the Redis keys / used_memory
 *    at milestones; then `--b-sample` random idle devices open a new socket and send one
 *    request: answered without a handshake (handshake counters unchanged), adoptions counted.
 *
 * Run: `npm run build && node dist/bench/shared-fleet.js [--devices 60] [--rate 2]
 *   [--before 8] [--after 20] [--ack-timeout 500] [--fence-records 64] [--parts a,b] [--b-count 100000]
 *   [--max-associations 10000] [--b-sample 500] [--redis-url redis://127.0.0.1:6379]`
 * One JSON object on stdout, progress on stderr, a copy in bench/results/.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../src/coap/constants.js';
import { DtlsClient } from '../src/dtls/client.js';
import { derivePsk } from '../src/enos/index.js';
import { CoapDtlsClient } from '../src/tools/coap-client.js';
import { generateDevices } from '../src/tools/load.js';
import { numberFlag, parseFlags, runScript, stringFlag } from './lib/args.js';
import { SUITES, failureName, type Credentials } from './lib/client.js';
import { commandLine, environment, log, writeResult } from './lib/harness.js';
import {
  freeTcpPort,
  installCleanup,
  startCoapEdge,
  stopAll,
  type ServerProcess,
} from './lib/servers.js';
import { percentile, round, sleep } from './lib/stats.js';
import { IpcChild, startMosquitto, type Broker } from './lib/uplink-procs.js';

const USAGE = `usage: node dist/bench/shared-fleet.js [options]
  --parts <a,b>             parts to run (default a,b)
  --devices <n>             devices of each part A run (default 60, at most 150)
  --rate <r>                requests per second per device in part A (default 2)
  --before <s>              seconds of load before the event (default 8)
  --after <s>               seconds of load after the event (default 20)
  --ack-timeout <ms>        initial CoAP retransmission timeout (default 500: RFC 7252's 2 s / 4)
  --fence-records <n>       the pods' --association-fence-records in part A (default: theirs)
  --b-count <n>             associations made in part B (default 100000)
  --max-associations <n>    in-memory bound of each pod in part B (default 10000)
  --b-sample <n>            idle devices that come back in part B (default 500)
  --b-parallel <n>          handshakes in flight at once in part B (default 32)
  --trace-gc                part B pods run with --trace-gc: heap after the last full GC
  --redis-url <url>         Redis (default redis://127.0.0.1:6379)`;

const PRODUCT_KEY = 'benchFleet';
const SEED = 'bench-fleet-secret';
const TOPIC_TAIL = 'rrpc/response/1';
const HOST = '127.0.0.1';

interface Device {
  readonly index: number;
  readonly identity: string;
  readonly psk: Buffer;
  readonly path: string;
}

// ---------------------------------------------------------------- helpers

function redisCli(url: string, ...args: string[]): string {
  return execFileSync('redis-cli', ['-u', url, ...args], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
}

function countKeys(url: string, pattern: string): number {
  return redisCli(url, '--scan', '--pattern', pattern)
    .split('\n')
    .filter((l) => l !== '').length;
}

function deleteKeys(url: string, pattern: string): void {
  const keys = redisCli(url, '--scan', '--pattern', pattern)
    .split('\n')
    .filter((l) => l !== '');
  for (let i = 0; i < keys.length; i += 500) redisCli(url, 'UNLINK', ...keys.slice(i, i + 500));
}

function redisUsedMemory(url: string): number {
  const m = /^used_memory:(\d+)/m.exec(redisCli(url, 'INFO', 'memory'));
  return m?.[1] !== undefined ? Number(m[1]) : NaN;
}

async function scrape(port: number): Promise<string> {
  const r = await fetch(`http://${HOST}:${port}/metrics`);
  return r.text();
}

/** Sum of every sample of a metric (all label sets). */
function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) {
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return sum;
}

/** Cumulative histogram buckets (le → count, all label sets summed). */
function buckets(text: string, name: string): Map<number, number> {
  const out = new Map<number, number>();
  const re = new RegExp(`^${name}_bucket\\{(?:.*,)?le="([^"]+)"(?:,.*)?\\} (\\S+)$`);
  for (const line of text.split('\n')) {
    const m = re.exec(line);
    if (m?.[1] === undefined || m[2] === undefined) continue;
    const le = m[1] === '+Inf' ? Infinity : Number(m[1]);
    out.set(le, (out.get(le) ?? 0) + Number(m[2]));
  }
  return out;
}

/** Buckets of several pods added up. */
function merged(all: readonly Map<number, number>[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of all) for (const [le, n] of m) out.set(le, (out.get(le) ?? 0) + n);
  return out;
}

/** Upper bucket bound holding quantile q of the observations between two scrapes. */
function bucketQuantile(
  before: Map<number, number>,
  after: Map<number, number>,
  q: number,
): number | null {
  const les = [...after.keys()].sort((x, y) => x - y);
  const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  if (total <= 0) return null;
  for (const le of les) {
    if ((after.get(le) ?? 0) - (before.get(le) ?? 0) >= q * total) return le;
  }
  return null;
}

/** Counters whose deltas explain an adoption (drops by reason, lookups by result, leases). */
const DETAIL = [
  'coap_edge_dtls_records_dropped_total',
  'coap_edge_dtls_association_lookups_total',
  'coap_edge_dtls_records_held_for_lease_total',
  'coap_edge_dtls_records_dropped_for_lease_total',
  'coap_edge_dtls_sequence_leases_lost_total',
  'coap_edge_dtls_association_store_errors_total',
  'coap_edge_dtls_adoptions_total',
];

/** Every sample of the DETAIL metrics, by `name{labels}` (the prefix `coap_edge_dtls_` cut). */
function details(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const name = DETAIL.find((n) => line.startsWith(`${n}{`) || line.startsWith(`${n} `));
    if (name === undefined) continue;
    const cut = line.lastIndexOf(' ');
    out.set(line.slice('coap_edge_dtls_'.length, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

interface PodCounters {
  readonly details: Map<string, number>;
  readonly handshakesStarted: number;
  readonly handshakesCompleted: number;
  readonly adoptions: number;
  readonly offloaded: number;
  readonly associations: number;
  readonly adoptionBuckets: Map<number, number>;
}

async function counters(port: number): Promise<PodCounters> {
  const t = await scrape(port);
  return {
    details: details(t),
    handshakesStarted: metricSum(t, 'coap_edge_dtls_handshakes_started_total'),
    handshakesCompleted: metricSum(t, 'coap_edge_dtls_handshakes_completed_total'),
    adoptions: metricSum(t, 'coap_edge_dtls_adoptions_total'),
    offloaded: metricSum(t, 'coap_edge_dtls_associations_offloaded_total'),
    associations: metricSum(t, 'coap_edge_dtls_associations'),
    adoptionBuckets: buckets(t, 'coap_edge_dtls_adoption_duration_seconds'),
  };
}

function diff(a: PodCounters, b: PodCounters): Record<string, unknown> {
  const changed: Record<string, number> = {};
  for (const [k, v] of b.details) {
    const d = v - (a.details.get(k) ?? 0);
    if (d !== 0) changed[k] = d;
  }
  return {
    changed,
    handshakesStarted: b.handshakesStarted - a.handshakesStarted,
    handshakesCompleted: b.handshakesCompleted - a.handshakesCompleted,
    adoptions: b.adoptions - a.adoptions,
    offloaded: b.offloaded - a.offloaded,
  };
}

function add(counts: Record<string, number>, k: string): void {
  counts[k] = (counts[k] ?? 0) + 1;
}

function dist(xs: readonly number[]): Record<string, number | null> {
  const s = Float64Array.from(xs).sort();
  return {
    n: s.length,
    p50: round(percentile(s, 50), 1),
    p99: round(percentile(s, 99), 1),
    max: round(s.length > 0 ? s[s.length - 1]! : null, 1),
  };
}

async function udp(): Promise<Socket> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, HOST, r));
  return s;
}

// ---------------------------------------------------------------- the load balancer

interface Flow {
  readonly back: Socket;
  readonly home: number;
  used: number;
}

/**
 * Clients talk to the front socket; each client flow (address, port) leaves from a back
 * socket of its own toward its pod (a hash of the flow; a pod marked down sends its flows to
 * the other one). At most `maxFlows` back sockets: the least recently used flow is closed
 * (its device's next record comes from a new address, which a CID covers).
 */
class Relay {
  private readonly flows = new Map<string, Flow>();
  readonly down = new Set<number>();
  flowsOpened = 0;
  flowsClosed = 0;

  private constructor(
    private readonly front: Socket,
    private readonly pods: readonly number[],
    private readonly maxFlows: number,
  ) {}

  static async start(pods: readonly number[], maxFlows: number): Promise<Relay> {
    const front = await udp();
    const r = new Relay(front, pods, maxFlows);
    front.on('message', (msg, rinfo) => r.forward(msg, rinfo.address, rinfo.port));
    return r;
  }

  get port(): number {
    return this.front.address().port;
  }

  /** The pod a flow goes to now. */
  podOf(home: number): number {
    if (!this.down.has(home)) return home;
    for (let i = 0; i < this.pods.length; i++) if (!this.down.has(i)) return i;
    return home;
  }

  homeOf(address: string, port: number): number {
    const h = createHash('sha1').update(`${address}|${port}`).digest();
    return h.readUInt32BE(0) % this.pods.length;
  }

  private forward(msg: Buffer, address: string, port: number): void {
    const k = `${address}|${port}`;
    let flow = this.flows.get(k);
    if (flow === undefined) {
      if (this.flows.size >= this.maxFlows) this.evictOldest();
      const back = createSocket('udp4');
      back.bind(0, HOST);
      back.on('message', (m) => this.front.send(m, port, address));
      back.on('error', () => undefined);
      flow = { back, home: this.homeOf(address, port), used: 0 };
      this.flows.set(k, flow);
      this.flowsOpened++;
    } else {
      // keep the map in use order (oldest first)
      this.flows.delete(k);
      this.flows.set(k, flow);
    }
    flow.used = performance.now();
    const pod = this.pods[this.podOf(flow.home)];
    if (pod !== undefined) flow.back.send(msg, pod, HOST);
  }

  private evictOldest(): void {
    const first = this.flows.entries().next().value;
    if (first === undefined) return;
    this.flows.delete(first[0]);
    this.flowsClosed++;
    try {
      first[1].back.close();
    } catch {
      // already closed
    }
  }

  get openFlows(): number {
    return this.flows.size;
  }

  close(): void {
    for (const f of this.flows.values()) {
      try {
        f.back.close();
      } catch {
        // already closed
      }
    }
    this.flows.clear();
    this.front.close();
  }
}

// ---------------------------------------------------------------- gateways

interface Pod {
  readonly server: ServerProcess;
  readonly http: number;
}

async function startPods(
  o: {
    devicesFile: string;
    broker: Broker;
    redisUrl: string;
    prefix: string;
    associationKey: string;
    extra?: readonly string[];
    nodeFlags?: readonly string[];
  },
  creds: Credentials,
): Promise<Pod[]> {
  const pods: Pod[] = [];
  for (let i = 0; i < 2; i++) {
    const http = await freeTcpPort();
    const server = await startCoapEdge(
      {
        devicesFile: o.devicesFile,
        extraArgs: [
          '--mqtt-url',
          o.broker.url,
          '--redis-url',
          o.redisUrl,
          '--redis-prefix',
          o.prefix,
          '--http-port',
          String(http),
          '--association-key',
          o.associationKey,
          ...(o.extra ?? []),
        ],
        nodeFlags: o.nodeFlags ?? [],
      },
      creds,
    );
    log(`pod ${i}: pid ${server.pid}, udp ${server.target.port}, admin ${http}`);
    pods.push({ server, http });
  }
  return pods;
}

function connectDevice(
  port: number,
  d: Device,
  cid: boolean,
  handshakeTimeoutMs = 15_000,
): Promise<DtlsClient> {
  return DtlsClient.connect({
    host: HOST,
    port,
    identity: d.identity,
    psk: d.psk,
    cipherSuites: [SUITES.ccm8],
    extensions: 'standard',
    handshakeTimeoutMs,
    retransmitTimeoutMs: 500,
    ...(cid ? { connectionId: Buffer.alloc(0) } : {}),
  });
}

// ---------------------------------------------------------------- part A

type EventKind = 'sigkill' | 'sigterm';

interface PartAOptions {
  readonly devices: readonly Device[];
  readonly devicesFile: string;
  readonly broker: Broker;
  readonly counter: IpcChild;
  readonly redisUrl: string;
  readonly associationKey: string;
  readonly runId: string;
  readonly rate: number;
  readonly beforeS: number;
  readonly afterS: number;
  readonly ackTimeoutMs: number;
  /** The pods' `--association-fence-records` (their default when undefined). */
  readonly fenceRecords: number | undefined;
}

async function partARun(o: PartAOptions, cid: boolean, event: EventKind): Promise<unknown> {
  const tag = `${o.runId}-${cid ? 'cid' : 'addr'}-${event}`;
  const prefix = `bench-fleet-${tag}`;
  const first = o.devices[0]!;
  const pods = await startPods(
    {
      devicesFile: o.devicesFile,
      broker: o.broker,
      redisUrl: o.redisUrl,
      prefix,
      associationKey: o.associationKey,
      extra:
        o.fenceRecords === undefined ? [] : ['--association-fence-records', String(o.fenceRecords)],
    },
    { identity: first.identity, psk: first.psk },
  );
  const relay = await Relay.start(
    pods.map((p) => p.server.target.port),
    10_000,
  );
  const lost = 0;
  const survivor = 1;
  try {
    // connect every device through the relay
    const clients: (CoapDtlsClient | undefined)[] = [];
    const setupFailures: Record<string, number> = {};
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < o.devices.length) {
          const i = next++;
          try {
            clients[i] = CoapDtlsClient.over(await connectDevice(relay.port, o.devices[i]!, cid));
          } catch (err) {
            add(setupFailures, failureName(err));
          }
        }
      }),
    );
    const homes = clients.map((c) => (c === undefined ? -1 : relay.homeOf(HOST, c.dtls.localPort)));
    log(
      `${tag}: ${clients.filter(Boolean).length} devices connected, ` +
        `${homes.filter((h) => h === lost).length} on pod ${lost}`,
    );

    const acked: string[] = [];
    const failures: Record<string, number> = {};
    const otherCodes: Record<string, number> = {};
    let requests = 0;
    let reconnects = 0;
    let retransmissions = 0;
    let eventAt = Infinity;
    const firstAnswerAfter = new Map<number, number>();
    const lastAnswerBefore = new Map<number, number>();
    let stop = false;
    const interval = 1000 / o.rate;

    const device = async (i: number): Promise<void> => {
      let c = clients[i];
      const d = o.devices[i]!;
      let n = 0;
      await sleep(Math.random() * interval);
      while (!stop) {
        const started = performance.now();
        if (c === undefined || !c.dtls.established) {
          // the device lost its association: a new handshake, as a device would do
          try {
            c = CoapDtlsClient.over(await connectDevice(relay.port, d, cid, 5000));
            reconnects++;
          } catch (err) {
            add(failures, `connect:${failureName(err)}`);
            await sleep(interval);
            continue;
          }
        }
        const id = `${tag}-${i}-${n++}`;
        requests++;
        try {
          const r = await c.request({
            method: 'POST',
            path: d.path,
            payload: Buffer.from(`{"id":"${id}","v":${n}}`),
            ackTimeoutMs: o.ackTimeoutMs * (1 + Math.random() * 0.5),
            timeoutMs: o.ackTimeoutMs * 31,
          });
          retransmissions += r.retransmissions;
          const now = performance.now();
          if (r.code === Code.CHANGED) {
            acked.push(id);
            if (now >= eventAt) {
              if (!firstAnswerAfter.has(i)) firstAnswerAfter.set(i, now - eventAt);
            } else lastAnswerBefore.set(i, now);
          } else add(otherCodes, `${r.code >> 5}.${String(r.code & 31).padStart(2, '0')}`);
        } catch (err) {
          add(failures, failureName(err));
        }
        const wait = interval - (performance.now() - started);
        if (wait > 0) await sleep(wait);
      }
      clients[i] = c;
    };

    const before0 = await Promise.all(pods.map((p) => counters(p.http)));
    const loops = clients.map((_, i) => device(i));
    await sleep(o.beforeS * 1000);
    const survivorBefore = await counters(pods[survivor]!.http);
    const requestsBefore = requests;
    const failuresBefore = Object.values(failures).reduce((a, b) => a + b, 0);
    const lostPod = pods[lost]!;
    eventAt = performance.now();
    let exitMs: number | null = null;
    if (event === 'sigkill') {
      process.kill(lostPod.server.pid, 'SIGKILL');
      relay.down.add(lost);
      log(`${tag}: SIGKILL pod ${lost}, flows moved`);
    } else {
      relay.down.add(lost);
      log(`${tag}: SIGTERM pod ${lost}, flows moved`);
      void lostPod.server.stop(60_000).then(() => {
        exitMs = performance.now() - eventAt;
        log(`${tag}: pod ${lost} exited after ${Math.round(exitMs)} ms`);
      });
    }
    await sleep(o.afterS * 1000);
    stop = true;
    await Promise.all(loops);
    const survivorAfter = await counters(pods[survivor]!.http);

    // every acknowledged message at the broker?
    let last = -1;
    for (let k = 0; k < 50; k++) {
      const m = await o.counter.request({ type: 'counts' });
      const n = (m.counts as { publishOnly: number }).publishOnly;
      if (n === last) break;
      last = n;
      await sleep(300);
    }
    const got = await o.counter.request({ type: 'collect', prefix: `${tag}-` });
    const seen = new Map<string, number>(got.ids as [string, number][]);
    const lostAcked = acked.filter((id) => !seen.has(id));
    let duplicates = 0;
    for (const n of seen.values()) duplicates += n - 1;
    const ackedSet = new Set(acked);
    const deliveredNotAcked = [...seen.keys()].filter((id) => !ackedSet.has(id)).length;

    const moved = homes.map((h, i) => (h === lost ? i : -1)).filter((i) => i >= 0);
    const stayed = homes.map((h, i) => (h === survivor ? i : -1)).filter((i) => i >= 0);
    const recovery = (ids: number[]): Record<string, number | null> => ({
      ...dist(ids.map((i) => firstAnswerAfter.get(i)).filter((x): x is number => x !== undefined)),
      notRecovered: ids.filter((i) => !firstAnswerAfter.has(i)).length,
    });
    const hs = diff(survivorBefore, survivorAfter);
    const result = {
      cid,
      fenceRecords: o.fenceRecords ?? null,
      event,
      devices: o.devices.length,
      connected: clients.filter(Boolean).length,
      setupFailures,
      devicesOnLostPod: moved.length,
      survivorAfterEvent: {
        ...hs,
        adoptionLatencyBucketP50s: bucketQuantile(
          survivorBefore.adoptionBuckets,
          survivorAfter.adoptionBuckets,
          0.5,
        ),
        adoptionLatencyBucketP99s: bucketQuantile(
          survivorBefore.adoptionBuckets,
          survivorAfter.adoptionBuckets,
          0.99,
        ),
      },
      survivorBeforeEvent: diff(before0[survivor]!, survivorBefore),
      lostPodExitMs: exitMs !== null ? Math.round(exitMs) : null,
      requests,
      requestsAfterEvent: requests - requestsBefore,
      acknowledged: acked.length,
      failed: failures,
      failedAfterEvent: Object.values(failures).reduce((a, b) => a + b, 0) - failuresBefore,
      otherCodes,
      retransmissions,
      deviceReconnects: reconnects,
      broker: {
        acknowledgedMissing: lostAcked.length,
        missingSample: lostAcked.slice(0, 5),
        deliveredIds: seen.size,
        duplicates,
        deliveredNotAcknowledged: deliveredNotAcked,
      },
      recoveryMsMovedDevices: recovery(moved),
      recoveryMsOtherDevices: recovery(stayed),
      relayFlows: relay.flowsOpened,
    };
    log(`${tag}: ${JSON.stringify(result)}`);
    for (const c of clients) await c?.close();
    return result;
  } finally {
    relay.close();
    await Promise.all(pods.map((p) => p.server.stop(5000)));
    deleteKeys(o.redisUrl, `${prefix}:*`);
  }
}

// ---------------------------------------------------------------- part B

interface PartBOptions {
  readonly devices: readonly Device[];
  readonly devicesFile: string;
  readonly broker: Broker;
  readonly redisUrl: string;
  readonly associationKey: string;
  readonly runId: string;
  readonly count: number;
  readonly maxAssociations: number;
  readonly sample: number;
  readonly parallel: number;
  readonly traceGc: boolean;
}

/** Heap in MB after the last full GC a `--trace-gc` pod printed, or null. */
function heapAfterLastMarkCompact(tail: string): number | null {
  const all = [...tail.matchAll(/Mark-Compact [\d.]+ \([\d.]+\) -> ([\d.]+) \([\d.]+\) MB/g)];
  const last = all.at(-1)?.[1];
  return last !== undefined ? Number(last) : null;
}

async function partB(o: PartBOptions): Promise<unknown> {
  const prefix = `bench-fleet-${o.runId}-memory`;
  const first = o.devices[0]!;
  const usedBefore = redisUsedMemory(o.redisUrl);
  const pods = await startPods(
    {
      devicesFile: o.devicesFile,
      broker: o.broker,
      redisUrl: o.redisUrl,
      prefix,
      associationKey: o.associationKey,
      extra: ['--max-associations', String(o.maxAssociations)],
      nodeFlags: o.traceGc ? ['--trace-gc', '--trace-gc-ignore-scavenger'] : [],
    },
    { identity: first.identity, psk: first.psk },
  );
  const relay = await Relay.start(
    pods.map((p) => p.server.target.port),
    150,
  );
  const milestones: Record<string, unknown>[] = [];
  const snapshot = async (made: number, seconds: number): Promise<void> => {
    const c = await Promise.all(pods.map((p) => counters(p.http)));
    const row = {
      associations: made,
      elapsedS: round(seconds, 1),
      podRssMiB: pods.map((p) => round((p.server.rssKiB() ?? NaN) / 1024, 1)),
      ...(o.traceGc
        ? {
            podHeapAfterLastFullGcMB: pods.map((p) =>
              heapAfterLastMarkCompact(p.server.outputTail()),
            ),
          }
        : {}),
      podAssociationsInMemory: c.map((x) => x.associations),
      podHandshakesCompleted: c.map((x) => x.handshakesCompleted),
      podOffloaded: c.map((x) => x.offloaded),
      redisAssocKeys: countKeys(o.redisUrl, `${prefix}:assoc:*`),
      redisKeysOfPrefix: countKeys(o.redisUrl, `${prefix}:*`),
      redisUsedMemoryMiB: round(redisUsedMemory(o.redisUrl) / 1048576, 1),
      redisUsedMemoryDeltaMiB: round((redisUsedMemory(o.redisUrl) - usedBefore) / 1048576, 1),
      benchRssMiB: round(process.memoryUsage().rss / 1048576, 1),
    };
    milestones.push(row);
    log(`memory: ${JSON.stringify(row)}`);
  };
  try {
    // the sampled idle devices are chosen up front; only their clients are kept
    const sampleSet = new Set<number>();
    while (sampleSet.size < Math.min(o.sample, o.count)) sampleSet.add(randomInt(o.count));
    const kept = new Map<number, DtlsClient>();
    const failures: Record<string, number> = {};
    const marks = [10_000, 50_000, 100_000].filter((m) => m < o.count).concat([o.count]);
    const t0 = performance.now();
    await snapshot(0, 0);
    let next = 0;
    let made = 0;
    let lastLog = t0;
    for (const mark of marks) {
      await Promise.all(
        Array.from({ length: o.parallel }, async () => {
          while (next < mark) {
            const i = next++;
            try {
              const c = await connectDevice(relay.port, o.devices[i]!, true, 15_000);
              c.suspend();
              made++;
              if (sampleSet.has(i)) kept.set(i, c);
            } catch (err) {
              add(failures, failureName(err));
            }
            if (performance.now() - lastLog > 10_000) {
              lastLog = performance.now();
              log(
                `memory: ${made} associations, ${Math.round(made / ((lastLog - t0) / 1000))}/s, ` +
                  `failures ${JSON.stringify(failures)}`,
              );
            }
          }
        }),
      );
      // the store is written after each handshake: give the writes a moment to land
      await sleep(2000);
      await snapshot(made, (performance.now() - t0) / 1000);
    }
    const makeSeconds = (performance.now() - t0) / 1000;

    // idle devices come back: a new socket (new address) and one request each
    const before = await Promise.all(pods.map((p) => counters(p.http)));
    const sampleFailures: Record<string, number> = {};
    const latencies: number[] = [];
    let answered = 0;
    const codes: Record<string, number> = {};
    const queue = [...kept.entries()];
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        for (let e = queue.shift(); e !== undefined; e = queue.shift()) {
          const [i, dtls] = e;
          const t = performance.now();
          try {
            await dtls.resume();
            const r = await CoapDtlsClient.over(dtls).request({
              method: 'POST',
              path: o.devices[i]!.path,
              payload: Buffer.from(`{"id":"${o.runId}-sample-${i}"}`),
              ackTimeoutMs: 500,
              timeoutMs: 15_000,
            });
            add(codes, `${r.code >> 5}.${String(r.code & 31).padStart(2, '0')}`);
            if (r.code === Code.CHANGED) {
              answered++;
              latencies.push(performance.now() - t);
            }
          } catch (err) {
            add(sampleFailures, failureName(err));
          }
          dtls.suspend();
        }
      }),
    );
    const after = await Promise.all(pods.map((p) => counters(p.http)));
    const sampled = {
      devices: kept.size,
      answered,
      codes,
      failures: sampleFailures,
      latencyMs: dist(latencies),
      perPod: pods.map((_, k) => diff(before[k]!, after[k]!)),
      handshakesCompleted: after.reduce(
        (s, x, k) => s + x.handshakesCompleted - before[k]!.handshakesCompleted,
        0,
      ),
      handshakesStarted: after.reduce(
        (s, x, k) => s + x.handshakesStarted - before[k]!.handshakesStarted,
        0,
      ),
      adoptions: after.reduce((s, x, k) => s + x.adoptions - before[k]!.adoptions, 0),
      adoptionLatencyBucketP50s: bucketQuantile(
        merged(before.map((x) => x.adoptionBuckets)),
        merged(after.map((x) => x.adoptionBuckets)),
        0.5,
      ),
      adoptionLatencyBucketP99s: bucketQuantile(
        merged(before.map((x) => x.adoptionBuckets)),
        merged(after.map((x) => x.adoptionBuckets)),
        0.99,
      ),
    };
    log(`memory sample: ${JSON.stringify(sampled)}`);
    return {
      count: o.count,
      made,
      maxAssociations: o.maxAssociations,
      parallel: o.parallel,
      makeSeconds: round(makeSeconds, 1),
      associationsPerSecond: round(made / makeSeconds, 1),
      handshakeFailures: failures,
      relayFlowsOpened: relay.flowsOpened,
      relayMaxFlows: 150,
      milestones,
      sample: sampled,
      redisUsedMemoryBeforeMiB: round(usedBefore / 1048576, 1),
    };
  } finally {
    relay.close();
    await Promise.all(pods.map((p) => p.server.stop(5000)));
    deleteKeys(o.redisUrl, `${prefix}:*`);
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const flags = parseFlags(
    [
      'parts',
      'devices',
      'rate',
      'before',
      'after',
      'ack-timeout',
      'fence-records',
      'b-count',
      'max-associations',
      'b-sample',
      'b-parallel',
      'redis-url',
    ],
    ['trace-gc'],
  );
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const parts = stringFlag(flags, 'parts', 'a,b').split(',');
  const deviceCount = numberFlag(flags, 'devices', 60, 1, 150);
  const rate = numberFlag(flags, 'rate', 2, 0.1, 50, false);
  const beforeS = numberFlag(flags, 'before', 8, 1, 300, false);
  const afterS = numberFlag(flags, 'after', 20, 1, 300, false);
  const ackTimeoutMs = numberFlag(flags, 'ack-timeout', 500, 50, 10_000);
  const fenceRecords =
    flags['fence-records'] === undefined
      ? undefined
      : numberFlag(flags, 'fence-records', 64, 0, 64);
  const bCount = numberFlag(flags, 'b-count', 100_000, 1, 1_000_000);
  const maxAssociations = numberFlag(flags, 'max-associations', 10_000, 1, 1_000_000);
  const bSample = numberFlag(flags, 'b-sample', 500, 0, 10_000);
  const bParallel = numberFlag(flags, 'b-parallel', 32, 1, 64);
  const redisUrl = stringFlag(flags, 'redis-url', 'redis://127.0.0.1:6379');

  installCleanup();
  const startedAt = new Date();
  const env = environment();
  log(`shared-fleet: ${commandLine()}`);
  const dir = mkdtempSync(join(tmpdir(), 'coap-edge-bench-fleet-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const total = Math.max(deviceCount, parts.includes('b') ? bCount : 0);
  const fleet = generateDevices(total, PRODUCT_KEY, SEED);
  const devicesFile = join(dir, 'devices.json');
  writeFileSync(devicesFile, `${JSON.stringify(fleet)}\n`);
  const devices: Device[] = fleet.devices.map((d, index) => ({
    index,
    identity: `${d.productKey},${d.deviceKey},2,86400`,
    psk: derivePsk(d.deviceSecret),
    path: `/topic/sys/${d.productKey}/${d.deviceKey}/${TOPIC_TAIL}`,
  }));
  const runId = randomBytes(4).toString('hex');
  const associationKey = randomBytes(32).toString('hex');

  const broker = await startMosquitto();
  const runs: unknown[] = [];
  let memory: unknown = null;
  try {
    if (parts.includes('a')) {
      const counter = await IpcChild.start('counter', 'uplink-counter', [broker.url, TOPIC_TAIL]);
      const o: PartAOptions = {
        devices: devices.slice(0, deviceCount),
        devicesFile,
        broker,
        counter,
        redisUrl,
        associationKey,
        runId,
        rate,
        beforeS,
        afterS,
        ackTimeoutMs,
        fenceRecords,
      };
      for (const cid of [true, false]) {
        for (const event of ['sigkill', 'sigterm'] as const) {
          runs.push(await partARun(o, cid, event));
        }
      }
      await counter.proc.stop(2000);
    }
    if (parts.includes('b')) {
      memory = await partB({
        devices,
        devicesFile,
        broker,
        redisUrl,
        associationKey,
        runId,
        count: bCount,
        maxAssociations,
        sample: bSample,
        parallel: bParallel,
        traceGc: flags['trace-gc'] === true,
      });
    }
  } finally {
    await stopAll();
    broker.cleanup();
  }
  const result = {
    bench: 'shared-fleet',
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    environment: env,
    parameters: {
      parts,
      devices: deviceCount,
      ratePerDevice: rate,
      beforeS,
      afterS,
      ackTimeoutMs,
      coapTimeoutMs: ackTimeoutMs * 31,
      topic: `/topic/sys/{pk}/{dk}/${TOPIC_TAIL} (publish only, 2.04 on PUBACK)`,
      bCount,
      maxAssociations,
      bSample,
      bParallel,
      broker: broker.version,
    },
    partA: runs,
    partB: memory,
    notes: [
      'pod 0 is the lost pod, pod 1 survives; the relay moves the flows of pod 0 at the signal',
      'recovery = time from the event to the first 2.04 the device receives after it',
      'adoption latency from the survivor histogram deltas: the upper bound of the bucket holding the quantile',
      'part B devices close their socket after the handshake without close_notify; relay keeps at most 150 back sockets (LRU)',
    ],
  };
  const file = writeResult('shared-fleet', startedAt, result);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  log(`written to ${file}`);
}

runScript('shared-fleet', USAGE, main);
