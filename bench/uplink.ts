/**
 * Uplink benchmark: N simulated devices (default 100) over DTLS 1.2 PSK
 * with TLS_PSK_WITH_AES_128_CCM_8 post EnOS measurepoints through coap-edge, side by side in
 * one run: with libcoap's `coap-server-openssl` answering the same requests, with
 * coap-edge's other backends and with tracing on.
 *
 * Variants (`--variants`, default `base`), each a phase per round, their order rotating from
 * round to round; every coap-edge configuration is a coap-edge process of its own, with its
 * own product key (so no process sees another's reply topics):
 * - `coapEdgeReply` — bridge mode, publish + reply (the EnOS flow): POST `/topic/sys/{pk}/{dk}/
 *   thing/measurepoint/post`; coap-edge publishes QoS 1 to Mosquitto, a platform stand-in
 *   (own process) answers on `..._reply`, and the device gets 2.04 with the reply as payload.
 * - `coapEdgePublish` — bridge mode, publish only: POST `/topic/sys/{pk}/{dk}/rrpc/response/1`
 *   (router class `command-reply`; `--publish-topic` picks another), answered 2.04 on the
 *   PUBACK without waiting for any reply. (`thing/service/x_reply` would do the same, but
 *   coap-edge's command intake subscribes to `/sys/+/+/thing/service/#` by default, so each
 *   such publish also comes back to it.)
 * - `libcoap` — `coap-server-openssl -d <N+16> -k <key>`: the same POST to the measurepoint
 *   path, same body; `-d` lets a POST to an unknown path create a dynamic resource (2.01 once
 *   per path, done before the rounds), after which every POST updates it in memory and is
 *   answered 2.04 — DTLS + CoAP with no backend.
 * - `coapEdgeHttp` — a YAML `routes` entry sends `/sys/{pk}/{dk}/thing/measurepoint/post` to
 *   an HTTP sink (own process) that answers 200 with the platform reply's JSON; the device gets
 *   2.04 with it. Publish + reply flavour, like `coapEdgeReply`.
 * - `coapEdgePerDevice` — `mqttMode: per-device`, `mqttDeviceAuth: template`: one MQTT
 *   connection per device, logged in as `{dk}&{pk}` / device secret against a password file;
 *   publish + reply, the stand-in answering on the device's own reply topic.
 * - `coapEdgeTrace1pct` / `coapEdgeTrace100pct` — `coapEdgeReply` with `--otlp-endpoint` to an
 *   OTLP sink (own process, counts requests, bytes and spans) and `--trace-sample-ratio 0.01`
 *   / `1`. `coapEdgeReply` is the "tracing off" reference.
 * - `coapEdgeReplyControl` — a second coap-edge process configured as `coapEdgeReply`: its
 *   ratio to `coapEdgeReply` is the noise between two identical processes.
 * - `floorReply` / `floorPublish` — the floor reference program (bench/lib/uplink-floor.ts,
 *   own process): the least a correct Node gateway does per uplink, same two flows.
 * Groups: `base` = reply, publish, floor-reply, floor-publish, libcoap; `floor` = the same
 * without libcoap; `backends` = reply, http, per-device; `tracing` = reply, reply-control,
 * trace-1pct, trace-100pct (8 rounds by default); `all`.
 *
 * `--half-saturation`: first each reply-flow variant alone in closed loop (its saturation,
 * messages/s), then every round at a fixed rate of half of `coapEdgeReply`'s saturation, with
 * a broker round trip step (an MQTT client in the bench: QoS 1 publish, PUBACK + platform
 * reply) at the same rate; `summary.halfSaturation` has p50/p99 and what each variant adds
 * to the broker round trip (`addedP99Ms`). Default variants: reply, floor-reply.
 *
 * Reports per phase and round (medians over rounds in `summary`): messages/s, p50/p90/p99
 * latency, CPU µs per message of coap-edge (or libcoap), Mosquitto, the platform stand-in,
 * the HTTP and OTLP sinks, the counting subscriber and the load generator, failures by kind,
 * and the delivery check: a QoS 1 subscriber on `/sys/#` (own process) must have received
 * every MQTT message that was answered 2.04 (delivered ≥ acknowledged; duplicates allowed).
 * Ratios to libcoap, to `coapEdgeReply` (bridge, tracing off) and of coap-edge to the floor
 * program, each per round (same round) and as medians with their spread over rounds.
 * One JSON object on stdout, progress on stderr, a copy in bench/results/uplink-<timestamp>.json.
 *
 * Run: `npm run build && node dist/bench/uplink.js [--variants base|backends|tracing|all|…]
 *   [--devices 100] [--rate 0] [--rounds 3] [--duration 5] [--warmup 2] [--timeout 10000]
 *   [--suite ccm8|cbc] [--publish-topic t] [--profile] [--half-saturation [--offered <msg/s>]]
 *   [--pause-log] [--control-cli <p>] [--pin [--pin-server-cpu <n>]]`
 *
 * `--pin`: each measured server on a CPU of its own, the bench and every other child on the
 * others (bench/lib/pin.ts); the CPU set of every process, read back per thread, is in
 * `setup.pinning`.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../src/coap/constants.js';
import { cipherSuiteName } from '../src/dtls/constants.js';
import { derivePsk, parseTopicPath, pskUsableOnCommandLine } from '../src/enos/index.js';
import { DEFAULT_BATCH } from '../src/telemetry/otel-env.js';
import { CoapDtlsClient } from '../src/tools/coap-client.js';
import { generateDevices } from '../src/tools/load.js';
import {
  UsageError,
  choiceFlag,
  runScript,
  numberFlag,
  parseFlags,
  stringFlag,
} from './lib/args.js';
import { SUITES, connect, type Target } from './lib/client.js';
import { perMessage } from './lib/cpu-window.js';
import { commandLine, environment, log, writeResult } from './lib/harness.js';
import { checkPasswordAuth, startMosquittoWithPasswords } from './lib/mosquitto-auth.js';
import { newestProfile, summariseProfile, type ProfileSummary } from './lib/profile.js';
import {
  REPO_ROOT,
  freeTcpPort,
  installCleanup,
  startCoapEdge,
  startFloor,
  startLibcoap,
  stopAll,
  type ServerProcess,
} from './lib/servers.js';
import { median, ratio, round, sleep, spreadOf } from './lib/stats.js';
import {
  codeName,
  measurepointBody,
  probe,
  runUplinkPhase,
  type UplinkDevice,
  type UplinkPhase,
} from './lib/uplink-load.js';
import { IpcChild, startMosquitto, type Broker } from './lib/uplink-procs.js';
import { runBrokerRttPhase } from './lib/broker-rtt.js';
import { pauseTail, pauseTotals, readPauses } from './lib/pause-tail.js';
import {
  affinityOf,
  allowedCpus,
  formatCpuList,
  pinLauncher,
  pinProcess,
  planPin,
  type Affinity,
  type PinPlan,
} from './lib/pin.js';

const USAGE = `usage: node dist/bench/uplink.js [options]
  --variants <list>   comma-separated variants or groups (default base):
                        reply (bridge, publish + reply), publish (bridge, publish only), libcoap,
                        http (HTTP route), per-device (per-device MQTT, template login),
                        trace-1pct, trace-100pct (reply with tracing, ratio 0.01 / 1),
                        reply-control (a second coap-edge configured as reply),
                        floor-reply, floor-publish (the floor reference program);
                        base = reply,publish,floor-reply,floor-publish,libcoap
                        floor = reply,publish,floor-reply,floor-publish
                        backends = reply,http,per-device
                        tracing = reply,reply-control,trace-1pct,trace-100pct
                        all = every variant
  --devices <n>       simulated devices, one DTLS association each (default 100)
  --rate <r>          requests per second per device; 0 = closed loop, one outstanding (default 0;
                      2 when a tracing variant runs)
  --rounds <n>        rounds; each runs every variant once, in rotating order (default 3;
                      8 when a tracing variant runs)
  --duration <s>      measured seconds per phase (default 5)
  --warmup <s>        unmeasured seconds of load before each measured window (default 2)
  --timeout <ms>      overall time a request may take, CoAP retransmissions included (default 10000)
  --suite <s>         ccm8 (TLS_PSK_WITH_AES_128_CCM_8, default) or cbc (..._CBC_SHA256)
  --publish-topic <t> path after /topic/sys/{pk}/{dk}/ of the publish-only variant; must be a
                      topic coap-edge publishes without awaiting a reply (default rrpc/response/1)
  --profile           run the bridge coap-edge under node --cpu-prof and print its top functions
  --half-saturation   find coapEdgeReply's closed-loop messages/s, run every round at half of
                      it beside a broker round trip; report added p50/p99 (default variants
                      reply,floor-reply; --rate not allowed)
  --pause-log         log every GC and event-loop stall of the coap-edge and floor processes
                      (bench/lib/pause-log.ts) and set them beside each phase's p99 requests
                      (rounds[].pauses, summary.pauses)
  --control-cli <p>   the reply-control coap-edge runs this CLI (another build's
                      dist/src/cli.js): old and new builds side by side in one run
  --pin               each measured server (coap-edge, floor, libcoap) on a CPU of its own,
                      the bench and every other process (Mosquitto, the stand-in, ...) on the
                      others (taskset); each process's CPU set is in setup.pinning
  --offered <msg/s>   with --half-saturation: run the rounds at this offered load instead of
                      measuring saturation first (e.g. half of an unpinned run's saturation
                      for a --pin run)
  --pin-server-cpu <n> the servers' CPU with --pin (default the highest this process may use)`;

type PhaseName =
  | 'coapEdgeReply'
  | 'coapEdgePublish'
  | 'floorReply'
  | 'floorPublish'
  | 'coapEdgeReplyControl'
  | 'libcoap'
  | 'coapEdgeHttp'
  | 'coapEdgePerDevice'
  | 'coapEdgeTrace1pct'
  | 'coapEdgeTrace100pct';

/** One coap-edge process (configuration) per kind. */
type EdgeKind = 'bridge' | 'control' | 'http' | 'perDevice' | 'trace1pct' | 'trace100pct';

