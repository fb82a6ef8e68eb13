/**
 * Runs an ES module script in a child node that may use V8's natives syntax
 * (`%OptimizeFunctionOnNextCall`, `%GetOptimizationStatus`) and `gc()`, with automatic
 * tier-up off (`--interrupt-budget` high): only the functions the script names are compiled,
 * when it says, so whether code stays optimized after a GC is a fact, not a timing. Returns
 * the child's stdout parsed as JSON. Used by the tests that a full GC leaves a path optimized.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
/** The compiled test/helpers/tracing.js, for a child script's `setupTestTracing`. */
const TRACING_HELPER = new URL('./tracing.js', import.meta.url).href;

/** What such a script reports per function it checks. */
export interface JitStatus {
  /** Optimized after `%OptimizeFunctionOnNextCall` and a call. */
  readonly compiled: boolean;
  /** Still optimized after the full GCs. */
  readonly afterGc: boolean;
  /** Still optimized after one more call (or trace) past the GCs. */
  readonly afterNextCall: boolean;
}

export async function runJitChild(
  script: string,
  env: Readonly<Record<string, string>>,
): Promise<Record<string, unknown>> {
  const { stdout } = await execFileAsync(
    process.execPath,
    [
      '--allow-natives-syntax',
      '--expose-gc',
      '--interrupt-budget=1000000000',
      '--input-type=module',
      '-e',
      script,
    ],
    { env: { ...process.env, TRACING_HELPER, ...env } },
  );
  return JSON.parse(stdout) as Record<string, unknown>;
}

/**
 * The start of such a script for the tracing tests: `src` (the env's SRC_ROOT, a file URL of a
 * compiled src/), `turn` (one event-loop turn), `trace` (telemetry/trace.js), tracing set up
 * as the gateway does at ratio 1 (test/helpers/tracing.ts's defaults) with a counting exporter (`exported`, its span count) and no
 * timer export, `flush` (the provider's forceFlush, from the setup channel) and `tracing`.
 */
export const TRACING_CHILD_SETUP = `
const src = process.env.SRC_ROOT;
const { subscribe } = await import('node:diagnostics_channel');
const { setImmediate: turn } = await import('node:timers/promises');
const { setupTestTracing } = await import(process.env.TRACING_HELPER);
const trace = await import(src + 'telemetry/trace.js');
let flush;
subscribe(trace.TRACING_SETUP_CHANNEL, (e) => { flush = e.forceFlush; });
let exported = 0;
const exporter = {
  export(spans, done) { exported += spans.length; done({ code: 0 }); },
  shutdown: async () => undefined,
  forceFlush: async () => undefined,
};
const handle = setupTestTracing({ env: { OTEL_BSP_SCHEDULE_DELAY: '1000000000' }, exporter });
const tracing = handle.tracing;
`;
