import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import fc from 'fast-check';

import { CipherSuite, DTLS_1_0, DTLS_1_2, MAX_SEQUENCE } from '../../../src/dtls/constants.js';
import {
  Ccm8,
  createRecordCipher,
  LIVE_LIMIT,
  splitKeyBlock,
  suiteParams,
  writeRecordHeader,
  type DirectionKeys,
  type RecordCipher,
} from '../../../src/dtls/record-cipher.js';
import { readRecord } from '../../../src/dtls/record.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');
const SEED = 0x0ccb;
const CCM = CipherSuite.TLS_PSK_WITH_AES_128_CCM_8;
const CBC = CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256;

interface Variant {
  readonly name: string;
  readonly suite: number;
  readonly etm: boolean;
}
const VARIANTS: readonly Variant[] = [
  { name: 'CCM_8', suite: CCM, etm: false },
  { name: 'CBC MAC-then-encrypt', suite: CBC, etm: false },
  { name: 'CBC encrypt-then-MAC', suite: CBC, etm: true },
];

function keyBlockFor(suite: number, fill = 0): Buffer {
  const len = suiteParams.get(suite)!.keyBlockLength;
  return Buffer.from(Array.from({ length: len }, (_, i) => (i * 7 + fill) & 0xff));
}

function keysFor(v: Variant, fill = 0): DirectionKeys {
  return splitKeyBlock(v.suite, keyBlockFor(v.suite, fill)).client;
}

function cipherFor(v: Variant, fill = 0): RecordCipher {
  return createRecordCipher(v.suite, keysFor(v, fill), v.etm);
}

/** seq_num(8) | type | version | length (RFC 6347 §4.1.2.1). */
function pseudoHeader(epoch: number, seq: number, type: number, version: number, len: number) {
  const b = Buffer.alloc(13);
  b.writeUInt16BE(epoch, 0);
  b.writeUIntBE(seq, 2, 6);
  b[8] = type;
  b.writeUInt16BE(version, 9);
  b.writeUInt16BE(len, 11);
  return b;
}

function cbcEncrypt(key: Buffer, iv: Buffer, data: Buffer): Buffer {
  const c = createCipheriv('aes-128-cbc', key, iv);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(data), c.final()]);
}

/** A MAC-then-encrypt body with arbitrary (possibly invalid) padding bytes. */
function mteBody(
  keys: DirectionKeys,
  epoch: number,
  seq: number,
  type: number,
  content: Buffer,
  padding: Buffer,
): Buffer {
  const mac = createHmac('sha256', keys.macKey)
    .update(pseudoHeader(epoch, seq, type, DTLS_1_2, content.length))
    .update(content)
    .digest();
  const iv = randomBytes(16);
  return Buffer.concat([iv, cbcEncrypt(keys.encKey, iv, Buffer.concat([content, mac, padding]))]);
}

/** An encrypt-then-MAC body with arbitrary (possibly invalid) padding bytes and a valid MAC. */
function etmBody(
  keys: DirectionKeys,
  epoch: number,
  seq: number,
  type: number,
  content: Buffer,
  padding: Buffer,
): Buffer {
  const iv = randomBytes(16);
  const enc = Buffer.concat([iv, cbcEncrypt(keys.encKey, iv, Buffer.concat([content, padding]))]);
  const mac = createHmac('sha256', keys.macKey)
    .update(pseudoHeader(epoch, seq, type, DTLS_1_2, enc.length))
    .update(enc)
    .digest();
  return Buffer.concat([enc, mac]);
}

function bodyOf(record: Buffer): Buffer {
  const rec = readRecord(record, 0);
  assert.ok(rec !== undefined);
  assert.equal(rec.raw.length, record.length);
  return rec.body;
}

describe('node:crypto AES-CCM (pins the CCM_8 shape: 12-byte nonce, 8-byte tag)', () => {
  const K = hex('404142434445464748494a4b4c4d4e4f');
  const N = hex('101112131415161718191a1b');
  const A = hex('000102030405060708090a0b0c0d0e0f10111213');
  const P = hex('202122232425262728292a2b2c2d2e2f3031323334353637');
  const CT = 'e3b201a9f5b71a7a9b1ceaeccd97e70b6176aad9a4428aa5484392fbc1b09951';

  test('NIST SP 800-38C example C.3 encrypts', () => {
    const c = createCipheriv('aes-128-ccm', K, N, { authTagLength: 8 });
    c.setAAD(A, { plaintextLength: P.length });
    const ct = Buffer.concat([c.update(P), c.final(), c.getAuthTag()]);
    assert.equal(ct.toString('hex'), CT);
  });

  test('NIST SP 800-38C example C.3 decrypts, and a bad tag fails in final()', () => {
    const body = hex(CT);
    const d = createDecipheriv('aes-128-ccm', K, N, { authTagLength: 8 });
    d.setAuthTag(body.subarray(P.length));
    d.setAAD(A, { plaintextLength: P.length });
    const pt = d.update(body.subarray(0, P.length));
    d.final();
    assert.ok(pt.equals(P));
    const bad = Buffer.from(body);
    bad[bad.length - 1]! ^= 1;
    const d2 = createDecipheriv('aes-128-ccm', K, N, { authTagLength: 8 });
    d2.setAuthTag(bad.subarray(P.length));
    d2.setAAD(A, { plaintextLength: P.length });
    d2.update(bad.subarray(0, P.length));
    assert.throws(() => d2.final());
  });
});

