/**
 * Sizing benchmark: memory per DTLS association, CPU per handshake, CPU per first
 * request and idle CPU of one coap-edge process, for docs/operations.md.
 *
 * For each level N (default 1000, 5000, 10000) a fresh coap-edge runs in-process in a child
 * started with `node --expose-gc` (lib/memory-server.ts: `Gateway.start`, bridge mode to a
 * Mosquitto of its own, a platform stand-in answering measurepoint posts), so the levels do
 * not share state. Per level:
 * 1. warm-up: W associations (default 100) post a few measurepoints each and stay open (JIT,
 *    pools, lazily built structures); they are part of every later sample, N is counted on top;
 * 2. `baseline`: heap after `gc()` (over IPC), RSS; then (after `--settle` s) an idle window
 *    (`--idle` s);
 * 3. handshakes: N more devices connect (full DTLS 1.2 PSK handshakes, `--concurrency` at a
 *    time) — CPU per handshake of coap-edge (/proc/<pid>/stat over that window);
 * 4. `afterHandshakes`: heap after gc, RSS;
 * 5. requests: each new association sends one request (`--request reply`: CON POST
 *    measurepoint, published QoS 1 and answered with the platform reply; `publish`: CON POST
 *    rrpc/response/1, published, no reply; `none`: skipped) — CPU per (first) request;
 * 6. `afterRequests`: heap after gc, RSS; then (after `--settle` s) an idle window with
 *    N + W associations.
 * Bytes per association = (sample − baseline) / N, for heapUsed, external and RSS.
 *
 * One JSON object on stdout, progress on stderr, a copy in bench/results/memory-<timestamp>.json.
 *
 * Run: `npm run build && node dist/bench/memory.js [--levels 1000,5000,10000] [--request
 *   reply|publish|none] [--mode bridge|per-device] [--warmup-associations 100]
 *   [--concurrency 32] [--idle 10] [--settle 1] [--rounds 1] [--suite ccm8|cbc]`
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ContentFormat } from '../src/coap/constants.js';
import { cipherSuiteName } from '../src/dtls/constants.js';
import { derivePsk } from '../src/enos/index.js';
import { CoapClientError, CoapDtlsClient } from '../src/tools/coap-client.js';
import { generateDevices } from '../src/tools/load.js';
import {
  UsageError,
  choiceFlag,
  runScript,
  numberFlag,
  parseFlags,
  stringFlag,
} from './lib/args.js';
import { SUITES, connect, failureName, type Target } from './lib/client.js';
import { openMultiWindow, type MultiWindow } from './lib/cpu-window.js';
import { commandLine, environment, log, writeResult } from './lib/harness.js';
import { startMosquittoWithPasswords } from './lib/mosquitto-auth.js';
import { installCleanup, spawnHelper, stopAll, type HelperProcess } from './lib/servers.js';
import { Samples, increment, median, round, sleep } from './lib/stats.js';
import { codeName, measurepointBody } from './lib/uplink-load.js';
import { IpcChild, startMosquitto, type Broker } from './lib/uplink-procs.js';

const USAGE = `usage: node dist/bench/memory.js [options]
  --levels <list>              association counts, each in a fresh coap-edge (default 1000,5000,10000)
  --request <r>                reply (measurepoint post + platform reply, default), publish
                               (rrpc/response/1, no reply) or none (handshakes only)
  --mode <m>                   bridge (default) or per-device (one MQTT connection per device,
                               template login against a Mosquitto password file)
  --warmup-associations <n>    associations made (and kept) before the baseline (default 100)
  --concurrency <n>            handshakes / requests in flight at once (default 32)
  --idle <s>                   idle window at the baseline and after the requests (default 10)
  --settle <s>                 pause before each memory sample and idle window (default 1)
  --rounds <n>                 repeat all levels (order reversed every other round; default 1)
  --suite <s>                  ccm8 (default) or cbc`;

const PRODUCT_KEY = 'memPK';
const SEED = 'bench-secret';
const HOST = '127.0.0.1';
const SERVER_SCRIPT = fileURLToPath(new URL('./lib/memory-server.js', import.meta.url));

interface Device {
  readonly identity: string;
  readonly psk: Buffer;
  readonly replyPath: string;
  readonly publishPath: string;
}

interface MemSample {
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
  readonly arrayBuffers: number;
  readonly rss: number;
  readonly vmHwmKiB: number | null;
  readonly associations: number;
  readonly handshakesInProgress: number;
  /** Seconds since the level's server was ready. */
  readonly atS: number;
}

