// Preloaded into every node process of a test run under coverage (`scripts/run-tests.mjs
// --coverage` puts `--import=<this file>` in NODE_OPTIONS, so the processes the tests start get
// it too). It does what NODE_V8_COVERAGE does, for the project's own code only: it starts V8's
// precise coverage (call counts and blocks, as c8 needs for branches) before any module of
// dist/src/ loads, and when the process exits writes, to the directory in
// COAP_TEST_COVERAGE_DIR, the coverage of the scripts under dist/src/ in the format
// `c8 report` reads. NODE_V8_COVERAGE writes every script (Node's own, node_modules) and the
// source maps of all of them, 2–3 MB a process that c8 then reads back only to drop; c8 finds
// the source maps of dist/src/ beside the files. (docs/testing.md, "Suite time".)
import { Session } from 'node:inspector';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterExitListeners } from './preload.mjs';

const dir = process.env.COAP_TEST_COVERAGE_DIR;
if (dir !== undefined && dir !== '') {
  const prefix = new URL('../dist/src/', import.meta.url).href;
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
  // after every 'exit' listener, so code they run counts too
  afterExitListeners(() => {
    const before = process.cpuUsage();
    // an in-process session answers synchronously, so this runs before the process ends
    session.post('Profiler.takePreciseCoverage', (err, res) => {
      if (err !== null) return;
      const result = res.result.filter((s) => s.url.startsWith(prefix));
      if (result.length === 0) return;
      const name = `coverage-${process.pid}-${Date.now()}-${process.hrtime.bigint()}.json`;
      writeFileSync(join(dir, name), JSON.stringify({ result }));
    });
    // the census of scripts/process-cpu.mjs: what taking and writing the coverage cost
    const census = process.env.COAP_PROCESS_CPU_FILE;
    if (census !== undefined && census !== '') {
      const u = process.cpuUsage(before);
      const record = { coverageWrite: process.pid, ms: (u.user + u.system) / 1000 };
      try {
        appendFileSync(census, `${JSON.stringify(record)}\n`);
      } catch {
        // the run's directory is gone
      }
    }
  });
}
