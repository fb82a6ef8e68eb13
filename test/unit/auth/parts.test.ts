/** The small pieces: circuit breaker, Redis key layout, reconnect backoff. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CircuitBreaker } from '../../../src/auth/circuit-breaker.js';
import { reconnectDelay } from '../../../src/auth/redis-connection.js';
import { RedisKeys, escapeKeyPart } from '../../../src/auth/redis-keys.js';

describe('CircuitBreaker', () => {
  function breaker(threshold = 3) {
    let t = 0;
    let opened = 0;
    const b = new CircuitBreaker({
      threshold,
      cooldownMs: 1_000,
      now: () => t,
      onOpen: () => opened++,
    });
    return { b, advance: (ms: number) => (t += ms), opened: () => opened };
  }

  it('opens after N consecutive failures and refuses during the cooldown', () => {
    const { b, advance, opened } = breaker();
    b.failure();
    b.failure();
    b.success();
    b.failure();
    b.failure();
    assert.equal(b.state, 'closed', 'a success resets the count');
    assert.ok(b.allow());
    b.failure();
    assert.equal(b.state, 'open');
    assert.equal(opened(), 1);
    assert.equal(b.allow(), false);
    advance(999);
    assert.equal(b.allow(), false);
    advance(1);
    assert.equal(b.state, 'half-open');
  });

  it('half-open lets one probe through; its success closes the breaker', () => {
    const { b, advance } = breaker(1);
    b.failure();
    advance(1_000);
    assert.ok(b.allow(), 'the probe');
    assert.equal(b.allow(), false, 'others wait for the probe');
    b.success();
    assert.equal(b.state, 'closed');
    assert.ok(b.allow());
  });

  it('a failed probe opens it again for a full cooldown', () => {
    const { b, advance, opened } = breaker(1);
    b.failure();
    advance(1_000);
    assert.ok(b.allow());
    b.failure();
    assert.equal(b.state, 'open');
    assert.equal(opened(), 2);
    advance(999);
    assert.equal(b.allow(), false);
  });

  it('threshold 0 never opens', () => {
    const { b } = breaker(0);
    for (let i = 0; i < 100; i++) b.failure();
    assert.equal(b.state, 'closed');
  });
});

describe('RedisKeys', () => {
  it('lays out keys under the prefix', () => {
    const k = new RedisKeys('coap-edge');
    assert.equal(k.device('pk', 'dk'), 'coap-edge:device:pk:dk');
    assert.equal(k.product('pk'), 'coap-edge:product:pk');
    assert.equal(k.activation('pk', 'dk'), 'coap-edge:activation:pk:dk');
  });

  it('keeps keys with ":" apart', () => {
    const k = new RedisKeys('p');
    assert.notEqual(k.device('a:b', 'c'), k.device('a', 'b:c'));
    assert.equal(escapeKeyPart('a:%b'), 'a%3A%25b');
    assert.notEqual(k.device('a%3Ab', 'c'), k.device('a:b', 'c'));
  });
});

describe('reconnectDelay', () => {
  it('grows, is capped and jittered', () => {
    for (let attempt = 1; attempt < 40; attempt++) {
      const d = reconnectDelay(attempt, 1_000);
      const base = Math.min(1_000, 50 * 2 ** (attempt - 1));
      assert.ok(d >= base / 2 - 1 && d <= base + 1, `attempt ${attempt}: ${d}`);
    }
  });
});