/** The in-process coap-edge child (`node --expose-gc memory-server.js`). */
class MemoryServer {
  private seq = 0;
  private readonly waiting = new Map<number, (m: Record<string, unknown>) => void>();

  private constructor(
    readonly proc: HelperProcess,
    readonly target: Target,
    readonly startedAt: number,
  ) {
    proc.child.on('message', (m: Record<string, unknown>) => {
      const seq = typeof m.seq === 'number' ? m.seq : undefined;
      const w = seq !== undefined ? this.waiting.get(seq) : undefined;
      if (w !== undefined && seq !== undefined) {
        this.waiting.delete(seq);
        w(m);
      }
    });
  }

  static async start(settings: Record<string, string>): Promise<MemoryServer> {
    const proc = spawnHelper(
      'coapEdge',
      process.execPath,
      ['--expose-gc', SERVER_SCRIPT, JSON.stringify(settings)],
      true,
    );
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('memory-server not ready')), 20_000);
      proc.child.on('message', (m: { type?: unknown; dtlsPort?: unknown }) => {
        if (m.type === 'ready' && typeof m.dtlsPort === 'number') {
          clearTimeout(timer);
          resolve(m.dtlsPort);
        }
      });
      proc.child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`memory-server exited (${code}):\n${proc.outputTail()}`));
      });
    }).catch(async (err: unknown) => {
      await proc.stop(1000);
      throw err;
    });
    return new MemoryServer(proc, { host: HOST, port }, performance.now());
  }

  request(message: Record<string, unknown>, timeoutMs = 60_000): Promise<Record<string, unknown>> {
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(seq);
        reject(new Error(`memory-server: no answer to ${String(message.type)}`));
      }, timeoutMs);
      this.waiting.set(seq, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.proc.child.send({ ...message, seq });
    });
  }

  async mem(): Promise<MemSample> {
    const m = await this.request({ type: 'mem', gc: true });
    const u = m.memoryUsage as Record<string, number>;
    const n = (k: string): number => (typeof m[k] === 'number' ? m[k] : 0);
    return {
      heapUsed: u.heapUsed ?? 0,
      heapTotal: u.heapTotal ?? 0,
      external: u.external ?? 0,
      arrayBuffers: u.arrayBuffers ?? 0,
      rss: (typeof m.vmRssKiB === 'number' ? m.vmRssKiB * 1024 : undefined) ?? u.rss ?? 0,
      vmHwmKiB: typeof m.vmHwmKiB === 'number' ? m.vmHwmKiB : null,
      associations: n('associations'),
      handshakesInProgress: n('handshakesInProgress'),
      atS: round((performance.now() - this.startedAt) / 1000, 1) ?? 0,
    };
  }

  async stop(): Promise<void> {
    if (this.proc.alive()) {
      await this.request({ type: 'stop' }, 15_000).catch(() => undefined);
    }
    await this.proc.stop(3000);
  }
}

interface Established {
  readonly client: CoapDtlsClient;
  readonly device: Device;
}

/** Runs `work(i)` for i in [0, n) with at most `concurrency` at once. */
async function pool(
  n: number,
  concurrency: number,
  work: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) await work(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, () => worker()));
}

interface HandshakeResult {
  readonly established: Established[];
  readonly failures: Record<string, number>;
  readonly latency: Samples;
}

