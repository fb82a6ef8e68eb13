/**
 * ioredis clients of the command store, configured like the secret chain's
 * (`auth/redis-connection.ts`): fail fast instead of queueing while Redis is away, a per-command
 * deadline, reconnection forever with capped, jittered backoff, 'error' events counted.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { reconnectDelay } from '../../auth/redis-connection.js';

export interface CommandRedisOptions {
  /** `redis://[:password@]host:port/db` or `rediss://…`. */
  readonly url: string;
  readonly connectionName: string;
  /** Per-command deadline in ms. @default 300 */
  readonly commandTimeoutMs?: number | undefined;
  /** TCP connect deadline in ms. @default 1000 */
  readonly connectTimeoutMs?: number | undefined;
  /** Longest wait between reconnection attempts in ms (before jitter). @default 1000 */
  readonly maxBackoffMs?: number | undefined;
  /** Called on every 'error' event (its message may name the host: count it, don't log it). */
  readonly onError: () => void;
}

export function createCommandRedis(o: CommandRedisOptions): Redis {
  const maxBackoffMs = o.maxBackoffMs ?? 1_000;
  const options: RedisOptions = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: o.commandTimeoutMs ?? 300,
    connectTimeout: o.connectTimeoutMs ?? 1_000,
    retryStrategy: (attempt: number) => reconnectDelay(attempt, maxBackoffMs),
    reconnectOnError: null,
    // the store subscribes again itself on every 'ready' (and then looks at every waiter)
    autoResubscribe: false,
    enableReadyCheck: true,
    lazyConnect: false,
    connectionName: o.connectionName,
    disconnectTimeout: 200,
  };
  const client = new Redis(o.url, options);
  client.on('error', o.onError);
  return client;
}

/** Disconnects at once (no reconnection) and waits, at most 1 s, until the client ended. */
export async function closeRedis(client: Redis): Promise<void> {
  if (client.status === 'end') return;
  await new Promise<void>((resolve) => {
    const guard = setTimeout(resolve, 1_000);
    client.once('end', () => {
      clearTimeout(guard);
      resolve();
    });
    client.disconnect(false);
  });
}
