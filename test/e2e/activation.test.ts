/**
 * Dynamic activation (secureMode 3, docs/protocol.md) against the registry's
 * one-shot `POST …/activate`, then secureMode 2 with the returned secret; activation is
 * one-shot here too: a repeated activation is refused (4.03) on any pod, without
 * a secret. Driven by the CLI device tool
 * (`coap-edge device activate-then-post`) and by coap-client-openssl; two gateways
 * (`Gateway.start` twice, different ports) share one Redis prefix. Shared Redis 6379 and
 * Mosquitto 1883.
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
  SHARED_MQTT_URL,
  SHARED_REDIS_URL,
  activationPath,
  cliSafeSecret,
  coapPath,
  connectDevice,
  jsonLines,
  measurepoint,
  measurepointTopic,
  startE2eGateway,
  startPlatform,
  timed,
  uid,
  type E2eGateway,
  type PlatformStandIn,
} from '../helpers/e2e.js';
import { killAll, runCli, runCoapClient, type ProcessResult } from '../helpers/processes.js';

interface ActivationBody {
  id?: unknown;
  version?: unknown;
  method?: unknown;
  params?: { assetId?: unknown; productKey?: unknown; deviceKey?: unknown; deviceSecret?: unknown };
}

function describeRun(r: ProcessResult, extra = ''): string {
  return `--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}${extra}`;
}

/** Checks an activation answer for `pk`/`dk` and returns its device secret. */
function activatedSecret(body: unknown, pk: string, dk: string, why: string): string {
  const b = body as ActivationBody;
  assert.equal(b.method, 'thing.activate.info', why);
  assert.equal(b.version, '1.0', why);
  assert.equal(b.params?.productKey, pk, why);
  assert.equal(b.params?.deviceKey, dk, why);
  assert.equal(b.params?.assetId, `asset-${dk}`, why);
  const secret = b.params?.deviceSecret;
  assert.ok(typeof secret === 'string' && secret.length > 0, `no deviceSecret: ${why}`);
  return secret;
}

