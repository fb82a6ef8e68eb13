#!/usr/bin/env node
// Regenerates the configuration reference table in README.md from the settings table
// (`coap-edge config-reference`). A test fails when README.md and the schema disagree.
import { readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

const table = execFileSync(process.execPath, ['dist/src/cli.js', 'config-reference'])
  .toString()
  .trimEnd();
const readme = readFileSync('README.md', 'utf8');
const next = readme.replace(
  /<!-- config-reference:begin[\s\S]*?<!-- config-reference:end -->/,
  table,
);
if (next !== readme) writeFileSync('README.md', next);
console.log(next === readme ? 'README.md is up to date' : 'README.md updated');
