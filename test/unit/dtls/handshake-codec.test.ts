import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';

import {
  CipherSuite,
  DTLS_1_0,
  DTLS_1_2,
  ExtensionType,
  HandshakeType,
} from '../../../src/dtls/constants.js';
import { DtlsError } from '../../../src/dtls/errors.js';
import {
  MAX_HANDSHAKE_MESSAGE,
  clientHelloBody,
  clientKeyExchangeBody,
  expectType,
  handshakeMessage,
  helloVerifyRequestBody,
  parseClientHello,
  parseClientKeyExchange,
  parseFinished,
  parseHelloVerifyRequest,
  parseServerHello,
  parseServerKeyExchange,
  readFragments,
  serverHelloBody,
  type HandshakeFragment,
} from '../../../src/dtls/handshake.js';
import { Reader } from '../../../src/dtls/reader.js';
import { readRecord } from '../../../src/dtls/record.js';
import { loadCapture, type CaptureName } from '../../helpers/vectors.js';

const SEED = 0xc11e;
const EMPTY = Buffer.alloc(0);

function isDecodeError(e: unknown): boolean {
  return e instanceof DtlsError && e.code === 'DTLS_DECODE_ERROR';
}

/** Runs `f`; anything thrown must be a DtlsError (never RangeError/TypeError). */
function onlyDtlsErrors(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof DtlsError)) throw e;
  }
}

/** The two ClientHello bodies of a capture (first without, second with the cookie). */
function clientHellos(name: CaptureName): [Buffer, Buffer] {
  const c = loadCapture(name);
  const bodies: Buffer[] = [];
  for (const d of c.datagrams) {
    if (d.from !== 'client') continue;
    const rec = readRecord(d.data, 0);
    if (rec?.epoch !== 0 || rec.type !== 22) continue;
    for (const f of readFragments(rec.body)) {
      if (f.msgType === HandshakeType.clientHello) bodies.push(f.fragment);
    }
  }
  assert.equal(bodies.length, 2);
  return [bodies[0]!, bodies[1]!];
}

/** The ServerHello body of a capture. */
function serverHello(name: CaptureName): Buffer {
  const c = loadCapture(name);
  for (const d of c.datagrams) {
    if (d.from !== 'server') continue;
    let off = 0;
    while (off < d.data.length) {
      const rec = readRecord(d.data, off)!;
      off += rec.raw.length;
      if (rec.epoch !== 0 || rec.type !== 22) continue;
      for (const f of readFragments(rec.body)) {
        if (f.msgType === HandshakeType.serverHello) return f.fragment;
      }
    }
  }
  throw new Error('no ServerHello');
}

const OPENSSL_CCM: CaptureName = 'openssl3_dtls12_psk_ccm8_ems';
const OPENSSL_NOETM: CaptureName = 'openssl3_dtls12_psk_aes128_cbc_sha256_ems_noetm';
const NODE: CaptureName = 'alcalzone_node_dtls_client_psk_ccm8_no_ems';

const SIG_ALGS =
  '0028040305030603080708080809080a080b080408050806040105010601030303010302040205020602';