interface Variant {
  /** The `--variants` name. */
  readonly alias: string;
  /** Letter in the JSON ids (`r<round><tag>-<seq>`). */
  readonly tag: string;
  /** The coap-edge process serving it; undefined for libcoap and the floor program. */
  readonly edge: EdgeKind | undefined;
  /** Served by the floor reference program (bench/lib/uplink-floor.ts). */
  readonly floor?: true;
  /** The POST goes to the measurepoint path (reply expected) or to the publish-only path. */
  readonly flow: 'reply' | 'publish';
  /** Processes besides the server that make up its pipeline (CPU per message summed). */
  readonly pipeline: readonly string[];
  /** Published to MQTT: the /sys/# subscriber must have it. */
  readonly mqtt: boolean;
}

const VARIANTS: Record<PhaseName, Variant> = {
  coapEdgeReply: {
    alias: 'reply',
    tag: 'a',
    edge: 'bridge',
    flow: 'reply',
    pipeline: ['mosquitto', 'platform'],
    mqtt: true,
  },
  coapEdgePublish: {
    alias: 'publish',
    tag: 'b',
    edge: 'bridge',
    flow: 'publish',
    pipeline: ['mosquitto', 'platform'],
    mqtt: true,
  },
  floorReply: {
    alias: 'floor-reply',
    tag: 'f',
    edge: undefined,
    floor: true,
    flow: 'reply',
    pipeline: ['mosquitto', 'platform'],
    mqtt: true,
  },
  floorPublish: {
    alias: 'floor-publish',
    tag: 'g',
    edge: undefined,
    floor: true,
    flow: 'publish',
    pipeline: ['mosquitto', 'platform'],
    mqtt: true,
  },
  coapEdgeReplyControl: {
    alias: 'reply-control',
    tag: 'c',
    edge: 'control',
    flow: 'reply',
    pipeline: ['mosquitto', 'platform'],
    mqtt: true,
  },
  libcoap: {
    alias: 'libcoap',
    tag: 'l',
    edge: undefined,
    flow: 'reply',
    pipeline: [],
    mqtt: false,
  },
  coapEdgeHttp: {
    alias: 'http',
    tag: 'h',
    edge: 'http',
    flow: 'reply',
    pipeline: ['httpSink'],
    mqtt: false,
  },
  coapEdgePerDevice: {
    alias: 'per-device',
    tag: 'd',
    edge: 'perDevice',
    flow: 'reply',
    pipeline: ['mosquitto', 'platform'],
    mqtt: true,
  },
  coapEdgeTrace1pct: {
    alias: 'trace-1pct',
    tag: 't',
    edge: 'trace1pct',
    flow: 'reply',
    pipeline: ['mosquitto', 'platform'],
    mqtt: true,
  },
  coapEdgeTrace100pct: {
    alias: 'trace-100pct',
    tag: 'u',
    edge: 'trace100pct',
    flow: 'reply',
    pipeline: ['mosquitto', 'platform'],
    mqtt: true,
  },
};
const ALL_PHASES = Object.keys(VARIANTS) as PhaseName[];
const GROUPS: Record<string, readonly PhaseName[]> = {
  base: ['coapEdgeReply', 'coapEdgePublish', 'floorReply', 'floorPublish', 'libcoap'],
  backends: ['coapEdgeReply', 'coapEdgeHttp', 'coapEdgePerDevice'],
  tracing: ['coapEdgeReply', 'coapEdgeReplyControl', 'coapEdgeTrace1pct', 'coapEdgeTrace100pct'],
  floor: ['coapEdgeReply', 'coapEdgePublish', 'floorReply', 'floorPublish'],
  all: ALL_PHASES,
};
/** Variants compared with `coapEdgeReply` (bridge mode, tracing off, same flow). */
const BRIDGE_COMPARED: readonly PhaseName[] = [
  'coapEdgeReplyControl',
  'coapEdgeHttp',
  'coapEdgePerDevice',
  'coapEdgeTrace1pct',
  'coapEdgeTrace100pct',
];

const TRACE_PHASES: readonly PhaseName[] = ['coapEdgeTrace1pct', 'coapEdgeTrace100pct'];
/** The broker round trip's step in a `--half-saturation` round, and its product key. */
const BROKER_STEP = 'brokerRoundTrip';
const BROKER_PRODUCT_KEY = 'benchPKr';
/** coap-edge variant → the floor variant of the same flow (`summary.ratiosToFloor`). */
const FLOOR_OF: Partial<Record<PhaseName, PhaseName>> = {
  coapEdgeReply: 'floorReply',
  coapEdgePublish: 'floorPublish',
};
/** Product key of each coap-edge process's devices: reply topics never cross processes. */
const PRODUCT_KEYS: Record<EdgeKind, string> = {
  bridge: 'benchPK',
  control: 'benchPKc',
  http: 'benchPKh',
  perDevice: 'benchPKd',
  trace1pct: 'benchPKt',
  trace100pct: 'benchPKu',
};
const TRACE_RATIO: Partial<Record<EdgeKind, string>> = { trace1pct: '0.01', trace100pct: '1' };
const PRODUCT_KEY = PRODUCT_KEYS.bridge;
/** The floor program's devices (a process of its own: its reply topics are its own too). */
const FLOOR_PRODUCT_KEY = 'benchPKf';
const SEED = 'bench-secret';
const PAUSE_MS = 500;
const CORES = cpus().length;
const MEASUREPOINT_TAIL = 'thing/measurepoint/post';
/** Per-device login templates given to coap-edge (they are also its defaults). */
const DEVICE_LOGIN = { clientId: '{pk}.{dk}', username: '{dk}&{pk}', password: '{secret}' };

function parseVariants(raw: string): PhaseName[] {
  const byAlias = new Map(ALL_PHASES.map((p) => [VARIANTS[p].alias, p]));
  const out: PhaseName[] = [];
  for (const item of raw.split(',').map((s) => s.trim())) {
    if (item === '') continue;
    const names =
      GROUPS[item] ??
      (byAlias.has(item)
        ? [byAlias.get(item)!]
        : ALL_PHASES.includes(item as PhaseName)
          ? [item as PhaseName]
          : undefined);
    if (names === undefined) {
      throw new UsageError(
        `--variants: unknown variant ${item} (one of ${[...byAlias.keys(), ...Object.keys(GROUPS)].join(', ')})`,
      );
    }
    for (const n of names) if (!out.includes(n)) out.push(n);
  }
  if (out.length === 0) throw new UsageError('--variants: none given');
  // keep the table's order (the rotation starts from it)
  return ALL_PHASES.filter((p) => out.includes(p));
}

interface Delivery {
  /** Distinct ids answered 2.04 over the phase. */
  readonly acknowledged: number;
  /** Distinct ids the subscriber received. */
  readonly delivered: number;
  /** Deliveries beyond the first of an id (QoS 1 allows them). */
  readonly duplicates: number;
  /** Acknowledged but never delivered: must be 0. */
  readonly missing: number;
  readonly missingExamples: string[];
  /** Delivered but not acknowledged (the device saw a failure or timeout). */
  readonly deliveredNotAcknowledged: number;
  readonly ok: boolean;
}

interface HttpSinkCounts {
  readonly requests: number;
  readonly bytesIn: number;
  readonly answered200: number;
  readonly noId: number;
  /** Requests that carried a W3C traceparent header. */
  readonly withTraceparent: number;
  /** Sockets open at the sink after the phase, and opened during it. */
  readonly connections: number;
  readonly connectionsOpened: number;
}

interface SpanSinkCounts {
  /** Over the whole phase (warm-up, window, drain, exporter flush). */
  readonly requests: number;
  readonly wireBytes: number;
  readonly spans: number;
  /** Per request answered (any code) over the whole phase. */
  readonly spansPerMessage: number | null;
  readonly wireBytesPerMessage: number | null;
}

interface PhaseExtra {
  readonly delivery?: Delivery;
  readonly platform?: { received: number; replied: number; publishErrors: number };
  readonly httpSink?: HttpSinkCounts;
  readonly spanSink?: SpanSinkCounts;
}

interface PhaseReport extends PhaseExtra {
  readonly messagesPerSec: number | null;
  readonly latency: ReturnType<UplinkPhase['latency']['quantiles']> & { meanMs: number | null };
  /** CPU µs per message by process; `pipeline` = server + the variant's backend processes. */
  readonly cpuUsPerMessage: Record<string, number | null>;
  readonly processes: ReturnType<typeof perMessage>;
  readonly window: Record<string, number | null>;
  /** Share of each CPU busy in the window (CPU number → share), other tenants included. */
  readonly cpuBusy: Record<string, number>;
  readonly messages: number;
  /** Requests answered (any code) over the whole phase. */
  readonly answered: number;
  readonly windowCodes: Record<string, number>;
  readonly failures: Record<string, number>;
  readonly timeouts: number;
  readonly retransmissions: number;
  readonly separateResponses: number;
  readonly replyMismatches: number;
  readonly associations: number;
  readonly setupFailures: Record<string, number>;
  readonly associationsLost: number;
  readonly lateStarts: number;
  readonly serverRssKiB: number | null;
}

function toDevices(
  count: number,
  tail: string,
  productKey: string,
  libcoapKey?: Buffer,
): UplinkDevice[] {
  return generateDevices(count, productKey, SEED).devices.map((d) => ({
    identity: `${d.productKey},${d.deviceKey},2,86400`,
    psk: libcoapKey ?? derivePsk(d.deviceSecret),
    path: `/topic/sys/${d.productKey}/${d.deviceKey}/${tail}`,
  }));
}

function num(m: Record<string, unknown>, k: string): number {
  const v = m[k];
  return typeof v === 'number' ? v : 0;
}

