#!/usr/bin/env node
// The CPU of every process a command starts, node or not, by command name: samples /proc
// every --interval ms (default 100) and keeps, for each descendant of the command (a pid and
// its start time), the last utime + stime seen. Processes that live less than an interval
// are missed: their CPU shows as `(not sampled)`, the run's user + sys (/usr/bin/time) less
// what was seen. Node processes are named by their script (`node cli.js serve`, `node
// <test entry>`), others by their executable. Linux only. Prints JSON. (docs/testing.md,
// "Suite time".)
// The command's output goes to this process's stderr; the JSON to stdout, or to the file --out
// names.
// Usage: node scripts/proc-cpu-sample.mjs [--interval <ms>] [--out <file>] -- <command> [args …]
// e.g.   node scripts/proc-cpu-sample.mjs -- node scripts/run-tests.mjs --coverage
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

const args = process.argv.slice(2);
const sep = args.indexOf('--');
if (sep < 0 || sep === args.length - 1) {
  console.error('usage: proc-cpu-sample.mjs [--interval <ms>] -- <command> [args …]');
  process.exit(2);
}
const intervalAt = args.indexOf('--interval');
const interval = intervalAt >= 0 && intervalAt < sep ? Number(args[intervalAt + 1]) : 100;
const outAt = args.indexOf('--out');
const outFile = outAt >= 0 && outAt < sep ? args[outAt + 1] : undefined;
const command = args.slice(sep + 1);
const tmp = mkdtempSync(join(tmpdir(), 'proc-cpu-'));
const timeFile = join(tmp, 'time');
const TICK_MS = 10; // USER_HZ is 100 on Linux

const child = spawn('/usr/bin/time', ['-f', '%U %S %e', '-o', timeFile, ...command], {
  stdio: ['ignore', process.stderr, 'inherit'],
});
const root = child.pid;
/** key `${pid}:${starttime}` → { name, cpuMs } */
const seen = new Map();
/** pid → key of the process of ours with that pid now */
const ours = new Map([[root, undefined]]);

function stat(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = s.lastIndexOf(')');
    const comm = s.slice(s.indexOf('(') + 1, close);
    const f = s.slice(close + 2).split(' ');
    return {
      comm,
      ppid: Number(f[1]),
      cpuMs: (Number(f[11]) + Number(f[12])) * TICK_MS,
      start: f[19],
    };
  } catch {
    return undefined;
  }
}

function nameOf(pid, comm) {
  let argv = [];
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
  } catch {
    return comm;
  }
  const exe = basename(argv[0] ?? comm);
  if (exe !== 'node') return exe === '' ? comm : exe;
  const script = argv.findIndex((a, i) => i > 0 && /\.[cm]?js$|\/coap-edge$/.test(a));
  if (script < 0)
    return argv.includes('-e') ? 'node -e' : argv.includes('--test') ? 'node --test' : 'node';
  const file = argv[script];
  if (file.includes('coap-edge-tests-')) return 'node (test process)';
  if (file.endsWith('/cli.js') || file.endsWith('/coap-edge')) {
    return `node coap-edge ${argv[script + 1] ?? ''}`.trim();
  }
  return `node ${basename(file)}`;
}

function sample() {
  const all = [];
  for (const e of readdirSync('/proc')) {
    const c = e.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const pid = Number(e);
    const s = stat(pid);
    if (s !== undefined) all.push([pid, s]);
  }
  // descendants: repeat until no new one (a child and its own child may both be new)
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, s] of all) {
      if (ours.has(pid)) continue;
      if (ours.has(s.ppid)) {
        ours.set(pid, undefined);
        grew = true;
      }
    }
  }
  for (const [pid, s] of all) {
    if (!ours.has(pid)) continue;
    const key = `${pid}:${s.start}`;
    let r = seen.get(key);
    if (r === undefined) {
      r = { name: nameOf(pid, s.comm), cpuMs: 0 };
      seen.set(key, r);
    } else if (s.comm !== r.comm) {
      // exec'd into another program since (e.g. /usr/bin/time → node, sh → redis-server)
      r.name = nameOf(pid, s.comm);
    }
    r.comm = s.comm;
    r.cpuMs = s.cpuMs;
  }
  // pids of ours that are gone
  const alive = new Set(all.map(([pid]) => pid));
  for (const pid of ours.keys()) if (!alive.has(pid) && pid !== root) ours.delete(pid);
}

const timer = setInterval(sample, interval);
const code = await new Promise((done) => child.on('exit', (c) => done(c ?? 1)));
clearInterval(timer);
const [user, sys, wall] = readFileSync(timeFile, 'utf8').trim().split('\n').pop().split(' ');
rmSync(tmp, { recursive: true, force: true });
const byName = new Map();
let seenMs = 0;
for (const [key, r] of seen) {
  if (Number(key.split(':')[0]) === root) continue; // /usr/bin/time itself
  const e = byName.get(r.name) ?? { processes: 0, cpuS: 0 };
  e.processes++;
  e.cpuS += r.cpuMs / 1000;
  byName.set(r.name, e);
  seenMs += r.cpuMs;
}
const totalS = Number(user) + Number(sys);
const self = process.resourceUsage();
const json = `${JSON.stringify(
  {
    command: command.join(' '),
    exitCode: code,
    wallS: Number(wall),
    userS: Number(user),
    sysS: Number(sys),
    sampledS: Number((seenMs / 1000).toFixed(1)),
    notSampledS: Number((totalS - seenMs / 1000).toFixed(1)),
    samplerCpuS: Number(((self.userCPUTime + self.systemCPUTime) / 1e6).toFixed(1)),
    byCommand: Object.fromEntries(
      [...byName]
        .sort((a, b) => b[1].cpuS - a[1].cpuS)
        .map(([k, v]) => [k, { processes: v.processes, cpuS: Number(v.cpuS.toFixed(2)) }]),
    ),
  },
  null,
  1,
)}
`;
if (outFile === undefined) process.stdout.write(json);
else writeFileSync(outFile, json);
process.exit(code);
