/**
 * The run both benchmarks follow: start both servers as separate processes, preflight
 * them (the suite is negotiated and GET /nothing is answered with ACK 4.04), run the
 * alternating rounds, stop the servers, take medians and coap-edge / libcoap ratios, print
 * one JSON object on stdout and write it to bench/results/.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cipherSuiteName } from '../../src/dtls/constants.js';
import { choiceFlag, numberFlag, stringFlag, type StringFlags } from './args.js';
import { SUITES, preflight, withClones, type PooledCredentials, type Preflight } from './client.js';
import { commandLine, environment, log, writeResult } from './harness.js';
import { newestProfile, summariseProfile, type ProfileSummary } from './profile.js';
import {
  installCleanup,
  startCoapEdge,
  startLibcoap,
  stopAll,
  type ServerName,
  type ServerProcess,
} from './servers.js';
import { median, ratio, round, sleep } from './stats.js';

export interface Metric<R> {
  readonly get: (r: R) => number | null;
  readonly digits: number;
  /** False for counts (failures, timeouts) that get a median but no ratio. */
  readonly compare?: boolean;
}

export interface BenchSpec<R> {
  readonly name: string;
  readonly description: string;
  readonly units: Record<string, string>;
  readonly parameters: Record<string, unknown>;
  readonly suite: number;
  readonly rounds: number;
  readonly devicesFile: string;
  readonly device: string;
  /** Concurrent associations of the load: each gets its own identity (same key). */
  readonly identities: number;
  readonly profile: boolean;
  /** One measured phase against one server. */
  readonly run: (server: ServerProcess, creds: PooledCredentials) => Promise<R>;
  /** One-line progress text for stderr. */
  readonly describe: (r: R) => string;
  /** Numbers taken as medians over rounds and compared as coap-edge / libcoap. */
  readonly metrics: Record<string, Metric<R>>;
  readonly notes: readonly string[];
  /**
   * Run before any server starts (e.g. a census the extra servers need); what it returns goes
   * into the JSON as `prepared`.
   */
  readonly prepare?: (devicesFile: string, creds: PooledCredentials) => Promise<unknown>;
  /** More servers measured in the same alternating rounds (floor references, a control). */
  readonly extraServers?: readonly ExtraServer<R>[];
  /**
   * Ratios between two servers of the same round (then the median over rounds), by label:
   * `summary.pairRatios[label]`, per round in `rounds[].pairRatios`.
   */
  readonly pairRatios?: Readonly<Record<string, readonly [ServerName, ServerName]>>;
}

export interface ExtraServer<R> {
  readonly name: ServerName;
  /** What it is, for the JSON's `servers` block. */
  readonly description: string;
  readonly start: (devicesFile: string, creds: PooledCredentials) => Promise<ServerProcess>;
  /** Its own load instead of `BenchSpec.run` (a server that speaks no DTLS). */
  readonly run?: (server: ServerProcess, creds: PooledCredentials) => Promise<R>;
  /** False: not preflighted (it speaks no DTLS). */
  readonly preflight?: boolean;
}

/**
 * `--servers <list>`: the extra servers wanted (comma-separated names out of `allowed`, or
 * "none"; all of them when the flag is absent).
 */
export function serversFlag(flags: StringFlags, allowed: readonly string[]): Set<string> {
  const wanted = new Set(
    stringFlag(flags, 'servers', allowed.join(','))
      .split(',')
      .filter((x) => x !== '' && x !== 'none'),
  );
  for (const w of wanted) {
    if (!allowed.includes(w)) throw new Error(`--servers: unknown ${w}`);
  }
  return wanted;
}

/** The identical-process control: a second coap-edge started exactly as `coapEdge`. */
export function controlServer<R>(): ExtraServer<R> {
  return {
    name: 'coapEdgeControl',
    description: 'identical-process control: a second coap-edge started exactly as coapEdge',
    start: (devicesFile, creds) => startCoapEdge({ devicesFile, name: 'coapEdgeControl' }, creds),
  };
}

/** The flags both server benchmarks take (see their usage text). */
export const SERVER_FLAGS = ['suite', 'rounds', 'duration', 'warmup', 'devices', 'device'];

export function serverFlags(flags: StringFlags): Pick<
  BenchSpec<unknown>,
  'suite' | 'rounds' | 'devicesFile' | 'device' | 'profile'
