/**
 * scripts/coverage-floor.mjs, which `npm test` runs after the suite: it fails when a layer of
 * src/ is under its floor or has no floor, and passes when every layer is at or above it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { REPO_ROOT } from '../helpers/processes.js';

const LAYERS = ['auth', 'bridge', 'coap', 'config', 'dtls', 'enos', 'errors', 'gateway', 'redis']
  .concat(['telemetry', 'time', 'tools', 'transport'])
  .map((l) => `src/${l}/x.ts`)
  .concat(['src/cli.ts']);

const dir = mkdtempSync(join(tmpdir(), 'coap-edge-floor-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function summaryWith(files: Record<string, number>): string {
  const entry = (pct: number) => ({
    lines: { total: 1000, covered: pct * 10, skipped: 0, pct },
    branches: { total: 1000, covered: pct * 10, skipped: 0, pct },
  });
  const out: Record<string, unknown> = { total: entry(0) };
  for (const [f, pct] of Object.entries(files)) out[join(REPO_ROOT, f)] = entry(pct);
  const file = join(dir, `summary-${Object.keys(out).length}-${Math.random()}.json`);
  writeFileSync(file, JSON.stringify(out));
  return file;
}

function floor(summary: string, ...extra: string[]) {
  const r = spawnSync(
    process.execPath,
    [join(REPO_ROOT, 'scripts', 'coverage-floor.mjs'), '--summary', summary, ...extra],
    { encoding: 'utf8', timeout: 30_000 },
  );
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

void describe('coverage floor', () => {
  void it('passes when every layer is fully covered', () => {
    const r = floor(summaryWith(Object.fromEntries(LAYERS.map((f) => [f, 100]))));
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /every layer at or above its floor/);
  });

  void it('fails naming the layer that is under its floor', () => {
    const r = floor(
      summaryWith(Object.fromEntries(LAYERS.map((f) => [f, f.includes('/dtls/') ? 40 : 100]))),
    );
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /src\/dtls: lines 40\.0 % < \d+ %/);
    assert.doesNotMatch(r.out, /src\/coap:/);
  });

  void it('fails for a layer without a floor and for a layer without data', () => {
    const files = Object.fromEntries(
      LAYERS.filter((f) => !f.includes('/redis/')).map((f) => [f, 100]),
    );
    const r = floor(summaryWith({ ...files, 'src/newlayer/y.ts': 100 }));
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /src\/newlayer has no coverage floor/);
    assert.match(r.out, /src\/redis has a floor but no coverage data/);
  });

  void it('only reports with --report-only (a filtered run)', () => {
    const r = floor(summaryWith({ 'src/dtls/x.ts': 10 }), '--report-only');
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /not enforced on a partial run/);
  });
});
