import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  EnosError,
  formatIdentity,
  identityErrorCode,
  isValidKey,
  parseIdentity,
  validateKey,
  MAX_IDENTITY_BYTES,
  type DeviceIdentity,
  type IdentityRejectReason,
} from '../../../src/enos/index.js';

function accepted(raw: Buffer | string): DeviceIdentity {
  const r = parseIdentity(raw);
  assert.ok(r.ok, `expected ${JSON.stringify(String(raw))} to be accepted`);
  return r.identity;
}

function rejected(raw: Buffer | string): IdentityRejectReason {
  const r = parseIdentity(raw);
  assert.ok(!r.ok, `expected ${JSON.stringify(String(raw))} to be rejected`);
  return r.reason;
}

void describe('parseIdentity: accepted', () => {
  void it('parses the spec samples (secureMode 2 and 3)', () => {
    assert.deepEqual(accepted('MuGsF6W4,15bBZlRknc,2,3600'), {
      productKey: 'MuGsF6W4',
      deviceKey: '15bBZlRknc',
      secureMode: 2,
      lifetime: 3600,
    });
    assert.deepEqual(accepted(Buffer.from('MuGsF6W4,15bBZlRknc,3,3600')), {
      productKey: 'MuGsF6W4',
      deviceKey: '15bBZlRknc',
      secureMode: 3,
      lifetime: 3600,
    });
  });

  void it('accepts the lifetime bounds 30 and 86400', () => {
    assert.equal(accepted('a,b,2,30').lifetime, 30);
    assert.equal(accepted('a,b,2,86400').lifetime, 86400);
    assert.equal(accepted('a,b,3,99').lifetime, 99);
  });

  void it('accepts an IMEI as deviceKey and punctuation other than , / + #', () => {
    assert.equal(accepted('pk,861234567890123,2,60').deviceKey, '861234567890123');
    assert.equal(accepted('p-k_1.x,d:k@e=1&2,2,60').deviceKey, 'd:k@e=1&2');
  });

  void it('accepts unicode keys (UTF-8), from bytes and from strings', () => {
    const id = accepted(Buffer.from('Produkt-ü,Gerät-€-😀,2,120', 'utf8'));
    assert.equal(id.productKey, 'Produkt-ü');
    assert.equal(id.deviceKey, 'Gerät-€-😀');
    assert.equal(accepted('设备,传感器,3,60').deviceKey, '传感器');
  });

  void it('accepts exactly MAX_IDENTITY_BYTES bytes', () => {
    const pk = 'p'.repeat(128);
    const dk = 'd'.repeat(MAX_IDENTITY_BYTES - 128 - ',,2,60'.length);
    const text = `${pk},${dk},2,60`;
    assert.equal(Buffer.byteLength(text), MAX_IDENTITY_BYTES);
    assert.equal(accepted(text).deviceKey, dk);
  });
});

