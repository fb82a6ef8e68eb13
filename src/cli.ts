#!/usr/bin/env node
/**
 * coap-edge command line: `serve`, `psk`, `config-reference` (and, later, `device`, `bench`).
 * Exit codes: 0 success, 1 runtime failure, 2 configuration or start-up error.
 */
import { Command, CommanderError, Option } from 'commander';
import type { DeviceRecord, DevicesFile } from './auth/devices-file.js';
import { DEFAULT_DTLS_PORT } from './config/dtls-port.js';
import type { Config } from './config/load.js';
import type { RenamedSetting, SettingName } from './config/settings.js';
import { derivePsk, parseIdentity, pskShellLiteral, pskUsableOnCommandLine } from './enos/index.js';
import type { Gateway } from './gateway/index.js';
import { tracingRequested } from './telemetry/otel-env.js';
import type { CoapResponse } from './tools/coap-client.js';
import type { DeviceToolOptions } from './tools/device.js';
import type { RegistryStandIn } from './tools/registry-standin.js';
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// The gateway (with OpenTelemetry, aedes, ioredis, mqtt, undici) and the tools are imported
// by the command that needs them, so `--help`, `psk` and `device` start without loading them.
// So are the settings and the devices file (their zod schemas: ~95 modules, about a third of
// the CPU of starting `device`, `bench` or `registry`): `serve` gets its setting flags when
// it is the command run or the one whose help is asked for (docs/operations.md, "Start time").

const EXIT_CONFIG = 2;

/** `CommanderError.code` of the errors `fail` throws; the entry point prints their message. */
export const CLI_FAIL = 'coap-edge.fail';

/**
 * Where the commands write and which environment they read: the process's own when run as
 * the binary, captured streams when a test drives `buildProgram` in-process.
 */
