/**
 * Session ids (`src/gateway/session-id.ts`): random version 4 UUIDs, distinct across refills
 * of the random pool, and cheap to keep (docs/design.md, "Memory at idle"): the presence
 * tracker keeps up to 10 000 ended ones.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { getHeapStatistics } from 'node:v8';
import { newSessionId } from '../../../src/gateway/session-id.js';
import { forceGc } from '../../helpers/hostile.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('newSessionId', () => {
  it('makes distinct version 4 UUIDs, past several refills of its random pool', () => {
    const ids = new Set<string>();
    const variants = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const id = newSessionId();
      assert.match(id, UUID_V4);
      ids.add(id);
      variants.add(id.charAt(19));
    }
    assert.equal(ids.size, 1000);
    assert.equal(variants.size, 4, 'all four variant digits 8, 9, a, b occur');
  });

  it('an id kept alive costs one short string, not a chain of concatenations', () => {
    const kept: string[] = [];
    kept.push(newSessionId()); // the module's pool and buffers exist before the measure
    forceGc();
    forceGc();
    const before = getHeapStatistics().used_heap_size;
    for (let i = 0; i < 10_000; i++) kept.push(newSessionId());
    forceGc();
    forceGc();
    const perId = (getHeapStatistics().used_heap_size - before) / 10_000;
    // a flat 36-character string is ~56 bytes (and 8 for its slot in `kept`);
    // crypto.randomUUID's cons strings were ~480
    assert.ok(perId < 200, `${perId.toFixed(0)} bytes per kept id`);
    assert.equal(kept.length, 10_001);
  });
});