/** Waits until the subscriber's counts stop moving, then takes the phase's ids from it. */
async function collectDelivery(
  counter: IpcChild,
  prefix: string,
  acked: Set<string>,
): Promise<Delivery> {
  let last = '';
  let stable = 0;
  const deadline = performance.now() + 10_000;
  while (stable < 2 && performance.now() < deadline) {
    const c = JSON.stringify((await counter.request({ type: 'counts' })).counts);
    stable = c === last ? stable + 1 : 0;
    last = c;
    await sleep(200);
  }
  const answer = await counter.request({ type: 'collect', prefix }, 30_000);
  const ids = (answer.ids as [string, number][] | undefined) ?? [];
  const delivered = new Set<string>();
  let duplicates = 0;
  let notAcked = 0;
  for (const [id, n] of ids) {
    delivered.add(id);
    duplicates += n - 1;
    if (!acked.has(id)) notAcked++;
  }
  const missing: string[] = [];
  for (const id of acked) if (!delivered.has(id)) missing.push(id);
  return {
    acknowledged: acked.size,
    delivered: delivered.size,
    duplicates,
    missing: missing.length,
    missingExamples: missing.slice(0, 10),
    deliveredNotAcknowledged: notAcked,
    ok: missing.length === 0,
  };
}

/**
 * The OTLP sink's counters once they stop moving: the exporter sends a batch at most
 * `scheduledDelayMillis` after a span ends (BatchSpanProcessor; the children get no OTEL_BSP_*
 * variable, so the default, 5 s), so they must stay unchanged for longer than that, or the
 * last batch of a phase would be counted in the next phase of the same process.
 */
const SPAN_SETTLE_MS = DEFAULT_BATCH.scheduledDelayMillis + 1000;

async function settledSpanStats(sink: IpcChild): Promise<Record<string, unknown>> {
  let last = '';
  let since = performance.now();
  const deadline = performance.now() + 3 * SPAN_SETTLE_MS;
  for (;;) {
    const s = await sink.request({ type: 'stats' });
    const key = `${num(s, 'requests')}/${num(s, 'wireBytes')}`;
    if (key !== last) {
      last = key;
      since = performance.now();
    } else if (performance.now() - since >= SPAN_SETTLE_MS || performance.now() > deadline) {
      return s;
    }
    await sleep(250);
  }
}

/** One POST per device path on one association, so libcoap creates each dynamic resource. */
async function primeLibcoap(
  target: Target,
  devices: readonly UplinkDevice[],
  suite: number,
): Promise<Record<string, number>> {
  const first = devices[0]!;
  const client = CoapDtlsClient.over(
    await connect(target, first, { suite, handshakeTimeoutMs: 10_000 }),
  );
  const codes: Record<string, number> = {};
  try {
    let i = 0;
    for (const d of devices) {
      const r = await client.request({
        method: 'POST',
        path: d.path,
        payload: measurepointBody(`prime-${i++}`),
        timeoutMs: 10_000,
      });
      const k = codeName(r.code);
      codes[k] = (codes[k] ?? 0) + 1;
    }
  } finally {
    await client.close();
  }
  return codes;
}

function report(
  p: UplinkPhase,
  server: ServerProcess,
  variant: Variant,
  extra: PhaseExtra,
): PhaseReport {
  const w = p.window;
  const procs = perMessage(w, p.messages);
  const us = (name: string): number | null => procs[name]?.usPerMessage ?? null;
  const serverUs = us(server.name);
  const pipelineParts = [serverUs, ...variant.pipeline.map(us)].filter(
    (x): x is number => x !== null,
  );
  const cpuUsPerMessage: Record<string, number | null> = {
    server: serverUs,
    serverSystem: procs[server.name]?.systemUsPerMessage ?? null,
    ...(server.name !== 'libcoap'
      ? {
          mosquitto: us('mosquitto'),
          platform: us('platform'),
          ...(procs.httpSink !== undefined ? { httpSink: us('httpSink') } : {}),
          ...(procs.spanSink !== undefined ? { spanSink: us('spanSink') } : {}),
          pipeline: round(
            pipelineParts.reduce((a, b) => a + b, 0),
            2,
          ),
          counter: us('counter'),
        }
      : { pipeline: serverUs }),
    loadGen: p.messages > 0 ? round(w.loadGenCpuUs / p.messages, 2) : null,
  };
  return {
    messagesPerSec: round((p.messages * 1000) / w.wallMs, 1),
    latency: { ...p.latency.quantiles(), meanMs: p.latency.mean() },
    cpuUsPerMessage,
    processes: procs,
    window: {
      wallMs: round(w.wallMs, 0),
      serverCpuUtilisation: round(w.processes[server.name]?.utilisation ?? null, 3),
      loadGenCpuUtilisation: round(w.loadGenCpuUtilisation, 3),
      machineBusy: round(w.machineBusy, 3),
      machineSteal: round(w.machineSteal, 3),
      // cores busy with anything but the measured processes and the load generator: other
      // tenants, idle servers of the other phases, interrupts not charged to a process
      otherCores: round(
        Math.max(
          0,
          w.machineBusy * CORES -
            w.loadGenCpuUtilisation -
            Object.values(w.processes).reduce((a, x) => a + x.utilisation, 0),
        ),
        3,
      ),
    },
    cpuBusy: w.cpuBusy,
    messages: p.messages,
    answered: p.answered,
    windowCodes: p.windowCodes,
    failures: p.failures,
    timeouts: p.timeouts,
    retransmissions: p.retransmissions,
    separateResponses: p.separateResponses,
    replyMismatches: p.replyMismatches,
    associations: p.associations,
    setupFailures: p.setupFailures,
    associationsLost: p.associationsLost,
    lateStarts: p.lateStarts,
    serverRssKiB: server.rssKiB() ?? null,
    ...extra,
  };
}

function describe(r: PhaseReport): string {
  const c = r.cpuUsPerMessage;
  const failures = Object.values(r.failures).reduce((a, b) => a + b, 0);
  return (
    `${r.messagesPerSec ?? '-'} msg/s, p50 ${r.latency.p50Ms} p90 ${r.latency.p90Ms} ` +
    `p99 ${r.latency.p99Ms} ms, server ${c.server ?? '-'} µs/msg` +
    (c.mosquitto !== undefined
      ? `, mosquitto ${c.mosquitto ?? '-'}, platform ${c.platform ?? '-'}` +
        (c.httpSink !== undefined ? `, httpSink ${c.httpSink ?? '-'}` : '') +
        (c.spanSink !== undefined ? `, spanSink ${c.spanSink ?? '-'}` : '') +
        `, pipeline ${c.pipeline ?? '-'}`
      : '') +
    `, loadgen ${c.loadGen ?? '-'} µs/msg (util ${r.window.loadGenCpuUtilisation}), ` +
    `machine busy ${r.window.machineBusy} (others ${r.window.otherCores} cores), failures ${failures} ${JSON.stringify(r.failures)}` +
    (r.replyMismatches > 0 ? `, reply mismatches ${r.replyMismatches}` : '') +
    (r.delivery !== undefined
      ? `, delivery acked ${r.delivery.acknowledged} delivered ${r.delivery.delivered} ` +
        `missing ${r.delivery.missing} dup ${r.delivery.duplicates}`
      : '') +
    (r.httpSink !== undefined ? `, http requests ${r.httpSink.requests}` : '') +
    (r.spanSink !== undefined
      ? `, spans ${r.spanSink.spans} (${r.spanSink.spansPerMessage ?? '-'}/msg) in ` +
        `${r.spanSink.requests} requests, ${r.spanSink.wireBytes} bytes`
      : '')
  );
}

interface Metric {
  readonly get: (r: PhaseReport) => number | null;
  readonly digits: number;
  readonly compare: boolean;
}

const sum = (o: Record<string, number>): number => Object.values(o).reduce((a, b) => a + b, 0);

const METRICS: Record<string, Metric> = {
  messagesPerSec: { get: (r) => r.messagesPerSec, digits: 1, compare: true },
  latencyP50Ms: { get: (r) => r.latency.p50Ms, digits: 3, compare: true },
  latencyP90Ms: { get: (r) => r.latency.p90Ms, digits: 3, compare: true },
  latencyP99Ms: { get: (r) => r.latency.p99Ms, digits: 3, compare: true },
  latencyMeanMs: { get: (r) => r.latency.meanMs, digits: 3, compare: true },
  serverCpuUsPerMessage: { get: (r) => r.cpuUsPerMessage.server ?? null, digits: 2, compare: true },
  serverSystemCpuUsPerMessage: {
    get: (r) => r.cpuUsPerMessage.serverSystem ?? null,
    digits: 2,
    compare: true,
  },
  mosquittoCpuUsPerMessage: {
    get: (r) => r.cpuUsPerMessage.mosquitto ?? null,
    digits: 2,
    compare: false,
  },
  platformCpuUsPerMessage: {
    get: (r) => r.cpuUsPerMessage.platform ?? null,
    digits: 2,
    compare: false,
  },
  httpSinkCpuUsPerMessage: {
    get: (r) => r.cpuUsPerMessage.httpSink ?? null,
    digits: 2,
    compare: false,
  },
  spanSinkCpuUsPerMessage: {
    get: (r) => r.cpuUsPerMessage.spanSink ?? null,
    digits: 2,
    compare: false,
  },
  pipelineCpuUsPerMessage: {
    get: (r) => r.cpuUsPerMessage.pipeline ?? null,
    digits: 2,
    compare: true,
  },
  counterCpuUsPerMessage: {
    get: (r) => r.cpuUsPerMessage.counter ?? null,
    digits: 2,
    compare: false,
  },
  loadGenCpuUsPerMessage: {
    get: (r) => r.cpuUsPerMessage.loadGen ?? null,
    digits: 2,
    compare: false,
  },
  serverCpuUtilisation: {
    get: (r) => r.window.serverCpuUtilisation ?? null,
    digits: 3,
    compare: false,
  },
  loadGenCpuUtilisation: {
    get: (r) => r.window.loadGenCpuUtilisation ?? null,
    digits: 3,
    compare: false,
  },
  machineBusy: { get: (r) => r.window.machineBusy ?? null, digits: 3, compare: false },
  otherCores: { get: (r) => r.window.otherCores ?? null, digits: 3, compare: false },
  spansPerMessage: { get: (r) => r.spanSink?.spansPerMessage ?? null, digits: 3, compare: false },
  spanWireBytesPerMessage: {
    get: (r) => r.spanSink?.wireBytesPerMessage ?? null,
    digits: 1,
    compare: false,
  },
  failures: { get: (r) => sum(r.failures), digits: 0, compare: false },
  timeouts: { get: (r) => r.timeouts, digits: 0, compare: false },
  retransmissions: { get: (r) => r.retransmissions, digits: 0, compare: false },
  separateResponses: { get: (r) => r.separateResponses, digits: 0, compare: false },
  replyMismatches: { get: (r) => r.replyMismatches, digits: 0, compare: false },
  serverRssKiB: { get: (r) => r.serverRssKiB, digits: 0, compare: false },
};
const COMPARED = Object.entries(METRICS).filter(([, m]) => m.compare);

