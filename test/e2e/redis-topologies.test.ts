/**
 * Two whole gateways on a Redis Cluster (3 masters, 3 replicas) and on Sentinel (master,
 * replica, sentinel), configured through the settings (`redisCluster`, `redisSentinels` +
 * `redisSentinelMaster`, `redisWaitReplicas`), driven by coap-client-openssl: a device is
 * activated on B (secureMode 3), posts with its secret on A (A finds B's activation in Redis,
 * the registry is not asked for the device), and a repeated activation is refused on A. With
 * `associationKey` the gateways share DTLS associations: a device's association made on A
 * continues on B (behind a relay playing the load balancer) with no handshake, through a
 * failover of the Redis master that holds it, and no acknowledged message is lost.
 * Shared Mosquitto 1883.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ContentFormat, formatCode } from '../../src/coap/constants.js';
import { CoapDtlsClient } from '../../src/tools/coap-client.js';
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
import { Relay } from '../helpers/udp-relay.js';

after(killAll);

/** coap-client's wait for an answer (`-B`): a loaded machine can take more than its 5 s. */
const CLIENT_WAIT_S = 10;

function describeRun(r: ProcessResult): string {
  return `--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** A gateway's secret-stack counters, for a failure's message (which layer answered how). */
function authStats(gw: E2eGateway): string {
  const s = gw.gateway.secrets.stats;
  return JSON.stringify({
    lookups: s.lookups,
    activations: s.activations,
    activationStoreErrors: s.activationStoreErrors,
    redisConnectionErrors: s.redisConnectionErrors,
    redis: s.redisState,
  });
}

interface Fixture {
  readonly settings: Record<string, unknown>;
  /** Fails over the master holding `key`. */
  failover(key: string): Promise<void>;
  stop(): Promise<void>;
}

const topologies: Record<string, () => Promise<Fixture>> = {
  cluster: async () => {
    const c = await RedisClusterFixture.start();
    const nodes = c.target().nodes.map((n) => `${n.host}:${n.port}`);
    return {
      settings: { redisCluster: nodes },
      failover: async (key) => c.failover((await c.ownerOf(key)).replica),
      stop: () => c.stop(),
    };
  },
  sentinel: async () => {
    const s = await RedisSentinelFixture.start();
    const t = s.target();
    return {
      settings: {
        redisSentinels: t.sentinels.map((n) => `${n.host}:${n.port}`),
        redisSentinelMaster: t.masterName,
      },
      failover: () => s.failover(),
      stop: () => s.stop(),
    };
  },
};

// Cluster and Sentinel side by side: each has its own Redis servers, registry, gateways,
// product and prefix; most of the time goes to the failovers (Sentinel's about 25 s).
// killAll is the file's (it kills every child process of the file).
describe('e2e: two gateways on Redis', { concurrency: true }, () => {
  for (const [name, start] of Object.entries(topologies)) {
    describe(`e2e: two gateways on Redis ${name}`, { skip: MISSING_TOOLS, concurrency: 1 }, () => {
      const pk = uid('topoPK');
      const productSecret = cliSafeSecret('prod');
      let fixture: Fixture;
      let registry: E2eRegistry;
      let gwA: E2eGateway;
      let gwB: E2eGateway;
      let platform: PlatformStandIn;

      const redisPrefix = uid('e2e-topo-');

      before(async () => {
        fixture = await start();
        registry = await E2eRegistry.start();
        registry.addProduct(pk, productSecret, true);
        const shared = {
          ...fixture.settings,
          redisWaitReplicas: 1,
          // The gateways, the registry and the platform share this process, which a loaded
          // machine starves for hundreds of ms: with the default 300 ms a Redis read then
          // times out and the lookup goes to the registry, or an activation is refused (at
          // load 11-15, 6 of 10 runs failed so or on coap-client's 5 s wait). What is tested
          // is where answers come from, not the deadline (test/e2e/redis-slow.test.ts is).
          redisCommandTimeoutMs: 2_000,
          registryTimeoutMs: 5_000,
          mqttUrl: SHARED_MQTT_URL,
          redisPrefix,
          associationKey: randomBytes(32).toString('hex'),
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
        await platform?.close();
        await gwA?.close();
        await gwB?.close();
        await registry?.close();
        await fixture?.stop();
      });

      /** Activates a new device on B; its secret. */
      async function activated(dk: string): Promise<string> {
        const r = await ask(gwB.port, dk);
        assert.equal(r.code, 0, `${describeRun(r)}\nB: ${authStats(gwB)}`);
        const body = jsonLines(r.stdout)[0] as { params?: { deviceSecret?: unknown } } | undefined;
        const secret = body?.params?.deviceSecret;
        assert.ok(
          typeof secret === 'string' && secret.length > 0,
          `${describeRun(r)}\nB: ${authStats(gwB)}`,
        );
        return secret;
      }

      function ask(port: number, dk: string): Promise<ProcessResult> {
        return runCoapClient('coap-client-openssl', {
          port,
          identity: `${pk},${dk},3,3600`,
          psk: derivePsk(productSecret),
          method: 'get',
          path: activationPath(pk, dk),
          waitSeconds: CLIENT_WAIT_S,
        });
      }

      it('activate on B, post with secureMode 2 on A, repeat refused on A', async () => {
        const dk = uid('dev');
        const secret = await activated(dk);

        const post = await runCoapClient('coap-client-openssl', {
          port: gwA.port,
          identity: `${pk},${dk},2,3600`,
          psk: derivePsk(secret),
          method: 'post',
          path: coapPath(measurepointTopic(pk, dk)),
          payload: measurepoint('topo-1'),
          contentFormat: ContentFormat.JSON,
          waitSeconds: CLIENT_WAIT_S,
        });
        assert.deepEqual(
          jsonLines(post.stdout),
          [{ id: 'topo-1', code: 200, data: { by: 'e2e-platform' } }],
          `${describeRun(post)}\nA: ${authStats(gwA)}`,
        );
        // A found B's activation in Redis (device record and activation in one slot)
        assert.equal(registry.count('GET', `/devices/${pk}/${dk}`), 0, `A: ${authStats(gwA)}`);

        const again = await ask(gwA.port, dk);
        assert.match(again.stderr, /^4\.03$/m, describeRun(again));
        assert.ok(!`${again.stdout}${again.stderr}`.includes(secret));
        assert.equal(registry.count('POST', `/devices/${pk}/${dk}/activate`), 1);
      });

      it(`a shared association made on A continues on B, through a failover of its master`, async () => {
        const dk = uid('dev');
        const secret = await activated(dk);
        const relay = await Relay.start(gwA.port);
        const device = await CoapDtlsClient.connect({
          host: '127.0.0.1',
          port: relay.port,
          identity: `${pk},${dk},2,3600`,
          psk: derivePsk(secret),
          connectionId: Buffer.alloc(0),
          retransmitTimeoutMs: 500,
        });
        const acknowledged: string[] = [];
        const post = async (id: string): Promise<void> => {
          const res = await device.request({
            method: 'POST',
            path: coapPath(measurepointTopic(pk, dk)),
            payload: Buffer.from(measurepoint(id)),
            contentFormat: ContentFormat.JSON,
            // retransmissions at 1.5, 4.5, 10.5 and 22.5 s: they outlast a Sentinel failover,
            // whose new master has no replica to confirm leases until the sentinel has made the
            // demoted master its replica (about 10 s, docs/operations.md "Redis failover")
            timeoutMs: 60_000,
            ackTimeoutMs: 1_500,
          });
          assert.equal(formatCode(res.code), '2.04', res.payload.toString());
          acknowledged.push(id);
        };
        try {
          await post('shared-1');
          const a = [...gwA.gateway.dtls.listAssociations()].find((x) => x.identity.includes(dk));
          const cid = a?.connectionId;
          assert.ok(cid !== undefined, 'a CID association on A');
          await waitFor(() => gwA.gateway.dtls.stats.shared.stored >= 1, 'stored', 10_000);
          const handshakesB = gwB.gateway.dtls.stats.handshakesCompleted;
          relay.target = gwB.port;
          await post('shared-2');
          assert.equal(gwB.gateway.dtls.stats.shared.adoptions.cid, 1, 'adopted by CID');
          // The master holding the association fails over while B goes on using its leases:
          // the device keeps posting through the switch and after it, with no handshake.
          let switched = false;
          const failover = fixture
            .failover(`${redisPrefix}:assoc:{c%3A${cid.toString('hex')}}`)
            .finally(() => (switched = true));
          let i = 3;
          let during = 0;
          while (!switched) {
            await post(`shared-${i++}`);
            during++;
          }
          await failover;
          for (const last = i + 4; i < last; i++) await post(`shared-${i}`);
          assert.ok(during >= 1, 'posts during the switch');
          assert.equal(
            gwB.gateway.dtls.stats.handshakesCompleted,
            handshakesB,
            'no handshake on B',
          );
          const seen = (id: string): number =>
            platform.messages.filter((m) => m.payload.toString().includes(`"${id}"`)).length;
          await waitFor(
            () => acknowledged.every((id) => seen(id) >= 1),
            'all at the broker',
            10_000,
          );
          for (const id of acknowledged) assert.equal(seen(id), 1, `${id} exactly once`);
        } finally {
          await device.close();
          await relay.close();
        }
      });
    });
  }
});
