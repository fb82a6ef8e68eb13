/**
 * A Redis slower than the default command deadline (300 ms): a redis-server of this test's
 * own answers nothing for 1 s (`CLIENT PAUSE 1000 ALL`) while two gateways look a device up
 * in it and activate another. The gateway left at the default gives up on Redis: the secret
 * comes from the registry and the activation is refused (unavailable). The one with
 * `redisCommandTimeoutMs: 5000` waits: the secret comes from Redis, the registry is not asked
 * for it, and the activation goes through. The setting is what a user with a slow (remote,
 * loaded) Redis sets; before it, the 300 ms were fixed. MQTT: the shared Mosquitto 1883.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import { RedisKeys } from '../../src/auth/redis-keys.js';
import {
  E2eRegistry,
  SHARED_MQTT_URL,
  cliSafeSecret,
  startE2eGateway,
  uid,
  type E2eGateway,
} from '../helpers/e2e.js';
import { RedisServer } from '../integration/auth/helpers.js';

const PAUSE_MS = 1_000;

describe('e2e: a Redis slower than the default command deadline', () => {
  const pk = uid('slowPK');
  const redisPrefix = uid('e2e-slow-');
  const keys = new RedisKeys(redisPrefix);
  const productSecret = cliSafeSecret('prod');
  let redis: RedisServer;
  let check: Redis;
  let registry: E2eRegistry;
  let fast: E2eGateway;
  let patient: E2eGateway;

  before(async () => {
    redis = await RedisServer.start();
    check = redis.client();
    registry = await E2eRegistry.start();
    registry.addProduct(pk, productSecret, true);
    const shared = {
      mqttUrl: SHARED_MQTT_URL,
      redisUrl: redis.url,
      redisPrefix,
      registryUrl: registry.url,
      registryToken: registry.token,
      registryTimeoutMs: 10_000,
    };
    fast = await startE2eGateway(shared);
    patient = await startE2eGateway({ ...shared, redisCommandTimeoutMs: 5_000 });
  });

  after(async () => {
    await fast?.close();
    await patient?.close();
    await registry?.close();
    check?.disconnect();
    await redis?.stop();
  });

  /** Looks `dk` up and activates `newDk` on `gw` while Redis answers nothing for 1 s. */
  async function whilePaused(gw: E2eGateway, dk: string, newDk: string) {
    const secret = cliSafeSecret(dk);
    // known to the registry too: a lookup that gives up on Redis finds it there
    registry.addDevice(pk, dk, secret);
    await check.set(keys.device(pk, dk), JSON.stringify({ deviceSecret: secret }));
    // the product is in the gateway's memory before the pause (the activation needs it)
    assert.equal((await gw.gateway.secrets.source.product(pk))?.productSecret, productSecret);
    const stats = gw.gateway.secrets.stats;
    const hitsBefore = stats.lookups.redis.hit;
    await check.client('PAUSE', PAUSE_MS, 'ALL');
    const [rec, activation] = await Promise.all([
      gw.gateway.secrets.source.device(pk, dk),
      gw.gateway.secrets.activator.activate(pk, newDk),
    ]);
    assert.equal(rec?.deviceSecret, secret);
    return { activation, stats, redisHits: stats.lookups.redis.hit - hitsBefore };
  }

  it('the default deadline (300 ms): the registry answers, the activation is refused', async () => {
    const dk = uid('dev');
    const { activation, stats } = await whilePaused(fast, dk, uid('new'));
    assert.equal(stats.lookups.redis.timeout, 1, JSON.stringify(stats.lookups));
    assert.equal(registry.count('GET', `/devices/${pk}/${dk}`), 1);
    assert.deepEqual(activation, { ok: false, reason: 'unavailable' });
  });

  it('redisCommandTimeoutMs 5000: Redis answers, the registry is not asked, the activation goes through', async () => {
    const dk = uid('dev');
    const newDk = uid('new');
    const { activation, stats, redisHits } = await whilePaused(patient, dk, newDk);
    assert.equal(stats.lookups.redis.timeout, 0, JSON.stringify(stats.lookups));
    assert.equal(redisHits, 1, JSON.stringify(stats.lookups));
    assert.equal(registry.count('GET', `/devices/${pk}/${dk}`), 0);
    assert.equal(activation.ok, true, JSON.stringify(activation));
    assert.equal(stats.lookups.activation.timeout, 0);
    assert.equal(registry.count('POST', `/devices/${pk}/${newDk}/activate`), 1);
  });
});
