/**
 * `npm test` builds before it runs the tests, and its build (`npm run build`, `tsc -b`) skips
 * the compiler when dist/ is up to date: a copy of the repository's build script, tsconfig and
 * link-bin in a small project of its own, built with the repository's TypeScript. A dist that
 * is fresh is not compiled again (no source is read); one that is stale (a source changed, a
 * file added, the last build failed) is rebuilt or the build fails: a stale dist is never what
 * the tests run.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { REPO_ROOT } from '../helpers/processes.js';

interface Scripts {
  build: string;
  test: string;
}
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  scripts: Scripts;
};

const dir = mkdtempSync(join(tmpdir(), 'coap-edge-build-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const readsLog = join(dir, 'reads.log');

// records every source of the project that a process reads (tsc reads through fs.readFileSync)
const PRELOAD = `import fs from 'node:fs';
const read = fs.readFileSync;
fs.readFileSync = function (p, ...rest) {
  if (typeof p === 'string' && p.startsWith(${JSON.stringify(dir)}) && p.endsWith('.ts') && !p.includes('node_modules'))
    fs.appendFileSync(${JSON.stringify(readsLog)}, p + '\\n');
  return read.call(this, p, ...rest);
};
`;

function write(rel: string, text: string, edit = true): void {
  const file = join(dir, rel);
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, text);
  if (!edit) return;
  // an edit made after the last build: a second later than anything the build wrote (whatever
  // the file system's time resolution)
  const later = new Date(Date.now() + 1000);
  utimesSync(file, later, later);
}

function setUp(): void {
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: 'build-probe', private: true, type: 'module', scripts: pkg.scripts }),
  );
  // the repository's options, but no @types/node to parse on every build (the probe's sources
  // use none)
  const tsconfig = JSON.parse(readFileSync(join(REPO_ROOT, 'tsconfig.json'), 'utf8')) as {
    compilerOptions: Record<string, unknown>;
  };
  tsconfig.compilerOptions.types = [];
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig));
  mkdirSync(join(dir, 'scripts'));
  copyFileSync(join(REPO_ROOT, 'scripts', 'link-bin.mjs'), join(dir, 'scripts', 'link-bin.mjs'));
  writeFileSync(join(dir, 'preload.mjs'), PRELOAD);
  write('src/cli.ts', `export const name: string = 'probe';\n`, false);
  write('src/a.ts', `export const a: number = 1;\n`, false);
  write('test/a.test.ts', `import { a } from '../src/a.js';\nexport const b: number = a;\n`, false);
}

/** The build script (`npm run build` without npm's own start) in the project; the sources it read. */
function build() {
  rmSync(readsLog, { force: true });
  const r = spawnSync('sh', ['-c', pkg.scripts.build], {
    cwd: dir,
    encoding: 'utf8',
    timeout: 90_000,
    env: {
      ...process.env,
      // the repository's tsc
      PATH: [join(REPO_ROOT, 'node_modules', '.bin'), process.env.PATH ?? ''].join(delimiter),
      NODE_OPTIONS: `--import ${join(dir, 'preload.mjs')}`,
    },
  });
  const reads = existsSync(readsLog)
    ? readFileSync(readsLog, 'utf8').split('\n').filter(Boolean)
    : [];
  return { status: r.status, out: `${r.stdout}${r.stderr}`, reads };
}

const out = (rel: string) => readFileSync(join(dir, 'dist', rel), 'utf8');

void describe('the build npm test runs first', () => {
  void it('npm test builds before it runs the tests', () => {
    assert.match(pkg.scripts.test, /^npm run build && node scripts\/run-tests\.mjs/);
  });

  void it('compiles a fresh checkout, then skips the compiler while dist is up to date', () => {
    setUp();
    const first = build();
    assert.equal(first.status, 0, first.out);
    assert.ok(first.reads.length >= 3, first.out);
    assert.match(out('src/a.js'), /a = 1/);
    assert.ok(existsSync(join(dir, 'node_modules', '.bin', 'coap-edge')), 'link-bin ran');

    const again = build();
    assert.equal(again.status, 0, again.out);
    assert.deepEqual(again.reads, [], 'no source is read when dist is up to date');
  });

  void it('rebuilds after a source changed', () => {
    write('src/a.ts', `export const a: number = 2;\n`);
    const r = build();
    assert.equal(r.status, 0, r.out);
    assert.match(out('src/a.js'), /a = 2/);
  });

  void it('builds a file added since', () => {
    write('test/new.test.ts', `export const n: number = 3;\n`);
    const r = build();
    assert.equal(r.status, 0, r.out);
    assert.match(out('test/new.test.js'), /n = 3/);
  });

  void it('fails, every time, while the last build had type errors', () => {
    write('src/a.ts', `export const a: string = 4;\n`);
    for (let i = 0; i < 2; i++) {
      const r = build();
      assert.notEqual(r.status, 0, r.out);
      assert.match(r.out, /error TS2322/);
      assert.match(out('src/a.js'), /a = 2/, 'noEmitOnError: the old output stays');
    }
    write('src/a.ts', `export const a: number = 5;\n`);
    const fixed = build();
    assert.equal(fixed.status, 0, fixed.out);
    assert.match(out('src/a.js'), /a = 5/);
  });
});
