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
 * `--churn`: the longest single call while peers come and go. A cache capped at 100 000
 * entries (32 MiB) is filled from 2 000 peers (50 completed entries each, one answer size),
 * then `--requests` requests (find, begin, complete) go round the peers, and every 50th
 * request one peer, picked by a seeded generator (the same sequence for every build), is
 * dropped (`dropPeer`, its DTLS association closed) and replaced by a new one. Every request
 * and every `dropPeer` is timed: the longest of each, how many requests took over 1 ms and
 * 0.1 ms, the 99.9th percentile; beside them the ring rebuilds inside those calls (counted and
 * timed by wrapping the cache's `relayout` and `rebuildBytes`, when the build has them) and
 * the GCs in the same window, so a long call can be told apart as a rebuild or a pause.
 * Answer sizes `--sizes` (56 and 300 bytes: 100 000 of the latter nearly fill the byte cap).
 *
 * Run: `npm run build && node dist/bench/dedup-gc.js [--old /path/to/old/dist] [--rounds 3]
 *   [--uplinks 400000]` or `node dist/bench/dedup-gc.js --churn [--old <dist>] [--rounds 3]
 *   [--requests 1000000] [--sizes 56,300]`
 */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { UsageError, runScript, numberFlag, parseFlags, stringFlag } from './lib/args.js';
import { commandLine, environment, log, writeResult } from './lib/harness.js';
import { median, round } from './lib/stats.js';

const USAGE = `usage: node dist/bench/dedup-gc.js [--old <dist>] [--rounds 3] [--uplinks 400000]
       node dist/bench/dedup-gc.js --churn [--old <dist>] [--rounds 3] [--requests 1000000] [--sizes 56,300]`;
const PEERS = 100;
/** --churn: peers, completed entries each at the start, requests between two peer drops. */
const CHURN_PEERS = 2_000;
const CHURN_FILL = 50;
const CHURN_DROP_EVERY = 50;

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
    dropPeer(k: string): void;
    readonly size: number;
  };
}

async function load(dedupPath: string): Promise<{ mod: DedupModule; stats: () => unknown }> {
  const mod = (await import(pathToFileURL(dedupPath).href)) as DedupModule;
  const { CoapStats } = (await import(
    pathToFileURL(dedupPath.replace(/dedup\.js$/, 'stats.js')).href
  )) as {
    CoapStats: new () => unknown;
  };
  return { mod, stats: () => new CoapStats() };
}

