/**
 * The Redis-backed flows against a real Redis Cluster (3 masters, 3 replicas) and a real
 * Sentinel setup (master, replica, sentinel), all on free loopback ports: secrets shared
 * between pods, one-shot activation, commands queued on one pod and delivered by another
 * (pub/sub wake-up included), presence transitions decided once. Then a failover of the
 * master that holds a device's keys while pods keep writing: every command or activation
 * that was acknowledged before, during or after the switch is still there afterwards.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Cluster, Redis } from 'ioredis';
import { DevicesFile } from '../../../src/auth/devices-file.js';
import { RedisKeys } from '../../../src/auth/redis-keys.js';
import { createSecretStack, type SecretStack } from '../../../src/auth/stack.js';
import { RedisCommandStore, commandQueueKey } from '../../../src/bridge/commands/index.js';
import { decodeEntry } from '../../../src/bridge/commands/entry.js';
import { RedisPresenceStore } from '../../../src/bridge/presence/index.js';
import { closeRedis, createFailFastRedis, type RedisTarget } from '../../../src/redis/client.js';
import { FakeRegistry, prefix, stackOptions, waitFor } from '../auth/helpers.js';
import { RedisClusterFixture, RedisSentinelFixture } from '../../helpers/redis-topologies.js';
import { COMMAND_STORE_DEFAULTS } from '../../helpers/component-defaults.js';

interface Topology {
  target(): RedisTarget;
  client(): Redis | Cluster;
  /** Fails over the master holding `key`. */
  failover(key: string): Promise<void>;
  stop(): Promise<void>;
}

const topologies: Record<string, () => Promise<Topology>> = {
  cluster: async () => {
    const c = await RedisClusterFixture.start();
    return {
      target: () => c.target(),
      client: () => c.client(),
      failover: async (key) => {
        const { replica } = await c.ownerOf(key);
        await c.failover(replica);
      },
      stop: () => c.stop(),
    };
  },
  sentinel: async () => {
    const s = await RedisSentinelFixture.start();
    return {
      target: () => s.target(),
      client: () => s.client(),
      failover: () => s.failover(),
      stop: () => s.stop(),
    };
  },
};

const TOPIC = '/sys/dyn/f0/thing/service/reboot';

