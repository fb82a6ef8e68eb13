#!/usr/bin/env node
// The CPU of some test files in two checkouts, side by side: base, new, and base again as the
// identical-process control, the order rotating each round, each run
// `/usr/bin/time node scripts/run-tests.mjs <filters>` in its checkout (its own runner and
// dist/), one at a time. Prints each run (user + sys of the runner and all its children, wall,
// load average) and the medians, with new / base and control / base per round.
//
//   node scripts/test-cpu-ab.mjs --base <dir> --new <dir> [--rounds 3] [--env K=V] -- <filters…>
//
// --env sets a variable for every run (e.g. TEST_GROUPS=1). (docs/testing.md, "The sixth
// session".)
import { spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';

const argv = process.argv.slice(2);
const dash = argv.indexOf('--');
const opts = dash < 0 ? argv : argv.slice(0, dash);
const filters = dash < 0 ? [] : argv.slice(dash + 1);
const opt = (k, d) => {
  const i = opts.indexOf(`--${k}`);
  return i >= 0 ? opts[i + 1] : d;
};
const base = opt('base');
const neu = opt('new');
const rounds = Number(opt('rounds', '3'));
if (base === undefined || neu === undefined || filters.length === 0 || !(rounds >= 1)) {
  console.error('usage: test-cpu-ab.mjs --base <dir> --new <dir> [--rounds n] -- <filters…>');
  process.exit(2);
}
const env = { ...process.env };
for (let i = 0; i < opts.length; i++) {
  if (opts[i] !== '--env') continue;
  const [k = '', ...v] = (opts[i + 1] ?? '').split('=');
  env[k] = v.join('=');
}
const builds = [
  ['base', base],
  ['new', neu],
  ['control', base],
];
const runs = { base: [], new: [], control: [] };
const ratios = { new: [], control: [] };
for (let r = 0; r < rounds; r++) {
  const order = builds.slice(r % 3).concat(builds.slice(0, r % 3));
  const got = {};
  for (const [name, dir] of order) {
    const load = loadavg()[0].toFixed(1);
    const p = spawnSync(
      '/usr/bin/time',
      ['-f', '%U %S %e', process.execPath, 'scripts/run-tests.mjs', ...filters],
      { cwd: dir, env, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 },
    );
    const [user, sys, wall] = p.stderr.trim().split('\n').pop().split(' ').map(Number);
    const failed = /^# fail (\d+)$/m.exec(p.stdout)?.[1] ?? '?';
    const cpu = user + sys;
    got[name] = cpu;
    runs[name].push(cpu);
    console.log(
      `round ${r + 1} ${name}: ${cpu.toFixed(2)} s CPU (${user} + ${sys}), ${wall} s wall, ` +
        `load ${load}, exit ${p.status}, failed ${failed}`,
    );
  }
  ratios.new.push(got.new / got.base);
  ratios.control.push(got.control / got.base);
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const f = (xs) => xs.map((x) => x.toFixed(2)).join(', ');
console.log(
  `medians: base ${median(runs.base).toFixed(2)} s, new ${median(runs.new).toFixed(2)} s, ` +
    `control ${median(runs.control).toFixed(2)} s; new/base ${median(ratios.new).toFixed(3)} ` +
    `(${f(ratios.new)}), control/base ${median(ratios.control).toFixed(3)} ` +
    `(${f(ratios.control)}); load now ${loadavg()[0].toFixed(1)}`,
);
