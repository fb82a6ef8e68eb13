/**
 * Preload (`node --import <this file> …`) that logs a server process's pauses for
 * `uplink.js --pause-log`: every GC (PerformanceObserver 'gc': start, duration, kind) and
 * every event-loop stall (a 5 ms interval timer firing more than 3 ms late: GC, synchronous
 * work or the OS not scheduling the process — the log cannot tell those apart, the GC lines
 * can). One JSON line per event, times as epoch ms (performance.timeOrigin + startTime), so
 * the bench can set them beside its own per-request timestamps; appended to
 * `$BENCH_PAUSE_LOG_DIR/<pid>.jsonl`, flushed every 200 ms and at exit. Nothing is loaded
 * without that variable.
 *
 * @module
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver, constants, performance } from 'node:perf_hooks';

const dir = process.env.BENCH_PAUSE_LOG_DIR;
/** The stall timer's period and the lateness it reports. */
const TICK_MS = 5;
const STALL_MS = 3;

const KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'scavenge',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'mark-compact',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weak-callbacks',
};

if (dir !== undefined && dir !== '') {
  const file = join(dir, `${process.pid}.jsonl`);
  const origin = performance.timeOrigin;
  let lines: string[] = [];
  const flush = (): void => {
    if (lines.length === 0) return;
    appendFileSync(file, lines.join(''));
    lines = [];
  };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as { detail?: { kind?: number } | null }).detail?.kind ?? -1;
      lines.push(
        `${JSON.stringify({
          ev: 'gc',
          kind: KINDS[kind] ?? String(kind),
          t: origin + e.startTime,
          d: e.duration,
        })}\n`,
      );
    }
  }).observe({ entryTypes: ['gc'] });
  let last = performance.now();
  setInterval(() => {
    const now = performance.now();
    const late = now - last - TICK_MS;
    if (late > STALL_MS) {
      lines.push(`${JSON.stringify({ ev: 'stall', t: origin + last + TICK_MS, d: late })}\n`);
    }
    last = now;
  }, TICK_MS).unref();
  setInterval(flush, 200).unref();
  process.on('exit', flush);
}