async function child(dedupPath: string, uplinks: number): Promise<void> {
  const { mod, stats } = await load(dedupPath);
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
  const filled = new mod.DedupCache(limits, stats(), Math.random);
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
  c = new mod.DedupCache(limits, stats(), Math.random);
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

/** Counts and times calls of a method of the cache's prototype, when the build has it. */
function timeMethod(proto: object, name: string): Timed | null {
  const own = proto as Record<string, unknown>;
  const f = own[name];
  if (typeof f !== 'function') return null;
  const t: Timed = { count: 0, maxMs: 0, ms: [], cpuMs: [] };
  own[name] = function (this: unknown, ...args: unknown[]): unknown {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const r: unknown = f.apply(this, args);
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(c0);
    t.count++;
    t.ms.push(round(ms, 2)!);
    t.cpuMs.push(round((cpu.user + cpu.system) / 1000, 2)!);
    if (ms > t.maxMs) t.maxMs = ms;
    return r;
  };
  return t;
}

/**
 * A wrapped method's calls: wall ms (load stretches them) and this process's CPU ms
 * (`process.cpuUsage`, user + system: time it was descheduled is not in it).
 */
interface Timed {
  count: number;
  maxMs: number;
  ms: number[];
  cpuMs: number[];
}

/** --churn, one build and one answer size (see the header). */
async function churnChild(dedupPath: string, requests: number, size: number): Promise<void> {
  const { mod, stats } = await load(dedupPath);
  const relayouts = timeMethod(mod.DedupCache.prototype as object, 'relayout');
  const byteRebuilds = timeMethod(mod.DedupCache.prototype as object, 'rebuildBytes');
  const limits = {
    maxEntries: 100_000,
    maxBytes: 32 << 20,
    exchangeLifetimeMs: 247_000,
    nonLifetimeMs: 145_000,
  };
  const c = new mod.DedupCache(limits, stats(), Math.random);
  const keys = Array.from({ length: CHURN_PEERS }, (_, i) => `peer-${i}`);
  const ids = new Int32Array(CHURN_PEERS);
  let nextPeer = CHURN_PEERS;
  // a seeded generator (xorshift32): every build drops the same peers in the same order
  let seed = 0x2545f491;
  const pick = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % CHURN_PEERS;
  };
  let now = 1000.25;
  const request = (p: number): void => {
    const k = keys[p]!;
    const id = ids[p]!;
    ids[p] = (id + 1) & 0xffff;
    c.find(k, id, now);
    c.complete(c.begin(k, id, true, now), Buffer.allocUnsafe(size), now);
  };
  for (let i = 0; i < CHURN_PEERS * CHURN_FILL; i++) {
    now += 0.4;
    request(i % CHURN_PEERS);
  }
  const filled = c.size;
  for (const t of [relayouts, byteRebuilds]) {
    if (t === null) continue;
    t.count = t.maxMs = 0;
    t.ms = [];
    t.cpuMs = [];
  }
  const gcs = { count: 0, maxMs: 0 };
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcs.count++;
      gcs.maxMs = Math.max(gcs.maxMs, e.duration);
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  const requestMs = new Float64Array(requests);
  const dropMs: number[] = [];
  for (let i = 0; i < requests; i++) {
    now += 0.4; // 2 500 requests/s: the cap, not the lifetime, evicts
    const t0 = performance.now();
    request(i % CHURN_PEERS);
    const t1 = performance.now();
    requestMs[i] = t1 - t0;
    if (i % CHURN_DROP_EVERY === CHURN_DROP_EVERY - 1) {
      const p = pick();
      c.dropPeer(keys[p]!);
      dropMs.push(performance.now() - t1);
      keys[p] = `peer-${nextPeer++}`;
      ids[p] = 0;
    }
  }
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  let over1 = 0;
  let over01 = 0;
  for (const ms of requestMs) {
    if (ms > 1) over1++;
    if (ms > 0.1) over01++;
  }
  const sorted = requestMs.slice().sort();
  const timed = (t: Timed | null): unknown =>
    t === null
      ? null
      : {
          count: t.count,
          maxMs: round(t.maxMs, 3),
          maxCpuMs: round(Math.max(...t.cpuMs), 3),
          medianCpuMs: round(median(t.cpuMs), 3),
          ms: t.ms,
          cpuMs: t.cpuMs,
        };
  process.stdout.write(
    `${JSON.stringify({
      size,
      filled,
      requests,
      drops: dropMs.length,
      longestRequestMs: round(sorted[sorted.length - 1]!, 3),
      p999RequestUs: round(sorted[Math.floor(sorted.length * 0.999)]! * 1000, 2),
      medianRequestUs: round(sorted[sorted.length >> 1]! * 1000, 2),
      requestsOver1ms: over1,
      requestsOver01ms: over01,
      longestDropMs: round(Math.max(...dropMs), 3),
      medianDropUs: round(median(dropMs)! * 1000, 2),
      relayouts: timed(relayouts),
      byteRebuilds: timed(byteRebuilds),
      gc: { count: gcs.count, maxMs: round(gcs.maxMs, 3) },
      sizeAtEnd: c.size,
    })}\n`,
  );
}

