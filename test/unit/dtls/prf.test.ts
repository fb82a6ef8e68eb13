import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';

import {
  extendedMasterSecret,
  keyBlock,
  masterSecret,
  pSha256,
  prf,
  pskPremasterSecret,
  verifyData,
} from '../../../src/dtls/prf.js';
import { deriveSessionKeys, Transcript } from '../../../src/dtls/keys.js';
import { CipherSuite } from '../../../src/dtls/constants.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');
const SEED = 0x5052;

// TLS 1.2 PRF SHA-256 vector (IETF TLS WG list, msg03416)
const SECRET = hex('9bbe436ba940f017b17652849a71db35');
const LABEL = 'test label';
const PRF_SEED = hex('a0ba9f936cda311827a6f796ffd5198c');
const EXPECTED =
  'e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff70187347b66';

/** Straightforward RFC 5246 §5 P_SHA256, as a model. */
function modelPrf(secret: Buffer, label: string, seed: Buffer, length: number): Buffer {
  const s = Buffer.concat([Buffer.from(label, 'latin1'), seed]);
  const hmac = (d: Buffer): Buffer => createHmac('sha256', secret).update(d).digest();
  const blocks: Buffer[] = [];
  let a: Buffer = s;
  let total = 0;
  while (total < length) {
    a = hmac(a);
    const b = hmac(Buffer.concat([a, s]));
    blocks.push(b);
    total += b.length;
  }
  return Buffer.concat(blocks).subarray(0, length);
}

describe('TLS 1.2 PRF (SHA-256)', () => {
  test('the published 100-byte test vector', () => {
    assert.equal(prf(SECRET, LABEL, PRF_SEED, 100).toString('hex'), EXPECTED);
  });

  test('every prefix length is a prefix of the long output', () => {
    for (let n = 0; n <= 100; n++) {
      assert.equal(prf(SECRET, LABEL, PRF_SEED, n).toString('hex'), EXPECTED.slice(0, 2 * n));
    }
  });

  test('pSha256 equals prf with the label folded into the seed', () => {
    const seed = Buffer.concat([Buffer.from(LABEL), PRF_SEED]);
    assert.equal(pSha256(SECRET, seed, 100).toString('hex'), EXPECTED);
  });

  test('matches a model implementation on random inputs', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 80 }),
        fc.string({ maxLength: 20 }),
        fc.uint8Array({ maxLength: 80 }),
        fc.integer({ min: 0, max: 200 }),
        (secret, label, seed, length) => {
          const got = prf(Buffer.from(secret), label, Buffer.from(seed), length);
          const want = modelPrf(Buffer.from(secret), label, Buffer.from(seed), length);
          assert.equal(got.toString('hex'), want.toString('hex'));
        },
      ),
      { numRuns: 200, seed: SEED },
    );
  });
});

describe('PSK premaster secret (RFC 4279 §2)', () => {
  test('layout: uint16 N | N zero bytes | uint16 N | psk', () => {
    const psk = Buffer.from('X9LStOPeYT3UZu5w');
    const pms = pskPremasterSecret(psk);
    assert.equal(
      pms.toString('hex'),
      '0010' + '00'.repeat(16) + '0010' + '58394c53744f5065595433555a753577',
    );
  });

  test('lengths 0..300 (including N ≥ 256, two-byte length)', () => {
    for (let n = 0; n <= 300; n++) {
      const psk = Buffer.alloc(n, 0xa5);
      const pms = pskPremasterSecret(psk);
      assert.equal(pms.length, 4 + 2 * n);
      assert.equal(pms.readUInt16BE(0), n);
      assert.ok(pms.subarray(2, 2 + n).equals(Buffer.alloc(n)));
      assert.equal(pms.readUInt16BE(2 + n), n);
      assert.ok(pms.subarray(4 + n).equals(psk));
    }
  });

  test('does not alias the psk buffer', () => {
    const psk = Buffer.from('00112233', 'hex');
    const pms = pskPremasterSecret(psk);
    pms.fill(0);
    assert.equal(psk.toString('hex'), '00112233');
  });
});

