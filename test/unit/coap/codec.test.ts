import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';

import {
  decode,
  encode,
  encodedLength,
  type CoapMessage,
  type CoapOption,
} from '../../../src/coap/codec.js';
import {
  ACK_RANDOM_FACTOR,
  ACK_TIMEOUT_MS,
  Code,
  ContentFormat,
  DEFAULT_LEISURE_MS,
  EXCHANGE_LIFETIME_MS,
  MAX_LATENCY_MS,
  MAX_RETRANSMIT,
  MAX_RTT_MS,
  MAX_TRANSMIT_SPAN_MS,
  MAX_TRANSMIT_WAIT_MS,
  NON_LIFETIME_MS,
  NSTART,
  OptionNumber,
  PROBING_RATE_BYTES_PER_S,
  PROCESSING_DELAY_MS,
  code,
  codeClass,
  codeDetail,
  formatCode,
  isCritical,
  isEmptyCode,
  isNoCacheKey,
  isRequestCode,
  isReservedCodeClass,
  isResponseCode,
  isUnsafe,
  type MessageType,
} from '../../../src/coap/constants.js';
import { COAP_ERROR_CODES, CoapFormatError, type CoapErrorCode } from '../../../src/coap/errors.js';
import {
  MAX_BLOCK_NUM,
  blockSizeToSzx,
  contentFormat,
  decodeBlock,
  decodeUint,
  encodeBlock,
  encodeUint,
  getOption,
  getOptions,
  szxToBlockSize,
  uriPath,
  uriPathStrict,
  uriQuery,
} from '../../../src/coap/options.js';
import { coapMessageArb } from '../../helpers/fuzz.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const EMPTY = Buffer.alloc(0);
const SEED = 0x7252;

function msg(partial: Partial<CoapMessage> & Pick<CoapMessage, 'code'>): CoapMessage {
  return {
    type: 0,
    messageId: 0,
    token: EMPTY,
    options: [],
    payload: EMPTY,
    ...partial,
  };
}

function opt(number: number, value: Buffer | string): CoapOption {
  return { number, value: typeof value === 'string' ? Buffer.from(value) : value };
}

/** Stable sort by option number, independent of the codec's own sort. */
function sortedCopy(options: readonly CoapOption[]): CoapOption[] {
  return options
    .map((o, i) => ({ o, i }))
    .sort((a, b) => a.o.number - b.o.number || a.i - b.i)
    .map(({ o }) => o);
}

/** Decodes and returns the CoapFormatError it must throw. */
function decodeError(buf: Buffer): CoapFormatError {
  try {
    decode(buf);
  } catch (err) {
    assert.ok(err instanceof CoapFormatError, `expected CoapFormatError, got ${String(err)}`);
    return err;
  }
  assert.fail(`decode accepted ${buf.toString('hex')}`);
}

// ---------------------------------------------------------------------------------------
// Byte-exact vectors (RFC 7252 Figure 7 layout)
// ---------------------------------------------------------------------------------------

interface Vector {
  readonly name: string;
  readonly bytes: Buffer;
  readonly message: CoapMessage;
}

const PROXY_URI_300 = Buffer.alloc(300, 0x61);
const PATH_13 = Buffer.from('abcdefghijklm');

