/** Flag parsing shared by the benchmark scripts (node:util parseArgs plus number checks). */
import { parseArgs } from 'node:util';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export type StringFlags = Record<string, string | boolean | undefined>;

/** Parses `--name value` / `--flag` options; unknown flags are usage errors. */
export function parseFlags(
  strings: readonly string[],
  booleans: readonly string[],
  argv = process.argv.slice(2),
): StringFlags {
  const options: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const s of strings) options[s] = { type: 'string' };
  for (const b of [...booleans, 'help']) options[b] = { type: 'boolean' };
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
}

/** A number flag within [min, max]; integers only when `integer`. */
export function numberFlag(
  flags: StringFlags,
  name: string,
  fallback: number,
  min: number,
  max: number,
  integer = true,
): number {
  const raw = flags[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (
    typeof raw !== 'string' ||
    raw.trim() === '' ||
    !Number.isFinite(n) ||
    (integer && !Number.isInteger(n)) ||
    n < min ||
    n > max
  ) {
    throw new UsageError(
      `--${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}`,
    );
  }
  return n;
}

export function choiceFlag<T extends string>(
  flags: StringFlags,
  name: string,
  choices: readonly T[],
  fallback: T,
): T {
  const raw = flags[name];
  if (raw === undefined) return fallback;
  const hit = choices.find((c) => c === raw);
  if (hit === undefined) throw new UsageError(`--${name} must be one of ${choices.join(', ')}`);
  return hit;
}

export function stringFlag(flags: StringFlags, name: string, fallback: string): string {
  const raw = flags[name];
  return typeof raw === 'string' && raw !== '' ? raw : fallback;
}

/**
 * Runs a benchmark script's main. A usage error prints the usage and exits 2; any other
 * error exits 1 at once (servers are stopped by then; open client sockets must not hold
 * the process).
 */
export function runScript(name: string, usage: string, main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n${usage}\n`);
      process.exit(2);
    }
    process.stderr.write(
      `${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  });
}
