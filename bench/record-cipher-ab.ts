/**
 * In-process A/B of the record ciphers: this build's `dtls/record-cipher.js` against another
 * build's (`--base`, e.g. main built into `.ab/base`), and that one again as the control. Each
 * operation seals one application record and opens it (what an uplink costs its association:
 * open the request, seal the answer) on long-lived record cipher objects, per suite. Rounds
 * alternate the three in rotating order; CPU is the main thread's
 * `/proc/thread-self/schedstat` (ns). Prints medians and the per-round ratios' median and
 * quartiles as JSON.
 *
 * Run: `node dist/bench/record-cipher-ab.js --base .ab/base/dist/src/dtls/record-cipher.js
 *   [--length 60] [--answer-length n] [--rounds 30] [--ops 4000]`
 * With `--answer-length`, each operation also seals and opens an answer of that length on a
 * second pair of ciphers (an association's other direction), as an uplink and its reply do.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

import { numberFlag, parseFlags, runScript, stringFlag, UsageError } from './lib/args.js';
import * as current from '../src/dtls/record-cipher.js';
import { CipherSuite, DTLS_1_2, RECORD_HEADER_LENGTH } from '../src/dtls/constants.js';

type Module = Pick<typeof current, 'createRecordCipher' | 'splitKeyBlock'>;

const USAGE = `usage: node dist/bench/record-cipher-ab.js --base <record-cipher.js of another build>
  --length <n>   plaintext bytes per record (default 60)
  --answer-length <n>  also an answer of n bytes per operation, on a second pair of ciphers
  --rounds <n>   measured rounds (default 30; 4 more warm up)
  --ops <n>      seal + open operations per variant per round (default 4000)`;

const SUITES = [
  { name: 'ccm8', suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8, etm: false, keyBlock: 40 },
  { name: 'cbc-etm', suite: CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256, etm: true, keyBlock: 96 },
  { name: 'cbc-mte', suite: CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256, etm: false, keyBlock: 96 },
] as const;
const WARMUP_ROUNDS = 4;

const cpuNs = (): number =>
  Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);

function quantile(values: readonly number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(q * (s.length - 1))] ?? NaN;
}

async function main(): Promise<void> {
  const flags = parseFlags(['base', 'length', 'answer-length', 'rounds', 'ops'], []);
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const basePath = stringFlag(flags, 'base', '');
  if (basePath === '') throw new UsageError('--base is required');
  const length = numberFlag(flags, 'length', 60, 0, 16_384);
  const answerLength = numberFlag(flags, 'answer-length', -1, -1, 16_384);
  const rounds = numberFlag(flags, 'rounds', 30, 1, 10_000);
  const ops = numberFlag(flags, 'ops', 4000, 1, 1_000_000);
  const base = (await import(pathToFileURL(resolve(basePath)).href)) as Module;

  const out: Record<string, unknown> = {};
  for (const s of SUITES) {
    const block = randomBytes(s.keyBlock);
    const make = (m: Module) => {
      const keys = m.splitKeyBlock(s.suite, block).server;
      return {
        w: m.createRecordCipher(s.suite, keys, s.etm),
        r: m.createRecordCipher(s.suite, keys, s.etm),
        aw: m.createRecordCipher(s.suite, keys, s.etm),
        ar: m.createRecordCipher(s.suite, keys, s.etm),
      };
    };
    const variants = { base: make(base), new: make(current), control: make(base) };
    const names = ['base', 'new', 'control'] as const;
    const perOp: Record<(typeof names)[number], number[]> = { base: [], new: [], control: [] };
    const plaintext = randomBytes(length);
    const answer = answerLength >= 0 ? randomBytes(answerLength) : undefined;
    let seq = 0;
    for (let round = 0; round < WARMUP_ROUNDS + rounds; round++) {
      for (let k = 0; k < names.length; k++) {
        const name = names[(k + round) % names.length]!;
        const v = variants[name];
        const t0 = cpuNs();
        for (let i = 0; i < ops; i++) {
          seq++;
          const record = v.w.seal(23, 1, seq, plaintext);
          const body = record.subarray(RECORD_HEADER_LENGTH);
          if (v.r.open(23, DTLS_1_2, 1, seq, body) === undefined)
            throw new Error(`${name}: open failed`);
          if (answer === undefined) continue;
          const a = v.aw.seal(23, 1, seq, answer).subarray(RECORD_HEADER_LENGTH);
          if (v.ar.open(23, DTLS_1_2, 1, seq, a) === undefined)
            throw new Error(`${name}: open failed`);
        }
        if (round >= WARMUP_ROUNDS) perOp[name].push((cpuNs() - t0) / ops / 1000);
      }
    }
    const ratio = (name: 'new' | 'control') => {
      const r = perOp[name].map((x, i) => x / perOp.base[i]!);
      return { median: quantile(r, 0.5), p25: quantile(r, 0.25), p75: quantile(r, 0.75) };
    };
    out[s.name] = {
      baseUsPerOp: quantile(perOp.base, 0.5),
      newUsPerOp: quantile(perOp.new, 0.5),
      newOverBase: ratio('new'),
      controlOverBase: ratio('control'),
    };
  }
  process.stdout.write(
    `${JSON.stringify({ bench: 'record-cipher-ab', length, answerLength, rounds, ops, op: 'seal + open one record', out }, null, 2)}\n`,
  );
}

runScript('record-cipher-ab', USAGE, main);
