#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) with node:test.
// Node 20's --test takes file paths only (no globs), so the list is built here.
// Usage: node scripts/run-tests.mjs [substring filter ...]
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawn } from 'node:child_process';

const root = new URL('../dist/test/', import.meta.url).pathname;
const filters = process.argv.slice(2);
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
const args = [
  '--enable-source-maps',
  '--test',
  '--test-concurrency=2',
  '--test-timeout=120000',
  ...chosen,
];
const child = spawn(process.execPath, args, { stdio: 'inherit' });
child.on('exit', (code, signal) => process.exit(signal ? 1 : (code ?? 1)));
