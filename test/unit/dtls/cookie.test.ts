import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';

import { COOKIE_LENGTH, CookieJar } from '../../../src/dtls/cookie.js';
import { clientHelloBody, parseClientHello } from '../../../src/dtls/handshake.js';

const SEED = 0xc00c;
const LIFETIME = 60_000;

function input(random: number, suites: readonly number[] = [0xc0a8]): readonly [Buffer, Buffer] {
  return parseClientHello(
    clientHelloBody({
      random: Buffer.alloc(32, random),
      cookie: Buffer.alloc(0),
      cipherSuites: suites,
      extensions: undefined,
    }),
  ).cookieInput;
}

class Clock {
  t = 1_700_000_000_000;
  readonly now = (): number => this.t;
}

describe('CookieJar', () => {
  test(`cookies are ${COOKIE_LENGTH} bytes; same inputs → same cookie`, () => {
    const jar = new CookieJar(LIFETIME);
    const a = jar.make('192.0.2.1', 5684, input(1));
    assert.equal(a.length, COOKIE_LENGTH);
    assert.ok(jar.make('192.0.2.1', 5684, input(1)).equals(a));
    assert.ok(jar.verify(a, '192.0.2.1', 5684, input(1)));
  });

  test('different address, port, random or suites → different cookie, and no verify', () => {
    const jar = new CookieJar(LIFETIME);
    const base = jar.make('192.0.2.1', 5684, input(1));
    const variants: [string, number, readonly [Buffer, Buffer]][] = [
      ['192.0.2.2', 5684, input(1)],
      ['2001:db8::1', 5684, input(1)],
      ['192.0.2.1', 5685, input(1)],
      ['192.0.2.1', 5684, input(2)],
      ['192.0.2.1', 5684, input(1, [0xc0a8, 0x00ae])],
    ];
    for (const [addr, port, inp] of variants) {
      assert.ok(!jar.make(addr, port, inp).equals(base), `${addr} ${port}`);
      assert.equal(jar.verify(base, addr, port, inp), false, `${addr} ${port}`);
    }
  });

  test('the cookie does not depend on the cookie field or the extensions', () => {
    const jar = new CookieJar(LIFETIME);
    const withExt = parseClientHello(
      clientHelloBody({
        random: Buffer.alloc(32, 1),
        cookie: Buffer.alloc(16, 0xee),
        cipherSuites: [0xc0a8],
        extensions: [[23, Buffer.alloc(0)]],
      }),
    ).cookieInput;
    assert.ok(jar.make('192.0.2.1', 1, withExt).equals(jar.make('192.0.2.1', 1, input(1))));
  });

  test('two jars (two secrets) make different cookies', () => {
    const a = new CookieJar(LIFETIME).make('192.0.2.1', 1, input(1));
    const b = new CookieJar(LIFETIME).make('192.0.2.1', 1, input(1));
    assert.ok(!a.equals(b));
  });

  test('rotation: valid after one rotation, invalid after two', () => {
    const clock = new Clock();
    const jar = new CookieJar(LIFETIME, clock.now);
    const cookie = jar.make('192.0.2.1', 5684, input(3));
    clock.t += LIFETIME - 1;
    assert.ok(jar.verify(cookie, '192.0.2.1', 5684, input(3)), 'before any rotation');
    clock.t += 1; // first rotation happens on this call
    assert.ok(jar.verify(cookie, '192.0.2.1', 5684, input(3)), 'after one rotation');
    // a new cookie is made with the new secret
    assert.ok(!jar.make('192.0.2.1', 5684, input(3)).equals(cookie));
    clock.t += LIFETIME - 1;
    assert.ok(jar.verify(cookie, '192.0.2.1', 5684, input(3)), 'still the previous secret');
    clock.t += 1; // second rotation
    assert.equal(jar.verify(cookie, '192.0.2.1', 5684, input(3)), false, 'after two rotations');
  });

  test('rotation: after two lifetimes without any traffic the old secret is gone too', () => {
    const clock = new Clock();
    const jar = new CookieJar(LIFETIME, clock.now);
    const cookie = jar.make('192.0.2.1', 5684, input(4));
    clock.t += 2 * LIFETIME; // a single rotate() call, but two lifetimes have passed
    assert.equal(jar.verify(cookie, '192.0.2.1', 5684, input(4)), false);
    const c2 = jar.make('192.0.2.1', 5684, input(4));
    clock.t += 2 * LIFETIME - 1;
    // one rotation: c2's secret becomes the previous one
    assert.ok(jar.verify(c2, '192.0.2.1', 5684, input(4)));
  });

  test('wrong length or altered cookies are rejected (no throw)', () => {
    const jar = new CookieJar(LIFETIME);
    const cookie = jar.make('192.0.2.1', 5684, input(5));
    for (const n of [0, 1, COOKIE_LENGTH - 1, COOKIE_LENGTH + 1, 32, 255]) {
      const c = Buffer.alloc(n);
      cookie.copy(c, 0, 0, Math.min(n, COOKIE_LENGTH));
      assert.equal(jar.verify(c, '192.0.2.1', 5684, input(5)), false, `length ${n}`);
    }
    for (let bit = 0; bit < COOKIE_LENGTH * 8; bit++) {
      const c = Buffer.from(cookie);
      c[bit >> 3]! ^= 1 << (bit & 7);
      assert.equal(jar.verify(c, '192.0.2.1', 5684, input(5)), false, `bit ${bit}`);
    }
  });

  test('property: verify(make(x)) for any address, port and hello', () => {
    const jar = new CookieJar(LIFETIME);
    fc.assert(
      fc.property(
        fc.oneof(fc.ipV4(), fc.ipV6()),
        fc.integer({ min: 0, max: 65535 }),
        fc.integer({ min: 0, max: 255 }),
        (addr, port, r) => {
          const c = jar.make(addr, port, input(r));
          assert.ok(jar.verify(c, addr, port, input(r)));
          assert.equal(jar.verify(c, addr, port ^ 1, input(r)), false);
        },
      ),
      { numRuns: 300, seed: SEED },
    );
  });

  test('the address is bound unambiguously (no shift between address, port and hello bytes)', () => {
    const jar = new CookieJar(LIFETIME);
    const x: readonly [Buffer, Buffer] = [Buffer.from('fd00', 'hex'), Buffer.from('0100', 'hex')];
    const y: readonly [Buffer, Buffer] = [Buffer.from('fefd00', 'hex'), Buffer.from('0100', 'hex')];
    const cookie = jar.make('10.0.0.11', 0x12fe, x);
    assert.equal(jar.verify(cookie, '10.0.0.1', 0x3112, y), false);
  });
});
