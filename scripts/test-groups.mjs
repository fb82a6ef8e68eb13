// How scripts/run-tests.mjs groups test files into processes (docs/testing.md, "Suite time").
// Files of the folders in SHARED run several to a process ("groups"), one after another, so
// the modules they import are loaded once per group instead of once per file; the files of
// each folder in SIDE_BY_SIDE share one process too, several at a time (they mostly wait for
// child processes, brokers and Redis); every other file keeps a process of its own. Each
// process runs a generated entry file that imports its test files, each inside a describe
// named by its path with the 120 s limit a file had alone and in the file's own async scope
// (test/helpers/file-scope.ts: a file's `killAll` ends only its own children), and checks at
// the end that every file it was given ran.
import { readFileSync } from 'node:fs';

// Folders (paths under dist/test/) whose files may share a process: they pass alone and in
// their group, and none of them changes process-wide state another file reads (environment,
// process listeners, OpenTelemetry's global providers, the exit code, fake timers). telemetry/
// too: a file that sets up tracing registers OpenTelemetry's global provider, context manager
// and propagator, and puts them back to none when it ends (test/helpers/otel-globals.ts), so
// that the next one registers its own; otlp-protocols sets OTEL_EXPORTER_OTLP_HEADERS only
// around one export. Alone, each cost a process start and its imports (docs/testing.md,
// "The sixth session").
export const SHARED = [
  'unit/',
  'hostile/',
  'integration/',
  'deploy/',
  'fuzz/',
  'suite/',
  'telemetry/',
];

// Folders whose files share a process per folder and run side by side, FILES_AT_ONCE at a
// time, longest first: the same conditions as SHARED, and none of them blocks the event loop
// for long, which would stall the files beside it. Those that do stay in SHARED: fuzz/ (a
// synchronous fast-check run per target), deploy/ (synchronous TypeScript programs in
// test/deploy/kubernetes.ts: side by side, compose's registry stand-in missed a 5 s fetch
// deadline at load 20), suite/ (spawnSync), telemetry/ (the globals of OpenTelemetry, above).
export const SIDE_BY_SIDE = ['e2e/', 'interop/', 'cli/'];

// Files of SHARED that go to the same group, because they share what is costly to make
// again in another process: deploy/helm and deploy/k8s type-check manifests in TypeScript
// programs (test/deploy/kubernetes.ts), and the second program reuses the first one's parsed
// library and kubernetes-models declarations (and the imports of typescript and
// kubernetes-models): the two files in one group took 6.3 s of CPU against 8.1–8.8 s in two
// (docs/testing.md, "The sixth session").
export const TOGETHER = [['deploy/helm.test.js', 'deploy/k8s.test.js']];

/** How many files of a SIDE_BY_SIDE process run at a time. */
export const FILES_AT_ONCE = 4;

/** Milliseconds a file may take, as when each file had a process of its own. */
export const FILE_TIMEOUT_MS = 120_000;

// Wall time of each file (ms) in a census of a whole run at three files at a time (load 2–4),
// keyed by its path under dist/test/ without `.test.js`; only used to balance the groups.
const times = JSON.parse(readFileSync(new URL('test-times.json', import.meta.url), 'utf8'));
const DEFAULT_MS = 1000;

export function weight(rel) {
  return times[rel.replace(/\.test\.js$/, '')] ?? DEFAULT_MS;
}

export function isShared(rel) {
  return SHARED.some((p) => rel.startsWith(p));
}

/** The SIDE_BY_SIDE folder of `rel`, or undefined. */
export function sideBySideFolder(rel) {
  return SIDE_BY_SIDE.find((p) => rel.startsWith(p));
}

/** How many files of `entry` (from `plan`) run at a time: FILES_AT_ONCE for a side-by-side one. */
export function filesAtOnce(entry) {
  const folder = entry.length > 1 ? sideBySideFolder(entry[0]) : undefined;
  return folder !== undefined && entry.every((f) => f.startsWith(folder)) ? FILES_AT_ONCE : 1;
}

/**
 * Splits the chosen files (paths relative to dist/test/) into entries: the shared ones into
 * `groups` groups balanced by weight (the heaviest file, or TOGETHER set, to the lightest
 * group, each group then in path order), those of each SIDE_BY_SIDE folder into one entry (longest first), the others
 * one to an entry; the entries longest first (by recorded time, a side-by-side entry's
 * counted as half the sum of its files' but never under its longest file's).
 */
