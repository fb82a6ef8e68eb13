import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';

import { ReplayWindow } from '../../../src/dtls/replay-window.js';
import { MAX_SEQUENCE } from '../../../src/dtls/constants.js';

const SEED = 0x64;

/** The RFC 6347 §4.1.2.6 behaviour with a 64-record window, as a model. */
class ModelWindow {
  private max = -1;
  private readonly seen = new Set<number>();

  check(seq: number): boolean {
    return seq > this.max || (this.max - seq < 64 && !this.seen.has(seq));
  }

  accept(seq: number): void {
    this.seen.add(seq);
    if (seq > this.max) this.max = seq;
  }
}

function acceptAll(w: ReplayWindow, seqs: readonly number[]): void {
  for (const s of seqs) {
    assert.ok(w.check(s), `check(${s})`);
    w.accept(s);
  }
}

describe('ReplayWindow', () => {
  test('a fresh window accepts anything, including 0 and 2^48-1', () => {
    for (const s of [0, 1, 63, 64, 1000, 2 ** 32, 2 ** 40, MAX_SEQUENCE]) {
      const w = new ReplayWindow();
      assert.equal(w.highest, -1);
      assert.ok(w.check(s));
    }
  });

  test('duplicates are rejected', () => {
    const w = new ReplayWindow();
    acceptAll(w, [0, 1, 2, 5, 3]);
    for (const s of [0, 1, 2, 3, 5]) assert.equal(w.check(s), false, `dup ${s}`);
    assert.ok(w.check(4));
    assert.ok(w.check(6));
    assert.equal(w.highest, 5);
  });

  test('window of 64: max-63 allowed if unseen, max-64 and below rejected', () => {
    const w = new ReplayWindow();
    w.accept(100);
    assert.ok(w.check(100 - 63));
    assert.ok(w.check(100 - 1));
    assert.equal(w.check(100 - 64), false);
    assert.equal(w.check(0), false);
    w.accept(100 - 63);
    assert.equal(w.check(100 - 63), false);
    // every position of the window is tracked
    for (let d = 1; d < 64; d++) {
      const x = new ReplayWindow();
      x.accept(1000);
      assert.ok(x.check(1000 - d));
      x.accept(1000 - d);
      assert.equal(x.check(1000 - d), false, `d=${d}`);
      for (let e = 1; e < 64; e++) if (e !== d) assert.ok(x.check(1000 - e), `d=${d} e=${e}`);
    }
  });

  test('accepting a record below the window is a no-op', () => {
    const w = new ReplayWindow();
    w.accept(200);
    w.accept(100);
    assert.equal(w.highest, 200);
    for (let s = 137; s < 200; s++) assert.ok(w.check(s));
  });

  test('big jumps clear the bitmap (+64, +1000, +2^40)', () => {
    for (const jump of [64, 65, 1000, 2 ** 32, 2 ** 40]) {
      const w = new ReplayWindow();
      for (let s = 0; s < 64; s++) w.accept(s);
      const top = 63 + jump;
      w.accept(top);
      assert.equal(w.highest, top);
      assert.equal(w.check(top), false);
      for (let d = 1; d < 64; d++) {
        const s = top - d;
        // old records that were accepted before the jump are either out of the window or still
        // marked; everything else inside the window is new
        const expected = s > 63;
        assert.equal(w.check(s), expected, `jump ${jump} d ${d}`);
      }
    }
  });

  test('shifting by exactly 1, 31, 32, 33, 63, 64 keeps the right bits', () => {
    for (const shift of [1, 31, 32, 33, 63, 64]) {
      const w = new ReplayWindow();
      const model = new ModelWindow();
      // a sparse pattern over the whole window
      const seqs = [0, 1, 2, 7, 31, 32, 33, 40, 62, 63, 64, 70, 95, 96, 97, 126, 127];
      for (const s of seqs) {
        w.accept(s);
        model.accept(s);
      }
      w.accept(127 + shift);
      model.accept(127 + shift);
      for (let s = 0; s <= 127 + shift + 2; s++) {
        assert.equal(w.check(s), model.check(s), `shift ${shift} seq ${s}`);
      }
    }
  });

  test('check does not mutate', () => {
    const w = new ReplayWindow();
    acceptAll(w, [10, 12]);
    for (let i = 0; i < 3; i++) {
      assert.ok(w.check(11));
      assert.ok(w.check(5000));
      assert.equal(w.check(10), false);
    }
    assert.equal(w.highest, 12);
    // 5000 was only checked, so 11 is still inside the window
    assert.ok(w.check(11));
    w.accept(11);
    assert.equal(w.check(11), false);
  });

  test('sequence numbers above 2^32 and near 2^48 behave like small ones', () => {
    for (const base of [2 ** 32 - 10, 2 ** 40, MAX_SEQUENCE - 200]) {
      const w = new ReplayWindow();
      const model = new ModelWindow();
      for (const d of [0, 3, 40, 64, 65, 100, 101, 130]) {
        w.accept(base + d);
        model.accept(base + d);
      }
      for (let s = base; s <= base + 140; s++) assert.equal(w.check(s), model.check(s), `${s}`);
    }
    const w = new ReplayWindow();
    w.accept(MAX_SEQUENCE);
    assert.equal(w.check(MAX_SEQUENCE), false);
    assert.ok(w.check(MAX_SEQUENCE - 63));
    assert.equal(w.check(MAX_SEQUENCE - 64), false);
  });

  test('property: agrees with a Set-based model on random operation sequences', () => {
    const op = fc.oneof(
      // near the current top, the interesting region
      fc.record({ kind: fc.constant('near' as const), d: fc.integer({ min: -80, max: 80 }) }),
      // jumps
      fc.record({ kind: fc.constant('jump' as const), d: fc.integer({ min: 0, max: 2 ** 20 }) }),
      // anywhere
      fc.record({ kind: fc.constant('abs' as const), d: fc.integer({ min: 0, max: 300 }) }),
    );
    fc.assert(
      fc.property(
        fc.array(fc.tuple(op, fc.boolean()), { maxLength: 200 }),
        fc.integer({ min: 0, max: 2 ** 44 }),
        (ops, base) => {
          const w = new ReplayWindow();
          const model = new ModelWindow();
          let top = base;
          for (const [o, doAccept] of ops) {
            const seq =
              o.kind === 'abs'
                ? base + o.d
                : o.kind === 'near'
                  ? Math.max(0, top + o.d)
                  : top + o.d;
            const expected = model.check(seq);
            assert.equal(w.check(seq), expected, `check(${seq})`);
            // as in EpochState.open: accept only what passed the check (and authenticated)
            if (expected && doAccept) {
              w.accept(seq);
              model.accept(seq);
              top = Math.max(top, seq);
            }
          }
          // final sweep over the whole window
          for (let s = Math.max(0, top - 70); s <= top + 2; s++) {
            assert.equal(w.check(s), model.check(s), `sweep ${s}`);
          }
        },
      ),
      { numRuns: 500, seed: SEED },
    );
  });
});