describe(
  'e2e: dynamic activation (secureMode 3) across two gateways',
  {
    skip: MISSING_TOOLS,
  },
  () => {
    const pk = uid('actPK');
    const productSecret = cliSafeSecret('prod');
    const redisPrefix = uid('e2e-act-');
    let registry: E2eRegistry;
    let gwA: E2eGateway;
    let gwB: E2eGateway;
    let platform: PlatformStandIn;
    let redis: Redis;

    before(async () => {
      registry = await E2eRegistry.start();
      registry.addProduct(pk, productSecret, true);
      const shared = {
        mqttUrl: SHARED_MQTT_URL,
        redisUrl: SHARED_REDIS_URL,
        redisPrefix,
        registryUrl: registry.url,
        registryToken: registry.token,
      };
      gwA = await startE2eGateway(shared);
      gwB = await startE2eGateway(shared);
      platform = await startPlatform(SHARED_MQTT_URL, `/sys/${pk}/+/thing/measurepoint/post`);
      redis = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: 1 });
    });

    after(async () => {
      await killAll();
      await platform?.close();
      await gwA?.close();
      await gwB?.close();
      await registry?.close();
      if (redis !== undefined) {
        const keys = await redis.keys(`${redisPrefix}:*`);
        if (keys.length > 0) await redis.del(...keys);
        redis.disconnect();
      }
    });

    /** coap-client-openssl: GET activate/info with the product secret (secureMode 3). */
    function libcoapAsk(port: number, dk: string): Promise<ProcessResult> {
      return runCoapClient('coap-client-openssl', {
        port,
        identity: `${pk},${dk},3,3600`,
        psk: derivePsk(productSecret),
        method: 'get',
        path: activationPath(pk, dk),
      });
    }

    /** An activation with coap-client-openssl that succeeds; returns the device secret. */
    async function libcoapActivate(port: number, dk: string): Promise<string> {
      const r = await libcoapAsk(port, dk);
      const why = describeRun(r);
      assert.equal(r.timedOut, false, why);
      assert.equal(r.code, 0, why);
      assert.doesNotMatch(r.stderr, /^[45]\.\d\d$/m, why);
      const bodies = jsonLines(r.stdout);
      assert.equal(bodies.length, 1, why);
      return activatedSecret(bodies[0], pk, dk, why);
    }

    /** An activation with coap-client-openssl that is refused with 4.03, without `secret`. */
    async function libcoapRefused(port: number, dk: string, secret: string): Promise<void> {
      const r = await libcoapAsk(port, dk);
      const why = describeRun(r);
      assert.equal(r.timedOut, false, why);
      assert.match(r.stderr, /^4\.03$/m, why);
      assert.ok(!`${r.stdout}${r.stderr}`.includes(secret), `secret handed out again: ${why}`);
    }

    async function storedActivation(
      dk: string,
    ): Promise<{ deviceSecret?: string; source?: string }> {
      const text = await redis.get(`${redisPrefix}:activation:{${pk}/${dk}}`);
      assert.ok(text !== null, `activation of ${dk} stored in Redis`);
      return JSON.parse(text) as { deviceSecret?: string; source?: string };
    }

    it('CLI activate-then-post: 2.05 with a secret, then 2.04 with the platform reply', async () => {
      const dk = uid('cli');
      const r = await runCli(
        [
          ...['device', 'activate-then-post', 'thing/measurepoint/post', measurepoint('cli-1')],
          ...['--port', String(gwA.port), '--product-key', pk, '--device-key', dk],
          ...['--secret', productSecret, '--timeout', '10'],
        ],
        { timeoutMs: 20_000 },
      );
      const why = describeRun(r, `\n--- gateway A log\n${gwA.logText()}`);
      assert.equal(r.code, 0, why);
      const lines = r.stdout.trim().split('\n');
      assert.equal(lines.length, 2, why);
      const act = /^activate: 2\.05 (\{.*\})$/.exec(lines[0] ?? '');
      assert.ok(act !== null, why);
      const secret = activatedSecret(JSON.parse(act[1] ?? ''), pk, dk, why);
      const post = /^post: 2\.04 (\{.*\})$/.exec(lines[1] ?? '');
      assert.ok(post !== null, why);
      assert.deepEqual(JSON.parse(post[1] ?? ''), {
        id: 'cli-1',
        code: 200,
        data: { by: 'e2e-platform' },
      });

      assert.equal(registry.count('POST', `/devices/${pk}/${dk}/activate`), 1);
      assert.equal(
        registry.devices.get(`${pk}/${dk}`)?.deviceSecret,
        secret,
        'the registry secret',
      );
      const stored = await storedActivation(dk);
      assert.equal(stored.deviceSecret, secret);
      assert.equal(stored.source, 'registry');
      assert.ok(
        platform.messages.some(
          (m) =>
            m.topic === measurepointTopic(pk, dk) && m.payload.toString() === measurepoint('cli-1'),
        ),
        'the platform got the post of the activated device',
      );

      // repeated activation, coap-client-openssl, on both gateways: refused, no secret
      await libcoapRefused(gwA.port, dk, secret);
      await libcoapRefused(gwB.port, dk, secret);
      assert.equal(
        registry.count('POST', `/devices/${pk}/${dk}/activate`),
        1,
        'activated upstream once',
      );
      assert.equal(
        gwB.gateway.secrets.stats.activations['already-activated'],
        1,
        'B refused from the store',
      );
    });

    it('coap-client-openssl: activate on B, post with secureMode 2 on A, repeat refused on A', async () => {
      const dk = uid('lib');
      const secret = await libcoapActivate(gwB.port, dk);
      assert.equal(registry.count('POST', `/devices/${pk}/${dk}/activate`), 1);

      const r = await runCoapClient('coap-client-openssl', {
        port: gwA.port,
        identity: `${pk},${dk},2,3600`,
        psk: derivePsk(secret),
        method: 'post',
        path: coapPath(measurepointTopic(pk, dk)),
        payload: measurepoint('lib-1'),
        contentFormat: ContentFormat.JSON,
      });
      const why = describeRun(r, `\n--- gateway A log\n${gwA.logText()}`);
      assert.doesNotMatch(`${r.stdout}${r.stderr}`, /alert/i, why);
      assert.deepEqual(
        jsonLines(r.stdout),
        [{ id: 'lib-1', code: 200, data: { by: 'e2e-platform' } }],
        why,
      );
      // A found the activation B stored in Redis; it never asked the registry for the device
      assert.equal(registry.count('GET', `/devices/${pk}/${dk}`), 0);
      assert.ok(gwA.gateway.secrets.stats.lookups.activation.hit >= 1);

      // a repeated activation on A, with the CLI tool: 4.03, no secret
      const again = await runCli(
        [
          ...['device', 'activate', '--port', String(gwA.port), '--product-key', pk],
          ...['--device-key', dk, '--secret', productSecret, '--timeout', '10'],
        ],
        { timeoutMs: 20_000 },
      );
      assert.match(again.stdout, /^4\.03/m, describeRun(again));
      assert.equal(again.code, 1, describeRun(again));
      assert.ok(!again.stdout.includes(secret), describeRun(again));
      assert.equal(
        registry.count('POST', `/devices/${pk}/${dk}/activate`),
        1,
        'activated upstream once',
      );
    });

    it('an activation whose registry answer is lost: 5.03, then 4.03 (409 is final)', async () => {
      const dk = uid('lost');
      registry.hangNextActivation = true;
      const first = await libcoapAsk(gwA.port, dk);
      // after registryTimeoutMs (1 s) as a separate response: "unavailable, retry later"
      assert.match(first.stderr, /^5\.03$/m, describeRun(first, `\n--- log\n${gwA.logText()}`));
      const upstream = registry.devices.get(`${pk}/${dk}`)?.deviceSecret;
      assert.ok(upstream !== undefined, 'the registry did activate the device');

      // the device retries (here on the other pod): 409 is final, the secret is never read
      // back (an operator resets the device in the registry, docs/registry-api.md)
      await libcoapRefused(gwB.port, dk, upstream);
      assert.equal(registry.count('POST', `/devices/${pk}/${dk}/activate`), 2);
      assert.equal(registry.count('GET', `/devices/${pk}/${dk}`), 0);
    });

    it('a secureMode 2 session may not activate; a wrong product secret fails the handshake', async () => {
      const dk = uid('neg');
      const secret = await libcoapActivate(gwA.port, dk);
      const asMode2 = await runCoapClient('coap-client-openssl', {
        port: gwA.port,
        identity: `${pk},${dk},2,3600`,
        psk: derivePsk(secret),
        method: 'get',
        path: activationPath(pk, dk),
      });
      assert.match(asMode2.stderr, /^4\.03$/m, describeRun(asMode2));

      const wrong = await runCoapClient('coap-client-openssl', {
        port: gwA.port,
        identity: `${pk},${uid('neg')},3,3600`,
        psk: derivePsk(cliSafeSecret('wrong')),
        method: 'get',
        path: activationPath(pk, dk),
      });
      assert.match(wrong.stdout, /alert read:fatal:decrypt error/, describeRun(wrong));
      assert.equal(jsonLines(wrong.stdout).length, 0, describeRun(wrong));
      assert.doesNotMatch(wrong.stderr, /^2\.\d\d$/m, describeRun(wrong));
    });

    it('secureMode 3 for a product without dynamic registration: decrypt_error, like a wrong key', async () => {
      const closed = uid('closedPK');
      const secret = cliSafeSecret('closed');
      registry.addProduct(closed, secret, false);
      const h = await timed(() =>
        connectDevice(gwA.port, { pk: closed, dk: uid('x'), mode: 3, secret }),
      );
      if (h.value !== undefined) {
        await h.value.close();
        assert.fail('the handshake should have failed');
      }
      assert.ok(h.error instanceof DtlsError, String(h.error));
      assert.equal(h.error.alert, AlertDescription.decryptError, h.error.message);
      assert.equal(registry.count('GET', `/products/${closed}`), 1);
    });

    it('the gateways logged no errors', () => {
      for (const g of [gwA, gwB]) assert.deepEqual(g.errorLines(), []);
    });
  },
);