describe('ClientHello from the captures', () => {
  test('OpenSSL: ETM (22), EMS (23), signature_algorithms (13), SCSV, cookie of 20', () => {
    const [ch1Body, ch2Body] = clientHellos(OPENSSL_CCM);
    const ch = parseClientHello(ch2Body);
    assert.equal(ch.clientVersion, DTLS_1_2);
    assert.equal(ch.random.toString('hex'), loadCapture(OPENSSL_CCM).clientRandom.toString('hex'));
    assert.equal(ch.sessionId.length, 0);
    assert.equal(ch.cookie.length, 20);
    assert.deepEqual(ch.cipherSuites, [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8, 0x00ff]);
    assert.deepEqual([...ch.compressionMethods], [0]);
    assert.ok(ch.hasExtensionsBlock);
    assert.deepEqual(
      [...ch.extensions.keys()],
      [ExtensionType.encryptThenMac, ExtensionType.extendedMasterSecret, 13],
    );
    assert.equal(ch.extensions.get(ExtensionType.encryptThenMac)?.length, 0);
    assert.equal(ch.extensions.get(ExtensionType.extendedMasterSecret)?.length, 0);
    assert.equal(ch.extensions.get(13)?.toString('hex'), SIG_ALGS);
    assert.ok(ch.body.equals(ch2Body));
    const ch1 = parseClientHello(ch1Body);
    assert.equal(ch1.cookie.length, 0);
    assert.deepEqual([...ch1.extensions.keys()], [...ch.extensions.keys()]);
  });

  test('OpenSSL with -no_etm offers EMS but not ETM', () => {
    const ch = parseClientHello(clientHellos(OPENSSL_NOETM)[1]);
    assert.equal(ch.extensions.has(ExtensionType.encryptThenMac), false);
    assert.ok(ch.extensions.has(ExtensionType.extendedMasterSecret));
    assert.deepEqual(ch.cipherSuites, [CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256, 0x00ff]);
  });

  test('node-dtls-client: no extensions block at all, suites CCM_8 and CBC', () => {
    const [ch1Body, ch2Body] = clientHellos(NODE);
    const ch1 = parseClientHello(ch1Body);
    const ch = parseClientHello(ch2Body);
    assert.equal(ch.hasExtensionsBlock, false);
    assert.equal(ch.extensions.size, 0);
    assert.equal(ch1.cookie.length, 0);
    assert.equal(ch.cookie.length, 32);
    assert.deepEqual(ch.cipherSuites, [0xc0a8, 0x00ae]);
  });

  test('cookieInput is version‖random‖session_id and cipher_suites‖compression_methods', () => {
    const body = clientHellos(OPENSSL_CCM)[1];
    const ch = parseClientHello(body);
    const [a, b] = ch.cookieInput;
    assert.equal(a.toString('hex'), body.subarray(0, 35).toString('hex'));
    // after the 20-byte cookie: suites (2 + 4) and compression (1 + 1)
    assert.equal(b.toString('hex'), body.subarray(35 + 21, 35 + 21 + 8).toString('hex'));
    assert.equal(b.toString('hex'), '0004c0a800ff0100');
  });

  test('clientHelloBody rebuilds the node-dtls-client ClientHello2 byte for byte', () => {
    const body = clientHellos(NODE)[1];
    const ch = parseClientHello(body);
    const rebuilt = clientHelloBody({
      random: ch.random,
      cookie: ch.cookie,
      cipherSuites: ch.cipherSuites,
      extensions: undefined,
    });
    assert.equal(rebuilt.toString('hex'), body.toString('hex'));
  });

  test('ServerHellos of the captures', () => {
    const sh = parseServerHello(serverHello(OPENSSL_CCM));
    assert.equal(sh.version, DTLS_1_2);
    assert.equal(sh.sessionId.length, 32);
    assert.equal(sh.cipherSuite, CipherSuite.TLS_PSK_WITH_AES_128_CCM_8);
    assert.deepEqual(
      [...sh.extensions.keys()],
      [ExtensionType.renegotiationInfo, ExtensionType.extendedMasterSecret],
    );
    const node = parseServerHello(serverHello(NODE));
    assert.equal(node.sessionId.length, 0);
    assert.equal(node.extensions.size, 0);
  });
});

