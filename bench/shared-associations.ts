/**
 * Shared DTLS associations (docs/design.md, "Shared associations"): what sharing costs and
 * what it keeps, in one run.
 *
 * 1. Uplink CPU per message of the gateway with sharing off vs on. Three coap-edge processes,
 *    all with the embedded devices file, their own Mosquitto and `--redis-url`: `off`,
 *    `offControl` (the same configuration again, so machine noise shows), `on` (plus
 *    `--association-key`) and `onExact` (sharing with `--association-fence-records 0`: a
 *    Redis write before every record). Each round runs every process once, in rotating order; a phase is
 *    N devices in a closed loop posting to a publish-only topic (answered 2.04 on PUBACK).
 *    CPU = utime + stime of the gateway over the measured window / messages answered.
 *    Ratios on/off and offControl/off per round, medians over rounds.
 * 2. NAT rebinding with CID through the `on` gateway: `coap-edge bench --cid --rebind-every`,
 *    its failed requests and the gateway's completed handshakes during it (from /metrics).
 * 3. Redis footprint: `--store-count` associations made through the `on` gateway (in batches of
 *    at most 200 sockets, closed without close_notify so the stored association stays), then
 *    the count of `<prefix>:assoc:*` keys and MEMORY USAGE of a few of them.
 *
 * Run: `npm run build && node dist/bench/shared-associations.js [--devices 50] [--rounds 3]
 *   [--duration 5] [--warmup 2] [--rebind-devices 50] [--rebind-every 2] [--rebind-duration 10]
 *   [--store-count 1000] [--redis-url redis://127.0.0.1:6379]`
 * One JSON object on stdout, progress on stderr, a copy in bench/results/.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../src/coap/constants.js';
import type { DtlsClient } from '../src/dtls/client.js';
import { derivePsk } from '../src/enos/index.js';
import { generateDevices } from '../src/tools/load.js';
import { numberFlag, parseFlags, runScript, stringFlag } from './lib/args.js';
import { SUITES, connect, failureName, type Credentials } from './lib/client.js';
import { commandLine, environment, log, writeResult } from './lib/harness.js';
import {
  CLI_PATH,
  freeTcpPort,
  installCleanup,
  startCoapEdge,
  stopAll,
  type ServerProcess,
} from './lib/servers.js';
import { median, ratio, round, sleep } from './lib/stats.js';
import { runUplinkPhase, type UplinkDevice } from './lib/uplink-load.js';
import { startMosquitto } from './lib/uplink-procs.js';

const USAGE = `usage: node dist/bench/shared-associations.js [options]
  --devices <n>          uplink devices per phase, one association each (default 50, at most 200)
  --rounds <n>           rounds of the uplink comparison (default 3)
  --duration <s>         measured seconds per uplink phase (default 5)
  --warmup <s>           unmeasured seconds before each window (default 2)
  --rebind-devices <n>   devices of the NAT rebinding run (default 50, at most 200; 0 skips it)
  --rebind-every <s>     seconds between moves of each device (default 2)
  --rebind-duration <s>  measured seconds of the rebinding run (default 10)
  --rate <r>             uplink requests per second per device; 0 = closed loop (default 0)
  --store-count <n>      associations made for the Redis footprint (default 1000; 0 skips it)
  --redis-url <url>      Redis (default redis://127.0.0.1:6379)`;

const PRODUCT_KEY = 'benchShared';
const SEED = 'bench-shared-secret';
const TOPIC_TAIL = 'rrpc/response/1';
const BATCH = 200;

type GatewayName = 'off' | 'offControl' | 'on' | 'onExact';
const GATEWAYS: readonly GatewayName[] = ['off', 'on', 'offControl', 'onExact'];

interface GatewayRun {
  readonly messages: number;
  readonly cpuUsPerMessage: number | null;
  readonly messagesPerSecond: number;
  readonly failures: Record<string, number>;
  readonly setupFailures: Record<string, number>;
  readonly machineBusy: number;
}

function redisCli(url: string, ...args: string[]): string {
  return execFileSync('redis-cli', ['-u', url, ...args], { encoding: 'utf8' });
}

function scanKeys(url: string, pattern: string): string[] {
  return redisCli(url, '--scan', '--pattern', pattern)
    .split('\n')
    .filter((l) => l !== '');
}

async function scrape(port: number): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
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

/** `coap-edge bench --json …` as a child; resolves with its one JSON line. */
function runLoadTool(args: readonly string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, 'bench', ...args, '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
    child.once('exit', (code) => {
      const line = out.trim().split('\n').at(-1) ?? '';
      try {
        resolve(JSON.parse(line) as Record<string, unknown>);
      } catch {
        reject(
          new Error(`coap-edge bench exited ${code}: ${out.slice(-2000)} ${err.slice(-2000)}`),
        );
      }
    });
  });
}

