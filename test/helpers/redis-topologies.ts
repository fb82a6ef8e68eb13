/**
 * Real Redis topologies on free loopback ports, for the tests that run the Redis-backed
 * flows against them: a Redis Cluster of 3 masters with one replica each (so a failover
 * has somewhere to go), and a Sentinel setup (1 master, 1 replica, 1 sentinel, quorum 1);
 * both can have more replicas per master, and both can lose a master to SIGKILL (a crash)
 * instead of a graceful failover. Ports are the OS's free ones, or free ones from a given
 * range. Every process is ours (children of the test), killed by `stop()`; their files live
 * in a temporary directory removed with them. Every wait has a deadline.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { Cluster, Redis } from 'ioredis';
import type {
  RedisClusterTarget,
  RedisSentinelTarget,
  RedisTarget,
} from '../../src/redis/client.js';
import { freePort, waitFor } from '../integration/auth/helpers.js';
import { run } from './processes.js';

const quiet = { stdio: 'ignore' } as const;

class Processes {
  readonly dir = mkdtempSync(join(tmpdir(), 'coap-edge-redis-'));
  readonly #children = new Map<number, ChildProcess>();

  start(port: number, args: readonly string[]): void {
    const child = spawn('redis-server', [...args], { ...quiet, cwd: this.dir });
    child.on('error', () => {});
    this.#children.set(port, child);
  }

  /** SIGKILL (a crash) of the server on `port`; resolves once it is gone. */
  async kill(port: number): Promise<void> {
    const child = this.#children.get(port);
    this.#children.delete(port);
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.#children.keys()].map((p) => this.kill(p)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A key in a slot of the node `c` talks to (from its CLUSTER NODES `myself` line). */
async function ownKey(c: Redis, nodes: readonly string[]): Promise<string | undefined> {
  const mine = nodes.find((l) => l.includes('myself'));
  const range = /(?:^|\s)(\d+)-(\d+)/.exec(mine?.split(' ').slice(8).join(' ') ?? '');
  if (range === null) return undefined;
  const [lo, hi] = [Number(range[1]), Number(range[2])];
  for (let i = 0; i < 100; i++) {
    const slot = Number(await c.cluster('KEYSLOT', `warm-up-${i}`));
    if (slot >= lo && slot <= hi) return `warm-up-${i}`;
  }
  return undefined;
}

function client(port: number): Redis {
  return new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, lazyConnect: false });
}

/** Whether the server on `port` answers ROLE as a master. */
async function isMaster(port: number): Promise<boolean> {
  const c = client(port);
  c.on('error', () => {});
  try {
    const role = (await c.call('ROLE')) as unknown[];
    return role[0] === 'master';
  } finally {
    c.disconnect();
  }
}

async function answers(port: number): Promise<boolean> {
  const c = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 300,
  });
  c.on('error', () => {});
  try {
    await c.connect();
    return (await c.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    c.disconnect();
  }
}

/** Ports to take: `[from, to]` inclusive; the OS's free ones when absent. */
export interface PortRange {
  readonly from: number;
  readonly to: number;
}

