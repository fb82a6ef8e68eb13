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
// Nothing is written without COAP_PROCESS_CPU_FILE. (docs/testing.md, "Suite time".)
import { appendFileSync, readFileSync } from 'node:fs';
import { ChildProcess } from 'node:child_process';
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
  const spawn = ChildProcess.prototype.spawn;
  ChildProcess.prototype.spawn = function (options) {
    const r = spawn.call(this, options);
    if (this.pid !== undefined) {
      write({ spawned: this.pid, by: process.pid, file: currentFile() });
    }
    return r;
  };
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
