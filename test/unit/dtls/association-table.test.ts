/**
 * AssociationTable alone, with explicit clock values: who is replaced, superseded and evicted
 * for a newcomer, in which order, and when a restricted newcomer is refused.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  AssociationTable,
  peerKey,
  type Admission,
  type AdmissionPlan,
} from '../../../src/dtls/association-table.js';

const GRACE = 60_000;
const DEVICE = (key: string): Admission => ({ key, restricted: false });
const SESSION = (key: string, group = 'pk1'): Admission => ({ key, group, restricted: true });

function table(maxSize: number, maxPerGroup = Infinity): AssociationTable<string> {
  return new AssociationTable<string>({ maxSize, maxPerGroup, idleGraceMs: GRACE, touchMs: 1000 });
}

/** Applies a plan the way the server does, then adds the newcomer (named after its peer). */
function admit(t: AssociationTable<string>, peer: string, a: Admission, now: number) {
  const plan = t.plan(peer, a, now);
  if (plan !== undefined) apply(t, plan);
  if (plan !== undefined) t.add(peer, peer, a, now);
  return plan;
}

/** A device that has sent data: in good standing. */
function active(t: AssociationTable<string>, peer: string, key: string, now: number): void {
  admit(t, peer, DEVICE(key), now);
  t.touch(peer, now, true);
}

function apply(t: AssociationTable<string>, plan: AdmissionPlan<string>): void {
  const gone = [plan.replaced, plan.superseded, ...plan.evicted.map((e) => e.assoc)];
  for (const g of gone) if (g !== undefined) assert.ok(t.delete(g, g));
}

function victims(plan: AdmissionPlan<string> | undefined): string[] {
  assert.ok(plan !== undefined, 'admitted');
  return plan.evicted.map((e) => `${e.assoc}:${e.cls}`);
}

describe('AssociationTable: one association per key', () => {
  test('a newcomer with the key of an association on another peer supersedes it', () => {
    const t = table(10);
    admit(t, 'p1', DEVICE('dev-a'), 0);
    admit(t, 'p2', DEVICE('dev-b'), 0);
    const plan = admit(t, 'p3', DEVICE('dev-a'), 10);
    assert.equal(plan?.superseded, 'p1');
    assert.equal(plan?.replaced, undefined);
    assert.deepEqual([...t.values()].sort(), ['p2', 'p3']);
  });

  test('the same peer and key is a replacement, counted once', () => {
    const t = table(1);
    admit(t, 'p1', DEVICE('dev-a'), 0);
    const plan = admit(t, 'p1', DEVICE('dev-a'), 10);
    assert.equal(plan?.replaced, 'p1');
    assert.equal(plan?.superseded, undefined);
    assert.deepEqual(victims(plan), [], 'the slot it frees is its own: no eviction');
  });

  test('a full table: superseding frees the slot, nobody is evicted', () => {
    const t = table(2);
    admit(t, 'p1', DEVICE('dev-a'), 0);
    admit(t, 'p2', DEVICE('dev-b'), 0);
    assert.deepEqual(victims(admit(t, 'p3', DEVICE('dev-b'), 10)), []);
    assert.equal(t.size, 2);
  });

  test('no key: associations never supersede each other', () => {
    const t = table(10);
    admit(t, 'p1', { restricted: false }, 0);
    const plan = admit(t, 'p2', { restricted: false }, 0);
    assert.equal(plan?.superseded, undefined);
    assert.equal(t.size, 2);
  });
});

describe('AssociationTable: the usual newcomer', () => {
  test('nobody leaves: one shared empty plan, no set, array or object made for it', () => {
    const t = table(3);
    const first = t.plan('p1', DEVICE('dev-a'), 0);
    assert.deepEqual(first, { replaced: undefined, superseded: undefined, evicted: [] });
    admit(t, 'p1', DEVICE('dev-a'), 0);
    const setCtor = globalThis.Set;
    let sets = 0;
    globalThis.Set = class extends setCtor<unknown> {
      constructor(values?: Iterable<unknown> | null) {
        super(values);
        sets++;
      }
    };
    let plans;
    try {
      plans = [
        t.plan('p2', DEVICE('dev-b'), 1),
        t.plan('p3', { restricted: false }, 1),
        t.plan('p4', DEVICE('dev-c'), 2),
      ];
    } finally {
      globalThis.Set = setCtor;
    }
    assert.equal(sets, 0);
    assert.ok(plans.every((p) => p === first));
    // each of the other cases still gets a plan of its own
    assert.equal(t.plan('p1', DEVICE('dev-x'), 3)?.replaced, 'p1');
    assert.equal(t.plan('p5', DEVICE('dev-a'), 3)?.superseded, 'p1');
    assert.deepEqual(victims(t.plan('s1', SESSION('u1'), 3)), []);
    admit(t, 'p2', DEVICE('dev-b'), 4);
    admit(t, 'p3', DEVICE('dev-c'), 5);
    assert.deepEqual(victims(t.plan('p6', DEVICE('dev-d'), 10 * GRACE)), ['p1:idle']);
  });
});