async function establish(
  target: Target,
  devices: readonly Device[],
  suite: number,
  concurrency: number,
): Promise<HandshakeResult> {
  const established: Established[] = [];
  const failures: Record<string, number> = {};
  const latency = new Samples();
  await pool(devices.length, concurrency, async (i) => {
    const device = devices[i]!;
    const t0 = performance.now();
    try {
      const dtls = await connect(target, device, { suite, handshakeTimeoutMs: 30_000 });
      latency.push(performance.now() - t0);
      established.push({ client: CoapDtlsClient.over(dtls), device });
    } catch (err) {
      increment(failures, failureName(err));
    }
  });
  return { established, failures, latency };
}

interface RequestResult {
  readonly codes: Record<string, number>;
  readonly failures: Record<string, number>;
  readonly latency: Samples;
  readonly ok: number;
}

async function sendOne(
  list: readonly Established[],
  request: 'reply' | 'publish',
  concurrency: number,
  tag: string,
  perDevice = 1,
): Promise<RequestResult> {
  const codes: Record<string, number> = {};
  const failures: Record<string, number> = {};
  const latency = new Samples();
  let ok = 0;
  let seq = 0;
  await pool(list.length, concurrency, async (i) => {
    const { client, device } = list[i]!;
    for (let k = 0; k < perDevice; k++) {
      const t0 = performance.now();
      try {
        const r = await client.request({
          method: 'POST',
          path: request === 'reply' ? device.replyPath : device.publishPath,
          payload: measurepointBody(`${tag}-${seq++}`),
          contentFormat: ContentFormat.JSON,
          timeoutMs: 30_000,
          followBlocks: false,
        });
        const c = codeName(r.code);
        increment(codes, c);
        if (c === '2.04') {
          ok++;
          latency.push(performance.now() - t0);
        }
      } catch (err) {
        increment(failures, err instanceof CoapClientError ? err.code : failureName(err));
      }
    }
  });
  return { codes, failures, latency, ok };
}

function cpuOf(
  w: MultiWindow,
  name: string,
): { us: number; systemUs: number; ticks: number; schedUs: number | null } {
  const p = w.processes[name];
  return {
    us: p?.us ?? 0,
    systemUs: p?.systemUs ?? 0,
    ticks: p?.ticks ?? 0,
    schedUs: p?.schedUs ?? null,
  };
}

function per(x: number, n: number, digits = 1): number | null {
  return n > 0 ? round(x / n, digits) : null;
}

function memReport(s: MemSample): Record<string, number | null> {
  return {
    heapUsed: s.heapUsed,
    heapTotal: s.heapTotal,
    external: s.external,
    arrayBuffers: s.arrayBuffers,
    rss: s.rss,
    vmHwmKiB: s.vmHwmKiB,
    associations: s.associations,
    handshakesInProgress: s.handshakesInProgress,
    atS: s.atS,
  };
}

function perAssociation(s: MemSample, base: MemSample, n: number): Record<string, number | null> {
  return {
    heapUsedBytes: per(s.heapUsed - base.heapUsed, n, 0),
    externalBytes: per(s.external - base.external, n, 0),
    heapUsedPlusExternalBytes: per(s.heapUsed + s.external - base.heapUsed - base.external, n, 0),
    rssBytes: per(s.rss - base.rss, n, 0),
  };
}

/**
 * Idle CPU: from the per-thread schedstat sums (ns resolution) when readable — an idle
 * process uses a few ticks in ten seconds, too few for /proc/<pid>/stat — else from ticks.
 */