void describe('parseIdentity: rejected', () => {
  const cases: [string, string | Buffer, IdentityRejectReason][] = [
    ['lifetime below 30', 'a,b,2,29', 'bad-lifetime'],
    ['lifetime above 86400', 'a,b,2,86401', 'bad-lifetime'],
    ['lifetime 0', 'a,b,2,0', 'bad-lifetime'],
    ['lifetime with leading zero', 'a,b,2,060', 'bad-lifetime'],
    ['lifetime with plus sign', 'a,b,2,+60', 'bad-lifetime'],
    ['lifetime negative', 'a,b,2,-60', 'bad-lifetime'],
    ['lifetime with fraction', 'a,b,2,60.0', 'bad-lifetime'],
    ['lifetime with exponent', 'a,b,2,6e1', 'bad-lifetime'],
    ['lifetime hex', 'a,b,2,0x3c', 'bad-lifetime'],
    ['lifetime with trailing space', 'a,b,2,60 ', 'bad-lifetime'],
    ['lifetime with leading space', 'a,b,2, 60', 'bad-lifetime'],
    ['lifetime huge', 'a,b,2,999999999999', 'bad-lifetime'],
    ['lifetime empty', 'a,b,2,', 'bad-lifetime'],
    ['lifetime full-width digits', 'a,b,2,６０', 'bad-lifetime'],
    ['empty deviceKey', 'a,,2,60', 'empty-key'],
    ['empty productKey', ',b,2,60', 'empty-key'],
    ['secureMode 4', 'a,b,4,60', 'bad-mode'],
    ['secureMode 1', 'a,b,1,60', 'bad-mode'],
    ['secureMode 02', 'a,b,02,60', 'bad-mode'],
    ['secureMode +2', 'a,b,+2,60', 'bad-mode'],
    ['secureMode with space', 'a,b, 2,60', 'bad-mode'],
    ['secureMode empty', 'a,b,,60', 'bad-mode'],
    ['five fields', 'a,b,2,60,x', 'field-count'],
    ['three fields', 'a,b,2', 'field-count'],
    ['one field', 'abc', 'field-count'],
    ['empty identity', '', 'field-count'],
    ['empty identity bytes', Buffer.alloc(0), 'field-count'],
    ['trailing comma', 'a,b,2,60,', 'field-count'],
    ['leading space in productKey', ' a,b,2,60', 'bad-character'],
    ['trailing space in deviceKey', 'a,b ,2,60', 'bad-character'],
    ['inner space', 'a,b c,2,60', 'bad-character'],
    ['tab', 'a\t,b,2,60', 'bad-character'],
    ['NUL', 'a,b\u0000,2,60', 'bad-character'],
    ['newline', 'a,b\n,2,60', 'bad-character'],
    ['DEL', 'a\u007f,b,2,60', 'bad-character'],
    ['C1 NEL', 'a,b\u0085,2,60', 'bad-character'],
    ['C1 U+009F', 'a,\u009fb,2,60', 'bad-character'],
    ['no-break space', 'a\u00a0,b,2,60', 'bad-character'],
    ['line separator', 'a,b\u2028,2,60', 'bad-character'],
    ['BOM in bytes', Buffer.from([0xef, 0xbb, 0xbf, ...Buffer.from('a,b,2,60')]), 'bad-character'],
    ['BOM in string', '\ufeffa,b,2,60', 'bad-character'],
    ['MQTT wildcard +', 'a,+,2,60', 'bad-character'],
    ['MQTT wildcard #', '#,b,2,60', 'bad-character'],
    ['MQTT level separator', 'a,b/c,2,60', 'bad-character'],
    [
      'truncated UTF-8',
      Buffer.from([0x61, 0x2c, 0x62, 0xc3, 0x2c, 0x32, 0x2c, 0x36, 0x30]),
      'not-utf8',
    ],
    [
      'overlong UTF-8 for "/"',
      Buffer.from([0x61, 0x2c, 0xc0, 0xaf, 0x2c, 0x32, 0x2c, 0x36, 0x30]),
      'not-utf8',
    ],
    [
      'UTF-8 encoded surrogate',
      Buffer.from([0x61, 0x2c, 0xed, 0xa0, 0x80, 0x2c, 0x32, 0x2c, 0x36, 0x30]),
      'not-utf8',
    ],
    ['byte 0xff', Buffer.from([0xff, 0x2c, 0x62, 0x2c, 0x32, 0x2c, 0x36, 0x30]), 'not-utf8'],
    ['lone surrogate in a string', 'a\ud800,b,2,60', 'not-utf8'],
    [
      'too long (257 bytes)',
      `${'p'.repeat(128)},${'d'.repeat(MAX_IDENTITY_BYTES - 128 - 6 + 1)},2,60`,
      'too-long',
    ],
    ['too long as bytes', Buffer.alloc(MAX_IDENTITY_BYTES + 1, 0x61), 'too-long'],
    ['too long: 64 KiB', Buffer.alloc(65535, 0x2c), 'too-long'],
    [
      'too long by UTF-8 bytes, short in UTF-16',
      `${'ü'.repeat(100)},${'€'.repeat(30)},2,60`,
      'too-long',
    ],
    ['key longer than 128 bytes', `${'p'.repeat(129)},d,2,60`, 'too-long'],
  ];
  for (const [name, raw, reason] of cases) {
    void it(`${name} → ${reason}`, () => {
      assert.equal(rejected(raw), reason);
      if (typeof raw === 'string' && !/[\ud800-\udfff]/.test(raw)) {
        assert.equal(rejected(Buffer.from(raw, 'utf8')), reason, 'same answer for the bytes');
      }
    });
  }
});

