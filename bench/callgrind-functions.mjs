#!/usr/bin/env node
/**
 * Ir per operation by JavaScript function, from one segment's callgrind dump of
 * `instructions.js --keep --node-flags=--perf-basic-prof` (the method of bench/history/uplink.md,
 * "The
 * uplink against its floor, fifth pass"): each `0x…` function of the dump is named from V8's
 * `/tmp/perf-<pid>.map` (the newest entry covering the address); every other function's
 * exclusive Ir (builtins, bytecode handlers, C++) is handed to its callers in proportion to
 * the call edges' inclusive Ir until it reaches a JavaScript function ("attributed",
 * context-insensitive: a rough split). Also callgrind's own inclusive Ir of each function
 * (edges into it; recursion counts twice).
 *
 *   node bench/callgrind-functions.mjs <callgrind.out.N> <ops> [--map /tmp/perf-PID.map]
 *     [--top 40] [--grep regex] [--json]
 *
 * `<ops>`: the operations in that segment (instructions.js's `--ops`).
 */
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const positional = [];
const opt = { top: 40, grep: undefined, map: undefined, json: false, callers: undefined };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--top') opt.top = Number(args[++i]);
  else if (a === '--grep') opt.grep = new RegExp(args[++i]);
  else if (a === '--map') opt.map = args[++i];
  else if (a === '--json') opt.json = true;
  else if (a === '--callers') opt.callers = new RegExp(args[++i]);
  else positional.push(a);
}
const [file, opsArg] = positional;
if (file === undefined || opsArg === undefined) {
  process.stderr.write(
    'usage: callgrind-functions.mjs <callgrind.out.N> <ops> [--map f] [--top n] [--grep re] [--json]\n',
  );
  process.exit(2);
}
const ops = Number(opsArg);
const text = readFileSync(file, 'utf8');
const pid = /^pid: (\d+)$/m.exec(text)?.[1];
const mapFile = opt.map ?? `/tmp/perf-${pid}.map`;

// perf map: later entries win (code moved or replaced)
const entries = [];
for (const line of readFileSync(mapFile, 'utf8').split('\n')) {
  const m = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line);
  if (m) entries.push([parseInt(m[1], 16), parseInt(m[2], 16), m[3], entries.length]);
}
const sorted = [...entries].sort((a, b) => a[0] - b[0]);
function nameOf(addr) {
  let lo = 0;
  let hi = sorted.length - 1;
  let best;
  // newest entry covering addr: scan back from the last start <= addr
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid][0] <= addr) {
      best = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  let found;
  for (let i = best ?? -1; i >= 0 && i > (best ?? 0) - 200; i--) {
    const e = sorted[i];
    if (addr >= e[0] && addr < e[0] + e[1] && (found === undefined || e[3] > found[3])) found = e;
  }
  return found ? found[2] : undefined;
}

// parse the dump
const names = new Map(); // id -> name
const fns = new Map(); // name -> { self, callees: Map(name -> ir), callers: Map(name -> ir) }
function node(name) {
  let n = fns.get(name);
  if (n === undefined) {
    n = { self: 0, callees: new Map(), callers: new Map() };
    fns.set(name, n);
  }
  return n;
}
function resolveName(spec) {
  const m = /^\((\d+)\)(?: (.*))?$/.exec(spec);
  if (!m) return spec;
  if (m[2] !== undefined) names.set(m[1], m[2]);
  return names.get(m[1]) ?? spec;
}
function display(raw) {
  if (/^0x[0-9a-f]+$/.test(raw)) return nameOf(parseInt(raw, 16)) ?? 'JIT:?';
  return raw;
}
let current;
let callee;
let pendingCall = false;
for (const line of text.split('\n')) {
  if (line.startsWith('fn=')) {
    current = node(display(resolveName(line.slice(3))));
  } else if (line.startsWith('cfn=')) {
    callee = display(resolveName(line.slice(4)));
  } else if (line.startsWith('calls=')) {
    pendingCall = true;
  } else if (/^[0-9+\-*]/.test(line) && current !== undefined) {
    const parts = line.split(' ');
    const ir = Number(parts[1] ?? 0);
    if (pendingCall) {
      pendingCall = false;
      if (callee !== undefined) {
        const c = node(callee);
        current.callees.set(callee, (current.callees.get(callee) ?? 0) + ir);
        c.callers.set(currentName(current), (c.callers.get(currentName(current)) ?? 0) + ir);
      }
    } else current.self += ir;
  }
}
function currentName(n) {
  if (n.name === undefined) for (const [k, v] of fns) if (v === n) n.name = k;
  return n.name;
}
for (const [k, v] of fns) v.name = k;

