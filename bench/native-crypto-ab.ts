/**
 * In-process A/B of record crypto in JavaScript on node:crypto against the bench-only native
 * prototypes (bench/native/edge_native.c; build first: `npm run bench:native`), with an
 * identical control. Per suite of variants, rounds alternate `js`, `native` and `control` (=
 * `js` again, its own objects) in rotating order; CPU is the process's
 * `process.cpuUsage()`. Prints medians and the per-round ratios' median and quartiles
 * as JSON.
 *
 * - `ccm8`: seal one record of `--length` plaintext bytes and open it (what one request costs
 *   an association: open the request, seal the answer), on long-lived objects: `Ccm8` of
 *   src/dtls/record-cipher.ts (an ECB keystream and a running CBC-MAC, XOR in JavaScript;
 *   seal into a record, open with `openIn` as `Ccm8Cipher` does) against one EVP
 *   AES-128-CCM context per key and direction, one native call per record.
 * - `hmac`: one HMAC-SHA256 over a 13-byte prefix and `--length` bytes, `createHmac` (which
 *   fetches SHA-256 by name each time under OpenSSL 3) against one EVP_MAC context whose
 *   digest was fetched once.
 *
 * The addon's output is checked against node:crypto first (`verify`).
 *
 * Run: `node dist/bench/native-crypto-ab.js [--length 16] [--rounds 30] [--ops 20000]`
 */
import { createCipheriv, createHmac, randomBytes } from 'node:crypto';

import { numberFlag, parseFlags, runScript } from './lib/args.js';
import { loadNative, type EdgeNative } from './lib/native.js';
import { Ccm8 } from '../src/dtls/record-cipher.js';

const USAGE = `usage: node dist/bench/native-crypto-ab.js [options]   (npm run bench:native first)
  --length <n>   plaintext bytes per record / MAC input (default 16: the records bench's request)
  --rounds <n>   measured rounds (default 30; 4 more warm up)
  --ops <n>      operations per variant per round (default 20000)`;

const WARMUP_ROUNDS = 4;
const HEADER = 13 + 8;

/** Process CPU (getrusage: exact, where schedstat only moves at the scheduler's ticks). */
const cpuNs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
};

function quantile(values: readonly number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(q * (s.length - 1))] ?? NaN;
}

type Op = () => void;
type Names = 'js' | 'native' | 'control';

function measure(variants: Record<Names, Op>, rounds: number, ops: number): object {
  const names: readonly Names[] = ['js', 'native', 'control'];
  const perOp: Record<Names, number[]> = { js: [], native: [], control: [] };
  for (let round = 0; round < WARMUP_ROUNDS + rounds; round++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(k + round) % names.length]!;
      const op = variants[name];
      const t0 = cpuNs();
      for (let i = 0; i < ops; i++) op();
      if (round >= WARMUP_ROUNDS) perOp[name].push((cpuNs() - t0) / ops / 1000);
    }
  }
  const ratio = (name: 'native' | 'control') => {
    const r = perOp[name].map((x, i) => x / perOp.js[i]!);
    return { median: quantile(r, 0.5), p25: quantile(r, 0.25), p75: quantile(r, 0.75) };
  };
  return {
    jsUsPerOp: quantile(perOp.js, 0.5),
    nativeUsPerOp: quantile(perOp.native, 0.5),
    controlUsPerOp: quantile(perOp.control, 0.5),
    nativeOverJs: ratio('native'),
    controlOverJs: ratio('control'),
  };
}

/**
 * Before measuring: the addon's CCM_8 against `createCipheriv('aes-128-ccm')` for plaintexts
 * of 1–300 bytes (every flipped byte of a record refused, the context still good after), its
 * HMAC against `createHmac`. Throws on any difference.
 */
