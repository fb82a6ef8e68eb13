import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  derivePsk,
  EnosError,
  PSK_LENGTH,
  pskShellLiteral,
  pskUsableOnCommandLine,
} from '../../../src/enos/index.js';

void describe('derivePsk', () => {
  void it('matches the spec vectors', () => {
    assert.equal(
      derivePsk('abcdefg').toString('hex').toUpperCase(),
      'F5B79B5FB0803061152A44F92B37E23C',
    );
    assert.equal(
      derivePsk('zPwChiLh0EaifR809D5Rc6LDIC6A').toString('hex').toUpperCase(),
      'C14429BDE9E22995162F199D808297A5',
    );
  });

  void it('returns a 16-byte buffer that owns its memory', () => {
    const key = derivePsk('abcdefg');
    assert.equal(key.length, PSK_LENGTH);
    assert.equal(key.byteOffset, 0);
    assert.equal(key.buffer.byteLength, PSK_LENGTH, 'not a view into the digest or a pool');
    key.fill(0);
    assert.equal(derivePsk('abcdefg').toString('hex'), 'f5b79b5fb0803061152a44f92b37e23c');
    // Its own allocation: changing one derived key never changes another.
    const a = derivePsk('x');
    const b = derivePsk('x');
    a[0] = (a[0] ?? 0) ^ 0xff;
    assert.notDeepEqual(a, b);
  });

  void it('hashes the UTF-8 bytes of the secret', () => {
    const viaBytes = createHash('sha256')
      .update(Buffer.from([0xc3, 0xbc]))
      .digest();
    assert.equal(derivePsk('ü').toString('hex'), viaBytes.subarray(8, 24).toString('hex'));
  });

  void it('refuses an empty secret or one with a lone surrogate, without echoing it', () => {
    for (const secret of ['', 'abc\ud800def']) {
      assert.throws(
        () => derivePsk(secret),
        (e: unknown) =>
          e instanceof EnosError &&
          e.code === 'ENOS_SECRET' &&
          (secret === '' || !e.message.includes('abc')),
      );
    }
  });
});

void describe('pskShellLiteral', () => {
  void it("renders every byte as \\xNN inside $'...'", () => {
    assert.equal(
      pskShellLiteral(derivePsk('abcdefg')),
      "$'\\xf5\\xb7\\x9b\\x5f\\xb0\\x80\\x30\\x61\\x15\\x2a\\x44\\xf9\\x2b\\x37\\xe2\\x3c'",
    );
    assert.equal(pskShellLiteral(Buffer.from([0x27, 0x5c, 0x0a])), "$'\\x27\\x5c\\x0a'");
  });

  void it('gives back the same bytes through bash', () => {
    const key = derivePsk('zPwChiLh0EaifR809D5Rc6LDIC6A');
    const out = execFileSync('bash', [
      '-c',
      `printf %s ${pskShellLiteral(key)} | od -An -tx1 | tr -d ' \\n'`,
    ]);
    assert.equal(out.toString(), key.toString('hex'));
  });

  void it('refuses a key with a 0x00 byte', () => {
    const key = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    assert.equal(pskUsableOnCommandLine(key), false);
    assert.equal(pskUsableOnCommandLine(Buffer.from('1100', 'hex')), false);
    assert.equal(pskUsableOnCommandLine(derivePsk('abcdefg')), true);
    assert.throws(
      () => pskShellLiteral(key),
      (e: unknown) => e instanceof EnosError && e.code === 'ENOS_PSK_COMMAND_LINE',
    );
  });
});
