/**
 * The one way coap-edge configures ioredis, for every use (secret cache, activation store,
 * command queues, presence): fail fast instead of queueing. A dead Redis costs an immediate error, a hung one at most the command
 * timeout; ioredis reconnects by itself, forever, with capped and jittered backoff; 'error'
 * events go to the caller's counter and are never unhandled.
 *
 * Three topologies, all through ioredis itself:
 * - a single server (or a primary behind a load balancer) given by URL;
 * - a Redis Cluster given by seed nodes: ioredis learns the slot map, follows MOVED/ASK and
 *   refreshes the map after a failover;
 * - a primary found through Sentinel: ioredis asks the sentinels for the master of a name
 *   on every (re)connection, and reconnects when the server it talks to turns read-only
 *   (it was demoted by a failover).
 */
import { createRequire } from 'node:module';
import { CoapEdgeError } from '../errors/index.js';
import { systemClock, type Clock } from '../time/clock.js';
import type * as IORedis from 'ioredis';
import type { Cluster, ClusterOptions, Redis, RedisOptions } from 'ioredis';

export interface RedisNode {
  readonly host: string;
  readonly port: number;
}

/** Credentials and TLS for cluster and sentinel targets (a URL carries its own). */
export interface RedisAuth {
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  /** TLS to the data nodes (and to the sentinels). */
  readonly tls?: boolean | undefined;
  /** CA bundle (PEM) trusted for TLS; the system CAs when absent. */
  readonly tlsCa?: string | undefined;
}

export interface RedisClusterTarget extends RedisAuth {
  readonly kind: 'cluster';
  /** Seed nodes; ioredis discovers the others. */
  readonly nodes: readonly RedisNode[];
}

export interface RedisSentinelTarget extends RedisAuth {
  readonly kind: 'sentinel';
  readonly sentinels: readonly RedisNode[];
  /** The master name the sentinels monitor. */
  readonly masterName: string;
  /** Password of the sentinels themselves, when they require one. */
  readonly sentinelPassword?: string | undefined;
}

/**
 * Where Redis is: `redis://[:password@]host:port/db` or `rediss://…` for one server, or a
 * cluster / sentinel description.
 */
export type RedisTarget = string | RedisClusterTarget | RedisSentinelTarget;

/** A client of any topology: both offer the same commands and events. */
export type RedisClient = Redis | Cluster;

/** A Redis Cluster client (ioredis's own flag: no class needed, so no import of ioredis). */
function isCluster(client: RedisClient): client is Cluster {
  return client.isCluster;
}

export interface FailFastRedisOptions {
  readonly url: RedisTarget;
  readonly connectionName: string;
  /** Per-command deadline in ms (setting `redisCommandTimeoutMs`). */
  readonly commandTimeoutMs: number;
  /** TCP connect deadline in ms. @default 1000 */
  readonly connectTimeoutMs?: number | undefined;
  /** Longest wait between reconnection attempts in ms (before jitter). @default 1000 */
  readonly maxBackoffMs?: number | undefined;
  /** Called on every 'error' event (its message may name the host: count it, don't log it). */
  readonly onError: () => void;
}

