/**
 * The four real handshake captures (node-dtls-client CCM_8 without extensions; OpenSSL 3
 * CCM_8 + EMS with a hint; OpenSSL CBC-SHA256 + EMS MAC-then-encrypt; OpenSSL CBC-SHA256 +
 * EMS + Encrypt-then-MAC) replayed through the record parser, the handshake codecs, the key
 * schedule and the record ciphers.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import {
  CipherSuite,
  ContentType,
  DTLS_1_0,
  DTLS_1_2,
  ExtensionType,
  HandshakeType,
} from '../../../src/dtls/constants.js';
import {
  handshakeMessage,
  parseClientHello,
  parseClientKeyExchange,
  parseHelloVerifyRequest,
  parseServerHello,
  parseServerKeyExchange,
  readFragments,
  type ClientHello,
  type ServerHello,
} from '../../../src/dtls/handshake.js';
import { deriveSessionKeys, type SessionKeys } from '../../../src/dtls/keys.js';
import { verifyData } from '../../../src/dtls/prf.js';
import type { RecordCipher } from '../../../src/dtls/record-cipher.js';
import { readRecord, type DtlsRecord } from '../../../src/dtls/record.js';
import { loadCaptures, type Capture, type Direction } from '../../helpers/vectors.js';

const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest();
const CLOSE_NOTIFY = Buffer.from([1, 0]);
const HELLO = Buffer.from('hello\n');

interface CapturedRecord {
  readonly from: Direction;
  readonly datagram: number;
  readonly rec: DtlsRecord;
}

interface PlainMessage {
  readonly from: Direction;
  readonly msgType: number;
  readonly messageSeq: number;
  readonly body: Buffer;
}

interface Analysis {
  readonly records: readonly CapturedRecord[];
  readonly clientMessages: readonly PlainMessage[];
  readonly serverMessages: readonly PlainMessage[];
  readonly ch1: ClientHello;
  readonly ch2: ClientHello;
  readonly sh: ServerHello;
  readonly ems: boolean;
  readonly etm: boolean;
  /** ClientHello2 .. ClientKeyExchange, each with its unfragmented 12-byte header. */
  readonly transcript: Buffer;
  readonly cke: PlainMessage;
  readonly shd: PlainMessage;
  /** Epoch-1 records. */
  readonly protectedRecords: readonly CapturedRecord[];
}

function splitDatagram(data: Buffer): DtlsRecord[] {
  const out: DtlsRecord[] = [];
  let off = 0;
  while (off < data.length) {
    const rec = readRecord(data, off);
    assert.ok(rec !== undefined, `record at offset ${off} parses`);
    out.push(rec);
    off += rec.raw.length;
  }
  assert.equal(off, data.length);
  return out;
}

function find(msgs: readonly PlainMessage[], type: number): PlainMessage {
  const found = msgs.filter((m) => m.msgType === type);
  assert.equal(found.length, 1, `exactly one message of type ${type}`);
  return found[0]!;
}