const VECTORS: readonly Vector[] = [
  {
    name: 'CON GET /temperature, MID 0x7d34, token 0x71 (RFC 7252 A.1 exchange)',
    bytes: hex('41 01 7d34 71 bb 74656d7065726174757265'),
    message: msg({
      type: 0,
      code: Code.GET,
      messageId: 0x7d34,
      token: hex('71'),
      options: [opt(OptionNumber.URI_PATH, 'temperature')],
    }),
  },
  {
    name: 'ACK 2.05 piggybacked, Content-Format 0 (empty uint), payload "22.3 C"',
    bytes: hex('61 45 7d34 71 c0 ff 32322e332043'),
    message: msg({
      type: 2,
      code: Code.CONTENT,
      messageId: 0x7d34,
      token: hex('71'),
      options: [opt(OptionNumber.CONTENT_FORMAT, EMPTY)],
      payload: Buffer.from('22.3 C'),
    }),
  },
  {
    name: 'NON POST, delta 23 and 37 need the 1-byte extension (nibble 13)',
    bytes: hex('50 02 0001 d1 0a 1e d2 18 03e8'),
    message: msg({
      type: 1,
      code: Code.POST,
      messageId: 1,
      options: [opt(OptionNumber.BLOCK2, hex('1e')), opt(OptionNumber.SIZE1, hex('03e8'))],
    }),
  },
  {
    name: 'ACK 2.04 with EnOS options 2100 (delta 2100: nibble 14, ext 0x0727) and 2102',
    bytes: hex('62 44 beef a1b2 e8 0727 2f746f7069632f78 22 7b7d'),
    message: msg({
      type: 2,
      code: Code.CHANGED,
      messageId: 0xbeef,
      token: hex('a1b2'),
      options: [
        opt(OptionNumber.COMMAND_TOPIC, '/topic/x'),
        opt(OptionNumber.COMMAND_PAYLOAD, '{}'),
      ],
    }),
  },
  {
    name: 'option length 13 (nibble 13, ext 0) and 300 (nibble 14, ext 0x001f)',
    bytes: Buffer.concat([hex('40 01 0002 bd 00'), PATH_13, hex('de 0b 001f'), PROXY_URI_300]),
    message: msg({
      code: Code.GET,
      messageId: 2,
      options: [opt(OptionNumber.URI_PATH, PATH_13), opt(OptionNumber.PROXY_URI, PROXY_URI_300)],
    }),
  },
  {
    name: 'empty ACK',
    bytes: hex('60 00 1234'),
    message: msg({ type: 2, code: Code.EMPTY, messageId: 0x1234 }),
  },
  {
    name: 'RST',
    bytes: hex('70 00 1234'),
    message: msg({ type: 3, code: Code.EMPTY, messageId: 0x1234 }),
  },
  {
    name: 'CON Empty (CoAP ping)',
    bytes: hex('40 00 ffff'),
    message: msg({ type: 0, code: Code.EMPTY, messageId: 0xffff }),
  },
  {
    name: 'NON 4.04 with 8-byte token and a payload, no options',
    bytes: hex('58 84 0000 0102030405060708 ff 6e6f'),
    message: msg({
      type: 1,
      code: Code.NOT_FOUND,
      token: hex('0102030405060708'),
      payload: Buffer.from('no'),
    }),
  },
];

