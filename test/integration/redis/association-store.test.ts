/**
 * The Redis store of shared associations (docs/design.md, "Shared associations") against
 * the real Redis at 127.0.0.1:6379 and a real Redis Cluster (3 masters, 3 replicas, WAIT
 * for one replica): one table of operations and their answers runs against
 * MemoryAssociationStore and both Redis topologies, so the Redis semantics cannot drift from
 * the reference. Then what only Redis has: key layout, TTLs restarted, binary snapshots,
 * concurrent leases from two connections never overlapping, WAIT refusing unreplicated
 * leases, no snapshot in errors, and the memory an association costs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryAssociationStore, type SharedAssociationStore } from '../../../src/dtls/shared.js';
import { RedisAssociationStore } from '../../../src/redis/association-store.js';
import {
  RedisNotReplicatedError,
  closeRedis,
  createFailFastRedis,
  durabilityFor,
  type RedisClient,
  type RedisTarget,
} from '../../../src/redis/client.js';
import { prefix, waitFor } from '../auth/helpers.js';
import { RedisClusterFixture } from '../../helpers/redis-topologies.js';

const TTL = 60_000;
/** The clients' per-command deadline (a slow cluster start must not fail a command). */
const COMMAND_TIMEOUT_MS = 2_000;
const H1 = 'c:0a0b0c';
const H2 = 'a:10.0.0.1|5684';
const H3 = 'a:[2001:db8::1]|5684';
const H4 = 'c:{x}%y';
const H5 = 'c:0e0f';
const ID = 'pk/dev:1{a}';
const BIG = 2 ** 48;

/** Every byte value, twice, and bytes that are no valid UTF-8. */
const BINARY = Buffer.concat([
  Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
  Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i)),
  Buffer.from([0xc3, 0x28, 0xff, 0xfe, 0x00, 0x00]),
]);
const blob = (s: string): Buffer => Buffer.from(s);

type Step = readonly [
  what: string,
  run: (s: SharedAssociationStore) => Promise<unknown>,
  expected: unknown,
];