describe('ClientHello validation', () => {
  const chWithExt = clientHellos(OPENSSL_CCM)[1];
  const chNoExt = clientHellos(NODE)[1];

  test('duplicate extension → decode error', () => {
    const body = clientHelloBody({
      random: Buffer.alloc(32, 1),
      cookie: EMPTY,
      cipherSuites: [0xc0a8],
      extensions: [
        [ExtensionType.extendedMasterSecret, EMPTY],
        [ExtensionType.encryptThenMac, EMPTY],
        [ExtensionType.extendedMasterSecret, EMPTY],
      ],
    });
    assert.throws(() => parseClientHello(body), isDecodeError);
  });

  test('every truncation throws a DtlsError (never RangeError)', () => {
    for (const body of [chWithExt, chNoExt]) {
      const ch = parseClientHello(body);
      // the only prefix that is itself a valid ClientHello: cut right before the extensions
      const noExtLength = ch.hasExtensionsBlock
        ? body.length - 2 - [...ch.extensions.values()].reduce((n, d) => n + 4 + d.length, 0)
        : -1;
      for (let n = 0; n < body.length; n++) {
        if (n === noExtLength) {
          const cut = parseClientHello(body.subarray(0, n));
          assert.equal(cut.hasExtensionsBlock, false);
          assert.ok(cut.random.equals(ch.random));
          continue;
        }
        assert.throws(() => parseClientHello(body.subarray(0, n)), isDecodeError, `length ${n}`);
      }
    }
  });

  test('a trailing byte → decode error', () => {
    for (const body of [chWithExt, chNoExt]) {
      for (const b of [0, 1, 0xff]) {
        assert.throws(
          () => parseClientHello(Buffer.concat([body, Buffer.from([b])])),
          isDecodeError,
        );
      }
    }
    // two trailing zero bytes after an extension-less hello are an (empty) extensions block
    const empty = parseClientHello(Buffer.concat([chNoExt, Buffer.alloc(2)]));
    assert.equal(empty.hasExtensionsBlock, true);
    assert.equal(empty.extensions.size, 0);
  });

  test('field limits: session_id ≤ 32, cookie ≤ 255, suites non-empty and even, compression ≥ 1', () => {
    const random = Buffer.alloc(32, 7);
    const build = (sid: number, cookie: number, suites: Buffer, comp: Buffer): Buffer =>
      Buffer.concat([
        Buffer.from([0xfe, 0xfd]),
        random,
        Buffer.from([sid]),
        Buffer.alloc(sid),
        Buffer.from([cookie]),
        Buffer.alloc(cookie),
        suites,
        comp,
      ]);
    const suites = Buffer.from('0002c0a8', 'hex');
    const comp = Buffer.from('0100', 'hex');
    assert.equal(parseClientHello(build(32, 255, suites, comp)).cookie.length, 255);
    assert.throws(() => parseClientHello(build(33, 0, suites, comp)), isDecodeError);
    assert.throws(
      () => parseClientHello(build(0, 0, Buffer.from('0000', 'hex'), comp)),
      isDecodeError,
    );
    assert.throws(
      () => parseClientHello(build(0, 0, Buffer.from('0003c0a800', 'hex'), comp)),
      isDecodeError,
    );
    assert.throws(
      () => parseClientHello(build(0, 0, suites, Buffer.from('00', 'hex'))),
      isDecodeError,
    );
  });

  test('extension block length mismatches → decode error', () => {
    const base = clientHelloBody({
      random: Buffer.alloc(32),
      cookie: EMPTY,
      cipherSuites: [0xc0a8],
      extensions: [[ExtensionType.extendedMasterSecret, EMPTY]],
    });
    // base ends with: 0004 0017 0000
    const longer = Buffer.from(base);
    longer.writeUInt16BE(5, longer.length - 6);
    assert.throws(() => parseClientHello(longer), isDecodeError);
    const shorter = Buffer.from(base);
    shorter.writeUInt16BE(3, shorter.length - 6);
    assert.throws(() => parseClientHello(shorter), isDecodeError);
    const extData = Buffer.from(base);
    extData.writeUInt16BE(1, extData.length - 2);
    assert.throws(() => parseClientHello(extData), isDecodeError);
  });
});

