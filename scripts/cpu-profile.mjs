#!/usr/bin/env node
// Where the node processes of a test run spend their CPU, by package, file and function.
// Usage:
//   node scripts/cpu-profile.mjs run <dir> [run-tests.mjs arguments …]
//   node scripts/cpu-profile.mjs report <dir> [--kind <substring>] [--top <n>]
// `run` empties <dir>, runs `node scripts/run-tests.mjs …` (its output to stderr) with
// scripts/cpu-profile-preload.mjs preloaded into every node process (NODE_OPTIONS; children
// that inherit it are profiled too) and then prints the report; `report` prints it again, for
// the processes whose kind contains the substring if given (`test process`, `coap-edge
// serve`, …). The report is JSON:
// - `processes`: by kind, how many wrote a profile and their CPU (user + sys, resourceUsage);
// - `self`: self time by category: `node:<area>` (Node's own JavaScript, e.g.
//   `node:internal/modules`), `pkg:<package>` (node_modules), `src:<file>`, `test:<file>`,
//   `scripts:<file>`, `(garbage collector)`, `(program)` (V8 and native code outside JS), and
//   `native:<function>` for builtins without a script;
// - `inclusive`: the same categories counting every sample with the category anywhere on its
//   stack (e.g. `node:internal/modules` = loading modules, `node:internal/source_map` = source
//   maps, whatever called them);
// - `functions`: self time by function (`name url:line`);
// - with `--callers <name>`, `callers`: the time of samples with a function of that name on the
//   stack, by the nearest frame of the project's own code (dist/, scripts/) below it.
// Samples whose leaf is a synchronous wait for a child (spawnSync) count as idle: the process
// sleeps there, the sampler does not know it (`blockedInSpawnSyncS`, sampled wall seconds).
// Times are CPU seconds: each process's non-idle samples are scaled to its user + sys time, so
// a process's helper threads (GC, compiler) are spread over its samples in proportion. The
// samples are taken by wall clock, also while the thread waits for a core (or in a blocking
// call other than spawnSync): under load read the figures as shares. Profiling costs: the
// sampler thread wakes every COAP_CPU_PROFILE_INTERVAL_US (1000) in every process, idle or not.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { withPreload } from './preload.mjs';

const [mode = 'report', dirArg, ...rest] = process.argv.slice(2);
const repo = new URL('..', import.meta.url).pathname;
const preload = new URL('cpu-profile-preload.mjs', import.meta.url).href;
if (dirArg === undefined || !['run', 'report'].includes(mode)) {
  console.error('usage: cpu-profile.mjs run <dir> [run-tests.mjs arguments …] | report <dir>');
  process.exit(2);
}
const dir = resolve(dirArg);

if (mode === 'run') {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const env = withPreload(preload, { COAP_CPU_PROFILE_DIR: dir });
  const code = await new Promise((done) => {
    const child = spawn(process.execPath, [`${repo}scripts/run-tests.mjs`, ...rest], {
      stdio: ['ignore', process.stderr, 'inherit'],
      env,
    });
    child.on('exit', (c) => done(c ?? 1));
  });
  console.log(JSON.stringify(report(dir, undefined, 40), null, 1));
  process.exit(code);
} else {
  const kindAt = rest.indexOf('--kind');
  const topAt = rest.indexOf('--top');
  const kind = kindAt >= 0 ? rest[kindAt + 1] : undefined;
  const top = topAt >= 0 ? Number(rest[topAt + 1]) : 40;
  const callersAt = rest.indexOf('--callers');
  const callers = callersAt >= 0 ? rest[callersAt + 1] : undefined;
  console.log(JSON.stringify(report(dir, kind, top, callers), null, 1));
}

function kindOf(m) {
  const [script = '', command = ''] = m.argv;
  if (m.execArgv.includes('--test')) return 'node --test (orchestrator)';
  if (script.includes('coap-edge-tests-')) return 'test process';
  if (script.endsWith('/cli.js') || script.endsWith('/coap-edge')) {
    return `coap-edge ${command.startsWith('-') || command === '' ? '(options)' : command}`;
  }
  if (m.execArgv.includes('-e') || m.execArgv.includes('--eval') || script === '') {
    return 'node -e';
  }
  return basename(script);
}

function category(frame) {
  const { url, functionName } = frame;
  if (url === '') {
    if (functionName.startsWith('(')) return functionName;
    return `native:${functionName || '(anonymous)'}`;
  }
  if (url.startsWith('node:')) {
    const parts = url.split('/');
    // node:internal/modules/esm/loader → node:internal/modules; node:fs → node:fs
    return parts[0] === 'node:internal' ? `${parts[0]}/${parts[1] ?? ''}` : parts[0];
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const after = url.slice(nm + '/node_modules/'.length).split('/');
    const name = after[0]?.startsWith('@') ? `${after[0]}/${after[1]}` : after[0];
    return `pkg:${name}`;
  }
  for (const [marker, label] of [
    ['/dist/src/', 'src:'],
    ['/dist/test/', 'test:'],
    ['/dist/bench/', 'bench:'],
    ['/scripts/', 'scripts:'],
  ]) {
    const i = url.indexOf(marker);
    if (i >= 0) return `${label}${url.slice(i + marker.length)}`;
  }
  if (url.includes('coap-edge-tests-')) return 'entry file';
  return `other:${url}`;
}