describe('coap codec: byte-exact vectors', () => {
  for (const v of VECTORS) {
    test(`decode: ${v.name}`, () => {
      assert.deepEqual(decode(v.bytes), v.message);
    });
    test(`encode: ${v.name}`, () => {
      const out = encode(v.message);
      assert.equal(out.toString('hex'), v.bytes.toString('hex'));
      assert.equal(encodedLength(v.message), v.bytes.length);
    });
  }

  test('decode returns zero-copy views into the datagram', () => {
    const v = VECTORS[1]!;
    const wire = Buffer.from(v.bytes);
    const m = decode(wire);
    assert.equal(m.token.buffer, wire.buffer);
    assert.equal(m.token.byteOffset, wire.byteOffset + 4);
    assert.equal(m.payload.buffer, wire.buffer);
    assert.equal(m.payload.byteOffset, wire.byteOffset + 7);
    wire[wire.length - 1] = 0x44; // 'C' → 'D' shows through the view
    assert.equal(m.payload.toString(), '22.3 D');
  });

  test('decode works on a view with a non-zero byteOffset', () => {
    const v = VECTORS[0]!;
    const backing = Buffer.concat([hex('deadbeef'), v.bytes, hex('cafe')]);
    const view = backing.subarray(4, 4 + v.bytes.length);
    assert.deepEqual(decode(view), v.message);
  });

  test('repeated options keep their order on decode', () => {
    const wire = hex('40 01 0003 b1 61 01 62 01 63 41 78 01 79');
    const m = decode(wire);
    assert.deepEqual(
      m.options.map((o) => [o.number, o.value.toString()]),
      [
        [11, 'a'],
        [11, 'b'],
        [11, 'c'],
        [15, 'x'],
        [15, 'y'],
      ],
    );
  });

  test('encode sorts options stably by number and does not modify the message', () => {
    const options = [
      opt(15, 'q1'),
      opt(11, 'p1'),
      opt(60, hex('04')),
      opt(15, 'q2'),
      opt(11, 'p2'),
      opt(12, EMPTY),
      opt(11, 'p3'),
    ];
    const before = options.map((o) => o.number);
    const m = msg({ code: Code.POST, options });
    const out = encode(m);
    assert.deepEqual(
      options.map((o) => o.number),
      before,
    );
    assert.equal(encodedLength(m), out.length);
    assert.deepEqual(
      decode(out).options.map((o) => `${o.number}:${o.value.toString('hex')}`),
      ['11:7031', '11:7032', '11:7033', '12:', '15:7131', '15:7132', '60:04'],
    );
  });

  test('extended delta and length boundaries 12/13/268/269 and the largest values', () => {
    // [option number or length, expected nibble, expected extension bytes]
    const cases: [number, number, string][] = [
      [12, 12, ''],
      [13, 13, '00'],
      [268, 13, 'ff'],
      [269, 14, '0000'],
      [65535, 14, 'fef2'],
    ];
    for (const [n, nib, ext] of cases) {
      const out = encode(msg({ code: Code.GET, options: [opt(n, EMPTY)] }));
      assert.equal(
        out.subarray(4).toString('hex'),
        ((nib << 4) | 0).toString(16) + ext,
        `delta ${n}`,
      );
      assert.equal(decode(out).options[0]?.number, n);
    }
    for (const [n, nib, ext] of [...cases.slice(0, 4), [65804, 14, 'ffff'] as const]) {
      const value = Buffer.alloc(n, 0x5a);
      const out = encode(msg({ code: Code.GET, options: [opt(1, value)] }));
      assert.equal(
        out.subarray(4, 5 + ext.length / 2).toString('hex'),
        (0x10 | nib).toString(16) + ext,
      );
      assert.equal(out.length, 5 + ext.length / 2 + n);
      assert.ok(decode(out).options[0]?.value.equals(value), `length ${n}`);
    }
  });
});

// ---------------------------------------------------------------------------------------
// Format errors and their protocol reactions
// ---------------------------------------------------------------------------------------

