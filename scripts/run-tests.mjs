#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) with node:test.
// Node 20's --test takes file paths only (no globs), so the list is built here.
// Usage: node scripts/run-tests.mjs [--coverage] [--record-times] [substring filter ...]
// Processes run os.availableParallelism() + 1 at a time (many files mostly wait for processes,
// Redis fail-overs or timers); TEST_CONCURRENCY=<n> overrides it (docs/testing.md, "Suite time").
// Files of the folders in scripts/test-groups.mjs's SHARED share TEST_GROUPS processes (default
// 4), one after another, so that they load the modules once; the files of each folder in its
// SIDE_BY_SIDE share a process per folder, FILES_AT_ONCE at a time; every other file has a
// process of its own. Each process runs a generated entry file (under os.tmpdir()), which runs
// each of its files in a describe named by its path, with the 120 s limit a file had.
// --coverage records V8 coverage of dist/src/ in every node process of the run, child
// processes the tests start included (scripts/coverage-preload.mjs), has c8 map it back to
// src/*.ts through the source maps and write coverage/, and then
// checks the per-layer floors of scripts/coverage-floor.mjs: enforced on a whole run,
// only reported when a filter picks some files.
// --record-times writes each file's wall time in this run into scripts/test-times.json (the
// weights that balance the groups; scripts/test-times-reporter.mjs).
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { withPreload } from './preload.mjs';
import { FILE_TIMEOUT_MS, checkPlan, entrySource, filesAtOnce, plan } from './test-groups.mjs';