function idleReport(w: MultiWindow, associations: number): Record<string, number | string | null> {
  const edge = cpuOf(w, 'coapEdge');
  const mosquitto = cpuOf(w, 'mosquitto');
  const seconds = w.wallMs / 1000;
  const us = edge.schedUs ?? edge.us;
  return {
    wallMs: round(w.wallMs, 0),
    associations,
    source: edge.schedUs !== null ? 'schedstat' : 'stat ticks',
    coapEdgeTicks: edge.ticks,
    coapEdgeCpuUsPerSecond: per(us, seconds, 0),
    coapEdgeUtilisation: round(us / 1000 / w.wallMs, 4),
    coapEdgeCpuUsPerSecondPer1kAssociations:
      associations > 0 ? round(us / seconds / (associations / 1000), 1) : null,
    mosquittoCpuUsPerSecond: per(mosquitto.schedUs ?? mosquitto.us, seconds, 0),
    machineBusy: round(w.machineBusy, 3),
  };
}

async function idleWindow(pids: Record<string, number>, seconds: number): Promise<MultiWindow> {
  const close = openMultiWindow(pids);
  await sleep(seconds * 1000);
  return close();
}

interface LevelOptions {
  readonly level: number;
  readonly round: number;
  readonly devices: readonly Device[];
  readonly warmupCount: number;
  readonly settings: Record<string, string>;
  readonly helperPids: Record<string, number>;
  readonly suite: number;
  readonly concurrency: number;
  readonly request: 'reply' | 'publish' | 'none';
  readonly idleS: number;
  readonly settleS: number;
}

async function runLevel(o: LevelOptions): Promise<Record<string, unknown>> {
  const server = await MemoryServer.start(o.settings);
  const clients: Established[] = [];
  try {
    const pids = { coapEdge: server.proc.pid, ...o.helperPids };
    const check = (): void => {
      if (!server.proc.alive()) throw new Error(`coap-edge exited:\n${server.proc.outputTail()}`);
    };
    const started = await server.mem();
    // 1. warm-up associations, kept open
    const warm = await establish(
      server.target,
      o.devices.slice(0, o.warmupCount),
      o.suite,
      o.concurrency,
    );
    clients.push(...warm.established);
    const warmRequests =
      o.request === 'none'
        ? undefined
        : await sendOne(warm.established, o.request, o.concurrency, `w${o.round}-${o.level}`, 5);
    check();
    // 2. baseline
    await sleep(o.settleS * 1000);
    const baseline = await server.mem();
    // background work the forced collections started (sweeping, compaction) ends first
    await sleep(o.settleS * 1000);
    const idleBefore = await idleWindow(pids, o.idleS);
    // 3. handshakes
    const hsClose = openMultiWindow(pids);
    const hs = await establish(
      server.target,
      o.devices.slice(o.warmupCount, o.warmupCount + o.level),
      o.suite,
      o.concurrency,
    );
    const hsWindow = hsClose();
    clients.push(...hs.established);
    check();
    const n = hs.established.length;
    // 4. after the handshakes
    await sleep(o.settleS * 1000);
    const afterHandshakes = await server.mem();
    // 5. one request per new association
    let requests: Record<string, unknown> | undefined;
    let afterRequests: MemSample | undefined;
    if (o.request !== 'none') {
      const rqClose = openMultiWindow(pids);
      const rq = await sendOne(hs.established, o.request, o.concurrency, `m${o.round}-${o.level}`);
      const w = rqClose();
      check();
      const edge = cpuOf(w, 'coapEdge');
      requests = {
        sent: n,
        answered2_04: rq.ok,
        codes: rq.codes,
        failures: rq.failures,
        perSec: round((rq.ok * 1000) / w.wallMs, 1),
        cpuUsPerRequest: {
          coapEdge: per(edge.us, rq.ok),
          coapEdgeSystem: per(edge.systemUs, rq.ok),
          mosquitto: per(cpuOf(w, 'mosquitto').us, rq.ok),
          platform: per(cpuOf(w, 'platform').us, rq.ok),
          loadGen: per(w.loadGenCpuUs, rq.ok),
        },
        coapEdgeTicks: edge.ticks,
        latency: rq.latency.summary(),
        window: {
          wallMs: round(w.wallMs, 0),
          coapEdgeUtilisation: round(edge.us / 1000 / w.wallMs, 3),
          loadGenCpuUtilisation: round(w.loadGenCpuUtilisation, 3),
          machineBusy: round(w.machineBusy, 3),
        },
      };
      // 6. after the requests
      await sleep(o.settleS * 1000);
      afterRequests = await server.mem();
    }
    await sleep(o.settleS * 1000);
    const idleAfter = await idleWindow(pids, o.idleS);
    check();
    const last = afterRequests ?? afterHandshakes;
    const edge = cpuOf(hsWindow, 'coapEdge');
    const hsCount = hs.established.length;
    return {
      level: o.level,
      round: o.round,
      pid: server.proc.pid,
      associationsEstablished: n,
      warmup: {
        associations: warm.established.length,
        failures: warm.failures,
        requestCodes: warmRequests?.codes ?? null,
        requestFailures: warmRequests?.failures ?? null,
      },
      memory: {
        started: memReport(started),
        baseline: memReport(baseline),
        afterHandshakes: memReport(afterHandshakes),
        ...(afterRequests !== undefined ? { afterRequests: memReport(afterRequests) } : {}),
      },
      bytesPerAssociation: {
        afterHandshakes: perAssociation(afterHandshakes, baseline, n),
        ...(afterRequests !== undefined
          ? { afterRequests: perAssociation(afterRequests, baseline, n) }
          : {}),
      },
      handshakes: {
        completed: hsCount,
        failures: hs.failures,
        perSec: round((hsCount * 1000) / hsWindow.wallMs, 1),
        cpuUsPerHandshake: {
          coapEdge: per(edge.us, hsCount),
          coapEdgeSystem: per(edge.systemUs, hsCount),
          loadGen: per(hsWindow.loadGenCpuUs, hsCount),
        },
        coapEdgeTicks: edge.ticks,
        latency: hs.latency.summary(),
        window: {
          wallMs: round(hsWindow.wallMs, 0),
          coapEdgeUtilisation: round(edge.us / 1000 / hsWindow.wallMs, 3),
          loadGenCpuUtilisation: round(hsWindow.loadGenCpuUtilisation, 3),
          machineBusy: round(hsWindow.machineBusy, 3),
        },
      },
      ...(requests !== undefined ? { requests } : {}),
      idle: {
        baseline: idleReport(idleBefore, baseline.associations),
        loaded: idleReport(idleAfter, last.associations),
      },
    };
  } finally {
    // the server's close sends close_notify to every peer; then the client sockets go
    await server.stop();
    await pool(clients.length, 256, async (i) => {
      await clients[i]!.client.close().catch(() => undefined);
    });
  }
}

