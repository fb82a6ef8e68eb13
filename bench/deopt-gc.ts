/**
 * Deoptimizations caused by a full garbage collection on the steady-state path: the server
 * (coap-edge or a floor program) runs with `--log-deopt` into a V8 log and the gc-signal
 * preload (bench/lib/gc-signal.ts); this process drives `--warmup` operations of `--kind`
 * (one at a time, as bench/instructions.ts does, with its rigs), then `--gcs` times: one forced
 * full GC (SIGUSR2 → `gc()`), then `--after` operations. The report lists, per forced GC, the
 * `code-deopt` entries V8 logged between that GC and the next (or the end), with their bailout
 * type, reason and the function and position they were in, for the server's own scripts
 * (dist/, not node's internals or node_modules unless `--all`); `deoptsPerGc` counts them.
 * No timing is measured: the counts do not depend on the machine's load.
 *
 * Run: `npm run build && node dist/bench/deopt-gc.js --kind uplink-publish|record
 *   [--server coap-edge|floor] [--build dir] [--warmup 3000] [--after 500] [--gcs 3]
 *   [--associations 4] [--node-flags "…"] [--all] [--keep]`
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  UsageError,
  choiceFlag,
  numberFlag,
  parseFlags,
  runScript,
  stringFlag,
} from './lib/args.js';
import { SUITES } from './lib/client.js';
import { commandLine, environment, log, writeResult } from './lib/harness.js';
import { REPO_ROOT, installCleanup, stopAll } from './lib/servers.js';
import { round, sleep } from './lib/stats.js';
import {
  GC_SIGNAL_FLAGS,
  SERVERS,
  drive,
  dtlsRig,
  forceGc,
  uplinkRig,
  type Config,
  type Faults,
} from './instructions.js';

const USAGE = `usage: node dist/bench/deopt-gc.js --kind <k> [options]
  --kind <k>          uplink-publish, uplink-reply or record
  --server <s>        coap-edge (default) or floor
  --build <dir>       checkout whose dist/src/cli.js is the coap-edge run (default this one)
  --warmup <n>        operations before the first forced GC (default 3000)
  --after <n>         operations after each forced GC (default 500)
  --gcs <n>           forced full GCs (default 3)
  --associations <n>  associations (devices) used in turn (default 4)
  --node-flags <f>    more node flags for the server
  --all               also list deopts in node's internals and node_modules
  --keep              keep the V8 log (its path is in the report)`;

const KINDS = ['uplink-publish', 'uplink-reply', 'record'] as const;

export interface Deopt {
  /** `name file:line:col` of the optimized code that was thrown away (V8's code-creation). */
  readonly fn: string;
  readonly bailout: string;
  readonly reason: string;
  /** Where in the (possibly inlined) source the deopt happened. */
  readonly at: string;
}

