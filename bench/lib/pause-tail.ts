/**
 * `uplink.js --pause-log`: sets a server's pauses (GCs and event-loop stalls logged by
 * bench/lib/pause-log.ts in that process) beside the per-request latencies of a phase, to see
 * which pauses the slowest requests sat through.
 *
 * A request "sat through" a pause when the pause overlaps [sent, sent + latency]. The tail is
 * the requests at or above the phase's p99; the same overlaps over all requests are the base
 * rate (a tail made by pauses overlaps them far more often than the base rate).
 *
 * @module
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { percentile, round } from './stats.js';
import type { UplinkPhase } from './uplink-load.js';

export interface Pause {
  /** gc, stall, turn (a datagram turn of ≥ 1 ms), turns (the turns counted since the last). */
  readonly ev: 'gc' | 'stall' | 'turn' | 'turns';
  /** GC kind (scavenge, mark-compact, incremental, weak-callbacks). */
  readonly kind?: string;
  /** Start, epoch ms. */
  readonly t: number;
  /** Duration, ms. */
  readonly d: number;
  /** GC lines: bytes in use in the old generation just after it (bench/lib/pause-log.ts). */
  readonly old?: number;
  /** turn lines: datagrams handled in it. */
  readonly n?: number;
  /** turns lines: turns with datagrams, their datagrams, the most in one, those of ≥ 1 ms. */
  readonly turns?: number;
  readonly datagrams?: number;
  readonly most?: number;
  readonly long?: number;
}

/**
 * Bytes the old generation grew by through the GCs that started in [from, to]: each line's
 * `old` less the previous GC line's, over every GC but mark-compacts (which free; their
 * growth is not known). Between two GCs the old generation grows only by what a scavenge
 * promotes and by objects allocated there directly, so this is the promotion the window's
 * work caused. Undefined when the log has no `old` figures (an older preload).
 */
function oldGrowth(pauses: readonly Pause[], from: number, to: number): number | undefined {
  let prev: number | undefined;
  let grown = 0;
  let seen = false;
  for (const p of pauses) {
    if (p.ev !== 'gc' || p.old === undefined) continue;
    if (prev !== undefined && p.t >= from && p.t <= to && p.kind !== 'mark-compact') {
      if (p.old > prev) grown += p.old - prev;
      seen = true;
    }
    prev = p.old;
  }
  return seen ? grown : undefined;
}

/** The pauses a process has logged so far (`<dir>/<pid>.jsonl`). */
export function readPauses(dir: string, pid: number): Pause[] {
  const file = join(dir, `${pid}.jsonl`);
  if (!existsSync(file)) return [];
  const out: Pause[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line === '') continue;
    try {
      out.push(JSON.parse(line) as Pause);
    } catch {
      // a line cut by a concurrent append: the next read has it whole
    }
  }
  return out;
}

interface Count {
  n: number;
  totalMs: number;
  maxMs: number;
}

function add(c: Count, d: number): void {
  c.n++;
  c.totalMs += d;
  if (d > c.maxMs) c.maxMs = d;
}

const rounded = (c: Count): Count => ({
  n: c.n,
  totalMs: round(c.totalMs, 1)!,
  maxMs: round(c.maxMs, 2)!,
});

