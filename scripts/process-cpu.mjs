#!/usr/bin/env node
// How many node processes a test run starts and the CPU they use, by kind and by test file.
// Usage:
//   node scripts/process-cpu.mjs run [run-tests.mjs arguments …]
//   node scripts/process-cpu.mjs report [process-cpu.jsonl]
// `run` writes process-cpu.jsonl and process-cpu.time (or the file PROCESS_CPU_FILE names and
// its .time beside it) and prints the report; `report` prints it again from the file.
// `run` runs `/usr/bin/time node scripts/run-tests.mjs …` with scripts/process-cpu-preload.mjs
// preloaded into every node process (NODE_OPTIONS), then prints the report: the run's CPU
// (user + sys of the runner and all its children, node or not), the node processes' own CPU
// by kind (`coap-edge serve`, `device`, `bench`, `registry`, other CLI commands, the test
// processes, other scripts) and the CPU of the processes each test file started (children
// and theirs). Processes ended by a signal they do not handle count with their CPU read just
// before it was sent; processes that do not inherit NODE_OPTIONS (a test giving its child an
// environment of its own) and their children are not seen. Then each test file's CPU: its
// share of its test process's own (by the marks its describe leaves) and its reaped children's
// (node or not, their descendants included); the processes that are not node by command; and
// the coverage taken at exit under --coverage. Linux only. (docs/testing.md, "Suite time" and
// "The sixth session".)
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { withPreload } from './preload.mjs';

const [mode = 'report', ...rest] = process.argv.slice(2);
const repo = new URL('..', import.meta.url).pathname;
const preload = new URL('process-cpu-preload.mjs', import.meta.url).href;

if (mode === 'run') {
  const file = resolve(process.env.PROCESS_CPU_FILE ?? 'process-cpu.jsonl');
  const timeFile = file.replace(/(\.jsonl)?$/, '.time');
  rmSync(file, { force: true });
  const env = withPreload(preload, { COAP_PROCESS_CPU_FILE: file });
  const code = await new Promise((done) => {
    const child = spawn(
      '/usr/bin/time',
      ['-f', '%U %S %e', '-o', timeFile, process.execPath, `${repo}scripts/run-tests.mjs`, ...rest],
      { stdio: 'inherit', env },
    );
    child.on('exit', (c) => done(c ?? 1));
  });
  report(file, timeFile);
  process.exit(code);
} else if (mode === 'report') {
  const file = resolve(rest[0] ?? 'process-cpu.jsonl');
  report(file, file.replace(/(\.jsonl)?$/, '.time'));
} else {
  console.error('usage: process-cpu.mjs run [run-tests.mjs arguments …] | report [file]');
  process.exit(2);
}

function kindOf(r) {
  const [script = '', command = ''] = r.argv;
  if (r.execArgv.includes('--test')) return 'node --test (orchestrator)';
  if (script.includes('coap-edge-tests-')) return 'test process';
  if (script.endsWith('/run-tests.mjs')) return 'run-tests.mjs';
  if (script.endsWith('/cli.js') || script.endsWith('/coap-edge')) {
    return `coap-edge ${command.startsWith('-') || command === '' ? '(options)' : command}`;
  }
  if (r.execArgv.includes('-e') || r.execArgv.includes('--eval') || script === '') {
    return 'node -e';
  }
  return basename(script);
}

