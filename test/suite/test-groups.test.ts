/**
 * scripts/test-groups.mjs, which scripts/run-tests.mjs uses to run several test files in one
 * process (docs/testing.md, "Suite time"): no chosen file may be left out of the plan, and a
 * grouped file keeps its own hooks, its own time limit, its name in every report and its own
 * child processes, also when files run side by side.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import { REPO_ROOT } from '../helpers/processes.js';

interface Groups {
  SHARED: string[];
  SIDE_BY_SIDE: string[];
  FILES_AT_ONCE: number;
  plan(files: string[], groups: number): string[][];
  weight(rel: string): number;
  isShared(rel: string): boolean;
  filesAtOnce(entry: string[]): number;
  checkPlan(files: string[], entries: string[][]): void;
  entrySource(rootUrl: string, files: string[], timeoutMs?: number, atOnce?: number): string;
}
const groups = (await import(
  pathToFileURL(join(REPO_ROOT, 'scripts', 'test-groups.mjs')).href
)) as Groups;

const dir = mkdtempSync(join(tmpdir(), 'coap-edge-groups-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const FILES = [
  'cli/cli.test.js',
  'integration/http/http-backend.test.js',
  'e2e/redis-topologies.test.js',
  'hostile/memory.test.js',
  'hostile/replay.test.js',
  'unit/auth/chain.test.js',
  'unit/coap/codec.test.js',
  'unit/dtls/prf.test.js',
  'unit/new-folder/not-in-the-census.test.js',
];

function runEntry(files: string[], timeoutMs?: number, atOnce?: number, reporters: string[] = []) {
  const entry = join(dir, `entry-${Math.random()}.test.mjs`);
  writeFileSync(entry, groups.entrySource(pathToFileURL(`${dir}/`).href, files, timeoutMs, atOnce));
  // without NODE_TEST_CONTEXT, which tells node:test that it runs inside a test file
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const args = ['--test', '--test-reporter=tap', ...reporters, entry];
  const r = spawnSync(process.execPath, args, {
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
    assert.deepEqual(alone.flat().sort(), ['cli/cli.test.js', 'e2e/redis-topologies.test.js']);
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

  it('puts the files of each side-by-side folder in one process, longest first', () => {
    const files = [
      'e2e/uplink.test.js',
      'e2e/redis-topologies.test.js',
      'interop/libcoap.test.js',
      'interop/mbedtls.test.js',
      'telemetry/tracing.test.js',
      'telemetry/metrics.test.js',
      'unit/coap/codec.test.js',
    ];
    const entries = groups.plan(files, 2);
    groups.checkPlan(files, entries);
    const byFirst = new Map(entries.map((e) => [e[0], e]));
    assert.deepEqual(byFirst.get('e2e/redis-topologies.test.js'), [
      'e2e/redis-topologies.test.js',
      'e2e/uplink.test.js',
    ]);
    assert.deepEqual(byFirst.get('interop/mbedtls.test.js'), [
      'interop/mbedtls.test.js',
      'interop/libcoap.test.js',
    ]);
    // telemetry/ files join the groups (each resets OpenTelemetry's globals when it ends)
    assert.ok(groups.isShared('telemetry/metrics.test.js'));
    assert.ok(groups.isShared('telemetry/tracing.test.js'));
    const grouped = entries.filter((e) => e.some((f) => f.startsWith('telemetry/')));
    assert.deepEqual(grouped.flat().sort(), [
      'telemetry/metrics.test.js',
      'telemetry/tracing.test.js',
      'unit/coap/codec.test.js',
    ]);
    assert.equal(entries.length, 4);
    for (const e of entries) {
      const sideBySide = e.length > 1 && groups.SIDE_BY_SIDE.some((p) => e[0]!.startsWith(p));
      assert.equal(groups.filesAtOnce(e), sideBySide ? groups.FILES_AT_ONCE : 1, e.join());
    }
    assert.ok(groups.FILES_AT_ONCE > 1);
  });

  it('puts the files of a TOGETHER set in one group, whatever the number of groups', () => {
    const files = ['deploy/helm.test.js', 'deploy/k8s.test.js', 'unit/coap/codec.test.js'];
    for (const n of [1, 2, 3, 4]) {
      const entries = groups.plan(files, n);
      groups.checkPlan(files, entries);
      const helm = entries.find((e) => e.includes('deploy/helm.test.js'));
      assert.ok(helm?.includes('deploy/k8s.test.js'), JSON.stringify(entries));
    }
    // alone, either keeps its own group
    assert.deepEqual(groups.plan(['deploy/k8s.test.js', 'unit/coap/codec.test.js'], 2).length, 2);
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

  // named promises the files of one process share, made by whichever file asks first
  const MARKS = `const marks = (globalThis.marks ??= {});
const mark = (name) => {
  if (marks[name] === undefined) {
    let resolve;
    const promise = new Promise((r) => (resolve = r));
    marks[name] = { promise, resolve };
  }
  return marks[name];
};
`;

  it('side by side: runs its files at once, each under its name and its own tests in order', () => {
    // each file waits for a mark the other sets: one after the other, the first never ends
    const waiter = (me: string, other: string) => `import { test } from 'node:test';
${MARKS}
test('${me} 1 waits for ${other}', async () => {
  mark('${me}').resolve();
  await mark('${other}').promise;
  console.log('${me}-1-done');
});
test('${me} 2 after ${me} 1', () => console.log('${me}-2-done'));
`;
    writeFileSync(join(dir, 'ping.test.mjs'), waiter('ping', 'pong'));
    writeFileSync(join(dir, 'pong.test.mjs'), waiter('pong', 'ping'));
    const { status, out } = runEntry(['ping.test.mjs', 'pong.test.mjs'], 5_000, 2);
    assert.equal(status, 0, out);
    assert.match(out, /^ +ok \d+ - ping\.test\.mjs$/m);
    assert.match(out, /^ +ok \d+ - pong\.test\.mjs$/m);
    assert.match(out, /^ok \d+ - all 2 test files of this process ran$/m);
    for (const f of ['ping', 'pong'])
      assert.ok(out.indexOf(`${f}-1-done`) < out.indexOf(`${f}-2-done`), out);
    // one after the other (as in a SHARED group) the first file cannot pass
    const serial = runEntry(['ping.test.mjs', 'pong.test.mjs'], 2_000);
    assert.equal(serial.status, 1, serial.out);
    assert.match(serial.out, /^not ok \d+ - ping\.test\.mjs$/m);
  });

  it('side by side: a file that ends kills its own child processes and brokers only', () => {
    // "keeper" starts a child and a Mosquitto and checks that they outlive "quitter", which
    // starts its own and ends with after(killAll) and after(killBrokers) while keeper still
    // runs; keeper's own cleanup then ends its own
    const helper = (...path: string[]): string =>
      JSON.stringify(pathToFileURL(join(REPO_ROOT, 'dist', 'test', ...path)).href);
    /** What both files do: start a child and a broker; end them in `after`, say so, mark it. */
    const prelude = (name: string) => `import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Proc, killAll } from ${helper('helpers', 'processes.js')};
import { Mosquitto, killBrokers } from ${helper('integration', 'bridge', 'brokers.js')};
${MARKS}
const own = {};
const start = async () => {
  own.child = new Proc(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { timeoutMs: 20_000 });
  own.broker = await Mosquitto.start();
};
after(async () => {
  await Promise.all([killAll(), killBrokers()]);
  console.log('${name} after its own cleanup: child ' + (own.child.exited ? 'gone' : 'alive') +
    ', broker ' + (own.broker.child === undefined ? 'gone' : 'alive'));
  mark('${name} ended').resolve();
});
`;
    writeFileSync(
      join(dir, 'keeper.test.mjs'),
      `${prelude('keeper')}
test('my child and broker outlive the other file', async () => {
  await start();
  mark('keeper started').resolve();
  await mark('quitter ended').promise;
  assert.equal(own.child.exited, false, 'the other file killed my child');
  assert.notEqual(own.broker.child, undefined, 'the other file killed my broker');
});
`,
    );
    writeFileSync(
      join(dir, 'quitter.test.mjs'),
      `${prelude('quitter')}
test('starts a child and a broker and ends', async () => {
  await mark('keeper started').promise;
  await start();
});
`,
    );
    const { status, out } = runEntry(['keeper.test.mjs', 'quitter.test.mjs'], 15_000, 2);
    assert.equal(status, 0, out);
    assert.match(out, /quitter after its own cleanup: child gone, broker gone/);
    assert.match(out, /keeper after its own cleanup: child gone, broker gone/);
    assert.match(out, /^ +ok \d+ - keeper\.test\.mjs$/m);
  });

  it('exits 1 naming what is open when its files leave a handle behind', () => {
    const { status, out } = runEntry(['leak.test.mjs'], 500);
    assert.equal(status, 1, out);
    assert.match(out, /test files left handles open: \[[^\]]*'Timeout'/);
  });
});

