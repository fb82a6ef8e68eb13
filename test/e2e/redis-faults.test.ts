/**
 * Redis stops under a running gateway (a redis-server of this test's
 * own, killed with SIGKILL). Devices whose secrets are in the in-process LRU keep connecting
 * and posting; a device never seen before still works through the registry, or fails fast
 * when the registry fails too; no handshake hangs. Redis restarted on the same port is used
 * again (a new device's secret appears in it). Activation, which needs the store, is refused
 * with 5.03 while Redis is away. MQTT: the shared Mosquitto 1883.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import { Code, formatCode } from '../../src/coap/constants.js';
import { AlertDescription } from '../../src/dtls/constants.js';
import { DtlsError } from '../../src/dtls/errors.js';
import type { CoapDtlsClient } from '../../src/tools/coap-client.js';
import {
  E2eRegistry,
  MISSING_TOOLS,
  SHARED_MQTT_URL,
  activationPath,
  cliSafeSecret,
  coapPath,
  connectDevice,
  eventually,
  measurepoint,
  measurepointTopic,
  startE2eGateway,
  startPlatform,
  timed,
  uid,
  type E2eGateway,
  type PlatformStandIn,
} from '../helpers/e2e.js';
import { RedisServer } from '../integration/auth/helpers.js';

/** A handshake that succeeds must take less than this, Redis or not (generous: CI noise). */
const HANDSHAKE_BOUND_MS = 3_000;
const REGISTRY_TIMEOUT_MS = 1_000;

