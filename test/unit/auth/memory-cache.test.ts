import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryCache } from '../../../src/auth/memory-cache.js';

interface Rec {
  readonly secret: string;
}

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

describe('MemoryCache', () => {
  it('keeps a record for its TTL, then forgets it', () => {
    const c = clock();
    const cache = new MemoryCache<Rec>({ max: 10, ttlMs: 1_000, negativeTtlMs: 100, now: c.now });
    cache.set('a', { secret: 'x' });
    assert.deepEqual(cache.get('a'), { value: { secret: 'x' } });
    c.advance(999);
    assert.equal(cache.get('a')?.value?.secret, 'x');
    c.advance(2);
    assert.equal(cache.get('a'), undefined);
  });

  it('remembers a miss for the negative TTL only', () => {
    const c = clock();
    const cache = new MemoryCache<Rec>({ max: 10, ttlMs: 1_000, negativeTtlMs: 100, now: c.now });
    cache.setMissing('gone');
    const slot = cache.get('gone');
    assert.ok(slot !== undefined, 'a remembered miss is a slot');
    assert.equal(slot.value, undefined);
    c.advance(99);
    assert.ok(cache.get('gone') !== undefined);
    c.advance(2);
    assert.equal(cache.get('gone'), undefined, 'forgotten after the negative TTL');
  });

  it('caps the negative TTL at the record TTL', () => {
    const c = clock();
    const cache = new MemoryCache<Rec>({ max: 10, ttlMs: 50, negativeTtlMs: 10_000, now: c.now });
    cache.setMissing('gone');
    c.advance(51);
    assert.equal(cache.get('gone'), undefined);
  });

  it('a record replaces a remembered miss', () => {
    const c = clock();
    const cache = new MemoryCache<Rec>({ max: 10, ttlMs: 1_000, negativeTtlMs: 100, now: c.now });
    cache.setMissing('k');
    cache.set('k', { secret: 'y' });
    c.advance(500);
    assert.equal(cache.get('k')?.value?.secret, 'y', 'the record has the full TTL');
  });

  it('evicts the least recently used entry when full', () => {
    const cache = new MemoryCache<Rec>({ max: 2, ttlMs: 60_000, negativeTtlMs: 1_000 });
    cache.set('a', { secret: '1' });
    cache.set('b', { secret: '2' });
    cache.get('a');
    cache.set('c', { secret: '3' });
    assert.equal(cache.get('b'), undefined);
    assert.ok(cache.get('a') !== undefined);
    assert.ok(cache.get('c') !== undefined);
    assert.equal(cache.size, 2);
  });
});