const root = new URL('../dist/test/', import.meta.url).pathname;
const argv = process.argv.slice(2);
const coverage = argv.includes('--coverage');
const recordTimes = argv.includes('--record-times');
const filters = argv.filter((a) => a !== '--coverage' && a !== '--record-times');
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
})(root);
// tsc never deletes what it compiled: a test file renamed or removed in test/ stays in dist/
// and would run again. Only compiled files whose source is still there are run.
const sources = new URL('../test/', import.meta.url).pathname;
const stale = [];
const chosen = files
  .map((f) => relative(root, f))
  .filter((f) => {
    if (existsSync(join(sources, f.replace(/\.js$/, '.ts')))) return true;
    stale.push(f);
    return false;
  })
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)));
if (stale.length > 0) {
  console.error(
    `not run, no source in test/ any more (left in dist/ by an earlier build): ${stale.join(', ')}`,
  );
}
if (chosen.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
const concurrencyEnv = process.env.TEST_CONCURRENCY;
const concurrency =
  concurrencyEnv === undefined || concurrencyEnv === ''
    ? availableParallelism() + 1
    : Number(concurrencyEnv);
if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
  console.error(`TEST_CONCURRENCY must be a whole number of files ≥ 1 (got ${concurrencyEnv})`);
  process.exit(2);
}
const groupsEnv = process.env.TEST_GROUPS;
const groups = groupsEnv === undefined || groupsEnv === '' ? 4 : Number(groupsEnv);
if (!Number.isSafeInteger(groups) || groups < 1) {
  console.error(`TEST_GROUPS must be a whole number of processes ≥ 1 (got ${groupsEnv})`);
  process.exit(2);
}
const entries = plan(chosen, groups);
checkPlan(chosen, entries);
const entryDir = mkdtempSync(join(tmpdir(), 'coap-edge-tests-'));
process.on('exit', () => rmSync(entryDir, { recursive: true, force: true }));
const rootUrl = pathToFileURL(root).href;
const entryFiles = entries.map((e, i) => {
  const name = e.length === 1 ? e[0].replaceAll('/', '--') : `group-${i + 1}.test.mjs`;
  const file = join(entryDir, name.replace(/\.js$/, '.mjs'));
  writeFileSync(file, entrySource(rootUrl, e, FILE_TIMEOUT_MS, filesAtOnce(e)));
  return file;
});
const longest = Math.max(...entries.map((e) => e.length));
// --record-times: a second reporter writes each file's wall time, merged into
// scripts/test-times.json after the run (the weights that balance the groups)
const timesFile = join(entryDir, 'times.json');
const testArgs = [
  '--enable-source-maps',
  '--test',
  ...(recordTimes
    ? [
        `--test-reporter=${process.stdout.isTTY ? 'spec' : 'tap'}`,
        '--test-reporter-destination=stdout',
        `--test-reporter=${new URL('test-times-reporter.mjs', import.meta.url).href}`,
        `--test-reporter-destination=${timesFile}`,
      ]
    : []),
  `--test-concurrency=${concurrency}`,
  // each file has FILE_TIMEOUT_MS (its describe); this only ends a process that hangs after
  // its files (an entry file itself exits after FILE_TIMEOUT_MS with open handles)
  `--test-timeout=${(longest + 2) * FILE_TIMEOUT_MS}`,
  ...entryFiles,
];
// Under coverage every node process of the run (the tests' children too, through
// NODE_OPTIONS) loads scripts/coverage-preload.mjs, which writes the V8 coverage of dist/src/
// only; `c8 report` then maps it to src/*.ts through the source maps.
const coverageDir = new URL('../coverage/tmp/', import.meta.url).pathname;
let env = process.env;
if (coverage) {
  rmSync(coverageDir, { recursive: true, force: true });
  mkdirSync(coverageDir, { recursive: true });
  env = withPreload(new URL('coverage-preload.mjs', import.meta.url).href, {
    COAP_TEST_COVERAGE_DIR: coverageDir,
  });
}
const started = Date.now();
const code = await run(testArgs, env);
if (recordTimes) recordFileTimes();
if (coverage) {
  console.log(`# tests under coverage: ${((Date.now() - started) / 1000).toFixed(0)} s`);
  const reported = await run([
    fileURLToPath(import.meta.resolve('c8/bin/c8.js')),
    'report',
    '--all',
    '--include=dist/src/**',
    '--include=src/**',
    // c8's default excludes (tests, configuration files, *.d.ts, …) match no file of the two
    // includes, and test-exclude compiles each of its patterns again for every file it checks
    // (--all checks every file under the root): 0.6 s of CPU a run for nothing
    // (docs/testing.md, "Where the test processes spend their CPU").
    '--exclude=**/node_modules/**',
    '--exclude-after-remap',
    '--reporter=json-summary',
    '--reporter=text-summary',
    '--report-dir=coverage',
    `--temp-directory=${coverageDir}`,
  ]);
  if (reported !== 0) process.exit(reported);
}
const floorCode =
  coverage && code === 0
    ? await run([
        new URL('coverage-floor.mjs', import.meta.url).pathname,
        ...(filters.length > 0 ? ['--report-only'] : []),
      ])
    : 0;
process.exit(code !== 0 ? code : floorCode);

/**
 * Merges the times of this run's files into scripts/test-times.json; files no longer in
 * dist/test/ are dropped, files not run keep their time.
 */
function recordFileTimes() {
  if (!existsSync(timesFile)) {
    console.error('# no test times were recorded');
    return;
  }
  const path = new URL('test-times.json', import.meta.url);
  const existing = new Set(files.map((f) => relative(root, f).replace(/\.test\.js$/, '')));
  const merged = {
    ...JSON.parse(readFileSync(path, 'utf8')),
    ...JSON.parse(readFileSync(timesFile, 'utf8')),
  };
  const kept = Object.keys(merged)
    .filter((k) => existing.has(k))
    .sort()
    .map((k) => [k, merged[k]]);
  writeFileSync(path, `${JSON.stringify(Object.fromEntries(kept), null, 2)}\n`);
  console.log(`# test times of ${kept.length} files written to scripts/test-times.json`);
}

function run(a, env = process.env) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, a, { stdio: 'inherit', env });
    child.on('exit', (c, signal) => resolve(signal ? 1 : (c ?? 1)));
  });
}
