/** Redis command stores for the integration tests: unique prefixes, keys removed afterwards. */
import { Redis } from 'ioredis';
import {
  RedisCommandStore,
  type RedisCommandStoreOptions,
} from '../../../src/bridge/commands/index.js';
import { prefix } from '../auth/helpers.js';
import { COMMAND_STORE_DEFAULTS } from '../../helpers/component-defaults.js';

export const REDIS_URL = 'redis://127.0.0.1:6379';

/** Starts a store and waits until both its connections are ready. */
export async function startStore(
  o: Partial<RedisCommandStoreOptions> & { prefix: string },
): Promise<RedisCommandStore> {
  const store = new RedisCommandStore({
    ...COMMAND_STORE_DEFAULTS,
    url: REDIS_URL,
    queueLength: 16,
    expiryMs: 48 * 3_600_000,
    maxBackoffMs: 100,
    ...o,
    commandTimeoutMs: o.commandTimeoutMs ?? COMMAND_STORE_DEFAULTS.commandTimeoutMs,
  });
  // ends as soon as both connections are up; the bound is for a starved machine
  if (!(await store.waitReady(30_000))) {
    await store.close();
    throw new Error('command store did not connect');
  }
  return store;
}

/** A plain client; `dropKeys` removes everything under a prefix. */
export function rawClient(url = REDIS_URL): Redis {
  return new Redis(url, { maxRetriesPerRequest: 1 });
}

export async function dropKeys(client: Redis, p: string): Promise<void> {
  const keys = await client.keys(`${p}:*`);
  if (keys.length > 0) await client.del(...keys);
}

export { prefix };