/** Closes the client's socket without close_notify (a device that goes silent). */
function dropSilently(c: DtlsClient): void {
  // The device simply stops talking: the gateway keeps the stored association until its TTL.
  const socket = (c as unknown as { socket: { close(): void } }).socket;
  try {
    socket.close();
  } catch {
    // already closed
  }
}

function localPort(c: DtlsClient): number {
  return (c as unknown as { socket: { address(): { port: number } } }).socket.address().port;
}

async function main(): Promise<void> {
  const flags = parseFlags(
    [
      'devices',
      'rounds',
      'duration',
      'warmup',
      'rebind-devices',
      'rebind-every',
      'rebind-duration',
      'store-count',
      'redis-url',
      'rate',
    ],
    [],
  );
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const deviceCount = numberFlag(flags, 'devices', 50, 1, 200);
  const rounds = numberFlag(flags, 'rounds', 3, 1, 50);
  const durationS = numberFlag(flags, 'duration', 5, 0.5, 60, false);
  const warmupS = numberFlag(flags, 'warmup', 2, 0, 60, false);
  const rebindDevices = numberFlag(flags, 'rebind-devices', 50, 0, 200);
  const rebindEvery = numberFlag(flags, 'rebind-every', 2, 0.5, 60, false);
  const rebindDuration = numberFlag(flags, 'rebind-duration', 10, 1, 60, false);
  const storeCount = numberFlag(flags, 'store-count', 1000, 0, 5000);
  const redisUrl = stringFlag(flags, 'redis-url', 'redis://127.0.0.1:6379');
  const rate = numberFlag(flags, 'rate', 0, 0, 1000, false);

  installCleanup();
  const startedAt = new Date();
  const env = environment();
  log(`shared-associations: ${commandLine()}`);
  const dir = mkdtempSync(join(tmpdir(), 'coap-edge-bench-shared-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const fleet = generateDevices(
    Math.max(deviceCount, rebindDevices, storeCount, 1),
    PRODUCT_KEY,
    SEED,
  );
  const devicesFile = join(dir, 'devices.json');
  writeFileSync(devicesFile, `${JSON.stringify(fleet)}\n`);
  const devices: UplinkDevice[] = fleet.devices.map((d) => ({
    identity: `${d.productKey},${d.deviceKey},2,86400`,
    psk: derivePsk(d.deviceSecret),
    path: `/topic/sys/${d.productKey}/${d.deviceKey}/${TOPIC_TAIL}`,
  }));
  const first = devices[0]!;
  const creds: Credentials = { identity: first.identity, psk: first.psk };
  const runId = randomBytes(4).toString('hex');
  const prefixOf = (g: GatewayName): string => `bench-shared-${runId}-${g}`;
  const associationKey = randomBytes(32).toString('hex');
  const suite = SUITES.ccm8;

  const broker = await startMosquitto();
  const servers = new Map<GatewayName, ServerProcess>();
  const httpPorts = new Map<GatewayName, number>();
  const uplinkRounds: Record<string, unknown>[] = [];
  const runs = new Map<GatewayName, GatewayRun[]>(GATEWAYS.map((g) => [g, []]));
  let rebinding: Record<string, unknown> | null = null;
  let footprint: Record<string, unknown> | null = null;
  try {
    for (const g of GATEWAYS) {
      const httpPort = await freeTcpPort();
      httpPorts.set(g, httpPort);
      const extraArgs = [
        '--mqtt-url',
        broker.url,
        '--redis-url',
        redisUrl,
        '--redis-prefix',
        prefixOf(g),
        '--http-port',
        String(httpPort),
        ...(g === 'on' || g === 'onExact' ? ['--association-key', associationKey] : []),
        ...(g === 'onExact' ? ['--association-fence-records', '0'] : []),
      ];
      const s = await startCoapEdge({ devicesFile, extraArgs }, creds);
      servers.set(g, s);
      log(`${g}: pid ${s.pid}, ${s.target.host}:${s.target.port}, admin ${httpPort}`);
    }

    // 1. uplink CPU per message, rotating order
    for (let r = 0; r < rounds; r++) {
      const order = GATEWAYS.map((_, i) => GATEWAYS[(i + r) % GATEWAYS.length]!);
      const row: Record<string, unknown> = { round: r + 1, order };
      const byName = new Map<GatewayName, GatewayRun>();
      for (const g of order) {
        const s = servers.get(g)!;
        if (!s.alive()) throw new Error(`${g} exited:\n${s.outputTail()}`);
        const phase = await runUplinkPhase({
          target: s.target,
          devices: devices.slice(0, deviceCount),
          suite,
          tag: `r${r}${g}`,
          warmupMs: warmupS * 1000,
          durationMs: durationS * 1000,
          ratePerDevice: rate,
          requestTimeoutMs: 10_000,
          expectedCode: Code.CHANGED,
          expectReply: false,
          cpuPids: { gateway: s.pid },
        });
        const cpu = phase.window.processes.gateway;
        const run: GatewayRun = {
          messages: phase.messages,
          cpuUsPerMessage:
            cpu !== undefined && phase.messages > 0 ? round(cpu.us / phase.messages, 2) : null,
          messagesPerSecond: round((phase.messages / phase.window.wallMs) * 1000, 1) ?? 0,
          failures: phase.failures,
          setupFailures: phase.setupFailures,
          machineBusy: round(phase.window.machineBusy, 3) ?? 0,
        };
        runs.get(g)!.push(run);
        byName.set(g, run);
        row[g] = run;
        log(
          `round ${r + 1}/${rounds} ${g.padEnd(10)} ${run.messagesPerSecond} msg/s, ` +
            `${run.cpuUsPerMessage} µs CPU/msg, failures ${JSON.stringify(run.failures)}`,
        );
        await sleep(500);
      }
      const off = byName.get('off')?.cpuUsPerMessage ?? null;
      row.ratio = {
        onOverOff: round(ratio(byName.get('on')?.cpuUsPerMessage ?? null, off), 3),
        onExactOverOff: round(ratio(byName.get('onExact')?.cpuUsPerMessage ?? null, off), 3),
        controlOverOff: round(ratio(byName.get('offControl')?.cpuUsPerMessage ?? null, off), 3),
      };
      uplinkRounds.push(row);
    }

    const on = servers.get('on')!;
    const onHttp = httpPorts.get('on')!;
    // 2. NAT rebinding with CID through the sharing gateway
    if (rebindDevices > 0) {
      const before = await scrape(onHttp);
      const hs0 = metricSum(before, 'coap_edge_dtls_handshake_duration_seconds_count');
      const ad0 = metricSum(before, 'coap_edge_dtls_adoption_duration_seconds_count');
      const load = await runLoadTool([
        '--host',
        on.target.host,
        '--port',
        String(on.target.port),
        '--devices',
        devicesFile,
        '--count',
        String(rebindDevices),
        '--duration',
        String(rebindDuration),
        '--cid',
        '--rebind-every',
        String(rebindEvery),
        '--topic',
        TOPIC_TAIL,
      ]);
      const after = await scrape(onHttp);
      const hs1 = metricSum(after, 'coap_edge_dtls_handshake_duration_seconds_count');
      const ad1 = metricSum(after, 'coap_edge_dtls_adoption_duration_seconds_count');
      const connected = typeof load.connected === 'number' ? load.connected : 0;
      rebinding = {
        devices: rebindDevices,
        rebindEverySeconds: rebindEvery,
        requests: load.requests,
        failedRequests: load.failed,
        errors: load.errors,
        rebinding: load.rebinding,
        gatewayHandshakes: hs1 - hs0,
        gatewayHandshakesAfterSetup: hs1 - hs0 - connected,
        gatewayAdoptions: ad1 - ad0,
      };
      log(`rebinding: ${JSON.stringify(rebinding)}`);
    }

    // 3. Redis footprint of stored associations
    if (storeCount > 0) {
      const pattern = `${prefixOf('on')}:assoc:*`;
      const before = scanKeys(redisUrl, pattern).length;
      const failures: Record<string, number> = {};
      let made = 0;
      const localPorts = new Set<number>();
      for (let start = 0; start < storeCount; start += BATCH) {
        const batch = devices.slice(start, Math.min(storeCount, start + BATCH));
        const clients: DtlsClient[] = [];
        let next = 0;
        const worker = async (): Promise<void> => {
          while (next < batch.length) {
            const d = batch[next++]!;
            try {
              clients.push(await connect(on.target, d, { suite, handshakeTimeoutMs: 10_000 }));
            } catch (err) {
              failures[failureName(err)] = (failures[failureName(err)] ?? 0) + 1;
            }
          }
        };
        await Promise.all(Array.from({ length: 16 }, () => worker()));
        made += clients.length;
        for (const c of clients) {
          localPorts.add(localPort(c));
          dropSilently(c);
        }
      }
      // the store is written after each handshake: wait until the keys are there
      const deadline = performance.now() + 10_000;
      let keys = scanKeys(redisUrl, pattern);
      while (keys.length - before < made && performance.now() < deadline) {
        await sleep(200);
        keys = scanKeys(redisUrl, pattern);
      }
      const sample = keys.slice(0, 5);
      const usage = sample.map((k) =>
        Number(redisCli(redisUrl, 'MEMORY', 'USAGE', k, 'SAMPLES', '0').trim()),
      );
      const idKeys = scanKeys(redisUrl, `${prefixOf('on')}:assoc-id:*`);
      const idUsage = idKeys
        .slice(0, 5)
        .map((k) => Number(redisCli(redisUrl, 'MEMORY', 'USAGE', k, 'SAMPLES', '0').trim()));
      const allKeys = scanKeys(redisUrl, `${prefixOf('on')}:*`);
      footprint = {
        associationsMade: made,
        // without a CID the association's handle is the device's address: a port the OS
        // hands out again (a later batch) replaces the earlier association's hash
        distinctLocalPorts: localPorts.size,
        handshakeFailures: failures,
        assocKeysBefore: before,
        assocKeys: keys.length,
        identityKeys: idKeys.length,
        identityKeyMemoryUsageBytes: idUsage,
        otherKeysOfPrefix: allKeys.length - keys.length - idKeys.length,
        memoryUsageBytes: usage,
        medianBytesPerAssociation: median(usage),
        bytesPerAssociationWithIdentityKey: round((median(usage) ?? 0) + (median(idUsage) ?? 0), 0),
        ttlSecondsOfFirst:
          sample[0] !== undefined ? Number(redisCli(redisUrl, 'TTL', sample[0]).trim()) : null,
        fieldsOfFirst:
          sample[0] !== undefined ? redisCli(redisUrl, 'HKEYS', sample[0]).trim().split('\n') : [],
      };
      log(`footprint: ${JSON.stringify(footprint)}`);
    }
  } finally {
    await stopAll();
    broker.cleanup();
    for (const g of GATEWAYS) {
      const keys = scanKeys(redisUrl, `${prefixOf(g)}:*`);
      for (let i = 0; i < keys.length; i += 500)
        redisCli(redisUrl, 'DEL', ...keys.slice(i, i + 500));
    }
  }

  const medians = Object.fromEntries(
    GATEWAYS.map((g) => {
      const rs = runs.get(g)!;
      return [
        g,
        {
          cpuUsPerMessage: round(median(rs.map((x) => x.cpuUsPerMessage)), 2),
          messagesPerSecond: round(median(rs.map((x) => x.messagesPerSecond)), 1),
        },
      ];
    }),
  );
  const ratioMedian = (k: string): number | null =>
    round(
      median(uplinkRounds.map((row) => (row.ratio as Record<string, number | null>)[k] ?? null)),
      3,
    );
  const result = {
    bench: 'shared-associations',
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    environment: env,
    parameters: {
      devices: deviceCount,
      ratePerDevice: rate,
      rounds,
      durationS,
      warmupS,
      topic: `/topic/sys/{pk}/{dk}/${TOPIC_TAIL} (publish only, 2.04 on PUBACK)`,
      rebindDevices,
      rebindEverySeconds: rebindEvery,
      rebindDurationSeconds: rebindDuration,
      storeCount,
      broker: broker.version,
    },
    units: { cpuUsPerMessage: 'µs of gateway utime+stime per answered message' },
    summary: {
      medians,
      ratios: {
        onOverOff: ratioMedian('onOverOff'),
        onExactOverOff: ratioMedian('onExactOverOff'),
        controlOverOff: ratioMedian('controlOverOff'),
      },
      rebinding,
      footprint,
    },
    servers: Object.fromEntries(
      [...servers].map(([g, s]) => [
        g,
        { pid: s.pid, command: s.command.replace(associationKey, '<key>') },
      ]),
    ),
    rounds: uplinkRounds,
    notes: [
      'offControl is the same configuration as off in a process of its own: its ratio to off is the noise floor',
      'associations for the footprint are dropped without close_notify, as silent devices would be',
    ],
  };
  const file = writeResult('shared-associations', startedAt, result);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  log(`written to ${file}`);
}

runScript('shared-associations', USAGE, main);