const isJs = (name) => name.startsWith('JS:');
// attribute non-JS exclusive Ir to callers, proportionally to edge inclusive Ir
const attributed = new Map();
const mass = new Map();
for (const [k, v] of fns) {
  if (isJs(k)) attributed.set(k, v.self);
  else mass.set(k, v.self);
}
const unattributed = new Map();
for (let pass = 0; pass < 200 && mass.size > 0; pass++) {
  const next = new Map();
  for (const [k, m] of mass) {
    if (m === 0) continue;
    const n = fns.get(k);
    let total = 0;
    for (const [caller, ir] of n.callers) if (caller !== k) total += ir;
    if (total === 0) {
      unattributed.set(k, (unattributed.get(k) ?? 0) + m);
      continue;
    }
    for (const [caller, ir] of n.callers) {
      if (caller === k) continue;
      const share = (m * ir) / total;
      if (isJs(caller)) attributed.set(caller, (attributed.get(caller) ?? 0) + share);
      else next.set(caller, (next.get(caller) ?? 0) + share);
    }
  }
  mass.clear();
  for (const [k, m] of next) mass.set(k, m);
}
for (const [k, m] of mass) unattributed.set(k, (unattributed.get(k) ?? 0) + m);

const inclusive = new Map();
for (const [k, v] of fns) {
  let inc = 0;
  for (const ir of v.callers.values()) inc += ir;
  inclusive.set(k, inc);
}

const short = (name) =>
  name
    .replace(/file:\/\/\/?/, '')
    .replace(/\/work\/[^ ]*?\/(dist|node_modules)\//, '$1/')
    .replace(/^JS:/, '');
const matching = [...attributed].filter(([k]) => opt.grep === undefined || opt.grep.test(k));
const matchingSum = matching.reduce((s, [, v]) => s + v, 0) / ops;
const rows = matching
  .sort((a, b) => b[1] - a[1])
  .slice(0, opt.top)
  .map(([k, v]) => ({
    fn: short(k),
    attributed: Math.round(v / ops),
    self: Math.round(fns.get(k).self / ops),
    inclusive: Math.round((inclusive.get(k) ?? 0) / ops),
  }));
const total =
  Number(/^summary: (\d+)/m.exec(text)?.[1] ?? 0) ||
  [...fns.values()].reduce((s, v) => s + v.self, 0);
if (opt.callers !== undefined) {
  // callers (edge inclusive Ir per op) of each function matching --callers
  for (const [k, v] of fns) {
    if (!opt.callers.test(k)) continue;
    process.stdout.write(`${short(k)}: inclusive ${Math.round((inclusive.get(k) ?? 0) / ops)}\n`);
    for (const [c, ir] of [...v.callers].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
      process.stdout.write(`  ${String(Math.round(ir / ops)).padStart(8)}  ${short(c)}\n`);
    }
  }
} else if (opt.json) {
  process.stdout.write(
    `${JSON.stringify({ file, ops, irPerOp: total / ops, attributedSum: matchingSum, rows }, null, 1)}\n`,
  );
} else {
  process.stdout.write(`${file}: ${Math.round(total / ops)} Ir/op\n`);
  if (opt.grep !== undefined) {
    process.stdout.write(
      `${Math.round(matchingSum)} Ir/op attributed to functions matching ${opt.grep}\n`,
    );
  }
  process.stdout.write('attributed     self inclusive  function\n');
  for (const r of rows) {
    process.stdout.write(
      `${String(r.attributed).padStart(10)} ${String(r.self).padStart(8)} ${String(r.inclusive).padStart(9)}  ${r.fn}\n`,
    );
  }
}
