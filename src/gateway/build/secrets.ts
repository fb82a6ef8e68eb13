/**
 * Where device secrets come from: the devices file, the in-process cache, Redis, the
 * registry (docs/design.md, "Secrets"), and the PSK resolver the DTLS handshake asks.
 */
import { DevicesFile } from '../../auth/devices-file.js';
import { PskResolver } from '../../auth/psk-resolver.js';
import { createSecretStack, type SecretStack } from '../../auth/stack.js';
import type { RedisTarget } from '../../redis/client.js';
import type { MetricSources } from '../../telemetry/metrics.js';
import type { ReadinessCheck } from '../admin-server.js';
import type { BuildContext, Built } from './context.js';

export interface Secrets {
  readonly secrets: SecretStack;
  readonly resolver: PskResolver;
}

export function buildSecrets(
  { config, log, clock, closers }: BuildContext,
  redis: RedisTarget | undefined,
): Built<Secrets, Pick<MetricSources, 'auth'>> {
  const devices = config.devices !== undefined ? DevicesFile.load(config.devices) : undefined;
  if (devices !== undefined) {
    log.info(
      { file: config.devices, products: devices.productCount, devices: devices.deviceCount },
      'devices file loaded',
    );
  }
  const secrets = createSecretStack({
    devicesFile: devices,
    redisUrl: redis,
    redisPrefix: config.redisPrefix,
    redisWaitReplicas: config.redisWaitReplicas,
    redisCommandTimeoutMs: config.redisCommandTimeoutMs,
    registryUrl: config.registryUrl,
    registryToken: config.registryToken,
    registryTimeoutMs: config.registryTimeoutMs,
    cacheSize: config.secretCacheSize,
    cacheTtlMs: config.secretCacheTtlSeconds * 1000,
    redisTtlMs: config.redisCacheTtlSeconds * 1000,
    negativeTtlMs: config.negativeCacheTtlSeconds * 1000,
    // the LRU lifetimes, the registry breaker's cool-down and the registry's request
    // deadline follow the gateway's one clock
    now: () => clock.now(),
    clock,
  });
  closers.push(() => secrets.close());
  const resolver = new PskResolver(secrets.source);
  const checks: ReadinessCheck[] = [];
  if (redis !== undefined) {
    checks.push({ name: 'redis', ok: () => secrets.redisState() === 'connected' });
  }
  return { component: { secrets, resolver }, checks, metrics: { auth: secrets.stats } };
}
