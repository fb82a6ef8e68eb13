/**
 * The settings table's unit convention (a duration's name ends in `Ms` or `Seconds`) and the
 * former names of renamed settings: still read from the YAML file, the environment and flags,
 * each with one warning naming the new name; both names in one source are refused.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, envName, loadConfig, type LoadOptions } from '../../../src/config/load.js';
import {
  renamedSettings,
  settings,
  type RenamedSetting,
  type SettingName,
} from '../../../src/config/settings.js';

const names = Object.keys(settings) as SettingName[];
const formerNames = Object.keys(renamedSettings) as RenamedSetting[];

/** loadConfig with the warnings it gives. */
function load(opts: LoadOptions): { config: ReturnType<typeof loadConfig>; warnings: string[] } {
  const warnings: string[] = [];
  const config = loadConfig({ ...opts, onDeprecated: (m) => warnings.push(m) });
  return { config, warnings };
}

describe('settings: units in names', () => {
  it('a setting measured in ms ends in Ms, one in seconds ends in Seconds', () => {
    for (const key of names) {
      const arg = settings[key].arg;
      if (arg === '<ms>') assert.match(key, /Ms$/, key);
      if (arg === '<seconds>') assert.match(key, /Seconds$/, key);
      if (/(Ms|Seconds)$/.test(key)) assert.ok(arg === '<ms>' || arg === '<seconds>', key);
    }
  });

  it('every former name maps to a setting, is no setting itself, and only the unit was added', () => {
    for (const former of formerNames) {
      const key = renamedSettings[former];
      assert.ok(key in settings, `${former} → ${key}`);
      assert.equal(former in settings, false, former);
      assert.match(key, new RegExp(`^${former}(Ms|Seconds)$`));
    }
  });

  it('test-only knobs are no settings', () => {
    assert.equal('presenceLifetimeScale' in settings, false);
    for (const key of names) assert.doesNotMatch(settings[key].doc, /test only/i, key);
  });
});

describe('settings: former names', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-settings-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const yamlFile = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it('the YAML file: read under the new name, one warning naming it', () => {
    const file = yamlFile('old.yaml', 'drainTimeout: 7\nregistryTimeout: 1500\nlogLevel: warn\n');
    const { config, warnings } = load({ file });
    assert.equal(config.drainTimeoutSeconds, 7);
    assert.equal(config.registryTimeoutMs, 1500);
    assert.equal(config.logLevel, 'warn');
    assert.deepEqual(warnings, [
      `${file}: "drainTimeout" is deprecated, use "drainTimeoutSeconds" (same unit)`,
      `${file}: "registryTimeout" is deprecated, use "registryTimeoutMs" (same unit)`,
    ]);
  });

  it('every former name, as a YAML key, a variable and a flag', () => {
    for (const former of formerNames) {
      const key = renamedSettings[former];
      const value = key === 'ackTimeoutMs' ? 0 : 3;
      const file = yamlFile(`${former}.yaml`, `${former}: ${value}\n`);
      const sources: [string, LoadOptions][] = [
        ['file', { file }],
        ['variable', { env: { [envName(former)]: String(value) } }],
        ['flag', { flags: { [former]: String(value) } }],
      ];
      for (const [what, opts] of sources) {
        const { config, warnings } = load(opts);
        assert.equal(config[key], value, `${former} (${what})`);
        assert.equal(warnings.length, 1, `${former} (${what})`);
        assert.match(warnings[0] ?? '', /is deprecated, use /, `${former} (${what})`);
      }
    }
  });

  it('the environment and flags name the new variable and flag', () => {
    const env = load({ env: { COAP_EDGE_IDLE_TIMEOUT: '600' } });
    assert.equal(env.config.idleTimeoutSeconds, 600);
    assert.deepEqual(env.warnings, [
      'environment: COAP_EDGE_IDLE_TIMEOUT is deprecated, use COAP_EDGE_IDLE_TIMEOUT_SECONDS (same unit)',
    ]);
    const flag = load({ flags: { ackTimeout: '-1' } });
    assert.equal(flag.config.ackTimeoutMs, -1);
    assert.deepEqual(flag.warnings, [
      'command line: --ack-timeout is deprecated, use --ack-timeout-ms (same unit)',
    ]);
  });

  it('a former name is validated as its setting, named in the error', () => {
    assert.throws(
      () => load({ env: { COAP_EDGE_DRAIN_TIMEOUT: 'soon' } }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /environment variable COAP_EDGE_DRAIN_TIMEOUT: invalid value for "drainTimeoutSeconds"/.test(
          err.message,
        ),
    );
  });

  it('both names in one source are refused; in different sources the later source wins', () => {
    const file = yamlFile('both.yaml', 'drainTimeout: 5\ndrainTimeoutSeconds: 6\n');
    assert.throws(
      () => load({ file }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message ===
          `${file}: both "drainTimeout" and "drainTimeoutSeconds" are set; keep only "drainTimeoutSeconds"`,
    );
    assert.throws(
      () => load({ env: { COAP_EDGE_MAX_TTD: '5', COAP_EDGE_MAX_TTD_SECONDS: '6' } }),
      /environment: both COAP_EDGE_MAX_TTD and COAP_EDGE_MAX_TTD_SECONDS are set/,
    );
    assert.throws(
      () => load({ flags: { maxTtd: '5', maxTtdSeconds: '6' } }),
      /command line: both --max-ttd and --max-ttd-seconds are set/,
    );
    const newFile = yamlFile('new.yaml', 'maxTtdSeconds: 6\n');
    const layered = load({ file: newFile, env: { COAP_EDGE_MAX_TTD: '5' } });
    assert.equal(layered.config.maxTtdSeconds, 5, 'the environment wins over the file');
    assert.equal(layered.warnings.length, 1);
  });

  it("a route's former timeout field becomes timeoutMs, with a warning; both are refused", () => {
    const route = (extra: string): string =>
      `routes:\n  - match: /sys/+/+/a\n    backend: mqtt\n` +
      `  - match: /sys/+/+/b\n    backend: http\n    url: http://127.0.0.1:1/x\n${extra}`;
    const old = load({ file: yamlFile('route-old.yaml', route('    timeout: 300\n')) });
    const r1 = old.config.routes[1];
    assert.ok(r1?.backend === 'http');
    assert.equal(r1.timeoutMs, 300);
    assert.equal(r1.timeout, undefined);
    assert.deepEqual(old.warnings, [
      'routes[1]: "timeout" is deprecated, use "timeoutMs" (same unit)',
    ]);
    const current = load({ file: yamlFile('route-new.yaml', route('    timeoutMs: 300\n')) });
    assert.equal(
      current.config.routes[1]?.backend === 'http' && current.config.routes[1].timeoutMs,
      300,
    );
    assert.deepEqual(current.warnings, []);
    const file = yamlFile('route-both.yaml', route('    timeout: 300\n    timeoutMs: 400\n'));
    assert.throws(() => load({ file }), /both timeout and timeoutMs are set; keep only timeoutMs/);
  });

  it('without former names there is no warning', () => {
    const file = yamlFile('current.yaml', 'drainTimeoutSeconds: 5\n');
    const { config, warnings } = load({
      file,
      env: { COAP_EDGE_IDLE_TIMEOUT_SECONDS: '600' },
      flags: { ackTimeoutMs: '0' },
    });
    assert.equal(config.drainTimeoutSeconds, 5);
    assert.equal(config.idleTimeoutSeconds, 600);
    assert.equal(config.ackTimeoutMs, 0);
    assert.deepEqual(warnings, []);
  });
});
