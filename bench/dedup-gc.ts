/**
 * What the CoAP deduplication cache (src/coap/dedup.ts) costs the garbage collector: its
 * completed entries outlive requests by minutes (EXCHANGE_LIFETIME, up to 100 000 of them),
 * so everything they hold is copied by scavenges and marked by mark-compacts.
 *
 * Each measurement is a child process (`node --expose-gc`) that loads one build's
 * `dist/src/coap/dedup.js` and
 * 1. fills 50 000 completed entries (100 peers, a fractional clock like `performance.now()`,
 *    a 56-byte response from `Buffer.allocUnsafe` like the encoder's) between two settled
 *    heaps: **heap bytes retained per completed entry** (repeatable, load does not move it);
 * 2. feeds `--uplinks` requests (find, begin, some short-lived garbage, complete) at 2 500/s
 *    of clock time with the default cap of 100 000 entries, observing every GC: scavenges,
 *    mark-compacts, their total and longest ms, per 10 000 uplinks (counts are repeatable,
 *    durations follow the machine's load).
 * 3. lets all 100 000 expire at once and sweeps: the longest single `sweep` call (ms) and how
 *    many calls empty the cache.
 * With `--old <dist>`, the builds alternate per round (new, old, old again as the control),
 * order rotating; ratios are per round, then medians.
 *
 * Run: `npm run build && node dist/bench/dedup-gc.js [--old /path/to/old/dist] [--rounds 3]
 *   [--uplinks 400000]`
 */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { runScript, numberFlag, parseFlags, stringFlag } from './lib/args.js';
import { commandLine, environment, log, writeResult } from './lib/harness.js';
import { median, round } from './lib/stats.js';

const USAGE = `usage: node dist/bench/dedup-gc.js [--old <dist>] [--rounds 3] [--uplinks 400000]`;
const PEERS = 100;

interface DedupModule {
  DedupCache: new (
    limits: Record<string, number>,
    stats: unknown,
    random: () => number,
  ) => {
    find(k: string, id: number, now: number): unknown;
    begin(k: string, id: number, con: boolean, now: number): unknown;
    complete(e: unknown, bytes: Buffer | undefined, now: number): void;
    sweep(now: number): unknown;
    readonly size: number;
  };
}

async function child(dedupPath: string, uplinks: number): Promise<void> {
  const mod = (await import(pathToFileURL(dedupPath).href)) as DedupModule;
  const { CoapStats } = (await import(
    pathToFileURL(dedupPath.replace(/dedup\.js$/, 'stats.js')).href
  )) as {
    CoapStats: new () => unknown;
  };
  const gc = (globalThis as { gc?: () => void }).gc!;
  const settled = async (): Promise<number> => {
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setImmediate(r));
      gc();
    }
    return process.memoryUsage().heapUsed;
  };
  const limits = {
    maxEntries: 100_000,
    maxBytes: 32 << 20,
    exchangeLifetimeMs: 247_000,
    nonLifetimeMs: 145_000,
  };
  const keys = Array.from({ length: PEERS }, (_, i) => `peer-${i}`);
  // 1. heap per completed entry
  const n = 50_000;
  const filled = new mod.DedupCache(limits, new CoapStats(), Math.random);
  let c = filled;
  let now = 1000.25;
  for (const k of keys) c.complete(c.begin(k, 65_000, true, now), Buffer.allocUnsafe(56), now);
  const before = await settled();
  for (let i = 0; i < n; i++) {
    now += 0.4;
    const k = keys[i % PEERS]!;
    const id = Math.floor(i / PEERS);
    c.find(k, id, now);
    c.complete(c.begin(k, id, true, now), Buffer.allocUnsafe(56), now);
  }
  const heapPerEntry = ((await settled()) - before) / n;
  // read after the measurement: a cache nothing reads any more may be collected before it
  const filledSize = filled.size;
  // 2. GC while feeding
  c = new mod.DedupCache(limits, new CoapStats(), Math.random);
  await settled();
  const kinds = { scavenge: [0, 0, 0], markCompact: [0, 0, 0], other: [0, 0, 0] };
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as { detail?: { kind?: number } }).detail?.kind;
      const k =
        kind === constants.NODE_PERFORMANCE_GC_MINOR
          ? kinds.scavenge
          : kind === constants.NODE_PERFORMANCE_GC_MAJOR
            ? kinds.markCompact
            : kinds.other;
      k[0]!++;
      k[1]! += e.duration;
      k[2] = Math.max(k[2]!, e.duration);
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  let sink = 0;
  now = 5000.25;
  for (let i = 0; i < uplinks; i++) {
    now += 0.4; // 2 500 uplinks/s
    const k = keys[i % PEERS]!;
    const id = Math.floor(i / PEERS) & 0xffff;
    c.find(k, id, now);
    const e = c.begin(k, id, true, now);
    // a request's short-lived garbage (decoded body, options, the reply), dead at once
    const garbage = { body: Buffer.allocUnsafe(160), reply: JSON.parse('{"id":"x","code":200}') };
    sink += garbage.body.length;
    c.complete(e, Buffer.allocUnsafe(56), now);
  }
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  // 3. all of them expire at once: the longest single sweep call, and how many calls
  const full = c.size;
  const later = now + limits.exchangeLifetimeMs + 1;
  let sweeps = 0;
  const sweepMs: number[] = [];
  while (c.size > 0 && sweeps < 1000) {
    const t0 = performance.now();
    c.sweep(later);
    sweepMs.push(performance.now() - t0);
    sweeps++;
  }
  const per10k = (x: number): number => round((x * 10_000) / uplinks, 3)!;
  const out = Object.fromEntries(
    Object.entries(kinds).map(([k, [count, ms, max]]) => [
      k,
      { per10k: per10k(count!), msPer10k: per10k(ms!), maxMs: round(max!, 2) },
    ]),
  );
  process.stdout.write(
    `${JSON.stringify({
      heapPerEntry: round(heapPerEntry, 1),
      gc: out,
      filled: filledSize,
      size: full,
      sweepCalls: sweeps,
      longestSweepMs: round(Math.max(...sweepMs), 3),
      medianSweepMs: round(median(sweepMs), 3),
      sink: sink > 0,
    })}\n`,
  );
}