function mqttJsVersion(): string {
  try {
    const pkg = JSON.parse(
      readFileSync(join(REPO_ROOT, 'node_modules', 'mqtt', 'package.json'), 'utf8'),
    ) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Ratios of each variant's metrics to a reference phase of the same round. */
function ratiosTo(
  row: Record<string, unknown>,
  reference: PhaseName,
  variants: readonly PhaseName[],
): Record<string, Record<string, number | null>> {
  const ref = row[reference] as PhaseReport;
  return Object.fromEntries(
    variants.map((v) => [
      v,
      Object.fromEntries(
        COMPARED.map(([k, m]) => [k, round(ratio(m.get(row[v] as PhaseReport), m.get(ref)), 3)]),
      ),
    ]),
  );
}

/** Median over rounds of the per-round ratios in `row[key]`. */
function medianRatios(
  rows: readonly Record<string, unknown>[],
  key: string,
  variants: readonly PhaseName[],
): Record<string, Record<string, number | null>> {
  return Object.fromEntries(
    variants.map((v) => [
      v,
      Object.fromEntries(
        COMPARED.map(([k]) => [
          k,
          round(
            median(
              rows.map(
                (row) =>
                  (row[key] as Record<string, Record<string, number | null>> | undefined)?.[v]?.[
                    k
                  ] ?? null,
              ),
            ),
            3,
          ),
        ]),
      ),
    ]),
  );
}

/** Per reply-flow variant: its p50/p99 minus the broker round trip's of the same round. */
function addedLatency(
  row: Record<string, unknown>,
  order: readonly PhaseName[],
): Record<string, Record<string, number | null>> {
  const b = row[BROKER_STEP] as { latency: { p50Ms: number | null; p99Ms: number | null } };
  const minus = (a: number | null, c: number | null): number | null =>
    a === null || c === null ? null : round(a - c, 3);
  return Object.fromEntries(
    order
      .filter((p) => VARIANTS[p].flow === 'reply' && p !== 'libcoap')
      .map((p) => {
        const l = (row[p] as PhaseReport).latency;
        return [
          p,
          {
            addedP50Ms: minus(l.p50Ms, b.latency.p50Ms),
            addedP99Ms: minus(l.p99Ms, b.latency.p99Ms),
          },
        ];
      }),
  );
}

/** `summary.halfSaturation`: medians over rounds of the latencies and their differences. */
function halfSaturationSummary(
  rows: readonly Record<string, unknown>[],
  phases: readonly PhaseName[],
  base: Record<string, unknown>,
): Record<string, unknown> {
  const brokerQ = (k: 'p50Ms' | 'p99Ms'): number | null =>
    round(
      median(
        rows.map(
          (r) => (r[BROKER_STEP] as { latency: Record<string, number | null> }).latency[k] ?? null,
        ),
      ),
      3,
    );
  const added = (p: PhaseName, k: string): number[] =>
    rows
      .map((r) => (r.addedLatency as Record<string, Record<string, number | null>>)[p]?.[k] ?? null)
      .filter((x): x is number => x !== null);
  const variants = phases.filter((p) => VARIANTS[p].flow === 'reply' && p !== 'libcoap');
  return {
    ...base,
    brokerRoundTrip: {
      p50Ms: brokerQ('p50Ms'),
      p99Ms: brokerQ('p99Ms'),
      messagesPerSec: round(
        median(
          rows.map((r) => (r[BROKER_STEP] as { messagesPerSec: number | null }).messagesPerSec),
        ),
        1,
      ),
    },
    variants: Object.fromEntries(
      variants.map((p) => [
        p,
        {
          p50Ms: round(median(rows.map((r) => (r[p] as PhaseReport).latency.p50Ms)), 3),
          p99Ms: round(median(rows.map((r) => (r[p] as PhaseReport).latency.p99Ms)), 3),
          messagesPerSec: round(median(rows.map((r) => (r[p] as PhaseReport).messagesPerSec)), 1),
          addedP50Ms: round(median(added(p, 'addedP50Ms')), 3),
          addedP99Ms: round(median(added(p, 'addedP99Ms')), 3),
          addedP99MsSpread: spreadOf(added(p, 'addedP99Ms')),
        },
      ]),
    ),
    definition:
      'saturation = messages/s of each reply-flow variant alone in closed loop (one ' +
      'outstanding per device), mean of two passes in A B … B A order; every phase of the rounds then runs at a fixed rate of half ' +
      'of coapEdgeReply’s saturation (the same offered load for every variant); the broker ' +
      'round trip is an MQTT 5 client in the bench publishing QoS 1 at that rate and timing ' +
      'PUBACK + the platform reply; added = variant − broker round trip of the same round ' +
      '(p50 and p99 of the device-side latency), median over rounds',
  };
}

/** Ratios of coap-edge variants to the floor variant of the same flow, same round. */
function ratiosToFloor(
  row: Record<string, unknown>,
  variants: readonly PhaseName[],
): Record<string, Record<string, number | null>> {
  return Object.fromEntries(variants.map((v) => [v, ratiosTo(row, FLOOR_OF[v]!, [v])[v]!]));
}

/** Ratio metrics whose per-round spread is reported. */
const SPREAD_METRICS = [
  'serverCpuUsPerMessage',
  'pipelineCpuUsPerMessage',
  'messagesPerSec',
  'latencyP50Ms',
  'latencyP99Ms',
] as const;

/** Per variant and metric: the per-round ratios in `row[key]`, min, quartiles, max. */
function ratioSpread(
  rows: readonly Record<string, unknown>[],
  key: string,
  variants: readonly PhaseName[],
): Record<string, Record<string, unknown>> {
  return Object.fromEntries(
    variants.map((v) => [
      v,
      Object.fromEntries(
        SPREAD_METRICS.map((k) => {
          const xs = rows
            .map(
              (row) =>
                (row[key] as Record<string, Record<string, number | null>> | undefined)?.[v]?.[k] ??
                null,
            )
            .filter((x): x is number => x !== null);
          return [k, spreadOf(xs)];
        }),
      ),
    ]),
  );
}

const PHASE_TEXT = (publishTail: string, publishClass: string): Record<PhaseName, string> => ({
  coapEdgeReply:
    'bridge mode, publish + reply, tracing off: CON POST /topic/sys/{pk}/{dk}/thing/' +
    'measurepoint/post → coap-edge publishes QoS 1 on /sys/{pk}/{dk}/thing/measurepoint/post ' +
    '(PUBACK awaited) over its bridge pool, the platform stand-in replies on ..._reply, ' +
    'coap-edge answers 2.04 with the reply',
  coapEdgePublish:
    `bridge mode, publish only: CON POST /topic/sys/{pk}/{dk}/${publishTail} (router class ` +
    `${publishClass}) → coap-edge publishes QoS 1 on /sys/{pk}/{dk}/${publishTail} and ` +
    'answers 2.04 on the PUBACK, no reply awaited',
  libcoap:
    'libcoap DTLS+CoAP without backend: coap-server-openssl -d <devices+16> answers the ' +
    'same CON POST /topic/sys/{pk}/{dk}/thing/measurepoint/post with 2.04 by updating a ' +
    'dynamic in-memory resource (created with 2.01 by one POST per path before the ' +
    'rounds); -k gives one PSK for every identity, so its devices use that key',
  coapEdgeHttp:
    'HTTP route, publish + reply flavour: the same POST; a YAML routes entry (match ' +
    '/sys/{pk}/{dk}/thing/measurepoint/post, backend http) makes coap-edge POST the body to ' +
    'the HTTP sink (undici pool, keep-alive), which answers 200 {"id":<same>,"code":200,' +
    '"data":null}; coap-edge answers 2.04 with that body. coap-edge is also connected to ' +
    'Mosquitto (bridge pool, command intake) as in coapEdgeReply, but nothing is published',
  coapEdgePerDevice:
    'per-device MQTT (mqttMode per-device, mqttDeviceAuth template: clientId {pk}.{dk}, ' +
    'username {dk}&{pk}, password = device secret, checked by Mosquitto against a password ' +
    'file), publish + reply: the same POST; coap-edge publishes QoS 1 on the device’s own ' +
    'connection, which also holds the reply subscription and the device’s command-topic ' +
    'subscriptions; the platform stand-in replies on the device’s ..._reply topic. The ' +
    'connections open on each device’s first request (in the warm-up) and close when the ' +
    'device sends close_notify at the end of the phase',
  coapEdgeTrace1pct:
    'coapEdgeReply with tracing on: --otlp-endpoint http://127.0.0.1:<sink>/v1/traces ' +
    '--trace-sample-ratio 0.01 (OTLP/HTTP, http/protobuf by default, BatchSpanProcessor: queue 8192, batch 512, ' +
    'every 1 s); the OTLP sink accepts and discards',
  coapEdgeTrace100pct: 'coapEdgeTrace1pct with --trace-sample-ratio 1 (every datagram traced)',
  coapEdgeReplyControl:
    'identical-process control: a second coap-edge process configured exactly as ' +
    'coapEdgeReply (tracing off, own product key); its ratio to coapEdgeReply is the noise ' +
    'floor of two processes doing the same thing, to set beside the tracing ratios',
  floorReply:
    'floor reference, publish + reply: bench/lib/uplink-floor.ts (own process; DtlsServer for ' +
    'the handshake only, then its own record path: DTLS header, AES-128-CCM-8, replay window, ' +
    'CoAP parse, mqtt.js QoS 1 publish with writes corked per event-loop turn, PUBACK and the ' +
    'reply on ..._reply matched by JSON id, 2.04 piggybacked ACK with the reply, seal, send). ' +
    'Leaves out: tracing, metrics, logs, CoAP dedup, separate responses, blockwise, CID, ' +
    'authorisation beyond the key and the topic naming the device, per-topic subscriptions, ' +
    'MQTT pool and reconnects',
  floorPublish:
    `floor reference, publish only: the same program, POST /topic/sys/{pk}/{dk}/${publishTail}, ` +
    'answered 2.04 on the PUBACK',
});

/** Each pinned process's CPU set read back now (null for one that is gone). */
function affinities(
  pinned: Readonly<Record<string, { pid: number }>>,
): Record<string, Affinity | null> {
  return Object.fromEntries(
    Object.entries(pinned).map(([name, { pid }]) => [name, affinityOf(pid) ?? null]),
  );
}

async function main(): Promise<void> {
  const flags = parseFlags(
    [
      'variants',
      'devices',
      'rate',
      'rounds',
      'duration',
      'warmup',
      'timeout',
      'suite',
      'publish-topic',
      'control-cli',
      'pin-server-cpu',
      'offered',
    ],
    ['profile', 'half-saturation', 'pause-log', 'pin'],
  );
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const halfSaturation = flags['half-saturation'] === true;
  if (halfSaturation && flags.rate !== undefined) {
    throw new UsageError('--half-saturation sets the rate itself: leave --rate out');
  }
  const phases = parseVariants(
    stringFlag(flags, 'variants', halfSaturation ? 'reply,floor-reply' : 'base'),
  );
  if (flags.offered !== undefined && !halfSaturation) {
    throw new UsageError('--offered goes with --half-saturation');
  }
  const offeredGiven =
    flags.offered === undefined ? undefined : numberFlag(flags, 'offered', 0, 1, 1e6, false);
  if (halfSaturation && !phases.includes('coapEdgeReply')) {
    throw new UsageError(
      '--half-saturation needs the reply variant (its saturation sets the rate)',
    );
  }
  const deviceCount = numberFlag(flags, 'devices', 100, 1, 10_000);
  // tracing's 5 % question needs the spread of many rounds, at one offered load below
  // saturation for every phase (see bench/README.md, "Measuring tracing")
  const tracingAsked = phases.some((p) => TRACE_PHASES.includes(p));
  let rate = numberFlag(flags, 'rate', tracingAsked && !halfSaturation ? 2 : 0, 0, 10_000, false);
  const rounds = numberFlag(flags, 'rounds', tracingAsked ? 8 : 3, 1, 100);
  const durationS = numberFlag(flags, 'duration', 5, 0.5, 3600, false);
  const warmupS = numberFlag(flags, 'warmup', 2, 0, 600, false);
  const timeoutMs = numberFlag(flags, 'timeout', 10_000, 100, 120_000);
  const suiteFlag = choiceFlag(flags, 'suite', ['ccm8', 'cbc'], 'ccm8');
  const suite = SUITES[suiteFlag];
  const publishTail = stringFlag(flags, 'publish-topic', 'rrpc/response/1').replace(/^\/+/, '');
  const publishClass = parseTopicPath([
    'topic',
    'sys',
    PRODUCT_KEY,
    'dev0',
    ...publishTail.split('/'),
  ]);
  if (!publishClass.ok || publishClass.topic.replyTopic !== undefined) {
    throw new UsageError(
      `--publish-topic ${publishTail}: not a topic coap-edge publishes without a reply ` +
        `(${publishClass.ok ? publishClass.topic.class : publishClass.reason})`,
    );
  }
  const profiling = flags.profile === true;
  const controlCli =
    flags['control-cli'] === undefined ? undefined : stringFlag(flags, 'control-cli', '');
  const pauseDir =
    flags['pause-log'] === true ? mkdtempSync(join(tmpdir(), 'coap-edge-pauses-')) : undefined;
  const pauseFlags =
    pauseDir !== undefined ? ['--import', new URL('./lib/pause-log.js', import.meta.url).href] : [];
  if (pauseDir !== undefined) process.env.BENCH_PAUSE_LOG_DIR = pauseDir;
  const edgeKinds = [
    ...new Set(phases.map((p) => VARIANTS[p].edge).filter((e): e is EdgeKind => e !== undefined)),
  ];
  if (flags['pin-server-cpu'] !== undefined && flags.pin !== true) {
    throw new UsageError('--pin-server-cpu goes with --pin');
  }
  // before any child starts: the children inherit the bench's set, the servers get theirs
  const pin: PinPlan | undefined =
    flags.pin === true
      ? planPin(
          allowedCpus(),
          flags['pin-server-cpu'] === undefined
            ? undefined
            : numberFlag(flags, 'pin-server-cpu', 0, 0, 4095),
        )
      : undefined;
  if (pin !== undefined) pinProcess(process.pid, pin.otherCpus);
  const serverLaunch = pin !== undefined ? { launcher: pinLauncher(pin.serverCpus) } : {};
  const tracingOn = edgeKinds.some((k) => TRACE_RATIO[k] !== undefined);
  const floorOn = phases.some((p) => VARIANTS[p].floor === true);

  installCleanup();
  const startedAt = new Date();
  const env = environment();
  log(`uplink: ${commandLine()} (variants ${phases.join(', ')})`);
  // The OTEL_* variables would turn tracing on (or change its ratio) in every coap-edge child.
  const clearedEnv = Object.keys(process.env).filter((k) => k.startsWith('OTEL_'));
  for (const k of clearedEnv) delete process.env[k];

  // devices: a generated file per coap-edge process; libcoap gets one key for every identity
  const tmp = mkdtempSync(join(tmpdir(), 'coap-edge-uplink-'));
  // also on Ctrl-C, which exits without running the finally below
  const removeTmp = (): void => rmSync(tmp, { recursive: true, force: true });
  process.once('exit', removeTmp);
  const devicesFiles = new Map<EdgeKind, string>();
  for (const kind of edgeKinds) {
    const file = join(tmp, `devices-${kind}.json`);
    writeFileSync(
      file,
      `${JSON.stringify(generateDevices(deviceCount, PRODUCT_KEYS[kind], SEED), null, 1)}\n`,
    );
    devicesFiles.set(kind, file);
  }
  const floorDevicesFile = join(tmp, 'devices-floor.json');
  if (floorOn) {
    writeFileSync(
      floorDevicesFile,
      `${JSON.stringify(generateDevices(deviceCount, FLOOR_PRODUCT_KEY, SEED), null, 1)}\n`,
    );
  }
  const devicesOf = new Map<PhaseName, UplinkDevice[]>();
  const bridgeReply = toDevices(deviceCount, MEASUREPOINT_TAIL, PRODUCT_KEY);
  const keyDevice = bridgeReply.findIndex((d) => pskUsableOnCommandLine(d.psk));
  if (keyDevice < 0) throw new Error('no generated device has a PSK without a 0x00 byte');
  const libcoapKey = bridgeReply[keyDevice]!.psk;
  for (const p of phases) {
    const v = VARIANTS[p];
    devicesOf.set(
      p,
      v.floor === true
        ? toDevices(
            deviceCount,
            v.flow === 'reply' ? MEASUREPOINT_TAIL : publishTail,
            FLOOR_PRODUCT_KEY,
          )
        : v.edge === undefined
          ? toDevices(deviceCount, MEASUREPOINT_TAIL, PRODUCT_KEY, libcoapKey)
          : toDevices(
              deviceCount,
              v.flow === 'reply' ? MEASUREPOINT_TAIL : publishTail,
              PRODUCT_KEYS[v.edge],
            ),
    );
  }
  const profDir = profiling ? mkdtempSync(join(tmpdir(), 'coap-edge-prof-')) : undefined;

  let broker: Broker | undefined;
  let profile: ProfileSummary | undefined;
  const setup: Record<string, unknown> = {};
  const preflight: Record<string, unknown> = {};
  const results = new Map<PhaseName, PhaseReport[]>(phases.map((p) => [p, []]));
  const roundRows: Record<string, unknown>[] = [];
  const pauseRows = new Map<PhaseName, Record<string, unknown>[]>(phases.map((p) => [p, []]));
  let runLibcoap = phases.includes('libcoap');
  let halfSat: Record<string, unknown> | undefined;
  const edgeTails: Record<string, string> = {};
  try {
    if (edgeKinds.includes('perDevice')) {
      const users = generateDevices(deviceCount, PRODUCT_KEYS.perDevice, SEED).devices.map((d) => ({
        username: `${d.deviceKey}&${d.productKey}`,
        password: d.deviceSecret,
      }));
      const b = await startMosquittoWithPasswords(users);
      broker = b;
      setup.mosquittoPasswordFile = {
        ...b.passwordFile,
        usernames: `{dk}&{pk} of the ${PRODUCT_KEYS.perDevice} devices`,
        passwords: 'device secrets, hashed with mosquitto_passwd -U',
        anonymous:
          'allowed (allow_anonymous true): the bridge pools, the stand-in and the counter ' +
          'connect without a username; a client giving a username is checked',
      };
    } else {
      broker = await startMosquitto();
    }
    const brokerUrl = broker.url;
    log(`mosquitto: pid ${broker.proc.pid}, ${broker.url} (${broker.version})`);
    const counter = await IpcChild.start('counter', 'uplink-counter', [broker.url, publishTail]);
    const platform = await IpcChild.start('platform', 'uplink-platform', [broker.url]);
    let httpSink: IpcChild | undefined;
    let httpSinkPort = 0;
    if (edgeKinds.includes('http')) {
      httpSinkPort = await freeTcpPort();
      httpSink = await IpcChild.start('httpSink', 'uplink-http-sink', [String(httpSinkPort)]);
      log(`httpSink: pid ${httpSink.proc.pid}, http://127.0.0.1:${httpSinkPort}`);
    }
    let spanSink: IpcChild | undefined;
    let spanSinkPort = 0;
    if (tracingOn) {
      spanSinkPort = await freeTcpPort();
      spanSink = await IpcChild.start('spanSink', 'otlp-sink', [String(spanSinkPort)]);
      log(`spanSink: pid ${spanSink.proc.pid}, http://127.0.0.1:${spanSinkPort}/v1/traces`);
    }

    const edges = new Map<EdgeKind, ServerProcess>();
    for (const kind of edgeKinds) {
      const extraArgs = ['--mqtt-url', brokerUrl];
      if (kind !== 'bridge') extraArgs.push('--command-share-group', `bench-${kind}`);
      if (kind === 'http') {
        const yaml = join(tmp, 'routes-http.yaml');
        writeFileSync(
          yaml,
          [
            'routes:',
            '  - name: bench-http',
            '    match: /sys/{pk}/{dk}/thing/measurepoint/post',
            '    backend: http',
            '    method: POST',
            `    url: http://127.0.0.1:${httpSinkPort}/measurepoints/{pk}/{dk}`,
            '',
          ].join('\n'),
        );
        extraArgs.push('--config', yaml);
        setup.httpRoutesYaml = readFileSync(yaml, 'utf8').trim().split('\n');
      }
      if (kind === 'perDevice') {
        extraArgs.push(
          '--mqtt-mode',
          'per-device',
          '--mqtt-device-auth',
          'template',
          '--mqtt-device-client-id',
          DEVICE_LOGIN.clientId,
          '--mqtt-device-username',
          DEVICE_LOGIN.username,
          '--mqtt-device-password',
          DEVICE_LOGIN.password,
          // all sessions open within the warm-up, none refused
          '--device-connect-rate',
          String(Math.max(200, 2 * deviceCount)),
          '--max-device-sessions',
          String(Math.max(10_000, deviceCount + 64)),
        );
      }
      const ratioText = TRACE_RATIO[kind];
      if (ratioText !== undefined) {
        extraArgs.push(
          '--otlp-endpoint',
          `http://127.0.0.1:${spanSinkPort}/v1/traces`,
          '--trace-sample-ratio',
          ratioText,
        );
      }
      const first = toDevices(1, MEASUREPOINT_TAIL, PRODUCT_KEYS[kind])[0]!;
      const edge = await startCoapEdge(
        {
          devicesFile: devicesFiles.get(kind)!,
          cpuProfDir: kind === 'bridge' ? profDir : undefined,
          extraArgs,
          nodeFlags: pauseFlags,
          ...serverLaunch,
          ...(kind === 'control' && controlCli !== undefined ? { cliPath: controlCli } : {}),
        },
        first,
      );
      edges.set(kind, edge);
      log(`coapEdge ${kind}: pid ${edge.pid}, ${edge.target.host}:${edge.target.port}`);
    }
    const floor = floorOn
      ? await startFloor(
          {
            devicesFile: floorDevicesFile,
            mqttUrl: brokerUrl,
            productKey: FLOOR_PRODUCT_KEY,
            nodeFlags: pauseFlags,
            ...serverLaunch,
          },
          toDevices(1, MEASUREPOINT_TAIL, FLOOR_PRODUCT_KEY)[0]!,
        )
      : undefined;
    if (floor !== undefined)
      log(`floor: pid ${floor.pid}, ${floor.target.host}:${floor.target.port}`);
    const libcoap = runLibcoap
      ? await startLibcoap(
          libcoapKey,
          devicesOf.get('libcoap')![0]!,
          ['-d', String(deviceCount + 16)],
          serverLaunch,
        )
      : undefined;
    if (libcoap !== undefined) {
      log(`libcoap: pid ${libcoap.pid}, ${libcoap.target.host}:${libcoap.target.port}`);
    }
    setup.coapEdge = Object.fromEntries(
      [...edges].map(([kind, e]) => [
        kind,
        { pid: e.pid, productKey: PRODUCT_KEYS[kind], command: e.command },
      ]),
    );
    if (libcoap !== undefined) setup.libcoap = { pid: libcoap.pid, command: libcoap.command };
    if (floor !== undefined) {
      setup.floor = { pid: floor.pid, productKey: FLOOR_PRODUCT_KEY, command: floor.command };
    }
    setup.mosquitto = {
      pid: broker.proc.pid,
      version: broker.version,
      command: broker.proc.command,
      config: broker.config.trim().split('\n'),
    };
    setup.platform = { pid: platform.proc.pid, command: platform.proc.command };
    setup.counter = { pid: counter.proc.pid, command: counter.proc.command };
    if (httpSink !== undefined) {
      setup.httpSink = { pid: httpSink.proc.pid, command: httpSink.proc.command };
    }
    if (spanSink !== undefined) {
      setup.spanSink = { pid: spanSink.proc.pid, command: spanSink.proc.command };
    }
    if (clearedEnv.length > 0) setup.clearedEnvironment = clearedEnv;
    const pinned: Record<string, { pid: number; cpus: readonly number[] }> = {};
    if (pin !== undefined) {
      const put = (name: string, pid: number, cpus: readonly number[]): void => {
        pinned[name] = { pid, cpus };
      };
      put('bench', process.pid, pin.otherCpus);
      put('mosquitto', broker.proc.pid, pin.otherCpus);
      put('platform', platform.proc.pid, pin.otherCpus);
      put('counter', counter.proc.pid, pin.otherCpus);
      if (httpSink !== undefined) put('httpSink', httpSink.proc.pid, pin.otherCpus);
      if (spanSink !== undefined) put('spanSink', spanSink.proc.pid, pin.otherCpus);
      for (const [kind, e] of edges) put(`coapEdge.${kind}`, e.pid, pin.serverCpus);
      if (floor !== undefined) put('floor', floor.pid, pin.serverCpus);
      if (libcoap !== undefined) put('libcoap', libcoap.pid, pin.serverCpus);
      const atStart = affinities(pinned);
      setup.pinning = {
        serverCpus: formatCpuList(pin.serverCpus),
        otherCpus: formatCpuList(pin.otherCpus),
        how:
          'the bench pinned itself (taskset -a -p -c <otherCpus>) before starting any child, ' +
          'so the children inherit its set; each server ran behind taskset -c <serverCpus>. ' +
          'Read back per thread from /proc/<pid>/task/*/status (Cpus_allowed_list)',
        atStart,
      };
      log(
        `pinning: servers on CPU ${formatCpuList(pin.serverCpus)}, the rest on ${formatCpuList(pin.otherCpus)}`,
      );
      const wrong = Object.entries(atStart).filter(
        ([name, a]) =>
          a === null || a.cpus !== formatCpuList(pinned[name]!.cpus) || a.threadsElsewhere > 0,
      );
      if (wrong.length > 0) throw new Error(`the pin did not take: ${JSON.stringify(wrong)}`);
    }

    // preflight: coap-edge may need a moment for its MQTT pool and first reply subscription
    if (edgeKinds.includes('perDevice')) {
      const d = generateDevices(1, PRODUCT_KEYS.perDevice, SEED).devices[0]!;
      const auth = await checkPasswordAuth(brokerUrl, {
        username: `${d.deviceKey}&${d.productKey}`,
        password: d.deviceSecret,
      });
      preflight.mosquittoPasswordAuth = auth;
      log(`mosquitto password auth ${JSON.stringify(auth)}`);
      if (!auth.enforced) throw new Error('Mosquitto does not enforce the password file');
    }
    for (const name of phases) {
      const v = VARIANTS[name];
      const probed =
        v.floor === true ? floor : v.edge !== undefined ? edges.get(v.edge) : undefined;
      if (probed === undefined) continue;
      const p = await probe(
        probed.target,
        devicesOf.get(name)![0]!,
        suite,
        measurepointBody(`pre-${v.tag}`),
        Code.CHANGED,
        15_000,
      );
      preflight[name] = p;
      log(`${name} preflight ${JSON.stringify(p)}`);
      if (p.code !== '2.04') throw new Error(`${name} preflight answered ${p.code}`);
    }
    if (spanSink !== undefined) {
      const s = await settledSpanStats(spanSink);
      preflight.spanSink = s;
      log(`spanSink after preflight ${JSON.stringify(s)}`);
      if (edgeKinds.includes('trace100pct') && num(s, 'spans') === 0) {
        throw new Error('coap-edge with --trace-sample-ratio 1 exported no span in its preflight');
      }
    }
    if (libcoap !== undefined) {
      const body = measurepointBody('pre-0');
      const libcoapDevices = devicesOf.get('libcoap')!;
      try {
        const primed = await primeLibcoap(libcoap.target, libcoapDevices, suite);
        const again = await probe(libcoap.target, libcoapDevices[0]!, suite, body, Code.CHANGED, 0);
        preflight.libcoap = { primeCodes: primed, ...again };
        log(`libcoap preflight ${JSON.stringify(preflight.libcoap)}`);
        if (again.code !== '2.04') {
          throw new Error(`libcoap answered ${again.code} to a POST on a created resource`);
        }
      } catch (err) {
        if (err instanceof Error && err.message.startsWith('libcoap answered')) throw err;
        runLibcoap = false;
        preflight.libcoap = { error: err instanceof Error ? err.message : String(err) };
        log(`libcoap preflight failed (${String(err)}): not measuring it`);
      }
    }
    await counter.request({ type: 'collect', prefix: 'pre-' });

    const helpers = [broker.proc, platform.proc, counter.proc];
    if (httpSink !== undefined) helpers.push(httpSink.proc);
    if (spanSink !== undefined) helpers.push(spanSink.proc);
    const measured = phases.filter((p) => p !== 'libcoap' || runLibcoap);
    const serverOf = (name: PhaseName): ServerProcess => {
      const v = VARIANTS[name];
      return v.floor === true ? floor! : v.edge === undefined ? libcoap! : edges.get(v.edge)!;
    };
    if (halfSaturation && offeredGiven !== undefined) {
      rate = round(offeredGiven / deviceCount, 3)!;
      halfSat = { saturation: null, basis: '--offered', offeredMessagesPerSec: offeredGiven };
      log(`offered (--offered): ${offeredGiven} msg/s, ${rate}/s per device`);
    } else if (halfSaturation) {
      // saturation: each reply-flow variant once in closed loop; the rate is half of
      // coapEdgeReply's messages/s, spread over the devices
      // two passes, the second in reverse order (A B … B A): no variant is always the first
      // to run after start-up
      const saturating = measured.filter((p) => VARIANTS[p].flow === 'reply' && p !== 'libcoap');
      const runs = new Map<PhaseName, Record<string, unknown>[]>(saturating.map((p) => [p, []]));
      for (const [pass, name] of [
        ...saturating.map((p) => [1, p] as const),
        ...[...saturating].reverse().map((p) => [2, p] as const),
      ]) {
        const v = VARIANTS[name];
        const tag = `s${pass}${v.tag}`;
        const phase = await runUplinkPhase({
          target: serverOf(name).target,
          devices: devicesOf.get(name)!,
          suite,
          tag,
          warmupMs: warmupS * 1000,
          durationMs: durationS * 1000,
          ratePerDevice: 0,
          requestTimeoutMs: timeoutMs,
          expectedCode: Code.CHANGED,
          expectReply: true,
          cpuPids: { [serverOf(name).name]: serverOf(name).pid },
        });
        await counter.request({ type: 'collect', prefix: `${tag}-` }, 30_000);
        const q = phase.latency.quantiles();
        const one = {
          pass,
          messagesPerSec: round((phase.messages * 1000) / phase.window.wallMs, 1),
          p50Ms: q.p50Ms,
          p99Ms: q.p99Ms,
          failures: phase.failures,
          machineBusy: round(phase.window.machineBusy, 3),
          cpuBusy: phase.window.cpuBusy,
          serverCpuUtilisation: round(
            phase.window.processes[serverOf(name).name]?.utilisation ?? null,
            3,
          ),
        };
        runs.get(name)!.push(one);
        log(`saturation ${name}: ${JSON.stringify(one)}`);
        await sleep(PAUSE_MS);
      }
      const saturation = Object.fromEntries(
        [...runs].map(([name, rs]) => [
          name,
          {
            messagesPerSec: round(median(rs.map((x) => x.messagesPerSec as number | null)), 1),
            passes: rs,
          },
        ]),
      );
      const sat = saturation.coapEdgeReply?.messagesPerSec ?? null;
      if (sat === null || sat <= 0) {
        throw new Error('coapEdgeReply answered nothing in closed loop');
      }
      rate = round(sat / 2 / deviceCount, 3)!;
      halfSat = { saturation, basis: 'coapEdgeReply', offeredMessagesPerSec: sat / 2 };
      log(`half saturation: ${sat / 2} msg/s offered, ${rate}/s per device`);
    }
    for (let r = 0; r < rounds; r++) {
      const order = measured.map((_, i) => measured[(i + r) % measured.length]!);
      const steps: (PhaseName | typeof BROKER_STEP)[] = [...order];
      if (halfSaturation) steps.splice(r % (order.length + 1), 0, BROKER_STEP);
      const row: Record<string, unknown> = { round: r + 1, order: steps };
      for (const step of steps) {
        if (step === BROKER_STEP) {
          const tag = `r${r + 1}m`;
          const b = await runBrokerRttPhase({
            url: brokerUrl,
            productKey: BROKER_PRODUCT_KEY,
            devices: deviceCount,
            ratePerDevice: rate,
            warmupMs: warmupS * 1000,
            durationMs: durationS * 1000,
            tag,
            timeoutMs,
            cpuPids: { mosquitto: broker.proc.pid, platform: platform.proc.pid },
          });
          const delivery = await collectDelivery(counter, `${tag}-`, b.acknowledgedIds);
          const res = {
            messagesPerSec: round((b.messages * 1000) / b.window.wallMs, 1),
            latency: { ...b.latency.quantiles(), meanMs: b.latency.mean() },
            messages: b.messages,
            failures: b.failures,
            lateStarts: b.lateStarts,
            machineBusy: round(b.window.machineBusy, 3),
            cpuBusy: b.window.cpuBusy,
            delivery,
          };
          row[BROKER_STEP] = res;
          log(`round ${r + 1}/${rounds} ${BROKER_STEP.padEnd(19)} ${JSON.stringify(res)}`);
          await sleep(PAUSE_MS);
          continue;
        }
        const name = step;
        const v = VARIANTS[name];
        const server = serverOf(name);
        for (const s of [server, ...helpers]) {
          if (!s.alive()) throw new Error(`${s.name} exited:\n${s.outputTail()}`);
        }
        const tag = `r${r + 1}${v.tag}`;
        const expectReply = server.name !== 'libcoap' && v.flow === 'reply';
        const cpuPids: Record<string, number> =
          server.name === 'libcoap'
            ? { libcoap: server.pid }
            : {
                [server.name]: server.pid,
                mosquitto: broker.proc.pid,
                platform: platform.proc.pid,
                counter: counter.proc.pid,
                ...(v.edge === 'http' && httpSink !== undefined
                  ? { httpSink: httpSink.proc.pid }
                  : {}),
                ...(v.edge !== undefined &&
                TRACE_RATIO[v.edge] !== undefined &&
                spanSink !== undefined
                  ? { spanSink: spanSink.proc.pid }
                  : {}),
              };
        const platformBefore = expectReply ? await platform.request({ type: 'stats' }) : {};
        const httpBefore =
          v.edge === 'http' && httpSink !== undefined
            ? await httpSink.request({ type: 'stats' })
            : undefined;
        const spansBefore =
          v.edge !== undefined && TRACE_RATIO[v.edge] !== undefined && spanSink !== undefined
            ? await spanSink.request({ type: 'stats' })
            : undefined;
        const phase = await runUplinkPhase({
          target: server.target,
          devices: devicesOf.get(name)!,
          suite,
          tag,
          warmupMs: warmupS * 1000,
          durationMs: durationS * 1000,
          ratePerDevice: rate,
          requestTimeoutMs: timeoutMs,
          expectedCode: Code.CHANGED,
          expectReply,
          cpuPids,
        });
        const extra: {
          delivery?: Delivery;
          platform?: PhaseExtra['platform'];
          httpSink?: HttpSinkCounts;
          spanSink?: SpanSinkCounts;
        } = {};
        if (v.mqtt)
          extra.delivery = await collectDelivery(counter, `${tag}-`, phase.acknowledgedIds);
        if (expectReply && v.mqtt) {
          const after = await platform.request({ type: 'stats' });
          extra.platform = {
            received: num(after, 'received') - num(platformBefore, 'received'),
            replied: num(after, 'replied') - num(platformBefore, 'replied'),
            publishErrors: num(after, 'publishErrors') - num(platformBefore, 'publishErrors'),
          };
        }
        if (httpBefore !== undefined && httpSink !== undefined) {
          const after = await httpSink.request({ type: 'stats' });
          const d = (k: string): number => num(after, k) - num(httpBefore, k);
          const seen = (m: Record<string, unknown>): number =>
            num((m.headerSeen as Record<string, unknown> | undefined) ?? {}, 'traceparent');
          extra.httpSink = {
            requests: d('requests'),
            bytesIn: d('bytesIn'),
            answered200: d('answered200'),
            noId: d('noId'),
            withTraceparent: seen(after) - seen(httpBefore),
            connections: num(after, 'connections'),
            connectionsOpened: d('connectionsOpened'),
          };
        }
        if (spansBefore !== undefined && spanSink !== undefined) {
          const after = await settledSpanStats(spanSink);
          const d = (k: string): number => num(after, k) - num(spansBefore, k);
          extra.spanSink = {
            requests: d('requests'),
            wireBytes: d('wireBytes'),
            spans: d('spans'),
            spansPerMessage: phase.answered > 0 ? round(d('spans') / phase.answered, 3) : null,
            wireBytesPerMessage:
              phase.answered > 0 ? round(d('wireBytes') / phase.answered, 1) : null,
          };
        }
        const res = report(phase, server, v, extra);
        results.get(name)!.push(res);
        row[name] = res;
        if (pauseDir !== undefined && server.name !== 'libcoap') {
          const pt = pauseTail(phase, readPauses(pauseDir, server.pid));
          ((row.pauses ??= {}) as Record<string, unknown>)[name] = pt;
          pauseRows.get(name)!.push(pt);
          log(`round ${r + 1}/${rounds} ${name.padEnd(19)} pauses ${JSON.stringify(pt)}`);
        }
        log(`round ${r + 1}/${rounds} ${name.padEnd(19)} ${describe(res)}`);
        await sleep(PAUSE_MS);
      }
      const edgePhases = order.filter((p) => p !== 'libcoap');
      if (order.includes('libcoap')) row.ratioToLibcoap = ratiosTo(row, 'libcoap', edgePhases);
      const toFloor = order.filter((p) => {
        const f = FLOOR_OF[p];
        return f !== undefined && order.includes(f);
      });
      if (toFloor.length > 0) row.ratioToFloor = ratiosToFloor(row, toFloor);
      const toBridge = order.filter((p) => BRIDGE_COMPARED.includes(p));
      if (order.includes('coapEdgeReply') && toBridge.length > 0) {
        row.ratioToBridge = ratiosTo(row, 'coapEdgeReply', toBridge);
      }
      if (halfSaturation) row.addedLatency = addedLatency(row, order);
      roundRows.push(row);
    }
    for (const [kind, e] of edges) {
      const t = e.outputTail().trim();
      if (t !== '') edgeTails[kind] = t.slice(-2000);
    }
    if (setup.pinning !== undefined) {
      (setup.pinning as Record<string, unknown>).atEnd = affinities(pinned);
    }
    const floorTail = floor?.outputTail().trim() ?? '';
    if (floorTail !== '') edgeTails.floor = floorTail.slice(-2000);
  } finally {
    await stopAll();
    broker?.cleanup();
    removeTmp();
    if (pauseDir !== undefined) rmSync(pauseDir, { recursive: true, force: true });
  }
  if (profDir !== undefined) {
    const f = newestProfile(profDir);
    if (f !== undefined) {
      profile = summariseProfile(f, 25);
      log(`coap-edge CPU profile ${profile.file} (busy ${profile.busyMs} ms), top self time:`);
      for (const h of profile.top) {
        log(`  ${h.selfPercent.toFixed(1).padStart(5)}%  ${h.function}  ${h.location}`);
      }
    } else log('no .cpuprofile was written');
  }

  const medians: Record<string, Record<string, number | null>> = {};
  for (const name of phases) {
    const rs = results.get(name)!;
    if (rs.length === 0) continue;
    medians[name] = Object.fromEntries(
      Object.entries(METRICS).map(([k, m]) => [k, round(median(rs.map(m.get)), m.digits)]),
    );
  }
  const edgePhases = phases.filter((p) => p !== 'libcoap');
  const ratios = runLibcoap ? medianRatios(roundRows, 'ratioToLibcoap', edgePhases) : null;
  const bridgeCompared = phases.filter((p) => BRIDGE_COMPARED.includes(p));
  const ratiosToBridge =
    phases.includes('coapEdgeReply') && bridgeCompared.length > 0
      ? medianRatios(roundRows, 'ratioToBridge', bridgeCompared)
      : null;
  const floorCompared = phases.filter((p) => {
    const f = FLOOR_OF[p];
    return f !== undefined && phases.includes(f);
  });
  const ratiosToFloorSummary =
    floorCompared.length > 0 ? medianRatios(roundRows, 'ratioToFloor', floorCompared) : null;
  const delivery = Object.fromEntries(
    phases
      .filter((p) => VARIANTS[p].mqtt)
      .map((v) => {
        const ds = results
          .get(v)!
          .map((r) => r.delivery)
          .filter((d): d is Delivery => d !== undefined);
        const total = (k: 'acknowledged' | 'delivered' | 'duplicates' | 'missing'): number =>
          ds.reduce((a, d) => a + d[k], 0);
        return [
          v,
          {
            acknowledged: total('acknowledged'),
            delivered: total('delivered'),
            duplicates: total('duplicates'),
            missing: total('missing'),
            ok: ds.every((d) => d.ok),
          },
        ];
      }),
  );
  const phaseText = PHASE_TEXT(publishTail, publishClass.topic.class);

  const result = {
    bench: 'uplink',
    description:
      'N devices (own DTLS 1.2 PSK association each) POST an EnOS measurepoint body, one ' +
      'request outstanding per device (or a fixed rate), through coap-edge configured in ' +
      'several ways (MQTT bridge, HTTP route, per-device MQTT, tracing off/1 %/100 %), each a ' +
      'coap-edge process of its own, side by side in one run, optionally with libcoap ' +
      'answering the same POST without a backend',
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    environment: { ...env, mosquitto: broker?.version ?? 'unknown', mqttJs: mqttJsVersion() },
    parameters: {
      variants: phases,
      devices: deviceCount,
      mode: halfSaturation
        ? offeredGiven !== undefined
          ? `given offered load (--offered): fixed rate ${rate}/s per device`
          : `half saturation: fixed rate ${rate}/s per device`
        : rate > 0
          ? `fixed rate ${rate}/s per device`
          : 'closed loop, one outstanding',
      ratePerDevice: rate,
      offeredMessagesPerSec: rate > 0 ? round(rate * deviceCount, 1) : null,
      rounds,
      durationS,
      warmupS,
      requestTimeoutMs: timeoutMs,
      suite: cipherSuiteName.get(suite) ?? suite,
      identity: `{pk},dev000000..,2,86400 (generated, seed ${SEED})`,
      productKeys: Object.fromEntries(edgeKinds.map((k) => [k, PRODUCT_KEYS[k]])),
      requestBody: measurepointBody('r1a-0').toString('utf8'),
      requestBodyBytes: measurepointBody('r1a-0').length,
      profiled: profiling,
      controlCli: controlCli ?? null,
      pauseLog: pauseDir !== undefined,
      pin:
        pin !== undefined
          ? { serverCpus: formatCpuList(pin.serverCpus), otherCpus: formatCpuList(pin.otherCpus) }
          : null,
      publishTopic: publishTail,
      flavour:
        'publish + reply for every variant except coapEdgePublish: the device gets 2.04 ' +
        'carrying the platform reply {"id":<same>,"code":200,"data":null} (MQTT stand-in or ' +
        'HTTP sink), checked by the load generator (replyMismatches)',
    },
    phases: Object.fromEntries(phases.map((p) => [p, phaseText[p]])),
    setup,
    preflight,
    units: {
      messagesPerSec: 'answers with 2.04 per second of the measured window',
      latency: 'request sent to 2.04 received, ms, nearest-rank percentiles (window)',
      cpuUsPerMessage:
        'utime+stime (/proc/<pid>/stat) over the window / 2.04 answers in it; server = ' +
        'coap-edge or libcoap; pipeline = server + mosquitto + platform stand-in (MQTT ' +
        'variants) or server + HTTP sink (coapEdgeHttp); the OTLP sink (spanSink), the ' +
        'counting subscriber and the load generator are not part of it',
      failures: 'whole phase: non-2.04 answers by code, errors by kind (COAP_TIMEOUT, ...)',
      delivery:
        'MQTT variants, whole phase: ids answered 2.04 vs ids the /sys/# subscriber received; ' +
        'missing must be 0',
      httpSink: 'coapEdgeHttp, whole phase: requests, body bytes and sockets at the HTTP sink',
      spanSink:
        'tracing variants, whole phase (warm-up, window, drain and the exporter flush after ' +
        'it): OTLP requests, bytes on the wire and spans at the sink; per message = per ' +
        'request answered in the phase (the handshakes of the phase also produce spans)',
    },
    summary: {
      medians,
      ratios,
      ratioDefinition:
        'median over rounds of (coap-edge variant / libcoap) in the same round; > 1 means ' +
        'coap-edge has the larger value (better for messages/s, worse for CPU and latency)',
      ratiosToBridge,
      ratiosToBridgeSpread:
        ratiosToBridge !== null ? ratioSpread(roundRows, 'ratioToBridge', bridgeCompared) : null,
      ratiosToFloor: ratiosToFloorSummary,
      ratiosToFloorSpread:
        ratiosToFloorSummary !== null
          ? ratioSpread(roundRows, 'ratioToFloor', floorCompared)
          : null,
      ratiosToFloorDefinition:
        'median over rounds of (coap-edge variant / the floor program doing the same flow: ' +
        'coapEdgeReply / floorReply, coapEdgePublish / floorPublish) in the same round; the ' +
        'floor is bench/lib/uplink-floor.ts (see phases.floorReply for what it leaves out)',
      ratioSpreadDefinition:
        'per metric, the per-round ratios (rounds in order) with their min, quartiles (nearest ' +
        'rank) and max: a ratio whose spread covers the target cannot be told from it',
      ratiosToBridgeDefinition:
        'median over rounds of (variant / coapEdgeReply: bridge mode, tracing off, same ' +
        'publish + reply flow) in the same round',
      delivery,
      ...(halfSat !== undefined
        ? { halfSaturation: halfSaturationSummary(roundRows, phases, halfSat) }
        : {}),
      ...(pauseDir !== undefined
        ? {
            pauses: Object.fromEntries(
              [...pauseRows]
                .filter(([, rs]) => rs.length > 0)
                .map(([p, rs]) => [p, pauseTotals(rs)]),
            ),
          }
        : {}),
    },
    rounds: roundRows,
    ...(profile !== undefined ? { coapEdgeProfile: profile } : {}),
    ...(Object.keys(edgeTails).length > 0 ? { coapEdgeOutputTail: edgeTails } : {}),
    notes: [
      'loopback on one machine: the load generator, every coap-edge process, Mosquitto, the ' +
        'platform stand-in, the sinks, the counting subscriber and libcoap share the same ' +
        'cores, so CPU per message is the primary figure and messages/s is bounded by ' +
        'whichever process saturates first (see window.machineBusy and loadGenCpuUtilisation)',
      'every coap-edge configuration is its own process, all started before the rounds and ' +
        'idle outside their phases (keep-alives, timers: part of window.otherCores)',
      ...(runLibcoap
        ? [
            'libcoap does no backend work at all: the coap-edge / libcoap ratio is the price of ' +
              'the backend plus any CoAP/DTLS difference (see bench/dtls-records for the latter)',
          ]
        : []),
      'the counting subscriber on /sys/# also receives the platform replies of the MQTT reply ' +
        'variants, which adds to Mosquitto work (fan-out) in those variants',
      ...(phases.includes('coapEdgeHttp')
        ? [
            'coapEdgeHttp: Mosquitto and the platform stand-in are idle in that phase (their ' +
              'CPU is reported, not part of its pipeline); the HTTP sink does the platform’s job',
          ]
        : []),
      ...(phases.includes('coapEdgePerDevice')
        ? [
            'coapEdgePerDevice: the device connections open in each phase’s warm-up (connect, ' +
              'password check, command-topic and reply SUBSCRIBEs) and close at its end; the ' +
              'window holds steady-state publishes only',
          ]
        : []),
      ...(tracingOn
        ? [
            'tracing variants: OTEL_* environment variables are removed for the children; ' +
              'spansPerMessage counts spans of the whole phase (handshakes included) per answer',
          ]
        : []),
      ...(phases.includes('libcoap') && !runLibcoap
        ? ['libcoap failed its preflight: only coap-edge was measured']
        : []),
      ...(profiling
        ? ['the bridge coap-edge ran under node --cpu-prof: its CPU figures include overhead']
        : []),
      ...(pin !== undefined
        ? [
            `--pin: every server on CPU ${formatCpuList(pin.serverCpus)} (one phase at a time, ` +
              'the others idle there), the load generator, the broker round-trip client and ' +
              `every other child on ${formatCpuList(pin.otherCpus)}; other tenants of the ` +
              'machine are not pinned (window.cpuBusy shows each CPU busy with anything)',
          ]
        : []),
    ],
  };
  const file = writeResult('uplink', startedAt, result);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  log(`written to ${file}`);
}

runScript('uplink', USAGE, main);