describe('fragments and small messages', () => {
  test('handshakeMessage writes an unfragmented 12-byte header', () => {
    const m = handshakeMessage(16, 0x0203, Buffer.from('abcdef'));
    assert.equal(m.subarray(0, 12).toString('hex'), '10' + '000006' + '0203' + '000000' + '000006');
    assert.equal(m.subarray(12).toString(), 'abcdef');
    const [f, ...rest] = readFragments(m);
    assert.equal(rest.length, 0);
    assert.deepEqual(
      [f?.msgType, f?.length, f?.messageSeq, f?.fragmentOffset, f?.fragment.toString()],
      [16, 6, 0x0203, 0, 'abcdef'],
    );
  });

  test('readFragments: several fragments per record, empty body, bad offsets', () => {
    const two = Buffer.concat([
      handshakeMessage(2, 1, Buffer.alloc(38)),
      handshakeMessage(14, 2, EMPTY),
    ]);
    assert.deepEqual(
      readFragments(two).map((f) => [f.msgType, f.messageSeq, f.fragment.length]),
      [
        [2, 1, 38],
        [14, 2, 0],
      ],
    );
    assert.deepEqual(readFragments(EMPTY), []);
    // fragment_offset + fragment_length > length
    const bad = Buffer.from('01000010' + '0000' + '00000c' + '000005' + '0000000000', 'hex');
    assert.throws(() => readFragments(bad), isDecodeError);
    // fragment_length past the end of the record
    const short = Buffer.from('01000010' + '0000' + '000000' + '000010' + '00', 'hex');
    assert.throws(() => readFragments(short), isDecodeError);
    // a trailing partial header
    assert.throws(
      () => readFragments(Buffer.concat([two, Buffer.from([14, 0, 0])])),
      isDecodeError,
    );
    // a fragment in the middle of a message is fine
    const mid = Buffer.from('01000010' + '0001' + '000004' + '000002' + 'aabb', 'hex');
    const [f] = readFragments(mid);
    assert.deepEqual([f?.length, f?.fragmentOffset, f?.fragment.toString('hex')], [16, 4, 'aabb']);
  });

  test('HelloVerifyRequest round trip and limits', () => {
    for (const len of [0, 1, 16, 20, 32, 255]) {
      const cookie = Buffer.alloc(len, len);
      const hvr = parseHelloVerifyRequest(helloVerifyRequestBody(DTLS_1_0, cookie));
      assert.equal(hvr.version, DTLS_1_0);
      assert.ok(hvr.cookie.equals(cookie));
    }
    const body = helloVerifyRequestBody(DTLS_1_2, Buffer.alloc(16));
    for (let n = 0; n < body.length; n++) {
      assert.throws(() => parseHelloVerifyRequest(body.subarray(0, n)), isDecodeError);
    }
    assert.throws(
      () => parseHelloVerifyRequest(Buffer.concat([body, Buffer.alloc(1)])),
      isDecodeError,
    );
  });

  test('ClientKeyExchange / ServerKeyExchange / Finished', () => {
    const id = Buffer.from('Client_identity');
    assert.ok(parseClientKeyExchange(clientKeyExchangeBody(id)).equals(id));
    assert.equal(clientKeyExchangeBody(id).toString('hex'), '000f' + id.toString('hex'));
    // an empty identity is not allowed, an empty hint is
    assert.throws(() => parseClientKeyExchange(Buffer.from('0000', 'hex')), isDecodeError);
    assert.equal(parseServerKeyExchange(Buffer.from('0000', 'hex')).length, 0);
    assert.equal(
      parseServerKeyExchange(Buffer.from('00066d7968696e74', 'hex')).toString(),
      'myhint',
    );
    assert.throws(() => parseClientKeyExchange(Buffer.from('000f41', 'hex')), isDecodeError);
    assert.throws(() => parseServerKeyExchange(Buffer.from('000141ff', 'hex')), isDecodeError);
    assert.equal(parseFinished(Buffer.alloc(12)).length, 12);
    for (const n of [0, 11, 13, 36])
      assert.throws(() => parseFinished(Buffer.alloc(n)), isDecodeError);
  });

  test('expectType throws DTLS_UNEXPECTED_MESSAGE', () => {
    expectType(20, 20);
    assert.throws(
      () => expectType(16, 20),
      (e: unknown) => e instanceof DtlsError && e.code === 'DTLS_UNEXPECTED_MESSAGE',
    );
  });

  test('Reader: bounds, vec limits, done()', () => {
    const r = new Reader(Buffer.from('0102030405', 'hex'), 'test', 1, 4);
    assert.equal(r.remaining, 3);
    assert.equal(r.u8(), 2);
    assert.equal(r.u16(), 0x0304);
    assert.throws(() => r.u8(), isDecodeError); // the end bound, not the buffer end
    r.done();
    assert.throws(() => new Reader(Buffer.from('02aa', 'hex'), 't').vec8(), isDecodeError);
    assert.throws(() => new Reader(Buffer.from('01aa', 'hex'), 't').vec8(2), isDecodeError);
    assert.throws(() => new Reader(Buffer.from('0101', 'hex'), 't').vec16(), isDecodeError);
    assert.throws(() => new Reader(Buffer.from('00', 'hex'), 't').done(), isDecodeError);
    assert.throws(() => new Reader(Buffer.alloc(2), 't').u24(), isDecodeError);
  });
});

