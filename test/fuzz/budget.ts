/**
 * Runs the fuzz targets of one layer as node:test cases on a small budget: each target runs
 * for FUZZ_SECONDS (default 2) or FUZZ_MAX_RUNS inputs (default 1,000,000), whichever comes
 * first. The seed is new on every run unless FUZZ_SEED is set; a failure's report names the
 * seed and the shrunk input, and FUZZ_SEED=<seed> replays it. Long runs: scripts/fuzz-long.mjs.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { TARGETS, type Layer } from './targets.js';

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number`);
  return n;
}

const SECONDS = envNumber('FUZZ_SECONDS', 2);
const MAX_RUNS = envNumber('FUZZ_MAX_RUNS', 1_000_000);
const SEED = envNumber('FUZZ_SEED', 0) || (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
/** Even on a loaded machine a couple of seconds run far more inputs than this. */
const MIN_RUNS = Math.min(200, MAX_RUNS);

export function fuzzLayer(layer: Layer): void {
  const targets = TARGETS.filter((t) => t.layer === layer);
  assert.ok(targets.length > 0, `no fuzz targets for ${layer}`);
  for (const t of targets) {
    void it(t.name, (ctx) => {
      const r = t.run({ numRuns: MAX_RUNS, seed: SEED, timeLimitMs: SECONDS * 1000 });
      ctx.diagnostic(`${t.checks}: ${r.runs} inputs in ≤ ${SECONDS} s, seed ${SEED}`);
      assert.ok(!r.failed, r.report);
      assert.ok(r.runs >= MIN_RUNS, `only ${r.runs} inputs ran`);
    });
  }
}