/** --churn: rounds × sizes × builds, each a child process; medians per build and size. */
function churnMain(flags: Record<string, string | boolean | undefined>): void {
  const requests = numberFlag(flags, 'requests', 1_000_000, 10_000, 10_000_000);
  const rounds = numberFlag(flags, 'rounds', 3, 1, 50);
  const sizes = stringFlag(flags, 'sizes', '56,300')
    .split(',')
    .map((x) => {
      const n = Number(x);
      if (!Number.isInteger(n) || n < 1 || n > 1024) throw new UsageError('--sizes: 1 to 1024');
      return n;
    });
  const builds = buildsOf(stringFlag(flags, 'old', ''));
  const startedAt = new Date();
  const rows: { round: number; size: number; build: string; result: Record<string, unknown> }[] =
    [];
  for (let r = 0; r < rounds; r++) {
    for (const size of sizes) {
      for (let i = 0; i < builds.length; i++) {
        const [name, path] = builds[(i + r) % builds.length]!;
        const res = spawnSync(
          process.execPath,
          [
            fileURLToPath(import.meta.url),
            '--churn',
            '--child',
            path,
            '--requests',
            String(requests),
            '--sizes',
            String(size),
          ],
          { encoding: 'utf8' },
        );
        if (res.status !== 0) throw new Error(`${name}: ${res.stderr}`);
        const result = JSON.parse(res.stdout) as Record<string, unknown>;
        rows.push({ round: r, size, build: name, result });
        log(`round ${r + 1}/${rounds} ${size} B ${name} ${res.stdout.trim()}`);
      }
    }
  }
  const fields = [
    'longestRequestMs',
    'requestsOver1ms',
    'requestsOver01ms',
    'p999RequestUs',
    'medianRequestUs',
    'longestDropMs',
    'medianDropUs',
  ];
  const summary = sizes.map((size) => ({
    size,
    builds: Object.fromEntries(
      builds.map(([name]) => {
        const mine = rows.filter((x) => x.size === size && x.build === name).map((x) => x.result);
        const med = (f: (x: Record<string, unknown>) => number | undefined): number | null =>
          round(median(mine.map((x) => f(x) ?? null)), 3);
        const of = (k: string, m: string) => (x: Record<string, unknown>) =>
          (x[k] as Record<string, number> | null)?.[m];
        return [
          name,
          {
            ...Object.fromEntries(fields.map((f) => [f, med((x) => x[f] as number)])),
            relayoutMaxMs: med(of('relayouts', 'maxMs')),
            relayoutMaxCpuMs: med(of('relayouts', 'maxCpuMs')),
            relayoutMedianCpuMs: med(of('relayouts', 'medianCpuMs')),
            relayouts: med(of('relayouts', 'count')),
            byteRebuildMaxMs: med(of('byteRebuilds', 'maxMs')),
            byteRebuildMaxCpuMs: med(of('byteRebuilds', 'maxCpuMs')),
            byteRebuildMedianCpuMs: med(of('byteRebuilds', 'medianCpuMs')),
            byteRebuilds: med(of('byteRebuilds', 'count')),
            gcMaxMs: med(of('gc', 'maxMs')),
          },
        ];
      }),
    ),
  }));
  const result = {
    bench: 'dedup-gc',
    mode: 'churn',
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    environment: environment(),
    parameters: {
      rounds,
      requests,
      sizes,
      peers: CHURN_PEERS,
      filledPerPeer: CHURN_FILL,
      dropEvery: CHURN_DROP_EVERY,
      old: stringFlag(flags, 'old', '') || null,
    },
    summary,
    rounds: rows,
  };
  const file = writeResult('dedup-gc-churn', startedAt, result);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  log(`written to ${file}`);
}

/** This build's cache; with an old build, that one twice (the second is the control). */
function buildsOf(old: string): [string, string][] {
  const newDedup = fileURLToPath(new URL('../src/coap/dedup.js', import.meta.url));
  const builds: [string, string][] = [['new', newDedup]];
  if (old !== '') {
    const oldDedup = resolve(old, 'src/coap/dedup.js');
    builds.push(['old', oldDedup], ['control', oldDedup]);
  }
  return builds;
}

async function main(): Promise<void> {
  const flags = parseFlags(['old', 'rounds', 'uplinks', 'child', 'requests', 'sizes'], ['churn']);
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (flags.churn === true) {
    if (typeof flags.child === 'string') {
      const size = Number(flags.sizes);
      return churnChild(flags.child, numberFlag(flags, 'requests', 1_000_000, 1, 1e8), size);
    }
    churnMain(flags);
    return;
  }
  const uplinks = numberFlag(flags, 'uplinks', 400_000, 10_000, 10_000_000);
  if (typeof flags.child === 'string') return child(flags.child, uplinks);
  const rounds = numberFlag(flags, 'rounds', 3, 1, 50);
  const old = stringFlag(flags, 'old', '');
  const builds = buildsOf(old);
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