function verify(native: EdgeNative): void {
  const key = randomBytes(16);
  const w = native.ccmNew(key, true);
  const r = native.ccmNew(key, false);
  for (let len = 1; len <= 300; len++) {
    const nonce = randomBytes(12);
    const aad = randomBytes(13);
    const pt = randomBytes(len);
    const c = createCipheriv('aes-128-ccm', key, nonce, { authTagLength: 8 });
    c.setAAD(aad, { plaintextLength: len });
    const expected = Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
    const out = Buffer.alloc(3 + len + 8);
    native.ccmSeal(w, nonce, aad, pt, out, 3);
    if (!out.subarray(3).equals(expected)) throw new Error(`ccmSeal differs at ${len} bytes`);
    const back = Buffer.alloc(len);
    const open = (): boolean =>
      native.ccmOpen(r, nonce, aad, out.subarray(3, 3 + len), out.subarray(3 + len), back);
    if (!open() || !back.equals(pt)) throw new Error(`ccmOpen differs at ${len} bytes`);
    const flip = 3 + (len % (len + 8));
    out.writeUInt8(out.readUInt8(flip) ^ 1, flip);
    if (open()) throw new Error(`ccmOpen accepted a flipped byte at ${len} bytes`);
    out.writeUInt8(out.readUInt8(flip) ^ 1, flip);
    if (!open()) throw new Error(`ccmOpen refused a good record after a forged one`);
  }
  const ctx = native.hmacNew();
  for (let len = 1; len <= 100; len++) {
    const k = randomBytes(len);
    const a = randomBytes(13);
    const b = randomBytes(len * 2);
    const out = Buffer.alloc(32);
    native.hmacSha256(ctx, k, a, b, out, 0);
    if (!out.equals(createHmac('sha256', k).update(a).update(b).digest()))
      throw new Error(`hmacSha256 differs at ${len}`);
  }
}

function main(): Promise<void> {
  const flags = parseFlags(['length', 'rounds', 'ops'], []);
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return Promise.resolve();
  }
  const length = numberFlag(flags, 'length', 16, 0, 1500);
  const rounds = numberFlag(flags, 'rounds', 30, 1, 10_000);
  const ops = numberFlag(flags, 'ops', 20_000, 1, 1_000_000);
  const native = loadNative();
  verify(native);

  const key = randomBytes(16);
  const nonce = randomBytes(12);
  const aad = randomBytes(13);
  const plain = randomBytes(length);
  const record = Buffer.alloc(HEADER + length + 8);

  const jsCcm = () => {
    const w = new Ccm8(key);
    const r = new Ccm8(key);
    return () => {
      w.seal(nonce, aad, plain, record, HEADER);
      if (r.openIn(nonce, aad, record, HEADER, length) === undefined) throw new Error('js open');
    };
  };
  const nativeCcm = () => {
    const w = native.ccmNew(key, true);
    const r = native.ccmNew(key, false);
    // views made once (`Ccm8.openIn` makes none either)
    const ciphertext = record.subarray(HEADER, HEADER + length);
    const tag = record.subarray(HEADER + length);
    return () => {
      native.ccmSeal(w, nonce, aad, plain, record, HEADER);
      // the plaintext in a new Buffer, as `Ccm8.openIn` returns one
      const pt = Buffer.allocUnsafe(length);
      if (!native.ccmOpen(r, nonce, aad, ciphertext, tag, pt)) throw new Error('open');
    };
  };
  const macKey = randomBytes(32);
  const mac = Buffer.alloc(32);
  const jsHmac = () => () => {
    createHmac('sha256', macKey).update(aad).update(plain).digest().copy(mac);
  };
  const nativeHmac = () => {
    const ctx = native.hmacNew();
    return () => native.hmacSha256(ctx, macKey, aad, plain, mac, 0);
  };

  const out = {
    ccm8: measure({ js: jsCcm(), native: nativeCcm(), control: jsCcm() }, rounds, ops),
    hmac: measure({ js: jsHmac(), native: nativeHmac(), control: jsHmac() }, rounds, ops),
  };
  process.stdout.write(
    `${JSON.stringify(
      {
        bench: 'native-crypto-ab',
        length,
        rounds,
        ops,
        ops_: { ccm8: 'seal + open one record', hmac: 'one HMAC-SHA256 of 13 + length bytes' },
        out,
      },
      null,
      2,
    )}\n`,
  );
  return Promise.resolve();
}

runScript('native-crypto-ab', USAGE, main);
