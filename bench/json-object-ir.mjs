#!/usr/bin/env node
// Instructions per body check of the uplink router, for callgrind (bench/history/uplink.md, "The
// uplink against its floor, fifth pass" and "The reply flow, sixth pass"): is a measurepoint
// body (the one bench/lib/uplink-load.ts sends, 100 ids in turn) a JSON object, by the byte
// scanner (`scan`: isJsonObject) or by `JSON.parse` of its UTF-8 and an object check (`parse`:
// parseJsonObject), `ops` times; or its `id` (the reply flow), by the scanner (`id`:
// jsonObjectId) or by JSON.parse (`parse-id`); or the `id` of the platform's reply
// (`{"id":…,"code":200,"data":null}`, what bench/lib/uplink-platform.ts sends) the same two ways
// (`reply-id`, `reply-parse-id`).
// Run it twice under `valgrind --tool=callgrind` with two op counts and take
// (Ir(M) − Ir(N)) / (M − N): start-up cancels out. Plain Node; prints nothing.
//
//   valgrind --tool=callgrind node bench/json-object-ir.mjs <dist/src/bridge/json-object.js> \
//     scan|parse|id|parse-id|reply-id|reply-parse-id <ops>
const [, , path, mode, opsS] = process.argv;
const m = await import(new URL(path, `file://${process.cwd()}/`).href);
const reply = mode === 'reply-id' || mode === 'reply-parse-id';
const bodies = [];
for (let i = 0; i < 100; i++) {
  bodies.push(
    Buffer.from(
      reply
        ? `{"id":"r0a-${1000 + i}","code":200,"data":null}`
        : `{"id":"${1000 + i}","version":"1.0","method":"thing.measurepoint.post","params":` +
            `{"measurepoints":{"temperature":21.5,"humidity":40},"time":${1765000000000 + i}}}`,
    ),
  );
}
const parseId = (b) => {
  const o = m.parseJsonObject(b);
  return o === undefined ? null : o.id;
};
const check =
  mode === 'scan'
    ? m.isJsonObject
    : mode === 'parse'
      ? (b) => m.parseJsonObject(b) !== undefined
      : mode === 'id' || mode === 'reply-id'
        ? (b) => typeof m.jsonObjectId(b) === 'string'
        : (b) => typeof parseId(b) === 'string';
const ops = Number(opsS);
let yes = 0;
for (let i = 0; i < ops; i++) if (check(bodies[i % 100])) yes++;
if (yes !== ops) throw new Error('a body was not a JSON object with a string id');