describe('--record-times (scripts/test-times-reporter.mjs)', () => {
  it('reports each file’s wall time under its key in scripts/test-times.json', () => {
    // CommonJS (.js in a folder without package.json), named as the runner's files are
    const test = (ms: number) =>
      `const { it } = require('node:test');\n` +
      `it('waits ${ms} ms', () => new Promise((r) => setTimeout(r, ${ms})));\n`;
    mkdirSync(join(dir, 'times'), { recursive: true });
    writeFileSync(join(dir, 'times', 'slow.test.js'), test(600));
    writeFileSync(join(dir, 'times', 'quick.test.js'), test(0));
    const out = join(dir, 'times.json');
    const reporter = pathToFileURL(join(REPO_ROOT, 'scripts', 'test-times-reporter.mjs')).href;
    const r = runEntry(['times/slow.test.js', 'times/quick.test.js'], undefined, 1, [
      '--test-reporter-destination=stdout',
      `--test-reporter=${reporter}`,
      `--test-reporter-destination=${out}`,
    ]);
    assert.equal(r.status, 0, r.out);
    const times = JSON.parse(readFileSync(out, 'utf8')) as Record<string, number>;
    assert.deepEqual(Object.keys(times).sort(), ['times/quick', 'times/slow']);
    assert.ok(times['times/slow']! >= 600, JSON.stringify(times));
    assert.ok(times['times/quick']! < times['times/slow']!, JSON.stringify(times));
  });
});

describe('the runner (scripts/run-tests.mjs)', () => {
  it('does not run a compiled test file whose source is gone from test/', () => {
    // what a renamed test leaves in dist/: tsc never deletes its old output
    const name = `stale-probe-${process.pid}.test.js`;
    const file = join(REPO_ROOT, 'dist', 'test', 'suite', name);
    writeFileSync(
      file,
      `import { test } from 'node:test';\ntest('stale', () => console.log('STALE-PROBE-RAN'));\n`,
    );
    try {
      const env = { ...process.env };
      delete env.NODE_TEST_CONTEXT;
      const r = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts', 'run-tests.mjs'), name], {
        encoding: 'utf8',
        env,
        timeout: 60_000,
      });
      const out = `${r.stdout}${r.stderr}`;
      assert.doesNotMatch(out, /STALE-PROBE-RAN/);
      assert.match(out, new RegExp(`no source in test/.*suite/${name}`));
      assert.match(out, /no test files matched/);
      assert.equal(r.status, 1, out);
    } finally {
      rmSync(file, { force: true });
    }
  });
});
