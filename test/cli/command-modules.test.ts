/**
 * What the commands other than `serve` load: `--help`, `device` and `bench` start without the
 * settings' and the devices file's zod schemas (about 95 modules, a third of such a process's
 * start-up CPU) and without the gateway; `serve` gets its setting flags when it runs or its
 * help is asked for, also through `help serve` (docs/operations.md, "Start time"). The child's
 * loaded modules, ES modules included (`LOADED_MODULES_ESM`), are listed at its exit by a
 * preload (test/helpers/loaded-modules.ts).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeResult, cliInProcess } from '../helpers/cli-in-process.js';
import { LOADED_MODULES_HOOK } from '../helpers/loaded-modules.js';
import { CLI, Proc, cleanEnv, killAll } from '../helpers/processes.js';

after(killAll);

const dir = mkdtempSync(join(tmpdir(), 'coap-edge-command-modules-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const ZOD = /\/node_modules\/zod\//;
const GATEWAY = /\/dist\/src\/gateway\//;
/** What the gateway brings: brokers, Redis, HTTP, metrics, tracing, logging. */
const GATEWAY_PACKAGES =
  /\/node_modules\/(aedes|mqtt|ioredis|undici|prom-client|pino|yaml|@opentelemetry\/[a-z-]+)\//;

/** Runs the binary with `args`; its exit code and the modules it loaded. */
async function modulesOf(
  name: string,
  args: readonly string[],
): Promise<{ code: number | null; output: string; loaded: string[] }> {
  const file = join(dir, `${name}.txt`);
  const proc = new Proc(process.execPath, ['--import', LOADED_MODULES_HOOK, CLI, ...args], {
    env: cleanEnv({ LOADED_MODULES_FILE: file, LOADED_MODULES_ESM: '1' }),
    timeoutMs: 30_000,
  });
  const done = await proc.done;
  const loaded = readFileSync(file, 'utf8').split('\n').filter(Boolean);
  return { code: done.code, output: `${done.stdout}${done.stderr}`, loaded };
}

/** No module of `loaded` is one of `pattern`'s (the list names them when the check fails). */
function assertNone(loaded: readonly string[], pattern: RegExp, message: string): void {
  assert.deepEqual(
    loaded.filter((m) => pattern.test(m)),
    [],
    message,
  );
}

describe('modules the commands load', () => {
  it('--help, device and bench: no zod, no gateway; serve --print-config: zod', async () => {
    const [help, device, bench, serve] = await Promise.all([
      modulesOf('help', ['--help']),
      // nothing listens on port 1: the device gives up after its timeout (exit 1)
      modulesOf('device', [
        ...['device', 'post', 'thing/measurepoint/post', '--port', '1', '--timeout', '0.3'],
        ...['--product-key', 'pk', '--device-key', 'dk', '--secret', 'secret'],
      ]),
      modulesOf('bench', ['bench', '--generate', '--count', '2']),
      modulesOf('serve', ['serve', '--print-config']),
    ]);
    assert.equal(help.code, 0, help.output);
    assert.equal(device.code, 1, device.output);
    assert.equal(bench.code, 0, bench.output);
    assert.equal(serve.code, 0, serve.output);
    assert.ok(
      serve.loaded.some((m) => ZOD.test(m)),
      'the list holds ES modules: serve loads zod for its settings',
    );
    assert.ok(
      device.loaded.some((m) => /\/dist\/src\/tools\/device\.js$/.test(m)),
      'device ran its tool',
    );
    for (const [name, r] of Object.entries({ help, device, bench })) {
      assertNone(r.loaded, ZOD, `${name}: no zod`);
      assertNone(r.loaded, GATEWAY, `${name}: no gateway`);
      assertNone(r.loaded, GATEWAY_PACKAGES, `${name}: none of the gateway's packages`);
    }
  });

  it('help serve and serve --help list the setting flags', async () => {
    const [viaHelp, viaFlag] = await Promise.all([
      cliInProcess(['help', 'serve']),
      cliInProcess(['serve', '--help']),
    ]);
    // the help itself, not its exit code: commander takes that from process.exitCode, which
    // node:test sets once any test of this process has failed
    assert.equal(viaHelp.error?.code, 'commander.help', describeResult(viaHelp));
    assert.match(viaHelp.stdout, /--dtls-port <port>/, describeResult(viaHelp));
    assert.match(viaHelp.stdout, /--redis-url /, describeResult(viaHelp));
    assert.equal(viaHelp.stdout, viaFlag.stdout);
  });
});
