#!/usr/bin/env node
// Long fuzzing run: every target of test/fuzz/targets.ts for up to --runs inputs (default
// 10^7) or --seconds per target, whichever comes first, then docs/fuzzing.md is rewritten
// with what ran (inputs, time, failures, seeds). Needs a build (npm run build).
// Usage: node scripts/fuzz-long.mjs [--runs N] [--seconds S] [--seed N] [--only SUBSTRING]
//          [--out FILE]
// A failure prints fast-check's report (seed, path, shrunk input); it is also in the file.
// Exit status 1 when any target failed.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string', default: '10000000' },
    seconds: { type: 'string', default: '3600' },
    seed: { type: 'string' },
    only: { type: 'string' },
    out: { type: 'string', default: new URL('../docs/fuzzing.md', import.meta.url).pathname },
  },
});
const wanted = Number(opts.runs);
const seconds = Number(opts.seconds);
if (!(wanted > 0) || !(seconds > 0)) throw new Error('--runs and --seconds must be positive');
const baseSeed = opts.seed !== undefined ? Number(opts.seed) : Date.now() & 0x7fffffff;

/** The commit the targets come from (read once: commits made during the run do not count). */
const COMMIT = commit();
const { TARGETS } = await import(new URL('../dist/test/fuzz/targets.js', import.meta.url).href);
const targets = TARGETS.filter((t) => opts.only === undefined || t.name.includes(opts.only));
if (targets.length === 0) throw new Error('no target matched --only');

/** Inputs per fast-check call: progress is printed and the time limit checked between them. */
const CHUNK = 100_000;
const rows = [];
for (const [i, t] of targets.entries()) {
  const started = process.hrtime.bigint();
  const deadline = Date.now() + seconds * 1000;
  let runs = 0;
  let chunk = 0;
  let failure;
  while (runs < wanted && Date.now() < deadline && failure === undefined) {
    const seed = (baseSeed + i * 1_000_003 + chunk * 7919) | 0;
    const r = t.run({
      numRuns: Math.min(CHUNK, wanted - runs),
      seed,
      timeLimitMs: Math.max(1, deadline - Date.now()),
    });
    runs += r.runs;
    chunk++;
    if (r.failed) failure = r.report;
    if (chunk % 10 === 0) console.error(`${t.name}: ${runs} inputs`);
  }
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  rows.push({ t, runs, secs, failure, seed: (baseSeed + i * 1_000_003) | 0 });
  console.error(
    `${t.name}: ${runs} inputs in ${secs.toFixed(0)} s, ${failure === undefined ? 'no failure' : 'FAILED'}`,
  );
  if (failure !== undefined) console.error(failure);
  writeFileSync(opts.out, render(rows, false));
}
writeFileSync(opts.out, render(rows, true));
process.exitCode = rows.some((r) => r.failure !== undefined) ? 1 : 0;

function commit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

function render(done, finished) {
  const total = done.reduce((n, r) => n + r.runs, 0);
  const lines = [
    '# Fuzzing',
    '',
    'Every parser that reads bytes or text from a device is fuzzed with fast-check',
    '(property-based: random inputs plus byte-level mutations of valid encodings). The targets',
    'and their oracles are in `test/fuzz/targets.ts`; each checks that the parser returns or',
    'throws only its typed error carrying its protocol reaction (a DTLS alert, a CoAP Reset or',
    'drop; the EnOS parsers never throw), that error texts never echo input, that what it',
    'returns lies inside the input and accounts for every byte (no reads past the end, no',
    'trailing bytes accepted), and that accepted input re-encodes to the same bytes where an',
    'encoder exists.',
    '',
    '- In the suite (`npm test`): `test/fuzz/{dtls,coap,enos}.test.ts` run each target for',
    '  `FUZZ_SECONDS` (default 2) or `FUZZ_MAX_RUNS` inputs, with a new seed per run;',
    '  `FUZZ_SEED=<seed>` replays a failure (the report names the seed and the shrunk input).',
    '- Long runs: `npm run build && node scripts/fuzz-long.mjs [--runs 10000000] [--seconds S]`',
    '  runs every target for `--runs` inputs or `--seconds` per target, whichever comes first,',
    '  and rewrites this file with the result below.',
    "- A crash found either way becomes a regression test next to the parser's unit tests.",
    '',
    '## Last long run',
    '',
    `${finished ? 'Finished' : 'In progress'} ${new Date().toISOString().slice(0, 16)}Z on commit \`${COMMIT}\`,`,
    `Node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'}, one process (one core);`,
    `asked for ${wanted.toLocaleString('en')} inputs or ${seconds} s per target; ${total.toLocaleString('en')} inputs in all.`,
    '',
    '| target | layer | inputs run | time (s) | inputs/s | failures | first seed |',
    '| --- | --- | ---: | ---: | ---: | --- | ---: |',
    ...done.map(
      (r) =>
        `| ${r.t.name} | ${r.t.layer} | ${r.runs.toLocaleString('en')} | ${r.secs.toFixed(1)} | ${Math.round(r.runs / r.secs).toLocaleString('en')} | ${r.failure === undefined ? 'none' : '**1** (below)'} | ${r.seed} |`,
    ),
    '',
    '### What each target checks',
    '',
    ...TARGETS.map((t) => `- **${t.name}**: ${t.checks}.`),
    '',
  ];
  for (const r of done.filter((x) => x.failure !== undefined)) {
    lines.push(`### Failure: ${r.t.name}`, '', '```', r.failure, '```', '');
  }
  return lines.join('\n');
}