function analyse(c: Capture): Analysis {
  const records: CapturedRecord[] = [];
  c.datagrams.forEach((d, i) => {
    for (const rec of splitDatagram(d.data)) records.push({ from: d.from, datagram: i, rec });
  });
  const plain: PlainMessage[] = [];
  for (const { from, rec } of records) {
    if (rec.epoch !== 0 || rec.type !== ContentType.handshake) continue;
    for (const f of readFragments(rec.body)) {
      // none of the captures fragments a handshake message
      assert.equal(f.fragmentOffset, 0);
      assert.equal(f.fragment.length, f.length);
      plain.push({ from, msgType: f.msgType, messageSeq: f.messageSeq, body: f.fragment });
    }
  }
  const clientMessages = plain.filter((m) => m.from === 'client');
  const serverMessages = plain.filter((m) => m.from === 'server');
  const hellos = clientMessages.filter((m) => m.msgType === HandshakeType.clientHello);
  assert.equal(hellos.length, 2);
  const ch1 = parseClientHello(hellos[0]!.body);
  const ch2Msg = hellos[1]!;
  const ch2 = parseClientHello(ch2Msg.body);
  const shMsg = find(serverMessages, HandshakeType.serverHello);
  const sh = parseServerHello(shMsg.body);
  const shd = find(serverMessages, HandshakeType.serverHelloDone);
  const cke = find(clientMessages, HandshakeType.clientKeyExchange);
  const ske = serverMessages.filter((m) => m.msgType === HandshakeType.serverKeyExchange);
  const ems = sh.extensions.has(ExtensionType.extendedMasterSecret);
  const etm =
    sh.extensions.has(ExtensionType.encryptThenMac) &&
    sh.cipherSuite === CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256;
  const transcript = Buffer.concat(
    [ch2Msg, shMsg, ...ske, shd, cke].map((m) => handshakeMessage(m.msgType, m.messageSeq, m.body)),
  );
  return {
    records,
    clientMessages,
    serverMessages,
    ch1,
    ch2,
    sh,
    ems,
    etm,
    transcript,
    cke,
    shd,
    protectedRecords: records.filter((r) => r.rec.epoch === 1),
  };
}

function derive(c: Capture, a: Analysis): SessionKeys {
  return deriveSessionKeys({
    suite: a.sh.cipherSuite,
    psk: c.psk,
    clientRandom: a.ch2.random,
    serverRandom: a.sh.random,
    sessionHash: a.ems ? sha256(a.transcript) : undefined,
    encryptThenMac: a.etm,
  });
}

function finishedMessages(
  c: Capture,
  a: Analysis,
): { client: Buffer; server: Buffer; clientVerify: Buffer; serverVerify: Buffer } {
  const master = derive(c, a).master;
  const clientVerify = verifyData(master, 'client finished', sha256(a.transcript));
  const client = handshakeMessage(HandshakeType.finished, a.cke.messageSeq + 1, clientVerify);
  const serverVerify = verifyData(
    master,
    'server finished',
    sha256(Buffer.concat([a.transcript, client])),
  );
  const server = handshakeMessage(HandshakeType.finished, a.shd.messageSeq + 1, serverVerify);
  return { client, server, clientVerify, serverVerify };
}

/** What each epoch-1 record of the captures carries. */
function expectedPlaintext(c: Capture, a: Analysis, r: CapturedRecord): Buffer {
  const fin = finishedMessages(c, a);
  switch (r.rec.type) {
    case ContentType.handshake:
      return r.from === 'client' ? fin.client : fin.server;
    case ContentType.applicationData:
      return HELLO;
    case ContentType.alert:
      return CLOSE_NOTIFY;
    default:
      throw new Error(`unexpected protected record type ${r.rec.type}`);
  }
}

function cipherFor(keys: SessionKeys, from: Direction): RecordCipher {
  return from === 'client' ? keys.clientWrite : keys.serverWrite;
}

function openRecord(cipher: RecordCipher, rec: DtlsRecord): Buffer | undefined {
  return cipher.open(rec.type, rec.version, rec.epoch, rec.seq, rec.body);
}

function flipBit(b: Buffer, bit: number): Buffer {
  const out = Buffer.from(b);
  out[bit >> 3]! ^= 1 << (bit & 7);
  return out;
}

const captures = loadCaptures();

test('all four captures are present', () => {
  assert.deepEqual(
    captures.map((c) => c.name),
    [
      'alcalzone_node_dtls_client_psk_ccm8_no_ems',
      'openssl3_dtls12_psk_ccm8_ems',
      'openssl3_dtls12_psk_aes128_cbc_sha256_ems_noetm',
      'openssl3_dtls12_psk_aes128_cbc_sha256_ems_etm',
    ],
  );
});