export function plan(files, groups) {
  const shared = files.filter(isShared);
  // the files of a TOGETHER set (those chosen) go to a group as one
  const units = TOGETHER.map((set) => set.filter((f) => shared.includes(f))).filter(
    (u) => u.length > 1,
  );
  const placed = new Set(units.flat());
  for (const f of shared) if (!placed.has(f)) units.push([f]);
  const unitMs = (u) => u.reduce((t, f) => t + weight(f), 0);
  const n = Math.max(1, Math.min(groups, units.length));
  const bins = Array.from({ length: n }, () => ({ ms: 0, files: [] }));
  for (const u of units.sort((a, b) => unitMs(b) - unitMs(a) || (a[0] < b[0] ? -1 : 1))) {
    const lightest = bins.reduce((m, b) => (b.ms < m.ms ? b : m));
    lightest.ms += unitMs(u);
    lightest.files.push(...u);
  }
  const entries = bins
    .filter((b) => b.files.length > 0)
    .map((b) => ({ ms: b.ms, files: b.files.sort() }));
  const sideBySide = new Map();
  for (const f of files) {
    const folder = isShared(f) ? undefined : sideBySideFolder(f);
    if (folder !== undefined) sideBySide.set(folder, [...(sideBySide.get(folder) ?? []), f]);
    else if (!isShared(f)) entries.push({ ms: weight(f), files: [f] });
  }
  for (const folderFiles of sideBySide.values()) {
    const longestFirst = folderFiles.sort((a, b) => weight(b) - weight(a) || (a < b ? -1 : 1));
    const sum = longestFirst.reduce((t, f) => t + weight(f), 0);
    // the files slow each other down (two cores): counted as half their sum at least
    entries.push({ ms: Math.max(weight(longestFirst[0]), sum / 2), files: longestFirst });
  }
  // longest first: the processes start in this order, so the long ones do not make the tail
  entries.sort((a, b) => b.ms - a.ms);
  return entries.map((e) => e.files);
}

/** Throws unless every chosen file is in exactly one entry and the entries hold nothing else. */
export function checkPlan(files, entries) {
  const seen = new Map();
  for (const e of entries) for (const f of e) seen.set(f, (seen.get(f) ?? 0) + 1);
  const missing = files.filter((f) => !seen.has(f));
  const twice = [...seen].filter(([, c]) => c > 1).map(([f]) => f);
  const extra = [...seen.keys()].filter((f) => !files.includes(f));
  if (missing.length + twice.length + extra.length > 0)
    throw new Error(
      `test grouping lost files: missing ${JSON.stringify(missing)}, ` +
        `twice ${JSON.stringify(twice)}, not chosen ${JSON.stringify(extra)}`,
    );
}

/** test/helpers/file-scope.ts, compiled: the async scope that tells a shared process's files apart. */
export const FILE_SCOPE_URL = new URL('../dist/test/helpers/file-scope.js', import.meta.url).href;

/**
 * The entry file for `files` (paths relative to `rootUrl`, the file: URL of dist/test/);
 * `timeoutMs` is each file's limit, `atOnce` how many of them run at a time.
 * Each file is imported inside a describe named by its path, so that its top-level hooks stay
 * its own and every report names it, and declared inside `testFileScope.run(file, …)`, so that
 * everything it runs knows its file (test/helpers/file-scope.ts). (The import is called
 * synchronously inside the describe: node:test files the tests a module registers under the
 * describe only then.) With `atOnce` 1 each file is imported only when the previous has
 * finished, so that its top-level code (servers it starts, directories it makes) runs when its
 * turn comes, as alone. With more, the files' describes sit in one describe that runs `atOnce`
 * of them at a time, in the order given (each file's own tests still one after another, as
 * alone); their modules are all imported when that describe starts. A group's last test
 * checks that all of them ran. If the process is still alive `timeoutMs` after its files
 * (something left a handle open), it prints what is open and exits 1, as a file alone would
 * have timed out.
 */
export function entrySource(rootUrl, files, timeoutMs = FILE_TIMEOUT_MS, atOnce = 1) {
  const fileDescribe = (concurrency) =>
    `testFileScope.run(file, () =>
    describe(file, { timeout: ${timeoutMs}${concurrency} }, async () => {
      await import(new URL(file, root).href);
      ran.push(file);
    }),
  )`;
  return `// generated by scripts/run-tests.mjs (scripts/test-groups.mjs); do not edit
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { testFileScope } from ${JSON.stringify(FILE_SCOPE_URL)};
const root = ${JSON.stringify(rootUrl)};
const files = ${JSON.stringify(files, null, 2)};
const ran = [];
${
  atOnce > 1
    ? `await describe('${files.length} test files, ${atOnce} at a time', { concurrency: ${atOnce} }, () => {
  for (const file of files)
    ${fileDescribe(', concurrency: 1')};
});`
    : `for (const file of files)
  await ${fileDescribe('')};`
}
setTimeout(() => {
  console.error('test files left handles open:', process.getActiveResourcesInfo());
  process.exit(1);
}, ${timeoutMs}).unref();
${
  files.length > 1
    ? `test('all ${files.length} test files of this process ran', () => assert.deepEqual([...ran].sort(), [...files].sort()));\n`
    : ''
}`;
}