/** Pause counts inside the phase's window and how they line up with its p99 requests. */
export function pauseTail(phase: UplinkPhase, pauses: readonly Pause[]): Record<string, unknown> {
  const lat = phase.latency.values();
  const sent = phase.sentAt.values();
  const from = phase.windowStartMs;
  const to = phase.windowEndMs;
  const inWindow = pauses.filter((p) => p.t + p.d >= from && p.t <= to);
  const gcs = inWindow.filter((p) => p.ev === 'gc');
  const stalls = inWindow.filter((p) => p.ev === 'stall');
  const longTurns = inWindow.filter((p) => p.ev === 'turn');
  // the count lines are written every 200 ms, each for the turns since the one before
  const counts = pauses.filter((p) => p.ev === 'turns' && p.t > from && p.t <= to + 200);
  const byKind: Record<string, Count> = {};
  for (const g of gcs) add((byKind[g.kind ?? '?'] ??= { n: 0, totalMs: 0, maxMs: 0 }), g.d);
  const gcOver5 = gcs.filter((g) => g.d > 5).length;
  const stallCount: Count = { n: 0, totalMs: 0, maxMs: 0 };
  for (const s of stalls) add(stallCount, s.d);
  const p99 = percentile(lat.slice().sort(), 99);
  // overlaps, all requests and the tail
  const overlaps = (i: number, list: readonly Pause[]): boolean => {
    const a = sent[i]!;
    const b = a + lat[i]!;
    for (const p of list) if (p.t < b && p.t + p.d > a) return true;
    return false;
  };
  const all = { n: 0, gc: 0, stall: 0, turn: 0 };
  const tail = { n: 0, gc: 0, gcOver2ms: 0, stall: 0, neither: 0, turn: 0, none: 0 };
  const gcOver2 = gcs.filter((g) => g.d > 2);
  for (let i = 0; i < lat.length; i++) {
    const g = overlaps(i, gcs);
    const s = overlaps(i, stalls);
    const lt = overlaps(i, longTurns);
    all.n++;
    if (g) all.gc++;
    if (s) all.stall++;
    if (lt) all.turn++;
    if (p99 !== null && lat[i]! >= p99) {
      tail.n++;
      if (g) tail.gc++;
      if (overlaps(i, gcOver2)) tail.gcOver2ms++;
      if (s) tail.stall++;
      if (!g && !s) tail.neither++;
      if (lt) tail.turn++;
      if (!g && !s && !lt) tail.none++;
    }
  }
  const share = (k: number, n: number): number | null => (n > 0 ? round(k / n, 3) : null);
  const promoted = oldGrowth(pauses, from, to);
  return {
    uplinks: phase.messages,
    promotedBytes: promoted ?? null,
    promotedBytesPer10k:
      promoted !== undefined && phase.messages > 0
        ? Math.round((promoted * 10_000) / phase.messages)
        : null,
    gc: Object.fromEntries(Object.entries(byKind).map(([k, c]) => [k, rounded(c)])),
    gcOver5ms: gcOver5,
    gcOver5msPer10k: phase.messages > 0 ? round((gcOver5 * 10_000) / phase.messages, 2) : null,
    stalls: rounded(stallCount),
    turns: turnCounts(counts, longTurns, phase.messages),
    p99Ms: round(p99, 3),
    tail: {
      requests: tail.n,
      shareOverlappingGc: share(tail.gc, tail.n),
      shareOverlappingGcOver2ms: share(tail.gcOver2ms, tail.n),
      shareOverlappingStall: share(tail.stall, tail.n),
      shareOverlappingNeither: share(tail.neither, tail.n),
      shareOverlappingLongTurn: share(tail.turn, tail.n),
      shareOverlappingNone: share(tail.none, tail.n),
    },
    all: {
      requests: all.n,
      shareOverlappingGc: share(all.gc, all.n),
      shareOverlappingStall: share(all.stall, all.n),
      shareOverlappingLongTurn: share(all.turn, all.n),
    },
  };
}

/** The datagram turns of a window: how many, datagrams per turn, the long ones. */
function turnCounts(
  counts: readonly Pause[],
  long: readonly Pause[],
  uplinks: number,
): Record<string, number | null> | null {
  if (counts.length === 0) return null;
  let turns = 0;
  let datagrams = 0;
  let most = 0;
  for (const c of counts) {
    turns += c.turns ?? 0;
    datagrams += c.datagrams ?? 0;
    most = Math.max(most, c.most ?? 0);
  }
  const lengths = long.map((t) => t.d).sort((a, b) => a - b);
  return {
    turns,
    datagrams,
    datagramsPerTurn: turns > 0 ? round(datagrams / turns, 2) : null,
    mostInOneTurn: most,
    over1ms: lengths.length,
    over2ms: lengths.filter((d) => d >= 2).length,
    over1msPer10k: uplinks > 0 ? round((lengths.length * 10_000) / uplinks, 1) : null,
    longestMs: lengths.length > 0 ? round(lengths[lengths.length - 1]!, 2) : null,
  };
}

