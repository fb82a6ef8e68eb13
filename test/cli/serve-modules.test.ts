/**
 * What `coap-edge serve` loads at start is what its configuration uses: the OpenTelemetry trace
 * SDK and its OTLP exporters only when tracing is asked for, the embedded broker (aedes) only
 * when one runs. Each costs start-up CPU, paid by every pod start and restart and by every
 * serve process of the tests (docs/testing.md, "Suite time"). The child's loaded CommonJS
 * modules are listed at its exit by a preload (test/helpers/loaded-modules.ts).
 *
 * undici is loaded only for a registry, an HTTP route or a presence webhook (the secret stack
 * and the HTTP backend are also checked each in a child of its own), ioredis only for a Redis
 * (`redis/client.ts` requires it when it makes a connection), yaml only for a configuration
 * file (or a setting given as YAML), and mqtt.js's WebSocket and SOCKS transports not for an
 * `mqtt://` broker (`bridge/mqtt/connection.ts` builds its TCP or TLS stream itself).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { SHARED_REDIS_URL } from '../helpers/e2e.js';
import { LOADED_MODULES_HOOK } from '../helpers/loaded-modules.js';
import { CLI, REPO_ROOT, Proc, cleanEnv, killAll, listeningPort } from '../helpers/processes.js';

after(killAll);

const dir = mkdtempSync(join(tmpdir(), 'coap-edge-serve-modules-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const DEVICES = join(REPO_ROOT, 'deploy', 'examples', 'devices.json');
const TRACE_SDK = /node_modules\/@opentelemetry\/(sdk-trace-[a-z]+|exporter-trace-otlp-[a-z]+)\//;
const AEDES = /node_modules\/(aedes-persistence|mqemitter)\//;
const UNDICI = /node_modules\/undici\//;
const IOREDIS = /node_modules\/(ioredis|@ioredis\/[a-z-]+)\//;
const YAML = /node_modules\/yaml\//;
/** mqtt.js's WebSocket and SOCKS transports: `mqtt.connect` requires them for any URL. */
const MQTT_OTHER_TRANSPORTS = /node_modules\/(ws|socks|ip-address|smart-buffer)\//;

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

const moduleUrl = (...path: string[]): string =>
  pathToFileURL(join(REPO_ROOT, 'dist', 'src', ...path)).href;
/** Builds a secret stack (with a registry when `REGISTRY_URL` is set) and, with `HTTP_BACKEND`, an HTTP backend; closes both. */
const PARTS = `
const { createSecretStack } = await import(${JSON.stringify(moduleUrl('auth', 'stack.js'))});
const { HttpBackend } = await import(${JSON.stringify(moduleUrl('bridge', 'http', 'index.js'))});
const stack = createSecretStack({
  registryUrl: process.env.REGISTRY_URL || undefined,
  redisPrefix: 'serve-modules:',
  registryTimeoutMs: 1000,
  cacheSize: 100000,
  cacheTtlMs: 60000,
  redisTtlMs: 60000,
  negativeTtlMs: 1000,
});
if (process.env.HTTP_BACKEND) {
  await new HttpBackend({ timeoutMs: 1000, connections: 1, maxConcurrency: 1, unavailableMaxAge: 30 }).close();
}
await stack.close();
`;

/** Runs {@link PARTS} with `env`; the modules the child loaded. */
async function modulesOfParts(name: string, env: Record<string, string>): Promise<string[]> {
  const file = join(dir, `parts-${name}.txt`);
  const proc = new Proc(
    process.execPath,
    ['--import', LOADED_MODULES_HOOK, '--input-type=module', '-e', PARTS],
    { env: cleanEnv({ LOADED_MODULES_FILE: file, ...env }), timeoutMs: 30_000 },
  );
  const done = await proc.done;
  assert.equal(done.code, 0, `${done.stdout}${done.stderr}`);
  return readFileSync(file, 'utf8').split('\n').filter(Boolean);
}

