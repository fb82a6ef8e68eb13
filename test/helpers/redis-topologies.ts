/**
 * Real Redis topologies on free loopback ports, for the tests that run the Redis-backed
 * flows against them: a Redis Cluster of 3 masters with one replica each (so a failover
 * has somewhere to go), and a Sentinel setup (1 master, 1 replica, 1 sentinel, quorum 1).
 * Every process is ours (children of the test), killed by `stop()`; their files live in a
 * temporary directory removed with them. Every wait has a deadline.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import type { RedisClusterTarget, RedisSentinelTarget } from '../../src/redis/client.js';
import { freePort, waitFor } from '../integration/auth/helpers.js';

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

/** A free port whose cluster bus port (+10000) is free too. */
async function clusterPort(): Promise<number> {
  for (;;) {
    const p = await freePort();
    if (p > 55_000) continue;
    if (!(await answers(p + 10_000))) return p;
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

// a replica that must resync in full starts at once, not after the default 5 s wait for
// more replicas (docs/operations.md recommends the same)
const common = [
  '--bind',
  '127.0.0.1',
  '--save',
  '',
  '--appendonly',
  'no',
  '--repl-diskless-sync-delay',
  '0',
];

export class RedisClusterFixture {
  readonly #procs = new Processes();
  readonly ports: number[] = [];

  static start(): Promise<RedisClusterFixture> {
    const f = new RedisClusterFixture();
    return started(f, () => f.#start());
  }

  async #start(): Promise<void> {
    for (let i = 0; i < 6; i++) {
      const port = await clusterPort();
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
    const r = spawnSync(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...this.ports.map((p) => `127.0.0.1:${p}`),
        '--cluster-replicas',
        '1',
        '--cluster-yes',
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    if (r.status !== 0) throw new Error(`redis-cli --cluster create failed: ${r.stdout}`);
    await this.waitHealthy();
  }

  /** Every node reports cluster_state:ok and every master has a replica online. */
  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    await waitFor(
      async () => {
        for (const p of this.ports) {
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
            if (replicas.length < 3) return false;
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
      this.ports.map((port) => ({ host: '127.0.0.1', port })),
      { redisOptions: { maxRetriesPerRequest: 1 } },
    );
    c.on('error', () => {});
    return c;
  }

  /** The port of the master serving `key`'s slot and of one of its replicas. */
  async ownerOf(key: string): Promise<{ master: number; replica: number }> {
    const c = client(this.ports[0] ?? 0);
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
      const replica = nodes.find((l) => l.split(' ')[3] === id);
      if (replica === undefined) throw new Error(`no replica of ${id}`);
      return { master: portOf(master), replica: portOf(replica) };
    } finally {
      c.disconnect();
    }
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

export class RedisSentinelFixture {
  readonly #procs = new Processes();
  master = 0;
  replica = 0;
  sentinel = 0;

  static start(): Promise<RedisSentinelFixture> {
    const f = new RedisSentinelFixture();
    return started(f, () => f.#start());
  }

  async #start(): Promise<void> {
    this.master = await freePort();
    this.#procs.start(this.master, ['--port', String(this.master), ...common]);
    await waitFor(() => answers(this.master), 'sentinel master');
    this.replica = await freePort();
    this.#procs.start(this.replica, [
      '--port',
      String(this.replica),
      ...common,
      '--replicaof',
      '127.0.0.1',
      String(this.master),
    ]);
    await waitFor(() => answers(this.replica), 'sentinel replica');
    this.sentinel = await freePort();
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

  /** The sentinel knows the replica and sees it in sync (else it cannot fail over to it). */
  async #waitReplicaKnown(): Promise<void> {
    const s = client(this.sentinel);
    try {
      await waitFor(
        async () => {
          const replicas = (await s.call('SENTINEL', 'REPLICAS', SENTINEL_MASTER)) as string[][];
          return replicas.some((r) => {
            const flags = r[r.indexOf('flags') + 1] ?? '';
            return flags === 'slave' && r[r.indexOf('master-link-status') + 1] === 'ok';
          });
        },
        'sentinel knows the replica',
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
      [this.master, this.replica] = [this.replica, this.master];
    } finally {
      s.disconnect();
    }
  }

  async stop(): Promise<void> {
    await this.#procs.stopAll();
  }
}