describe(
  'e2e: Redis stopped and restarted under a running gateway',
  { skip: MISSING_TOOLS },
  () => {
    const pk = uid('rfPK');
    const redisPrefix = uid('e2e-rf-');
    const secrets = new Map<string, string>();
    const productSecret = cliSafeSecret('prod');
    let redis: RedisServer;
    let check: Redis;
    let registry: E2eRegistry;
    let gw: E2eGateway;
    let platform: PlatformStandIn;
    const devices: CoapDtlsClient[] = [];

    before(async () => {
      redis = await RedisServer.start();
      check = redis.client();
      check.on('error', () => undefined);
      registry = await E2eRegistry.start();
      registry.addProduct(pk, productSecret, true);
      for (const dk of ['c1', 'c2', 'n1', 'n2', 'n3', 'n4', 'n5']) {
        const s = cliSafeSecret(dk);
        secrets.set(dk, s);
        registry.addDevice(pk, dk, s);
      }
      gw = await startE2eGateway({
        mqttUrl: SHARED_MQTT_URL,
        redisUrl: redis.url,
        redisPrefix,
        registryUrl: registry.url,
        registryToken: registry.token,
        registryTimeoutMs: REGISTRY_TIMEOUT_MS,
      });
      platform = await startPlatform(SHARED_MQTT_URL, `/sys/${pk}/+/thing/measurepoint/post`);
    });

    after(async () => {
      await Promise.all(devices.map((d) => d.close()));
      await platform?.close();
      await gw?.close();
      await registry?.close();
      check?.disconnect();
      await redis?.stop();
    });

    /** Handshake (timed, bounded) and one post that must get 2.04 with the platform's reply. */
    async function connectAndPost(dk: string, id: string): Promise<{ ms: number }> {
      const h = await timed(() =>
        connectDevice(gw.port, {
          pk,
          dk,
          secret: secrets.get(dk) ?? '',
          handshakeTimeoutMs: 10_000,
        }),
      );
      assert.ok(
        h.value !== undefined,
        `${dk}: handshake failed: ${String(h.error)}\n${gw.logText()}`,
      );
      devices.push(h.value);
      assert.ok(h.ms < HANDSHAKE_BOUND_MS, `${dk}: handshake took ${h.ms.toFixed(0)} ms`);
      await postOn(h.value, dk, id);
      return { ms: h.ms };
    }

    async function postOn(d: CoapDtlsClient, dk: string, id: string): Promise<void> {
      const r = await d.request({
        method: 'POST',
        path: coapPath(measurepointTopic(pk, dk)),
        payload: Buffer.from(measurepoint(id)),
        timeoutMs: 10_000,
      });
      assert.equal(
        formatCode(r.code),
        formatCode(Code.CHANGED),
        `${dk} ${id}: ${r.payload.toString()}`,
      );
      assert.equal((JSON.parse(r.payload.toString()) as { id?: unknown }).id, id);
    }

    /** A handshake that must fail with a fatal internal_error alert within `boundMs`. */
    async function refused(dk: string, boundMs: number): Promise<number> {
      const h = await timed(() =>
        connectDevice(gw.port, {
          pk,
          dk,
          secret: secrets.get(dk) ?? '',
          handshakeTimeoutMs: 10_000,
        }),
      );
      if (h.value !== undefined) {
        devices.push(h.value);
        assert.fail(`${dk}: the handshake should have failed`);
      }
      assert.ok(h.error instanceof DtlsError, String(h.error));
      assert.equal(h.error.code, 'DTLS_ALERT_RECEIVED', h.error.message);
      assert.equal(h.error.alert, AlertDescription.internalError, h.error.message);
      assert.ok(h.ms < boundMs, `${dk}: refused after ${h.ms.toFixed(0)} ms (bound ${boundMs})`);
      return h.ms;
    }

    it('runs on cached secrets and the registry while Redis is down, uses Redis again after', async (t) => {
      // before: c1, c2 come from the registry and are cached in Redis and the LRU
      const c1 = await connectDevice(gw.port, { pk, dk: 'c1', secret: secrets.get('c1') ?? '' });
      devices.push(c1);
      await postOn(c1, 'c1', 'before-1');
      await connectAndPost('c2', 'before-2');
      await eventually(
        async () => (await check.exists(`${redisPrefix}:device:{${pk}/c2}`)) === 1,
        'c2 cached in Redis',
      );

      await redis.stop();
      await eventually(
        () => gw.gateway.secrets.redisState() === 'down',
        'the gateway sees Redis down',
      );
      const redisErrors = gw.gateway.secrets.stats.lookups.redis.error;

      // cached devices: the open association and new handshakes keep working
      await postOn(c1, 'c1', 'down-1');
      const cachedMs = (await connectAndPost('c1', 'down-2')).ms;
      await connectAndPost('c2', 'down-3');
      // never seen: Redis fails at once, the registry answers
      const freshMs = (await connectAndPost('n1', 'down-4')).ms;
      assert.equal(registry.count('GET', `/devices/${pk}/n1`), 1);
      assert.ok(gw.gateway.secrets.stats.lookups.redis.error > redisErrors, 'Redis errors counted');

      // never seen, and the registry fails too: refused fast; cached devices unaffected
      registry.mode = 'error';
      const failFastMs = await refused('n2', HANDSHAKE_BOUND_MS);
      await connectAndPost('c2', 'down-5');
      registry.mode = 'hang';
      const hangMs = await refused('n3', REGISTRY_TIMEOUT_MS + 2_500);
      assert.ok(hangMs >= REGISTRY_TIMEOUT_MS - 50, `gave up after ${hangMs.toFixed(0)} ms`);
      await connectAndPost('c1', 'down-6');
      registry.mode = 'ok';

      // activation needs the store: refused with 5.03 (retry later), nothing activated upstream
      const m3 = await connectDevice(gw.port, { pk, dk: 'a1', mode: 3, secret: productSecret });
      devices.push(m3);
      const act = await m3.request({
        method: 'GET',
        path: activationPath(pk, 'a1'),
        timeoutMs: 10_000,
      });
      assert.equal(
        formatCode(act.code),
        formatCode(Code.SERVICE_UNAVAILABLE),
        act.payload.toString(),
      );
      assert.equal(
        registry.count('POST', `/devices/${pk}/a1/activate`),
        0,
        'no upstream activation',
      );

      // Redis back on the same port (empty: no persistence): used again by itself
      await redis.restart();
      await eventually(
        () => gw.gateway.secrets.redisState() === 'connected',
        'the gateway reconnects to Redis',
        10_000,
      );
      await connectAndPost('n4', 'after-1');
      await eventually(
        async () => (await check.exists(`${redisPrefix}:device:{${pk}/n4}`)) === 1,
        'n4 cached in the restarted Redis',
      );
      // and a device that failed while both were down works now (failures are not cached)
      await connectAndPost('n2', 'after-2');
      // activation works again, and is stored in the restarted Redis
      const again = await m3.request({
        method: 'GET',
        path: activationPath(pk, 'a1'),
        timeoutMs: 10_000,
      });
      assert.equal(formatCode(again.code), formatCode(Code.CONTENT), again.payload.toString());
      assert.equal(await check.exists(`${redisPrefix}:activation:{${pk}/a1}`), 1);
      t.diagnostic(
        `handshake ms with Redis down: cached ${cachedMs.toFixed(0)}, via registry ` +
          `${freshMs.toFixed(0)}, refused (registry 500) ${failFastMs.toFixed(0)}, ` +
          `refused (registry hangs, timeout ${REGISTRY_TIMEOUT_MS}) ${hangMs.toFixed(0)}`,
      );
      const ids = new Set(
        platform.messages.map((m) => (JSON.parse(m.payload.toString()) as { id: string }).id),
      );
      for (const id of ['before-1', 'down-1', 'down-4', 'down-6', 'after-1', 'after-2']) {
        assert.ok(ids.has(id), `${id} reached the platform`);
      }
    });

    it('the gateway logged no errors', () => {
      for (const g of [gw]) assert.deepEqual(g.errorLines(), []);
    });
  },
);