// Cluster and Sentinel side by side: each has its own Redis servers, registry and prefixes;
// most of the time goes to the failovers.
describe('Redis topologies', { concurrency: true }, () => {
  for (const [name, start] of Object.entries(topologies)) {
    describe(`Redis ${name}`, { concurrency: 1 }, () => {
      let topo: Topology;
      let registry: FakeRegistry;
      let check: Redis | Cluster;
      const closers: (() => Promise<unknown>)[] = [];

      before(async () => {
        topo = await start();
        registry = await FakeRegistry.start();
        registry.products.set('dyn', { productSecret: 'P-dyn', dynamicRegistration: true });
        registry.products.set('pk', { productSecret: 'P-pk', dynamicRegistration: false });
        check = topo.client();
      });

      after(async () => {
        for (const c of closers.reverse()) await c();
        check.disconnect();
        await registry.close();
        await topo.stop();
      });

      async function stack(
        redisPrefix: string,
        o: { file?: DevicesFile; waitReplicas?: number } = {},
      ): Promise<SecretStack> {
        const s = createSecretStack(
          stackOptions({
            redisPrefix,
            redisUrl: topo.target(),
            registryUrl: o.file === undefined ? registry.url : undefined,
            devicesFile: o.file,
            redisWaitReplicas: o.waitReplicas,
            redisCommandTimeoutMs: 2_000,
          }),
        );
        closers.push(() => s.close());
        await waitFor(() => s.redisState() === 'connected', `${name}: stack connected`, 15_000);
        return s;
      }

      async function commandStore(
        redisPrefix: string,
        waitReplicas = 0,
      ): Promise<RedisCommandStore> {
        const s = new RedisCommandStore({
          ...COMMAND_STORE_DEFAULTS,
          waitReplicas,
          url: topo.target(),
          prefix: redisPrefix,
          queueLength: 10_000,
          expiryMs: 3_600_000,
          commandTimeoutMs: 2_000,
          maxBackoffMs: 200,
        });
        closers.push(() => s.close());
        assert.ok(await s.waitReady(15_000), `${name}: command store ready`);
        return s;
      }

      it('secrets: what one pod fetched from the registry, another finds in Redis', async () => {
        const p = prefix();
        registry.devices.set('pk/s1', { deviceSecret: 'S1-secret', assetId: 'A-s1' });
        const a = await stack(p);
        const b = await stack(p);
        assert.equal((await a.source.device('pk', 's1'))?.deviceSecret, 'S1-secret');
        const asked = registry.count('/devices/pk/s1', 'GET');
        const keys = new RedisKeys(p);
        await waitFor(async () => (await check.exists(keys.device('pk', 's1'))) === 1, 'cached');
        assert.equal((await b.source.device('pk', 's1'))?.deviceSecret, 'S1-secret');
        assert.equal(registry.count('/devices/pk/s1', 'GET'), asked, 'B did not ask the registry');
      });

      it('activation: once per device across pods; the other pod finds the secret', async () => {
        const p = prefix();
        const a = await stack(p);
        const b = await stack(p);
        const first = await a.activator.activate('dyn', 'a1');
        assert.ok(first.ok);
        assert.deepEqual(await b.activator.activate('dyn', 'a1'), {
          ok: false,
          reason: 'already-activated',
        });
        const asked = registry.count('/devices/dyn/a1', 'GET');
        // device record and activation are read in one MGET: one slot on a cluster
        assert.equal((await b.source.device('dyn', 'a1'))?.deviceSecret, first.deviceSecret);
        assert.equal(registry.count('/devices/dyn/a1', 'GET'), asked);
      });

      it('commands: queued on one pod, a waiter on another wakes, fetches, acknowledges', async () => {
        const p = prefix();
        const a = await commandStore(p);
        const b = await commandStore(p);
        const device = { productKey: 'dyn', deviceKey: 'c1' };
        const waiting = b.waitFor(device, 10_000);
        assert.equal(
          await a.enqueue(device, '/sys/dyn/c1/thing/service/x', Buffer.from('{"id":"m1"}')),
          'queued',
        );
        const cmd = await waiting;
        assert.equal(cmd?.messageId, 'm1');
        assert.ok(
          await b.acknowledge(device, '/sys/dyn/c1/thing/service/x', Buffer.from('{"id":"m1"}')),
        );
        assert.equal((await a.peek(device)).count, 0);
      });

      it('presence: online once, refreshed by the other pod, the lapse claimed by exactly one', async () => {
        const p = prefix();
        const conns = [0, 1].map((i) =>
          createFailFastRedis({
            url: topo.target(),
            connectionName: `presence-${i}`,
            commandTimeoutMs: 2_000,
            onError: () => {},
          }),
        );
        for (const c of conns) closers.push(() => closeRedis(c));
        await waitFor(() => conns.every((c) => c.status === 'ready'), 'presence clients', 15_000);
        const [a, b] = conns.map((client) => new RedisPresenceStore({ client, prefix: p }));
        if (a === undefined || b === undefined) throw new Error('two stores');
        const device = { productKey: 'pk', deviceKey: 'p1' };
        const t0 = 1_800_000_000_000;
        const touch = { device, lifetime: 30, seenAt: t0, deadline: t0 + 30_000 };
        assert.equal((await a.touch({ ...touch, sessionId: 's1', token: 't1' })).kind, 'online');
        assert.equal((await b.touch({ ...touch, sessionId: 's1', token: 't2' })).kind, 'refreshed');
        assert.equal(await b.onlineCount(), 1);
        const claims = await Promise.all([
          a.claimLapsed(t0 + 31_000, 10, 'c1'),
          b.claimLapsed(t0 + 31_000, 10, 'c2'),
        ]);
        assert.deepEqual(
          claims.map((c) => c.length).sort(),
          [0, 1],
          'exactly one pod claims the lapse',
        );
        const claimed = claims.flat()[0];
        assert.deepEqual(claimed?.device, device);
        assert.equal(claimed?.sessionId, 's1');
        // a retry of the claim with the same token learns what it did
        const again = await (claims[0]?.length === 1 ? a : b).claimLapsed(
          t0 + 31_000,
          10,
          claims[0]?.length === 1 ? 'c1' : 'c2',
        );
        assert.equal(again.length, 1);
        assert.equal(await a.onlineCount(), 0);
      });

      it('failover of the master holding a device: no acknowledged command or activation is lost', async () => {
        const p = prefix();
        // activations from the devices file: there the claim in Redis is what counts (with a
        // registry, the registry's own record is authoritative)
        const file = DevicesFile.fromObject({
          products: [{ productKey: 'dyn', productSecret: 'P-dyn', dynamicRegistration: true }],
          devices: Array.from({ length: 2_000 }, (_, i) => ({
            productKey: 'dyn',
            deviceKey: `f-${i}`,
            deviceSecret: `f-${i}-secret`,
          })),
        });
        const pods = await Promise.all([
          stack(p, { file, waitReplicas: 1 }),
          stack(p, { file, waitReplicas: 1 }),
        ]);
        const stores = await Promise.all([commandStore(p, 1), commandStore(p, 1)]);
        const device = { productKey: 'dyn', deviceKey: 'f0' };
        const queueKey = commandQueueKey(p, device);
        const acked = new Set<string>();
        const activated = new Map<string, string>();
        let failures = 0;
        let stop = false;
        let n = 0;
        const writer = (async () => {
          while (!stop) {
            const i = n++;
            const store = stores[i % 2];
            const pod = pods[i % 2];
            if (store === undefined || pod === undefined) break;
            try {
              const r = await store.enqueue(device, TOPIC, Buffer.from(`{"id":"m${i}"}`));
              if (r === 'queued') acked.add(`m${i}`);
            } catch {
              failures++;
            }
            // devices f-{i}: same product, spread over the slots (and f0's slot among them)
            const r = await pod.activator.activate('dyn', `f-${i}`);
            if (r.ok) activated.set(`f-${i}`, r.deviceSecret);
            else failures++;
            await new Promise((res) => setTimeout(res, 5));
          }
        })();
        await waitFor(() => acked.size >= 20, 'writes before the failover', 15_000);
        await topo.failover(queueKey);
        const afterSwitch = acked.size;
        await waitFor(() => acked.size >= afterSwitch + 20, 'writes after the failover', 20_000);
        stop = true;
        await writer;

        const raw = await check.lrange(queueKey, 0, -1);
        const present = new Set(raw.map((t) => decodeEntry(t)?.messageId));
        const lostCommands = [...acked].filter((id) => !present.has(id));
        assert.deepEqual(lostCommands, [], 'acknowledged commands lost');
        const keys = new RedisKeys(p);
        const lostActivations: string[] = [];
        for (const [dk, secret] of activated) {
          const text = await check.get(keys.activation('dyn', dk));
          if (text === null || !text.includes(secret)) lostActivations.push(dk);
        }
        assert.deepEqual(lostActivations, [], 'acknowledged activations lost');
        // what the test measured, for the report
        console.log(
          `${name} failover: ${acked.size} commands and ${activated.size} activations acknowledged, ` +
            `${failures} writes refused during the switch, 0 lost`,
        );
      });
    });
  }
});
