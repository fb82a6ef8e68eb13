// Preloaded into every node process of a test run by `node scripts/process-cpu.mjs run …`
// (`--import=<this file>` in NODE_OPTIONS, as scripts/coverage-preload.mjs is, so the processes
// the tests start get it too when they inherit the environment). Appends JSON lines to the file
// named by COAP_PROCESS_CPU_FILE:
// - at exit, the process's own CPU (process.resourceUsage(): user, system, max RSS), its wall
//   time from start, pid, parent pid and argv;
// - for every child it starts (ChildProcess.prototype.spawn: spawn, exec, execFile, fork), the
//   child's pid and the test file whose code started it (test/helpers/file-scope.ts; `''` in a
//   process of its own), so that a child and its own children are counted to that file;
// - before it signals a process (ChildProcess.prototype.kill, process.kill), that process's CPU
//   so far from /proc/<pid>/stat, for processes ended by a signal they do not handle (SIGKILL),
//   which never reach their exit.
// - for every child it reaps (a ChildProcess's 'exit'; spawnSync, execSync, execFileSync), the
//   CPU the child and its own reaped descendants used (the rise of this process's cutime +
//   cstime in /proc/self/stat, as /usr/bin/time counts them), the child's command and the test
//   file that started it: so processes that are not node (Redis, helm, openssl, gcc…) are
//   counted too, by command and by file;
// - in a test process, when each test file's describe starts and ends loading its module and
//   running its tests, with the process's own CPU then (node:test's describe is wrapped for
//   describes named `….test.js`, the runner's entry files' per-file describes), so that the
//   report can give each file its share of its test process's CPU (exact in a group, where one
//   file runs at a time; split evenly between the files running at once in a side-by-side
//   process).
// Nothing is written without COAP_PROCESS_CPU_FILE. (docs/testing.md, "Suite time".)
import { appendFileSync, readFileSync } from 'node:fs';
import { ChildProcess } from 'node:child_process';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { basename } from 'node:path';
import { processRecord } from './preload.mjs';

const out = process.env.COAP_PROCESS_CPU_FILE;
if (out !== undefined && out !== '') {
  const write = (record) => {
    try {
      appendFileSync(out, `${JSON.stringify(record)}\n`);
    } catch {
      // the run's directory is gone (the process outlived the run): nothing to record
    }
  };
  // The test processes' entry files live under os.tmpdir()/coap-edge-tests-*/ (run-tests.mjs);
  // only they declare test files, and only they load file-scope.js for it.
  let currentFile = () => undefined;
  if (/coap-edge-tests-/.test(process.argv[1] ?? '')) {
    const scope = new URL('../dist/test/helpers/file-scope.js', import.meta.url).href;
    const { currentTestFile } = await import(scope);
    currentFile = currentTestFile;
  }
  // cutime + cstime of this process (fields 16 and 17 of /proc/self/stat, ticks of 10 ms): the
  // CPU of the children it has reaped, and of theirs
  const reapedMs = () => {
    try {
      const stat = readFileSync('/proc/self/stat', 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(f[13]) + Number(f[14])) * 10;
    } catch {
      return 0;
    }
  };
  let reapedSoFar = reapedMs();
  const spawn = ChildProcess.prototype.spawn;
  ChildProcess.prototype.spawn = function (options) {
    const r = spawn.call(this, options);
    if (this.pid !== undefined) {
      const file = currentFile();
      const pid = this.pid;
      const command = basename(this.spawnfile ?? '');
      write({ spawned: pid, by: process.pid, file });
      this.once('exit', () => {
        // children reaped in one turn of the loop all count to the first one's 'exit'
        const now = reapedMs();
        write({ reaped: pid, by: process.pid, file, command, ms: now - reapedSoFar });
        reapedSoFar = now;
      });
    }
    return r;
  };
  const require = createRequire(import.meta.url);
  const cp = require('node:child_process');
  for (const name of ['spawnSync', 'execSync', 'execFileSync']) {
    const sync = cp[name];
    cp[name] = function (command, ...args) {
      const before = reapedMs();
      try {
        return sync.call(this, command, ...args);
      } finally {
        const ms = reapedMs() - before;
        // what was reaped in between belongs to this call, not to the next 'exit'
        reapedSoFar += ms;
        const cmd = basename(String(command).split(' ')[0] ?? '');
        write({ reaped: -1, by: process.pid, file: currentFile(), command: cmd, ms });
      }
    };
  }
  if (/coap-edge-tests-/.test(process.argv[1] ?? '')) {
    const nodeTest = require('node:test');
    const describe = nodeTest.describe;
    const mark = (fileMark, file) => {
      const u = process.cpuUsage();
      write({ fileMark, file, pid: process.pid, selfMs: (u.user + u.system) / 1000 });
    };
    nodeTest.describe = function (name, ...rest) {
      const i = rest.findIndex((a) => typeof a === 'function');
      if (typeof name === 'string' && name.endsWith('.test.js') && i >= 0) {
        const fn = rest[i];
        rest[i] = async function (...a) {
          nodeTest.before(() => mark('start', name));
          nodeTest.after(() => mark('end', name));
          mark('load', name);
          try {
            return await fn.apply(this, a);
          } finally {
            mark('loaded', name);
          }
        };
      }
      return describe.call(this, name, ...rest);
    };
  }
  syncBuiltinESMExports();
  // utime + stime (fields 14 and 15, clock ticks: 100 a second on Linux) of a live process
  const ticks = (pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(f[11]) + Number(f[12])) * 10;
    } catch {
      return undefined;
    }
  };
  const beforeSignal = (pid, signal) => {
    if (typeof pid !== 'number' || pid <= 0 || signal === 0) return;
    const ms = ticks(pid);
    if (ms === undefined) return;
    let argv = [];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
    } catch {
      // gone in between: its kind stays unknown
    }
    write({ signalled: pid, by: process.pid, signal, cpuMs: ms, argv });
  };
  const kill = ChildProcess.prototype.kill;
  ChildProcess.prototype.kill = function (signal) {
    beforeSignal(this.pid, signal ?? 'SIGTERM');
    return kill.call(this, signal);
  };
  const processKill = process.kill;
  process.kill = function (pid, signal) {
    beforeSignal(pid, signal ?? 'SIGTERM');
    return processKill.call(this, pid, signal);
  };
  process.on('exit', () => write(processRecord()));
}