/** The reference scenario: every store must answer exactly these. */
const SCENARIO: readonly Step[] = [
  ['create H1 for ID', (s) => s.create(H1, 'A', BINARY, 100, 50, TTL, ID), undefined],
  ['A leases', (s) => s.leaseTx(H1, 'A', 10, TTL), 100],
  ['A leases again', (s) => s.leaseTx(H1, 'A', 10, TTL), 110],
  ['A raises the fence', (s) => s.setRxFence(H1, 'A', 70, TTL), true],
  ['stranger leases', (s) => s.leaseTx(H1, 'X', 10, TTL), undefined],
  ['stranger fences', (s) => s.setRxFence(H1, 'X', 999, TTL), false],
  ['stranger removes (no effect)', (s) => s.remove(H1, 'X'), undefined],
  [
    'B adopts',
    (s) => s.adopt(H1, 'B', 32, 64, TTL),
    { blob: BINARY, rxFloor: 70, rxLimit: 102, txStart: 120 },
  ],
  ['A is fenced off: lease', (s) => s.leaseTx(H1, 'A', 10, TTL), undefined],
  ['A is fenced off: fence', (s) => s.setRxFence(H1, 'A', 500, TTL), false],
  ['A is fenced off: remove', (s) => s.remove(H1, 'A'), undefined],
  ['B leases', (s) => s.leaseTx(H1, 'B', 10, TTL), 184],
  ['B lowers the fence', (s) => s.setRxFence(H1, 'B', 90, TTL), true],
  [
    'A adopts back',
    (s) => s.adopt(H1, 'A', 8, 16, TTL),
    { blob: BINARY, rxFloor: 90, rxLimit: 98, txStart: 194 },
  ],
  ['B is fenced off', (s) => s.leaseTx(H1, 'B', 1, TTL), undefined],
  ['A leases one', (s) => s.leaseTx(H1, 'A', 1, TTL), 210],
  ['A leases zero', (s) => s.leaseTx(H1, 'A', 0, TTL), 211],
  ['adopt of nothing', (s) => s.adopt('c:ff', 'A', 1, 1, TTL), undefined],
  ['lease of nothing', (s) => s.leaseTx('c:ff', 'A', 1, TTL), undefined],
  ['fence of nothing', (s) => s.setRxFence('c:ff', 'A', 1, TTL), false],
  ['remove of nothing', (s) => s.remove('c:ff', 'A'), undefined],
  // identity retirement: a new association of ID ends H1
  ['create H2 for ID', (s) => s.create(H2, 'C', blob('two'), 0, 0, TTL, ID), undefined],
  ['H1 retired', (s) => s.adopt(H1, 'B', 1, 1, TTL), undefined],
  ['H1 lease lost', (s) => s.leaseTx(H1, 'A', 1, TTL), undefined],
  [
    'H2 adoptable',
    (s) => s.adopt(H2, 'D', 1, 1, TTL),
    { blob: blob('two'), rxFloor: 0, rxLimit: 1, txStart: 0 },
  ],
  // the same handle created again for the same identity: replaced, not retired
  ['create H2 again', (s) => s.create(H2, 'E', blob('three'), 5, 7, TTL, ID), undefined],
  ['D lost H2 to the new create', (s) => s.leaseTx(H2, 'D', 1, TTL), undefined],
  [
    'H2 holds the new snapshot',
    (s) => s.adopt(H2, 'F', 0, 0, TTL),
    { blob: blob('three'), rxFloor: 7, rxLimit: 7, txStart: 5 },
  ],
  ['F removes H2', (s) => s.remove(H2, 'F'), undefined],
  ['H2 gone', (s) => s.adopt(H2, 'F', 0, 0, TTL), undefined],
  // without identity nothing is retired; other identities are independent
  ['create H3 (no identity)', (s) => s.create(H3, 'A', blob(''), 1, 1, TTL, undefined), undefined],
  ['create H4 for ID2', (s) => s.create(H4, 'A', blob('4'), 0, 0, TTL, 'other'), undefined],
  ['create H1 for ID', (s) => s.create(H1, 'A', blob('1'), 0, 0, TTL, ID), undefined],
  [
    'H3 lives (empty snapshot)',
    (s) => s.adopt(H3, 'B', 0, 0, TTL),
    { blob: blob(''), rxFloor: 1, rxLimit: 1, txStart: 1 },
  ],
  ['H4 lives', (s) => s.leaseTx(H4, 'A', 1, TTL), 0],
  ['H2 is not resurrected', (s) => s.leaseTx(H2, 'E', 1, TTL), undefined],
  // peek reads without changing anything
  ['peek H4', (s) => s.peek(H4), { blob: blob('4'), rxFence: 0, owner: 'A' }],
  ['peek H4 again: unchanged', (s) => s.peek(H4), { blob: blob('4'), rxFence: 0, owner: 'A' }],
  // holders' heartbeats
  ['nobody alive yet', (s) => s.alive('P1'), false],
  ['P1 beats', (s) => s.heartbeat('P1', TTL), undefined],
  ['P1 alive', (s) => s.alive('P1'), true],
  ['P2 not', (s) => s.alive('P2'), false],
  ['P1 stops', (s) => s.heartbeat('P1', 0), undefined],
  ['P1 gone', (s) => s.alive('P1'), false],
  ['peek of nothing', (s) => s.peek('c:ff'), undefined],
  // an address handle taken over by another identity is not retired by the first identity
  [
    'create H4 for ID3 (reused handle)',
    (s) => s.create(H4, 'A', blob('x'), 0, 0, TTL, 'third'),
    undefined,
  ],
  ['ID2 makes a new one', (s) => s.create(H5, 'A', blob('5'), 0, 0, TTL, 'other'), undefined],
  ['H4 (ID3) lives', (s) => s.peek(H4), { blob: blob('x'), rxFence: 0, owner: 'A' }],
  // sequence numbers up to 2^48 stay exact
  [
    'create near 2^48',
    (s) => s.create(H3, 'A', blob('big'), BIG - 100, BIG - 50, TTL, undefined),
    undefined,
  ],
  ['lease near 2^48', (s) => s.leaseTx(H3, 'A', 64, TTL), BIG - 100],
  ['fence near 2^48', (s) => s.setRxFence(H3, 'A', BIG - 1, TTL), true],
  [
    'adopt near 2^48',
    (s) => s.adopt(H3, 'B', 1, 36, TTL),
    { blob: blob('big'), rxFloor: BIG - 1, rxLimit: BIG, txStart: BIG - 36 },
  ],
  ['lease up to 2^48', (s) => s.leaseTx(H3, 'B', 1, TTL), BIG],
];