describe('coap codec: format errors', () => {
  const cases: [CoapErrorCode, string, string][] = [
    ['COAP_TRUNCATED_HEADER', 'zero bytes', ''],
    ['COAP_TRUNCATED_HEADER', 'three bytes', '40 01 00'],
    ['COAP_BAD_VERSION', 'version 0', '00 01 1234'],
    ['COAP_BAD_VERSION', 'version 2', '80 01 1234'],
    ['COAP_BAD_VERSION', 'version 3 with a payload', 'c1 01 1234 aa ff 00'],
    ['COAP_BAD_TOKEN_LENGTH', 'TKL 9', '49 01 1234 010203040506070809'],
    ['COAP_BAD_TOKEN_LENGTH', 'TKL 15', '4f 01 1234'],
    ['COAP_TRUNCATED_TOKEN', 'TKL 8 with 3 bytes', '48 01 1234 010203'],
    ['COAP_RESERVED_OPTION_NIBBLE', 'delta 15, length 0', '40 01 1234 f0'],
    ['COAP_RESERVED_OPTION_NIBBLE', 'delta 15, length 1', '40 01 1234 f1 00'],
    ['COAP_RESERVED_OPTION_NIBBLE', 'length 15', '40 01 1234 0f'],
    ['COAP_RESERVED_OPTION_NIBBLE', 'length 15 after a valid option', '40 01 1234 b1 61 0f'],
    ['COAP_TRUNCATED_OPTION', 'missing 1-byte delta extension', '40 01 1234 d0'],
    ['COAP_TRUNCATED_OPTION', 'half a 2-byte delta extension', '40 01 1234 e0 00'],
    ['COAP_TRUNCATED_OPTION', 'half a 2-byte delta extension, high byte ff', '40 01 1234 e0 ff'],
    ['COAP_TRUNCATED_OPTION', 'missing 1-byte length extension', '40 01 1234 0d'],
    ['COAP_TRUNCATED_OPTION', 'half a 2-byte length extension', '40 01 1234 de 00 01'],
    ['COAP_TRUNCATED_OPTION', 'value shorter than its length', '40 01 1234 b5 6162'],
    ['COAP_TRUNCATED_OPTION', 'length 269 with 1 byte', '40 01 1234 0e 0000 61'],
    ['COAP_OPTION_NUMBER_OVERFLOW', 'single delta 65804', '40 01 1234 e0 ffff'],
    ['COAP_OPTION_NUMBER_OVERFLOW', '65535 + 1', '40 01 1234 e0 fef2 10'],
    ['COAP_EMPTY_PAYLOAD_AFTER_MARKER', 'marker right after header', '40 01 1234 ff'],
    ['COAP_EMPTY_PAYLOAD_AFTER_MARKER', 'marker after token and option', '41 01 1234 aa b1 61 ff'],
    ['COAP_BAD_EMPTY_MESSAGE', '0.00 with TKL 1', '41 00 1234 aa'],
    ['COAP_BAD_EMPTY_MESSAGE', '0.00 with TKL 1 but no token byte', '41 00 1234'],
    ['COAP_BAD_EMPTY_MESSAGE', '0.00 with a trailing byte', '40 00 1234 00'],
    ['COAP_BAD_EMPTY_MESSAGE', '0.00 with marker and payload', '40 00 1234 ff 00'],
  ];

  for (const [errorCode, name, bytes] of cases) {
    test(`${errorCode}: ${name}`, () => {
      const err = decodeError(hex(bytes));
      assert.equal(err.code, errorCode);
      assert.equal(err.name, 'CoapFormatError');
    });
  }

  test('every error code is covered above', () => {
    const covered = new Set(cases.map(([c]) => c));
    assert.deepEqual([...covered].sort(), [...COAP_ERROR_CODES].sort());
  });

  test('a malformed CON is answered with RST carrying its message ID', () => {
    const err = decodeError(hex('41 01 abcd 71 b5 6162'));
    assert.equal(err.reaction, 'reset');
    assert.equal(err.type, 0);
    assert.equal(err.messageId, 0xabcd);
  });

  test('a malformed NON, ACK or RST is dropped but still reports its header', () => {
    for (const [first, type] of [
      [0x50, 1],
      [0x60, 2],
      [0x70, 3],
    ] as const) {
      const err = decodeError(Buffer.from([first, 0x45, 0x12, 0x34, 0xff]));
      assert.equal(err.code, 'COAP_EMPTY_PAYLOAD_AFTER_MARKER');
      assert.equal(err.reaction, 'drop');
      assert.equal(err.type, type);
      assert.equal(err.messageId, 0x1234);
    }
  });

  test('an unknown version or a truncated header is dropped without header fields', () => {
    for (const bytes of ['', '40', '80 01 1234', '00 00 0000']) {
      const err = decodeError(hex(bytes));
      assert.equal(err.reaction, 'drop');
      assert.equal(err.type, undefined);
      assert.equal(err.messageId, undefined);
    }
  });

  test('error messages are constant: no input bytes leak into them', () => {
    const a = decodeError(hex('40 01 1234 b5 6162'));
    const b = decodeError(hex('40 02 9999 b9 7a7a7a'));
    assert.equal(a.code, b.code);
    assert.equal(a.message, b.message);
    assert.ok(!a.message.includes('6162') && !a.message.includes('ab'));
  });

  test('instanceof works through the brand, errors are Errors with a stack', () => {
    const err = decodeError(hex('40'));
    assert.ok(err instanceof Error);
    assert.ok(err instanceof CoapFormatError);
    assert.ok(!(new Error('x') instanceof CoapFormatError));
    const notAnError: unknown = null;
    assert.ok(!(notAnError instanceof CoapFormatError));
    assert.equal(typeof err.stack, 'string');
  });

  test('decode keeps no state between calls', () => {
    const good = VECTORS[0]!.bytes;
    const first = decode(good);
    decodeError(hex('40 01 1234 b5 6162'));
    decode(VECTORS[3]!.bytes);
    assert.deepEqual(decode(good), first);
  });
});

