/**
 * Which Redis the settings name: from flags, variables or YAML alike, exactly one of URL,
 * cluster or sentinels, and the cluster/sentinel credentials only where they apply.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../../../src/config/load.js';
import { redisTargetOf } from '../../../src/gateway/redis-target.js';

describe('redisTargetOf', () => {
  it('a cluster from the environment, with auth and TLS', () => {
    const config = loadConfig({
      env: {
        COAP_EDGE_REDIS_CLUSTER: 'r1:7000, [::1]:7001',
        COAP_EDGE_REDIS_PASSWORD: 'pw',
        COAP_EDGE_REDIS_TLS: 'true',
      },
    });
    assert.deepEqual(redisTargetOf(config), {
      target: {
        kind: 'cluster',
        nodes: [
          { host: 'r1', port: 7000 },
          { host: '::1', port: 7001 },
        ],
        username: undefined,
        password: 'pw',
        tls: true,
        tlsCa: undefined,
      },
    });
  });

  it('sentinels and a master name from flags', () => {
    const config = loadConfig({
      flags: {
        redisSentinels: 's1:26379,s2:26379',
        redisSentinelMaster: 'edge',
        redisSentinelPassword: 'spw',
      },
    });
    const r = redisTargetOf(config);
    assert.ok('target' in r && typeof r.target === 'object' && r.target.kind === 'sentinel');
    assert.equal(r.target.masterName, 'edge');
    assert.equal(r.target.sentinelPassword, 'spw');
    assert.deepEqual(r.target.sentinels, [
      { host: 's1', port: 26379 },
      { host: 's2', port: 26379 },
    ]);
  });

  it('a URL alone; none at all', () => {
    assert.deepEqual(redisTargetOf(loadConfig({ flags: { redisUrl: 'redis://h:1' } })), {
      target: 'redis://h:1',
    });
    assert.deepEqual(redisTargetOf(loadConfig({})), { target: undefined });
  });

  it('refuses two topologies, half a sentinel setup, and credentials that would be ignored', () => {
    const errors = [
      { redisUrl: 'redis://h:1', redisCluster: 'a:1' },
      { redisSentinels: 'a:1' },
      { redisSentinelMaster: 'm' },
      { redisUrl: 'redis://h:1', redisPassword: 'pw' },
      { redisPassword: 'pw' },
      { redisCluster: 'a:1', redisSentinelPassword: 'x' },
    ].map((flags) => redisTargetOf(loadConfig({ flags })));
    for (const e of errors) {
      assert.ok('error' in e, JSON.stringify(e));
      assert.doesNotMatch(e.error, /pw|x\b/, 'no secret in the message');
    }
  });

  it('a node that is not host:port, and a prefix with braces, are configuration errors', () => {
    assert.throws(() => loadConfig({ flags: { redisCluster: 'a:1,b' } }), ConfigError);
    assert.throws(() => loadConfig({ flags: { redisPrefix: 'a{b}' } }), ConfigError);
  });
});
