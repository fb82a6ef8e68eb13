import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';

import { DtlsError } from '../../../src/dtls/errors.js';
import { MAX_HANDSHAKE_MESSAGE, type HandshakeFragment } from '../../../src/dtls/handshake.js';
import {
  MAX_BUFFERED_BYTES,
  Reassembler,
  type HandshakeMessage,
  type ReassemblyResult,
} from '../../../src/dtls/reassembly.js';

const SEED = 0xf7a9;

function body(len: number, salt = 0): Buffer {
  return Buffer.from(Array.from({ length: len }, (_, i) => (i * 13 + salt) & 0xff));
}

function frag(
  msgType: number,
  messageSeq: number,
  full: Buffer,
  offset = 0,
  length = full.length - offset,
): HandshakeFragment {
  return {
    msgType,
    length: full.length,
    messageSeq,
    fragmentOffset: offset,
    fragment: full.subarray(offset, offset + length),
  };
}

function messages(r: ReassemblyResult): HandshakeMessage[] {
  assert.equal(r.kind, 'messages');
  return r.kind === 'messages' ? r.messages : [];
}

describe('Reassembler', () => {
  test('whole messages in order come out one by one', () => {
    const r = new Reassembler(1);
    assert.equal(r.expectedSeq, 1);
    const m1 = messages(r.add(frag(16, 1, body(17)), 0));
    assert.equal(m1.length, 1);
    assert.equal(m1[0]!.msgType, 16);
    assert.equal(m1[0]!.messageSeq, 1);
    assert.equal(m1[0]!.epoch, 0);
    assert.ok(m1[0]!.body.equals(body(17)));
    const m2 = messages(r.add(frag(20, 2, body(12, 5)), 1));
    assert.deepEqual(
      m2.map((m) => [m.msgType, m.messageSeq, m.epoch]),
      [[20, 2, 1]],
    );
    assert.equal(r.expectedSeq, 3);
  });

  test('zero-length messages (ServerHelloDone) complete, in order and out of order', () => {
    const r = new Reassembler(0);
    const m = messages(r.add(frag(14, 0, Buffer.alloc(0)), 0));
    assert.equal(m.length, 1);
    assert.equal(m[0]!.body.length, 0);
    // seq 2 (empty) before seq 1
    assert.deepEqual(messages(r.add(frag(14, 2, Buffer.alloc(0)), 0)), []);
    const out = messages(r.add(frag(2, 1, body(38)), 0));
    assert.deepEqual(
      out.map((x) => [x.msgType, x.messageSeq, x.body.length]),
      [
        [2, 1, 38],
        [14, 2, 0],
      ],
    );
    assert.equal(r.expectedSeq, 3);
  });

  test('a later message arriving first is buffered and released in order', () => {
    const r = new Reassembler(2);
    assert.deepEqual(messages(r.add(frag(20, 3, body(12)), 1)), []);
    const out = messages(r.add(frag(16, 2, body(17)), 0));
    assert.deepEqual(
      out.map((m) => [m.msgType, m.messageSeq, m.epoch]),
      [
        [16, 2, 0],
        [20, 3, 1],
      ],
    );
    assert.ok(out[1]!.body.equals(body(12)));
  });

  test('fragments out of order, overlapping and duplicated make one correct message', () => {
    const full = body(100, 3);
    const pieces: [number, number][] = [
      [60, 40],
      [0, 10],
      [0, 10], // duplicate
      [5, 30], // overlaps the first piece
      [30, 35], // overlaps both neighbours
      [99, 1],
      [50, 0], // empty fragment
    ];
    const r = new Reassembler(1);
    let out: HandshakeMessage[] = [];
    for (const [off, len] of pieces) {
      out = messages(r.add(frag(1, 1, full, off, len), 0));
      if (out.length > 0) break;
    }
    assert.equal(out.length, 1);
    assert.ok(out[0]!.body.equals(full));
    assert.equal(r.expectedSeq, 2);
  });

  test('completes only when every byte arrived (a one-byte gap keeps it pending)', () => {
    const full = body(50);
    const r = new Reassembler(0);
    assert.deepEqual(messages(r.add(frag(1, 0, full, 0, 20), 0)), []);
    assert.deepEqual(messages(r.add(frag(1, 0, full, 21, 29), 0)), []);
    const out = messages(r.add(frag(1, 0, full, 20, 1), 0));
    assert.ok(out[0]?.body.equals(full));
  });

  test('epoch of a message is the epoch of the record that completed it', () => {
    const full = body(24);
    const r = new Reassembler(3);
    r.add(frag(20, 3, full, 0, 12), 1);
    const out = messages(r.add(frag(20, 3, full, 12, 12), 1));
    assert.equal(out[0]!.epoch, 1);
  });

  test('message_seq too far ahead is dropped; older seq → old', () => {
    const r = new Reassembler(5);
    // up to 3 ahead is buffered
    assert.deepEqual(messages(r.add(frag(1, 8, body(4)), 0)), []);
    assert.deepEqual(r.add(frag(1, 9, body(4)), 0), { kind: 'dropped' });
    assert.deepEqual(r.add(frag(1, 1000, body(4)), 0), { kind: 'dropped' });
    assert.deepEqual(r.add(frag(1, 4, body(4)), 0), { kind: 'old' });
    assert.deepEqual(r.add(frag(1, 0, body(4)), 0), { kind: 'old' });
    assert.equal(r.expectedSeq, 5);
    // a delivered message's fragments are old afterwards
    messages(r.add(frag(1, 5, body(4)), 0));
    assert.deepEqual(r.add(frag(1, 5, body(4)), 0), { kind: 'old' });
  });

  test('messages longer than MAX_HANDSHAKE_MESSAGE are dropped', () => {
    const r = new Reassembler(0);
    const big = {
      msgType: 1,
      length: MAX_HANDSHAKE_MESSAGE + 1,
      messageSeq: 0,
      fragmentOffset: 0,
      fragment: Buffer.alloc(10),
    };
    assert.deepEqual(r.add(big, 0), { kind: 'dropped' });
    const ok = { ...big, length: MAX_HANDSHAKE_MESSAGE };
    assert.deepEqual(messages(r.add(ok, 0)), []);
  });

  test('inconsistent length or type across fragments → DtlsError DTLS_DECODE_ERROR', () => {
    const full = body(40);
    const r = new Reassembler(0);
    r.add(frag(1, 0, full, 0, 10), 0);
    const badLength: HandshakeFragment = { ...frag(1, 0, full, 10, 10), length: 41 };
    assert.throws(
      () => r.add(badLength, 0),
      (e: unknown) => e instanceof DtlsError && e.code === 'DTLS_DECODE_ERROR',
    );
    const badType: HandshakeFragment = { ...frag(1, 0, full, 10, 10), msgType: 2 };
    assert.throws(
      () => r.add(badType, 0),
      (e: unknown) => e instanceof DtlsError && e.code === 'DTLS_DECODE_ERROR',
    );
    // the pending message is unaffected
    const out = messages(r.add(frag(1, 0, full, 10, 30), 0));
    assert.ok(out[0]?.body.equals(full));
  });

  test(`buffered bytes are capped at MAX_BUFFERED_BYTES (${MAX_BUFFERED_BYTES})`, () => {
    const r = new Reassembler(0);
    const size = MAX_HANDSHAKE_MESSAGE;
    const count = Math.floor(MAX_BUFFERED_BYTES / size);
    assert.ok(count >= 1 && count < 4, 'the cap is reachable within the look-ahead of 4');
    // partial messages of seq 0.. fill the buffer
    for (let s = 0; s < count; s++) {
      const full = body(size, s);
      assert.deepEqual(messages(r.add(frag(1, s, full, 0, 1), 0)), []);
    }
    const rest = MAX_BUFFERED_BYTES - count * size;
    // one more byte than fits is dropped, exactly what fits is accepted
    assert.deepEqual(r.add(frag(1, count, body(rest + 1), 0, 1), 0), { kind: 'dropped' });
    if (rest > 0) assert.deepEqual(messages(r.add(frag(1, count, body(rest), 0, 1), 0)), []);
    // zero-length messages take no buffer space
    const r2 = new Reassembler(0);
    for (let s = 1; s <= count; s++) r2.add(frag(1, s, body(size), 0, 1), 0);
    assert.deepEqual(messages(r2.add(frag(14, count + 1, Buffer.alloc(0)), 0)), []);
  });

  test('zero-length fragments of a message ahead count its length once against the cap', () => {
    const r = new Reassembler(0);
    const size = MAX_HANDSHAKE_MESSAGE;
    const count = Math.floor(MAX_BUFFERED_BYTES / size);
    // many empty pieces of one message ahead (CVE-2014-3507 shape): all taken, nothing held
    for (let off = 0; off <= 100; off++) {
      assert.deepEqual(messages(r.add(frag(1, 1, body(size), off, 0), 0)), []);
    }
    // so the other messages ahead that fit under the cap still get in ...
    for (let s = 2; s <= count; s++) {
      assert.deepEqual(messages(r.add(frag(1, s, body(size, s), 0, 1), 0)), [], `seq ${s}`);
    }
    // ... and the cap is reached exactly there
    const rest = MAX_BUFFERED_BYTES - count * size;
    assert.deepEqual(r.add(frag(1, count + 1, body(rest + 1), 0, 1), 0), { kind: 'dropped' });
  });

  test('completing buffered messages frees their bytes', () => {
    const r = new Reassembler(0);
    const size = MAX_HANDSHAKE_MESSAGE;
    for (let round = 0; round < 10; round++) {
      const full = body(size, round);
      const seq = round;
      assert.deepEqual(messages(r.add(frag(1, seq, full, 0, size - 1), 0)), []);
      const out = messages(r.add(frag(1, seq, full, size - 1, 1), 0));
      assert.ok(out[0]?.body.equals(full), `round ${round}`);
    }
    assert.equal(r.expectedSeq, 10);
  });

  test('property: any fragment cover of a message, in any order, yields it exactly once', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 30 }),
        fc.nat(),
        (len, extra, orderSeed) => {
          const full = body(len, len);
          // a cover: consecutive pieces of length ≤ 37 plus arbitrary extra (overlapping) pieces
          const pieces: [number, number][] = [];
          for (let off = 0; off < len; off += 37) pieces.push([off, Math.min(37, len - off)]);
          for (const [a, b] of extra) {
            const off = a % len;
            pieces.push([off, b % (len - off + 1)]);
          }
          // deterministic shuffle
          let x = orderSeed | 1;
          for (let i = pieces.length - 1; i > 0; i--) {
            x = (x * 1103515245 + 12345) & 0x7fffffff;
            const j = x % (i + 1);
            [pieces[i], pieces[j]] = [pieces[j]!, pieces[i]!];
          }
          const r = new Reassembler(7);
          const got: HandshakeMessage[] = [];
          for (const [off, l] of pieces) {
            const res = r.add(frag(16, 7, full, off, l), 0);
            if (res.kind === 'messages') got.push(...res.messages);
            else assert.equal(res.kind, 'old');
          }
          assert.equal(got.length, 1);
          assert.ok(got[0]!.body.equals(full));
          assert.equal(r.expectedSeq, 8);
        },
      ),
      { numRuns: 300, seed: SEED },
    );
  });

  test('overlapping fragments with different bytes: a later copy overwrites (as documented)', () => {
    const r = new Reassembler(0);
    const a = Buffer.alloc(20, 0xaa);
    const b = Buffer.alloc(20, 0xbb);
    r.add(frag(1, 0, a, 0, 10), 0);
    r.add(frag(1, 0, b, 5, 10), 0); // bytes 5..9 again, different content
    const out = messages(r.add(frag(1, 0, a, 15, 5), 0));
    // bytes 5..9 came last from `b`, 10..14 only from `b`
    assert.equal(out[0]?.body.toString('hex'), 'aa'.repeat(5) + 'bb'.repeat(10) + 'aa'.repeat(5));
  });

  test('the next expected message is accepted even when later messages fill the buffer', () => {
    const r = new Reassembler(0);
    // two partial future messages of the maximum size fill the 8192-byte buffer
    r.add(frag(1, 1, body(MAX_HANDSHAKE_MESSAGE), 0, 1), 0);
    r.add(frag(1, 2, body(MAX_HANDSHAKE_MESSAGE), 0, 1), 0);
    // the expected message, sent in two fragments, can then never be assembled
    const full = body(100);
    assert.equal(r.add(frag(16, 0, full, 0, 50), 0).kind, 'messages');
  });
});
