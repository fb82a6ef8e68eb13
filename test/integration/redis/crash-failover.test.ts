/**
 * A crash (SIGKILL) of the Redis master that holds a device's keys, on a Redis Cluster
 * (3 masters, 2 replicas each) and on Sentinel (master, 2 replicas, 1 sentinel), while two
 * pods' worth of the Redis-backed components keep working on that master's keys: commands
 * queued (`enqueue`), devices activated (devices file: the claim in Redis is what counts),
 * secrets read (registry behind Redis: it answers while Redis cannot) and presence written. Nothing asks for the failover:
 * the cluster's nodes or the sentinel notice the dead master (1 s timeouts) and promote a
 * replica; the other replica follows it, so `WAIT 1` is answered again without the dead
 * node coming back.
 *
 * With `redisWaitReplicas: 1`: every command and activation that was acknowledged, before,
 * during or after the crash, is there afterwards exactly once; writes refused during the
 * switch are counted; every flow works again afterwards (the time from the kill to each
 * flow's first success is printed; the only bound is a generous ceiling). The components are
 * built with the gateway's defaults (300 ms command timeout, 1 s reconnect backoff cap).
 * Ports come from 17000–17999 (cluster bus ports +10000).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { DevicesFile } from '../../../src/auth/devices-file.js';
import { RedisKeys } from '../../../src/auth/redis-keys.js';
import { createSecretStack, type SecretStack } from '../../../src/auth/stack.js';
import { RedisCommandStore, commandQueueKey } from '../../../src/bridge/commands/index.js';
import { decodeEntry } from '../../../src/bridge/commands/entry.js';
import { RedisPresenceStore } from '../../../src/bridge/presence/index.js';
import type { DeviceKey } from '../../../src/bridge/types.js';
import { closeRedis, createFailFastRedis } from '../../../src/redis/client.js';
import { FakeRegistry, prefix, stackOptions, waitFor } from '../auth/helpers.js';
import {
  startCrashTopology,
  type CrashTopology,
  type CrashTopologyName,
  type PortRange,
} from '../../helpers/redis-topologies.js';
import {
  COMMAND_STORE_DEFAULTS,
  REDIS_COMMAND_TIMEOUT_MS,
} from '../../helpers/component-defaults.js';

const PORTS: PortRange = { from: 17_000, to: 17_999 };
const TOPIC = '/sys/dyn/c/thing/service/reboot';
/** How long the flows may take to work again after the kill before the test fails. */
const RECOVERY_CEILING_MS = 30_000;
/** The registry's deadline: generous, see `stack()`. */
const REGISTRY_TIMEOUT_MS = 10_000;

/** What one flow saw: successes and refusals, and when (ms since the kill) it worked again. */
class Flow {
  ok = 0;
  refused = 0;
  okAfterKill = 0;
  refusedAfterKill = 0;
  /** ms from the kill to the first success of an operation started after it. */
  recoveredAfterMs: number | undefined;

  constructor(readonly name: string) {}

  /** Runs `op`, counting the outcome; `killedAt` is undefined before the kill. */
  async run(op: () => Promise<boolean>, clock: { killedAt: number | undefined }): Promise<void> {
    const startedAfterKill = clock.killedAt !== undefined;
    let ok: boolean;
    try {
      ok = await op();
    } catch {
      ok = false;
    }
    if (ok) this.ok++;
    else this.refused++;
    if (!startedAfterKill || clock.killedAt === undefined) return;
    if (ok) {
      this.okAfterKill++;
      this.recoveredAfterMs ??= Date.now() - clock.killedAt;
    } else {
      this.refusedAfterKill++;
    }
  }

  toString(): string {
    return (
      `${this.name}: ${this.ok} ok, ${this.refused} refused (${this.refusedAfterKill} after the ` +
      `kill), first success ${this.recoveredAfterMs ?? '-'} ms after the kill`
    );
  }
}