type Row = Record<string, unknown>;
const at = (row: Row, path: readonly string[]): number | null => {
  let v: unknown = row;
  for (const k of path) v = (v as Record<string, unknown> | undefined)?.[k];
  return typeof v === 'number' ? v : null;
};

async function main(): Promise<void> {
  const flags = parseFlags(
    [
      'levels',
      'request',
      'mode',
      'warmup-associations',
      'concurrency',
      'idle',
      'settle',
      'rounds',
      'suite',
    ],
    [],
  );
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const levels = stringFlag(flags, 'levels', '1000,5000,10000')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 1 || n > 100_000) {
        throw new UsageError('--levels: integers from 1 to 100000, comma-separated');
      }
      return n;
    });
  if (levels.length === 0) throw new UsageError('--levels: none given');
  const request = choiceFlag(flags, 'request', ['reply', 'publish', 'none'], 'reply');
  const mode = choiceFlag(flags, 'mode', ['bridge', 'per-device'], 'bridge');
  const warmupCount = numberFlag(flags, 'warmup-associations', 100, 1, 10_000);
  const concurrency = numberFlag(flags, 'concurrency', 32, 1, 1024);
  const idleS = numberFlag(flags, 'idle', 10, 1, 600, false);
  const settleS = numberFlag(flags, 'settle', 1, 0, 60, false);
  const rounds = numberFlag(flags, 'rounds', 1, 1, 20);
  const suite = SUITES[choiceFlag(flags, 'suite', ['ccm8', 'cbc'], 'ccm8')];

  installCleanup();
  const startedAt = new Date();
  const env = environment();
  log(`memory: ${commandLine()}`);
  const clearedEnv = Object.keys(process.env).filter((k) => k.startsWith('OTEL_'));
  for (const k of clearedEnv) delete process.env[k];

  const total = warmupCount + Math.max(...levels);
  const generated = generateDevices(total, PRODUCT_KEY, SEED);
  const devices: Device[] = generated.devices.map((d) => ({
    identity: `${d.productKey},${d.deviceKey},2,86400`,
    psk: derivePsk(d.deviceSecret),
    replyPath: `/topic/sys/${d.productKey}/${d.deviceKey}/thing/measurepoint/post`,
    publishPath: `/topic/sys/${d.productKey}/${d.deviceKey}/rrpc/response/1`,
  }));
  const tmp = mkdtempSync(join(tmpdir(), 'coap-edge-memory-'));
  const removeTmp = (): void => rmSync(tmp, { recursive: true, force: true });
  process.once('exit', removeTmp);
  const devicesFile = join(tmp, 'devices.json');
  writeFileSync(devicesFile, `${JSON.stringify(generated, null, 1)}\n`);

  let broker: Broker | undefined;
  const rows: Row[] = [];
  const setup: Record<string, unknown> = {};
  try {
    if (mode === 'per-device') {
      const b = await startMosquittoWithPasswords(
        generated.devices.map((d) => ({
          username: `${d.deviceKey}&${d.productKey}`,
          password: d.deviceSecret,
        })),
      );
      broker = b;
      setup.mosquittoPasswordFile = b.passwordFile;
    } else {
      broker = await startMosquitto();
    }
    log(`mosquitto: pid ${broker.proc.pid}, ${broker.url} (${broker.version})`);
    const platform = await IpcChild.start('platform', 'uplink-platform', [broker.url]);
    const settings: Record<string, string> = {
      bind: HOST,
      dtlsPort: '0',
      devices: devicesFile,
      logLevel: 'warn',
      mqttUrl: broker.url,
      ...(mode === 'per-device'
        ? {
            mqttMode: 'per-device',
            mqttDeviceAuth: 'template',
            mqttDeviceUsername: '{dk}&{pk}',
            mqttDevicePassword: '{secret}',
            deviceConnectRate: String(Math.max(1000, 4 * concurrency)),
            maxDeviceSessions: String(Math.max(10_000, total + 64)),
          }
        : {}),
    };
    setup.coapEdge = {
      command: `node --expose-gc ${SERVER_SCRIPT} '<settings>'`,
      settings,
    };
    setup.mosquitto = {
      pid: broker.proc.pid,
      version: broker.version,
      config: broker.config.trim().split('\n'),
    };
    setup.platform = { pid: platform.proc.pid, command: platform.proc.command };
    if (clearedEnv.length > 0) setup.clearedEnvironment = clearedEnv;
    const helperPids = { mosquitto: broker.proc.pid, platform: platform.proc.pid };
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? levels : [...levels].reverse();
      for (const level of order) {
        if (!broker.proc.alive()) throw new Error(`mosquitto exited:\n${broker.proc.outputTail()}`);
        log(`round ${r + 1}/${rounds} level ${level}: starting coap-edge`);
        const row = await runLevel({
          level,
          round: r + 1,
          devices,
          warmupCount,
          settings,
          helperPids,
          suite,
          concurrency,
          request,
          idleS,
          settleS,
        });
        rows.push(row);
        const b = row.bytesPerAssociation as Record<string, Record<string, number | null>>;
        const hs = row.handshakes as Record<string, unknown>;
        const rq = row.requests as Record<string, unknown> | undefined;
        const idle = row.idle as Record<string, Record<string, number | string | null>>;
        log(
          `  ${level} associations: heap ${b.afterHandshakes?.heapUsedBytes} B/assoc after ` +
            `handshakes, ${b.afterRequests?.heapUsedBytes ?? '-'} after requests; RSS ` +
            `${b.afterHandshakes?.rssBytes} / ${b.afterRequests?.rssBytes ?? '-'} B/assoc; ` +
            `handshakes ${String(hs.perSec)}/s, ${JSON.stringify(hs.cpuUsPerHandshake)} µs each, ` +
            `failures ${JSON.stringify(hs.failures)}` +
            (rq !== undefined
              ? `; requests ${String(rq.perSec)}/s, ${JSON.stringify(rq.cpuUsPerRequest)} µs ` +
                `each, codes ${JSON.stringify(rq.codes)} failures ${JSON.stringify(rq.failures)}`
              : '') +
            `; idle ${String(idle.baseline?.coapEdgeCpuUsPerSecond)} → ` +
            `${String(idle.loaded?.coapEdgeCpuUsPerSecond)} µs/s`,
        );
      }
    }
  } finally {
    await stopAll();
    broker?.cleanup();
    removeTmp();
  }

  const byLevel = Object.fromEntries(
    levels.map((level) => {
      const rs = rows.filter((r) => r.level === level);
      const m = (path: readonly string[], digits = 1): number | null =>
        round(median(rs.map((r) => at(r, path))), digits);
      return [
        level,
        {
          heapUsedBytesPerAssociation: {
            afterHandshakes: m(['bytesPerAssociation', 'afterHandshakes', 'heapUsedBytes'], 0),
            afterRequests: m(['bytesPerAssociation', 'afterRequests', 'heapUsedBytes'], 0),
          },
          heapUsedPlusExternalBytesPerAssociation: {
            afterHandshakes: m(
              ['bytesPerAssociation', 'afterHandshakes', 'heapUsedPlusExternalBytes'],
              0,
            ),
            afterRequests: m(
              ['bytesPerAssociation', 'afterRequests', 'heapUsedPlusExternalBytes'],
              0,
            ),
          },
          rssBytesPerAssociation: {
            afterHandshakes: m(['bytesPerAssociation', 'afterHandshakes', 'rssBytes'], 0),
            afterRequests: m(['bytesPerAssociation', 'afterRequests', 'rssBytes'], 0),
          },
          rssMiB: {
            baseline: round((m(['memory', 'baseline', 'rss'], 0) ?? 0) / 1048576, 1),
            afterRequests: round(
              (m(['memory', 'afterRequests', 'rss'], 0) ??
                m(['memory', 'afterHandshakes', 'rss'], 0) ??
                0) / 1048576,
              1,
            ),
          },
          coapEdgeCpuUsPerHandshake: m(['handshakes', 'cpuUsPerHandshake', 'coapEdge']),
          handshakesPerSec: m(['handshakes', 'perSec']),
          coapEdgeCpuUsPerFirstRequest: m(['requests', 'cpuUsPerRequest', 'coapEdge']),
          mosquittoCpuUsPerFirstRequest: m(['requests', 'cpuUsPerRequest', 'mosquitto']),
          idleCoapEdgeCpuUsPerSecond: {
            baseline: m(['idle', 'baseline', 'coapEdgeCpuUsPerSecond'], 0),
            loaded: m(['idle', 'loaded', 'coapEdgeCpuUsPerSecond'], 0),
          },
        },
      ];
    }),
  );
  // marginal cost between consecutive levels (each against its own baseline)
  const marginal: Record<string, unknown>[] = [];
  for (let i = 1; i < levels.length; i++) {
    const a = levels[i - 1]!;
    const b = levels[i]!;
    const levelMedian = (level: number, sample: string, key: string): number | null =>
      median(rows.filter((r) => r.level === level).map((r) => at(r, ['memory', sample, key])));
    const d = (sample: string, key: string): number | null => {
      const ma = levelMedian(a, sample, key);
      const mb = levelMedian(b, sample, key);
      const ba = levelMedian(a, 'baseline', key);
      const bb = levelMedian(b, 'baseline', key);
      if (ma === null || mb === null || ba === null || bb === null || b === a) return null;
      return round((mb - bb - (ma - ba)) / (b - a), 0);
    };
    marginal.push({
      from: a,
      to: b,
      heapUsedBytesPerAssociation: {
        afterHandshakes: d('afterHandshakes', 'heapUsed'),
        afterRequests: d('afterRequests', 'heapUsed'),
      },
      rssBytesPerAssociation: {
        afterHandshakes: d('afterHandshakes', 'rss'),
        afterRequests: d('afterRequests', 'rss'),
      },
    });
  }

  const result = {
    bench: 'memory',
    description:
      'memory per DTLS association of one coap-edge process (heapUsed after gc(), external, ' +
      'RSS; each level in a fresh process, Δ to its own baseline / N), CPU per full handshake, ' +
      'CPU per first request and idle CPU, for sizing',
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    environment: { ...env, mosquitto: broker?.version ?? 'unknown' },
    parameters: {
      levels,
      rounds,
      request,
      mode,
      warmupAssociations: warmupCount,
      concurrency,
      idleS,
      settleS,
      suite: cipherSuiteName.get(suite) ?? suite,
      identity: `${PRODUCT_KEY},dev000000..,2,86400 (generated, seed ${SEED})`,
    },
    setup,
    units: {
      bytesPerAssociation:
        '(sample − baseline) / N: heapUsed after 3 × gc() in the server process ' +
        '(process.memoryUsage), external (Buffers and other memory outside the V8 heap), ' +
        'heapUsed + external, and RSS (VmRSS of /proc/<pid>/status)',
      marginal:
        'between two levels, each measured against its own baseline: (Δ(N2) − Δ(N1)) / (N2 − N1)',
      cpuUsPerHandshake:
        'utime+stime (/proc/<pid>/stat) of coap-edge over the handshake window / handshakes ' +
        'completed in it (HelloVerifyRequest round trip included)',
      cpuUsPerRequest:
        'the same over the request window / 2.04 answers: the first request of each ' +
        'association (reply variant: includes the reply-topic SUBSCRIBE of each device)',
      idle:
        'coap-edge CPU µs per wall second over --idle seconds without traffic (per-thread ' +
        'schedstat sums, ns resolution; ticks alongside)',
    },
    summary: { byLevel, marginal },
    levels: rows,
    notes: [
      'each level runs in a fresh coap-edge (node --expose-gc, Gateway.start in-process, no ' +
        'tracing); the warm-up associations stay open and are in the baseline, N counts only ' +
        'the associations added after it',
      'RSS rarely shrinks after a gc and includes allocator slack; heapUsed after gc() is the ' +
        'live JavaScript state. Buffers of the association (keys, record windows) are in external',
      request === 'reply'
        ? 'afterRequests includes the reply-topic subscription each device’s request leaves ' +
          'behind (bridge mode keeps it 60 s after its last use), the secret cache entry, ' +
          'presence (online) and CoAP deduplication state (exchange lifetime 247 s)'
        : request === 'publish'
          ? 'afterRequests includes presence (online), secret cache and CoAP deduplication state'
          : 'no requests: association state only',
      'the load generator (all client associations, one UDP socket each) shares the 2 cores: ' +
        'handshakes/s and requests/s are bounded by it too; CPU per operation is the figure',
      ...(mode === 'per-device'
        ? [
            'per-device mode: each first request opens the device’s own MQTT connection ' +
              '(connect, password check at Mosquitto, command-topic and reply subscriptions)',
          ]
        : []),
    ],
  };
  const file = writeResult('memory', startedAt, result);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  log(`written to ${file}`);
}

runScript('memory', USAGE, main);
