/**
 * KnownEmpty: which devices' command queues are known to be empty (src/bridge/commands/known-empty.ts).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KnownEmpty } from '../../../src/bridge/commands/known-empty.js';

function live(max = 10): KnownEmpty {
  const k = new KnownEmpty(max);
  k.subscription(true);
  return k;
}

function look(k: KnownEmpty, device: string, empty: boolean): void {
  k.end(device, k.begin(device), empty);
}

describe('KnownEmpty', () => {
  it('a look that found the queue empty is remembered until the device is notified', () => {
    const k = live();
    assert.equal(k.has('a'), false);
    look(k, 'a', true);
    assert.equal(k.has('a'), true);
    look(k, 'b', false);
    assert.equal(k.has('b'), false, 'a queue with commands is not empty');
    k.notified('a');
    assert.equal(k.has('a'), false);
  });

  it('a notification during a look keeps its "empty" out (the enqueue may have come after the read)', () => {
    const k = live();
    const l = k.begin('a');
    k.notified('a');
    k.end('a', l, true);
    assert.equal(k.has('a'), false);
    // a later look is trusted again
    look(k, 'a', true);
    assert.equal(k.has('a'), true);
  });

  it('without a live subscription nothing is known, and a change of it forgets everything', () => {
    const k = new KnownEmpty(10);
    look(k, 'a', true);
    assert.equal(k.has('a'), false, 'not subscribed: notifications could be missed');
    k.subscription(true);
    look(k, 'a', true);
    assert.equal(k.has('a'), true);
    const l = k.begin('b');
    k.subscription(false);
    assert.equal(k.has('a'), false);
    k.subscription(true);
    k.end('b', l, true);
    assert.equal(k.has('b'), false, 'the subscription went down during the look');
    assert.equal(k.size, 0);
  });

  it('holds at most max devices, the oldest entered dropped first', () => {
    const k = live(2);
    look(k, 'a', true);
    look(k, 'b', true);
    look(k, 'c', true);
    assert.deepEqual(
      ['a', 'b', 'c'].map((d) => k.has(d)),
      [false, true, true],
    );
    assert.equal(k.size, 2);
  });
});