describe('Ccm8 (CCM_8 from AES-ECB and a running AES-CBC)', () => {
  const K = hex('404142434445464748494a4b4c4d4e4f');
  const N = hex('101112131415161718191a1b');
  const A = hex('000102030405060708090a0b0c0d0e0f10111213');
  const P = hex('202122232425262728292a2b2c2d2e2f3031323334353637');
  const CT = hex('e3b201a9f5b71a7a9b1ceaeccd97e70b6176aad9a4428aa5484392fbc1b09951');
  const flip = (b: Buffer, at: number): Buffer => {
    const c = Buffer.from(b);
    c[at]! ^= 0x80;
    return c;
  };

  test('NIST SP 800-38C example C.3, three times on one object, both ways', () => {
    const ccm = new Ccm8(K);
    for (let i = 0; i < 3; i++) {
      const out = Buffer.alloc(P.length + 8);
      ccm.seal(N, A, P, out, 0);
      assert.equal(out.toString('hex'), CT.toString('hex'));
      const pt = ccm.open(N, A, CT.subarray(0, P.length), CT.subarray(P.length));
      assert.equal(pt?.toString('hex'), P.toString('hex'));
    }
  });

  test('a flipped bit anywhere (ciphertext, tag, AAD, nonce) → undefined', () => {
    const ccm = new Ccm8(K);
    for (let at = 0; at < CT.length; at++) {
      const bad = flip(CT, at);
      assert.equal(ccm.open(N, A, bad.subarray(0, P.length), bad.subarray(P.length)), undefined);
    }
    const ct = CT.subarray(0, P.length);
    const tag = CT.subarray(P.length);
    for (let at = 0; at < A.length; at++)
      assert.equal(ccm.open(N, flip(A, at), ct, tag), undefined);
    for (let at = 0; at < N.length; at++)
      assert.equal(ccm.open(flip(N, at), A, ct, tag), undefined);
    assert.ok(ccm.open(N, A, ct, tag)?.equals(P));
  });

  test('a tag shorter than 8 bytes → undefined, not a throw', () => {
    const ccm = new Ccm8(K);
    const ct = CT.subarray(0, P.length);
    assert.equal(ccm.open(N, A, ct, CT.subarray(P.length, P.length + 7)), undefined);
    assert.equal(ccm.openIn(N, A, CT.subarray(0, CT.length - 1), 0, P.length), undefined);
  });

  test('openIn: the answer of open read in place; every flipped ciphertext or tag byte refused', () => {
    const ccm = new Ccm8(K);
    const body = Buffer.concat([Buffer.alloc(5, 0xee), CT, Buffer.alloc(3, 0xdd)]);
    assert.ok(ccm.openIn(N, A, body, 5, P.length)?.equals(P));
    for (let at = 5; at < 5 + CT.length; at++) {
      assert.equal(ccm.openIn(N, A, flip(body, at), 5, P.length), undefined, `byte ${at}`);
      // the same body unflipped: a refused record leaves nothing behind in the scratches
      assert.ok(ccm.openIn(N, A, body, 5, P.length)?.equals(P));
    }
    // the bytes around the record are not read
    assert.ok(ccm.openIn(N, A, flip(flip(body, 0), body.length - 1), 5, P.length)?.equals(P));
  });
});

/** Runs `run` with the named `Buffer.prototype` methods counted. */
function countingBufferCalls<T>(
  counted: readonly string[],
  run: () => T,
): { result: T; calls: Record<string, number> } {
  const calls: Record<string, number> = {};
  for (const name of counted) calls[name] = 0;
  const proto = Buffer.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const originals = counted.map((name) => proto[name]!);
  counted.forEach((name, i) => {
    const original = originals[i]!;
    proto[name] = function (this: Buffer, ...a: unknown[]) {
      calls[name]!++;
      return original.apply(this, a);
    };
  });
  try {
    return { result: run(), calls };
  } finally {
    counted.forEach((name, i) => {
      proto[name] = originals[i]!;
    });
  }
}

/**
 * A CCM_8 sealer and opener of one key that have passed two records of `pt`: the first of each
 * goes through a one-shot cipher, the second makes the long-lived objects.
 */
function warmCcm8Pair(): { sealer: RecordCipher; opener: RecordCipher; pt: Buffer } {
  const keys = splitKeyBlock(CCM, keyBlockFor(CCM)).client;
  const sealer = createRecordCipher(CCM, keys, false);
  const opener = createRecordCipher(CCM, keys, false);
  const pt = Buffer.from('a CoAP message of 20');
  for (let seq = 1; seq <= 2; seq++)
    assert.ok(opener.open(23, DTLS_1_2, 1, seq, bodyOf(sealer.seal(23, 1, seq, pt)))?.equals(pt));
  return { sealer, opener, pt };
}

