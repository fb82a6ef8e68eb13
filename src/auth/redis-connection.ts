/**
 * The one ioredis client of a secret stack, configured to fail fast instead of queueing
 * (research/style-models.md §2, §10 item 10): a dead Redis costs an immediate error, a
 * hung one at most `commandTimeout`; ioredis reconnects by itself with capped, jittered
 * backoff, and its 'error' events are counted, never unhandled.
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { AuthStats, RedisState } from './stats.js';

export interface RedisConnectionOptions {
  /** `redis://[:password@]host:port/db` or `rediss://…`. */
  readonly url: string;
  readonly stats: AuthStats;
  /** Per-command deadline in ms. @default 300 */
  readonly commandTimeoutMs?: number | undefined;
  /** TCP connect deadline in ms. @default 1000 */
  readonly connectTimeoutMs?: number | undefined;
  /** Longest wait between reconnection attempts in ms (before jitter). @default 1000 */
  readonly maxBackoffMs?: number | undefined;
}

/** Reconnect delay: 50 ms doubling per attempt, capped, with up to 50 % random jitter. */
export function reconnectDelay(attempt: number, maxBackoffMs: number): number {
  const base = Math.min(maxBackoffMs, 50 * 2 ** Math.min(Math.max(attempt - 1, 0), 16));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

export class RedisConnection {
  readonly client: Redis;
  /** Set on 'error'/'close', cleared on 'ready': a reconnect attempt then reads as `down`. */
  #failedSinceReady = false;
  #closed = false;

  constructor(o: RedisConnectionOptions) {
    const maxBackoffMs = o.maxBackoffMs ?? 1_000;
    const options: RedisOptions = {
      // fail at once while disconnected instead of queueing until Redis is back
      enableOfflineQueue: false,
      // commands in flight when the connection drops fail instead of being retried
      maxRetriesPerRequest: 0,
      commandTimeout: o.commandTimeoutMs ?? 300,
      connectTimeout: o.connectTimeoutMs ?? 1_000,
      retryStrategy: (attempt: number) => reconnectDelay(attempt, maxBackoffMs),
      // never give up: a Redis that comes back is used again without a restart
      reconnectOnError: null,
      autoResubscribe: false,
      enableReadyCheck: true,
      lazyConnect: false,
      connectionName: 'coap-edge',
      // close() waits this long at most for a socket that never reports 'close'
      disconnectTimeout: 200,
    };
    this.client = new Redis(o.url, options);
    this.client.on('error', () => {
      // the message may name the host; it is counted, the state getter tells the rest
      o.stats.redisConnectionErrors++;
      this.#failedSinceReady = true;
    });
    this.client.on('close', () => {
      this.#failedSinceReady = true;
    });
    this.client.on('ready', () => {
      this.#failedSinceReady = false;
    });
  }

  /** `connected` when commands can be sent, `connecting` on the first attempt, else `down`. */
  get state(): RedisState {
    if (this.#closed) return 'down';
    switch (this.client.status) {
      case 'ready':
        return 'connected';
      case 'wait':
      case 'connecting':
      case 'connect':
        return this.#failedSinceReady ? 'down' : 'connecting';
      default:
        return 'down';
    }
  }

  /** Disconnects at once (no reconnection); commands in flight fail. */
  close(): void {
    this.#closed = true;
    this.client.disconnect(false);
  }
}