> & {
  readonly durationS: number;
  readonly warmupS: number;
} {
  return {
    suite: SUITES[choiceFlag(flags, 'suite', ['ccm8', 'cbc'], 'ccm8')],
    rounds: numberFlag(flags, 'rounds', 3, 1, 100),
    durationS: numberFlag(flags, 'duration', 5, 0.5, 3600, false),
    warmupS: numberFlag(flags, 'warmup', 1, 0, 600, false),
    devicesFile: stringFlag(
      flags,
      'devices',
      fileURLToPath(new URL('../../../deploy/examples/devices.json', import.meta.url)),
    ),
    device: stringFlag(flags, 'device', 'device001'),
    profile: flags.profile === true,
  };
}

const PAUSE_MS = 500;

/** Round r's order: the list rotated by r, so each server takes each place in turn. */
function rotated<T>(list: readonly T[], r: number): T[] {
  const k = r % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

export async function runBench<R>(spec: BenchSpec<R>): Promise<void> {
  installCleanup();
  const startedAt = new Date();
  const env = environment();
  log(`${spec.name}: ${commandLine()}`);
  const clonesDir = mkdtempSync(join(tmpdir(), 'coap-edge-bench-devices-'));
  process.once('exit', () => rmSync(clonesDir, { recursive: true, force: true }));
  const { file: devicesFile, creds } = withClones(
    spec.devicesFile,
    spec.device,
    spec.identities,
    clonesDir,
  );
  const profDir = spec.profile ? mkdtempSync(join(tmpdir(), 'coap-edge-prof-')) : undefined;

  const servers = new Map<ServerName, ServerProcess>();
  const preflights = new Map<ServerName, Preflight>();
  let profile: ProfileSummary | undefined;
  const rounds: Record<string, unknown>[] = [];
  const extras = spec.extraServers ?? [];
  const SERVERS: readonly ServerName[] = ['coapEdge', 'libcoap', ...extras.map((e) => e.name)];
  const results = new Map<ServerName, R[]>(SERVERS.map((s) => [s, []]));
  const compared = Object.entries(spec.metrics).filter(([, m]) => m.compare !== false);
  let prepared: unknown;
  try {
    if (spec.prepare !== undefined) {
      prepared = await spec.prepare(devicesFile, creds);
      log(`prepared: ${JSON.stringify(prepared)}`);
    }
    servers.set('coapEdge', await startCoapEdge({ devicesFile, cpuProfDir: profDir }, creds));
    servers.set('libcoap', await startLibcoap(creds.psk, creds));
    for (const e of extras) servers.set(e.name, await e.start(devicesFile, creds));
    for (const [name, s] of servers) {
      if (extras.find((e) => e.name === name)?.preflight === false) continue;
      const p = await preflight(s.target, creds, spec.suite);
      preflights.set(name, p);
      log(
        `${name}: pid ${s.pid}, ${s.target.host}:${s.target.port}, preflight ${JSON.stringify(p)}`,
      );
    }
    const edgePre = preflights.get('coapEdge');
    if (edgePre?.ok !== true)
      throw new Error(`coap-edge preflight failed: ${JSON.stringify(edgePre)}`);
    const libPre = preflights.get('libcoap');
    const compareLibcoap = libPre?.ok === true;
    if (!compareLibcoap) {
      if (libPre?.response !== undefined) {
        // It negotiated the suite but answered something else: the comparison would be unfair.
        throw new Error(`libcoap did not answer ACK 4.04: ${JSON.stringify(libPre)}`);
      }
      log(`libcoap refuses this suite (${libPre?.error ?? '?'}): measuring coap-edge alone`);
    }

    for (const e of extras) {
      const p = preflights.get(e.name);
      if (p !== undefined && p.ok !== true) {
        throw new Error(`${e.name} preflight failed: ${JSON.stringify(p)}`);
      }
    }
    const active = SERVERS.filter((n) => n !== 'libcoap' || compareLibcoap);
    const runs = new Map(extras.map((e) => [e.name, e.run]));
    for (let r = 0; r < spec.rounds; r++) {
      const order = rotated(active, r);
      const row: Record<string, unknown> = { round: r + 1, order };
      for (const name of order) {
        const s = servers.get(name)!;
        if (!s.alive()) throw new Error(`${name} exited:\n${s.outputTail()}`);
        const res = await (runs.get(name) ?? spec.run)(s, creds);
        results.get(name)!.push(res);
        row[name] = res;
        log(`round ${r + 1}/${spec.rounds} ${name.padEnd(8)} ${spec.describe(res)}`);
        await sleep(PAUSE_MS);
      }
      if (compareLibcoap) {
        const a = results.get('coapEdge')!.at(-1)!;
        const b = results.get('libcoap')!.at(-1)!;
        row.ratio = Object.fromEntries(
          compared.map(([k, m]) => [k, round(ratio(m.get(a), m.get(b)), 3)]),
        );
      }
      const pairs: Record<string, Record<string, number | null>> = {};
      for (const [label, [num, den]] of Object.entries(spec.pairRatios ?? {})) {
        const a = results.get(num)?.[r];
        const b = results.get(den)?.[r];
        if (a === undefined || b === undefined) continue;
        pairs[label] = Object.fromEntries(
          compared.map(([k, m]) => [k, round(ratio(m.get(a), m.get(b)), 3)]),
        );
      }
      if (Object.keys(pairs).length > 0) row.pairRatios = pairs;
      rounds.push(row);
    }
  } finally {
    await stopAll();
  }
  if (profDir !== undefined) {
    const f = newestProfile(profDir);
    if (f !== undefined) {
      profile = summariseProfile(f);
      log(`coap-edge CPU profile ${profile.file} (busy ${profile.busyMs} ms), top self time:`);
      for (const h of profile.top) {
        log(`  ${h.selfPercent.toFixed(1).padStart(5)}%  ${h.function}  ${h.location}`);
      }
    } else log('no .cpuprofile was written');
  }

  const medians: Record<string, Record<string, number | null>> = {};
  for (const name of SERVERS) {
    const rs = results.get(name)!;
    if (rs.length === 0) continue;
    medians[name] = Object.fromEntries(
      Object.entries(spec.metrics).map(([k, m]) => [k, round(median(rs.map(m.get)), m.digits)]),
    );
  }
  const ratios: Record<string, number | null> | null =
    medians.libcoap !== undefined
      ? Object.fromEntries(
          compared.map(([k]) => [
            k,
            round(
              median(rounds.map((row) => (row.ratio as Record<string, number | null>)[k] ?? null)),
              3,
            ),
          ]),
        )
      : null;

  const pairRatios: Record<string, Record<string, number | null>> = {};
  for (const label of Object.keys(spec.pairRatios ?? {})) {
    const per = rounds
      .map(
        (row) =>
          (row.pairRatios as Record<string, Record<string, number | null>> | undefined)?.[label],
      )
      .filter((x): x is Record<string, number | null> => x !== undefined);
    if (per.length === 0) continue;
    pairRatios[label] = Object.fromEntries(
      compared.map(([k]) => [k, round(median(per.map((x) => x[k] ?? null)), 3)]),
    );
  }

  const result = {
    bench: spec.name,
    description: spec.description,
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    environment: env,
    parameters: {
      ...spec.parameters,
      suite: cipherSuiteName.get(spec.suite) ?? spec.suite,
      identity: creds.identity,
      identities: creds.identities.length,
      rounds: spec.rounds,
      profiled: spec.profile,
    },
    units: spec.units,
    summary: {
      medians,
      ratios,
      ratioDefinition:
        'median over rounds of (coapEdge / libcoap) measured in the same round; ' +
        '> 1 means coap-edge has the larger value (better for throughput, worse for CPU and latency)',
      ...(spec.pairRatios !== undefined
        ? {
            pairRatios,
            pairRatiosDefinition: Object.fromEntries(
              Object.entries(spec.pairRatios).map(([label, [a, b]]) => [
                label,
                `median over rounds of (${a} / ${b}) measured in the same round`,
              ]),
            ),
          }
        : {}),
    },
    servers: Object.fromEntries(
      [...servers].map(([name, s]) => [
        name,
        {
          command: s.command,
          pid: s.pid,
          preflight: preflights.get(name),
          description: extras.find((e) => e.name === name)?.description,
        },
      ]),
    ),
    ...(prepared !== undefined ? { prepared } : {}),
    rounds,
    ...(profile !== undefined ? { coapEdgeProfile: profile } : {}),
    notes: [
      ...spec.notes,
      ...(ratios === null
        ? ['libcoap refused the cipher suite in the preflight: only coap-edge was measured']
        : []),
      ...(spec.profile
        ? ['coap-edge ran under node --cpu-prof: its CPU figures include profiler overhead']
        : []),
    ],
  };
  const file = writeResult(spec.name, startedAt, result);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  log(`written to ${file}`);
}
