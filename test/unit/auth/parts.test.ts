/** The small pieces: circuit breaker, Redis key layout, reconnect backoff. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CircuitBreaker } from '../../../src/auth/circuit-breaker.js';
import { reconnectDelay } from '../../../src/auth/redis-connection.js';
import { RedisKeys } from '../../../src/auth/redis-keys.js';
import { escapeKeyPart } from '../../../src/redis/keys.js';
import { commandQueueKey } from '../../../src/bridge/commands/redis-store.js';

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
    assert.equal(k.device('pk', 'dk'), 'coap-edge:device:{pk/dk}');
    assert.equal(k.product('pk'), 'coap-edge:product:pk');
    assert.equal(k.activation('pk', 'dk'), 'coap-edge:activation:{pk/dk}');
  });

  it('keeps keys with ":" apart', () => {
    const k = new RedisKeys('p');
    assert.notEqual(k.device('a:b', 'c'), k.device('a', 'b:c'));
    assert.equal(escapeKeyPart('a:%b'), 'a%3A%25b');
    assert.equal(escapeKeyPart('a{b}'), 'a%7Bb%7D');
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

describe('Redis Cluster hash tags', () => {
  /** The part of a key Redis Cluster hashes: the first non-empty `{…}`, else the whole key. */
  function hashed(key: string): string {
    const open = key.indexOf('{');
    if (open < 0) return key;
    const close = key.indexOf('}', open + 1);
    return close > open + 1 ? key.slice(open + 1, close) : key;
  }

  it('puts every key of one device in one slot, whatever its keys contain', () => {
    for (const [pk, dk] of [
      ['pk', 'dk'],
      ['}x', 'd'],
      ['a{b', 'c}'],
      ['a:b', '%7D'],
      ['{}', '{}'],
    ] as const) {
      const k = new RedisKeys('coap-edge');
      const tag = hashed(k.device(pk, dk));
      assert.equal(hashed(k.activation(pk, dk)), tag, `${pk}/${dk}`);
      assert.equal(hashed(commandQueueKey('coap-edge', { productKey: pk, deviceKey: dk })), tag);
      assert.notEqual(tag, hashed(k.device(pk, `${dk}2`)), 'devices spread over slots');
    }
  });

  it('still names the key versions before the hash tags wrote activations under', () => {
    assert.equal(new RedisKeys('p').legacyActivation('a:b', 'c'), 'p:activation:a%3Ab:c');
  });
});