/** Whether `port` can be listened on at 127.0.0.1 now. */
async function canListen(port: number): Promise<boolean> {
  const srv = createServer();
  srv.on('error', () => {});
  const ok = await new Promise<boolean>((resolve) => {
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (ok) {
    srv.close();
    await once(srv, 'close');
  }
  return ok;
}

/** Picks free ports, from `range` when given, never the same one twice. */
class Ports {
  readonly #taken = new Set<number>();
  constructor(readonly range: PortRange | undefined) {}

  /** A free port (and, with `bus`, its cluster bus port +10000 free too). */
  async next(bus = false): Promise<number> {
    const r = this.range;
    for (let tries = 0; tries < 1_000; tries++) {
      const p =
        r === undefined
          ? await freePort()
          : r.from + Math.floor(Math.random() * (r.to - r.from + 1));
      if (this.#taken.has(p) || (bus && p > 55_000)) continue;
      if (r !== undefined && !(await canListen(p))) continue;
      if (bus && !(await canListen(p + 10_000))) continue;
      this.#taken.add(p);
      return p;
    }
    throw new Error('no free port');
  }
}

/** `fixture` once `start` succeeded; else stops what started and rethrows. */
async function started<F extends { stop(): Promise<void> }>(
  fixture: F,
  start: () => Promise<void>,
): Promise<F> {
  try {
    await start();
  } catch (err) {
    await fixture.stop();
    throw err;
  }
  return fixture;
}

const common = [
  '--bind',
  '127.0.0.1',
  '--save',
  '',
  '--appendonly',
  'no',
  // a replica's first full sync starts at once (else the master waits 5 s for more replicas)
  '--repl-diskless-sync-delay',
  '0',
];

export interface ClusterFixtureOptions {
  /** Replicas per master (3 masters). @default 1 */
  readonly replicas?: number;
  readonly ports?: PortRange;
}

export class RedisClusterFixture {
  readonly #procs = new Processes();
  readonly ports: number[] = [];
  readonly #replicas: number;
  readonly #portPicker: Ports;
  /** Nodes killed by {@link kill}. */
  readonly #dead = new Set<number>();

  private constructor(o: ClusterFixtureOptions) {
    this.#replicas = Math.max(1, o.replicas ?? 1);
    this.#portPicker = new Ports(o.ports);
  }

  static start(o: ClusterFixtureOptions = {}): Promise<RedisClusterFixture> {
    const f = new RedisClusterFixture(o);
    return started(f, () => f.#start());
  }

  async #start(): Promise<void> {
    for (let i = 0; i < 3 * (1 + this.#replicas); i++) {
      const port = await this.#portPicker.next(true);
      this.ports.push(port);
      this.#procs.start(port, [
        '--port',
        String(port),
        ...common,
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--cluster-node-timeout',
        '1000',
      ]);
    }
    for (const p of this.ports) await waitFor(() => answers(p), `cluster node ${p}`);
    // not spawnSync: redis-cli waits (1 s steps) for the cluster to join, and the event loop
    // may be other test files' too (scripts/test-groups.mjs, files side by side)
    const r = await run(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...this.ports.map((p) => `127.0.0.1:${p}`),
        '--cluster-replicas',
        String(this.#replicas),
        '--cluster-yes',
      ],
      { timeoutMs: 30_000 },
    );
    if (r.code !== 0) throw new Error(`redis-cli --cluster create failed: ${r.stdout}`);
    await this.waitHealthy();
  }

  /** Every node reports cluster_state:ok and every master has a replica online. */
  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    await waitFor(
      async () => {
        for (const p of this.live()) {
          const c = client(p);
          c.on('error', () => {});
          try {
            const info = String(await c.cluster('INFO'));
            if (!info.includes('cluster_state:ok')) return false;
            const nodes = String(await c.cluster('NODES'));
            const lines = nodes.split('\n').filter((l) => l.trim() !== '');
            const flags = lines.map((l) => l.split(' ')[2] ?? '');
            const replicas = flags.filter((f) => f.includes('slave'));
            if (flags.some((f) => f.includes('fail'))) return false;
            if (replicas.length < 3 * this.#replicas) return false;
            // A fresh replica acknowledges a master's first writes only on its 1 s cron: until
            // a write there is confirmed at once (WAIT), a test with redisWaitReplicas would
            // time out on the cluster's warm-up instead of on what it tests.
            const repl = await c.info('replication');
            if (/slave0:.*state=online/.test(repl)) {
              const key = await ownKey(c, lines);
              if (key === undefined) return false;
              await c.set(key, '1', 'EX', 60);
              if (Number(await c.wait(1, 100)) < 1) return false;
            } else if (!repl.includes('role:slave')) return false;
          } catch {
            return false;
          } finally {
            c.disconnect();
          }
        }
        return true;
      },
      'cluster healthy',
      timeoutMs,
    );
  }

  target(): RedisClusterTarget {
    return {
      kind: 'cluster',
      nodes: this.ports.slice(0, 3).map((port) => ({ host: '127.0.0.1', port })),
    };
  }

  /** A plain cluster client for checking keys. */
  client(): Cluster {
    const c = new Cluster(
      this.live().map((port) => ({ host: '127.0.0.1', port })),
      { redisOptions: { maxRetriesPerRequest: 1 } },
    );
    c.on('error', () => {});
    return c;
  }

  /** The nodes not killed. */
  live(): number[] {
    return this.ports.filter((p) => !this.#dead.has(p));
  }

  /** The port of the master serving `key`'s slot and of one of its replicas. */
  async ownerOf(key: string): Promise<{ master: number; replica: number }> {
    const { master, replica } = await this.#slotOwner(key);
    if (replica === undefined) throw new Error(`no replica of ${master}`);
    return { master, replica };
  }

  /** The port of the master serving `key`'s slot and of one of its live replicas, if any. */
  async #slotOwner(key: string): Promise<{ master: number; replica: number | undefined }> {
    const c = client(this.live()[0] ?? 0);
    try {
      const slot = Number(await c.cluster('KEYSLOT', key));
      const nodes = String(await c.cluster('NODES'))
        .split('\n')
        .filter((l) => l.trim() !== '');
      const portOf = (l: string): number => Number(/:(\d+)@/.exec(l)?.[1]);
      const master = nodes.find(
        (l) =>
          (l.split(' ')[2] ?? '').includes('master') &&
          !(l.split(' ')[2] ?? '').includes('fail') &&
          l
            .split(' ')
            .slice(8)
            .some((range) => {
              const [a, b] = range.split('-').map(Number);
              return a !== undefined && slot >= a && slot <= (b ?? a);
            }),
      );
      if (master === undefined) throw new Error(`no master for slot ${slot}`);
      const id = master.split(' ')[0] ?? '';
      const replica = nodes.find(
        (l) => l.split(' ')[3] === id && !(l.split(' ')[2] ?? '').includes('fail'),
      );
      return {
        master: portOf(master),
        replica: replica === undefined ? undefined : portOf(replica),
      };
    } finally {
      c.disconnect();
    }
  }

  /** Those of `keys` whose slot the master on `port` serves. */
  async keysServedBy(port: number, keys: readonly string[]): Promise<string[]> {
    const c = client(this.live()[0] ?? 0);
    try {
      const line = String(await c.cluster('NODES'))
        .split('\n')
        .find((l) => l.includes(`:${port}@`));
      const ranges = (line?.split(' ').slice(8) ?? [])
        .filter((r) => /^\d/.test(r))
        .map((r) => r.split('-').map(Number));
      const p = c.pipeline();
      for (const k of keys) p.cluster('KEYSLOT', k);
      const slots = ((await p.exec()) ?? []).map(([, v]) => Number(v));
      return keys.filter((_, i) => {
        const slot = slots[i] ?? -1;
        return ranges.some(([a = -1, b = a]) => slot >= a && slot <= b);
      });
    } finally {
      c.disconnect();
    }
  }

  /** SIGKILL of the node on `port` (a crash: no failover is asked for). */
  async kill(port: number): Promise<void> {
    this.#dead.add(port);
    await this.#procs.kill(port);
  }

  /**
   * Resolves with the port of the node that took `key`'s slot over from `dead`, once that
   * node itself answers ROLE as a master (the other nodes may learn it a little later).
   */
  async waitPromoted(key: string, dead: number, timeoutMs = 30_000): Promise<number> {
    let promoted = 0;
    await waitFor(
      async () => {
        try {
          const { master } = await this.#slotOwner(key);
          if (master === dead || !(await isMaster(master))) return false;
          promoted = master;
          return true;
        } catch {
          return false;
        }
      },
      `a replica of ${dead} promoted`,
      timeoutMs,
    );
    return promoted;
  }

  /** `CLUSTER FAILOVER` on `replica` (coordinated: it catches up first); waits for the switch. */
  async failover(replica: number): Promise<void> {
    const c = client(replica);
    try {
      await c.cluster('FAILOVER');
      await waitFor(
        async () => (await c.info('replication')).includes('role:master'),
        `node ${replica} promoted`,
        15_000,
      );
    } finally {
      c.disconnect();
    }
  }

  async stop(): Promise<void> {
    await this.#procs.stopAll();
  }
}

export const SENTINEL_MASTER = 'coap-edge-test';

export interface SentinelFixtureOptions {
  /** Replicas of the master. @default 1 */
  readonly replicas?: number;
  readonly ports?: PortRange;
}

export class RedisSentinelFixture {
  readonly #procs = new Processes();
  readonly #replicaCount: number;
  readonly #portPicker: Ports;
  master = 0;
  /** The first of {@link replicas}. */
  replica = 0;
  /** The replicas of {@link master} (the servers not killed). */
  replicas: number[] = [];
  sentinel = 0;

  private constructor(o: SentinelFixtureOptions) {
    this.#replicaCount = Math.max(1, o.replicas ?? 1);
    this.#portPicker = new Ports(o.ports);
  }

  static start(o: SentinelFixtureOptions = {}): Promise<RedisSentinelFixture> {
    const f = new RedisSentinelFixture(o);
    return started(f, () => f.#start());
  }

  async #start(): Promise<void> {
    this.master = await this.#portPicker.next();
    this.#procs.start(this.master, ['--port', String(this.master), ...common]);
    await waitFor(() => answers(this.master), 'sentinel master');
    for (let i = 0; i < this.#replicaCount; i++) {
      const port = await this.#portPicker.next();
      this.#procs.start(port, [
        '--port',
        String(port),
        ...common,
        '--replicaof',
        '127.0.0.1',
        String(this.master),
      ]);
      await waitFor(() => answers(port), 'sentinel replica');
      this.replicas.push(port);
    }
    this.replica = this.replicas[0] ?? 0;
    this.sentinel = await this.#portPicker.next();
    const conf = join(this.#procs.dir, `sentinel-${this.sentinel}.conf`);
    writeFileSync(
      conf,
      [
        `port ${this.sentinel}`,
        'bind 127.0.0.1',
        `sentinel monitor ${SENTINEL_MASTER} 127.0.0.1 ${this.master} 1`,
        `sentinel down-after-milliseconds ${SENTINEL_MASTER} 1000`,
        `sentinel failover-timeout ${SENTINEL_MASTER} 5000`,
        '',
      ].join('\n'),
    );
    this.#procs.start(this.sentinel, [conf, '--sentinel']);
    await waitFor(() => answers(this.sentinel), 'sentinel');
    await this.#waitReplicaKnown();
  }

  /** The sentinel knows the replicas and sees them in sync (else it cannot fail over to them). */
  async #waitReplicaKnown(): Promise<void> {
    const s = client(this.sentinel);
    try {
      await waitFor(
        async () => {
          const replicas = (await s.call('SENTINEL', 'REPLICAS', SENTINEL_MASTER)) as string[][];
          const synced = replicas.filter((r) => {
            const flags = r[r.indexOf('flags') + 1] ?? '';
            return flags === 'slave' && r[r.indexOf('master-link-status') + 1] === 'ok';
          });
          return synced.length >= this.#replicaCount;
        },
        'sentinel knows the replicas',
        20_000,
      );
    } finally {
      s.disconnect();
    }
  }

  target(): RedisSentinelTarget {
    return {
      kind: 'sentinel',
      sentinels: [{ host: '127.0.0.1', port: this.sentinel }],
      masterName: SENTINEL_MASTER,
    };
  }

  /** A plain client of the current master. */
  client(): Redis {
    const c = new Redis({
      sentinels: [{ host: '127.0.0.1', port: this.sentinel }],
      name: SENTINEL_MASTER,
      maxRetriesPerRequest: 1,
    });
    c.on('error', () => {});
    return c;
  }

  /** `SENTINEL FAILOVER`; resolves once the sentinel names the replica as master. */
  async failover(): Promise<void> {
    const s = client(this.sentinel);
    try {
      await s.call('SENTINEL', 'FAILOVER', SENTINEL_MASTER);
      await waitFor(
        async () => {
          const addr = (await s.call(
            'SENTINEL',
            'GET-MASTER-ADDR-BY-NAME',
            SENTINEL_MASTER,
          )) as string[];
          return Number(addr[1]) === this.replica;
        },
        'sentinel switched master',
        15_000,
      );
      this.replicas = [this.master, ...this.replicas.filter((p) => p !== this.replica)];
      [this.master, this.replica] = [this.replica, this.master];
    } finally {
      s.disconnect();
    }
  }

  /**
   * SIGKILL of the master (a crash: no failover is asked for); resolves with the new
   * master's port once the sentinel names a replica as master and that replica answers ROLE
   * as one. The killed server stays dead.
   */
  async killMaster(timeoutMs = 30_000): Promise<number> {
    const dead = this.master;
    await this.#procs.kill(dead);
    const s = client(this.sentinel);
    s.on('error', () => {});
    let promoted = 0;
    try {
      await waitFor(
        async () => {
          try {
            const addr = (await s.call(
              'SENTINEL',
              'GET-MASTER-ADDR-BY-NAME',
              SENTINEL_MASTER,
            )) as string[];
            const port = Number(addr[1]);
            if (port === dead || !this.replicas.includes(port)) return false;
            if (!(await isMaster(port))) return false;
            promoted = port;
            return true;
          } catch {
            return false;
          }
        },
        'sentinel promoted a replica',
        timeoutMs,
      );
    } finally {
      s.disconnect();
    }
    this.master = promoted;
    this.replicas = this.replicas.filter((p) => p !== promoted);
    this.replica = this.replicas[0] ?? 0;
    return promoted;
  }

  async stop(): Promise<void> {
    await this.#procs.stopAll();
  }
}

