#!/usr/bin/env node
// Per-layer coverage floors over coverage/coverage-summary.json (written by
// `node scripts/run-tests.mjs --coverage`, which `npm test` runs). A layer is a directory
// of src/ (files directly in src/ count as "src"). Fails when a layer's line or branch
// coverage is under its floor, or when a layer has no floor yet (add one here).
// Usage: node scripts/coverage-floor.mjs [--report-only] [--summary FILE]
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { parseArgs } from 'node:util';

/**
 * Floors in percent, 3 points (lines) and 5 points (branches) under what the full suite
 * measured (docs/testing.md), so a
 * change that drops a layer's tests fails CI while run-to-run noise does not. Raise them
 * when a layer's tests grow.
 */
const FLOORS = {
  src: { lines: 89, branches: 64 },
  auth: { lines: 94, branches: 87 },
  bridge: { lines: 92, branches: 84 },
  coap: { lines: 96, branches: 88 },
  config: { lines: 96, branches: 79 },
  dtls: { lines: 93, branches: 85 },
  enos: { lines: 97, branches: 91 },
  errors: { lines: 94, branches: 95 },
  gateway: { lines: 91, branches: 81 },
  redis: { lines: 93, branches: 78 },
  telemetry: { lines: 95, branches: 83 },
  time: { lines: 97, branches: 91 },
  tools: { lines: 91, branches: 74 },
  transport: { lines: 90, branches: 73 },
};

const { values: opts } = parseArgs({
  options: {
    'report-only': { type: 'boolean', default: false },
    summary: {
      type: 'string',
      default: new URL('../coverage/coverage-summary.json', import.meta.url).pathname,
    },
  },
});
const repo = new URL('..', import.meta.url).pathname;
const summary = JSON.parse(readFileSync(opts.summary, 'utf8'));

const layers = new Map();
for (const [file, s] of Object.entries(summary)) {
  if (file === 'total') continue;
  const parts = relative(repo, file).split('/');
  if (parts[0] !== 'src') continue;
  const layer = parts.length > 2 ? parts[1] : 'src';
  const acc = layers.get(layer) ?? { files: 0, lines: [0, 0], branches: [0, 0] };
  acc.files++;
  acc.lines[0] += s.lines.covered;
  acc.lines[1] += s.lines.total;
  acc.branches[0] += s.branches.covered;
  acc.branches[1] += s.branches.total;
  layers.set(layer, acc);
}

const label = (layer) => (layer === 'src' ? 'src/*.ts' : `src/${layer}`);
const pct = ([c, t]) => (t === 0 ? 100 : (100 * c) / t);
const problems = [];
console.log('layer        files  lines %  (floor)  branches %  (floor)');
for (const [layer, acc] of [...layers].sort(([a], [b]) => a.localeCompare(b))) {
  const floor = FLOORS[layer];
  const lines = pct(acc.lines);
  const branches = pct(acc.branches);
  console.log(
    `${layer.padEnd(12)} ${String(acc.files).padStart(5)}  ${lines.toFixed(1).padStart(7)}  (${floor?.lines ?? '-'})`.padEnd(
      44,
    ) + `${branches.toFixed(1).padStart(10)}  (${floor?.branches ?? '-'})`,
  );
  if (floor === undefined) problems.push(`${label(layer)} has no coverage floor`);
  else {
    if (lines < floor.lines)
      problems.push(`${label(layer)}: lines ${lines.toFixed(1)} % < ${floor.lines} %`);
    if (branches < floor.branches)
      problems.push(`${label(layer)}: branches ${branches.toFixed(1)} % < ${floor.branches} %`);
  }
}
for (const layer of Object.keys(FLOORS)) {
  if (!layers.has(layer)) problems.push(`${label(layer)} has a floor but no coverage data`);
}
if (problems.length > 0) {
  console.log(
    `coverage floor: ${opts['report-only'] ? 'not enforced on a partial run' : 'FAILED'}`,
  );
  for (const p of problems) console.log(`  ${p}`);
  if (!opts['report-only']) process.exitCode = 1;
} else {
  console.log('coverage floor: every layer at or above its floor');
}
