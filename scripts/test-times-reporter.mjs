// A node:test reporter for `node scripts/run-tests.mjs --record-times`: it prints, as one JSON
// object, the wall time (ms, rounded to 100) of every test file of the run, keyed as in
// scripts/test-times.json (the path under dist/test/ without `.test.js`). Each file runs inside
// a describe named by its path (scripts/test-groups.mjs), so a file's time is that describe's.
const FILE = /^([\w./-]+)\.test\.js$/;

export default async function* testTimes(source) {
  const times = {};
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const m = FILE.exec(event.data.name);
    const ms = event.data.details?.duration_ms;
    if (m !== null && typeof ms === 'number')
      times[m[1]] = Math.max(100, Math.round(ms / 100) * 100);
  }
  yield `${JSON.stringify(times)}\n`;
}
