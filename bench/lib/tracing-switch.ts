/**
 * A preload (`node [--expose-gc] --import file://…/dist/bench/lib/tracing-switch.js …`) for
 * `instructions.ts --alternate`: it switches a running coap-edge's tracing between off and a
 * sampling ratio, so that one process runs segments of both (the noise between processes,
 * ±5–15 % at this machine's load, does not enter the comparison).
 *
 * It subscribes to `setupTracing`'s channel (TRACING_SETUP_CHANNEL, src/telemetry/trace.ts)
 * and keeps the gateway's `Tracing` and the provider's `forceFlush`. On each SIGUSR2 it reads
 * the JSON command in the file `BENCH_TRACING_SWITCH_FILE`, `{"flush"?: true, "gc"?: true,
 * "mode"?: "off" | "0" | "1" | "100"}`, and does, in this order:
 *
 * - `flush`: `forceFlush()` (the batch processor exports what waits, and the answer is in),
 *   so a segment's traces are exported within it, not in the next segment;
 * - `gc`: one full, synchronous GC (needs `--expose-gc`), so every segment starts from the
 *   same heap state (as bench/lib/gc-signal.ts);
 * - `mode`: `off` sets `tracing.on = false`, which is what every component reads first on
 *   the datagram path (exactly the branch a process without tracing takes: `NO_TRACING.on`
 *   is false too); a number sets `on = true` and `ratio` = that percentage / 100.
 *
 * Then it writes `tracing-switch: <n> done` to stderr (the driver waits for it). What it
 * does not change: the SDK stays loaded and the global context manager (SyncContextManager)
 * stays registered; with `on` false no datagram reaches either (the uplink path reads only
 * `context.active()`, ROOT_CONTEXT with either manager). SIGUSR2 is also what gc-signal and
 * http-posts listen to: they are not used together.
 */
import { subscribe } from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import { TRACING_SETUP_CHANNEL, type TracingSetupEvent } from '../../src/telemetry/trace.js';

interface Command {
  readonly flush?: boolean;
  readonly gc?: boolean;
  readonly mode?: string;
}

const file = process.env.BENCH_TRACING_SWITCH_FILE;
if (file === undefined) throw new Error('tracing-switch: BENCH_TRACING_SWITCH_FILE is not set');
const collect = (globalThis as { gc?: () => void }).gc;

let setup: TracingSetupEvent | undefined;
subscribe(TRACING_SETUP_CHANNEL, (message) => {
  setup = message as TracingSetupEvent;
});

let count = 0;

async function run(c: Command): Promise<void> {
  if (setup === undefined) throw new Error('no tracing set up (no --otlp-endpoint?)');
  if (c.flush === true) await setup.forceFlush();
  if (c.gc === true) {
    if (collect === undefined) throw new Error('gc: run node with --expose-gc');
    collect();
  }
  if (c.mode === 'off') setup.tracing.on = false;
  else if (c.mode !== undefined) {
    const percent = Number(c.mode);
    if (!Number.isFinite(percent) || percent < 0 || percent > 100)
      throw new Error(`mode ${c.mode}`);
    setup.tracing.ratio = percent / 100;
    setup.tracing.on = true;
  }
}

process.on('SIGUSR2', () => {
  count++;
  const n = count;
  let c: Command;
  try {
    c = JSON.parse(readFileSync(file, 'utf8')) as Command;
  } catch (err) {
    process.stderr.write(`tracing-switch: ${n} failed: ${String(err)}\n`);
    return;
  }
  run(c).then(
    () => process.stderr.write(`tracing-switch: ${n} done\n`),
    (err: unknown) =>
      process.stderr.write(
        `tracing-switch: ${n} failed: ${err instanceof Error ? err.message : String(err)}\n`,
      ),
  );
});