/** Either topology, seen by a test that crashes the master holding some keys. */
export interface CrashTopology {
  target(): RedisTarget;
  /** A plain client for checking keys (make it after a crash: it must know the new master). */
  client(): Redis | Cluster;
  /** The port of the master holding `key`. */
  masterOf(key: string): Promise<number>;
  /** Those of `keys` held by the master on `port`. */
  keysOn(port: number, keys: readonly string[]): Promise<string[]>;
  /** SIGKILL of the master on `port` (holding `key`); resolves with the promoted replica's port. */
  crash(port: number, key: string): Promise<number>;
  stop(): Promise<void>;
}

export type CrashTopologyName = 'cluster' | 'sentinel';

/**
 * A Redis Cluster (3 masters) or a Sentinel setup with `replicas` replicas per master, its
 * failure detection at 1 s; `crash` waits at most `timeoutMs` for the promotion.
 */
export async function startCrashTopology(
  name: CrashTopologyName,
  o: { replicas: number; ports?: PortRange; timeoutMs: number },
): Promise<CrashTopology> {
  if (name === 'cluster') {
    const c = await RedisClusterFixture.start(o);
    return {
      target: () => c.target(),
      client: () => c.client(),
      masterOf: async (key) => (await c.ownerOf(key)).master,
      keysOn: (port, keys) => c.keysServedBy(port, keys),
      crash: async (port, key) => {
        await c.kill(port);
        return c.waitPromoted(key, port, o.timeoutMs);
      },
      stop: () => c.stop(),
    };
  }
  const s = await RedisSentinelFixture.start(o);
  return {
    target: () => s.target(),
    client: () => s.client(),
    masterOf: () => Promise.resolve(s.master),
    keysOn: (_port, keys) => Promise.resolve([...keys]),
    crash: () => s.killMaster(o.timeoutMs),
    stop: () => s.stop(),
  };
}