describe('round trips', () => {
  const random32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a));
  const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
  const extensions = fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 0xffff }), bytes(40)), {
    maxLength: 8,
    selector: ([t]) => t,
  });

  test('clientHelloBody → parseClientHello', () => {
    fc.assert(
      fc.property(
        random32,
        bytes(255),
        fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 1, maxLength: 60 }),
        fc.option(extensions, { nil: undefined }),
        (random, cookie, cipherSuites, exts) => {
          const body = clientHelloBody({ random, cookie, cipherSuites, extensions: exts });
          const ch = parseClientHello(body);
          assert.equal(ch.clientVersion, DTLS_1_2);
          assert.ok(ch.random.equals(random));
          assert.ok(ch.cookie.equals(cookie));
          assert.equal(ch.sessionId.length, 0);
          assert.deepEqual(ch.cipherSuites, cipherSuites);
          assert.deepEqual([...ch.compressionMethods], [0]);
          assert.equal(ch.hasExtensionsBlock, exts !== undefined);
          assert.deepEqual(
            [...ch.extensions].map(([t, d]) => [t, d.toString('hex')]),
            (exts ?? []).map(([t, d]) => [t, d.toString('hex')]),
          );
          assert.ok(ch.body.equals(body));
        },
      ),
      { numRuns: 300, seed: SEED },
    );
  });

  test('serverHelloBody → parseServerHello', () => {
    fc.assert(
      fc.property(
        random32,
        bytes(32),
        fc.integer({ min: 0, max: 0xffff }),
        extensions,
        (random, sessionId, cipherSuite, exts) => {
          const body = serverHelloBody({ random, sessionId, cipherSuite, extensions: exts });
          const sh = parseServerHello(body);
          assert.equal(sh.version, DTLS_1_2);
          assert.ok(sh.random.equals(random));
          assert.ok(sh.sessionId.equals(sessionId));
          assert.equal(sh.cipherSuite, cipherSuite);
          assert.equal(sh.compression, 0);
          assert.deepEqual(
            [...sh.extensions].map(([t, d]) => [t, d.toString('hex')]),
            exts.map(([t, d]) => [t, d.toString('hex')]),
          );
          // no extensions → no extensions block at all
          if (exts.length === 0) assert.equal(body.length, 2 + 32 + 1 + sessionId.length + 3);
        },
      ),
      { numRuns: 300, seed: SEED },
    );
  });

  test('serverHelloBody rebuilds the captured ServerHellos', () => {
    for (const name of [OPENSSL_CCM, NODE]) {
      const body = serverHello(name);
      const sh = parseServerHello(body);
      const rebuilt = serverHelloBody({
        random: sh.random,
        sessionId: sh.sessionId,
        cipherSuite: sh.cipherSuite,
        extensions: [...sh.extensions],
      });
      assert.equal(rebuilt.toString('hex'), body.toString('hex'));
    }
  });
});

describe('parsers throw only DtlsError', () => {
  const parsers: [string, (b: Buffer) => unknown][] = [
    ['parseClientHello', parseClientHello],
    ['readFragments', readFragments],
    ['parseServerHello', parseServerHello],
    ['parseHelloVerifyRequest', parseHelloVerifyRequest],
    ['parseClientKeyExchange', parseClientKeyExchange],
    ['parseServerKeyExchange', parseServerKeyExchange],
    ['parseFinished', parseFinished],
  ];
  const seeds = [
    ...clientHellos(OPENSSL_CCM),
    ...clientHellos(NODE),
    serverHello(OPENSSL_CCM),
    serverHello(NODE),
    helloVerifyRequestBody(DTLS_1_0, Buffer.alloc(20, 9)),
    handshakeMessage(16, 2, clientKeyExchangeBody(Buffer.from('id'))),
  ];

  for (const [name, parse] of parsers) {
    test(`${name} on arbitrary bytes`, () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 400 }), (a) => {
          onlyDtlsErrors(() => parse(Buffer.from(a)));
        }),
        { numRuns: 1000, seed: SEED },
      );
    });

    test(`${name} on mutated valid messages`, () => {
      fc.assert(
        fc.property(
          fc.constantFrom(...seeds),
          fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
            minLength: 1,
            maxLength: 6,
          }),
          fc.nat(),
          (seed, edits, cut) => {
            const b = Buffer.from(seed);
            for (const [pos, v] of edits) b[pos % b.length] = v;
            onlyDtlsErrors(() => parse(b));
            onlyDtlsErrors(() => parse(b.subarray(0, cut % (b.length + 1))));
          },
        ),
        { numRuns: 1000, seed: SEED },
      );
    });
  }

  test('readFragments output is always consistent', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (a) => {
        let frags: HandshakeFragment[];
        try {
          frags = readFragments(Buffer.from(a));
        } catch (e) {
          assert.ok(e instanceof DtlsError);
          return;
        }
        let total = 0;
        for (const f of frags) {
          assert.ok(f.fragmentOffset + f.fragment.length <= f.length);
          total += 12 + f.fragment.length;
        }
        assert.equal(total, a.length);
      }),
      { numRuns: 1000, seed: SEED },
    );
  });

  test('MAX_HANDSHAKE_MESSAGE leaves room for any PSK ClientHello', () => {
    assert.ok(MAX_HANDSHAKE_MESSAGE >= 1024);
  });
});
