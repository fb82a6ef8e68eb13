#!/usr/bin/env node
// Reads `perf script` output (perf record -g of a node --perf-basic-prof process, e.g. from
// bench/handshake-view.mjs) and prints, as shares of all samples:
//   - inclusive: the samples whose stack holds a frame matching each pattern below;
//   - by JS frame: each sample given to its innermost JavaScript frame (node's C++, OpenSSL,
//     the kernel and V8 builtins it called included), or to "(native) …" when it has none.
//
//   perf script -i perf-coap-edge.data > s.txt && node bench/perf-frames.mjs s.txt [top=40]
import { readFileSync } from 'node:fs';

const samples = readFileSync(process.argv[2], 'utf8')
  .split(/\n\n+/)
  .filter((s) => s.trim());
const top = Number(process.argv[3] ?? 40);
const INCLUSIVE = {
  'createHmac (JS, node C++, OpenSSL)': /createHmac|Hmac::|HMAC/,
  'createCipheriv/createDecipheriv':
    /createCipheriv|createDecipheriv|CipherBase|Cipheriv|Decipheriv/,
  'OpenSSL itself': /sha256_block|aesni|EVP_|ossl_|OPENSSL_|CRYPTO_|HMAC_|evp_/,
  'sendmsg (syscall)': /__libc_sendmsg/,
  'recvmsg (syscall)': /__libc_recvmsg/,
  epoll: /epoll_pwait|epoll_wait/,
  'scheduler (kernel)': /\b__schedule\b/,
  GC: /Scavenge|Heap::CollectGarbage|MarkCompact|Sweeper|IncrementalMarking|ConcurrentMarking|MinorMark/,
  'optimizing compiler': /compiler::|Maglev|Turbofan/,
  malloc: /\b(malloc|_int_malloc|_int_free|malloc_consolidate|cfree|realloc)\b/,
  'any JS frame': /JS:/,
};
const n = samples.length;
const share = (c) => `${((100 * c) / n).toFixed(1)}%`.padStart(6);
console.log(`samples ${n}\n-- inclusive`);
for (const [name, re] of Object.entries(INCLUSIVE)) {
  console.log(share(samples.filter((s) => re.test(s)).length), name);
}
const clean = (l) =>
  l
    .trim()
    .replace(/^[0-9a-f]+\s+/, '')
    .replace(/\s+\(.*\)$/, '')
    .replace(/\+0x[0-9a-f]+$/, '')
    .replace(/file:\/\/\/\S*?\/dist\//, '');
const byFrame = new Map();
for (const s of samples) {
  const frames = s.split('\n').slice(1);
  const js = frames.find((l) => l.includes('JS:'));
  const key = js !== undefined ? clean(js) : `(native) ${clean(frames[0] ?? '')}`;
  byFrame.set(key, (byFrame.get(key) ?? 0) + 1);
}
console.log('-- by innermost JS frame');
for (const [k, c] of [...byFrame].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(share(c), k);
}
