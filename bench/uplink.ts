/**
 * Uplink benchmark (issue #3): N simulated devices (default 100) over DTLS 1.2 PSK with
 * TLS_PSK_WITH_AES_128_CCM_8 post EnOS measurepoints through coap-edge to Mosquitto with
 * QoS 1 (PUBACK awaited before the CoAP answer), side by side in one run with libcoap's
 * `coap-server-openssl` answering the same requests.
 *
 * Three phases per round, rotating their order from round to round:
 * - `coapEdgeReply` — publish + reply (the EnOS flow): POST `/topic/sys/{pk}/{dk}/thing/
 *   measurepoint/post`; coap-edge publishes, a platform stand-in (own process) answers on
 *   `..._reply`, and the device gets 2.04 with the reply as payload.
 * - `coapEdgePublish` — publish only: POST `/topic/sys/{pk}/{dk}/rrpc/response/1` (a device's
 *   answer to RRPC request 1, router class `command-reply`; `--publish-topic` picks another),
 *   which coap-edge publishes and answers 2.04 on the PUBACK, without waiting for any reply.
 *   (`thing/service/x_reply` would do the same, but coap-edge's command intake subscribes to
 *   `/sys/+/+/thing/service/#` by default, so each such publish also comes back to it.)
 * - `libcoap` — `coap-server-openssl -d <N+16> -k <key>`: the same POST to the measurepoint
 *   path, same body; `-d` lets a POST to an unknown path create a dynamic resource (2.01 once
 *   per path, done before the rounds), after which every POST updates it in memory and is
 *   answered 2.04 — DTLS + CoAP with no backend.
 *
 * Reports per phase and round (medians over rounds in `summary`): messages/s, p50/p90/p99
 * latency, CPU µs per message of coap-edge (or libcoap), Mosquitto, the platform stand-in,
 * the counting subscriber and the load generator, failures by kind, and the delivery check:
 * a QoS 1 subscriber on `/sys/#` (own process) must have received every message that was
 * answered 2.04 (delivered ≥ acknowledged; duplicates allowed). One JSON object on stdout,
 * progress on stderr, a copy in bench/results/uplink-<timestamp>.json.
 *
 * Run: `npm run build && node dist/bench/uplink.js [--devices 100] [--rate 0] [--rounds 3]
 *   [--duration 5] [--warmup 2] [--timeout 10000] [--suite ccm8|cbc] [--publish-topic t]
 *   [--profile]`
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../src/coap/constants.js';
import { cipherSuiteName } from '../src/dtls/constants.js';
import { derivePsk, parseTopicPath, pskUsableOnCommandLine } from '../src/enos/index.js';
import { CoapDtlsClient } from '../src/tools/coap-client.js';
import { generateDevices } from '../src/tools/load.js';
import { UsageError, choiceFlag, numberFlag, parseFlags, stringFlag } from './lib/args.js';
import { SUITES, connect, type Target } from './lib/client.js';
import { perMessage } from './lib/cpu-window.js';
import { commandLine, environment, log, writeResult } from './lib/harness.js';
import { newestProfile, summariseProfile, type ProfileSummary } from './lib/profile.js';
import {
  REPO_ROOT,
  installCleanup,
  startCoapEdge,
  startLibcoap,
  stopAll,
  type ServerProcess,
} from './lib/servers.js';
import { median, ratio, round, sleep } from './lib/stats.js';
import {
  codeName,
  measurepointBody,
  probe,
  runUplinkPhase,
  type UplinkDevice,
  type UplinkPhase,
} from './lib/uplink-load.js';
import { IpcChild, startMosquitto, type Broker } from './lib/uplink-procs.js';

const USAGE = `usage: node dist/bench/uplink.js [options]
  --devices <n>       simulated devices, one DTLS association each (default 100)
  --rate <r>          requests per second per device; 0 = closed loop, one outstanding (default 0)
  --rounds <n>        rounds; each runs the three phases in rotating order (default 3)
  --duration <s>      measured seconds per phase (default 5)
  --warmup <s>        unmeasured seconds of load before each measured window (default 2)
  --timeout <ms>      overall time a request may take, CoAP retransmissions included (default 10000)
  --suite <s>         ccm8 (TLS_PSK_WITH_AES_128_CCM_8, default) or cbc (..._CBC_SHA256)
  --publish-topic <t> path after /topic/sys/{pk}/{dk}/ of the publish-only variant; must be a
                      topic coap-edge publishes without awaiting a reply (default rrpc/response/1)
  --profile           run coap-edge under node --cpu-prof and print its top functions`;

type PhaseName = 'coapEdgeReply' | 'coapEdgePublish' | 'libcoap';
const PHASES: readonly PhaseName[] = ['coapEdgeReply', 'coapEdgePublish', 'libcoap'];
const TAG: Record<PhaseName, string> = { coapEdgeReply: 'a', coapEdgePublish: 'b', libcoap: 'l' };
const PRODUCT_KEY = 'benchPK';
const SEED = 'bench-secret';
const PAUSE_MS = 500;
const CORES = cpus().length;

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

interface PhaseReport {
  readonly messagesPerSec: number | null;
  readonly latency: ReturnType<UplinkPhase['latency']['quantiles']> & { meanMs: number | null };
  /** CPU µs per message by process; `pipeline` = server + mosquitto + platform. */
  readonly cpuUsPerMessage: Record<string, number | null>;
  readonly processes: ReturnType<typeof perMessage>;
  readonly window: Record<string, number | null>;
  readonly messages: number;
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
  readonly delivery?: Delivery;
  readonly platform?: { received: number; replied: number; publishErrors: number };
}

