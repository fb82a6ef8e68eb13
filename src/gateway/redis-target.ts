/**
 * Which Redis the settings name: one URL, a Cluster's seed nodes, or Sentinels and a master
 * name (at most one of the three), with the credentials and TLS of the latter two.
 */
import { readFileSync } from 'node:fs';
import type { Config } from '../config/load.js';
import { parseRedisNode, type RedisNode, type RedisTarget } from '../redis/client.js';

/** The target, `undefined` without Redis, or the problem to report at start-up. */
export function redisTargetOf(
  config: Config,
): { readonly target: RedisTarget | undefined } | { readonly error: string } {
  const given = [
    config.redisUrl !== undefined ? 'redisUrl' : undefined,
    config.redisCluster !== undefined ? 'redisCluster' : undefined,
    config.redisSentinels !== undefined ? 'redisSentinels' : undefined,
  ].filter((n) => n !== undefined);
  if (given.length > 1) return { error: `${given.join(' and ')}: set only one of them` };
  if ((config.redisSentinels === undefined) !== (config.redisSentinelMaster === undefined)) {
    return { error: 'redisSentinels and redisSentinelMaster go together' };
  }
  const extras: string[] = (
    ['redisUsername', 'redisPassword', 'redisSentinelPassword', 'redisTlsCa'] as const
  ).filter((k) => config[k] !== undefined);
  if (config.redisTls) extras.push('redisTls');
  if (config.redisUrl !== undefined || given.length === 0) {
    if (extras.length > 0) {
      return {
        error: `${extras.join(', ')}: only for redisCluster or redisSentinels (a redisUrl carries its own credentials, rediss:// for TLS)`,
      };
    }
    return { target: config.redisUrl };
  }
  let tlsCa: string | undefined;
  if (config.redisTlsCa !== undefined) {
    try {
      tlsCa = readFileSync(config.redisTlsCa, 'utf8');
    } catch (err: unknown) {
      const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
      return { error: `redisTlsCa: cannot read ${config.redisTlsCa}: ${code}` };
    }
  }
  const auth = {
    username: config.redisUsername,
    password: config.redisPassword,
    tls: config.redisTls || tlsCa !== undefined,
    tlsCa,
  };
  if (config.redisCluster !== undefined) {
    if (config.redisSentinelPassword !== undefined) {
      return { error: 'redisSentinelPassword: only with redisSentinels' };
    }
    const nodes = nodesOf(config.redisCluster);
    if (nodes === undefined) return { error: 'redisCluster: every entry must be host:port' };
    return { target: { kind: 'cluster', nodes, ...auth } };
  }
  const sentinels = nodesOf(config.redisSentinels ?? []);
  if (sentinels === undefined) return { error: 'redisSentinels: every entry must be host:port' };
  return {
    target: {
      kind: 'sentinel',
      sentinels,
      masterName: config.redisSentinelMaster ?? '',
      sentinelPassword: config.redisSentinelPassword,
      ...auth,
    },
  };
}

function nodesOf(list: readonly string[]): RedisNode[] | undefined {
  const out: RedisNode[] = [];
  for (const text of list) {
    const n = parseRedisNode(text);
    if (n === undefined) return undefined;
    out.push(n);
  }
  return out;
}
