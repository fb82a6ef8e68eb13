/**
 * The `coap-edge` command line: help, `psk`, `config-reference`, `serve --print-config`
 * (defaults < YAML file < COAP_EDGE_* environment < flags, secrets redacted) and every
 * start-up error, which must exit with code 2 and a message naming the file (or variable, or
 * flag) and the field.
 *
 * Most cases run in-process (`buildProgram` with captured output, test/helpers/cli-in-process.ts):
 * the exit code is the code of the error the command throws. A few run the binary itself, so
 * its entry point (printing `coap-edge: <message>`, the exit codes) stays covered; serving as a
 * process is test/cli/serve-process.test.ts.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { flagName } from '../../src/config/load.js';
import { renderReference } from '../../src/config/reference.js';
import { renamedSettings, settings, type SettingName } from '../../src/config/settings.js';
import { derivePsk, pskShellLiteral } from '../../src/enos/psk.js';
import { DEMO, DEMO_DEVICES } from '../helpers/gateway.js';
import { CLI_FAIL } from '../../src/cli.js';
import {
  cliInProcess as runCli,
  describeResult as out,
  type InProcessResult,
} from '../helpers/cli-in-process.js';
import {
  REPO_ROOT,
  bindUdp,
  killAll,
  runCli as runBinary,
  type ProcessResult,
} from '../helpers/processes.js';

const FIXTURES = join(REPO_ROOT, 'test', 'fixtures', 'interop');
const fixture = (name: string): string => join(FIXTURES, name);
const names = Object.keys(settings) as SettingName[];

function outBinary(r: ProcessResult): string {
  return `exit ${r.code} signal ${r.signal}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

function assertOk(r: InProcessResult): void {
  assert.equal(r.code, 0, out(r));
  assert.equal(r.error, undefined, out(r));
}

/**
 * Exit code 2 from coap-edge's own error (printed by the binary as one `coap-edge: ...` line
 * on stderr, see the process tests below), a one-line message matching `message`, and nothing
 * else printed.
 */
function assertConfigError(r: InProcessResult, message: RegExp): void {
  assert.equal(r.code, 2, out(r));
  assert.equal(r.error?.code, CLI_FAIL, out(r));
  assert.equal(r.error.exitCode, 2, out(r));
  assert.match(r.error.message, /^.+$/, out(r));
  assert.match(r.error.message, message, out(r));
  assert.equal(r.stdout, '', out(r));
  assert.equal(r.stderr, '', out(r));
}

/** The binary: exit code 2, nothing on stdout, one `coap-edge: ...` line matching `message`. */
function assertBinaryConfigError(r: ProcessResult, message: RegExp): void {
  assert.equal(r.timedOut, false, outBinary(r));
  assert.equal(r.code, 2, outBinary(r));
  assert.match(r.stderr, /^coap-edge: .+\n$/, outBinary(r));
  assert.match(r.stderr, message, outBinary(r));
  assert.equal(r.stdout, '', outBinary(r));
}

async function printConfig(
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const r = await runCli(['serve', '--print-config', ...args], env);
  assertOk(r);
  assert.equal(r.stderr, '', out(r));
  const doc = parseYaml(r.stdout) as unknown;
  assert.ok(typeof doc === 'object' && doc !== null && !Array.isArray(doc), out(r));
  return doc as Record<string, unknown>;
}

