// What the preloads of a test run share (scripts/coverage-preload.mjs,
// scripts/cpu-profile-preload.mjs, scripts/process-cpu-preload.mjs) and how their launchers
// (run-tests.mjs, cpu-profile.mjs, process-cpu.mjs) hand them to every node process.

/**
 * `env` with `--import=<preload>` appended to NODE_OPTIONS (children inherit it) and `vars`
 * set: every node process of the run loads the preload first.
 */
export function withPreload(preload, vars, env = process.env) {
  const nodeOptions = env.NODE_OPTIONS;
  const option = `--import="${preload}"`;
  return { ...env, NODE_OPTIONS: nodeOptions ? `${nodeOptions} ${option}` : option, ...vars };
}

/**
 * Runs `fn` once, after every 'exit' listener, so that code those listeners run is seen too
 * (process.exit() and a natural end both emit 'exit' through process.emit). A process ended by
 * a signal it does not handle never gets there.
 */
export function afterExitListeners(fn) {
  let done = false;
  const emit = process.emit;
  process.emit = function (event, ...args) {
    const r = emit.call(this, event, ...args);
    if (event === 'exit' && !done) {
      done = true;
      fn();
    }
    return r;
  };
}

/** This process: pid, parent, argv, node flags, its own CPU so far and wall time from start. */
export function processRecord() {
  const u = process.resourceUsage();
  return {
    pid: process.pid,
    ppid: process.ppid,
    argv: process.argv.slice(1),
    execArgv: process.execArgv,
    userMs: u.userCPUTime / 1000,
    systemMs: u.systemCPUTime / 1000,
    maxRssKiB: u.maxRSS,
    wallMs: performance.now(),
  };
}