async function runScenario(store: SharedAssociationStore): Promise<void> {
  for (const [what, run, expected] of SCENARIO) {
    assert.deepStrictEqual(await run(store), expected, what);
  }
}

async function connect(url: RedisTarget, name: string): Promise<RedisClient> {
  const c = createFailFastRedis({
    url,
    connectionName: name,
    commandTimeoutMs: COMMAND_TIMEOUT_MS,
    maxBackoffMs: 200,
    onError: () => {},
  });
  await waitFor(() => c.status === 'ready', `${name} ready`, 15_000);
  return c;
}

describe('MemoryAssociationStore', () => {
  it('answers the reference scenario', async () => {
    await runScenario(new MemoryAssociationStore());
  });
});

const topologies: Record<string, { waitReplicas: number; start(): Promise<Topology> }> = {
  'single Redis': {
    waitReplicas: 0,
    start: () => Promise.resolve({ url: 'redis://127.0.0.1:6379', stop: () => Promise.resolve() }),
  },
  'Redis Cluster': {
    // every master has one replica: each lease waits for it
    waitReplicas: 1,
    start: async () => {
      const f = await RedisClusterFixture.start();
      return { url: f.target(), stop: () => f.stop() };
    },
  },
};

interface Topology {
  url: RedisTarget;
  stop(): Promise<void>;
}

