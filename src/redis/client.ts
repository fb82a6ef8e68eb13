/**
 * The one way coap-edge configures ioredis, for every use (secret cache, activation store,
 * command queues, presence): fail fast instead of queueing (research/style-models.md §2,
 * §10 item 10). A dead Redis costs an immediate error, a hung one at most the command
 * timeout; ioredis reconnects by itself, forever, with capped and jittered backoff; 'error'
 * events go to the caller's counter and are never unhandled.
 */
import { Redis, type RedisOptions } from 'ioredis';

export interface FailFastRedisOptions {
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

/** Reconnect delay: 50 ms doubling per attempt, capped, with up to 50 % random jitter. */
export function reconnectDelay(attempt: number, maxBackoffMs: number): number {
  const base = Math.min(maxBackoffMs, 50 * 2 ** Math.min(Math.max(attempt - 1, 0), 16));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

export function createFailFastRedis(o: FailFastRedisOptions): Redis {
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
    // subscribers subscribe again themselves on every 'ready'
    autoResubscribe: false,
    enableReadyCheck: true,
    lazyConnect: false,
    connectionName: o.connectionName,
    // close waits this long at most for a socket that never reports 'close'
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