describe('CCM_8 records on the long-lived objects: the bytes by loop, not by Buffer calls', () => {
  // a seal of this record used to make 9 Buffer.copy calls (the nonce into each counter
  // block and B_0, the explicit nonce twice, the AAD, the plaintext, the chaining value),
  // 2 fills and 2 scratch views; a CoAP-sized record now needs none of them
  const counting = <T>(run: () => T) => countingBufferCalls(['copy', 'fill', 'subarray'], run);

  test('seal and open of a 20-byte record after the first: no copy, fill or new view', () => {
    const { sealer, opener, pt } = warmCcm8Pair();
    const body = bodyOf(sealer.seal(23, 1, 3, pt));
    const sealed = counting(() => sealer.seal(23, 1, 4, pt));
    assert.deepEqual(sealed.calls, { copy: 0, fill: 0, subarray: 0 }, 'seal');
    const opened = counting(() => opener.open(23, DTLS_1_2, 1, 3, body));
    assert.ok(opened.result?.equals(pt));
    // ciphertext and tag read where they lie in the record body, the tags compared in two
    // scratches (3 views before: the ciphertext, the tag and the tag's part of the keystream)
    assert.deepEqual(opened.calls, { copy: 0, fill: 0, subarray: 0 }, 'open');
    // and the bytes are still aes-128-ccm's: the record sealed while counting opens
    assert.ok(opener.open(23, DTLS_1_2, 1, 4, bodyOf(sealed.result))?.equals(pt));
  });
});

describe('CCM_8 scratch shared by every cipher: no new view per record, whatever comes next', () => {
  // the counter-block and CBC-MAC scratch is one for all Ccm8 objects; an uplink's request
  // (opened on one association's reader) and its longer answer (sealed on its writer), and
  // other associations' records between them, must not make new views of it each time
  const counting = <T>(run: () => T) => countingBufferCalls(['subarray'], run);

  test('a 20-byte request and a 100-byte answer on two warm pairs, interleaved', () => {
    const a = warmCcm8Pair();
    const b = warmCcm8Pair();
    const answer = Buffer.alloc(100, 0x61);
    for (let seq = 3; seq <= 4; seq++)
      assert.ok(b.opener.open(23, DTLS_1_2, 1, seq, bodyOf(b.sealer.seal(23, 1, seq, answer))));
    const request = bodyOf(a.sealer.seal(23, 1, 3, a.pt));
    for (let seq = 5; seq <= 7; seq++) {
      const opened = counting(() => a.opener.open(23, DTLS_1_2, 1, 3, request));
      assert.ok(opened.result?.equals(a.pt));
      // no view of the record body or the keystream (3 before)
      assert.deepEqual(opened.calls, { subarray: 0 }, `open ${seq}`);
      const sealed = counting(() => b.sealer.seal(23, 1, seq, answer));
      assert.deepEqual(sealed.calls, { subarray: 0 }, `seal ${seq}`);
      assert.ok(b.opener.open(23, DTLS_1_2, 1, seq, bodyOf(sealed.result))?.equals(answer));
    }
  });
});

describe('record ciphers are made without buffers of their own', () => {
  // a CCM_8 cipher used to allocate a 12-byte nonce and a 13-byte MAC/AAD prefix, a CBC one a
  // prefix, a type byte and an empty buffer: two ciphers per handshake; the scratch is shared now
  test('createRecordCipher makes no Buffer.alloc, for every suite', () => {
    const statics = Buffer as unknown as Record<string, (...a: unknown[]) => unknown>;
    const original = statics.alloc!;
    let allocs = 0;
    statics.alloc = function (this: unknown, ...a: unknown[]) {
      allocs++;
      return original.apply(this, a);
    };
    try {
      for (const v of VARIANTS) {
        const keys = keysFor(v);
        allocs = 0;
        const c = createRecordCipher(v.suite, keys, v.etm);
        assert.equal(allocs, 0, v.name);
        // and it works: a record round trip
        const pt = Buffer.from('hello');
        assert.ok(
          cipherFor(v)
            .open(23, DTLS_1_2, 1, 1, bodyOf(c.seal(23, 1, 1, pt)))
            ?.equals(pt),
        );
      }
    } finally {
      statics.alloc = original;
    }
  });
});