/** Sums of {@link pauseTail} results over rounds (counts add up; shares are weighted). */
export function pauseTotals(rows: readonly Record<string, unknown>[]): Record<string, unknown> {
  let uplinks = 0;
  let over5 = 0;
  let tailN = 0;
  let tailGc = 0;
  let tailStall = 0;
  let tailTurn = 0;
  let tailNone = 0;
  let turnsSeen = false;
  const turnSum = { turns: 0, datagrams: 0, most: 0, over1ms: 0, over2ms: 0, longestMs: 0 };
  let allN = 0;
  let allGc = 0;
  let promoted = 0;
  let promotedUplinks = 0;
  const kinds: Record<string, Count> = {};
  for (const r of rows) {
    uplinks += r.uplinks as number;
    if (typeof r.promotedBytes === 'number') {
      promoted += r.promotedBytes;
      promotedUplinks += r.uplinks as number;
    }
    over5 += r.gcOver5ms as number;
    const t = r.tail as Record<string, number | null>;
    const a = r.all as Record<string, number | null>;
    tailN += t.requests ?? 0;
    tailGc += (t.shareOverlappingGc ?? 0) * (t.requests ?? 0);
    tailStall += (t.shareOverlappingStall ?? 0) * (t.requests ?? 0);
    tailTurn += (t.shareOverlappingLongTurn ?? 0) * (t.requests ?? 0);
    tailNone += (t.shareOverlappingNone ?? 0) * (t.requests ?? 0);
    const tc = r.turns as Record<string, number | null> | null | undefined;
    if (tc !== null && tc !== undefined) {
      turnsSeen = true;
      turnSum.turns += tc.turns ?? 0;
      turnSum.datagrams += tc.datagrams ?? 0;
      turnSum.most = Math.max(turnSum.most, tc.mostInOneTurn ?? 0);
      turnSum.over1ms += tc.over1ms ?? 0;
      turnSum.over2ms += tc.over2ms ?? 0;
      turnSum.longestMs = Math.max(turnSum.longestMs, tc.longestMs ?? 0);
    }
    allN += a.requests ?? 0;
    allGc += (a.shareOverlappingGc ?? 0) * (a.requests ?? 0);
    for (const [k, c] of Object.entries(r.gc as Record<string, Count>)) {
      const s = (kinds[k] ??= { n: 0, totalMs: 0, maxMs: 0 });
      s.n += c.n;
      s.totalMs += c.totalMs;
      s.maxMs = Math.max(s.maxMs, c.maxMs);
    }
  }
  return {
    uplinks,
    promotedBytesPer10k:
      promotedUplinks > 0 ? Math.round((promoted * 10_000) / promotedUplinks) : null,
    gc: Object.fromEntries(
      Object.entries(kinds).map(([k, c]) => [
        k,
        { ...rounded(c), per10k: uplinks > 0 ? round((c.n * 10_000) / uplinks, 2) : null },
      ]),
    ),
    gcOver5ms: over5,
    gcOver5msPer10k: uplinks > 0 ? round((over5 * 10_000) / uplinks, 2) : null,
    tailShareOverlappingGc: tailN > 0 ? round(tailGc / tailN, 3) : null,
    tailShareOverlappingStall: tailN > 0 ? round(tailStall / tailN, 3) : null,
    tailShareOverlappingLongTurn: tailN > 0 && turnsSeen ? round(tailTurn / tailN, 3) : null,
    tailShareOverlappingNone: tailN > 0 && turnsSeen ? round(tailNone / tailN, 3) : null,
    turns: turnsSeen
      ? {
          ...turnSum,
          datagramsPerTurn: turnSum.turns > 0 ? round(turnSum.datagrams / turnSum.turns, 2) : null,
          over1msPer10k: uplinks > 0 ? round((turnSum.over1ms * 10_000) / uplinks, 1) : null,
        }
      : null,
    allShareOverlappingGc: allN > 0 ? round(allGc / allN, 3) : null,
  };
}
