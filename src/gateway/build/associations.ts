/**
 * DTLS associations shared between pods through Redis (docs/design.md, "Shared
 * associations"): the store's connections, its readiness, and the principal's codec.
 */
import { z } from 'zod';
import type { Principal } from '../../bridge/types.js';
import type { Config } from '../../config/load.js';
import type { PrincipalCodec } from '../../dtls/server.js';
import type { SharingOptions } from '../../dtls/sharing.js';
import { RedisAssociationStore } from '../../redis/association-store.js';
import {
  closeRedis,
  createFailFastRedis,
  durabilityFor,
  type RedisTarget,
} from '../../redis/client.js';
import type { Logger } from '../../telemetry/log.js';
import type { Clock } from '../../time/clock.js';
import type { ReadinessCheck } from '../admin-server.js';
import type { Closer } from './context.js';

/**
 * Association sharing between pods: on with Redis and an association key. The principal
 * travels in the sealed snapshot as JSON and is checked on the way back.
 */
export function sharedAssociations(
  config: Config,
  redis: RedisTarget | undefined,
  log: Logger,
  closers: Closer[],
  checks: ReadinessCheck[],
  clock: Clock,
):
  | (SharingOptions & {
      principal: PrincipalCodec<Principal>;
      /** The store's client has been connected at least once. */
      connected: () => boolean;
    })
  | undefined {
  const key = config.associationKey;
  if (key === undefined) return undefined;
  if (redis === undefined) {
    log.warn('associationKey is set but Redis is not: associations are not shared');
    return undefined;
  }
  const client = createFailFastRedis({
    url: redis,
    connectionName: 'coap-edge-associations',
    commandTimeoutMs: config.redisCommandTimeoutMs,
    onError: () => undefined,
  });
  closers.push(() => closeRedis(client, clock));
  // leases that wait for replicas (WAIT) get a connection of their own: WAIT holds the one it
  // is sent on, and lookups behind it would time out
  const durableClient =
    config.redisWaitReplicas > 0
      ? createFailFastRedis({
          url: redis,
          connectionName: 'coap-edge-associations-durable',
          commandTimeoutMs: config.redisCommandTimeoutMs,
          onError: () => undefined,
        })
      : client;
  if (durableClient !== client) closers.push(() => closeRedis(durableClient, clock));
  checks.push({
    name: 'redis-associations',
    ok: () => client.status === 'ready' && durableClient.status === 'ready',
  });
  let connected = false;
  client.once('ready', () => (connected = true));
  log.info('DTLS associations are shared through Redis');
  return {
    store: new RedisAssociationStore({
      client,
      prefix: config.redisPrefix,
      durability: durabilityFor(config.redisWaitReplicas, config.redisCommandTimeoutMs),
      durableClient,
    }),
    key: /^[0-9a-fA-F]{64}$/.test(key) ? Buffer.from(key, 'hex') : Buffer.from(key, 'base64'),
    ttlMs: config.idleTimeoutSeconds * 1000,
    rxLease: config.associationFenceRecords,
    principal: principalCodec,
    connected: () => connected,
  };
}

const principalSchema = z.object({
  productKey: z.string(),
  deviceKey: z.string(),
  secureMode: z.union([z.literal(2), z.literal(3)]),
  lifetime: z.number(),
  assetId: z.string().optional(),
  sessionId: z.string(),
});

const principalCodec: PrincipalCodec<Principal> = {
  encode: (p) => ({
    productKey: p.productKey,
    deviceKey: p.deviceKey,
    secureMode: p.secureMode,
    lifetime: p.lifetime,
    ...(p.assetId !== undefined ? { assetId: p.assetId } : {}),
    sessionId: p.sessionId,
  }),
  decode: (v) => {
    const r = principalSchema.safeParse(v);
    return r.success ? { ...r.data, assetId: r.data.assetId } : undefined;
  },
};
