#!/usr/bin/env node
// Instructions per body check of the uplink router, for callgrind (bench/README.md, "The
// uplink against its floor, fifth pass"): is a measurepoint body (the one bench/lib/uplink-load.ts
// sends, 100 ids in turn) a JSON object, by the byte scanner (`scan`: isJsonObject) or by
// `JSON.parse` of its UTF-8 and an object check (`parse`: parseJsonObject), `ops` times.
// Run it twice under `valgrind --tool=callgrind` with two op counts and take
// (Ir(M) − Ir(N)) / (M − N): start-up cancels out. Plain Node; prints nothing.
//
//   valgrind --tool=callgrind node bench/json-object-ir.mjs <dist/src/bridge/json-object.js> scan|parse <ops>
const [, , path, mode, opsS] = process.argv;
const m = await import(new URL(path, `file://${process.cwd()}/`).href);
const bodies = [];
for (let i = 0; i < 100; i++) {
  bodies.push(
    Buffer.from(
      `{"id":"${1000 + i}","version":"1.0","method":"thing.measurepoint.post","params":` +
        `{"measurepoints":{"temperature":21.5,"humidity":40},"time":${1765000000000 + i}}}`,
    ),
  );
}
const check = mode === 'scan' ? m.isJsonObject : (b) => m.parseJsonObject(b) !== undefined;
const ops = Number(opsS);
let yes = 0;
for (let i = 0; i < ops; i++) if (check(bodies[i % 100])) yes++;
if (yes !== ops) throw new Error('a body was not a JSON object');
