/**
 * A preload (`node --import dist/bench/lib/crypto-count.js …`) that counts the process's
 * node:crypto calls: the functions a DTLS server uses are wrapped on the CommonJS object and
 * `syncBuiltinESMExports` carries the wrappers into every ESM import of node:crypto (named
 * imports included, whenever they were made); `Hash#copy` and `Hash#digest` are counted on
 * the prototype. Counts are by function and, for ciphers and MACs, algorithm (e.g.
 * `createCipheriv aes-128-ccm`). On SIGUSR2 the counts so far are written as JSON to
 * `crypto-count-<pid>.json` in the OS temporary directory (bench/lib/handshake-census.ts reads
 * them before and after a number of handshakes).
 */
import { writeFileSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const crypto = require('node:crypto') as Record<string, unknown> & {
  Hash: { prototype: Record<string, unknown> };
};
const counts: Record<string, number> = {};

function count(key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

/** Functions counted by name and first argument (the algorithm). */
const BY_ALGORITHM = new Set(['createHmac', 'createHash', 'createCipheriv', 'createDecipheriv']);

for (const name of [
  'createHmac',
  'createHash',
  'createCipheriv',
  'createDecipheriv',
  'randomBytes',
  'randomFillSync',
  'randomFill',
  'randomUUID',
  'randomInt',
  'timingSafeEqual',
  'hkdfSync',
  'pbkdf2Sync',
  'createSecretKey',
]) {
  const f = crypto[name];
  if (typeof f !== 'function') continue;
  const original = f as (...a: unknown[]) => unknown;
  crypto[name] = function (this: unknown, ...a: unknown[]): unknown {
    count(BY_ALGORITHM.has(name) ? `${name} ${String(a[0])}` : name);
    return original.apply(this, a);
  };
}
for (const method of ['copy', 'digest']) {
  const original = crypto.Hash.prototype[method] as (...a: unknown[]) => unknown;
  crypto.Hash.prototype[method] = function (this: unknown, ...a: unknown[]): unknown {
    count(`Hash#${method}`);
    return original.apply(this, a);
  };
}
syncBuiltinESMExports();

process.on('SIGUSR2', () =>
  writeFileSync(join(tmpdir(), `crypto-count-${process.pid}.json`), JSON.stringify(counts)),
);