/** Reconnect delay: 50 ms doubling per attempt, capped, with up to 50 % random jitter. */
export function reconnectDelay(attempt: number, maxBackoffMs: number): number {
  const base = Math.min(maxBackoffMs, 50 * 2 ** Math.min(Math.max(attempt - 1, 0), 16));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

/** A write reached a replica that a failover made read-only: reconnect to the new master. */
function reconnectWhenReadOnly(err: Error): boolean {
  return err.message.startsWith('READONLY');
}

function tlsOptions(a: RedisAuth): RedisOptions['tls'] {
  if (a.tls !== true) return undefined;
  return a.tlsCa === undefined ? {} : { ca: a.tlsCa };
}

export function createFailFastRedis(o: FailFastRedisOptions): RedisClient {
  // ioredis (45 files and five packages, ~300 ms of CPU to load) is required only when a
  // connection is made: a gateway without Redis never loads it (docs/testing.md, "Suite time")
  const { Cluster, Redis } = createRequire(import.meta.url)('ioredis') as typeof IORedis;
  const maxBackoffMs = o.maxBackoffMs ?? 1_000;
  const perConnection = {
    // commands in flight when the connection drops fail instead of being retried
    maxRetriesPerRequest: 0,
    commandTimeout: o.commandTimeoutMs,
    connectTimeout: o.connectTimeoutMs ?? 1_000,
    // subscribers subscribe again themselves on every 'ready'
    autoResubscribe: false,
    connectionName: o.connectionName,
    // close waits this long at most for a socket that never reports 'close'
    disconnectTimeout: 200,
  } satisfies RedisOptions;
  const retryStrategy = (attempt: number): number => reconnectDelay(attempt, maxBackoffMs);
  let client: RedisClient;
  const t = o.url;
  if (typeof t === 'string') {
    client = new Redis(t, {
      ...perConnection,
      // fail at once while disconnected instead of queueing until Redis is back
      enableOfflineQueue: false,
      retryStrategy,
      // never give up: a Redis that comes back is used again without a restart
      reconnectOnError: null,
      enableReadyCheck: true,
      lazyConnect: false,
    });
  } else if (t.kind === 'cluster') {
    const options: ClusterOptions = {
      enableOfflineQueue: false,
      enableReadyCheck: true,
      lazyConnect: false,
      clusterRetryStrategy: retryStrategy,
      // a command that meets a failover (connection closed, CLUSTERDOWN, TRYAGAIN) is sent
      // again after this delay, at most maxRedirections times: a failover of a few
      // seconds is bridged, a cluster that stays down still fails the command. A command
      // whose connection closed after it ran runs twice: an enqueue is then deduplicated
      // by its message ID, a command without one may be queued twice (at least once)
      retryDelayOnFailover: 200,
      retryDelayOnClusterDown: 200,
      retryDelayOnTryAgain: 100,
      maxRedirections: 16,
      slotsRefreshTimeout: o.connectTimeoutMs ?? 1_000,
      redisOptions: {
        ...perConnection,
        username: t.username,
        password: t.password,
        tls: tlsOptions(t),
      },
    };
    client = new Cluster(
      t.nodes.map((n) => ({ host: n.host, port: n.port })),
      options,
    );
  } else {
    const tls = tlsOptions(t);
    client = new Redis({
      ...perConnection,
      enableOfflineQueue: false,
      retryStrategy,
      reconnectOnError: reconnectWhenReadOnly,
      enableReadyCheck: true,
      lazyConnect: false,
      sentinels: t.sentinels.map((n) => ({ host: n.host, port: n.port })),
      name: t.masterName,
      role: 'master',
      username: t.username,
      password: t.password,
      sentinelPassword: t.sentinelPassword,
      tls,
      sentinelTLS: tls,
      enableTLSForSentinelMode: tls !== undefined,
      sentinelCommandTimeout: o.connectTimeoutMs ?? 1_000,
      // the sentinels announce a failover at once instead of the next command failing
      failoverDetector: true,
    });
  }
  client.on('error', o.onError);
  return client;
}

/** How long {@link closeRedis} waits for a client to end. */
export const CLOSE_GUARD_MS = 1_000;

/**
 * Disconnects at once (no reconnection) and waits, at most 1 s ({@link CLOSE_GUARD_MS}) on
 * `clock`, until the client ended.
 * Resolves `true` when it ended (or had nothing open), `false` when the wait gave up.
 * A single-server or Sentinel client waiting to reconnect has no socket: `disconnect()` only
 * cancels its reconnection timer and ioredis emits no 'end' for it, so it is done at once
 * (a pod whose Redis is down used to spend the whole second per client at shutdown).
 */
export async function closeRedis(
  client: RedisClient,
  clock: Clock = systemClock,
): Promise<boolean> {
  if (client.status === 'end') return true;
  if (client.status === 'reconnecting' && !isCluster(client)) {
    client.disconnect(false);
    return true;
  }
  return new Promise<boolean>((resolve) => {
    // held open like the client's socket: shutdown waits for the end or the guard
    const guard = clock.setTimeout(() => resolve(false), CLOSE_GUARD_MS, true);
    client.once('end', () => {
      clock.clearTimeout(guard);
      resolve(true);
    });
    client.disconnect(false);
  });
}

/** `host:port` (IPv6 as `[addr]:port`) → node, or `undefined` when it is not one. */
export function parseRedisNode(text: string): RedisNode | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(text.trim());
  if (m === null) return undefined;
  const host = m[1] ?? m[2];
  const port = Number(m[3]);
  if (host === undefined || !(port >= 1 && port <= 65535)) return undefined;
  return { host, port };
}

