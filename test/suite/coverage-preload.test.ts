/**
 * scripts/coverage-preload.mjs, which `node scripts/run-tests.mjs --coverage` loads into every
 * node process of the run: at exit it writes the V8 coverage (with block counts, for branches)
 * of the scripts under dist/src/ only, including code that 'exit' listeners run.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import { REPO_ROOT } from '../helpers/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'coap-edge-coverage-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Range {
  startOffset: number;
  endOffset: number;
  count: number;
}
interface ScriptCoverage {
  url: string;
  functions: { functionName: string; ranges: Range[]; isBlockCoverage: boolean }[];
}

const SRC = pathToFileURL(join(REPO_ROOT, 'dist', 'src')).href + '/';
const PSK = pathToFileURL(join(REPO_ROOT, 'dist', 'src', 'enos', 'psk.js')).href;
// derivePsk runs only in an 'exit' listener; yaml is a package from node_modules
const PROGRAM = `
import { derivePsk } from ${JSON.stringify(PSK)};
import 'yaml';
process.on('exit', () => derivePsk('abcdefg'));
`;

function runCovered(out: string) {
  const preload = pathToFileURL(join(REPO_ROOT, 'scripts', 'coverage-preload.mjs')).href;
  const r = spawnSync(
    process.execPath,
    ['--import', preload, '--input-type=module', '-e', PROGRAM],
    { encoding: 'utf8', env: { ...process.env, COAP_TEST_COVERAGE_DIR: out }, timeout: 30_000 },
  );
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  return readdirSync(out).map(
    (f) => JSON.parse(readFileSync(join(out, f), 'utf8')) as { result: ScriptCoverage[] },
  );
}

describe('the coverage preload', () => {
  it('writes one file a process, with the scripts of dist/src/ only', () => {
    const out = mkdtempSync(join(dir, 'only-src-'));
    const reports = runCovered(out);
    assert.equal(reports.length, 1);
    const urls = reports[0]!.result.map((s) => s.url);
    assert.ok(urls.includes(PSK), urls.join('\n'));
    assert.deepEqual(
      urls.filter((u) => !u.startsWith(SRC)),
      [],
    );
  });

  it('counts blocks, and code that an exit listener runs', () => {
    const out = mkdtempSync(join(dir, 'exit-'));
    const psk = runCovered(out)[0]!.result.find((s) => s.url === PSK);
    const derive = psk?.functions.find((f) => f.functionName === 'derivePsk');
    assert.ok(derive !== undefined, 'derivePsk has no coverage');
    assert.equal(derive.isBlockCoverage, true);
    assert.equal(derive.ranges[0]?.count, 1);
    // the early returns for a bad secret were not taken: their blocks count 0
    assert.ok(derive.ranges.some((r) => r.count === 0));
  });
});
