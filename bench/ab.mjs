#!/usr/bin/env node
// Before/after driver (bench/history/levers.md, "Per-datagram CPU levers"): runs one bench from two
// builds alternately — base, new, and base again as the identical-process control — the order
// rotating per iteration, and prints one JSON object: per path the medians of each build and
// the medians (and ranges) of the per-iteration ratios new/base and control/base.
//
//   node bench/ab.mjs --base <dir> --new <dir> [--iterations 6] --bench uplink.js \
//     --args "--variants base --rounds 1 --duration 4 --warmup 1" \
//     --paths summary.medians.coapEdgeReply.serverCpuUsPerMessage,... [--out file] [--new-env K=V]
//
// <dir> is a checkout with its own dist/ (npm run build) and node_modules; each run is
// `node <dir>/dist/bench/<bench> <args>` with <dir> as working directory. --new-env sets one
// environment variable for the new runs only (e.g. NODE_OPTIONS). Progress goes to stderr.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
const a = process.argv.slice(2);
const opt = (k, d) => {
  const i = a.indexOf('--' + k);
  return i >= 0 ? a[i + 1] : d;
};
const base = opt('base'),
  neu = opt('new'),
  n = Number(opt('iterations', '6'));
const bench = opt('bench'),
  args = opt('args', '').split(' ').filter(Boolean);
const paths = opt('paths').split(',');
const out = opt('out', `/tmp/ab-${bench}-${Date.now()}.json`);
const newEnv = opt('new-env'); // KEY=VALUE for the new runs only
const builds = [
  ['base', base],
  ['new', neu],
  ['control', base],
];
const get = (o, p) => p.split('.').reduce((x, k) => (x == null ? undefined : x[k]), o);
const its = [];
for (let i = 0; i < n; i++) {
  const order = builds.slice(i % 3).concat(builds.slice(0, i % 3));
  const it = { load: [], values: {} };
  for (const [name, dir] of order) {
    const r = spawnSync(process.execPath, [`${dir}/dist/bench/${bench}`, ...args], {
      cwd: dir,
      encoding: 'utf8',
      maxBuffer: 1 << 28,
      env:
        name === 'new' && newEnv
          ? { ...process.env, [newEnv.split('=')[0]]: newEnv.slice(newEnv.indexOf('=') + 1) }
          : process.env,
    });
    it.load.push(loadAverage());
    if (r.status !== 0) {
      process.stderr.write(`${name} failed: ${r.stderr.slice(-2000)}\n`);
      it.values[name] = null;
      continue;
    }
    const j = JSON.parse(r.stdout);
    it.values[name] = Object.fromEntries(paths.map((p) => [p, get(j, p)]));
    process.stderr.write(`it ${i + 1}/${n} ${name}: ${JSON.stringify(it.values[name])}\n`);
  }
  its.push(it);
  writeFileSync(out, JSON.stringify({ bench, args, iterations: its }, null, 1));
}
function loadAverage() {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}
const med = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  if (!s.length) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const summary = {};
for (const p of paths) {
  const ratio = (name) =>
    its.map((it) =>
      it.values[name] && it.values.base ? it.values[name][p] / it.values.base[p] : NaN,
    );
  summary[p] = {
    base: med(its.map((it) => it.values.base?.[p])),
    new: med(its.map((it) => it.values.new?.[p])),
    control: med(its.map((it) => it.values.control?.[p])),
    newOverBase: med(ratio('new')),
    controlOverBase: med(ratio('control')),
    newOverBaseRange: [
      Math.min(...ratio('new').filter(Number.isFinite)),
      Math.max(...ratio('new').filter(Number.isFinite)),
    ],
    controlOverBaseRange: [
      Math.min(...ratio('control').filter(Number.isFinite)),
      Math.max(...ratio('control').filter(Number.isFinite)),
    ],
  };
}
const loads = its.flatMap((it) => it.load);
const res = {
  bench,
  args,
  iterations: n,
  loadavg: [Math.min(...loads), Math.max(...loads)],
  summary,
};
writeFileSync(out, JSON.stringify({ ...res, raw: its }, null, 1));
console.log(JSON.stringify(res, null, 1));
