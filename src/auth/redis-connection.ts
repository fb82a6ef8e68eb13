/**
 * The one ioredis client of a secret stack (configured by `createFailFastRedis`), with the
 * connection state the readiness check and metrics read.
 */
import { createFailFastRedis, type RedisClient, type RedisTarget } from '../redis/client.js';
import type { AuthStats, RedisState } from './stats.js';

export { reconnectDelay } from '../redis/client.js';

export interface RedisConnectionOptions {
  /** `redis://[:password@]host:port/db`, `rediss://…`, or a cluster / sentinel target. */
  readonly url: RedisTarget;
  readonly stats: AuthStats;
  /** Per-command deadline in ms (setting `redisCommandTimeoutMs`). */
  readonly commandTimeoutMs: number;
  /** TCP connect deadline in ms. @default 1000 */
  readonly connectTimeoutMs?: number | undefined;
  /** Longest wait between reconnection attempts in ms (before jitter). @default 1000 */
  readonly maxBackoffMs?: number | undefined;
}

export class RedisConnection {
  readonly client: RedisClient;
  /** Set on 'error'/'close', cleared on 'ready': a reconnect attempt then reads as `down`. */
  #failedSinceReady = false;
  #closed = false;

  constructor(o: RedisConnectionOptions) {
    this.client = createFailFastRedis({
      url: o.url,
      connectionName: 'coap-edge',
      commandTimeoutMs: o.commandTimeoutMs,
      connectTimeoutMs: o.connectTimeoutMs,
      maxBackoffMs: o.maxBackoffMs,
      onError: () => {
        // the message may name the host; it is counted, the state getter tells the rest
        o.stats.redisConnectionErrors++;
        this.#failedSinceReady = true;
      },
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
