/**
 * A test file whose tools are missing skips on a developer machine but fails in CI: run real
 * test files in a child `node --test` with a PATH that holds only node.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

const bin = mkdtempSync(join(tmpdir(), 'coap-edge-nopath-'));
symlinkSync(process.execPath, join(bin, 'node'));
after(() => rmSync(bin, { recursive: true, force: true }));

function runFile(rel: string, ci: string | undefined) {
  const file = new URL(rel, import.meta.url).pathname;
  const env: NodeJS.ProcessEnv = { PATH: bin, HOME: process.env.HOME ?? tmpdir() };
  if (ci !== undefined) env.CI = ci;
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', file], {
    env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

// one file per kind of check: the e2e tools list, and promtool alone
const FILES = ['../e2e/duplicates.test.js', '../telemetry/dashboards.test.js'];

void describe('tests whose tools are missing', () => {
  for (const rel of FILES) {
    void it(`${rel}: skipped outside CI, naming what is missing`, () => {
      const r = runFile(rel, undefined);
      assert.equal(r.status, 0, r.out);
      assert.match(r.out, /# SKIP (not installed: |promtool missing)/);
      assert.match(r.out, /^# fail 0$/m);
    });

    void it(`${rel}: a failure in CI (CI=true)`, () => {
      const r = runFile(rel, 'true');
      assert.notEqual(r.status, 0, r.out);
      assert.match(r.out, /not installed: .*CI installs every tool the tests use/);
      assert.doesNotMatch(r.out, /# SKIP/);
    });
  }
});