for (const [name, topology] of Object.entries(topologies)) {
  describe(`RedisAssociationStore on ${name}`, () => {
    let topo: Topology;
    let a: RedisClient;
    let b: RedisClient;

    before(async () => {
      topo = await topology.start();
      a = await connect(topo.url, 'assoc-test-a');
      b = await connect(topo.url, 'assoc-test-b');
    });

    after(async () => {
      await Promise.all([closeRedis(a), closeRedis(b)]);
      await topo.stop();
    });

    function store(p: string, client = a): RedisAssociationStore {
      return new RedisAssociationStore({
        client,
        prefix: p,
        durability: durabilityFor(topology.waitReplicas, COMMAND_TIMEOUT_MS),
      });
    }

    it('answers the reference scenario', async () => {
      // assignable to the DTLS interface without importing it
      const s: SharedAssociationStore = store(prefix());
      await runScenario(s);
    });

    it('keeps its keys where the layout says, each in its handle or identity slot', async () => {
      const p = prefix();
      const s = store(p);
      await s.create(H4, 'A', blob('x'), 0, 0, TTL, ID);
      const hash = `${p}:assoc:{c%3A%7Bx%7D%25y}`;
      const id = `${p}:assoc-id:{pk/dev%3A1%7Ba%7D}`;
      assert.equal(s.associationKey(H4), hash);
      assert.equal(s.identityKey(ID), id);
      assert.deepEqual(await a.hgetall(hash), { blob: 'x', owner: 'A', tx: '0', rx: '0', id: ID });
      assert.equal(await a.get(id), H4);
    });

    it('sets the TTL and restarts it on every lease, adoption and fence', async () => {
      const p = prefix();
      const s = store(p);
      const hash = s.associationKey(H1);
      const pttl = async (key: string): Promise<number> => a.pttl(key);
      await s.create(H1, 'A', blob('x'), 0, 0, 10_000, ID);
      for (const key of [hash, s.identityKey(ID)]) {
        const t = await pttl(key);
        assert.ok(t > 5_000 && t <= 10_000, `${key}: ${t}`);
      }
      const restarts: [string, (ttl: number) => Promise<unknown>][] = [
        ['leaseTx', (ttl) => s.leaseTx(H1, 'A', 1, ttl)],
        ['setRxFence', (ttl) => s.setRxFence(H1, 'A', 5, ttl)],
        ['adopt', (ttl) => s.adopt(H1, 'A', 1, 1, ttl)],
      ];
      let ttl = 10_000;
      for (const [what, run] of restarts) {
        ttl += 100_000;
        await run(ttl);
        const t = await pttl(hash);
        assert.ok(t > ttl - 5_000 && t <= ttl, `${what}: ${t} of ${ttl}`);
      }
      // a refused lease leaves the TTL alone
      await s.leaseTx(H1, 'X', 1, 1_000_000);
      assert.ok((await pttl(hash)) <= ttl);

      await s.create(H2, 'A', blob('short'), 0, 0, 50, undefined);
      await waitFor(async () => (await a.exists(s.associationKey(H2))) === 0, 'expiry');
      assert.equal(await s.leaseTx(H2, 'A', 1, TTL), undefined);
      assert.equal(await s.adopt(H2, 'B', 1, 1, TTL), undefined);
    });

    it('touchIdentity restarts the identity index expiry only while it names that handle', async () => {
      const p = prefix();
      const s = store(p);
      const key = s.identityKey(ID);
      await s.create(H1, 'A', blob('x'), 0, 0, 10_000, ID);
      await s.touchIdentity(ID, H1, 500_000);
      const t = await a.pttl(key);
      assert.ok(t > 400_000 && t <= 500_000, `touched: ${t}`);
      // another handle is not the identity's association: nothing changes
      await s.touchIdentity(ID, H2, 900_000);
      assert.ok((await a.pttl(key)) <= 500_000);
      assert.equal(await a.get(key), H1);
    });

    it('round-trips a binary snapshot of every byte value', async () => {
      const s = store(prefix());
      const all = Buffer.concat([BINARY, Buffer.alloc(1000, 0x80), BINARY]);
      await s.create(H1, 'A', all, 0, 0, TTL, undefined);
      const got = await s.adopt(H1, 'B', 0, 0, TTL);
      assert.ok(got !== undefined);
      assert.equal(got.blob.length, all.length);
      assert.ok(got.blob.equals(all));
    });

    it('never hands out overlapping write blocks to concurrent leases and an adoption', async () => {
      const p = prefix();
      const sa = store(p, a);
      const sb = store(p, b);
      const start = 1_000;
      await sa.create(H1, 'A', blob('x'), start, 0, TTL, undefined);
      const leases: Promise<number | undefined>[] = [];
      let adoption: Promise<{ txStart: number } | undefined> | undefined;
      for (let i = 0; i < 200; i++) {
        leases.push((i % 2 === 0 ? sa : sb).leaseTx(H1, 'A', 64, TTL));
        if (i === 150) {
          // the 151 leases so far (racing each other on two connections) are in before the
          // adoption, whatever the machine's speed (a loaded one delayed A's behind it: 99
          // blocks); the adoption races the leases A sends after it
          await Promise.all(leases);
          adoption = sb.adopt(H1, 'B', 0, 64, TTL);
        }
      }
      const got = await Promise.all(leases);
      const adopted = await adoption;
      assert.ok(adopted !== undefined);
      const blocks = [...got.filter((g) => g !== undefined), adopted.txStart].sort((x, y) => x - y);
      assert.ok(blocks.length > 100, `${blocks.length} blocks`);
      for (let i = 0; i < blocks.length; i++) {
        assert.equal(blocks[i], start + 64 * i, `block ${i} right after the one before`);
      }
      // leases sent after the adoption on its connection were refused
      assert.ok(
        got
          .slice(152)
          .filter((_, i) => i % 2 === 1)
          .every((g) => g === undefined),
      );
      const next = await sa.adopt(H1, 'C', 0, 0, TTL);
      assert.equal(next?.txStart, start + 64 * blocks.length, 'counter = end of the last block');
    });

    it('rejects with the Redis error, and the error does not carry the snapshot', async () => {
      const s = store(prefix());
      const secretish = Buffer.from('sealed-snapshot-bytes-0123456789');
      const err: unknown = await s.create(H1, 'A', secretish, 0, 0, Number.NaN, undefined).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof Error, 'rejected');
      assert.match(err.message, /not an integer|ERR/);
      assert.ok(!String(err.message).includes('sealed-snapshot'));
      // ioredis attaches the command to its errors: the snapshot is not among its arguments
      const args = (err as Error & { command?: { args?: unknown[] } }).command?.args ?? [];
      const carries = (v: unknown): boolean =>
        (Buffer.isBuffer(v) && v.includes(secretish)) ||
        (typeof v === 'string' && v.includes('sealed-snapshot'));
      assert.ok(!args.some(carries), 'snapshot among the arguments');
      assert.ok(args.includes(`<snapshot ${secretish.length} bytes>`), String(args));
    });

    if (topology.waitReplicas === 0) {
      it('refuses a lease no replica confirmed when WAIT is asked for', async () => {
        const p = prefix();
        const plain = store(p);
        await plain.create(H1, 'A', blob('x'), 0, 0, TTL, undefined);
        const durable = new RedisAssociationStore({
          client: a,
          prefix: p,
          durability: { replicas: 1, timeoutMs: 20 },
        });
        const replicas = Number(/connected_slaves:(\d+)/.exec(await a.info('replication'))?.[1]);
        assert.equal(replicas, 0, 'the test Redis has no replica');
        await assert.rejects(durable.leaseTx(H1, 'A', 8, TTL), RedisNotReplicatedError);
        await assert.rejects(durable.setRxFence(H1, 'A', 8, TTL), RedisNotReplicatedError);
        await assert.rejects(durable.adopt(H1, 'B', 8, 8, TTL), RedisNotReplicatedError);
        await assert.rejects(
          durable.create(H2, 'A', blob('y'), 0, 0, TTL, undefined),
          RedisNotReplicatedError,
        );
        // the master has the writes all the same (WAIT only reports)
        assert.deepEqual(await a.hmget(plain.associationKey(H1), 'owner', 'tx', 'rx'), [
          'B',
          '16',
          '16',
        ]);
      });

      it('lookups are not held up behind leases waiting for replicas (WAIT holds its connection)', async () => {
        // this Redis has no replica: every WAIT runs to its timeout (80 % of the command timeout)
        const p = prefix();
        const reads = createFailFastRedis({
          url: topo.url,
          connectionName: 'assoc-test-reads',
          commandTimeoutMs: 300,
          onError: () => {},
        });
        const writes = createFailFastRedis({
          url: topo.url,
          connectionName: 'assoc-test-writes',
          commandTimeoutMs: 300,
          onError: () => {},
        });
        try {
          await waitFor(() => reads.status === 'ready' && writes.status === 'ready', 'ready');
          const s = new RedisAssociationStore({
            client: reads,
            durableClient: writes,
            prefix: p,
            durability: durabilityFor(1, 300),
          });
          await store(p).create(H1, 'A', blob('x'), 0, 0, TTL, undefined);
          const leases = [1, 2, 3].map((i) =>
            s.setRxFence(H1, 'A', i, TTL).then(
              () => 'confirmed',
              () => 'refused',
            ),
          );
          // sent after the three leases; behind their WAITs it would wait 3 × 240 ms and time out
          const found = await s.peek(H1);
          assert.equal(found?.owner, 'A');
          assert.deepEqual(await Promise.all(leases), ['refused', 'refused', 'refused']);
        } finally {
          await Promise.all([closeRedis(reads), closeRedis(writes)]);
        }
      });

      it('measures the Redis bytes per association', async (t) => {
        const s = store(prefix());
        await s.create(H1, 'A', Buffer.alloc(400, 0xa5), 12_345, 678, TTL, 'product/device-0001');
        const hash = Number(await a.call('MEMORY', 'USAGE', s.associationKey(H1), 'SAMPLES', '0'));
        const id = Number(
          await a.call('MEMORY', 'USAGE', s.identityKey('product/device-0001'), 'SAMPLES', '0'),
        );
        const encoding = String(await a.call('OBJECT', 'ENCODING', s.associationKey(H1)));
        assert.ok(hash > 400 && id > 0);
        t.diagnostic(
          `MEMORY USAGE: association hash (400-byte blob, ${encoding}) ${hash} B, identity key ${id} B, total ${hash + id} B`,
        );
      });
    }
  });
}