function report(file, timeFile) {
  if (!existsSync(file)) {
    console.error(`no ${file}`);
    process.exit(1);
  }
  const exits = new Map();
  const spawned = new Map();
  const signalled = new Map();
  const reaped = [];
  const coverageWrites = [];
  const marks = new Map();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line === '') continue;
    const r = JSON.parse(line);
    if (r.spawned !== undefined) spawned.set(r.spawned, r);
    else if (r.signalled !== undefined) signalled.set(r.signalled, r);
    else if (r.reaped !== undefined) reaped.push(r);
    else if (r.fileMark !== undefined) marks.set(r.pid, [...(marks.get(r.pid) ?? []), r]);
    else if (r.coverageWrite !== undefined) coverageWrites.push(r.ms);
    else exits.set(r.pid, r);
  }
  const entryFile = (r) => {
    // a test file alone in its process: the entry's name is its path with '/' as '--'
    const name = basename(r.argv[0] ?? '');
    return name.startsWith('group-') ? '' : name.replaceAll('--', '/').replace(/\.mjs$/, '.js');
  };
  const fileOf = (pid) => {
    for (let p = pid, hops = 0; hops < 20; hops++) {
      const s = spawned.get(p);
      if (s === undefined) return '(not started by a test)';
      if (s.file !== '' && s.file !== undefined) return s.file;
      const parent = exits.get(s.by);
      if (parent !== undefined && kindOf(parent) === 'test process') {
        return entryFile(parent) || '(group, file unknown)';
      }
      p = s.by;
    }
    return '(unknown)';
  };
  const byKind = new Map();
  const byFile = new Map();
  const add = (map, key, ms, wall) => {
    const e = map.get(key) ?? { n: 0, cpuMs: 0, wallMs: 0 };
    e.n++;
    e.cpuMs += ms;
    e.wallMs += wall;
    map.set(key, e);
  };
  let nodeCpu = 0;
  for (const r of exits.values()) {
    const ms = r.userMs + r.systemMs;
    nodeCpu += ms;
    const kind = kindOf(r);
    add(byKind, kind, ms, r.wallMs);
    if (!['test process', 'node --test (orchestrator)', 'run-tests.mjs'].includes(kind)) {
      add(byFile, fileOf(r.pid), ms, r.wallMs);
    }
  }
  let killedCpu = 0;
  let killed = 0;
  const otherSignalled = new Map();
  for (const [pid, s] of signalled) {
    if (exits.has(pid) || !spawned.has(pid)) continue;
    // argv of /proc/<pid>/cmdline: the executable first, then node's flags, the script, …
    const [exe = '', ...args] = s.argv ?? [];
    if (!/(^|\/)node$/.test(exe)) {
      add(otherSignalled, basename(exe) || '(gone)', s.cpuMs, 0);
      continue;
    }
    killed++;
    killedCpu += s.cpuMs;
    const script = args.findIndex((a) => /\.[cm]?js$|\/coap-edge$/.test(a));
    const kind = kindOf({ argv: script < 0 ? [] : args.slice(script), execArgv: [] });
    add(byKind, `${kind} (ended by a signal)`, s.cpuMs, 0);
    add(byFile, fileOf(pid), s.cpuMs, 0);
  }
  const unseen = [...spawned.keys()].filter((p) => !exits.has(p) && !signalled.has(p)).length;
  const s = (ms) => (ms / 1000).toFixed(1);
  if (existsSync(timeFile)) {
    const [user, sys, wall] = readFileSync(timeFile, 'utf8').trim().split('\n').pop().split(' ');
    console.log(`# whole run (/usr/bin/time): ${wall} s wall, ${user} s user + ${sys} s sys`);
  }
  console.log(
    `# node processes that reached exit: ${exits.size}, ${s(nodeCpu)} s CPU; ` +
      `ended by a signal before exit: ${killed}, ${s(killedCpu)} s CPU so far; ` +
      `children started but not seen again (not node, or own environment): ${unseen}`,
  );
  const table = (title, map, top) => {
    console.log(`\n| ${title} | processes | CPU (s) | CPU per process (ms) | wall (s) |`);
    console.log('| --- | ---: | ---: | ---: | ---: |');
    const rows = [...map].sort((a, b) => b[1].cpuMs - a[1].cpuMs).slice(0, top);
    for (const [k, e] of rows) {
      const per = Math.round(e.cpuMs / e.n);
      console.log(`| ${k} | ${e.n} | ${s(e.cpuMs)} | ${per} | ${s(e.wallMs)} |`);
    }
  };
  if (coverageWrites.length > 0) {
    const ms = coverageWrites.reduce((t, m) => t + m, 0);
    console.log(
      `# coverage taken and written at exit (scripts/coverage-preload.mjs, after the exit ` +
        `record, so not in the figures below): ${coverageWrites.length} processes, ${s(ms)} s CPU`,
    );
  }
  table('kind', byKind, 50);
  table('test file (the node processes it started)', byFile, 40);
  table('not node, ended by a signal (CPU until then)', otherSignalled, 20);

  // Processes that are not node, by command: the CPU of each reaped child (its descendants
  // included) whose command is not node, whoever started it.
  const isNode = (c) => c === 'node' || c === basename(process.execPath) || c === 'coap-edge';
  const byCommand = new Map();
  for (const r of reaped) if (!isNode(r.command)) add(byCommand, r.command || '(?)', r.ms, 0);
  table('not node, reaped (CPU with its descendants)', byCommand, 30);

  // Each test file's CPU: its share of its test process's own CPU (marks: between two marks
  // the CPU is split evenly between the files loading or running then) and every child its
  // code started and reaped (their descendants included).
  const own = new Map();
  const children = new Map();
  const addTo = (map, k, ms) => map.set(k, (map.get(k) ?? 0) + ms);
  for (const [pid, ms] of marks) {
    const proc = exits.get(pid);
    const active = new Set();
    let last = 0;
    for (const m of ms) {
      const d = m.selfMs - last;
      if (active.size === 0) addTo(own, '(test processes: outside any file)', d);
      for (const f of active) addTo(own, f, d / active.size);
      last = m.selfMs;
      if (m.fileMark === 'load' || m.fileMark === 'start') active.add(m.file);
      else active.delete(m.file);
    }
    if (proc !== undefined) {
      addTo(own, '(test processes: outside any file)', proc.userMs + proc.systemMs - last);
    }
  }
  for (const r of reaped) {
    const parent = exits.get(r.by);
    if (parent === undefined || kindOf(parent) !== 'test process') continue;
    addTo(children, r.file || entryFile(parent) || '(group, file unknown)', r.ms);
  }
  // test processes without marks (files alone whose describe was not seen): all to the file
  for (const r of exits.values()) {
    if (kindOf(r) === 'test process' && !marks.has(r.pid) && entryFile(r) !== '') {
      addTo(own, entryFile(r), r.userMs + r.systemMs);
    }
  }
  const files = new Set([...own.keys(), ...children.keys()]);
  const rows = [...files]
    .map((f) => [f, own.get(f) ?? 0, children.get(f) ?? 0])
    .sort((a, b) => b[1] + b[2] - (a[1] + a[2]));
  const total = rows.reduce((t, r) => t + r[1] + r[2], 0);
  console.log(
    `\n# test files: ${s(total)} s of CPU, their test processes' own and their children's`,
  );
  console.log('\n| test file | CPU (s) | in its test process (s) | its children (s) |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const [f, o, c] of rows.slice(0, Number(process.env.PROCESS_CPU_TOP ?? 40))) {
    console.log(`| ${f} | ${s(o + c)} | ${s(o)} | ${s(c)} |`);
  }
  const byFolder = new Map();
  for (const [f, o, c] of rows) {
    const folder = f.startsWith('(') ? f : f.split('/')[0];
    const e = byFolder.get(folder) ?? { n: 0, own: 0, children: 0 };
    e.n++;
    e.own += o;
    e.children += c;
    byFolder.set(folder, e);
  }
  console.log('\n| folder | files | CPU (s) | in test processes (s) | children (s) |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const [k, e] of [...byFolder].sort(
    (a, b) => b[1].own + b[1].children - a[1].own - a[1].children,
  )) {
    console.log(`| ${k} | ${e.n} | ${s(e.own + e.children)} | ${s(e.own)} | ${s(e.children)} |`);
  }
}