describe('record headers by byte, not by Buffer read/write calls', () => {
  // Buffer's readUInt16BE/readUIntBE/writeUInt16BE/writeUIntBE check range and offset on
  // every call; a seal made 8 such writes (header and AAD), an open 4 and readRecord 4 reads
  const fields = ['readUInt16BE', 'readUIntBE', 'writeUInt16BE', 'writeUIntBE'];
  const none = { readUInt16BE: 0, readUIntBE: 0, writeUInt16BE: 0, writeUIntBE: 0 };

  test('seal, readRecord and open of a CCM_8 record make none', () => {
    const { sealer, opener, pt } = warmCcm8Pair();
    const sealed = countingBufferCalls(fields, () => sealer.seal(23, 1, 3, pt));
    assert.deepEqual(sealed.calls, none, 'seal');
    const read = countingBufferCalls(fields, () => readRecord(sealed.result, 0));
    assert.deepEqual(read.calls, none, 'readRecord');
    const rec = read.result;
    assert.ok(rec !== undefined);
    const opened = countingBufferCalls(fields, () =>
      opener.open(rec.type, rec.version, rec.epoch, rec.seq, rec.body),
    );
    assert.deepEqual(opened.calls, none, 'open');
    assert.ok(opened.result?.equals(pt));
  });

  test('header fields at their extremes: the bytes Buffer methods write, read back', () => {
    const cid = Buffer.from([0xc1, 0xd2, 0xe3]);
    for (const [epoch, seq, length] of [
      [0, 0, 0],
      [1, 1, 1],
      [0xffff, 2 ** 32 - 1, 0xff],
      [0x1234, 2 ** 32, 0x100],
      [0xfffe, 2 ** 40 + 0x0102_0304, 0x3fff],
      [0xffff, MAX_SEQUENCE, 0x4000],
    ] as const) {
      for (const withCid of [false, true]) {
        const hl = 13 + (withCid ? cid.length : 0);
        const out = Buffer.alloc(hl + length, 0xaa);
        writeRecordHeader(
          out,
          withCid ? 25 : 23,
          DTLS_1_2,
          epoch,
          seq,
          length,
          withCid ? cid : undefined,
        );
        const expected = Buffer.alloc(hl);
        expected[0] = withCid ? 25 : 23;
        expected.writeUInt16BE(DTLS_1_2, 1);
        expected.writeUInt16BE(epoch, 3);
        expected.writeUIntBE(seq, 5, 6);
        if (withCid) cid.copy(expected, 11);
        expected.writeUInt16BE(length, hl - 2);
        assert.equal(
          out.subarray(0, hl).toString('hex'),
          expected.toString('hex'),
          `${epoch}/${seq}`,
        );
        const rec = readRecord(out, 0, withCid ? cid.length : 0);
        assert.ok(rec !== undefined);
        assert.deepEqual(
          [rec.type, rec.version, rec.epoch, rec.seq, rec.body.length, rec.length],
          [withCid ? 25 : 23, DTLS_1_2, epoch, seq, length, hl + length],
        );
        assert.equal(rec.cid?.toString('hex'), withCid ? cid.toString('hex') : undefined);
      }
    }
  });

  test('readRecord: DTLS 1.0 version read back; a non-DTLS major byte or a cut header is refused', () => {
    const rec = Buffer.alloc(13 + 2);
    writeRecordHeader(rec, 22, DTLS_1_0, 0, 7, 2);
    assert.equal(readRecord(rec, 0)?.version, DTLS_1_0);
    const tls = Buffer.from(rec);
    tls[1] = 0x03;
    assert.equal(readRecord(tls, 0), undefined);
    assert.equal(readRecord(rec.subarray(0, 12), 0), undefined);
    assert.equal(readRecord(rec.subarray(0, 14), 0), undefined, 'body cut');
  });
});

describe('splitKeyBlock', () => {
  test('CCM_8: client key 16, server key 16, client salt 4, server salt 4', () => {
    const block = keyBlockFor(CCM);
    const { client, server } = splitKeyBlock(CCM, block);
    assert.ok(client.encKey.equals(block.subarray(0, 16)));
    assert.ok(server.encKey.equals(block.subarray(16, 32)));
    assert.ok(client.salt.equals(block.subarray(32, 36)));
    assert.ok(server.salt.equals(block.subarray(36, 40)));
    assert.equal(client.macKey.length, 0);
    // copies, not views: wiping the block leaves the keys intact
    block.fill(0);
    assert.notEqual(client.encKey.toString('hex'), '00'.repeat(16));
  });

  test('CBC-SHA256: client MAC 32, server MAC 32, client key 16, server key 16', () => {
    const block = keyBlockFor(CBC);
    const { client, server } = splitKeyBlock(CBC, block);
    assert.ok(client.macKey.equals(block.subarray(0, 32)));
    assert.ok(server.macKey.equals(block.subarray(32, 64)));
    assert.ok(client.encKey.equals(block.subarray(64, 80)));
    assert.ok(server.encKey.equals(block.subarray(80, 96)));
    assert.equal(client.salt.length, 0);
  });

  test('createRecordCipher rejects an unknown suite', () => {
    assert.throws(() => createRecordCipher(0x1301, keysFor(VARIANTS[0]!), false), RangeError);
  });
});

