/** Redis key parts: escaping is reversible and keeps different keys apart (src/redis/keys.ts). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { deviceHashTag, escapeKeyPart, unescapeKeyPart } from '../../../src/redis/keys.js';

describe('Redis key parts', () => {
  it('escape and unescape are inverse for every special character', () => {
    for (const key of ['plain', 'a:b', '50%', '{x}', '%3A', 'a}b{c', ':%{}:']) {
      assert.equal(unescapeKeyPart(escapeKeyPart(key)), key, key);
    }
    assert.equal(escapeKeyPart(':%{}'), '%3A%25%7B%7D');
  });

  it('keeps a:b + c and a + b:c apart, and a brace cannot end the hash tag early', () => {
    assert.notEqual(deviceHashTag('a:b', 'c'), deviceHashTag('a', 'b:c'));
    assert.equal(deviceHashTag('p}k', 'd{k'), '{p%7Dk/d%7Bk}');
  });
});