void describe('validateKey', () => {
  void it('applies the identity key rules', () => {
    assert.equal(validateKey('abc'), undefined);
    assert.equal(validateKey(''), 'empty-key');
    assert.equal(validateKey('a,b'), 'bad-character');
    assert.equal(validateKey('a b'), 'bad-character');
    assert.equal(validateKey('a\ud800'), 'not-utf8');
    assert.equal(validateKey('x'.repeat(128)), undefined);
    assert.equal(validateKey('x'.repeat(129)), 'too-long');
    assert.equal(validateKey('ü'.repeat(65)), 'too-long');
    // three-byte characters around the length below which bytes are not counted
    assert.equal(validateKey('€'.repeat(42)), undefined);
    assert.equal(validateKey('€'.repeat(43)), 'too-long');
    assert.equal(validateKey('😀'.repeat(32)), undefined);
    assert.equal(validateKey('😀'.repeat(33)), 'too-long');
    assert.equal(isValidKey('😀'), true);
    assert.equal(isValidKey('+'), false);
  });

  void it('judges every character of U+0000–U+00FF as the key rules say', () => {
    // controls (C0, DEL, C1), white space (space, NEL, NBSP) and , / + # are refused
    const refused = (c: number): boolean =>
      c <= 0x20 || (c >= 0x7f && c <= 0xa0) || [0x2c, 0x2f, 0x2b, 0x23].includes(c);
    for (let c = 0; c <= 0xff; c++) {
      const key = `a${String.fromCharCode(c)}b`;
      assert.equal(
        validateKey(key),
        refused(c) ? 'bad-character' : undefined,
        `U+${c.toString(16)}`,
      );
    }
  });

  void it('checks a printable ASCII key without a regular expression', () => {
    // the common key, checked per request for every Uri-Path segment (bench/history/sessions.md,
    // "The floors measured")
    const proto = RegExp.prototype as { test: (s: string) => boolean };
    const test = proto.test;
    let calls = 0;
    proto.test = function (this: RegExp, s: string) {
      calls++;
      return test.call(this, s);
    };
    try {
      assert.equal(validateKey('benchPK'), undefined);
      assert.equal(validateKey('device-0001_x.y~z'), undefined);
      assert.equal(validateKey('x'.repeat(128)), undefined);
    } finally {
      proto.test = test;
    }
    assert.equal(calls, 0);
  });
});

void describe('identityErrorCode', () => {
  void it('maps every reason to an EnosError code', () => {
    assert.equal(identityErrorCode('bad-mode'), 'ENOS_IDENTITY_MODE');
    assert.equal(identityErrorCode('bad-lifetime'), 'ENOS_IDENTITY_LIFETIME');
    assert.equal(identityErrorCode('empty-key'), 'ENOS_IDENTITY_KEY');
    assert.equal(identityErrorCode('bad-character'), 'ENOS_IDENTITY_KEY');
    assert.equal(identityErrorCode('field-count'), 'ENOS_IDENTITY_FORMAT');
    assert.equal(identityErrorCode('not-utf8'), 'ENOS_IDENTITY_FORMAT');
    assert.equal(identityErrorCode('too-long'), 'ENOS_IDENTITY_FORMAT');
  });
});