for (const v of VARIANTS) {
  describe(`record cipher: ${v.name}`, () => {
    test('seal/open round trip for plaintext lengths 0..100 and a few larger', () => {
      const sealer = cipherFor(v);
      const opener = cipherFor(v);
      const lengths = [...Array.from({ length: 101 }, (_, i) => i), 127, 128, 129, 1024, 16384];
      for (const len of lengths) {
        const pt = Buffer.alloc(len, len & 0xff);
        for (let i = 0; i < len; i++) pt[i] = (i * 31 + len) & 0xff;
        const seq = len * 1000 + 7;
        const record = sealer.seal(23, 1, seq, pt);
        const rec = readRecord(record, 0);
        assert.ok(rec !== undefined, `length ${len}`);
        assert.equal(rec.type, 23);
        assert.equal(rec.version, DTLS_1_2);
        assert.equal(rec.epoch, 1);
        assert.equal(rec.seq, seq);
        assert.equal(rec.body.length, len + sealer.overhead(len), `overhead for ${len}`);
        if (v.suite === CBC) assert.equal((rec.body.length - (v.etm ? 32 : 0)) % 16, 0);
        else assert.ok(rec.body.subarray(0, 8).equals(record.subarray(3, 11)), 'explicit nonce');
        const out = opener.open(rec.type, rec.version, rec.epoch, rec.seq, rec.body);
        assert.ok(out !== undefined, `length ${len} opens`);
        assert.equal(out.toString('hex'), pt.toString('hex'));
      }
    });

    test('round trip at epoch/seq extremes (seq 0 and 2^48-1, epoch 0xffff)', () => {
      const c = cipherFor(v);
      for (const [epoch, seq] of [
        [0, 0],
        [1, MAX_SEQUENCE],
        [0xffff, 2 ** 32],
        [0xffff, MAX_SEQUENCE],
      ] as const) {
        const pt = Buffer.from('payload');
        const body = bodyOf(c.seal(22, epoch, seq, pt));
        assert.ok(c.open(22, DTLS_1_2, epoch, seq, body)?.equals(pt), `${epoch}/${seq}`);
      }
    });

    test('wrong epoch, seq, type or version in the AAD/MAC → undefined', () => {
      const c = cipherFor(v);
      for (const len of [0, 1, 15, 16, 17, 47, 48, 100]) {
        const pt = Buffer.alloc(len, 0x42);
        const body = bodyOf(c.seal(23, 1, 5, pt));
        assert.ok(c.open(23, DTLS_1_2, 1, 5, body)?.equals(pt));
        assert.equal(c.open(23, DTLS_1_2, 2, 5, body), undefined, 'epoch');
        assert.equal(c.open(23, DTLS_1_2, 0, 5, body), undefined, 'epoch 0');
        assert.equal(c.open(23, DTLS_1_2, 1, 4, body), undefined, 'seq-1');
        assert.equal(c.open(23, DTLS_1_2, 1, 6, body), undefined, 'seq+1');
        assert.equal(c.open(23, DTLS_1_2, 1, 5 + 2 ** 40, body), undefined, 'seq high bits');
        assert.equal(c.open(22, DTLS_1_2, 1, 5, body), undefined, 'type');
        assert.equal(c.open(21, DTLS_1_2, 1, 5, body), undefined, 'type');
        assert.equal(c.open(23, DTLS_1_0, 1, 5, body), undefined, 'version');
      }
    });

    test('other keys do not open the record', () => {
      const body = bodyOf(cipherFor(v).seal(23, 1, 9, Buffer.from('x')));
      assert.equal(cipherFor(v, 1).open(23, DTLS_1_2, 1, 9, body), undefined);
      const other = VARIANTS.filter((w) => w !== v);
      for (const w of other) assert.equal(cipherFor(w).open(23, DTLS_1_2, 1, 9, body), undefined);
    });

    test('every truncation of a body (prefix or suffix) → undefined, never throws', () => {
      const c = cipherFor(v);
      for (const len of [0, 1, 6, 15, 16, 17, 31, 32, 33, 64, 100]) {
        const body = bodyOf(c.seal(23, 1, 77, Buffer.alloc(len, 0x5a)));
        for (let k = 0; k < body.length; k++) {
          assert.equal(c.open(23, DTLS_1_2, 1, 77, body.subarray(0, k)), undefined, `prefix ${k}`);
          assert.equal(c.open(23, DTLS_1_2, 1, 77, body.subarray(body.length - k)), undefined);
        }
      }
    });

    test('a body with one extra byte or one extra block → undefined', () => {
      const c = cipherFor(v);
      const body = bodyOf(c.seal(23, 1, 3, Buffer.from('hello\n')));
      const extra = [Buffer.alloc(1), Buffer.alloc(16)];
      for (const e of extra) {
        assert.equal(c.open(23, DTLS_1_2, 1, 3, Buffer.concat([body, e])), undefined);
        assert.equal(c.open(23, DTLS_1_2, 1, 3, Buffer.concat([e, body])), undefined);
      }
    });

    test('interleaved seals and opens on one cipher object do not disturb each other', () => {
      const c = cipherFor(v);
      const a = c.seal(23, 1, 1, Buffer.from('first'));
      const b = c.seal(21, 1, 2, Buffer.from([1, 0]));
      assert.ok(c.open(21, DTLS_1_2, 1, 2, bodyOf(b))?.equals(Buffer.from([1, 0])));
      const d = c.seal(23, 1, 3, Buffer.from('third'));
      assert.ok(c.open(23, DTLS_1_2, 1, 1, bodyOf(a))?.equals(Buffer.from('first')));
      assert.ok(c.open(23, DTLS_1_2, 1, 3, bodyOf(d))?.equals(Buffer.from('third')));
    });

    test('ciphers of other keys and CID lengths in turn: each record opens with its own only', () => {
      // the ciphers share their nonce and MAC/AAD scratch: nothing of one may leak into another
      const sealers = [0, 1, 2].map((f) => cipherFor(v, f));
      const openers = [0, 1, 2].map((f) => cipherFor(v, f));
      const cids = [undefined, Buffer.from([7]), Buffer.alloc(9, 3)];
      const records: { i: number; seq: number; cid: Buffer | undefined; rec: Buffer }[] = [];
      for (let seq = 1; seq <= 12; seq++) {
        const i = seq % 3;
        const cid = cids[(seq >> 1) % 3];
        const pt = Buffer.alloc(seq * 5, seq);
        records.push({ i, seq, cid, rec: sealers[i]!.seal(23, 1, seq, pt, cid) });
      }
      for (const r of records.reverse()) {
        const body = r.rec.subarray(13 + (r.cid?.length ?? 0));
        const type = r.cid === undefined ? 23 : 25;
        const got = openers[r.i]!.open(type, DTLS_1_2, 1, r.seq, body, r.cid);
        const want = Buffer.alloc(r.seq * 5, r.seq);
        if (r.cid === undefined) assert.ok(got?.equals(want), `record ${r.seq}`);
        else assert.ok(got?.equals(Buffer.concat([want, Buffer.from([23])])), `record ${r.seq}`);
        const other = openers[(r.i + 1) % 3]!;
        assert.equal(other.open(type, DTLS_1_2, 1, r.seq, body, r.cid), undefined);
      }
    });

    test('fast-check: open never throws on arbitrary bodies and headers', () => {
      const c = cipherFor(v);
      fc.assert(
        fc.property(
          fc.uint8Array({ maxLength: 300 }),
          fc.integer({ min: 0, max: 255 }),
          fc.integer({ min: 0, max: 0xffff }),
          fc.integer({ min: 0, max: 0xffff }),
          fc.integer({ min: 0, max: MAX_SEQUENCE }),
          (body, type, version, epoch, seq) => {
            assert.equal(c.open(type, version, epoch, seq, Buffer.from(body)), undefined);
          },
        ),
        { numRuns: 1000, seed: SEED },
      );
    });

    test('fast-check: open never throws on mutated valid records', () => {
      const c = cipherFor(v);
      fc.assert(
        fc.property(
          fc.uint8Array({ maxLength: 64 }),
          fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
            minLength: 1,
            maxLength: 4,
          }),
          (pt, edits) => {
            const body = Buffer.from(bodyOf(c.seal(23, 1, 42, Buffer.from(pt))));
            for (const [pos, x] of edits) body[pos % body.length]! ^= x;
            const out = c.open(23, DTLS_1_2, 1, 42, body);
            // a mutated body never authenticates (unless the edits cancel out)
            if (out !== undefined) assert.ok(out.equals(Buffer.from(pt)));
          },
        ),
        { numRuns: 500, seed: SEED },
      );
    });
  });
}

