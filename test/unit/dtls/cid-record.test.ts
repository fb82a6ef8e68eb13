/**
 * RFC 9146 tls12_cid records, byte by byte: the record layout (§4) and the additional data
 * of §5 for AEAD (CCM_8), MAC-then-encrypt and encrypt-then-MAC CBC. RFC 9146 has no test
 * vectors, so each sealed record is checked here by opening it with node:crypto directly,
 * with the additional data written out by hand from the RFC's text, not with our code.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, createHmac } from 'node:crypto';

import { CipherSuite, ContentType } from '../../../src/dtls/constants.js';
import { EpochState } from '../../../src/dtls/keys.js';
import {
  createRecordCipher,
  splitKeyBlock,
  suiteParams,
  type DirectionKeys,
} from '../../../src/dtls/record-cipher.js';
import { readRecord } from '../../../src/dtls/record.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');
const CCM = CipherSuite.TLS_PSK_WITH_AES_128_CCM_8;
const CBC = CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256;
const VARIANTS = [
  { name: 'CCM_8', suite: CCM, etm: false },
  { name: 'CBC MAC-then-encrypt', suite: CBC, etm: false },
  { name: 'CBC encrypt-then-MAC', suite: CBC, etm: true },
] as const;
type Variant = (typeof VARIANTS)[number];

const CID = hex('c1d2e3f4a5b6c7d8');
const EPOCH = 1;
const SEQ = 0x0000_0102_0304;
const CONTENT = Buffer.from('a CoAP request');

function keysFor(v: Variant): DirectionKeys {
  const len = suiteParams.get(v.suite)?.keyBlockLength ?? 0;
  const block = Buffer.from(Array.from({ length: len }, (_, i) => (i * 13 + 5) & 0xff));
  return splitKeyBlock(v.suite, block).client;
}

/**
 * RFC 9146 §5: seq_num_placeholder (8 × 0xff) ‖ tls12_cid (25) ‖ cid_length ‖ tls12_cid ‖
 * DTLSCiphertext.version ‖ epoch ‖ sequence_number ‖ cid ‖ length, as hex text.
 */
function rfcAdditionalData(cid: Buffer, length: number): Buffer {
  const seq = SEQ.toString(16).padStart(12, '0');
  const len = length.toString(16).padStart(4, '0');
  const cidLen = cid.length.toString(16).padStart(2, '0');
  return hex(`ffffffffffffffff19${cidLen}19fefd0001${seq}${cid.toString('hex')}${len}`);
}

/** Opens a sealed CID record by hand; returns the DTLSInnerPlaintext. */
function openByHand(v: Variant, keys: DirectionKeys, record: Buffer): Buffer {
  const header = 13 + CID.length;
  const body = record.subarray(header);
  if (v.suite === CCM) {
    const nonce = Buffer.concat([keys.salt, body.subarray(0, 8)]);
    const ct = body.subarray(8, body.length - 8);
    const d = createDecipheriv('aes-128-ccm', keys.encKey, nonce, { authTagLength: 8 });
    d.setAuthTag(body.subarray(body.length - 8));
    d.setAAD(rfcAdditionalData(CID, ct.length), { plaintextLength: ct.length });
    const pt = d.update(ct);
    d.final();
    return pt;
  }
  if (v.etm) {
    const enc = body.subarray(0, body.length - 32);
    const mac = createHmac('sha256', keys.macKey)
      .update(rfcAdditionalData(CID, enc.length))
      .update(enc)
      .digest();
    assert.deepEqual(body.subarray(body.length - 32), mac, 'encrypt-then-MAC over the RFC 9146 AD');
    const d = createDecipheriv('aes-128-cbc', keys.encKey, enc.subarray(0, 16));
    d.setAutoPadding(false);
    const pt = Buffer.concat([d.update(enc.subarray(16)), d.final()]);
    return pt.subarray(0, pt.length - (pt[pt.length - 1] ?? 0) - 1);
  }
  const d = createDecipheriv('aes-128-cbc', keys.encKey, body.subarray(0, 16));
  d.setAutoPadding(false);
  const pt = Buffer.concat([d.update(body.subarray(16)), d.final()]);
  const unpadded = pt.subarray(0, pt.length - (pt[pt.length - 1] ?? 0) - 1);
  const inner = unpadded.subarray(0, unpadded.length - 32);
  const mac = createHmac('sha256', keys.macKey)
    .update(rfcAdditionalData(CID, inner.length))
    .update(inner)
    .digest();
  assert.deepEqual(unpadded.subarray(inner.length), mac, 'MAC-then-encrypt over the RFC 9146 AD');
  return inner;
}