export interface CliIo {
  readonly stdout: NodeJS.WritableStream & { readonly isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream & { readonly isTTY?: boolean; readonly columns?: number };
  readonly env: NodeJS.ProcessEnv;
}

const processIo: CliIo = { stdout: process.stdout, stderr: process.stderr, env: process.env };

/** Stops the command: the entry point prints `coap-edge: <message>` and exits with `code`. */
function fail(message: string, code = EXIT_CONFIG): never {
  throw new CommanderError(code, CLI_FAIL, message);
}

/** Adds one flag per setting; values stay text here and are validated by the config loader. */
async function addSettingFlags(cmd: Command): Promise<void> {
  const [{ renamedSettings, settings }, { flagName }] = await Promise.all([
    import('./config/settings.js'),
    import('./config/load.js'),
  ]);
  for (const key of Object.keys(settings) as SettingName[]) {
    const s = settings[key];
    if (s.yamlOnly === true) continue;
    const flag =
      s.kind === 'boolean'
        ? `--${flagName(key)} [bool]`
        : `--${flagName(key)} ${s.arg ?? '<value>'}`;
    cmd.addOption(new Option(flag, s.doc));
  }
  // former names of renamed settings: still read (with a warning), not shown in --help
  for (const former of Object.keys(renamedSettings) as RenamedSetting[]) {
    const s = settings[renamedSettings[former]];
    const flag = `--${flagName(former)} ${s.arg ?? '<value>'}`;
    cmd.addOption(new Option(flag).hideHelp());
  }
}

function settingFlags(
  opts: Record<string, unknown>,
  names: { settings: object; renamedSettings: object },
): Partial<Record<SettingName | RenamedSetting, string | boolean>> {
  const out: Partial<Record<SettingName | RenamedSetting, string | boolean>> = {};
  const keys = [...Object.keys(names.settings), ...Object.keys(names.renamedSettings)] as (
    SettingName | RenamedSetting
  )[];
  for (const key of keys) {
    const v = opts[key];
    if (typeof v === 'string' || typeof v === 'boolean') out[key] = v;
  }
  return out;
}

async function serve(io: CliIo, opts: Record<string, unknown>): Promise<void> {
  const [{ ConfigError, loadConfig, redactedConfig, toYaml }, names, devicesFile] =
    await Promise.all([
      import('./config/load.js'),
      import('./config/settings.js'),
      import('./auth/devices-file.js'),
    ]);
  let config;
  const deprecations: string[] = [];
  try {
    config = loadConfig({
      file: typeof opts.config === 'string' ? opts.config : undefined,
      env: io.env,
      flags: settingFlags(opts, names),
      onDeprecated: (message) => deprecations.push(message),
    });
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  if (opts.printConfig === true) {
    for (const d of deprecations) io.stderr.write(`coap-edge: warning: ${d}\n`);
    io.stdout.write(toYaml(redactedConfig(config)));
    return;
  }
  // The trace SDK and its three OTLP exporters are loaded only when tracing is asked for:
  // without it they were start-up CPU spent for nothing (docs/testing.md, "Suite time").
  const [{ Gateway, StartupError }, { createLogger, resolveLogFormat }, setup] = await Promise.all([
    import('./gateway/index.js'),
    import('./telemetry/log.js'),
    tracingRequested(config.otlpEndpoint, io.env)
      ? import('./telemetry/setup.js')
      : Promise.resolve(undefined),
  ]);
  const log = createLogger(
    config.logLevel,
    io.stdout === process.stdout ? undefined : io.stdout,
    resolveLogFormat(config.logFormat, io.stdout.isTTY === true),
  );
  for (const d of deprecations) log.warn(d);
  const tracingHandle = setup?.setupTracing({
    endpoint: config.otlpEndpoint,
    sampleRatio: config.traceSampleRatio,
    forcedDevices: config.traceDevices,
    serviceName: config.serviceName,
    serviceVersion: packageVersion(),
    env: io.env,
  });
  if (tracingHandle !== undefined) {
    for (const w of tracingHandle.warnings) log.warn(w);
    log.info(
      {
        endpoint: tracingHandle.endpoint,
        protocol: tracingHandle.protocol,
        sampler: tracingHandle.policy.sampler,
        ratio: tracingHandle.policy.ratio,
        exportDelayMs: tracingHandle.batch.scheduledDelayMillis,
        forced: config.traceDevices.length,
      },
      'tracing on',
    );
  }
  let gateway: Gateway;
  try {
    gateway = await Gateway.start(config, log, {}, tracingHandle?.tracing);
  } catch (err) {
    if (
      err instanceof devicesFile.DevicesFileError ||
      err instanceof StartupError ||
      err instanceof ConfigError
    ) {
      fail(err.message);
    }
    throw err;
  }
  if (gateway.embeddedBrokerUrl !== undefined) {
    printEmbeddedBanner(io, config, gateway, devicesFile.DevicesFile);
  }
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    // SIGTERM (Kubernetes): drain first; SIGINT (a person at a terminal): stop now
    const done =
      signal === 'SIGTERM' ? gateway.drain(config.drainTimeoutSeconds * 1000) : gateway.close();
    done.then(
      async () => {
        await tracingHandle?.shutdown();
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

/** A device of the devices file to suggest in the banner (the first one), if any. */
function demoDevice(config: Config, file: typeof DevicesFile): DeviceRecord | undefined {
  if (config.devices === undefined) return undefined;
  try {
    return file.load(config.devices).firstDevice();
  } catch {
    return undefined; // the gateway loaded it a moment ago; nothing to suggest otherwise
  }
}

/** Single-quotes `s` for a POSIX shell. */
function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * How to try it, printed when coap-edge runs its embedded broker (npm start, a demo setup):
 * commands to copy as they are, with a device of the devices file filled in.
 */
function embeddedBanner(
  config: Config,
  ports: { dtls: number; brokerUrl: string },
  device: DeviceRecord | undefined,
): string[] {
  const url = new URL(ports.brokerUrl);
  const lines = [
    '',
    'coap-edge is running on embedded defaults:',
    `  DTLS (CoAP over DTLS 1.2 PSK)  udp://${config.bind}:${ports.dtls}`,
    `  MQTT broker (embedded)         ${url.href}`,
    `  devices file                   ${config.devices ?? '(none)'}`,
    '',
    'Watch what devices publish:',
    `  mosquitto_sub -h ${url.hostname} -p ${url.port} -v -t '/sys/#'`,
  ];
  if (device === undefined) {
    lines.push(
      'Send a measurepoint as a device of the devices file (identity pk,dk,2,lifetime):',
      `  npx coap-edge device post thing/measurepoint/post --port ${ports.dtls} \\`,
      '      --identity <productKey>,<deviceKey>,2,3600 --secret <deviceSecret>',
    );
  } else {
    const body = JSON.stringify({
      id: '1',
      version: '1.0',
      method: 'thing.measurepoint.post',
      params: { measurepoints: { temperature: 21.5 } },
    });
    const host = config.bind === '0.0.0.0' || config.bind === '::' ? '127.0.0.1' : config.bind;
    lines.push(
      `Send a first measurepoint as ${device.productKey}/${device.deviceKey} (a device of the devices file):`,
      `  npx coap-edge device post thing/measurepoint/post ${shellQuote(body)} \\`,
      `      --host ${shellQuote(host)} --port ${ports.dtls} \\`,
      `      --identity ${shellQuote(`${device.productKey},${device.deviceKey},2,3600`)} --secret ${shellQuote(device.deviceSecret)}`,
    );
  }
  lines.push('or with libcoap (README.md, "Connect a device with coap-client-openssl").', '');
  return lines;
}

function printEmbeddedBanner(
  io: CliIo,
  config: Config,
  gateway: Gateway,
  file: typeof DevicesFile,
): void {
  const lines = embeddedBanner(
    config,
    { dtls: gateway.dtlsPort, brokerUrl: gateway.embeddedBrokerUrl ?? 'mqtt://127.0.0.1' },
    demoDevice(config, file),
  );
  io.stderr.write(`${lines.join('\n')}\n`);
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(
      readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
    ) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

function psk(io: CliIo, secret: string, opts: { shell?: boolean; identity?: string }): void {
  if (opts.identity !== undefined) {
    const id = parseIdentity(opts.identity);
    if (!id.ok) fail(`invalid PSK identity: ${id.reason}`);
  }
  const key = derivePsk(secret);
  if (opts.shell === true) {
    if (!pskUsableOnCommandLine(key)) {
      fail('this key contains a 0x00 byte and cannot be passed as a command-line argument', 1);
    }
    io.stdout.write(`${pskShellLiteral(key)}\n`);
  } else {
    io.stdout.write(`${key.toString('hex')}\n`);
  }
}

interface DeviceFlags {
  host: string;
  port: string;
  identity?: string;
  productKey?: string;
  deviceKey?: string;
  secureMode?: string;
  lifetime?: string;
  secret?: string;
  suite: string;
  timeout: string;
  activateThenPost?: boolean;
  cid?: boolean;
}

async function deviceCommand(
  io: CliIo,
  action: string,
  topic: string | undefined,
  json: string | undefined,
  flags: DeviceFlags,
): Promise<void> {
  const device = await import('./tools/device.js');
  let o: DeviceToolOptions;
  try {
    if (flags.secret === undefined) throw new device.DeviceToolError('--secret is required');
    if (flags.suite !== 'ccm8' && flags.suite !== 'cbc') {
      throw new device.DeviceToolError('--suite must be ccm8 or cbc');
    }
    o = {
      host: flags.host,
      port: Number(flags.port),
      identity: device.identityFrom(flags),
      secret: flags.secret,
      suite: flags.suite,
      timeoutMs: Number(flags.timeout) * 1000,
      cid: flags.cid === true,
    };
  } catch (err) {
    if (err instanceof device.DeviceToolError) fail(err.message);
    throw err;
  }
  const print = (r: CoapResponse): void => {
    io.stdout.write(`${device.formatResponse(r)}\n`);
  };
  let ok = true;
  if (flags.activateThenPost === true || action === 'activate-then-post') {
    if (topic === undefined) fail('activate-then-post needs a topic');
    for (const step of await device.activateThenPost(o, topic, json)) {
      io.stdout.write(`${step.step}: `);
      print(step.response);
      ok &&= step.response.code >> 5 === 2;
    }
  } else if (action === 'post' || action === 'get') {
    if (topic === undefined) fail(`${action} needs a topic`);
    const r = action === 'post' ? await device.post(o, topic, json) : await device.get(o, topic);
    print(r);
    ok = r.code >> 5 === 2;
  } else if (action === 'activate') {
    const r = await device.activate(o);
    print(r);
    ok = r.code >> 5 === 2;
  } else {
    fail(`unknown device action "${action}" (post, get, activate, activate-then-post)`);
  }
  if (!ok) process.exitCode = 1;
}

interface BenchFlags {
  host: string;
  port: string;
  devices?: string;
  count: string;
  duration: string;
  rate: string;
  ramp: string;
  concurrency: string;
  non?: boolean;
  payloadSize?: string;
  suite: string;
  topic: string;
  metricsUrl?: string;
  bindAddress?: string;
  json?: boolean;
  generate?: boolean;
  out?: string;
  productKey: string;
  seed: string;
  cid?: boolean;
  rebindEvery?: string;
  rebindShare?: string;
  idleSockets?: boolean;
  maxSockets: string;
}

/** A numeric flag, or exit 2 naming it. */
function numberFlag(name: string, text: string, o: { min: number; integer?: boolean }): number {
  const n = Number(text);
  if (
    text.trim() === '' ||
    !Number.isFinite(n) ||
    n < o.min ||
    (o.integer === true && !Number.isInteger(n))
  ) {
    fail(`--${name} must be ${o.integer === true ? 'an integer' : 'a number'} ≥ ${o.min}`);
  }
  return n;
}

async function benchCommand(io: CliIo, flags: BenchFlags): Promise<void> {
  const count = numberFlag('count', flags.count, { min: 1, integer: true });
  const rebindEvery =
    flags.rebindEvery === undefined ? 0 : numberFlag('rebind-every', flags.rebindEvery, { min: 0 });
  const rebindShare =
    flags.rebindShare === undefined ? 1 : numberFlag('rebind-share', flags.rebindShare, { min: 0 });
  if (rebindShare > 1) fail('--rebind-share must be a number ≥ 0 and ≤ 1');
  const maxSockets = numberFlag('max-sockets', flags.maxSockets, { min: 1, integer: true });
  const idleSockets = flags.idleSockets === true;
  if (idleSockets && flags.generate !== true) {
    if (flags.cid !== true) fail('--idle-sockets needs --cid (the gateway follows a device by it)');
    if (rebindEvery > 0)
      fail('--rebind-every has no use with --idle-sockets (every request comes from a new port)');
  }
  const load = await import('./tools/load.js');
  if (flags.generate === true) {
    const text = `${JSON.stringify(load.generateDevices(count, flags.productKey, flags.seed), null, 1)}\n`;
    if (flags.out === undefined) io.stdout.write(text);
    else {
      try {
        load.writeDevicesFile(flags.out, text);
      } catch (err) {
        fail(`${flags.out}: cannot write (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      }
      io.stderr.write(
        `wrote ${count} devices of product ${flags.productKey} to ${flags.out}\n` +
          `  serve them:      coap-edge serve --devices ${flags.out} ...\n` +
          `  or a registry:   coap-edge registry --devices ${flags.out}\n` +
          `  then:            coap-edge bench --devices ${flags.out} --count ${count}\n`,
      );
    }
    return;
  }
  if (flags.devices === undefined)
    fail('--devices <file.json> is required (or --generate to write one)');
  let file: { devices?: { productKey: string; deviceKey: string; deviceSecret: string }[] };
  try {
    file = JSON.parse(readFileSync(flags.devices, 'utf8')) as typeof file;
  } catch {
    fail(`${flags.devices}: cannot read a devices file`);
  }
  const list = (file.devices ?? []).slice(0, count).map((d) => ({
    productKey: d.productKey,
    deviceKey: d.deviceKey,
    secret: d.deviceSecret,
  }));
  if (list.length === 0) fail(`${flags.devices}: no devices`);
  if (flags.suite !== 'ccm8' && flags.suite !== 'cbc') fail('--suite must be ccm8 or cbc');
  const o = {
    host: flags.host,
    port: numberFlag('port', flags.port, { min: 1, integer: true }),
    devices: list,
    durationMs: numberFlag('duration', flags.duration, { min: 0 }) * 1000,
    ratePerDevice: numberFlag('rate', flags.rate, { min: 0 }),
    rampPerSecond: numberFlag('ramp', flags.ramp, { min: 0 }),
    connectConcurrency: numberFlag('concurrency', flags.concurrency, { min: 1, integer: true }),
    nonConfirmable: flags.non === true,
    suite: flags.suite,
    topic: flags.topic,
    ...(flags.payloadSize !== undefined
      ? { payloadSize: numberFlag('payload-size', flags.payloadSize, { min: 0, integer: true }) }
      : {}),
    ...(flags.metricsUrl !== undefined ? { metricsUrl: flags.metricsUrl } : {}),
    ...(flags.bindAddress !== undefined ? { bindAddress: flags.bindAddress } : {}),
    cid: flags.cid === true,
    ...(rebindEvery > 0 ? { rebindEveryMs: rebindEvery * 1000, rebindShare } : {}),
    ...(idleSockets ? { idleSockets, maxSockets } : {}),
  } as const;
  // a live progress line on a terminal only: --json and pipes get the result alone
  const live = flags.json !== true && io.stderr.isTTY;
  const result = await load.runLoad({
    ...o,
    ...(live
      ? {
          onProgress: (p) => {
            // cut to the terminal's width: a wrapped line could not be rewritten in place
            const width = Math.max(20, (io.stderr.columns || 120) - 1);
            io.stderr.write(`\r\x1b[K${load.formatProgress(p).slice(0, width)}`);
          },
        }
      : {}),
  });
  if (live) io.stderr.write('\r\x1b[K');
  if (flags.json === true) io.stdout.write(`${JSON.stringify(result)}\n`);
  else io.stdout.write(load.formatSummary(result));
  if (result.connected === 0) process.exitCode = 1;
}

interface RegistryFlags {
  devices: string;
  port: string;
  bind: string;
  token?: string;
}

async function registryCommand(io: CliIo, flags: RegistryFlags): Promise<void> {
  const port = Number(flags.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail('--port must be 0-65535');
  if (flags.token === '') fail('--token must not be empty');
  const file = await import('./auth/devices-file.js');
  let devices: DevicesFile;
  try {
    devices = file.DevicesFile.load(flags.devices);
  } catch (err) {
    if (err instanceof file.DevicesFileError) fail(err.message);
    throw err;
  }
  const { startRegistryStandIn } = await import('./tools/registry-standin.js');
  let standIn: RegistryStandIn;
  try {
    standIn = await startRegistryStandIn({
      devices,
      port,
      bind: flags.bind,
      token: flags.token,
      log: (line) => io.stdout.write(`registry: ${line}\n`),
    });
  } catch (err) {
    fail(
      `cannot listen on ${flags.bind}:${port}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  const s = standIn;
  io.stdout.write(
    `registry stand-in listening on http://${flags.bind}:${s.port} ` +
      `(${devices.productCount} products, ${devices.deviceCount} devices; ` +
      `${flags.token !== undefined ? 'bearer token required' : 'no token'})\n`,
  );
  const stop = (): void => {
    void s.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

/**
 * The command line as a commander program writing to `io`. Nothing exits the process here:
 * usage errors, `--help` and start-up errors are thrown as `CommanderError`s (`exitCode`: 0
 * help, 2 configuration or usage, 1 runtime; `code` `coap-edge.fail` for coap-edge's own, whose
 * message `main` prints). A server that started keeps running and exits on a signal.
 */
export function buildProgram(io: CliIo = processIo): Command {
  const program = new Command('coap-edge')
    .description('CoAP over DTLS 1.2 PSK edge proxy for NB-IoT devices (EnOS scheme)')
    .showHelpAfterError()
    // usage errors, help and `fail` are thrown as CommanderError (exit code and code) to the
    // caller: `main` below when run as the binary, or a test
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    });

  const serveCommand = program
    .command('serve')
    .description('run the proxy')
    .option('--config <file.yaml>', 'YAML configuration file (keys as in the reference table)')
    .option('--print-config', 'print the effective configuration (secrets redacted) and exit')
    .action((opts: Record<string, unknown>) => serve(io, opts));
  // serve's setting flags, added before serve parses its arguments or prints its help
  let settingFlagsAdded = false;
  const withSettingFlags = async (cmd: Command | undefined): Promise<void> => {
    if (cmd !== serveCommand || settingFlagsAdded) return;
    settingFlagsAdded = true;
    await addSettingFlags(serveCommand);
  };
  program.hook('preSubcommand', (_program, sub) => withSettingFlags(sub));

  program
    .command('psk')
    .description('print the EnOS PSK for a device or product secret: SHA-256(secret)[8..24)')
    .argument('<secret>', 'device secret (secureMode 2) or product secret (secureMode 3)')
    .option(
      '--shell',
      "print as a bash $'..' literal for coap-client-openssl -k (which takes raw bytes)",
    )
    .option('--identity <pk,dk,mode,lifetime>', 'also check that an identity is well formed')
    .action((secret: string, opts: { shell?: boolean; identity?: string }) =>
      psk(io, secret, opts),
    );

  program
    .command('device')
    .description('act as one EnOS device: connect over DTLS, send one request, print the answer')
    .argument('<action>', 'post | get | activate | activate-then-post')
    .argument(
      '[topic]',
      'MQTT topic (/sys/pk/dk/thing/measurepoint/post) or a path relative to /sys/{pk}/{dk}/',
    )
    .argument('[json]', 'request body for post (default: an EnOS request with empty params)')
    .option('--host <host>', 'coap-edge address', '127.0.0.1')
    .option('--port <port>', 'DTLS port', String(DEFAULT_DTLS_PORT))
    .option('--identity <pk,dk,mode,lifetime>', 'PSK identity')
    .option('--product-key <pk>', 'product key (instead of --identity)')
    .option('--device-key <dk>', 'device key (instead of --identity)')
    .option('--secure-mode <2|3>', 'secureMode (instead of --identity)', '2')
    .option('--lifetime <seconds>', 'lifetime (instead of --identity)', '3600')
    .option('--secret <secret>', 'device secret (mode 2) or product secret (mode 3, activation)')
    .option('--suite <ccm8|cbc>', 'cipher suite to offer', 'ccm8')
    .option('--timeout <seconds>', 'give up after this long', '30')
    .option('--cid', 'offer an RFC 9146 Connection ID (4 random bytes)')
    .option(
      '--activate-then-post',
      'activate with the product secret, then post with the returned device secret',
    )
    .action(
      (action: string, topic: string | undefined, json: string | undefined, flags: DeviceFlags) =>
        deviceCommand(io, action, topic, json, flags),
    );

  program
    .command('bench')
    .description(
      'fleet simulator: devices connect over DTLS and post measurepoints; live progress, then a summary',
    )
    .option('--host <host>', 'coap-edge address', '127.0.0.1')
    .option('--port <port>', 'DTLS port', String(DEFAULT_DTLS_PORT))
    .option('--devices <file.json>', 'devices file to take identities and secrets from')
    .option('--count <n>', 'number of simulated devices', '100')
    .option(
      '--ramp <per-second>',
      'handshakes started per second while connecting (0: no limit)',
      '0',
    )
    .option('--concurrency <n>', 'handshakes in flight at once while connecting', '32')
    .option(
      '--duration <seconds>',
      'seconds of requests once every device is connected (at a --rate: every request due in them is sent, however late)',
      '10',
    )
    .option('--rate <per-second>', 'requests per second per device (0: closed loop)', '0')
    .option('--non', 'send NON requests instead of CON')
    .option('--payload-size <bytes>', 'pad each measurepoint body to this many bytes')
    .option('--suite <ccm8|cbc>', 'cipher suite', 'ccm8')
    .option('--topic <path>', 'topic relative to /sys/{pk}/{dk}/', 'thing/measurepoint/post')
    .option(
      '--metrics-url <url>',
      "coap-edge's /metrics (e.g. http://127.0.0.1:9100/metrics): report its RSS per association",
    )
    .option('--bind-address <ip>', "local address of the devices' sockets")
    .option('--json', 'print one JSON line with the result and nothing else')
    .option('--cid', 'offer an RFC 9146 Connection ID (4 random bytes per device)')
    .option(
      '--rebind-every <seconds>',
      'move each device to a new source port this often (a NAT rebinding; use with --cid)',
    )
    .option(
      '--rebind-share <fraction>',
      'share of the devices that move (0 to 1, default 1), the others keep their port',
    )
    .option(
      '--idle-sockets',
      'devices hold no socket while idle (needs --cid): each suspends its association after ' +
        'the handshake and each request and resumes it on a new source port for the next, so ' +
        'one process simulates more devices than it has ports (e.g. --count 100000 --rate 0.005); ' +
        'against a 127.x gateway each device binds its own 127/8 source address unless --bind-address',
    )
    .option('--max-sockets <n>', 'with --idle-sockets: most sockets open at once', '2000')
    .option(
      '--generate',
      'write a devices file (also a registry seed) with --count devices instead',
    )
    .option('--out <file.json>', 'file for --generate (default: standard output)')
    .option('--product-key <pk>', 'product key for --generate', 'benchPK')
    .option('--seed <text>', 'secret seed for --generate', 'bench-secret')
    .action((flags: BenchFlags) => benchCommand(io, flags));

  program
    .command('registry')
    .description(
      'device registry stand-in: serves docs/registry-api.md from a devices file (demos, not production)',
    )
    .requiredOption('--devices <file.json>', 'devices file with the products and devices to serve')
    .option('--port <port>', 'TCP port', '8080')
    .option('--bind <address>', 'address to listen on', '0.0.0.0')
    .addOption(
      new Option(
        '--token <token>',
        'require Authorization: Bearer <token> on every registry request (default: none)',
      ).env('COAP_EDGE_REGISTRY_TOKEN'),
    )
    .action((flags: RegistryFlags) => registryCommand(io, flags));

  program
    .command('config-reference')
    .description('print the configuration reference table (Markdown) generated from the schema')
    .action(async () => {
      const { renderReference } = await import('./config/reference.js');
      io.stdout.write(`${renderReference()}\n`);
    });

  // commander's own help command, as commander defines it, but one that gives `help serve`
  // serve's setting flags first (commander's prints a command's help without its hooks)
  program.helpCommand(false);
  const helpCommand = program
    .command('help')
    .argument('[command]')
    .description('display help for command')
    .helpOption(false)
    .action(async (name: string | undefined) => {
      if (name === undefined) return program.help();
      const cmd = program.commands.find(
        (c) => c !== helpCommand && (c.name() === name || c.aliases().includes(name)),
      );
      if (cmd === undefined) return program.help({ error: true });
      await withSettingFlags(cmd);
      cmd.help();
    });
  return program;
}

/** Runs the binary: parses `process.argv`, turns what `buildProgram` throws into an exit. */
async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander printed its own usage errors and help; usage errors are configuration
      // errors: exit 2
      if (err.code === CLI_FAIL) process.stderr.write(`coap-edge: ${err.message}\n`);
      process.exit(err.code === CLI_FAIL ? err.exitCode : err.exitCode === 0 ? 0 : EXIT_CONFIG);
    }
    process.stderr.write(`coap-edge: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}

// run as the binary (also through the node_modules/.bin symlink), not when imported by a test
const entry = process.argv[1];
if (entry !== undefined && realpathSync(entry) === fileURLToPath(import.meta.url)) void main();
