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
    { env: { ...process.env, ...env } },
  );
  return JSON.parse(stdout) as Record<string, unknown>;
}