// ---------------------------------------------------------------------------------------
// encode: programmer errors
// ---------------------------------------------------------------------------------------

describe('coap codec: encode validation', () => {
  const bad: [string, CoapMessage][] = [
    ['type 4', { ...msg({ code: 1 }), type: 4 as MessageType }],
    ['code 256', msg({ code: 256 })],
    ['code -1', msg({ code: -1 })],
    ['code 1.5', msg({ code: 1.5 })],
    ['message ID 65536', msg({ code: 1, messageId: 0x10000 })],
    ['message ID -1', msg({ code: 1, messageId: -1 })],
    ['token of 9 bytes', msg({ code: 1, token: Buffer.alloc(9) })],
    ['option number 65536', msg({ code: 1, options: [opt(65536, EMPTY)] })],
    ['option number -1', msg({ code: 1, options: [opt(-1, EMPTY)] })],
    ['option value of 65805 bytes', msg({ code: 1, options: [opt(1, Buffer.alloc(65805))] })],
    ['Empty with a token', msg({ code: 0, token: hex('01') })],
    ['Empty with an option', msg({ code: 0, options: [opt(11, 'a')] })],
    ['Empty with a payload', msg({ code: 0, payload: hex('01') })],
  ];
  for (const [name, m] of bad) {
    test(`encode and encodedLength throw RangeError: ${name}`, () => {
      assert.throws(() => encode(m), RangeError);
      assert.throws(() => encodedLength(m), RangeError);
    });
  }
});

// ---------------------------------------------------------------------------------------
// Properties (fast-check, fixed seed)
// ---------------------------------------------------------------------------------------

describe('coap codec: properties', () => {
  test('encode → decode round-trips arbitrary valid messages', () => {
    fc.assert(
      fc.property(coapMessageArb, (m) => {
        const wire = encode(m);
        assert.equal(wire.length, encodedLength(m));
        const back = decode(wire);
        assert.deepEqual(back, { ...m, options: sortedCopy(m.options) });
        assert.ok(encode(back).equals(wire));
      }),
      { seed: SEED, numRuns: 3000 },
    );
  });
  // Random and mutated datagrams: test/fuzz/coap.test.ts (time-budgeted, seed varies per run).
});

// ---------------------------------------------------------------------------------------
// Option helpers and block options
// ---------------------------------------------------------------------------------------