describe('AssociationTable: group cap', () => {
  test('a group at its cap loses its oldest member, even a recently active one', () => {
    const t = table(100, 3);
    for (let i = 0; i < 3; i++) admit(t, `s${i}`, SESSION(`u${i}`), i);
    t.touch('s0', 5_000, true);
    assert.deepEqual(victims(admit(t, 's3', SESSION('u3'), 6_000)), ['s0:group-cap']);
    assert.equal(t.groupSize('pk1'), 3);
    // another group is not affected
    assert.deepEqual(victims(admit(t, 'o0', SESSION('v0', 'pk2'), 6_000)), []);
    assert.equal(t.groupSize('pk2'), 1);
  });

  test('a member leaving anyway (same key) makes the room: no cap eviction', () => {
    const t = table(100, 2);
    admit(t, 's0', SESSION('u0'), 0);
    admit(t, 's1', SESSION('u1'), 0);
    const plan = admit(t, 's2', SESSION('u1'), 10);
    assert.equal(plan?.superseded, 's1');
    assert.deepEqual(victims(plan), []);
  });

  test('emptied groups are forgotten', () => {
    const t = table(100, 2);
    admit(t, 's0', SESSION('u0'), 0);
    t.delete('s0', 's0');
    assert.equal(t.groupSize('pk1'), 0);
  });
});

describe('AssociationTable: who goes when the table is full', () => {
  test('restricted first (least recently active), before any device', () => {
    const t = table(4);
    active(t, 'd1', 'a', 0);
    admit(t, 's1', SESSION('u1'), 1);
    admit(t, 's2', SESSION('u2'), 2);
    admit(t, 'd2', DEVICE('b'), 3);
    t.touch('s1', 2_000, true); // s2 is now the least recently active session
    assert.deepEqual(victims(admit(t, 'd3', DEVICE('c'), 3_000)), ['s2:restricted']);
    assert.deepEqual(victims(admit(t, 's3', SESSION('u3'), 3_000)), ['s1:restricted']);
  });

  test('then an association that never carried data, once past its grace', () => {
    const t = table(3);
    active(t, 'active-old', 'a', 0);
    admit(t, 'quiet', DEVICE('b'), 1_000);
    active(t, 'active-new', 'c', 2_000);
    // within the grace the quiet one is just a device: plain LRU takes the oldest
    assert.deepEqual(victims(t.plan('x', DEVICE('x'), 30_000)), ['active-old:active']);
    // past it, the quiet one goes before either active device
    assert.deepEqual(victims(t.plan('x', DEVICE('x'), 1_000 + GRACE)), ['quiet:idle']);
  });

  test('data moves an association out of the idle lane for good', () => {
    const t = table(2);
    admit(t, 'd1', DEVICE('a'), 0);
    admit(t, 'd2', DEVICE('b'), 10);
    t.touch('d1', 20, true);
    t.touch('d2', 30, true);
    // both active: the least recently active goes, whatever the grace
    assert.deepEqual(victims(t.plan('x', DEVICE('x'), 10 * GRACE)), ['d1:active']);
  });

  test('a restricted newcomer is refused when only active and fresh devices remain', () => {
    const t = table(2);
    active(t, 'd1', 'a', 0);
    admit(t, 'd2', DEVICE('b'), 1_000); // fresh, no data yet
    assert.equal(t.plan('s', SESSION('u'), 2_000), undefined);
    // a device newcomer still gets in (least recently active goes)
    assert.deepEqual(victims(t.plan('x', DEVICE('x'), 2_000)), ['d1:active']);
    // once the quiet device is past its grace, the session may take its place
    assert.deepEqual(victims(t.plan('s', SESSION('u'), 1_000 + GRACE)), ['d2:idle']);
  });

  test('a restricted newcomer that supersedes its own older session is never refused', () => {
    const t = table(2);
    active(t, 'd1', 'a', 0);
    admit(t, 's1', SESSION('u'), 0);
    const plan = t.plan('s2', SESSION('u'), 10);
    assert.equal(plan?.superseded, 's1');
    assert.deepEqual(victims(plan), []);
  });

  test('the cap eviction and the table eviction are different associations', () => {
    const t = table(3, 2);
    active(t, 'd1', 'a', 0);
    admit(t, 's0', SESSION('u0'), 1);
    admit(t, 's1', SESSION('u1'), 2);
    // at the cap and full: the group's oldest makes the room, nothing else goes
    assert.deepEqual(victims(admit(t, 's2', SESSION('u2'), 3)), ['s0:group-cap']);
    assert.equal(t.size, 3);
  });

  test('touch keeps each lane in least-recently-active order, at most once per touchMs', () => {
    const t = table(3);
    for (const p of ['a', 'b', 'c']) {
      admit(t, p, DEVICE(p), 0);
      t.touch(p, 0, true);
    }
    t.touch('a', 500, false); // too soon after the last move: stays first
    assert.deepEqual(victims(t.plan('x', DEVICE('x'), 600)), ['a:active']);
    t.touch('a', 1_000, false);
    assert.deepEqual(victims(t.plan('x', DEVICE('x'), 1_100)), ['b:active']);
  });

  test('delete only removes the association it is given', () => {
    const t = table(3);
    admit(t, 'p1', DEVICE('a'), 0);
    assert.equal(t.delete('p1', 'someone-else'), false);
    assert.equal(t.get('p1'), 'p1');
    assert.equal(t.delete('p1', 'p1'), true);
    assert.equal(t.has('p1'), false);
    // the key is free again: no supersession of a ghost
    assert.equal(t.plan('p2', DEVICE('a'), 1)?.superseded, undefined);
  });
});

