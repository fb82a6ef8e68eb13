/**
 * `coap-client-openssl` posts a measurepoint to coap-edge, which
 * authenticates it with a secret from the registry (cached in Redis) and publishes it on
 * Mosquitto; `mosquitto_sub` sees it; a platform stand-in answers on `_reply` with the same
 * id; the device prints that reply (2.04). Shared Redis 6379 and Mosquitto 1883.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { ContentFormat } from '../../src/coap/constants.js';
import { AlertDescription } from '../../src/dtls/constants.js';
import { DtlsError } from '../../src/dtls/errors.js';
import { derivePsk } from '../../src/enos/psk.js';
import {
  E2eRegistry,
  MISSING_TOOLS,
  SHARED_MQTT_PORT,
  SHARED_MQTT_URL,
  SHARED_REDIS_URL,
  cliSafeSecret,
  coapPath,
  connectDevice,
  eventually,
  jsonLines,
  measurepoint,
  measurepointTopic,
  startE2eGateway,
  startMosquittoSub,
  startPlatform,
  subLines,
  timed,
  uid,
  type E2eGateway,
  type PlatformStandIn,
} from '../helpers/e2e.js';
import { killAll, runCoapClient } from '../helpers/processes.js';

describe(
  'e2e: coap-client-openssl → coap-edge → Mosquitto → platform → device',
  {
    skip: MISSING_TOOLS,
  },
  () => {
    const pk = uid('upPK');
    const dk = uid('upDK');
    const secret = cliSafeSecret('up');
    const redisPrefix = uid('e2e-up-');
    const topic = measurepointTopic(pk, dk);
    let registry: E2eRegistry;
    let gw: E2eGateway;
    let platform: PlatformStandIn;
    let redis: Redis;

    before(async () => {
      registry = await E2eRegistry.start();
      registry.addDevice(pk, dk, secret);
      gw = await startE2eGateway({
        mqttUrl: SHARED_MQTT_URL,
        redisUrl: SHARED_REDIS_URL,
        redisPrefix,
        registryUrl: registry.url,
        registryToken: registry.token,
      });
      platform = await startPlatform(SHARED_MQTT_URL, topic);
      redis = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: 1 });
    });

    after(async () => {
      await killAll();
      await platform?.close();
      await gw?.close();
      await registry?.close();
      if (redis !== undefined) {
        const keys = await redis.keys(`${redisPrefix}:*`);
        if (keys.length > 0) await redis.del(...keys);
        redis.disconnect();
      }
    });

    it('mosquitto_sub sees the measurepoint, the device prints the platform reply', async () => {
      const payload = measurepoint('e2e-1', 23.25);
      const sub = await startMosquittoSub(SHARED_MQTT_PORT, topic, 1);
      const r = await runCoapClient('coap-client-openssl', {
        port: gw.port,
        identity: `${pk},${dk},2,3600`,
        psk: derivePsk(secret),
        method: 'post',
        path: coapPath(topic),
        payload,
        contentFormat: ContentFormat.JSON,
      });
      const out = `--- coap-client stdout\n${r.stdout}\n--- stderr\n${r.stderr}\n--- gateway log\n${gw.logText()}`;
      assert.equal(r.timedOut, false, `coap-client timed out\n${out}`);
      assert.equal(r.code, 0, out);
      assert.doesNotMatch(`${r.stdout}${r.stderr}`, /alert|cannot send/i, out);
      assert.doesNotMatch(r.stderr, /^[45]\.\d\d$/m, out);
      // 2.xx: libcoap prints the payload only; it is the platform's reply with the same id
      assert.deepEqual(
        jsonLines(r.stdout),
        [{ id: 'e2e-1', code: 200, data: { by: 'e2e-platform' } }],
        out,
      );

      const s = await sub.done;
      assert.equal(s.timedOut, false, `mosquitto_sub got nothing\n${sub.describe()}`);
      assert.deepEqual(subLines(s.stdout), [`${topic} ${payload}`], sub.describe());

      assert.equal(platform.messages.length, 1, 'the platform saw the request once');
      assert.equal(platform.replies(), 1);
    });

    it('the secret came from the registry once and is cached in Redis', async () => {
      assert.equal(
        registry.count('GET', `/devices/${pk}/${dk}`),
        1,
        JSON.stringify(registry.calls),
      );
      assert.ok(
        registry.calls.every((c) => c.authorized),
        'every call carried the bearer token',
      );
      const key = `${redisPrefix}:device:{${pk}/${dk}}`;
      await eventually(async () => (await redis.exists(key)) === 1, `Redis key ${key}`);
      const cached = JSON.parse((await redis.get(key)) ?? 'null') as { deviceSecret?: string };
      assert.equal(cached.deviceSecret, secret);
      const ttl = await redis.pttl(key);
      assert.ok(ttl > 0, `the cache entry has a TTL (${ttl})`);
    });

    it('a second post over a new handshake needs no registry call', async () => {
      const sub = await startMosquittoSub(SHARED_MQTT_PORT, topic, 1);
      const payload = measurepoint('e2e-2', 24);
      const r = await runCoapClient('coap-client-openssl', {
        port: gw.port,
        identity: `${pk},${dk},2,3600`,
        psk: derivePsk(secret),
        method: 'post',
        path: coapPath(topic),
        payload,
        contentFormat: ContentFormat.JSON,
      });
      assert.deepEqual(
        jsonLines(r.stdout),
        [{ id: 'e2e-2', code: 200, data: { by: 'e2e-platform' } }],
        `${r.stdout}\n${r.stderr}`,
      );
      const s = await sub.done;
      assert.deepEqual(subLines(s.stdout), [`${topic} ${payload}`], sub.describe());
      assert.equal(registry.count('GET', `/devices/${pk}/${dk}`), 1, 'still one registry call');
    });

    it('an unknown device gets decrypt_error, like a wrong key; the miss is remembered', async () => {
      const unknown = uid('nobody');
      for (let i = 0; i < 2; i++) {
        const h = await timed(() => connectDevice(gw.port, { pk, dk: unknown, secret }));
        if (h.value !== undefined) {
          await h.value.close();
          assert.fail('an unknown device completed the handshake');
        }
        assert.ok(h.error instanceof DtlsError, String(h.error));
        assert.equal(h.error.alert, AlertDescription.decryptError, h.error.message);
      }
      assert.equal(registry.count('GET', `/devices/${pk}/${unknown}`), 1, 'asked once');
      const cached = await redis.get(`${redisPrefix}:device:{${pk}/${unknown}}`);
      assert.deepEqual(JSON.parse(cached ?? 'null'), { unknown: true });
    });

    it('the gateway logged no errors', () => {
      for (const g of [gw]) assert.deepEqual(g.errorLines(), []);
    });
  },
);