describe('coap options', () => {
  const request = decode(
    encode(
      msg({
        code: Code.POST,
        token: hex('a1b2'),
        options: [
          opt(OptionNumber.URI_PATH, 'topic'),
          opt(OptionNumber.URI_PATH, 'sys'),
          opt(OptionNumber.URI_PATH, 'pk'),
          opt(OptionNumber.URI_PATH, 'dk'),
          opt(OptionNumber.URI_PATH, 'thing'),
          opt(OptionNumber.URI_PATH, 'measurepoint'),
          opt(OptionNumber.URI_PATH, 'pöst'),
          opt(OptionNumber.CONTENT_FORMAT, encodeUint(ContentFormat.JSON)),
          opt(OptionNumber.URI_QUERY, 'a=1'),
          opt(OptionNumber.URI_QUERY, 'b'),
        ],
        payload: Buffer.from('{}'),
      }),
    ),
  );

  test('getOption returns the first value, getOptions all of them in order', () => {
    assert.equal(getOption(request, OptionNumber.URI_PATH)?.toString(), 'topic');
    assert.equal(getOption(request, OptionNumber.ETAG), undefined);
    assert.deepEqual(
      getOptions(request, OptionNumber.URI_QUERY).map((b) => b.toString()),
      ['a=1', 'b'],
    );
    assert.deepEqual(getOptions(request, OptionNumber.ETAG), []);
  });

  test('uriPath and uriQuery decode UTF-8', () => {
    assert.deepEqual(uriPath(request), [
      'topic',
      'sys',
      'pk',
      'dk',
      'thing',
      'measurepoint',
      'pöst',
    ]);
    assert.deepEqual(uriQuery(request), ['a=1', 'b']);
    assert.deepEqual(uriPath(decode(hex('40 01 0000'))), []);
  });

  test('uriPathStrict: ASCII, UTF-8 and over-long segments decode as uriPath; a bad byte anywhere refuses', () => {
    const withPath = (segments: Buffer[]): CoapMessage =>
      decode(
        encode(
          msg({
            code: Code.GET,
            options: segments.map((value) => opt(OptionNumber.URI_PATH, value)),
          }),
        ),
      );
    const long = Buffer.alloc(300, 0x61); // past the 255-byte limit: the general path
    const ok = withPath([Buffer.from('nothing'), Buffer.alloc(0), Buffer.from('pöst'), long]);
    assert.deepEqual(uriPathStrict(ok), ['nothing', '', 'pöst', 'a'.repeat(300)]);
    assert.deepEqual(uriPathStrict(ok), uriPath(ok));
    for (const bad of [
      Buffer.from([0x61, 0x80]), // stray continuation byte after ASCII
      Buffer.from([0x61, 0xff]),
      Buffer.concat([long, Buffer.from([0xc0, 0xaf])]), // overlong form in a long segment
      Buffer.from([0x7f, 0xed, 0xa0, 0x80]), // surrogate after ASCII
    ]) {
      assert.equal(
        uriPathStrict(withPath([Buffer.from('a'), bad])),
        undefined,
        bad.toString('hex'),
      );
    }
  });

  test('contentFormat', () => {
    assert.equal(contentFormat(request), ContentFormat.JSON);
    assert.equal(contentFormat(msg({ code: 1 })), undefined);
    assert.equal(contentFormat(msg({ code: 1, options: [opt(12, EMPTY)] })), 0);
    assert.equal(contentFormat(msg({ code: 1, options: [opt(12, hex('2d16'))] })), 11542);
    assert.equal(contentFormat(msg({ code: 1, options: [opt(12, hex('000032'))] })), undefined);
  });

  test('encodeUint is minimal big-endian, 0 is empty', () => {
    const cases: [number, string][] = [
      [0, ''],
      [1, '01'],
      [255, 'ff'],
      [256, '0100'],
      [65535, 'ffff'],
      [65536, '010000'],
      [0xffffff, 'ffffff'],
      [0x1000000, '01000000'],
      [0xffffffff, 'ffffffff'],
    ];
    for (const [n, h] of cases) {
      assert.equal(encodeUint(n).toString('hex'), h, String(n));
      assert.equal(decodeUint(hex(h)), n);
    }
    for (const n of [-1, 1.5, 2 ** 32, Number.NaN]) assert.throws(() => encodeUint(n), RangeError);
  });

  test('decodeUint accepts leading zeros and rejects more than 4 bytes', () => {
    assert.equal(decodeUint(hex('0001')), 1);
    assert.equal(decodeUint(hex('00000000')), 0);
    assert.equal(decodeUint(hex('0000000001')), undefined);
  });

  test('uint round-trip property', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => {
        const b = encodeUint(n);
        assert.ok(b.length <= 4 && (b.length === 0 || b[0] !== 0));
        assert.equal(decodeUint(b), n);
      }),
      { seed: SEED, numRuns: 2000 },
    );
  });

  test('block option vectors (RFC 7959 §2.2)', () => {
    const cases: [{ num: number; more: boolean; szx: number }, string][] = [
      [{ num: 1, more: true, szx: 6 }, '1e'],
      [{ num: 0, more: false, szx: 2 }, '02'],
      [{ num: 0, more: true, szx: 2 }, '0a'],
      [{ num: 0, more: false, szx: 0 }, ''],
      [{ num: 15, more: false, szx: 6 }, 'f6'],
      [{ num: 16, more: false, szx: 6 }, '0106'],
      [{ num: 4095, more: true, szx: 5 }, 'fffd'],
      [{ num: 4096, more: false, szx: 0 }, '010000'],
      [{ num: MAX_BLOCK_NUM, more: true, szx: 6 }, 'fffffe'],
    ];
    for (const [block, h] of cases) {
      assert.equal(encodeBlock(block).toString('hex'), h, JSON.stringify(block));
      assert.deepEqual(decodeBlock(hex(h)), { ...block, size: 1 << (block.szx + 4) });
    }
    assert.deepEqual(decodeBlock(hex('1e')), { num: 1, more: true, szx: 6, size: 1024 });
    assert.deepEqual(decodeBlock(hex('000002')), { num: 0, more: false, szx: 2, size: 64 });
  });

  test('block option: reserved SZX 7 and oversize values are invalid', () => {
    assert.equal(decodeBlock(hex('07')), undefined);
    assert.equal(decodeBlock(hex('1f')), undefined);
    assert.equal(decodeBlock(hex('00000006')), undefined);
    assert.throws(() => encodeBlock({ num: 0, more: false, szx: 7 }), RangeError);
    assert.throws(() => encodeBlock({ num: MAX_BLOCK_NUM + 1, more: false, szx: 0 }), RangeError);
    assert.throws(() => encodeBlock({ num: -1, more: false, szx: 0 }), RangeError);
    assert.throws(() => encodeBlock({ num: 0.5, more: false, szx: 0 }), RangeError);
  });

  test('block option round-trip property', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: MAX_BLOCK_NUM }),
        fc.boolean(),
        fc.integer({ min: 0, max: 6 }),
        (num, more, szx) => {
          const b = encodeBlock({ num, more, szx });
          assert.ok(b.length <= 3);
          assert.deepEqual(decodeBlock(b), { num, more, szx, size: szxToBlockSize(szx) });
        },
      ),
      { seed: SEED, numRuns: 2000 },
    );
  });

  test('blockSizeToSzx and szxToBlockSize', () => {
    for (let szx = 0; szx <= 6; szx++) {
      assert.equal(szxToBlockSize(szx), 16 << szx);
      assert.equal(blockSizeToSzx(16 << szx), szx);
    }
    for (const size of [0, 8, 100, 2048]) assert.throws(() => blockSizeToSzx(size), RangeError);
    for (const szx of [-1, 7, 1.5]) assert.throws(() => szxToBlockSize(szx), RangeError);
  });
});