/**
 * How many replicas must have a write before it is acknowledged, and how long to wait for
 * them (Redis `WAIT`). Replication is asynchronous: without this, a write the master
 * answered can vanish when a replica that never got it is promoted.
 */
export interface Durability {
  readonly replicas: number;
  readonly timeoutMs: number;
}

/**
 * The durability of writes on connections with this per-command deadline: `WAIT` gets 80 % of
 * it, so that it answers before the command timeout fails the write. None for 0 replicas.
 */
export function durabilityFor(replicas: number, commandTimeoutMs: number): Durability | undefined {
  const wanted = Math.max(0, Math.floor(replicas));
  return wanted > 0
    ? { replicas: wanted, timeoutMs: Math.max(1, Math.floor(commandTimeoutMs * 0.8)) }
    : undefined;
}

/** Fewer replicas than asked confirmed a write in time; the master may still have it. */
export class RedisNotReplicatedError extends CoapEdgeError {
  readonly code = 'REDIS_NOT_REPLICATED';
  constructor(
    readonly replicas: number,
    readonly wanted: number,
  ) {
    super(`write reached ${replicas} of ${wanted} replicas`);
    this.name = 'RedisNotReplicatedError';
  }
}

/**
 * Redis answered a command with a reply of the wrong shape (a script or server that is not
 * ours, or a key written by something else). The message names the operation only: the
 * reply may hold a sealed association.
 */
export class RedisReplyError extends CoapEdgeError {
  readonly code = 'REDIS_UNEXPECTED_REPLY';
  constructor(readonly operation: string) {
    super(`unexpected Redis reply to ${operation}`);
    this.name = 'RedisReplyError';
  }
}

/**
 * Runs the write(s) `add` queues on a pipeline, followed by `WAIT` on the same connection
 * (a cluster sends the whole pipeline to the node of its keys), and answers the last
 * write's reply. Rejects with the write's own error, or {@link RedisNotReplicatedError}.
 * Without durability (`replicas` 0) the pipeline is just the write.
 */
export async function writeDurably(
  client: RedisClient,
  durability: Durability | undefined,
  add: (p: ReturnType<RedisClient['pipeline']>) => void,
): Promise<unknown> {
  const wanted = durability?.replicas ?? 0;
  for (let attempt = 1; ; attempt++) {
    const p = client.pipeline();
    add(p);
    if (wanted > 0 && durability !== undefined) p.wait(wanted, Math.max(1, durability.timeoutMs));
    const replies = (await p.exec()) ?? [];
    const writes = wanted > 0 ? replies.slice(0, -1) : replies;
    const failed = writes.find(([err]) => err !== null)?.[0];
    if (failed !== undefined && failed !== null) {
      // after a cluster failover the pipeline meets the old master: its write is refused
      // with MOVED (so it did not happen) but its WAIT fails otherwise, and ioredis
      // follows a pipeline's redirection only when every reply is the same MOVED
      if (isCluster(client) && failed.message.startsWith('MOVED ') && attempt < 3) {
        await new Promise<void>((resolve) => client.refreshSlotsCache(() => resolve()));
        continue;
      }
      throw failed;
    }
    if (wanted > 0) {
      const [waitErr, got] = replies[replies.length - 1] ?? [null, 0];
      if (waitErr !== null) throw waitErr;
      if (typeof got !== 'number' || got < wanted) {
        throw new RedisNotReplicatedError(typeof got === 'number' ? got : 0, wanted);
      }
    }
    return writes[writes.length - 1]?.[1];
  }
}
