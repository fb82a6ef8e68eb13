/**
 * The command line in-process: `buildProgram` of src/cli.ts with captured output and a given
 * environment, so argument parsing, configuration precedence and start-up errors are tested
 * without starting a node process each time (test/cli/cli.test.ts keeps a few process runs
 * for the binary itself).
 */
import { Writable } from 'node:stream';
import { CommanderError } from 'commander';
import { CLI_FAIL, buildProgram } from '../../src/cli.js';

/** A stream that keeps what is written to it. */
class Capture extends Writable {
  text = '';
  override _write(chunk: unknown, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.text += String(chunk);
    cb();
  }
}

export interface InProcessResult {
  /** The exit code the binary would have: 0, or the thrown error's (usage errors: 2). */
  readonly code: number;
  /** What the command threw (a usage error, `--help`, or coap-edge's own `fail`). */
  readonly error: CommanderError | undefined;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `coap-edge <args>` in this process with `env` as its whole environment. A command that
 * starts a server must not be run this way (it would keep running); start-up errors may.
 */
export async function cliInProcess(
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
): Promise<InProcessResult> {
  const stdout = new Capture();
  const stderr = new Capture();
  let error: CommanderError | undefined;
  try {
    await buildProgram({ stdout, stderr, env }).parseAsync([...args], { from: 'user' });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    error = err;
  }
  // as src/cli.ts main(): coap-edge's own errors keep their code, commander's usage errors exit 2
  const code =
    error === undefined ? 0 : error.code === CLI_FAIL || error.exitCode === 0 ? error.exitCode : 2;
  return { code, error, stdout: stdout.text, stderr: stderr.text };
}

/** What a test prints when an assertion on `r` fails. */
export function describeResult(r: InProcessResult): string {
  return `exit ${r.code} (${r.error?.code ?? 'no error'}: ${r.error?.message ?? ''})\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}
