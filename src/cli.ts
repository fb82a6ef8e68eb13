#!/usr/bin/env node
/**
 * coap-edge command line: `serve`, `psk`, `config-reference` (and, later, `device`, `bench`).
 * Exit codes: 0 success, 1 runtime failure, 2 configuration or start-up error.
 */
import { Command, Option } from 'commander';
import { stringify as toYaml } from 'yaml';
import { DevicesFileError } from './auth/devices-file.js';
import { ConfigError, flagName, loadConfig, redactedConfig } from './config/load.js';
import { renderReference } from './config/reference.js';
import { settings, type SettingName } from './config/settings.js';
import { derivePsk, parseIdentity, pskShellLiteral, pskUsableOnCommandLine } from './enos/index.js';
import { Gateway, StartupError } from './gateway/index.js';
import { createLogger } from './telemetry/log.js';

const EXIT_CONFIG = 2;

function fail(message: string, code = EXIT_CONFIG): never {
  process.stderr.write(`coap-edge: ${message}\n`);
  process.exit(code);
}

/** Adds one flag per setting; values stay text here and are validated by the config loader. */
function addSettingFlags(cmd: Command): Command {
  for (const key of Object.keys(settings) as SettingName[]) {
    const s = settings[key];
    if (s.yamlOnly === true) continue;
    const flag =
      s.kind === 'boolean'
        ? `--${flagName(key)} [bool]`
        : `--${flagName(key)} ${s.arg ?? '<value>'}`;
    cmd.addOption(new Option(flag, s.doc));
  }
  return cmd;
}

function settingFlags(
  opts: Record<string, unknown>,
): Partial<Record<SettingName, string | boolean>> {
  const out: Partial<Record<SettingName, string | boolean>> = {};
  for (const key of Object.keys(settings) as SettingName[]) {
    const v = opts[key];
    if (typeof v === 'string' || typeof v === 'boolean') out[key] = v;
  }
  return out;
}

async function serve(opts: Record<string, unknown>): Promise<void> {
  let config;
  try {
    config = loadConfig({
      file: typeof opts.config === 'string' ? opts.config : undefined,
      env: process.env,
      flags: settingFlags(opts),
    });
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  if (opts.printConfig === true) {
    process.stdout.write(toYaml(redactedConfig(config)));
    return;
  }
  const log = createLogger(config.logLevel);
  let gateway: Gateway;
  try {
    gateway = await Gateway.start(config, log);
  } catch (err) {
    if (
      err instanceof DevicesFileError ||
      err instanceof StartupError ||
      err instanceof ConfigError
    ) {
      fail(err.message);
    }
    throw err;
  }
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    gateway.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

function psk(secret: string, opts: { shell?: boolean; identity?: string }): void {
  if (opts.identity !== undefined) {
    const id = parseIdentity(opts.identity);
    if (!id.ok) fail(`invalid PSK identity: ${id.reason}`);
  }
  const key = derivePsk(secret);
  if (opts.shell === true) {
    if (!pskUsableOnCommandLine(key)) {
      fail('this key contains a 0x00 byte and cannot be passed as a command-line argument', 1);
    }
    process.stdout.write(`${pskShellLiteral(key)}\n`);
  } else {
    process.stdout.write(`${key.toString('hex')}\n`);
  }
}

const program = new Command('coap-edge')
  .description('CoAP over DTLS 1.2 PSK edge proxy for NB-IoT devices (EnOS scheme)')
  .showHelpAfterError();

addSettingFlags(
  program
    .command('serve')
    .description('run the proxy')
    .option('--config <file.yaml>', 'YAML configuration file (keys as in the reference table)')
    .option('--print-config', 'print the effective configuration (secrets redacted) and exit'),
).action((opts: Record<string, unknown>) => serve(opts));

program
  .command('psk')
  .description('print the EnOS PSK for a device or product secret: SHA-256(secret)[8..24)')
  .argument('<secret>', 'device secret (secureMode 2) or product secret (secureMode 3)')
  .option(
    '--shell',
    "print as a bash $'..' literal for coap-client-openssl -k (which takes raw bytes)",
  )
  .option('--identity <pk,dk,mode,lifetime>', 'also check that an identity is well formed')
  .action(psk);

program
  .command('config-reference')
  .description('print the configuration reference table (Markdown) generated from the schema')
  .action(() => {
    process.stdout.write(`${renderReference()}\n`);
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`coap-edge: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