// ---------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------

describe('coap constants', () => {
  test('code helpers', () => {
    assert.equal(code(2, 5), 0x45);
    assert.equal(codeClass(0x45), 2);
    assert.equal(codeDetail(0x45), 5);
    assert.equal(formatCode(0), '0.00');
    assert.equal(formatCode(0xff), '7.31');
    assert.throws(() => code(8, 0), RangeError);
    assert.throws(() => code(0, 32), RangeError);
    assert.throws(() => code(-1, 0), RangeError);
    assert.ok(isEmptyCode(Code.EMPTY) && !isEmptyCode(Code.GET));
    assert.ok(isRequestCode(Code.GET) && isRequestCode(Code.IPATCH) && !isRequestCode(0));
    assert.ok(!isRequestCode(Code.CONTENT));
    assert.ok(isResponseCode(Code.CONTENT) && isResponseCode(Code.GATEWAY_TIMEOUT));
    assert.ok(!isResponseCode(Code.POST) && !isResponseCode(code(1, 0)));
    for (const cls of [1, 6, 7]) assert.ok(isReservedCodeClass(code(cls, 3)));
    for (const cls of [0, 2, 4, 5]) assert.ok(!isReservedCodeClass(code(cls, 3)));
  });

  test('named codes format as their c.dd', () => {
    const expected: Record<keyof typeof Code, string> = {
      EMPTY: '0.00',
      GET: '0.01',
      POST: '0.02',
      PUT: '0.03',
      DELETE: '0.04',
      FETCH: '0.05',
      PATCH: '0.06',
      IPATCH: '0.07',
      CREATED: '2.01',
      DELETED: '2.02',
      VALID: '2.03',
      CHANGED: '2.04',
      CONTENT: '2.05',
      CONTINUE: '2.31',
      BAD_REQUEST: '4.00',
      UNAUTHORIZED: '4.01',
      BAD_OPTION: '4.02',
      FORBIDDEN: '4.03',
      NOT_FOUND: '4.04',
      METHOD_NOT_ALLOWED: '4.05',
      NOT_ACCEPTABLE: '4.06',
      REQUEST_ENTITY_INCOMPLETE: '4.08',
      PRECONDITION_FAILED: '4.12',
      REQUEST_ENTITY_TOO_LARGE: '4.13',
      UNSUPPORTED_CONTENT_FORMAT: '4.15',
      TOO_MANY_REQUESTS: '4.29',
      INTERNAL_SERVER_ERROR: '5.00',
      NOT_IMPLEMENTED: '5.01',
      BAD_GATEWAY: '5.02',
      SERVICE_UNAVAILABLE: '5.03',
      GATEWAY_TIMEOUT: '5.04',
    };
    for (const [name, value] of Object.entries(Code)) {
      assert.equal(formatCode(value), expected[name as keyof typeof Code], name);
    }
  });

  test('option numbers and their properties (RFC 7252 §5.4.6, §12.2)', () => {
    assert.deepEqual(
      { ...OptionNumber },
      {
        IF_MATCH: 1,
        URI_HOST: 3,
        ETAG: 4,
        IF_NONE_MATCH: 5,
        OBSERVE: 6,
        URI_PORT: 7,
        LOCATION_PATH: 8,
        URI_PATH: 11,
        CONTENT_FORMAT: 12,
        MAX_AGE: 14,
        URI_QUERY: 15,
        ACCEPT: 17,
        LOCATION_QUERY: 20,
        BLOCK2: 23,
        BLOCK1: 27,
        SIZE2: 28,
        PROXY_URI: 35,
        PROXY_SCHEME: 39,
        SIZE1: 60,
        COMMAND_TOPIC: 2100,
        COMMAND_PAYLOAD: 2102,
      },
    );
    assert.ok(isCritical(OptionNumber.URI_PATH) && isCritical(OptionNumber.BLOCK2));
    assert.ok(!isCritical(OptionNumber.CONTENT_FORMAT));
    assert.ok(!isCritical(OptionNumber.COMMAND_TOPIC) && !isCritical(OptionNumber.COMMAND_PAYLOAD));
    assert.ok(isUnsafe(OptionNumber.URI_HOST) && !isUnsafe(OptionNumber.ETAG));
    assert.ok(isNoCacheKey(OptionNumber.SIZE1) && !isNoCacheKey(OptionNumber.URI_PATH));
    assert.deepEqual({ ...ContentFormat }, { TEXT_PLAIN: 0, OCTET_STREAM: 42, JSON: 50, CBOR: 60 });
  });

  test('transmission parameters (RFC 7252 §4.8, §4.8.2)', () => {
    assert.equal(ACK_TIMEOUT_MS, 2000);
    assert.equal(ACK_RANDOM_FACTOR, 1.5);
    assert.equal(MAX_RETRANSMIT, 4);
    assert.equal(NSTART, 1);
    assert.equal(DEFAULT_LEISURE_MS, 5000);
    assert.equal(PROBING_RATE_BYTES_PER_S, 1);
    assert.equal(MAX_TRANSMIT_SPAN_MS, 45_000);
    assert.equal(MAX_TRANSMIT_WAIT_MS, 93_000);
    assert.equal(MAX_LATENCY_MS, 100_000);
    assert.equal(PROCESSING_DELAY_MS, 2000);
    assert.equal(MAX_RTT_MS, 202_000);
    assert.equal(EXCHANGE_LIFETIME_MS, 247_000);
    assert.equal(NON_LIFETIME_MS, 145_000);
  });
});
