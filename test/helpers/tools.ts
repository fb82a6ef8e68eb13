/**
 * External commands the tests spawn (redis-server, mosquitto, coap-client-openssl, promtool,
 * ...). On a developer machine a missing one skips the tests that need it, naming what to
 * install; in CI (CI set and not "false"/"0") .ci/run installs them all, so a missing one is
 * a broken CI machine and fails the test file instead of turning it into silent skips.
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
 * The `skip` option for tests that need tools: `missing` is false when everything is there,
 * else why not (e.g. "not installed: mosquitto"). Outside CI that reason is the skip message;
 * in CI it throws, failing the test file.
 */
export function skipUnlessInstalled(missing: string | false): string | false {
  if (missing === false) return false;
  if (inCI()) throw new Error(`${missing}: CI installs every tool the tests use (.ci/run)`);
  return missing;
}
