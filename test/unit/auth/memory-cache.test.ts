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

  it('holds at most max entries, records and remembered misses alike, oldest out first', () => {
    const cache = new MemoryCache<Rec>({ max: 3, ttlMs: 60_000, negativeTtlMs: 1_000 });
    for (let i = 0; i < 10; i++) {
      if (i % 2 === 0) cache.set(`k${i}`, { secret: String(i) });
      else cache.setMissing(`k${i}`);
      assert.equal(cache.size, Math.min(i + 1, 3));
    }
    assert.deepEqual(
      ['k6', 'k7', 'k8', 'k9'].map((k) => cache.get(k) !== undefined),
      [false, true, true, true],
    );
    assert.equal(cache.get('k8')?.value?.secret, '8');
    assert.equal(cache.get('k9')?.value, undefined, 'k9 is a remembered miss');
  });

  it('allocates for the entries it holds, not for max up front', () => {
    // lru-cache's `max` allocated arrays for every entry at construction (about 70 ms of CPU
    // for the three 100 000-entry caches at each start); a cache of a million is as light as
    // an empty one until entries arrive
    const before = process.memoryUsage().heapUsed;
    const cache = new MemoryCache<Rec>({ max: 1_000_000, ttlMs: 60_000, negativeTtlMs: 1_000 });
    const grown = process.memoryUsage().heapUsed - before;
    assert.equal(cache.size, 0);
    assert.ok(grown < 4_000_000, `constructing took ${grown} bytes of heap`);
  });
});
