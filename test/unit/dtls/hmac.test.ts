import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fc from 'fast-check';

import { HMAC_SHA256_LENGTH, HmacSha256Key } from '../../../src/dtls/hmac.js';

const SEED = 0x4231;
const hex = (s: string): Buffer => Buffer.from(s, 'hex');

function mac(key: HmacSha256Key, ...parts: Buffer[]): string {
  const out = Buffer.alloc(HMAC_SHA256_LENGTH);
  key.mac(out, ...(parts as [Buffer, ...Buffer[]]));
  return out.toString('hex');
}

// RFC 4231 §4, HMAC-SHA-256 (test case 5's output is truncated to 128 bits)
const RFC4231: readonly { key: Buffer; data: Buffer; mac: string }[] = [
  {
    key: Buffer.alloc(20, 0x0b),
    data: Buffer.from('Hi There'),
    mac: 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7',
  },
  {
    key: Buffer.from('Jefe'),
    data: Buffer.from('what do ya want for nothing?'),
    mac: '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
  },
  {
    key: Buffer.alloc(20, 0xaa),
    data: Buffer.alloc(50, 0xdd),
    mac: '773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe',
  },
  {
    key: hex('0102030405060708090a0b0c0d0e0f10111213141516171819'),
    data: Buffer.alloc(50, 0xcd),
    mac: '82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b',
  },
  {
    key: Buffer.alloc(20, 0x0c),
    data: Buffer.from('Test With Truncation'),
    mac: 'a3b6167473100ee06e0c796c2955552b',
  },
  {
    // a key longer than the 64-byte block: hashed first
    key: Buffer.alloc(131, 0xaa),
    data: Buffer.from('Test Using Larger Than Block-Size Key - Hash Key First'),
    mac: '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54',
  },
  {
    key: Buffer.alloc(131, 0xaa),
    data: Buffer.from(
      'This is a test using a larger than block-size key and a larger than block-size data. ' +
        'The key needs to be hashed before being used by the HMAC algorithm.',
    ),
    mac: '9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2',
  },
];

describe('HmacSha256Key (keyed HMAC-SHA256 on @noble/hashes)', () => {
  test('RFC 4231 test cases 1-7, keys shorter and longer than a block', () => {
    for (const [i, v] of RFC4231.entries()) {
      const got = mac(new HmacSha256Key(v.key), v.data);
      assert.equal(got.slice(0, v.mac.length), v.mac, `test case ${i + 1}`);
    }
  });

  test('the message in parts is the message whole', () => {
    const v = RFC4231[6];
    assert.ok(v !== undefined);
    const key = new HmacSha256Key(v.key);
    const d = v.data;
    assert.equal(
      mac(key, d.subarray(0, 1), d.subarray(1, 64), d.subarray(64, 65), d.subarray(65)),
      v.mac,
    );
    assert.equal(mac(key, Buffer.alloc(0), d, Buffer.alloc(0)), v.mac);
  });

  test('equals node:crypto for random keys (0-200 bytes) and messages of up to four parts', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 200 }),
        fc.array(fc.uint8Array({ maxLength: 150 }), { minLength: 1, maxLength: 4 }),
        (key, parts) => {
          const k = new HmacSha256Key(key);
          const want = createHmac('sha256', key);
          for (const p of parts) want.update(p);
          const bufs = parts.map((p) => Buffer.from(p));
          const expected = want.digest('hex');
          assert.equal(mac(k, ...bufs), expected);
          // the keyed state is untouched by a message: the same again
          assert.equal(mac(k, ...bufs), expected);
        },
      ),
      { numRuns: 300, seed: SEED },
    );
  });

  test('keys used in turn share no state (one scratch state for all)', () => {
    const a = new HmacSha256Key(Buffer.from('key a'));
    const b = new HmacSha256Key(Buffer.alloc(100, 7));
    const m = Buffer.alloc(70, 1);
    for (let i = 0; i < 3; i++) {
      assert.equal(mac(a, m), createHmac('sha256', 'key a').update(m).digest('hex'));
      assert.equal(mac(b, m), createHmac('sha256', Buffer.alloc(100, 7)).update(m).digest('hex'));
    }
  });

  test('the key bytes are not kept: wiping them after keying changes nothing', () => {
    const bytes = Buffer.from('a key that is wiped');
    const want = createHmac('sha256', bytes).update('m').digest('hex');
    const k = new HmacSha256Key(bytes);
    bytes.fill(0);
    assert.equal(mac(k, Buffer.from('m')), want);
  });

  test('a destroyed key refuses to compute (no MAC under a wiped state)', () => {
    const k = new HmacSha256Key(Buffer.from('k'));
    k.destroy();
    assert.throws(() => mac(k, Buffer.from('m')));
    // and the shared scratch still works for the next key
    const k2 = new HmacSha256Key(Buffer.from('k'));
    assert.equal(mac(k2, Buffer.from('m')), createHmac('sha256', 'k').update('m').digest('hex'));
  });
});