/** Some module of `loaded` is one of `pattern`'s. */
function assertSome(loaded: readonly string[], pattern: RegExp, message: string): void {
  assert.ok(
    loaded.some((m) => pattern.test(m)),
    message,
  );
}

/** No module of `loaded` is one of `pattern`'s (the list names them when the check fails). */
function assertNone(loaded: readonly string[], pattern: RegExp, message?: string): void {
  assert.deepEqual(
    loaded.filter((m) => pattern.test(m)),
    [],
    message,
  );
}

describe('modules serve loads at start', () => {
  it('tracing off, an external broker, no Redis, no file: no trace SDK, no OTLP exporter, no aedes, no ioredis, no yaml, no WebSocket or SOCKS', async () => {
    // port 1: nothing listens; the pool and the command intake connect in the background
    const loaded = await modulesOfServe('off', [...common, '--mqtt-url', 'mqtt://127.0.0.1:1']);
    assertSome(
      loaded,
      /\/node_modules\/mqtt-packet\//,
      'the list holds the packages the bridge uses',
    );
    assertNone(loaded, TRACE_SDK);
    assertNone(loaded, AEDES);
    assertNone(loaded, UNDICI, 'no registry, no HTTP route, no presence webhook: no undici');
    assertNone(loaded, IOREDIS, 'no Redis: no ioredis');
    assertNone(loaded, YAML, 'no configuration file: no yaml');
    assertNone(loaded, MQTT_OTHER_TRANSPORTS, 'mqtt://: no WebSocket, no SOCKS');
  });

  it('tracing on, the embedded broker, Redis and a file: the trace SDK, aedes, ioredis and yaml are loaded', async () => {
    // nothing is exported (no datagram is traced); the endpoint only turns tracing on
    const config = join(dir, 'config.yaml');
    writeFileSync(config, 'logLevel: info\n');
    const loaded = await modulesOfServe('on', [
      ...common,
      '--config',
      config,
      '--embedded-broker',
      '0',
      '--otlp-endpoint',
      'http://127.0.0.1:1/v1/traces',
      // nothing listens: no event is sent before the process stops
      '--presence-webhook',
      'http://127.0.0.1:1/presence',
      // the suite's Redis (a Redis that cannot be reached only makes the shutdown slower)
      '--redis-url',
      SHARED_REDIS_URL,
      '--redis-prefix',
      'serve-modules:',
    ]);
    assertSome(
      loaded,
      /\/node_modules\/@opentelemetry\/sdk-trace-node\//,
      'the preload sees the trace SDK when it is loaded',
    );
    assertSome(
      loaded,
      /\/node_modules\/@opentelemetry\/otlp-exporter-base\/build\/src\/otlp-http-export-delegate\.js/,
      "and the SDK's OTLP/HTTP transport (http/protobuf by default)",
    );
    assertSome(loaded, AEDES, 'and aedes when the embedded broker runs');
    assertSome(loaded, UNDICI, 'and undici for the presence webhook');
    assertSome(loaded, /\/node_modules\/ioredis\//, 'and ioredis for Redis');
    assertSome(loaded, YAML, 'and yaml for the configuration file');
  });

  it('the secret stack and the HTTP backend load undici only for a registry or HTTP routes', async () => {
    const [none, registry, http] = await Promise.all([
      modulesOfParts('none', {}),
      // nothing listens on port 1: no request is made, the pool is only opened and closed
      modulesOfParts('registry', { REGISTRY_URL: 'http://127.0.0.1:1' }),
      modulesOfParts('http', { HTTP_BACKEND: '1' }),
    ]);
    assertNone(none, UNDICI, 'no registry, no HTTP backend: no undici');
    assertNone(none, IOREDIS, 'no Redis: the secret stack loads no ioredis');
    assertSome(registry, UNDICI, 'a registry client loads undici');
    assertSome(http, UNDICI, 'an HTTP backend loads undici');
  });
});
