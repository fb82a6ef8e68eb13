/**
 * A preload (`node --expose-gc --import file://…/dist/bench/lib/gc-signal.js …`) for
 * `instructions.ts --gc-between-segments` and bench/deopt-gc.ts: on each SIGUSR2 the process
 * runs one full, synchronous garbage collection (`gc()`: a mark-compact, as a long-running pod
 * gets now and then) and writes `gc-signal: <n> done` to stderr, so the driver knows it is over.
 * SIGUSR2 is also what bench/lib/http-posts.ts listens to: the two are not used together.
 */
const collect = (globalThis as { gc?: () => void }).gc;
if (collect === undefined) throw new Error('gc-signal: run node with --expose-gc');
let count = 0;
process.on('SIGUSR2', () => {
  collect();
  count++;
  process.stderr.write(`gc-signal: ${count} done\n`);
});