describe('AssociationTable: rekey (a peer moved, RFC 9146 §6)', () => {
  test('the association moves to the new peer key, the old key is gone, its key and group follow', () => {
    const t = table(10, 2);
    admit(t, 'p1', SESSION('s1'), 0);
    admit(t, 'p2', SESSION('s2'), 1);
    assert.equal(t.rekey('p1', 'p9', 'p1', 5), true);
    assert.equal(t.has('p1'), false);
    assert.equal(t.get('p9'), 'p1');
    assert.equal(t.size, 2);
    assert.equal(t.groupSize('pk1'), 2);
    // still the oldest of its group (establishment order survives the move)
    const plan = t.plan('p3', SESSION('s3'), 10);
    assert.deepEqual(victims(plan), ['p1:group-cap']);
    // its admission key follows: a newcomer with it supersedes the moved association
    assert.equal(t.plan('p4', SESSION('s1'), 10)?.superseded, 'p1');
    assert.equal(t.delete('p9', 'p1'), true);
    assert.equal(t.groupSize('pk1'), 1);
    assert.equal(t.size, 1);
  });

  test('refused when the new key is taken or the old one holds another association', () => {
    const t = table(10);
    admit(t, 'p1', DEVICE('a'), 0);
    admit(t, 'p2', DEVICE('b'), 0);
    assert.equal(t.rekey('p1', 'p2', 'p1', 1), false);
    assert.equal(t.rekey('p1', 'p3', 'p2', 1), false);
    assert.equal(t.get('p1'), 'p1');
    assert.equal(t.get('p2'), 'p2');
  });
});

describe('AssociationTable: by address and port', () => {
  const A = '192.0.2.1';
  const B = '192.0.2.2';
  const C = '2001:db8::1';

  test('finds each peer added under its peerKey, several addresses on one port included', () => {
    const t = table(10);
    for (const [address, port] of [
      [A, 5684],
      [B, 5684],
      [C, 5684],
      [A, 40000],
    ] as const)
      admit(t, peerKey(address, port), DEVICE(`${address}/${port}`), 0);
    assert.equal(t.at(A, 5684), peerKey(A, 5684));
    assert.equal(t.at(B, 5684), peerKey(B, 5684));
    assert.equal(t.at(C, 5684), peerKey(C, 5684));
    assert.equal(t.at(A, 40000), peerKey(A, 40000));
    assert.equal(t.at(B, 40000), undefined);
    assert.equal(t.at('192.0.2.3', 5684), undefined);
    // deleting down to one address on the port, then none
    assert.ok(t.delete(peerKey(B, 5684), peerKey(B, 5684)));
    assert.ok(t.delete(peerKey(C, 5684), peerKey(C, 5684)));
    assert.equal(t.at(A, 5684), peerKey(A, 5684));
    assert.equal(t.at(B, 5684), undefined);
    assert.ok(t.delete(peerKey(A, 5684), peerKey(A, 5684)));
    assert.equal(t.at(A, 5684), undefined);
    assert.equal(t.at(A, 40000), peerKey(A, 40000));
  });

  test('a rekeyed association is found at its new address only; a wrong delete changes nothing', () => {
    const t = table(10);
    const from = peerKey(A, 1000);
    admit(t, from, DEVICE('d'), 0);
    admit(t, peerKey(B, 1000), DEVICE('e'), 0);
    assert.equal(t.rekey(from, peerKey(C, 2000), from, 1), true);
    assert.equal(t.at(A, 1000), undefined);
    assert.equal(t.at(C, 2000), from);
    assert.equal(t.at(B, 1000), peerKey(B, 1000));
    assert.equal(t.delete(peerKey(C, 2000), 'someone else'), false);
    assert.equal(t.at(C, 2000), from);
  });

  test('peers under keys that are not a peerKey are held, not indexed', () => {
    const t = table(10);
    for (const peer of ['p1', 'x|', 'x|007', 'x|70000', 'x|NaN']) admit(t, peer, DEVICE(peer), 0);
    assert.equal(t.size, 5);
    assert.equal(t.get('x|007'), 'x|007');
    assert.equal(t.at('x', 7), undefined);
    assert.equal(t.at('x', 0), undefined);
    assert.equal(t.at('x', 70000), undefined);
  });
});
