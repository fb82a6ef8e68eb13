/**
 * scripts/test-groups.mjs, which scripts/run-tests.mjs uses to run several test files in one
 * process (docs/testing.md, "Suite time"): no chosen file may be left out of the plan, and a
 * grouped file keeps its own hooks, its own time limit and its name in every report.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import { REPO_ROOT } from '../helpers/processes.js';

interface Groups {
  SHARED: string[];
  plan(files: string[], groups: number): string[][];
  weight(rel: string): number;
  checkPlan(files: string[], entries: string[][]): void;
  entrySource(rootUrl: string, files: string[], timeoutMs?: number): string;
}
const groups = (await import(
  pathToFileURL(join(REPO_ROOT, 'scripts', 'test-groups.mjs')).href
)) as Groups;

const dir = mkdtempSync(join(tmpdir(), 'coap-edge-groups-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const FILES = [
  'cli/cli.test.js',
  'deploy/helm.test.js',
  'e2e/shared-associations.test.js',
  'hostile/memory.test.js',
  'hostile/replay.test.js',
  'unit/auth/chain.test.js',
  'unit/coap/codec.test.js',
  'unit/dtls/prf.test.js',
  'unit/new-folder/not-in-the-census.test.js',
];

function runEntry(files: string[], timeoutMs?: number) {
  const entry = join(dir, `entry-${Math.random()}.test.mjs`);
  writeFileSync(entry, groups.entrySource(pathToFileURL(`${dir}/`).href, files, timeoutMs));
  // without NODE_TEST_CONTEXT, which tells node:test that it runs inside a test file
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', entry], {
    encoding: 'utf8',
    env,
    timeout: 60_000,
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('the plan', () => {
  it('puts every chosen file in exactly one process: shared folders grouped, the rest alone', () => {
    const entries = groups.plan(FILES, 2);
    groups.checkPlan(FILES, entries);
    assert.deepEqual(entries.flat().sort(), [...FILES].sort());
    assert.equal(entries.length, 4);
    const alone = entries.filter(
      (e) => e.length === 1 && !groups.SHARED.some((p) => e[0]!.startsWith(p)),
    );
    assert.deepEqual(alone.flat().sort(), ['cli/cli.test.js', 'e2e/shared-associations.test.js']);
    // longest first, so that no long process starts last
    const ms = entries.map((e) => e.reduce((t, f) => t + groups.weight(f), 0));
    assert.deepEqual(
      ms,
      [...ms].sort((a, b) => b - a),
    );
  });

  it('fails when a file is left out, given twice or not chosen', () => {
    const entries = groups.plan(FILES, 3);
    const lost = entries.map((e, i) => (i === 0 ? e.slice(1) : e));
    assert.throws(() => groups.checkPlan(FILES, lost), /lost files: missing \["[^"]+"\]/);
    const twice = [...entries, [FILES[0] ?? '']];
    assert.throws(() => groups.checkPlan(FILES, twice), /twice \["cli\/cli.test.js"\]/);
    const extra = [...entries, ['unit/extra.test.js']];
    assert.throws(() => groups.checkPlan(FILES, extra), /not chosen \["unit\/extra.test.js"\]/);
  });

  it('balances the groups by the files’ recorded times', () => {
    // hostile/memory is by far the longest: it gets a group to itself
    const entries = groups.plan(FILES, 3);
    assert.ok(entries.some((e) => e.length === 1 && e[0] === 'hostile/memory.test.js'));
  });
});

describe('an entry file', () => {
  writeFileSync(
    join(dir, 'a.test.mjs'),
    `import { after, before, test } from 'node:test';
before(() => console.log('A-before'));
after(() => console.log('A-after'));
test('a passes', () => {});
`,
  );
  writeFileSync(
    join(dir, 'b.test.mjs'),
    `import { test } from 'node:test';
import assert from 'node:assert/strict';
console.log('B-imported');
test('b fails', () => assert.equal(1, 2));
`,
  );
  writeFileSync(join(dir, 'boom.test.mjs'), `throw new Error('boom at import');\n`);
  writeFileSync(
    join(dir, 'slow.test.mjs'),
    `import { after, test } from 'node:test';
// the interval keeps the event loop alive until the file's own after hook, so the test is
// ended by its time limit and not cancelled for an empty loop
let alive;
after(() => clearInterval(alive));
test('never settles', () => new Promise(() => { alive = setInterval(() => {}, 1000); }));
`,
  );
  writeFileSync(
    join(dir, 'leak.test.mjs'),
    `import { test } from 'node:test';
test('leaves an interval running', () => { setInterval(() => {}, 1000); });
`,
  );

  it('runs its files one after the other, each under its name, and fails with a failing one', () => {
    const { status, out } = runEntry(['a.test.mjs', 'b.test.mjs', 'boom.test.mjs']);
    assert.equal(status, 1, out);
    // a's hooks ran around a's tests, before b was even imported
    const order = ['A-before', 'A-after', 'B-imported'].map((s) => out.indexOf(s));
    assert.ok(
      order.every((i, k) => i >= 0 && (k === 0 || i > (order[k - 1] ?? 0))),
      out,
    );
    assert.match(out, /^ok \d+ - a\.test\.mjs$/m);
    assert.match(out, /^not ok \d+ - b\.test\.mjs$/m);
    assert.match(out, /location: '[^']*b\.test\.mjs:4:1'/);
    assert.match(out, /^not ok \d+ - boom\.test\.mjs$/m);
    assert.match(out, /boom at import/);
    // the last check fails too: not every file ran
    assert.match(out, /^not ok \d+ - all 3 test files of this process ran$/m);
  });

  it('passes when its files pass', () => {
    const { status, out } = runEntry(['a.test.mjs', 'a.test.mjs?again']);
    assert.equal(status, 0, out);
    assert.match(out, /^ok \d+ - all 2 test files of this process ran$/m);
  });

  it('gives each file its own time limit', () => {
    const { status, out } = runEntry(['slow.test.mjs', 'a.test.mjs'], 500);
    assert.equal(status, 1, out);
    assert.match(out, /^not ok \d+ - slow\.test\.mjs$/m);
    assert.match(out, /test timed out after 500ms/);
    assert.match(out, /^ok \d+ - a\.test\.mjs$/m);
  });

  it('exits 1 naming what is open when its files leave a handle behind', () => {
    const { status, out } = runEntry(['leak.test.mjs'], 500);
    assert.equal(status, 1, out);
    assert.match(out, /test files left handles open: \[[^\]]*'Timeout'/);
  });
});