void describe('formatIdentity', () => {
  void it('writes the canonical form', () => {
    assert.equal(
      formatIdentity({
        productKey: 'MuGsF6W4',
        deviceKey: '15bBZlRknc',
        secureMode: 3,
        lifetime: 3600,
      }),
      'MuGsF6W4,15bBZlRknc,3,3600',
    );
  });

  void it('throws EnosError with a stable code for values that break a rule', () => {
    const base: DeviceIdentity = { productKey: 'a', deviceKey: 'b', secureMode: 2, lifetime: 60 };
    const bad: [Record<string, unknown>, string][] = [
      [{ productKey: '' }, 'ENOS_IDENTITY_KEY'],
      [{ deviceKey: 'x,y' }, 'ENOS_IDENTITY_KEY'],
      [{ deviceKey: 'x'.repeat(129) }, 'ENOS_IDENTITY_FORMAT'],
      [{ secureMode: 4 }, 'ENOS_IDENTITY_MODE'],
      [{ lifetime: 29 }, 'ENOS_IDENTITY_LIFETIME'],
      [{ lifetime: 86401 }, 'ENOS_IDENTITY_LIFETIME'],
      [{ lifetime: 60.5 }, 'ENOS_IDENTITY_LIFETIME'],
      [{ productKey: 'p'.repeat(128), deviceKey: 'd'.repeat(128) }, 'ENOS_IDENTITY_FORMAT'],
    ];
    for (const [patch, code] of bad) {
      const id: DeviceIdentity = { ...base, ...patch };
      assert.throws(
        () => formatIdentity(id),
        (e: unknown) => e instanceof EnosError && e.code === code,
        `${JSON.stringify(patch).slice(0, 60)} → ${code}`,
      );
    }
  });
});

const keyChar = fc.constantFrom('a', 'Z', '0', '9', '-', '_', '.', ':', 'ü', '€', '😀');
const validKey = fc.array(keyChar, { minLength: 1, maxLength: 40 }).map((a) => a.join(''));
const validIdentity = fc.record({
  productKey: validKey,
  deviceKey: validKey,
  secureMode: fc.constantFrom(2 as const, 3 as const),
  lifetime: fc.integer({ min: 30, max: 86400 }),
});

void describe('parseIdentity properties', () => {
  void it('never throws for arbitrary bytes, and anything accepted re-formats to the same text', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const buf = Buffer.from(bytes);
        const r = parseIdentity(buf);
        if (r.ok) assert.equal(formatIdentity(r.identity), buf.toString('utf8'));
      }),
      { numRuns: 5000 },
    );
  });

  void it('never throws for arbitrary strings, lone surrogates included', () => {
    const anyUnit = fc.integer({ min: 0, max: 0xffff }).map((n) => String.fromCharCode(n));
    fc.assert(
      fc.property(fc.string({ unit: anyUnit, maxLength: 300 }), (s) => {
        const r = parseIdentity(s);
        if (r.ok) assert.equal(formatIdentity(r.identity), s);
      }),
      { numRuns: 3000 },
    );
  });

  void it('is canonical on near-valid input: accepted text equals formatIdentity of the result', () => {
    const piece = fc.constantFrom(
      'a',
      'b',
      ',',
      ' ',
      '0',
      '2',
      '3',
      '6',
      '+',
      '\u0000',
      'ü',
      '\u0085',
    );
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 14 }), (parts) => {
        const s = parts.join('');
        const r = parseIdentity(s);
        if (r.ok) assert.equal(formatIdentity(r.identity), s);
        const rb = parseIdentity(Buffer.from(s, 'utf8'));
        assert.deepEqual(rb, r);
      }),
      { numRuns: 5000 },
    );
  });

  void it('round-trips formatIdentity → parseIdentity', () => {
    fc.assert(
      fc.property(validIdentity, (id) => {
        const expected = { ok: true, identity: { ...id } };
        assert.deepEqual(parseIdentity(formatIdentity(id)), expected);
        assert.deepEqual(parseIdentity(Buffer.from(formatIdentity(id))), expected);
      }),
    );
  });
});
