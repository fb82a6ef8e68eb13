/**
 * What `coap-edge serve` loads at start is what its configuration uses: the OpenTelemetry trace
 * SDK and its OTLP exporters only when tracing is asked for, the embedded broker (aedes) only
 * when one runs. Each costs start-up CPU, paid by every pod start and restart and by every
 * serve process of the tests (docs/testing.md, "Suite time"). The child's loaded CommonJS
 * modules are listed at its exit by a preload (test/helpers/loaded-modules.ts).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOADED_MODULES_HOOK } from '../helpers/loaded-modules.js';
import { CLI, REPO_ROOT, Proc, cleanEnv, killAll, listeningPort } from '../helpers/processes.js';

after(killAll);

const dir = mkdtempSync(join(tmpdir(), 'coap-edge-serve-modules-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const DEVICES = join(REPO_ROOT, 'deploy', 'examples', 'devices.json');
const TRACE_SDK = /node_modules\/@opentelemetry\/(sdk-trace-[a-z]+|exporter-trace-otlp-[a-z]+)\//;
const AEDES = /node_modules\/(aedes-persistence|mqemitter)\//;

/** Starts `serve` with `flags`, stops it with SIGINT once listening; its loaded modules. */
async function modulesOfServe(name: string, flags: readonly string[]): Promise<string[]> {
  const file = join(dir, `${name}.txt`);
  const proc = new Proc(
    process.execPath,
    ['--import', LOADED_MODULES_HOOK, CLI, 'serve', '--devices', DEVICES, ...flags],
    {
      env: cleanEnv({ LOADED_MODULES_FILE: file }),
      timeoutMs: 30_000,
    },
  );
  await listeningPort(proc);
  proc.child.kill('SIGINT');
  const done = await proc.done;
  assert.equal(done.code, 0, `${done.stdout}${done.stderr}`);
  return readFileSync(file, 'utf8').split('\n').filter(Boolean);
}

const common = ['--dtls-port', '0', '--bind', '127.0.0.1'];

describe('modules serve loads at start', () => {
  it('tracing off and an external broker: no trace SDK, no OTLP exporter, no aedes', async () => {
    // port 1: nothing listens; the pool and the command intake connect in the background
    const loaded = await modulesOfServe('off', [...common, '--mqtt-url', 'mqtt://127.0.0.1:1']);
    assert.ok(
      loaded.some((m) => m.includes('/node_modules/mqtt-packet/')),
      'the list holds the packages the bridge uses',
    );
    assert.deepEqual(
      loaded.filter((m) => TRACE_SDK.test(m)),
      [],
    );
    assert.deepEqual(
      loaded.filter((m) => AEDES.test(m)),
      [],
    );
  });

  it('tracing on and the embedded broker: the trace SDK and aedes are loaded', async () => {
    // nothing is exported (no datagram is traced); the endpoint only turns tracing on
    const loaded = await modulesOfServe('on', [
      ...common,
      '--embedded-broker',
      '0',
      '--otlp-endpoint',
      'http://127.0.0.1:1/v1/traces',
    ]);
    assert.ok(
      loaded.some((m) => m.includes('/node_modules/@opentelemetry/sdk-trace-node/')),
      'the preload sees the trace SDK when it is loaded',
    );
    assert.ok(
      loaded.some((m) => m.includes('/node_modules/@opentelemetry/exporter-trace-otlp-proto/')),
      'and the exporter of the protocol in use (http/protobuf by default)',
    );
    assert.ok(
      loaded.some((m) => AEDES.test(m)),
      'and aedes when the embedded broker runs',
    );
  });
});
