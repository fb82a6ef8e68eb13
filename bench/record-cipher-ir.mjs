#!/usr/bin/env node
// Instructions per record-cipher operation of any build, for callgrind (bench/history/handshake.md,
// "Association memory and the Buffer pool"): a 60-byte and a 150-byte record (other lengths
// as the 3rd and 4th arguments), each sealed and opened on a CCM_8 cipher pair of its own, `ops`
// times. Run it twice under `valgrind --tool=callgrind` with two op counts and take
// (Ir(M) − Ir(N)) / (M − N): start-up cancels out. Plain Node; prints nothing.
//
//   valgrind --tool=callgrind node bench/record-cipher-ir.mjs <dist/src/dtls/record-cipher.js> <ops> [60] [150]
import { randomBytes } from 'node:crypto';
const [, , path, opsS, l1 = '60', l2 = '150'] = process.argv;
const m = await import(new URL(path, `file://${process.cwd()}/`).href);
const suite = 0xc0a8;
const block = Buffer.alloc(40, 7);
const keys = m.splitKeyBlock(suite, block).server;
const mk = () => [
  m.createRecordCipher(suite, keys, false),
  m.createRecordCipher(suite, keys, false),
];
const A = mk(),
  B = mk();
const p1 = randomBytes(Number(l1)),
  p2 = randomBytes(Number(l2));
let seq = 0;
const ops = Number(opsS);
for (let i = 0; i < ops; i++) {
  for (const [[w, r], p] of [
    [A, p1],
    [B, p2],
  ]) {
    seq++;
    const rec = w.seal(23, 1, seq, p);
    if (r.open(23, 0xfefd, 1, seq, rec.subarray(13)) === undefined) throw new Error('open');
  }
}
