/**
 * The instructions bench's one-process tracing comparison (bench/instructions.ts
 * `--alternate`): the reference of every segment is its nearest `off`-mode segments, never the
 * segment itself, pooled per mode (`byMode`, the off mode being the identical-segment
 * control); and `--lead-in` runs a sampling variant's operations until one of its traces is
 * exported, bounded.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  alternateSummary,
  leadIn,
  segmentVariants,
  type Faults,
} from '../../../bench/instructions.js';

const noFaults = (): Faults => ({ timeouts: 0, retransmissions: 0, lateStarts: 0, failures: {} });

describe('bench: --alternate', () => {
  it('off,1,off,1: each segment against its nearest off-mode neighbours, pooled per mode', () => {
    const variants = segmentVariants(['off', '1', 'off', '1'], 8);
    assert.deepEqual(
      variants.map((v) => v.label),
      ['off', '1', 'off#2', '1#2', '1', 'off#2', '1#2', 'off'],
    );
    // off-mode segments at 100, the traced ones at 110; segment 8 (off) at 120
    const ir = [100, 110, 100, 110, 110, 100, 110, 120];
    const perOp = { raw: ir, withoutCompile: ir, withoutCompileAndGc: ir };
    const spans = [0, 5, 0, 10, 5, 0, 5, 0];
    const out = alternateSummary(variants, perOp, spans, 100) as Record<
      string,
      Record<string, { ratios: { perRound: number[] }; excessIrPerSpan?: { perRound: number[] } }>
    >;
    const byMode = out.byMode as unknown as typeof out;
    // traced (segments 2, 4, 5, 7): 1 against 1 and 3, 1#2 against 3 and 6, 1 against 3 and 6,
    // 1#2 against 6 and 8 (110 / 110)
    assert.deepEqual(byMode['1']!.raw!.ratios.perRound, [1.1, 1.1, 1.1, 1]);
    // the control (1, 3, 6, 8): off against 3 only; off#2 against 1 and 6; off#2 against 3
    // and 8 (100 / 110); off against 6 only
    assert.deepEqual(byMode.off!.raw!.ratios.perRound, [1, 1, 0.9091, 1.2]);
    // the same per label: 1 is segments 2 and 5
    assert.deepEqual(out['1']!.raw!.ratios.perRound, [1.1, 1.1]);
    // 10 Ir/op over the reference × 100 operations / 5 or 10 spans
    assert.deepEqual(byMode['1']!.raw!.excessIrPerSpan!.perRound, [200, 100, 200, 0]);
  });

  it('--lead-in: a sampling variant runs on past n until a trace is exported, at most 5 n', async () => {
    const ran: number[] = [];
    const op = (i: number): Promise<void> => {
      ran.push(i);
      return Promise.resolve();
    };
    // the sink gets a span once operation 34 has run
    const exported = (): Promise<number> => Promise.resolve(ran.includes(34) ? 1 : 0);
    assert.equal(await leadIn(op, 20, 10, 0, noFaults(), '1', exported), 20);
    assert.deepEqual(
      ran,
      Array.from({ length: 20 }, (_, k) => 20 + k),
    );
    // never exported: bounded at 5 n
    ran.length = 0;
    assert.equal(await leadIn(op, 0, 10, 0, noFaults(), '1', () => Promise.resolve(0)), 50);
    // off and 0 %: n, no span looked for
    for (const mode of ['off', '0']) {
      ran.length = 0;
      const none = (): Promise<number> => Promise.reject(new Error('asked'));
      assert.equal(await leadIn(op, 0, 10, 0, noFaults(), mode, none), 10);
    }
  });
});