function toDevices(count: number, tail: string, libcoapKey?: Buffer): UplinkDevice[] {
  return generateDevices(count, PRODUCT_KEY, SEED).devices.map((d) => ({
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
  extra: Pick<PhaseReport, 'delivery' | 'platform'>,
): PhaseReport {
  const w = p.window;
  const procs = perMessage(w, p.messages);
  const us = (name: string): number | null => procs[name]?.usPerMessage ?? null;
  const serverUs = us(server.name);
  const pipelineParts = [serverUs, us('mosquitto'), us('platform')].filter(
    (x): x is number => x !== null,
  );
  const cpuUsPerMessage: Record<string, number | null> = {
    server: serverUs,
    serverSystem: procs[server.name]?.systemUsPerMessage ?? null,
    ...(server.name === 'coapEdge'
      ? {
          mosquitto: us('mosquitto'),
          platform: us('platform'),
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
      // tenants, idle servers of the other phase, interrupts not charged to a process
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
    messages: p.messages,
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
      ? `, mosquitto ${c.mosquitto ?? '-'}, platform ${c.platform ?? '-'}, ` +
        `pipeline ${c.pipeline ?? '-'}`
      : '') +
    `, loadgen ${c.loadGen ?? '-'} µs/msg (util ${r.window.loadGenCpuUtilisation}), ` +
    `machine busy ${r.window.machineBusy} (others ${r.window.otherCores} cores), failures ${failures} ${JSON.stringify(r.failures)}` +
    (r.delivery !== undefined
      ? `, delivery acked ${r.delivery.acknowledged} delivered ${r.delivery.delivered} ` +
        `missing ${r.delivery.missing} dup ${r.delivery.duplicates}`
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
  failures: { get: (r) => sum(r.failures), digits: 0, compare: false },
  timeouts: { get: (r) => r.timeouts, digits: 0, compare: false },
  retransmissions: { get: (r) => r.retransmissions, digits: 0, compare: false },
  separateResponses: { get: (r) => r.separateResponses, digits: 0, compare: false },
  serverRssKiB: { get: (r) => r.serverRssKiB, digits: 0, compare: false },
};

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

async function main(): Promise<void> {
  const flags = parseFlags(
    ['devices', 'rate', 'rounds', 'duration', 'warmup', 'timeout', 'suite', 'publish-topic'],
    ['profile'],
  );
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const deviceCount = numberFlag(flags, 'devices', 100, 1, 10_000);
  const rate = numberFlag(flags, 'rate', 0, 0, 10_000, false);
  const rounds = numberFlag(flags, 'rounds', 3, 1, 100);
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

  installCleanup();
  const startedAt = new Date();
  const env = environment();
  log(`uplink: ${commandLine()}`);

  // devices: a generated file for coap-edge; libcoap gets one key for every identity
  const tmp = mkdtempSync(join(tmpdir(), 'coap-edge-uplink-'));
  // also on Ctrl-C, which exits without running the finally below
  const removeTmp = (): void => rmSync(tmp, { recursive: true, force: true });
  process.once('exit', removeTmp);
  const devicesFile = join(tmp, 'devices.json');
  writeFileSync(
    devicesFile,
    `${JSON.stringify(generateDevices(deviceCount, PRODUCT_KEY, SEED), null, 1)}\n`,
  );
  const replyDevices = toDevices(deviceCount, 'thing/measurepoint/post');
  const publishDevices = toDevices(deviceCount, publishTail);
  const keyDevice = replyDevices.findIndex((d) => pskUsableOnCommandLine(d.psk));
  if (keyDevice < 0) throw new Error('no generated device has a PSK without a 0x00 byte');
  const libcoapKey = replyDevices[keyDevice]!.psk;
  const libcoapDevices = toDevices(deviceCount, 'thing/measurepoint/post', libcoapKey);
  const profDir = profiling ? mkdtempSync(join(tmpdir(), 'coap-edge-prof-')) : undefined;

  let broker: Broker | undefined;
  let profile: ProfileSummary | undefined;
  const setup: Record<string, unknown> = {};
  const preflight: Record<string, unknown> = {};
  const results = new Map<PhaseName, PhaseReport[]>(PHASES.map((p) => [p, []]));
  const roundRows: Record<string, unknown>[] = [];
  let compareLibcoap = true;
  let edgeTail = '';
  try {
    broker = await startMosquitto();
    log(`mosquitto: pid ${broker.proc.pid}, ${broker.url} (${broker.version})`);
    const counter = await IpcChild.start('counter', 'uplink-counter', [broker.url, publishTail]);
    const platform = await IpcChild.start('platform', 'uplink-platform', [broker.url]);
    const edge = await startCoapEdge(
      {
        devicesFile,
        cpuProfDir: profDir,
        extraArgs: ['--mqtt-url', broker.url],
      },
      replyDevices[0]!,
    );
    log(`coapEdge: pid ${edge.pid}, ${edge.target.host}:${edge.target.port}`);
    const libcoap = await startLibcoap(libcoapKey, libcoapDevices[0]!, [
      '-d',
      String(deviceCount + 16),
    ]);
    log(`libcoap: pid ${libcoap.pid}, ${libcoap.target.host}:${libcoap.target.port}`);
    setup.coapEdge = { pid: edge.pid, command: edge.command };
    setup.libcoap = { pid: libcoap.pid, command: libcoap.command };
    setup.mosquitto = {
      pid: broker.proc.pid,
      version: broker.version,
      command: broker.proc.command,
      config: broker.config.trim().split('\n'),
    };
    setup.platform = { pid: platform.proc.pid, command: platform.proc.command };
    setup.counter = { pid: counter.proc.pid, command: counter.proc.command };

    // preflight: coap-edge may need a moment for its MQTT pool and first reply subscription
    const body = measurepointBody('pre-0');
    preflight.coapEdgeReply = await probe(
      edge.target,
      replyDevices[0]!,
      suite,
      body,
      Code.CHANGED,
      15_000,
    );
    preflight.coapEdgePublish = await probe(
      edge.target,
      publishDevices[0]!,
      suite,
      measurepointBody('pre-1'),
      Code.CHANGED,
      15_000,
    );
    for (const name of ['coapEdgeReply', 'coapEdgePublish'] as const) {
      const p = preflight[name] as { code: string };
      log(`${name} preflight ${JSON.stringify(preflight[name])}`);
      if (p.code !== '2.04') throw new Error(`coap-edge ${name} preflight answered ${p.code}`);
    }
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
      compareLibcoap = false;
      preflight.libcoap = { error: err instanceof Error ? err.message : String(err) };
      log(`libcoap preflight failed (${String(err)}): measuring coap-edge alone`);
    }
    await counter.request({ type: 'collect', prefix: 'pre-' });

    const edgePids = {
      coapEdge: edge.pid,
      mosquitto: broker.proc.pid,
      platform: platform.proc.pid,
      counter: counter.proc.pid,
    };
    const helpers = [broker.proc, platform.proc, counter.proc];
    for (let r = 0; r < rounds; r++) {
      const order = PHASES.map((_, i) => PHASES[(i + r) % PHASES.length]!).filter(
        (n) => n !== 'libcoap' || compareLibcoap,
      );
      const row: Record<string, unknown> = { round: r + 1, order };
      for (const name of order) {
        const server = name === 'libcoap' ? libcoap : edge;
        for (const s of [server, ...helpers]) {
          if (!s.alive()) throw new Error(`${s.name} exited:\n${s.outputTail()}`);
        }
        const tag = `r${r + 1}${TAG[name]}`;
        const before = name === 'coapEdgeReply' ? await platform.request({ type: 'stats' }) : {};
        const phase = await runUplinkPhase({
          target: server.target,
          devices:
            name === 'coapEdgeReply'
              ? replyDevices
              : name === 'coapEdgePublish'
                ? publishDevices
                : libcoapDevices,
          suite,
          tag,
          warmupMs: warmupS * 1000,
          durationMs: durationS * 1000,
          ratePerDevice: rate,
          requestTimeoutMs: timeoutMs,
          expectedCode: Code.CHANGED,
          expectReply: name === 'coapEdgeReply',
          cpuPids: name === 'libcoap' ? { libcoap: libcoap.pid } : edgePids,
        });
        let extra: Pick<PhaseReport, 'delivery' | 'platform'> = {};
        if (name !== 'libcoap') {
          const delivery = await collectDelivery(counter, `${tag}-`, phase.acknowledgedIds);
          extra = { delivery };
          if (name === 'coapEdgeReply') {
            const after = await platform.request({ type: 'stats' });
            extra = {
              delivery,
              platform: {
                received: num(after, 'received') - num(before, 'received'),
                replied: num(after, 'replied') - num(before, 'replied'),
                publishErrors: num(after, 'publishErrors') - num(before, 'publishErrors'),
              },
            };
          }
        }
        const res = report(phase, server, extra);
        results.get(name)!.push(res);
        row[name] = res;
        log(`round ${r + 1}/${rounds} ${name.padEnd(15)} ${describe(res)}`);
        await sleep(PAUSE_MS);
      }
      if (compareLibcoap) {
        const lib = row.libcoap as PhaseReport;
        row.ratioToLibcoap = Object.fromEntries(
          (['coapEdgeReply', 'coapEdgePublish'] as const).map((v) => [
            v,
            Object.fromEntries(
              Object.entries(METRICS)
                .filter(([, m]) => m.compare)
                .map(([k, m]) => [k, round(ratio(m.get(row[v] as PhaseReport), m.get(lib)), 3)]),
            ),
          ]),
        );
      }
      roundRows.push(row);
    }
    edgeTail = edge.outputTail().trim();
  } finally {
    await stopAll();
    broker?.cleanup();
    removeTmp();
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
  for (const name of PHASES) {
    const rs = results.get(name)!;
    if (rs.length === 0) continue;
    medians[name] = Object.fromEntries(
      Object.entries(METRICS).map(([k, m]) => [k, round(median(rs.map(m.get)), m.digits)]),
    );
  }
  const ratios = compareLibcoap
    ? Object.fromEntries(
        (['coapEdgeReply', 'coapEdgePublish'] as const).map((v) => [
          v,
          Object.fromEntries(
            Object.entries(METRICS)
              .filter(([, m]) => m.compare)
              .map(([k]) => [
                k,
                round(
                  median(
                    roundRows.map(
                      (row) =>
                        (row.ratioToLibcoap as Record<string, Record<string, number | null>>)[v]?.[
                          k
                        ] ?? null,
                    ),
                  ),
                  3,
                ),
              ]),
          ),
        ]),
      )
    : null;
  const delivery = Object.fromEntries(
    (['coapEdgeReply', 'coapEdgePublish'] as const).map((v) => {
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

  const result = {
    bench: 'uplink',
    description:
      'N devices (own DTLS 1.2 PSK association each) POST an EnOS measurepoint body, one ' +
      'request outstanding per device (or a fixed rate); coap-edge publishes it to Mosquitto ' +
      'with QoS 1 and answers 2.04 after the PUBACK (and, in the reply variant, after the ' +
      "platform's reply), side by side with libcoap answering the same POST without a backend",
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    environment: { ...env, mosquitto: broker?.version ?? 'unknown', mqttJs: mqttJsVersion() },
    parameters: {
      devices: deviceCount,
      mode: rate > 0 ? `fixed rate ${rate}/s per device` : 'closed loop, one outstanding',
      ratePerDevice: rate,
      rounds,
      durationS,
      warmupS,
      requestTimeoutMs: timeoutMs,
      suite: cipherSuiteName.get(suite) ?? suite,
      identity: `${PRODUCT_KEY},dev000000..,2,86400 (generated, seed ${SEED})`,
      requestBody: measurepointBody('r1a-0').toString('utf8'),
      requestBodyBytes: measurepointBody('r1a-0').length,
      profiled: profiling,
      publishTopic: publishTail,
    },
    phases: {
      coapEdgeReply:
        'publish + reply: CON POST /topic/sys/{pk}/{dk}/thing/measurepoint/post → coap-edge ' +
        'publishes QoS 1 on /sys/{pk}/{dk}/thing/measurepoint/post (PUBACK awaited), the ' +
        'platform stand-in replies on ..._reply, coap-edge answers 2.04 with the reply',
      coapEdgePublish:
        `publish only: CON POST /topic/sys/{pk}/{dk}/${publishTail} (router class ` +
        `${publishClass.topic.class}) → coap-edge publishes QoS 1 on ` +
        `/sys/{pk}/{dk}/${publishTail} and answers 2.04 on the PUBACK, no reply awaited`,
      libcoap:
        'libcoap DTLS+CoAP without backend: coap-server-openssl -d <devices+16> answers the ' +
        'same CON POST /topic/sys/{pk}/{dk}/thing/measurepoint/post with 2.04 by updating a ' +
        'dynamic in-memory resource (created with 2.01 by one POST per path before the ' +
        'rounds); -k gives one PSK for every identity, so its devices use that key',
    },
    setup,
    preflight,
    units: {
      messagesPerSec: 'answers with 2.04 per second of the measured window',
      latency: 'request sent to 2.04 received, ms, nearest-rank percentiles (window)',
      cpuUsPerMessage:
        'utime+stime (/proc/<pid>/stat) over the window / 2.04 answers in it; server = ' +
        'coap-edge or libcoap, pipeline = server + mosquitto + platform stand-in (the ' +
        'counting subscriber and the load generator are not part of it)',
      failures: 'whole phase: non-2.04 answers by code, errors by kind (COAP_TIMEOUT, ...)',
      delivery:
        'whole phase: ids answered 2.04 vs ids the /sys/# subscriber received; missing must be 0',
    },
    summary: {
      medians,
      ratios,
      ratioDefinition:
        'median over rounds of (coap-edge variant / libcoap) in the same round; > 1 means ' +
        'coap-edge has the larger value (better for messages/s, worse for CPU and latency)',
      delivery,
    },
    rounds: roundRows,
    ...(profile !== undefined ? { coapEdgeProfile: profile } : {}),
    ...(edgeTail !== '' ? { coapEdgeOutputTail: edgeTail.slice(-2000) } : {}),
    notes: [
      'loopback on one machine: the load generator, coap-edge, Mosquitto, the platform ' +
        'stand-in, the counting subscriber and libcoap share the same cores, so CPU per ' +
        'message is the primary figure and messages/s is bounded by whichever process ' +
        'saturates first (see window.machineBusy and loadGenCpuUtilisation)',
      'libcoap does no backend work at all: the coap-edge / libcoap ratio is the price of the ' +
        'MQTT bridge plus any CoAP/DTLS difference (see bench/dtls-records for the latter)',
      'the counting subscriber on /sys/# also receives the platform replies in the reply ' +
        'variant, which adds to Mosquitto work (fan-out) in that variant',
      ...(compareLibcoap ? [] : ['libcoap failed its preflight: only coap-edge was measured']),
      ...(profiling
        ? ['coap-edge ran under node --cpu-prof: its CPU figures include profiler overhead']
        : []),
    ],
  };
  const file = writeResult('uplink', startedAt, result);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  log(`written to ${file}`);
}

main().catch((err: unknown) => {
  if (err instanceof UsageError) {
    process.stderr.write(`${err.message}\n${USAGE}\n`);
    process.exit(2);
  }
  process.stderr.write(
    `uplink: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