describe('coap-edge command line', () => {
  let tmp = '';
  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'coap-edge-cli-'));
  });
  after(async () => {
    await killAll();
    rmSync(tmp, { recursive: true, force: true });
  });
  const tmpFile = (name: string, text: string): string => {
    const p = join(tmp, name);
    writeFileSync(p, text);
    return p;
  };

  // --- the binary itself -------------------------------------------------------------------

  it('binary: --help lists the commands (exit 0)', async () => {
    const r = await runBinary(['--help']);
    assert.equal(r.timedOut, false, outBinary(r));
    assert.equal(r.code, 0, outBinary(r));
    for (const cmd of ['serve', 'psk', 'config-reference']) {
      assert.match(r.stdout, new RegExp(`^\\s+${cmd}\\b`, 'm'), outBinary(r));
    }
  });

  it('binary: a configuration error and a usage error exit 2', async () => {
    const [env, cmd] = await Promise.all([
      runBinary(['serve'], { env: { COAP_EDGE_DTLS_PORT: 'abc' } }),
      runBinary(['bogus']),
    ]);
    assertBinaryConfigError(
      env,
      /environment variable COAP_EDGE_DTLS_PORT: invalid value for "dtlsPort"/,
    );
    assert.equal(cmd.timedOut, false, outBinary(cmd));
    assert.equal(cmd.code, 2, outBinary(cmd));
    assert.match(cmd.stderr, /unknown command 'bogus'/);
  });

  // --- in-process ----------------------------------------------------------------------------

  it('--help lists the commands', async () => {
    const r = await runCli(['--help']);
    assert.equal(r.code, 0, out(r));
    assert.equal(r.error?.code, 'commander.helpDisplayed', out(r));
    for (const cmd of ['serve', 'psk', 'config-reference']) {
      assert.match(r.stdout, new RegExp(`^\\s+${cmd}\\b`, 'm'), out(r));
    }
  });

  it('serve --help lists --config, --print-config and a flag for every setting', async () => {
    const r = await runCli(['serve', '--help']);
    assert.equal(r.code, 0, out(r));
    assert.match(r.stdout, /--config <file\.yaml>/);
    assert.match(r.stdout, /--print-config/);
    for (const key of names) {
      if ((settings[key] as { yamlOnly?: boolean }).yamlOnly === true) continue;
      assert.match(r.stdout, new RegExp(`--${flagName(key)}\\b`), `--${flagName(key)}`);
    }
  });

  it('psk prints the spec vectors', async () => {
    const [a, b] = await Promise.all([
      runCli(['psk', 'abcdefg']),
      runCli(['psk', 'zPwChiLh0EaifR809D5Rc6LDIC6A']),
    ]);
    assertOk(a);
    assert.equal(a.stdout, 'f5b79b5fb0803061152a44f92b37e23c\n');
    assertOk(b);
    assert.equal(b.stdout, 'c14429bde9e22995162f199d808297a5\n');
  });

  it('psk --shell prints the bash literal; a key with a 0x00 byte is refused', async () => {
    const ok = await runCli(['psk', DEMO.device001.secret, '--shell']);
    assertOk(ok);
    assert.equal(ok.stdout, `${pskShellLiteral(derivePsk(DEMO.device001.secret))}\n`);
    assert.match(ok.stdout, /^\$'(\\x[0-9a-f]{2}){16}'\n$/);

    const nulSecret = 'nul-key-secret-2'; // SHA-256(..)[8..24) = 7b1b6033c47bd5c2ed00c5c7953e81d7
    assert.ok(derivePsk(nulSecret).includes(0));
    const nul = await runCli(['psk', nulSecret, '--shell']);
    assert.equal(nul.code, 1, out(nul));
    assert.equal(nul.error?.code, CLI_FAIL, out(nul));
    assert.match(nul.error.message, /0x00 byte/);
    assert.equal(nul.stdout, '');
    // hex output still works for such a key
    const hex = await runCli(['psk', nulSecret]);
    assert.equal(hex.stdout, '7b1b6033c47bd5c2ed00c5c7953e81d7\n');
  });

  it('psk --identity checks the identity', async () => {
    const [good, bad] = await Promise.all([
      runCli(['psk', 'abcdefg', '--identity', 'demoPK01,device001,2,3600']),
      runCli(['psk', 'abcdefg', '--identity', 'a,b,5,60']),
    ]);
    assertOk(good);
    assert.equal(good.stdout, 'f5b79b5fb0803061152a44f92b37e23c\n');
    assertConfigError(bad, /invalid PSK identity: bad-mode/);
  });

  it('config-reference prints renderReference()', async () => {
    const r = await runCli(['config-reference']);
    assertOk(r);
    assert.equal(r.stdout, `${renderReference()}\n`);
  });

  it('--print-config shows the defaults (secrets and unset values left out)', async () => {
    const doc = await printConfig([]);
    for (const key of names) {
      const def = settings[key].default as unknown;
      if (def === undefined) assert.equal(key in doc, false, `${key} is unset`);
      else assert.deepEqual(doc[key], def, key);
    }
    assert.deepEqual(
      Object.keys(doc).sort(),
      names.filter((k) => settings[k].default !== undefined).sort(),
    );
  });

  it('--print-config: the YAML file overrides the defaults', async () => {
    const doc = await printConfig(['--config', fixture('config.yaml')]);
    assert.equal(doc.devices, 'test/fixtures/interop/devices.json');
    assert.equal(doc.dtlsPort, 6000);
    assert.equal(doc.maxHandshakes, 77);
    assert.equal(doc.idleTimeoutSeconds, 600);
    assert.deepEqual(doc.cipherSuites, ['TLS_PSK_WITH_AES_128_CBC_SHA256']);
    assert.equal(doc.logLevel, 'warn');
    assert.equal(doc.maxAssociations, settings.maxAssociations.default, 'not in the file');
  });

  it('--print-config: COAP_EDGE_* variables override the file', async () => {
    const doc = await printConfig(['--config', fixture('config.yaml')], {
      COAP_EDGE_DTLS_PORT: '7000',
      COAP_EDGE_CIPHER_SUITES: 'TLS_PSK_WITH_AES_128_CCM_8, TLS_PSK_WITH_AES_128_CBC_SHA256',
      COAP_EDGE_MAX_ASSOCIATIONS: '1234',
    });
    assert.equal(doc.dtlsPort, 7000);
    assert.deepEqual(doc.cipherSuites, [
      'TLS_PSK_WITH_AES_128_CCM_8',
      'TLS_PSK_WITH_AES_128_CBC_SHA256',
    ]);
    assert.equal(doc.maxAssociations, 1234);
    assert.equal(doc.maxHandshakes, 77, 'from the file');
    assert.equal(doc.logLevel, 'warn', 'from the file');
  });

  it('--print-config: flags override the environment', async () => {
    const doc = await printConfig(
      ['--config', fixture('config.yaml'), '--dtls-port', '8000', '--log-level', 'debug'],
      { COAP_EDGE_DTLS_PORT: '7000', COAP_EDGE_LOG_LEVEL: 'error', COAP_EDGE_MAX_HANDSHAKES: '88' },
    );
    assert.equal(doc.dtlsPort, 8000);
    assert.equal(doc.logLevel, 'debug');
    assert.equal(doc.maxHandshakes, 88, 'the environment, no flag given');
    assert.equal(doc.idleTimeoutSeconds, 600, 'the file, neither variable nor flag given');
  });

  it('--print-config: former names of renamed settings still work, one warning line each on stderr', async () => {
    const f = tmpFile('former-names.yaml', 'drainTimeout: 7\n');
    const r = await runCli(['serve', '--print-config', '--config', f, '--ack-timeout', '0'], {
      COAP_EDGE_IDLE_TIMEOUT: '600',
    });
    assertOk(r);
    const doc = parseYaml(r.stdout) as Record<string, unknown>;
    assert.equal(doc.drainTimeoutSeconds, 7);
    assert.equal(doc.idleTimeoutSeconds, 600);
    assert.equal(doc.ackTimeoutMs, 0);
    for (const former of ['drainTimeout', 'idleTimeout', 'ackTimeout'])
      assert.equal(former in doc, false, former);
    assert.deepEqual(r.stderr.split('\n'), [
      `coap-edge: warning: ${f}: "drainTimeout" is deprecated, use "drainTimeoutSeconds" (same unit)`,
      'coap-edge: warning: environment: COAP_EDGE_IDLE_TIMEOUT is deprecated, use COAP_EDGE_IDLE_TIMEOUT_SECONDS (same unit)',
      'coap-edge: warning: command line: --ack-timeout is deprecated, use --ack-timeout-ms (same unit)',
      '',
    ]);
  });

  it('serve: a former name is logged as a warning when it starts', async (t) => {
    const taken = await bindUdp();
    t.after(() => taken.socket.close());
    // the port is taken, so serve stops after the start-up logging
    const r = await runCli(
      [
        'serve',
        '--bind',
        '127.0.0.1',
        '--dtls-port',
        String(taken.port),
        '--devices',
        DEMO_DEVICES,
      ],
      { COAP_EDGE_DRAIN_TIMEOUT: '5' },
    );
    assert.equal(r.code, 2, out(r));
    const deprecations = r.stdout.split('\n').filter((l) => l.includes('deprecated'));
    assert.equal(deprecations.length, 1, out(r));
    const line = JSON.parse(deprecations[0] ?? '{}') as { level?: string; msg?: string };
    assert.equal(line.level, 'warn', out(r));
    assert.equal(
      line.msg,
      'environment: COAP_EDGE_DRAIN_TIMEOUT is deprecated, use COAP_EDGE_DRAIN_TIMEOUT_SECONDS (same unit)',
    );
  });

  it('serve --help does not list the former names', async () => {
    const r = await runCli(['serve', '--help']);
    assert.equal(r.code, 0, out(r));
    for (const former of Object.keys(renamedSettings)) {
      assert.doesNotMatch(r.stdout, new RegExp(`--${flagName(former)}\\b(?!-)`), former);
    }
  });

  it('a former name and its new name in one source: exit 2 naming both', async () => {
    const f = tmpFile('both-names.yaml', 'drainTimeout: 5\ndrainTimeoutSeconds: 6\n');
    assertConfigError(
      await runCli(['serve', '--config', f]),
      /both "drainTimeout" and "drainTimeoutSeconds" are set; keep only "drainTimeoutSeconds"/,
    );
  });

  it('--print-config redacts secrets', async () => {
    const r = await runCli(
      [
        'serve',
        '--print-config',
        '--registry-token',
        'token-must-not-print',
        '--redis-url',
        'redis://:redis-pw-must-not-print@127.0.0.1:6379/0',
      ],
      { COAP_EDGE_MQTT_PASSWORD: 'mqtt-pw-must-not-print' },
    );
    assertOk(r);
    assert.doesNotMatch(r.stdout + r.stderr, /must-not-print/);
    const doc = parseYaml(r.stdout) as Record<string, unknown>;
    assert.equal(doc.registryToken, '<redacted>');
    assert.equal(doc.redisUrl, '<redacted>');
    assert.equal(doc.mqttPassword, '<redacted>');
  });

  // --- start-up errors: exit code 2, the file (or variable, or flag) and the field named ----

  it('invalid YAML', async () => {
    const f = tmpFile('bad-syntax.yaml', 'dtlsPort: [5684\nlogLevel: info\n');
    assertConfigError(
      await runCli(['serve', '--config', f]),
      new RegExp(`${f.replace(/[.]/g, '\\.')}: not valid YAML \\(line \\d+\\)`),
    );
  });

  it('a YAML file that is not a mapping', async () => {
    assertConfigError(
      await runCli(['serve', '--config', fixture('config-not-mapping.yaml')]),
      /config-not-mapping\.yaml: the config file must be a YAML mapping/,
    );
  });

  it('an unknown key in the YAML file', async () => {
    assertConfigError(
      await runCli(['serve', '--config', fixture('config-unknown-key.yaml')]),
      /config-unknown-key\.yaml: unknown setting "dtlsPrt"/,
    );
  });

  it('a bad value in the YAML file (dtlsPort: 70000)', async () => {
    assertConfigError(
      await runCli(['serve', '--config', fixture('config-bad-port.yaml')]),
      /config-bad-port\.yaml: invalid value for "dtlsPort"/,
    );
  });

  it('a bad value in the environment (COAP_EDGE_DTLS_PORT=abc)', async () => {
    assertConfigError(
      await runCli(['serve'], { COAP_EDGE_DTLS_PORT: 'abc' }),
      /environment variable COAP_EDGE_DTLS_PORT: invalid value for "dtlsPort"/,
    );
  });

  it('a bad value in a list (COAP_EDGE_CIPHER_SUITES) names the element', async () => {
    assertConfigError(
      await runCli(['serve'], { COAP_EDGE_CIPHER_SUITES: 'TLS_PSK_WITH_NULL_SHA' }),
      /environment variable COAP_EDGE_CIPHER_SUITES: invalid value for "cipherSuites\.0"/,
    );
  });

  it('a bad flag value (--dtls-port 70000, --log-level loud)', async () => {
    const [port, level] = await Promise.all([
      runCli(['serve', '--dtls-port', '70000']),
      runCli(['serve', '--log-level', 'loud']),
    ]);
    assertConfigError(port, /flag --dtls-port: invalid value for "dtlsPort"/);
    assertConfigError(level, /flag --log-level: invalid value for "logLevel"/);
  });

  it('a missing --config file', async () => {
    assertConfigError(
      await runCli(['serve', '--config', fixture('no-such-config.yaml')]),
      /no-such-config\.yaml: cannot read config file \(ENOENT\)/,
    );
  });

  it('a missing devices file (flag, and named in the YAML file)', async () => {
    const [flag, yaml] = await Promise.all([
      runCli([
        'serve',
        '--bind',
        '127.0.0.1',
        '--dtls-port',
        '0',
        '--devices',
        fixture('no-such-devices.json'),
      ]),
      runCli(['serve', '--config', fixture('config-missing-devices.yaml')]),
    ]);
    assertConfigError(flag, /no-such-devices\.json: cannot read file \(ENOENT\)/);
    assertConfigError(
      yaml,
      /test\/fixtures\/interop\/no-such-devices\.json: cannot read file \(ENOENT\)/,
    );
  });

  it('an invalid devices file names the field and never a secret', async () => {
    const r = await runCli([
      'serve',
      '--bind',
      '127.0.0.1',
      '--dtls-port',
      '0',
      '--devices',
      fixture('devices-invalid.json'),
    ]);
    assertConfigError(
      r,
      /devices-invalid\.json: devices\[1\]\.deviceSecret: expected a non-empty string/,
    );
    assert.doesNotMatch(r.error?.message ?? '', /must-not-leak/);
    assert.doesNotMatch(r.stdout + r.stderr, /must-not-leak/);
  });

  it('a devices file that is not JSON gives the position and never a secret', async () => {
    const f = tmpFile(
      'devices-not-json.json',
      '{\n  "devices": [\n    { "productKey": "p", "deviceKey": "d", "deviceSecret": "json-secret-must-not-leak" x\n',
    );
    const r = await runCli(['serve', '--bind', '127.0.0.1', '--dtls-port', '0', '--devices', f]);
    assertConfigError(r, /devices-not-json\.json: not valid JSON \(line 3, column \d+\)/);
    assert.doesNotMatch(r.error?.message ?? '', /must-not-leak/);
    assert.doesNotMatch(r.stdout + r.stderr, /must-not-leak/);
  });

  it('a UDP port already taken (DTLS and plain CoAP)', async (t) => {
    const taken = await bindUdp();
    t.after(() => taken.socket.close());
    const [dtls, coap] = await Promise.all([
      runCli([
        'serve',
        '--bind',
        '127.0.0.1',
        '--dtls-port',
        String(taken.port),
        '--devices',
        DEMO_DEVICES,
      ]),
      runCli([
        'serve',
        '--bind',
        '127.0.0.1',
        '--dtls-port',
        '0',
        '--coap-port',
        String(taken.port),
        '--devices',
        DEMO_DEVICES,
      ]),
    ]);
    // the devices file is loaded (and logged, on stdout) before the sockets are bound;
    // stderr gets nothing but the error, which the binary prints as its one line
    for (const [r, what] of [
      [dtls, 'DTLS'],
      [coap, 'plain CoAP'],
    ] as const) {
      assert.equal(r.code, 2, out(r));
      assert.equal(r.error?.code, CLI_FAIL, out(r));
      assert.equal(
        r.error.message,
        `cannot bind ${what} on 127.0.0.1:${taken.port}: EADDRINUSE (port already in use)`,
        out(r),
      );
      assert.equal(r.stderr, '', out(r));
      assert.match(r.stdout, /devices file loaded/, out(r));
    }
    assert.doesNotMatch(dtls.stdout + coap.stdout, /coap-edge listening/);
  });

  it('an unknown flag or command is refused with its name', async () => {
    const [flag, cmd] = await Promise.all([
      runCli(['serve', '--dtls-prt', '5684']),
      runCli(['bogus']),
    ]);
    assert.equal(flag.code, 2, out(flag));
    assert.equal(flag.error?.code, 'commander.unknownOption', out(flag));
    assert.match(flag.stderr, /unknown option '--dtls-prt'/);
    assert.equal(cmd.code, 2, out(cmd));
    assert.equal(cmd.error?.code, 'commander.unknownCommand', out(cmd));
    assert.match(cmd.stderr, /unknown command 'bogus'/);
  });
});