for (const name of ['cluster', 'sentinel'] satisfies CrashTopologyName[]) {
  describe(`Redis ${name}: SIGKILL of the master`, () => {
    let topo: CrashTopology;
    let registry: FakeRegistry;
    const closers: (() => Promise<unknown>)[] = [];

    before(async () => {
      topo = await startCrashTopology(name, {
        replicas: 2,
        ports: PORTS,
        timeoutMs: RECOVERY_CEILING_MS,
      });
      registry = await FakeRegistry.start();
    });

    after(async () => {
      for (const c of closers.reverse()) await c();
      await registry?.close();
      await topo?.stop();
    });

    async function stack(
      redisPrefix: string,
      o: { file?: DevicesFile; waitReplicas?: number; cacheSize?: number },
    ): Promise<SecretStack> {
      const s = createSecretStack(
        stackOptions({
          redisPrefix,
          redisUrl: topo.target(),
          registryUrl: o.file === undefined ? registry.url : undefined,
          devicesFile: o.file,
          redisWaitReplicas: o.waitReplicas,
          // the registry stand-in runs in this process, beside the four flows and the
          // checks: its answers while Redis cannot are what the test needs, not their speed.
          // At the gateway's 1 s a starved process (load 17) lost one to the deadline
          registryTimeoutMs: REGISTRY_TIMEOUT_MS,
          // the gateway's defaults
          redisCommandTimeoutMs: undefined,
          redisMaxBackoffMs: undefined,
          ...(o.cacheSize !== undefined ? { cacheSize: o.cacheSize } : {}),
        }),
      );
      closers.push(() => s.close());
      await waitFor(() => s.redisState() === 'connected', `${name}: stack connected`, 15_000);
      return s;
    }

    async function commandStore(redisPrefix: string): Promise<RedisCommandStore> {
      const s = new RedisCommandStore({
        ...COMMAND_STORE_DEFAULTS,
        waitReplicas: 1,
        url: topo.target(),
        prefix: redisPrefix,
        queueLength: 100_000,
        expiryMs: 3_600_000,
      });
      closers.push(() => s.close());
      assert.ok(await s.waitReady(15_000), `${name}: command store ready`);
      return s;
    }

    async function presenceStore(redisPrefix: string): Promise<RedisPresenceStore> {
      const client = createFailFastRedis({
        url: topo.target(),
        connectionName: 'coap-edge-presence',
        commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS,
        onError: () => undefined,
      });
      closers.push(() => closeRedis(client));
      await waitFor(() => client.status === 'ready', `${name}: presence client`, 15_000);
      return new RedisPresenceStore({ client, prefix: redisPrefix });
    }

    it('commands, activations, secrets and presence: nothing acknowledged is lost, all resume', async () => {
      const p = prefix();
      const keys = new RedisKeys(p);
      // the master that holds presence ({presence} slot) is the one that crashes; every other
      // key the flows use is chosen on it too
      const victim = await topo.masterOf(`${p}:{presence}:deadlines`);
      const pick = async (candidates: string[], key: (c: string) => string, n: number) => {
        const on = new Set(await topo.keysOn(victim, candidates.map(key)));
        const chosen = candidates.filter((c) => on.has(key(c))).slice(0, n);
        assert.equal(chosen.length, n, 'enough keys on the crashing master');
        return chosen;
      };
      const range = (what: string, n: number) =>
        Array.from({ length: n }, (_, i) => `${what}-${i}`);
      const [commandDk] = await pick(
        range('c', 30),
        (dk) => commandQueueKey(p, { productKey: 'dyn', deviceKey: dk }),
        1,
      );
      const device: DeviceKey = { productKey: 'dyn', deviceKey: commandDk ?? '' };
      const queueKey = commandQueueKey(p, device);
      const activationDks = await pick(
        range('f', 9_000),
        (dk) => keys.activation('dyn', dk),
        2_500,
      );
      const secretDks = await pick(range('s', 200), (dk) => keys.device('pk', dk), 40);
      const presenceDks = range('pr', 20);

      const file = DevicesFile.fromObject({
        products: [{ productKey: 'dyn', productSecret: 'P-dyn', dynamicRegistration: true }],
        devices: activationDks.map((dk) => ({
          productKey: 'dyn',
          deviceKey: dk,
          deviceSecret: `${dk}-secret`,
        })),
      });
      registry.products.set('pk', { productSecret: 'P-pk', dynamicRegistration: false });
      for (const dk of secretDks) registry.devices.set(`pk/${dk}`, { deviceSecret: `${dk}-S` });

      const pods = await Promise.all(
        [0, 1].map(async () => ({
          activations: await stack(p, { file, waitReplicas: 1 }),
          // an LRU of one entry: nearly every read asks Redis
          secrets: await stack(p, { cacheSize: 1 }),
          commands: await commandStore(p),
          presence: await presenceStore(p),
        })),
      );
      const pod = (i: number) => {
        const x = pods[i % 2];
        if (x === undefined) throw new Error('two pods');
        return x;
      };

      const clock: { killedAt: number | undefined } = { killedAt: undefined };
      const flows = {
        commands: new Flow('commands'),
        activations: new Flow('activations'),
        secrets: new Flow('secret reads from Redis'),
        presence: new Flow('presence'),
      };
      const acked = new Set<string>();
      const refusedCommands = new Set<string>();
      const activated = new Map<string, string>();
      const refusedActivations = new Set<string>();
      let wrongSecrets = 0;
      let unanswered = 0;
      const onlineEvents = new Map<string, number>();
      const touchedAfterKill = new Set<string>();
      let stop = false;
      /** Runs `body` until stopped or it answers false; `pauseMs` paces it (no sync point). */
      const loop = async (body: (i: number) => Promise<boolean | void>, pauseMs = 2) => {
        for (let i = 0; !stop; i++) {
          if ((await body(i)) === false) return;
          await new Promise((res) => setTimeout(res, pauseMs));
        }
      };
      const writers = [
        loop((i) =>
          flows.commands.run(async () => {
            const id = `m${i}`;
            refusedCommands.add(id);
            const r = await pod(i).commands.enqueue(device, TOPIC, Buffer.from(`{"id":"${id}"}`));
            if (r !== 'queued') return false;
            refusedCommands.delete(id);
            acked.add(id);
            return true;
          }, clock),
        ),
        loop(async (i) => {
          // each device once: a device whose activation was refused stays unactivated
          const dk = activationDks[i];
          if (dk === undefined) return false;
          await flows.activations.run(async () => {
            const r = await pod(i).activations.activator.activate('dyn', dk);
            if (!r.ok) {
              refusedActivations.add(dk);
              return false;
            }
            activated.set(dk, r.deviceSecret);
            return true;
          }, clock);
          return true;
        }, 5),
        loop((i) =>
          flows.secrets.run(async () => {
            // a success is a read Redis answered; the registry answers while Redis cannot
            const dk = secretDks[i % secretDks.length] ?? '';
            const { secrets } = pod(i);
            const hits = secrets.stats.lookups.redis.hit;
            let rec: { deviceSecret: string } | undefined;
            try {
              rec = await secrets.source.device('pk', dk);
            } catch {
              rec = undefined;
            }
            if (rec === undefined) unanswered++;
            else if (rec.deviceSecret !== `${dk}-S`) wrongSecrets++;
            return rec !== undefined && secrets.stats.lookups.redis.hit > hits;
          }, clock),
        ),
        loop((i) =>
          flows.presence.run(async () => {
            const dk = presenceDks[i % presenceDks.length] ?? '';
            const afterKill = clock.killedAt !== undefined;
            const now = Date.now();
            const r = await pod(i).presence.touch({
              device: { productKey: 'pk', deviceKey: dk },
              sessionId: `session-${dk}`,
              lifetime: 600,
              seenAt: now,
              deadline: now + 600_000,
              token: randomUUID(),
            });
            if (r.kind === 'online') onlineEvents.set(dk, (onlineEvents.get(dk) ?? 0) + 1);
            if (afterKill) touchedAfterKill.add(dk);
            return true;
          }, clock),
        ),
      ];
      const all = Object.values(flows);
      try {
        await waitFor(
          () => all.every((f) => f.ok >= 20),
          `${name}: every flow working before the crash`,
          20_000,
        );
        const secretsAskedBefore = registry.requests.length;
        const killStarted = Date.now();
        const promise = topo.crash(victim, queueKey);
        // the kill itself is done when the process is gone; crash() then waits for the switch
        clock.killedAt = killStarted;
        const promoted = await promise;
        const promotedAfterMs = Date.now() - killStarted;
        await waitFor(
          () =>
            all.every((f) => f.okAfterKill >= 20) && touchedAfterKill.size === presenceDks.length,
          `${name}: every flow working again after the crash`,
          RECOVERY_CEILING_MS,
        );
        const recoveredAfterMs = Date.now() - killStarted;
        stop = true;
        await Promise.all(writers);

        // what the flows saw, for the report
        console.log(
          `${name} crash of ${victim}: ${promoted} promoted ${promotedAfterMs} ms after the kill; ` +
            `every flow 20 times ok again after ${recoveredAfterMs} ms; ` +
            `${registry.requests.length - secretsAskedBefore} registry requests since the kill\n  ` +
            all.join('\n  '),
        );
      } finally {
        stop = true;
        await Promise.all(writers);
      }

      const check = topo.client();
      closers.push(() => {
        check.disconnect();
        return Promise.resolve();
      });
      const raw = await check.lrange(queueKey, 0, -1);
      const copies = new Map<string, number>();
      for (const t of raw) {
        const id = decodeEntry(t)?.messageId ?? '';
        copies.set(id, (copies.get(id) ?? 0) + 1);
      }
      const lostCommands = [...acked].filter((id) => copies.get(id) !== 1);
      assert.deepEqual(lostCommands, [], 'acknowledged commands not there exactly once');
      assert.ok(
        [...copies.values()].every((n) => n === 1),
        'no command queued twice',
      );
      const refusedButQueued = [...refusedCommands].filter((id) => copies.has(id)).length;

      const lostActivations: string[] = [];
      for (const [dk, secret] of activated) {
        const text = await check.get(keys.activation('dyn', dk));
        if (text === null || !text.includes(secret)) lostActivations.push(dk);
      }
      assert.deepEqual(lostActivations, [], 'acknowledged activations lost');
      let refusedButStored = 0;
      for (const dk of refusedActivations) {
        if ((await check.exists(keys.activation('dyn', dk))) === 1) refusedButStored++;
      }

      assert.equal(wrongSecrets, 0, 'a secret read answered a wrong secret');
      assert.equal(
        unanswered,
        0,
        'every secret read answered (by the registry while Redis could not)',
      );
      // every presence device was touched after the switch: it is online
      const online = await check.zcard(`${p}:{presence}:deadlines`);
      assert.equal(online, presenceDks.length, 'every touched device online');
      const repeatedOnline = [...onlineEvents.values()].filter((n) => n > 1).length;
      console.log(
        `${name}: ${acked.size} commands acknowledged, ${refusedCommands.size} refused ` +
          `(${refusedButQueued} of them queued all the same); ${activated.size} activations ` +
          `acknowledged, ${refusedActivations.size} refused (${refusedButStored} of them stored ` +
          `all the same); 0 acknowledged lost; ${repeatedOnline} of ${presenceDks.length} ` +
          `presence devices went online twice`,
      );
    });
  });
}