describe('CBC padding', () => {
  const mte = VARIANTS[1]!;
  const etm = VARIANTS[2]!;

  /** Valid and invalid padding blocks for `content`, so that the total is block aligned. */
  function paddings(contentAndMac: number): { good: Buffer[]; bad: Buffer[] } {
    const p = 16 - (contentAndMac % 16); // minimal padding, including the length byte
    const good = [
      Buffer.alloc(p, p - 1),
      Buffer.alloc(p + 16, p + 15),
      Buffer.alloc(p + 32, p + 31),
    ];
    const bad: Buffer[] = [];
    // one padding byte differs (each position in turn)
    for (let i = 0; i < p - 1; i++) {
      const b = Buffer.alloc(p, p - 1);
      b[i] = (p - 1) ^ 0x01;
      bad.push(b);
    }
    // a longer padding with one wrong byte just before the minimal one
    const long = Buffer.alloc(p + 16, p + 15);
    long[0] = 0;
    bad.push(long);
    // length byte says more padding than there is
    const tooLong = Buffer.alloc(p, p - 1);
    tooLong[p - 1] = 255;
    bad.push(tooLong);
    // length byte one more than the padding that is there
    const offByOne = Buffer.alloc(p, p - 1);
    offByOne[p - 1] = p;
    bad.push(offByOne);
    return { good, bad };
  }

  test('MAC-then-encrypt: valid (also non-minimal) padding opens, bad padding → undefined', () => {
    const keys = keysFor(mte);
    const c = createRecordCipher(CBC, keys, false);
    for (const len of [0, 1, 5, 15, 16, 17, 40]) {
      const content = Buffer.alloc(len, 0x61);
      const { good, bad } = paddings(len + 32);
      for (const pad of good) {
        const body = mteBody(keys, 1, 8, 23, content, pad);
        assert.ok(
          c.open(23, DTLS_1_2, 1, 8, body)?.equals(content),
          `len ${len} pad ${pad.length}`,
        );
      }
      for (const pad of bad) {
        const body = mteBody(keys, 1, 8, 23, content, pad);
        assert.equal(
          c.open(23, DTLS_1_2, 1, 8, body),
          undefined,
          `len ${len} bad ${pad.toString('hex')}`,
        );
      }
    }
  });

  test('MAC-then-encrypt: padding that claims the whole record → undefined', () => {
    const keys = keysFor(mte);
    const c = createRecordCipher(CBC, keys, false);
    // 48 bytes of 0x2f: a "padding" covering the MAC and everything
    const iv = randomBytes(16);
    const body = Buffer.concat([iv, cbcEncrypt(keys.encKey, iv, Buffer.alloc(48, 0x2f))]);
    assert.equal(c.open(23, DTLS_1_2, 1, 8, body), undefined);
    const body2 = Buffer.concat([iv, cbcEncrypt(keys.encKey, iv, Buffer.alloc(48, 0xff))]);
    assert.equal(c.open(23, DTLS_1_2, 1, 8, body2), undefined);
  });

  test('encrypt-then-MAC: valid (also non-minimal) padding opens, bad padding → undefined', () => {
    const keys = keysFor(etm);
    const c = createRecordCipher(CBC, keys, true);
    for (const len of [0, 1, 5, 15, 16, 17, 40]) {
      const content = Buffer.alloc(len, 0x62);
      const { good, bad } = paddings(len);
      for (const pad of good) {
        const body = etmBody(keys, 1, 8, 23, content, pad);
        assert.ok(
          c.open(23, DTLS_1_2, 1, 8, body)?.equals(content),
          `len ${len} pad ${pad.length}`,
        );
      }
      for (const pad of bad) {
        const body = etmBody(keys, 1, 8, 23, content, pad);
        assert.equal(
          c.open(23, DTLS_1_2, 1, 8, body),
          undefined,
          `len ${len} bad ${pad.toString('hex')}`,
        );
      }
    }
  });

  test('encrypt-then-MAC: the maximum padding (255) over a 256-byte body opens', () => {
    const keys = keysFor(etm);
    const c = createRecordCipher(CBC, keys, true);
    const content = Buffer.alloc(0);
    const body = etmBody(keys, 1, 8, 23, content, Buffer.alloc(256, 255));
    assert.ok(c.open(23, DTLS_1_2, 1, 8, body)?.equals(content));
  });
});