/** Splits a V8 log line on commas outside double quotes. */
function fields(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of line) {
    if (ch === '"') quoted = !quoted;
    else if (ch === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

/**
 * The `code-deopt` entries of a V8 log, in order, each with the name of the code object it
 * deoptimized (the last `code-creation` at that address before it).
 */
export function readDeopts(text: string): Deopt[] {
  const names = new Map<string, string>();
  const out: Deopt[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('code-creation,')) {
      // code-creation,JS,<kind>,<ts>,<addr>,<size>,<name>,<sfi>,<tier>
      const f = fields(line);
      if (f[4] !== undefined) names.set(f[4], `${f[8] ?? ''}${f[6] ?? '?'}`);
    } else if (line.startsWith('code-deopt,')) {
      // code-deopt,<ts>,<size>,<addr>,<inlining id>,<offset>,<bailout>,<location>,<reason>
      const f = fields(line);
      out.push({
        fn: names.get(f[3] ?? '') ?? `? ${f[3] ?? ''}`,
        bailout: f[6] ?? '?',
        at: f[7] ?? '?',
        reason: f[8] ?? '?',
      });
    }
  }
  return out;
}

/** Is a deopt in the server's own scripts (not node's internals nor node_modules)? */
function own(d: Deopt): boolean {
  return /\/dist\//.test(d.fn) && !/node_modules/.test(d.fn);
}

async function main(): Promise<void> {
  const flags = parseFlags(
    ['kind', 'server', 'build', 'warmup', 'after', 'gcs', 'associations', 'node-flags'],
    ['all', 'keep'],
  );
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (flags.kind === undefined) throw new UsageError('--kind is required');
  const kind = choiceFlag(flags, 'kind', KINDS, 'uplink-publish');
  const server = choiceFlag(
    flags,
    'server',
    SERVERS.filter((s) => s !== 'libcoap'),
    'coap-edge',
  );
  const build = resolve(stringFlag(flags, 'build', REPO_ROOT));
  const warmup = numberFlag(flags, 'warmup', 3000, 0, 1_000_000);
  const after = numberFlag(flags, 'after', 500, 0, 1_000_000);
  const gcs = numberFlag(flags, 'gcs', 3, 1, 100);
  installCleanup();
  const startedAt = new Date();
  const env = environment();
  log(`deopt-gc: ${commandLine()}`);
  for (const k of Object.keys(process.env)) if (k.startsWith('OTEL_')) delete process.env[k];
  const tmp = mkdtempSync(join(tmpdir(), 'coap-edge-deopt-gc-'));
  const logFile = join(tmp, 'v8.log');
  const c: Config = {
    kind,
    server,
    cliPath: join(build, 'dist', 'src', 'cli.js'),
    tracing: 'off',
    alternate: [],
    associations: numberFlag(flags, 'associations', 4, 1, 1000),
    suite: SUITES.ccm8,
    tmp,
    nodeFlags: [
      ...GC_SIGNAL_FLAGS,
      '--log-deopt',
      '--log-code',
      `--logfile=${logFile}`,
      '--no-logfile-per-isolate',
      ...stringFlag(flags, 'node-flags', '')
        .split(' ')
        .filter((x) => x !== ''),
    ],
    scrapes: 0,
    posts: 0,
    postTransport: 'http',
  };
  const faults: Faults = { timeouts: 0, retransmissions: 0, lateStarts: 0, failures: {} };
  const rig = await (kind === 'record' ? dtlsRig : uplinkRig)(c, {});
  const marks: number[] = [];
  const logDeopts = (): number => readDeopts(readFileSync(logFile, 'utf8')).length;
  let warmupDeopts: Deopt[] = [];
  try {
    await drive(rig.op, 0, warmup, 0, faults);
    await sleep(500);
    for (let g = 1; g <= gcs; g++) {
      marks.push(logDeopts());
      await forceGc(rig.server.pid, g, () => rig.server.outputTail());
      await drive(rig.op, warmup + (g - 1) * after, after, 0, faults);
      await sleep(500);
    }
    marks.push(logDeopts());
  } finally {
    await rig.close();
    await stopAll();
  }
  const all = readDeopts(readFileSync(logFile, 'utf8'));
  const keep = (ds: readonly Deopt[]): Deopt[] => (flags.all === true ? [...ds] : ds.filter(own));
  warmupDeopts = keep(all.slice(0, marks[0]));
  const perGc = Array.from({ length: gcs }, (_, g) => keep(all.slice(marks[g], marks[g + 1])));
  if (flags.keep !== true) rmSync(tmp, { recursive: true, force: true });
  const short = (d: Deopt): string =>
    `${d.bailout} "${d.reason}" ${d.fn.replace(/file:\/\/\S*\/dist\//, '')} at ${d.at.replace(/file:\/\/\S*\/dist\//, '').replace(/^<|>$/g, '')}`;
  const result = {
    bench: 'deopt-gc',
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    environment: { ...env, loadAverageAtEnd: loadavg().map((x) => round(x, 2)) },
    description:
      "V8's code-deopt log entries of the server's own scripts after each forced full GC " +
      '(gc() between operations of the steady state), and during the warm-up',
    parameters: {
      kind,
      server,
      build: server === 'coap-edge' ? build : undefined,
      warmup,
      after,
      gcs,
    },
    faults,
    warmupDeopts: warmupDeopts.length,
    deoptsPerGc: perGc.map((ds) => ds.length),
    weakObjectsPerGc: perGc.map((ds) => ds.filter((d) => d.reason === 'weak objects').length),
    perGc: perGc.map((ds) => ds.map(short)),
    ...(flags.keep === true ? { logFile } : {}),
  };
  const file = writeResult(`deopt-gc-${kind}-${server}`, startedAt, result);
  log(`deopt-gc: deopts per GC ${result.deoptsPerGc.join(', ')} (${file})`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

runScript('deopt-gc', USAGE, main);