/** `name path:line`, the path from dist/, node_modules/ or scripts/ on. */
function frameName(f) {
  const name = f.functionName || '(anonymous)';
  if (f.url === '') return name;
  const path = f.url.replace(/^file:\/\/.*?\/(dist|node_modules|scripts)\//, '$1/');
  return `${name} ${path}:${f.lineNumber + 1}`;
}

function report(dir, kindFilter, top, callersOf) {
  if (!existsSync(dir)) {
    console.error(`no ${dir}`);
    process.exit(1);
  }
  const kinds = new Map();
  const self = new Map();
  const inclusive = new Map();
  const functions = new Map();
  const callers = new Map();
  let blockedUs = 0;
  const add = (map, key, v) => map.set(key, (map.get(key) ?? 0) + v);
  let profiles = 0;
  for (const name of readdirSync(dir)) {
    if (!name.endsWith('.cpuprofile')) continue;
    const metaFile = `${dir}/${name.replace(/\.cpuprofile$/, '.meta.json')}`;
    if (!existsSync(metaFile)) continue;
    const meta = JSON.parse(readFileSync(metaFile, 'utf8'));
    const kind = kindOf(meta);
    if (kindFilter !== undefined && !kind.includes(kindFilter)) continue;
    let profile;
    try {
      profile = JSON.parse(readFileSync(`${dir}/${name}`, 'utf8'));
    } catch {
      continue; // cut short
    }
    profiles++;
    const cpuMs = meta.userMs + meta.systemMs;
    const k = kinds.get(kind) ?? { processes: 0, cpuS: 0 };
    k.processes++;
    k.cpuS += cpuMs / 1000;
    kinds.set(kind, k);
    const byId = new Map();
    const parent = new Map();
    for (const n of profile.nodes) {
      byId.set(n.id, n);
      for (const c of n.children ?? []) parent.set(c, n.id);
    }
    const nodeSelf = new Map();
    const samples = profile.samples ?? [];
    const deltas = profile.timeDeltas ?? [];
    let busyUs = 0;
    for (let i = 0; i < samples.length; i++) {
      const id = samples[i];
      const d = Math.max(0, deltas[i + 1] ?? 0);
      const n = byId.get(id);
      if (n === undefined || n.callFrame.functionName === '(idle)') continue;
      if (n.callFrame.functionName === 'spawnSync' && n.callFrame.url.startsWith('node:')) {
        blockedUs += d;
        continue;
      }
      busyUs += d;
      add(nodeSelf, id, d);
    }
    if (busyUs === 0) continue;
    // each sampled microsecond of this process, in CPU seconds
    const scale = cpuMs / 1000 / busyUs;
    const catCache = new Map();
    const stackCats = (id) => {
      let cats = catCache.get(id);
      if (cats !== undefined) return cats;
      const n = byId.get(id);
      const p = parent.get(id);
      cats = new Set(p === undefined ? [] : stackCats(p));
      if (n !== undefined && n.callFrame.functionName !== '(root)') cats.add(category(n.callFrame));
      catCache.set(id, cats);
      return cats;
    };
    for (const [id, us] of nodeSelf) {
      const n = byId.get(id);
      const s = us * scale;
      const f = n.callFrame;
      add(self, category(f), s);
      for (const c of stackCats(id)) add(inclusive, c, s);
      add(functions, frameName(f), s);
      if (callersOf !== undefined) {
        let hit = false;
        for (let p = id; p !== undefined; p = parent.get(p)) {
          const cf = byId.get(p).callFrame;
          if (!hit && cf.functionName === callersOf) hit = true;
          else if (hit && /\/(dist|scripts)\//.test(cf.url)) {
            add(callers, frameName(cf), s);
            hit = false;
            break;
          }
        }
        if (hit) add(callers, '(no project frame)', s);
      }
    }
  }
  const sorted = (map) =>
    Object.fromEntries(
      [...map]
        .sort((a, b) => b[1] - a[1])
        .slice(0, top)
        .map(([key, v]) => [key, Number(v.toFixed(2))]),
    );
  const total = [...kinds.values()].reduce((s, k) => s + k.cpuS, 0);
  return {
    dir,
    kind: kindFilter ?? 'all',
    profiles,
    cpuS: Number(total.toFixed(1)),
    processes: Object.fromEntries(
      [...kinds]
        .sort((a, b) => b[1].cpuS - a[1].cpuS)
        .map(([key, v]) => [key, { processes: v.processes, cpuS: Number(v.cpuS.toFixed(1)) }]),
    ),
    self: sorted(self),
    inclusive: sorted(inclusive),
    functions: sorted(functions),
    ...(callersOf === undefined ? {} : { callers: sorted(callers) }),
    blockedInSpawnSyncS: Number((blockedUs / 1e6).toFixed(1)),
  };
}