test('writeRecordHeader writes type | version | epoch | seq(6) | length', () => {
  const b = Buffer.alloc(13);
  writeRecordHeader(b, 23, DTLS_1_2, 0x0102, 0x030405060708, 0x090a);
  assert.equal(b.toString('hex'), '17' + 'fefd' + '0102' + '030405060708' + '090a');
});

/**
 * The record ciphers keep long-lived node:crypto objects (CCM_8 from AES-ECB and a running
 * AES-CBC MAC; CBC through running encryptor/decryptor). These pin them, record after record
 * on one object, against one-shot ciphers created per record as before.
 */
describe('record ciphers on long-lived node:crypto objects match one-shot ciphers', () => {
  const rand = fc.integer({ min: 0, max: 2 ** 31 - 1 });
  const keys = splitKeyBlock(CCM, randomBytes(40)).client;
  const lengths = [...Array.from({ length: 70 }, (_, i) => i), 255, 256, 1000, 16_384];

  function ccmReference(seq: number, pt: Buffer): Buffer {
    const nonce = Buffer.concat([keys.salt, Buffer.alloc(8)]);
    nonce.writeUInt16BE(1, 4);
    nonce.writeUIntBE(seq, 6, 6);
    const c = createCipheriv('aes-128-ccm', keys.encKey, nonce, { authTagLength: 8 });
    c.setAAD(pseudoHeader(1, seq, 23, DTLS_1_2, pt.length), { plaintextLength: pt.length });
    // on Node 20 final() throws 'tag not set' after update(randomBytes(0)), not after the
    // update of a concatenated (empty) copy
    const ct = Buffer.concat([c.update(Buffer.concat([Buffer.alloc(0), pt])), c.final()]);
    return Buffer.concat([nonce.subarray(4), ct, c.getAuthTag()]);
  }

  test('CCM_8: every sealed body equals aes-128-ccm, and its records open', () => {
    const sealer = createRecordCipher(CCM, keys, false);
    const opener = createRecordCipher(CCM, keys, false);
    let seq = 0;
    for (const len of [...lengths, ...[...lengths].reverse()]) {
      const pt = randomBytes(len);
      seq++;
      const body = bodyOf(sealer.seal(23, 1, seq, pt));
      assert.equal(body.toString('hex'), ccmReference(seq, pt).toString('hex'), `length ${len}`);
      assert.ok(opener.open(23, DTLS_1_2, 1, seq, ccmReference(seq, pt))?.equals(pt));
    }
  });

  test('CCM_8: a flipped tag, ciphertext or nonce bit → undefined; the next record opens', () => {
    const c = createRecordCipher(CCM, keys, false);
    fc.assert(
      fc.property(rand, fc.integer({ min: 0, max: 80 }), (r, len) => {
        const pt = Buffer.alloc(len, r & 0xff);
        const body = ccmReference(r, pt);
        const bad = Buffer.from(body);
        const at = r % bad.length;
        bad[at]! ^= 1 << (r % 8);
        assert.equal(c.open(23, DTLS_1_2, 1, r, bad), undefined, `bit at ${at}`);
        assert.ok(c.open(23, DTLS_1_2, 1, r, body)?.equals(pt));
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  for (const etm of [false, true]) {
    const name = etm ? 'encrypt-then-MAC' : 'MAC-then-encrypt';
    const cbcKeys = splitKeyBlock(CBC, randomBytes(96)).client;
    const oneShot = etm ? etmBody : mteBody;

    test(`CBC ${name}: records decrypt with a decipher from their IV; IVs differ`, () => {
      const c = createRecordCipher(CBC, cbcKeys, etm);
      const ivs = new Set<string>();
      for (const len of lengths) {
        const pt = randomBytes(len);
        const body = bodyOf(c.seal(23, 1, len, pt));
        const enc = etm ? body.subarray(0, body.length - 32) : body;
        ivs.add(enc.subarray(0, 16).toString('hex'));
        const d = createDecipheriv('aes-128-cbc', cbcKeys.encKey, enc.subarray(0, 16));
        d.setAutoPadding(false);
        const plain = Buffer.concat([d.update(enc.subarray(16)), d.final()]);
        assert.ok(plain.subarray(0, len).equals(pt), `length ${len}`);
      }
      assert.equal(ivs.size, lengths.length);
    });

    test(`CBC ${name}: records of one-shot ciphers open, also after a partial block`, () => {
      const c = createRecordCipher(CBC, cbcKeys, etm);
      for (const len of lengths) {
        const pt = randomBytes(len);
        const pad = 16 - ((len + (etm ? 0 : 32)) % 16);
        const body = oneShot(cbcKeys, 1, len, 23, pt, Buffer.alloc(pad, pad - 1));
        // not whole blocks: refused before it reaches the running decryptor
        assert.equal(c.open(23, DTLS_1_2, 1, len, body.subarray(0, body.length - 1)), undefined);
        assert.ok(c.open(23, DTLS_1_2, 1, len, body)?.equals(pt), `length ${len}`);
      }
    });
  }
});

test('record ciphers beyond LIVE_LIMIT drop their long-lived objects and make them again', () => {
  const held = (c: RecordCipher): boolean =>
    Object.values(c).some((x) => x !== undefined && typeof x === 'object' && 'chain' in x) ||
    Object.values(c).some((x) => x?.constructor?.name === 'Cipheriv');
  for (const v of VARIANTS) {
    // CCM_8 seals a cipher's first record with a one-shot cipher and makes its long-lived
    // objects on the second; CBC makes them on the first
    const ccm = v.name.includes('CCM');
    const first = cipherFor(v);
    const reader = cipherFor(v);
    const a = first.seal(23, 1, 1, Buffer.from('before'));
    assert.equal(held(first), !ccm, `${v.name}: objects after one record`);
    assert.ok(reader.open(23, DTLS_1_2, 1, 1, bodyOf(a))?.equals(Buffer.from('before')));
    const a2 = first.seal(23, 1, 2, Buffer.from('before, again'));
    assert.ok(held(first), `${v.name}: objects made on use`);
    assert.ok(reader.open(23, DTLS_1_2, 1, 2, bodyOf(a2))?.equals(Buffer.from('before, again')));
    // LIVE_LIMIT others make theirs (two records each): the two above are pushed out
    for (let i = 0; i < LIVE_LIMIT; i++) {
      const other = cipherFor(v, 1);
      other.seal(23, 1, 2 * i, Buffer.alloc(1));
      other.seal(23, 1, 2 * i + 1, Buffer.alloc(1));
    }
    assert.ok(!held(first), `${v.name}: released`);
    const b = first.seal(23, 1, 3, Buffer.from('after'));
    const b2 = first.seal(23, 1, 4, Buffer.from('after, again'));
    assert.ok(held(first), `${v.name}: made again`);
    assert.ok(reader.open(23, DTLS_1_2, 1, 3, bodyOf(b))?.equals(Buffer.from('after')));
    assert.ok(reader.open(23, DTLS_1_2, 1, 4, bodyOf(b2))?.equals(Buffer.from('after, again')));
    assert.ok(cipherFor(v).open(23, DTLS_1_2, 1, 1, bodyOf(a))?.equals(Buffer.from('before')));
  }
});

test('CCM_8: the first record of a cipher is a one-shot aes-128-ccm record, the later ones the same bytes from the long-lived objects', () => {
  const keys = splitKeyBlock(CCM, keyBlockFor(CCM, 3)).client;
  const once = (seq: number, pt: Buffer): Buffer =>
    createRecordCipher(CCM, keys, false).seal(23, 1, seq, pt);
  const running = createRecordCipher(CCM, keys, false);
  for (let seq = 0; seq < 5; seq++) {
    const pt = randomBytes(20 + seq);
    // a fresh cipher's record (one-shot) equals the running cipher's (one-shot, then ECB/CBC)
    assert.ok(running.seal(23, 1, seq, pt).equals(once(seq, pt)), `record ${seq}`);
  }
});

test('CCM_8: alerts and first records go through one-shot ciphers: a handshake and close_notify make no long-lived object, the next application record does', () => {
  const held = (c: RecordCipher): boolean =>
    Object.values(c).some(
      (x) =>
        x !== undefined &&
        typeof x === 'object' &&
        ('chain' in x || ['Cipheriv', 'Decipheriv'].includes(x?.constructor?.name ?? '')),
    );
  const CLOSE_NOTIFY = Buffer.from([1, 0]);
  for (const v of VARIANTS.filter((x) => x.suite === CCM)) {
    const writer = cipherFor(v);
    const reader = cipherFor(v);
    // Finished (first record), then close_notify (an alert), each way
    const fin = writer.seal(22, 1, 0, Buffer.from('finished-12b'));
    assert.ok(reader.open(22, DTLS_1_2, 1, 0, bodyOf(fin))?.equals(Buffer.from('finished-12b')));
    const alert = writer.seal(21, 1, 1, CLOSE_NOTIFY);
    assert.ok(reader.open(21, DTLS_1_2, 1, 1, bodyOf(alert))?.equals(CLOSE_NOTIFY), v.name);
    assert.equal(held(writer), false, `${v.name}: writer after Finished and an alert`);
    assert.equal(held(reader), false, `${v.name}: reader after Finished and an alert`);
    // a tampered alert is still refused on the one-shot path
    const bad = Buffer.from(bodyOf(writer.seal(21, 1, 2, CLOSE_NOTIFY)));
    bad[bad.length - 1]! ^= 1;
    assert.equal(reader.open(21, DTLS_1_2, 1, 2, bad), undefined, `${v.name}: tampered alert`);
    // the next application record makes them, and records keep opening across the switch
    for (let seq = 3; seq < 6; seq++) {
      const pt = randomBytes(10 + seq);
      const r = writer.seal(23, 1, seq, pt);
      assert.ok(reader.open(23, DTLS_1_2, 1, seq, bodyOf(r))?.equals(pt), `${v.name} ${seq}`);
      assert.equal(held(writer), true, `${v.name}: writer after application data`);
      assert.equal(held(reader), true, `${v.name}: reader after application data`);
    }
    // an alert after them takes the long-lived objects (they are there) and still opens
    const late = writer.seal(21, 1, 6, CLOSE_NOTIFY);
    assert.ok(reader.open(21, DTLS_1_2, 1, 6, bodyOf(late))?.equals(CLOSE_NOTIFY), v.name);
  }
});
