// Preloaded into every node process of a test run by `node scripts/cpu-profile.mjs run …`
// (`--import=<this file>` in NODE_OPTIONS, as scripts/coverage-preload.mjs is: Node 20 refuses
// `--cpu-prof` in NODE_OPTIONS). It starts V8's sampling CPU profiler through an in-process
// inspector session and, after every 'exit' listener, writes to the directory in
// COAP_CPU_PROFILE_DIR `<pid>.cpuprofile` (the format `--cpu-prof` writes and DevTools opens)
// and `<pid>.meta.json` (argv, execArgv, the process's own CPU from process.resourceUsage()).
// A process ended by a signal it does not handle writes nothing. Nothing is done without
// COAP_CPU_PROFILE_DIR. (docs/testing.md, "Suite time".)
import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterExitListeners, processRecord } from './preload.mjs';

const dir = process.env.COAP_CPU_PROFILE_DIR;
if (dir !== undefined && dir !== '') {
  const interval = Number(process.env.COAP_CPU_PROFILE_INTERVAL_US ?? '1000');
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval });
  session.post('Profiler.start');
  afterExitListeners(() => {
    // an in-process session answers synchronously, so this runs before the process ends
    session.post('Profiler.stop', (err, res) => {
      if (err !== null) return;
      const meta = processRecord();
      try {
        writeFileSync(join(dir, `${process.pid}.cpuprofile`), JSON.stringify(res.profile));
        writeFileSync(join(dir, `${process.pid}.meta.json`), JSON.stringify(meta));
      } catch {
        // the run's directory is gone (the process outlived the run): nothing to record
      }
    });
  });
}