describe('key schedule', () => {
  // node-dtls-client capture (no EMS)
  const psk = Buffer.from('X9LStOPeYT3UZu5w');
  const clientRandom = hex('2dc3b6afc7ddaceac9a76d6e00b2c6ef8627e227aa9ddaac1ad812fba69064bc');
  const serverRandom = hex('59186ef2c947a95a7e7b0e8d91b78f0cff928533ae62036b249a1603a12d269d');
  const master =
    '04e5d00a71bb5690195129b839bff999c709ea0f785ba9ccb7fe14a8fdc473f292916474132d8c836af4df15ee96f2ed';

  test('master secret: PRF(pms, "master secret", client_random || server_random)', () => {
    const pms = pskPremasterSecret(psk);
    assert.equal(masterSecret(pms, clientRandom, serverRandom).toString('hex'), master);
    // order of the randoms matters
    assert.notEqual(masterSecret(pms, serverRandom, clientRandom).toString('hex'), master);
  });

  test('extended master secret uses its own label over the session hash', () => {
    const pms = pskPremasterSecret(psk);
    const hash = createHash('sha256').update('transcript').digest();
    assert.equal(
      extendedMasterSecret(pms, hash).toString('hex'),
      prf(pms, 'extended master secret', hash, 48).toString('hex'),
    );
  });

  test('key block: PRF(master, "key expansion", server_random || client_random)', () => {
    const m = hex(master);
    assert.equal(
      keyBlock(m, serverRandom, clientRandom, 40).toString('hex'),
      prf(m, 'key expansion', Buffer.concat([serverRandom, clientRandom]), 40).toString('hex'),
    );
  });

  test('verify_data is 12 bytes with the finished labels', () => {
    const m = hex(master);
    const h = createHash('sha256').update('x').digest();
    const c = verifyData(m, 'client finished', h);
    const s = verifyData(m, 'server finished', h);
    assert.equal(c.length, 12);
    assert.equal(c.toString('hex'), prf(m, 'client finished', h, 12).toString('hex'));
    assert.equal(s.toString('hex'), prf(m, 'server finished', h, 12).toString('hex'));
    assert.notEqual(c.toString('hex'), s.toString('hex'));
  });

  test('deriveSessionKeys: EMS when a session hash is given, plain otherwise', () => {
    const base = {
      suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
      psk,
      clientRandom,
      serverRandom,
      encryptThenMac: false,
    };
    assert.equal(
      deriveSessionKeys({ ...base, sessionHash: undefined }).master.toString('hex'),
      master,
    );
    const hash = createHash('sha256').update('t').digest();
    const ems = deriveSessionKeys({ ...base, sessionHash: hash }).master;
    assert.equal(
      ems.toString('hex'),
      extendedMasterSecret(pskPremasterSecret(psk), hash).toString('hex'),
    );
    // the caller's psk is left untouched (the premaster copy is wiped)
    assert.equal(psk.toString(), 'X9LStOPeYT3UZu5w');
  });

  test('deriveSessionKeys rejects an unknown suite', () => {
    assert.throws(
      () =>
        deriveSessionKeys({
          suite: 0x1301,
          psk,
          clientRandom,
          serverRandom,
          sessionHash: undefined,
          encryptThenMac: false,
        }),
      RangeError,
    );
  });

  test('Transcript.digest is a running hash that stays usable', () => {
    const t = new Transcript();
    t.add(Buffer.from('ab'));
    const d1 = t.digest();
    assert.ok(d1.equals(createHash('sha256').update('ab').digest()));
    assert.ok(t.digest().equals(d1));
    t.add(Buffer.from('cd'));
    assert.ok(t.digest().equals(createHash('sha256').update('abcd').digest()));
    // the last use finishes the running hash itself: the same digest, then nothing more
    assert.ok(t.finalDigest().equals(createHash('sha256').update('abcd').digest()));
    assert.throws(() => t.digest(), { code: 'ERR_CRYPTO_HASH_FINALIZED' });
  });

  test('an output of one block or less is a view of that block (verify_data: no copy)', () => {
    const long = pSha256(SECRET, PRF_SEED, 64);
    for (const n of [0, 12, 31, 32]) {
      const out = pSha256(SECRET, PRF_SEED, n);
      assert.equal(out.toString('hex'), long.subarray(0, n).toString('hex'));
      assert.equal(out.buffer.byteLength, 32, `length ${n}: the digest's own 32 bytes`);
    }
  });
});
