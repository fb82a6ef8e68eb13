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
 * Each GC line also holds `old`: the bytes in use in the old generation (old, code and large
 * object spaces) read when the observer runs, just after that GC. The young generation is empty
 * after a scavenge and nothing is promoted until the next GC, so the growth from one GC line to
 * the next scavenge's is what that scavenge promoted (plus objects allocated in old space
 * directly): what fills the old generation and brings on the next mark-compact.
 *
 * Datagram turns: the preload also wraps `dgram.Socket.prototype.emit` to see each 'message'
 * event. The first datagram of an event-loop turn notes the time and schedules a
 * setImmediate; when it runs (the check phase, after the poll phase has handled everything
 * that was ready) the turn is over: its length (from the first datagram's handler to the check
 * phase, so all I/O handled in that poll phase, MQTT reads included) and its datagrams. A turn
 * of 1 ms or more is logged on its own (`ev: 'turn'`, start, length, datagrams), every turn
 * counted in one line per flush (`ev: 'turns'`, `d` 0: turns, datagrams, the most in one turn, turns
 * of ≥ 1 ms): long turns are the server's own work holding up the requests queued behind it.
 * The cost: one setImmediate per turn with datagrams, the same in every server measured.
 *
 * @module
 */
import { Socket as DgramSocket } from 'node:dgram';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver, constants, performance } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';

const dir = process.env.BENCH_PAUSE_LOG_DIR;
/** The stall timer's period and the lateness it reports. */
const TICK_MS = 5;
const STALL_MS = 3;
/** Datagram turns this long or longer are logged one by one. */
const LONG_TURN_MS = 1;

/** The spaces of the old generation. */
const OLD_SPACES = new Set([
  'old_space',
  'code_space',
  'large_object_space',
  'code_large_object_space',
]);

function oldGenerationUsed(): number {
  let used = 0;
  for (const s of getHeapSpaceStatistics()) {
    if (OLD_SPACES.has(s.space_name)) used += s.space_used_size;
  }
  return used;
}

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
    const old = oldGenerationUsed();
    for (const e of list.getEntries()) {
      const kind = (e as { detail?: { kind?: number } | null }).detail?.kind ?? -1;
      lines.push(
        `${JSON.stringify({
          ev: 'gc',
          kind: KINDS[kind] ?? String(kind),
          t: origin + e.startTime,
          d: e.duration,
          old,
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
  // datagram turns (see the module comment)
  let turnStart = -1;
  let turnDatagrams = 0;
  let turns = 0;
  let turnDatagramsTotal = 0;
  let mostInTurn = 0;
  let longTurns = 0;
  const endTurn = (): void => {
    const d = performance.now() - turnStart;
    turns++;
    turnDatagramsTotal += turnDatagrams;
    if (turnDatagrams > mostInTurn) mostInTurn = turnDatagrams;
    if (d >= LONG_TURN_MS) {
      longTurns++;
      lines.push(`${JSON.stringify({ ev: 'turn', t: origin + turnStart, d, n: turnDatagrams })}\n`);
    }
    turnStart = -1;
    turnDatagrams = 0;
  };
  // eslint-disable-next-line @typescript-eslint/unbound-method -- called with its socket below
  const emit = DgramSocket.prototype.emit;
  DgramSocket.prototype.emit = function (
    this: DgramSocket,
    event: string | symbol,
    ...args: unknown[]
  ): boolean {
    if (event === 'message') {
      if (turnStart < 0) {
        turnStart = performance.now();
        setImmediate(endTurn);
      }
      turnDatagrams++;
    }
    return emit.apply(this, [event, ...args] as Parameters<typeof emit>);
  };
  const countTurns = (): void => {
    if (turns > 0) {
      lines.push(
        `${JSON.stringify({
          ev: 'turns',
          t: origin + performance.now(),
          d: 0,
          turns,
          datagrams: turnDatagramsTotal,
          most: mostInTurn,
          long: longTurns,
        })}\n`,
      );
    }
    turns = 0;
    turnDatagramsTotal = 0;
    mostInTurn = 0;
    longTurns = 0;
  };
  setInterval(() => {
    countTurns();
    flush();
  }, 200).unref();
  process.on('exit', () => {
    countTurns();
    flush();
  });
}
