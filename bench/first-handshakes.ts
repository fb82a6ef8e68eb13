/**
 * The first handshakes of a fresh coap-edge process: what a pod pays right after start-up,
 * before V8 has compiled the handshake's JavaScript (bench/history/handshake.md,
 * "The first handshakes").
 * Each process of each build is started, answers one readiness handshake (startCoapEdge), then
 * `--handshakes` full handshakes one after the other (connect → close_notify, our DtlsClient),
 * and is stopped. The builds' processes alternate (a, b, a, b, …), `--processes` each.
 *
 * Reports per build the medians over its processes of: the latency of handshake 1, the sums
 * of the first 10 and of all, the median and the slowest, and the server's CPU over them
 * (schedstat, ns resolution). One JSON object on stdout, progress on stderr.
 *
 * Run: `npm run build && node dist/bench/first-handshakes.js --a <checkout> --b <checkout>
 *   [--processes 5] [--handshakes 100] [--suite ccm8|cbc]`
 * (a checkout: a directory with a compiled dist/; default for both: this one).
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { choiceFlag, numberFlag, parseFlags, runScript, stringFlag } from './lib/args.js';
import { SUITES, connect, loadCredentials } from './lib/client.js';
import { readCpu } from './lib/proc.js';
import { REPO_ROOT, installCleanup, startCoapEdge } from './lib/servers.js';
import { median, round } from './lib/stats.js';

const USAGE = `usage: node dist/bench/first-handshakes.js [options]
  --a <dir>           checkout whose dist/src/cli.js is build a (default this one)
  --b <dir>           checkout whose dist/src/cli.js is build b (default this one)
  --processes <n>     fresh processes per build, alternating (default 5)
  --handshakes <n>    handshakes per process after the readiness one (default 100)
  --suite <s>         ccm8 (default) or cbc`;

interface ProcessResult {
  readonly firstMs: number;
  readonly first10Ms: number;
  readonly allMs: number;
  readonly medianMs: number;
  readonly maxMs: number;
  readonly serverCpuMs: number | null;
}

async function oneProcess(
  dir: string,
  devicesFile: string,
  n: number,
  suite: number,
): Promise<ProcessResult> {
  const creds = loadCredentials(devicesFile, 'device001');
  const server = await startCoapEdge({ cliPath: join(dir, 'dist/src/cli.js'), devicesFile }, creds);
  try {
    const before = readCpu(server.pid).schedNs;
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      const client = await connect(server.target, creds, { suite, handshakeTimeoutMs: 5000 });
      ms.push(performance.now() - t);
      await client.close();
    }
    const after = readCpu(server.pid).schedNs;
    const sum = (xs: readonly number[]): number => xs.reduce((x, y) => x + y, 0);
    return {
      firstMs: ms[0] ?? NaN,
      first10Ms: sum(ms.slice(0, 10)),
      allMs: sum(ms),
      medianMs: median(ms) ?? NaN,
      maxMs: Math.max(...ms),
      serverCpuMs: before === undefined || after === undefined ? null : (after - before) / 1e6,
    };
  } finally {
    await server.stop();
  }
}

function summarise(rs: readonly ProcessResult[]): Record<string, number | null> {
  const m = (f: (r: ProcessResult) => number | null): number | null => round(median(rs.map(f)), 2);
  return {
    firstMs: m((r) => r.firstMs),
    first10Ms: m((r) => r.first10Ms),
    allMs: m((r) => r.allMs),
    medianMs: m((r) => r.medianMs),
    maxMs: m((r) => r.maxMs),
    serverCpuMs: m((r) => r.serverCpuMs),
  };
}

runScript('first-handshakes', USAGE, async () => {
  const flags = parseFlags(['a', 'b', 'processes', 'handshakes', 'suite'], []);
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const a = stringFlag(flags, 'a', REPO_ROOT);
  const b = stringFlag(flags, 'b', REPO_ROOT);
  const processes = numberFlag(flags, 'processes', 5, 1, 100);
  const n = numberFlag(flags, 'handshakes', 100, 1, 100_000);
  const suite = SUITES[choiceFlag(flags, 'suite', ['ccm8', 'cbc'] as const, 'ccm8')];
  installCleanup();
  const devicesFile = join(REPO_ROOT, 'deploy/examples/devices.json');
  const results: Record<'a' | 'b', ProcessResult[]> = { a: [], b: [] };
  const load: number[] = [];
  for (let p = 0; p < processes; p++) {
    for (const [name, dir] of [
      ['a', a],
      ['b', b],
    ] as const) {
      load.push(loadavg()[0] ?? NaN);
      const r = await oneProcess(dir, devicesFile, n, suite);
      results[name].push(r);
      process.stderr.write(`${name} ${p + 1}/${processes}: ${JSON.stringify(r)}\n`);
    }
  }
  process.stdout.write(
    `${JSON.stringify(
      {
        bench: 'first-handshakes',
        command: `node dist/bench/first-handshakes.js ${process.argv.slice(2).join(' ')}`,
        parameters: { a, b, processes, handshakes: n, suite },
        load: { min: Math.min(...load), max: Math.max(...load) },
        summary: { a: summarise(results.a), b: summarise(results.b) },
        processes: results,
      },
      null,
      2,
    )}\n`,
  );
});