for (const c of captures) {
  const isOpenSsl = c.name.startsWith('openssl3');
  const isCbc = c.suite === CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256;

  describe(`capture ${c.name}`, () => {
    const a = analyse(c);

    test('records and handshake messages parse', () => {
      // handshake message_seq per direction: C: CH 0, CH2 1, CKE 2; S: HVR 0, SH 1, [SKE 2], SHD
      assert.deepEqual(
        a.clientMessages.map((m) => [m.msgType, m.messageSeq]),
        [
          [HandshakeType.clientHello, 0],
          [HandshakeType.clientHello, 1],
          [HandshakeType.clientKeyExchange, 2],
        ],
      );
      const server = a.serverMessages.map((m) => [m.msgType, m.messageSeq]);
      if (c.hint !== undefined) {
        assert.deepEqual(server, [
          [HandshakeType.helloVerifyRequest, 0],
          [HandshakeType.serverHello, 1],
          [HandshakeType.serverKeyExchange, 2],
          [HandshakeType.serverHelloDone, 3],
        ]);
        const ske = find(a.serverMessages, HandshakeType.serverKeyExchange);
        assert.equal(parseServerKeyExchange(ske.body).toString(), c.hint);
      } else {
        assert.deepEqual(server, [
          [HandshakeType.helloVerifyRequest, 0],
          [HandshakeType.serverHello, 1],
          [HandshakeType.serverHelloDone, 2],
        ]);
      }
      assert.equal(parseClientKeyExchange(a.cke.body).toString(), c.identity);
      // every record is DTLS 1.2 except OpenSSL's ClientHellos and the HelloVerifyRequest
      for (const { rec, from } of a.records) {
        const hello =
          rec.epoch === 0 &&
          rec.type === ContentType.handshake &&
          (rec.body[0] === HandshakeType.clientHello ||
            rec.body[0] === HandshakeType.helloVerifyRequest);
        if (!hello) assert.equal(rec.version, DTLS_1_2, `${from} record type ${rec.type}`);
        else assert.equal(rec.version, isOpenSsl ? DTLS_1_0 : DTLS_1_2);
      }
    });

    test('ClientHello2 repeats ClientHello1 with the HelloVerifyRequest cookie', () => {
      const hvr = parseHelloVerifyRequest(find(a.serverMessages, 3).body);
      assert.equal(a.ch1.cookie.length, 0);
      assert.ok(a.ch2.cookie.equals(hvr.cookie));
      assert.equal(hvr.version, isOpenSsl ? DTLS_1_0 : DTLS_1_2);
      assert.ok(a.ch2.random.equals(c.clientRandom));
      assert.ok(a.ch1.random.equals(c.clientRandom));
      // the cookie covers exactly what the client must repeat
      assert.ok(a.ch1.cookieInput[0].equals(a.ch2.cookieInput[0]));
      assert.ok(a.ch1.cookieInput[1].equals(a.ch2.cookieInput[1]));
      assert.equal(a.ch2.clientVersion, DTLS_1_2);
    });

    test('ServerHello: suite and extensions', () => {
      assert.equal(a.sh.version, DTLS_1_2);
      assert.equal(a.sh.cipherSuite, c.suite);
      assert.equal(a.sh.compression, 0);
      assert.equal(a.ems, c.extendedMasterSecret);
      if (c.serverRandom !== undefined) assert.ok(a.sh.random.equals(c.serverRandom));
      // RFC 7366: encrypt_then_mac is never echoed for an AEAD suite
      if (!isCbc) assert.equal(a.sh.extensions.has(ExtensionType.encryptThenMac), false);
      assert.equal(a.etm, c.name.endsWith('_etm'));
      if (!isOpenSsl) {
        assert.equal(a.ch2.hasExtensionsBlock, false);
        assert.equal(a.sh.extensions.size, 0);
      }
    });

    test('master secret from the rebuilt transcript matches the capture', () => {
      const keys = derive(c, a);
      assert.equal(keys.master.toString('hex'), c.master.toString('hex'));
    });

    test('Finished verify_data (and the stated values where the file has them)', () => {
      const fin = finishedMessages(c, a);
      if (c.clientVerifyData !== undefined) assert.ok(fin.clientVerify.equals(c.clientVerifyData));
      if (c.serverVerifyData !== undefined) assert.ok(fin.serverVerify.equals(c.serverVerifyData));
    });

    test('every epoch-1 record opens with the derived keys and carries what it should', () => {
      const keys = derive(c, a);
      const kinds = a.protectedRecords.map((r) => `${r.from}:${r.rec.type}`);
      assert.deepEqual(
        kinds,
        isOpenSsl
          ? ['client:22', 'server:22', 'client:23', 'client:21', 'server:21']
          : ['client:22', 'server:22'],
      );
      for (const r of a.protectedRecords) {
        const pt = openRecord(cipherFor(keys, r.from), r.rec);
        assert.ok(pt !== undefined, `${r.from} record type ${r.rec.type} opens`);
        assert.equal(pt.toString('hex'), expectedPlaintext(c, a, r).toString('hex'));
        if (r.rec.type === ContentType.handshake) {
          const [f, ...rest] = readFragments(pt);
          assert.equal(rest.length, 0);
          assert.equal(f?.msgType, HandshakeType.finished);
          assert.equal(f.fragment.length, 12);
        }
        // the other direction's keys do not open it
        const other = cipherFor(keys, r.from === 'client' ? 'server' : 'client');
        assert.equal(openRecord(other, r.rec), undefined);
      }
    });

    test('ChangeCipherSpec records precede the Finished of each side', () => {
      for (const from of ['client', 'server'] as const) {
        const mine = a.records.filter((r) => r.from === from);
        const ccs = mine.findIndex((r) => r.rec.type === ContentType.changeCipherSpec);
        const fin = mine.findIndex((r) => r.rec.epoch === 1);
        assert.ok(ccs >= 0 && ccs < fin);
        assert.deepEqual([...mine[ccs]!.rec.body], [1]);
      }
    });

    test('seal → open round trip with the same epoch/seq for every protected record', () => {
      const keys = derive(c, a);
      for (const r of a.protectedRecords) {
        const cipher = cipherFor(keys, r.from);
        const pt = expectedPlaintext(c, a, r);
        const sealed = cipher.seal(r.rec.type, r.rec.epoch, r.rec.seq, pt);
        const rec = readRecord(sealed, 0);
        assert.ok(rec !== undefined);
        assert.equal(rec.raw.length, sealed.length);
        // same header as the captured record: type, version, epoch, seq and length
        assert.equal(
          sealed.subarray(0, 13).toString('hex'),
          r.rec.raw.subarray(0, 13).toString('hex'),
        );
        assert.ok(openRecord(cipher, rec)?.equals(pt));
      }
    });

    if (!isCbc) {
      test('CCM_8 is deterministic: re-sealed records equal the captured bytes', () => {
        const keys = derive(c, a);
        const otherNonce: string[] = [];
        for (const r of a.protectedRecords) {
          const sealed = cipherFor(keys, r.from).seal(
            r.rec.type,
            r.rec.epoch,
            r.rec.seq,
            expectedPlaintext(c, a, r),
          );
          const epochSeq = r.rec.raw.subarray(3, 11);
          const explicitNonce = r.rec.body.subarray(0, 8);
          if (explicitNonce.equals(epochSeq)) {
            assert.equal(sealed.toString('hex'), r.rec.raw.toString('hex'));
          } else {
            otherNonce.push(`${r.from}:${r.rec.type}:${explicitNonce.toString('hex')}`);
            assert.notEqual(sealed.toString('hex'), r.rec.raw.toString('hex'));
          }
        }
        // node-dtls-client writes the bare sequence number (without the epoch) as the explicit
        // nonce of its Finished; we write epoch||seq, so only that record differs.
        assert.deepEqual(otherNonce, isOpenSsl ? [] : ['client:22:0000000000000000']);
      });
    }

    if (isCbc) {
      test('CBC: our record opens with freshly derived keys; any flipped body bit fails', () => {
        const sealer = derive(c, a);
        for (const r of a.protectedRecords) {
          const pt = expectedPlaintext(c, a, r);
          const sealed = cipherFor(sealer, r.from).seal(r.rec.type, 1, r.rec.seq, pt);
          const fresh = cipherFor(derive(c, a), r.from);
          const rec = readRecord(sealed, 0)!;
          assert.ok(openRecord(fresh, rec)?.equals(pt));
          // random explicit IV: sealing twice gives different bytes
          const again = cipherFor(sealer, r.from).seal(r.rec.type, 1, r.rec.seq, pt);
          assert.ok(!again.equals(sealed));
          for (let bit = 0; bit < rec.body.length * 8; bit++) {
            const body = flipBit(rec.body, bit);
            assert.equal(
              fresh.open(rec.type, rec.version, rec.epoch, rec.seq, body),
              undefined,
              `bit ${bit} of ${rec.body.length * 8}`,
            );
          }
        }
      });
    }

    test('flipping any bit of a captured protected record body makes open fail', () => {
      const keys = derive(c, a);
      for (const r of a.protectedRecords) {
        const cipher = cipherFor(keys, r.from);
        for (let bit = 0; bit < r.rec.body.length * 8; bit++) {
          const body = flipBit(r.rec.body, bit);
          assert.equal(
            cipher.open(r.rec.type, r.rec.version, r.rec.epoch, r.rec.seq, body),
            undefined,
            `${r.from}:${r.rec.type} bit ${bit}`,
          );
        }
      }
    });

    test('a wrong type, epoch, sequence number or version in the header makes open fail', () => {
      const keys = derive(c, a);
      for (const r of a.protectedRecords) {
        const cipher = cipherFor(keys, r.from);
        const { type, version, epoch, seq, body } = r.rec;
        assert.ok(cipher.open(type, version, epoch, seq, body) !== undefined);
        assert.equal(cipher.open(type === 23 ? 22 : 23, version, epoch, seq, body), undefined);
        assert.equal(cipher.open(type, version, epoch + 1, seq, body), undefined);
        assert.equal(cipher.open(type, version, epoch, seq + 1, body), undefined);
        assert.equal(cipher.open(type, DTLS_1_0, epoch, seq, body), undefined);
      }
    });

    test('the EMS decision matters: the other derivation gives a different master', () => {
      const other = deriveSessionKeys({
        suite: a.sh.cipherSuite,
        psk: c.psk,
        clientRandom: a.ch2.random,
        serverRandom: a.sh.random,
        sessionHash: a.ems ? undefined : sha256(a.transcript),
        encryptThenMac: a.etm,
      });
      assert.ok(!other.master.equals(c.master));
    });

    if (isCbc) {
      test('the ETM decision matters: the other CBC variant does not open the records', () => {
        const other = deriveSessionKeys({
          suite: a.sh.cipherSuite,
          psk: c.psk,
          clientRandom: a.ch2.random,
          serverRandom: a.sh.random,
          sessionHash: a.ems ? sha256(a.transcript) : undefined,
          encryptThenMac: !a.etm,
        });
        for (const r of a.protectedRecords) {
          assert.equal(openRecord(cipherFor(other, r.from), r.rec), undefined);
        }
      });
    }
  });
}

describe('capture details', () => {
  test('OpenSSL ClientHellos offer ETM (22) except with -no_etm, EMS (23) and SCSV', () => {
    for (const c of captures.filter((x) => x.name.startsWith('openssl3'))) {
      const a = analyse(c);
      assert.equal(a.ch2.extensions.has(ExtensionType.encryptThenMac), !c.name.endsWith('noetm'));
      assert.equal(a.ch2.extensions.has(ExtensionType.extendedMasterSecret), true);
      assert.ok(a.ch2.cipherSuites.includes(0x00ff));
      // the ServerHello echoes an empty renegotiation_info and an empty EMS
      assert.equal(a.sh.extensions.get(ExtensionType.renegotiationInfo)?.toString('hex'), '00');
      assert.equal(a.sh.extensions.get(ExtensionType.extendedMasterSecret)?.length, 0);
    }
  });
});