async function main(): Promise<void> {
  const flags = parseFlags(['old', 'rounds', 'uplinks', 'child'], []);
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const uplinks = numberFlag(flags, 'uplinks', 400_000, 10_000, 10_000_000);
  if (typeof flags.child === 'string') return child(flags.child, uplinks);
  const rounds = numberFlag(flags, 'rounds', 3, 1, 50);
  const newDedup = fileURLToPath(new URL('../src/coap/dedup.js', import.meta.url));
  const old = stringFlag(flags, 'old', '');
  const builds: [string, string][] = [['new', newDedup]];
  if (old !== '') {
    const oldDedup = resolve(old, 'src/coap/dedup.js');
    builds.push(['old', oldDedup], ['control', oldDedup]);
  }
  const startedAt = new Date();
  const rows: Record<string, Record<string, unknown>>[] = [];
  for (let r = 0; r < rounds; r++) {
    const row: Record<string, Record<string, unknown>> = {};
    for (let i = 0; i < builds.length; i++) {
      const [name, path] = builds[(i + r) % builds.length]!;
      const res = spawnSync(
        process.execPath,
        [
          '--expose-gc',
          fileURLToPath(import.meta.url),
          '--child',
          path,
          '--uplinks',
          String(uplinks),
        ],
        { encoding: 'utf8' },
      );
      if (res.status !== 0) throw new Error(`${name}: ${res.stderr}`);
      row[name] = JSON.parse(res.stdout) as Record<string, unknown>;
      log(`round ${r + 1}/${rounds} ${name} ${res.stdout.trim()}`);
    }
    rows.push(row);
  }
  const pick = (name: string, f: (x: Record<string, unknown>) => number): number | null =>
    round(median(rows.map((row) => (row[name] !== undefined ? f(row[name]) : null))), 3);
  const gcOf = (x: Record<string, unknown>, k: string, m: string): number =>
    (x.gc as Record<string, Record<string, number>>)[k]![m]!;
  const summary = Object.fromEntries(
    builds.map(([name]) => [
      name,
      {
        heapPerEntry: pick(name, (x) => x.heapPerEntry as number),
        scavengesPer10k: pick(name, (x) => gcOf(x, 'scavenge', 'per10k')),
        scavengeMsPer10k: pick(name, (x) => gcOf(x, 'scavenge', 'msPer10k')),
        markCompactsPer10k: pick(name, (x) => gcOf(x, 'markCompact', 'per10k')),
        markCompactMsPer10k: pick(name, (x) => gcOf(x, 'markCompact', 'msPer10k')),
        sweepCalls: pick(name, (x) => x.sweepCalls as number),
        longestSweepMs: pick(name, (x) => x.longestSweepMs as number),
        medianSweepMs: pick(name, (x) => x.medianSweepMs as number),
      },
    ]),
  );
  const ratio = (a: string): Record<string, number | null> | null =>
    old === ''
      ? null
      : {
          scavengeMs: round(
            median(
              rows.map(
                (row) =>
                  gcOf(row[a]!, 'scavenge', 'msPer10k') / gcOf(row.old!, 'scavenge', 'msPer10k'),
              ),
            ),
            3,
          ),
        };
  const result = {
    bench: 'dedup-gc',
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    environment: environment(),
    parameters: { rounds, uplinks, peers: PEERS, old: old || null },
    summary,
    ratiosToOld: old === '' ? null : { new: ratio('new'), control: ratio('control') },
    rounds: rows,
  };
  const file = writeResult('dedup-gc', startedAt, result);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  log(`written to ${file}`);
}

runScript('dedup-gc', USAGE, main);
