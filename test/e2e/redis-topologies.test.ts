/**
 * Two whole gateways on a Redis Cluster (3 masters, 3 replicas) and on Sentinel (master,
 * replica, sentinel), configured through the settings (`redisCluster`, `redisSentinels` +
 * `redisSentinelMaster`, `redisWaitReplicas`), driven by coap-client-openssl: a device is
 * activated on B (secureMode 3), posts with its secret on A (A finds B's activation in Redis,
 * the registry is not asked for the device), and a repeated activation is refused on A.
 * Shared Mosquitto 1883.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ContentFormat } from '../../src/coap/constants.js';
import { derivePsk } from '../../src/enos/psk.js';
import {
  E2eRegistry,
  MISSING_TOOLS,
  SHARED_MQTT_URL,
  activationPath,
  cliSafeSecret,
  coapPath,
  jsonLines,
  measurepoint,
  measurepointTopic,
  startE2eGateway,
  startPlatform,
  uid,
  type E2eGateway,
  type PlatformStandIn,
} from '../helpers/e2e.js';
import { killAll, runCoapClient, type ProcessResult } from '../helpers/processes.js';
import { waitFor } from '../integration/auth/helpers.js';
import { RedisClusterFixture, RedisSentinelFixture } from '../helpers/redis-topologies.js';

function describeRun(r: ProcessResult): string {
  return `--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

interface Fixture {
  readonly settings: Record<string, unknown>;
  stop(): Promise<void>;
}

const topologies: Record<string, () => Promise<Fixture>> = {
  cluster: async () => {
    const c = await RedisClusterFixture.start();
    const nodes = c.target().nodes.map((n) => `${n.host}:${n.port}`);
    return { settings: { redisCluster: nodes }, stop: () => c.stop() };
  },
  sentinel: async () => {
    const s = await RedisSentinelFixture.start();
    const t = s.target();
    return {
      settings: {
        redisSentinels: t.sentinels.map((n) => `${n.host}:${n.port}`),
        redisSentinelMaster: t.masterName,
      },
      stop: () => s.stop(),
    };
  },
};

for (const [name, start] of Object.entries(topologies)) {
  describe(`e2e: two gateways on Redis ${name}`, { skip: MISSING_TOOLS }, () => {
    const pk = uid('topoPK');
    const productSecret = cliSafeSecret('prod');
    let fixture: Fixture;
    let registry: E2eRegistry;
    let gwA: E2eGateway;
    let gwB: E2eGateway;
    let platform: PlatformStandIn;

    before(async () => {
      fixture = await start();
      registry = await E2eRegistry.start();
      registry.addProduct(pk, productSecret, true);
      const shared = {
        ...fixture.settings,
        redisWaitReplicas: 1,
        mqttUrl: SHARED_MQTT_URL,
        redisPrefix: uid('e2e-topo-'),
        registryUrl: registry.url,
        registryToken: registry.token,
      };
      gwA = await startE2eGateway(shared);
      gwB = await startE2eGateway(shared);
      for (const gw of [gwA, gwB]) {
        await waitFor(() => gw.gateway.secrets.redisState() === 'connected', 'Redis', 15_000);
      }
      platform = await startPlatform(SHARED_MQTT_URL, `/sys/${pk}/+/thing/measurepoint/post`);
    });

    after(async () => {
      await killAll();
      await platform?.close();
      await gwA?.close();
      await gwB?.close();
      await registry?.close();
      await fixture?.stop();
    });

    function ask(port: number, dk: string): Promise<ProcessResult> {
      return runCoapClient('coap-client-openssl', {
        port,
        identity: `${pk},${dk},3,3600`,
        psk: derivePsk(productSecret),
        method: 'get',
        path: activationPath(pk, dk),
      });
    }

    it('activate on B, post with secureMode 2 on A, repeat refused on A', async () => {
      const dk = uid('dev');
      const r = await ask(gwB.port, dk);
      assert.equal(r.code, 0, describeRun(r));
      const body = jsonLines(r.stdout)[0] as { params?: { deviceSecret?: unknown } } | undefined;
      const secret = body?.params?.deviceSecret;
      assert.ok(typeof secret === 'string' && secret.length > 0, describeRun(r));

      const post = await runCoapClient('coap-client-openssl', {
        port: gwA.port,
        identity: `${pk},${dk},2,3600`,
        psk: derivePsk(secret),
        method: 'post',
        path: coapPath(measurepointTopic(pk, dk)),
        payload: measurepoint('topo-1'),
        contentFormat: ContentFormat.JSON,
      });
      assert.deepEqual(
        jsonLines(post.stdout),
        [{ id: 'topo-1', code: 200, data: { by: 'e2e-platform' } }],
        describeRun(post),
      );
      // A found B's activation in Redis (device record and activation in one slot)
      assert.equal(registry.count('GET', `/devices/${pk}/${dk}`), 0);

      const again = await ask(gwA.port, dk);
      assert.match(again.stderr, /^4\.03$/m, describeRun(again));
      assert.ok(!`${again.stdout}${again.stderr}`.includes(secret));
      assert.equal(registry.count('POST', `/devices/${pk}/${dk}/activate`), 1);
    });
  });
}
