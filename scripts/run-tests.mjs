#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) with node:test.
// Node 20's --test takes file paths only (no globs), so the list is built here.
// Usage: node scripts/run-tests.mjs [--coverage] [substring filter ...]
// Files run os.availableParallelism() + 1 at a time (many mostly wait for processes, Redis
// fail-overs or timers); TEST_CONCURRENCY=<n> overrides it (docs/testing.md, "Suite time").
// --coverage runs the tests under c8 (V8 coverage, mapped back to src/*.ts through the
// source maps; child processes the tests start are covered too), writes coverage/ and then
// checks the per-layer floors of scripts/coverage-floor.mjs: enforced on a whole run,
// only reported when a filter picks some files.
import { readdirSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, relative } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = new URL('../dist/test/', import.meta.url).pathname;
const argv = process.argv.slice(2);
const coverage = argv.includes('--coverage');
const filters = argv.filter((a) => a !== '--coverage');
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
})(root);
const chosen = files.filter(
  (f) => filters.length === 0 || filters.some((s) => relative(root, f).includes(s)),
);
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
const testArgs = [
  '--enable-source-maps',
  '--test',
  `--test-concurrency=${concurrency}`,
  '--test-timeout=120000',
  ...chosen,
];
const c8Args = [
  fileURLToPath(import.meta.resolve('c8/bin/c8.js')),
  '--all',
  '--include=dist/src/**',
  '--include=src/**',
  '--exclude-after-remap',
  '--reporter=json-summary',
  '--reporter=text-summary',
  '--report-dir=coverage',
  process.execPath,
];
const args = coverage ? [...c8Args, ...testArgs] : testArgs;
const started = Date.now();
const code = await run(args);
if (coverage)
  console.log(`# tests under coverage: ${((Date.now() - started) / 1000).toFixed(0)} s`);
const floorCode =
  coverage && code === 0
    ? await run([
        new URL('coverage-floor.mjs', import.meta.url).pathname,
        ...(filters.length > 0 ? ['--report-only'] : []),
      ])
    : 0;
process.exit(code !== 0 ? code : floorCode);

function run(a) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, a, { stdio: 'inherit' });
    child.on('exit', (c, signal) => resolve(signal ? 1 : (c ?? 1)));
  });
}