/** Seals `inner` (a DTLSInnerPlaintext, padding included) by hand as the peer would. */
function sealByHand(v: Variant, keys: DirectionKeys, inner: Buffer): Buffer {
  const header = Buffer.alloc(13 + CID.length);
  header[0] = ContentType.tls12Cid;
  header.writeUInt16BE(0xfefd, 1);
  header.writeUInt16BE(EPOCH, 3);
  header.writeUIntBE(SEQ, 5, 6);
  CID.copy(header, 11);
  let body: Buffer;
  if (v.suite === CCM) {
    const explicit = header.subarray(3, 11);
    const c = createCipheriv('aes-128-ccm', keys.encKey, Buffer.concat([keys.salt, explicit]), {
      authTagLength: 8,
    });
    c.setAAD(rfcAdditionalData(CID, inner.length), { plaintextLength: inner.length });
    const ct = Buffer.concat([c.update(inner), c.final()]);
    body = Buffer.concat([explicit, ct, c.getAuthTag()]);
  } else {
    const iv = Buffer.alloc(16, 0x42);
    const cbc = (pt: Buffer): Buffer => {
      const pad = 16 - (pt.length % 16);
      const c = createCipheriv('aes-128-cbc', keys.encKey, iv);
      c.setAutoPadding(false);
      return Buffer.concat([
        iv,
        c.update(Buffer.concat([pt, Buffer.alloc(pad, pad - 1)])),
        c.final(),
      ]);
    };
    if (v.etm) {
      const enc = cbc(inner);
      const mac = createHmac('sha256', keys.macKey)
        .update(rfcAdditionalData(CID, enc.length))
        .update(enc)
        .digest();
      body = Buffer.concat([enc, mac]);
    } else {
      const mac = createHmac('sha256', keys.macKey)
        .update(rfcAdditionalData(CID, inner.length))
        .update(inner)
        .digest();
      body = cbc(Buffer.concat([inner, mac]));
    }
  }
  header.writeUInt16BE(body.length, 11 + CID.length);
  return Buffer.concat([header, body]);
}

for (const v of VARIANTS) {
  describe(`tls12_cid record, ${v.name} (RFC 9146 §4-5)`, () => {
    test('seal: type 25, CID between sequence number and length, RFC 9146 additional data', () => {
      const keys = keysFor(v);
      const rec = createRecordCipher(v.suite, keys, v.etm).seal(
        ContentType.applicationData,
        EPOCH,
        SEQ,
        CONTENT,
        CID,
      );
      assert.equal(rec[0], 25, 'content type tls12_cid');
      assert.deepEqual(rec.subarray(1, 11), hex('fefd0001000001020304'), 'version, epoch, seq');
      assert.deepEqual(rec.subarray(11, 19), CID, 'the CID');
      assert.equal(rec.readUInt16BE(19), rec.length - 21, 'length after the CID');
      // DTLSInnerPlaintext: content ‖ real type (no padding from us)
      assert.deepEqual(openByHand(v, keys, rec), Buffer.concat([CONTENT, Buffer.from([23])]));
      const parsed = readRecord(rec, 0, CID.length);
      assert.ok(parsed !== undefined);
      assert.deepEqual(parsed.cid, CID);
      assert.equal(parsed.raw.length, rec.length);
    });

    test('open: a peer record with zero padding unwraps to its real type and content', () => {
      const keys = keysFor(v);
      // mbedTLS pads DTLSInnerPlaintext to a multiple of 16 with zeros
      const inner = Buffer.concat([CONTENT, Buffer.from([ContentType.alert]), Buffer.alloc(9)]);
      const wire = sealByHand(v, keys, inner);
      const rec = readRecord(wire, 0, CID.length);
      assert.ok(rec !== undefined);
      const state = new EpochState(
        1,
        createRecordCipher(v.suite, keys, v.etm),
        createRecordCipher(v.suite, keys, v.etm),
      );
      assert.equal(state.isNewest(rec), true);
      const pt = state.open(rec);
      assert.ok(Buffer.isBuffer(pt), String(pt));
      assert.deepEqual(pt, CONTENT);
      assert.equal(state.contentType, ContentType.alert);
      assert.equal(state.isNewest(rec), false, 'no longer newer than what was received');
    });

    test('open: another CID, the plain (RFC 6347) additional data, or all-zero inner plaintext fail', () => {
      const keys = keysFor(v);
      const cipher = (): ReturnType<typeof createRecordCipher> =>
        createRecordCipher(v.suite, keys, v.etm);
      const wire = sealByHand(v, keys, Buffer.concat([CONTENT, Buffer.from([23])]));
      const rec = readRecord(wire, 0, CID.length);
      assert.ok(rec !== undefined);
      const other = Buffer.from(CID);
      other[0] = (other[0] ?? 0) ^ 1;
      assert.equal(
        cipher().open(rec.type, rec.version, rec.epoch, rec.seq, rec.body, other),
        undefined,
      );
      // the same body read as a plain record: the additional data differs, so it fails
      assert.equal(cipher().open(23, rec.version, rec.epoch, rec.seq, rec.body), undefined);
      assert.ok(cipher().open(rec.type, rec.version, rec.epoch, rec.seq, rec.body, CID));
      const zeros = readRecord(sealByHand(v, keys, Buffer.alloc(16)), 0, CID.length);
      assert.ok(zeros !== undefined);
      const state = new EpochState(1, cipher(), cipher());
      assert.equal(state.open(zeros), 'malformed-record');
    });
  });
}

test('without a CID the record is the RFC 6347 one, unchanged', () => {
  for (const v of VARIANTS) {
    const keys = keysFor(v);
    const rec = createRecordCipher(v.suite, keys, v.etm).seal(23, EPOCH, SEQ, CONTENT);
    assert.equal(rec[0], 23);
    assert.equal(rec.readUInt16BE(11), rec.length - 13);
    const parsed = readRecord(rec, 0, 8);
    assert.equal(parsed?.cid, undefined, 'a CID length applies to type 25 only');
    assert.deepEqual(
      createRecordCipher(v.suite, keys, v.etm).open(23, 0xfefd, EPOCH, SEQ, rec.subarray(13)),
      CONTENT,
    );
  }
});

test('readRecord: a tls12_cid header shorter than its CID is rejected', () => {
  const rec = Buffer.concat([hex('19fefd0001000000000001'), CID.subarray(0, 4)]);
  assert.equal(readRecord(rec, 0, 8), undefined);
});
