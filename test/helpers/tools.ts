/**
 * External commands the tests spawn (redis-server, mosquitto, coap-client-openssl, promtool,
 * ...). On a developer machine a missing one skips the tests that need it, naming what to
 * install; in CI (CI set and not "false"/"0") .ci/run installs them all, so a missing one is
 * a broken CI machine: the check throws, failing every test file that loads it instead of
 * turning its tests into silent skips.
 */
import { spawnSync } from 'node:child_process';

/** True when `cmd arg` can be started (the command is on the PATH). */
export function haveCommand(cmd: string, arg: string): boolean {
  return spawnSync(cmd, [arg], { stdio: 'ignore', timeout: 5_000 }).error === undefined;
}

export function inCI(): boolean {
  const v = process.env.CI;
  return v !== undefined && v !== '' && v !== 'false' && v !== '0';
}

/**
 * Checks `[command, probe argument]` pairs: false when all are installed, else
 * `not installed: a, b` (a skip reason). In CI a missing command throws instead.
 */
export function missingCommands(commands: readonly (readonly [string, string])[]): string | false {
  const missing = commands.filter(([cmd, arg]) => !haveCommand(cmd, arg)).map(([cmd]) => cmd);
  if (missing.length === 0) return false;
  const why = `not installed: ${missing.join(', ')}`;
  if (inCI()) throw new Error(`${why}: CI installs every tool the tests use (.ci/run)`);
  return why;
}
