/**
 * "Pods" for presence tests: a PresenceTracker on a RedisPresenceStore with its own fail-fast
 * Redis connection (as the gateway configures it), collecting the events it publishes.
 */
import { AuthStats } from '../../../src/auth/stats.js';
import { RedisConnection } from '../../../src/auth/redis-connection.js';
import {
  PresenceTracker,
  RedisPresenceStore,
  type PresenceEvent,
  type PresenceTrackerOptions,
} from '../../../src/bridge/presence/index.js';
import type { Principal } from '../../../src/bridge/types.js';
import { waitFor } from '../auth/helpers.js';

export { waitFor, prefix, RedisServer } from '../auth/helpers.js';

/** The Redis the CI provides (REDIS_URL overrides). */
export const SHARED_REDIS = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export const T0 = Date.UTC(2026, 4, 1, 10, 0, 0);

export class Clock {
  t = T0;
  readonly now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

export function principal(sessionId: string, dk = 'dk', lifetime = 30): Principal {
  return {
    productKey: 'pk',
    deviceKey: dk,
    secureMode: 2,
    lifetime,
    assetId: undefined,
    sessionId,
  };
}

export interface Pod {
  readonly name: string;
  readonly conn: RedisConnection;
  readonly store: RedisPresenceStore;
  readonly tracker: PresenceTracker;
  readonly events: PresenceEvent[];
  close(): Promise<void>;
}

export async function startPod(
  name: string,
  url: string,
  redisPrefix: string,
  o: Partial<PresenceTrackerOptions> & { commandTimeoutMs?: number } = {},
): Promise<Pod> {
  const conn = new RedisConnection({
    url,
    stats: new AuthStats(),
    commandTimeoutMs: o.commandTimeoutMs ?? 300,
    maxBackoffMs: 100,
  });
  await waitFor(() => conn.state === 'connected', `${name}: Redis connected`);
  const store = new RedisPresenceStore({ client: conn.client, prefix: redisPrefix });
  const events: PresenceEvent[] = [];
  const tracker = new PresenceTracker({
    sweepIntervalMs: 5_000,
    ...o,
    store,
    publish: (ev) => {
      events.push(ev);
      return Promise.resolve();
    },
  });
  return {
    name,
    conn,
    store,
    tracker,
    events,
    async close() {
      await tracker.close();
      conn.close();
    },
  };
}

export const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Until every pod has nothing in flight (no sweep, store call or publish): see `settled()`. */
export async function settled(...pods: readonly Pod[]): Promise<void> {
  await Promise.all(pods.map((p) => p.tracker.settled()));
}

/**
 * Until each pod has finished `n` more sweeps (the first may be one already running: n = 2
 * includes a whole sweep started from now), then until all are settled.
 */
export async function sweptAndSettled(n: number, ...pods: readonly Pod[]): Promise<void> {
  const target = pods.map((p) => p.tracker.sweepsCompleted + n);
  await waitFor(
    () => pods.every((p, i) => p.tracker.sweepsCompleted >= (target[i] ?? 0)),
    `${n} more sweeps on ${pods.map((p) => p.name).join(', ')}`,
  );
  await settled(...pods);
}

/** `status:reason` of each event, per device, sorted. */
export function byDevice(events: readonly PresenceEvent[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const e of [...events].sort((a, b) => a.seq - b.seq)) {
    (out[e.deviceKey] ??= []).push(`${e.status}:${e.reason}`);
  }
  return out;
}
