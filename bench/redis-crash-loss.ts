/**
 * Acknowledged writes lost when the Redis master crashes (SIGKILL), with or without
 * `redisWaitReplicas` (docs/operations.md, "Redis and broker requirements").
 *
 * Per crash: a fresh Redis Cluster (3 masters) or Sentinel setup on ports 17000–17999 with
 * `--replicas` replicas per master (failure detection 1 s); two command stores and two secret
 * stacks (devices file) with `--wait-replicas`, the gateway's defaults otherwise (300 ms
 * command timeout); `--writers` loops each queueing commands (one device's queue) and
 * activating devices, all on the master that is then killed, back to back (20 ms pause after
 * a refusal). After
 * `--before` ms of writing the master is SIGKILLed; the loops go on until the replica is
 * promoted and every loop had an acknowledged write again (at most 20 s), then the queue and
 * the activation keys are read from the new master. Lost = acknowledged but not there.
 *
 * Run: `npm run build && node dist/bench/redis-crash-loss.js [--topologies cluster,sentinel]
 *   [--crashes 5] [--writers 16] [--wait-replicas 0] [--replicas 2] [--before 1000]`
 * One JSON object on stdout, progress on stderr, a copy in bench/results/.
 */
import { randomBytes } from 'node:crypto';
import { DevicesFile } from '../src/auth/devices-file.js';
import { RedisKeys } from '../src/auth/redis-keys.js';
import { createSecretStack, type SecretStack } from '../src/auth/stack.js';
import { RedisCommandStore, commandQueueKey } from '../src/bridge/commands/index.js';
import { decodeEntry } from '../src/bridge/commands/entry.js';
import { loadConfig } from '../src/config/load.js';
import {
  startCrashTopology,
  type CrashTopology,
  type CrashTopologyName,
} from '../test/helpers/redis-topologies.js';
import { numberFlag, parseFlags, runScript, stringFlag, UsageError } from './lib/args.js';
import { commandLine, environment, log, writeResult } from './lib/harness.js';

/** The gateway's per-command Redis deadline (WAIT gets 80 % of it), as `serve` runs it. */
const COMMAND_TIMEOUT_MS = loadConfig().redisCommandTimeoutMs;

const USAGE =
  'usage: node dist/bench/redis-crash-loss.js [--topologies cluster,sentinel] [--crashes 5] ' +
  '[--writers 16] [--wait-replicas 0] [--replicas 2] [--before 1000]';

interface CrashResult {
  commandsAcked: number;
  commandsRefused: number;
  commandsLost: number;
  activationsAcked: number;
  activationsRefused: number;
  activationsLost: number;
  /** Activations answered with a refusal whose claim is in Redis all the same. */
  activationsRefusedButStored: number;
  /** Refused activations whose claim was found and removed again (`activationsReleased`). */
  activationsReleased: number;
  /** Activation store reads (GET) that failed, and claims or releases that failed. */
  activationReadErrors: number;
  activationStoreErrors: number;
  /** Refusals by reason. */
  activationRefusals: Record<string, number>;
  promotedAfterMs: number;
  writingAgainAfterMs: number;
}

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

async function oneCrash(
  name: CrashTopologyName,
  o: { writers: number; waitReplicas: number; replicas: number; beforeMs: number },
): Promise<CrashResult> {
  const topo: CrashTopology = await startCrashTopology(name, {
    replicas: o.replicas,
    ports: { from: 17_000, to: 17_999 },
    timeoutMs: 30_000,
  });
  const closers: (() => Promise<void>)[] = [];
  try {
    const p = `bench-crash-${randomBytes(4).toString('hex')}`;
    const keys = new RedisKeys(p);
    const victim = await topo.masterOf(`${p}:{presence}`);
    const candidates = Array.from({ length: 60_000 }, (_, i) => `f-${i}`);
    const onVictim = new Set(
      await topo.keysOn(
        victim,
        candidates.map((dk) => keys.activation('dyn', dk)),
      ),
    );
    const activationDks = candidates.filter((dk) => onVictim.has(keys.activation('dyn', dk)));
    let device = { productKey: 'dyn', deviceKey: '' };
    for (let i = 0; device.deviceKey === ''; i++) {
      const d = { productKey: 'dyn', deviceKey: `c-${i}` };
      const [hit] = await topo.keysOn(victim, [commandQueueKey(p, d)]);
      if (hit !== undefined) device = d;
    }
    const file = DevicesFile.fromObject({
      products: [{ productKey: 'dyn', productSecret: 'P-dyn', dynamicRegistration: true }],
      devices: activationDks.map((dk) => ({
        productKey: 'dyn',
        deviceKey: dk,
        deviceSecret: `${dk}-secret`,
      })),
    });
    const stacks: SecretStack[] = [];
    const stores: RedisCommandStore[] = [];
    for (let i = 0; i < 2; i++) {
      const s = createSecretStack({
        redisPrefix: p,
        redisUrl: topo.target(),
        devicesFile: file,
        redisWaitReplicas: o.waitReplicas,
        cacheSize: 1_000,
        cacheTtlMs: 60_000,
        redisTtlMs: 60_000,
        negativeTtlMs: 5_000,
        registryTimeoutMs: 1_000,
        redisCommandTimeoutMs: COMMAND_TIMEOUT_MS,
      });
      closers.push(() => s.close());
      stacks.push(s);
      const c = new RedisCommandStore({
        maxWaiters: 1_000,
        url: topo.target(),
        prefix: p,
        waitReplicas: o.waitReplicas,
        commandTimeoutMs: COMMAND_TIMEOUT_MS,
        queueLength: 1_000_000,
        expiryMs: 3_600_000,
      });
      closers.push(() => c.close());
      stores.push(c);
    }
    for (const c of stores) {
      if (!(await c.waitReady(15_000))) throw new Error('command store not ready');
    }
    if (!(await until(() => stacks.every((s) => s.redisState() === 'connected'), 15_000))) {
      throw new Error('secret stack not connected');
    }

    const acked = new Set<string>();
    const activated = new Map<string, string>();
    let commandsRefused = 0;
    let activationsRefused = 0;
    const refusedDks: string[] = [];
    const activationRefusals: Record<string, number> = {};
    let next = 0;
    const clock: { killedAt: number | undefined } = { killedAt: undefined };
    const ackedAfterKill = new Set<number>();
    let stop = false;
    const writer = async (w: number) => {
      while (!stop) {
        const i = next++;
        const after = clock.killedAt !== undefined;
        const store = stores[i % 2];
        const stack = stacks[i % 2];
        const dk = activationDks[i];
        if (store === undefined || stack === undefined || dk === undefined) return;
        try {
          if ((await store.enqueue(device, '/t', Buffer.from(`{"id":"m${i}"}`))) === 'queued') {
            acked.add(`m${i}`);
            if (after) ackedAfterKill.add(w);
          }
        } catch {
          commandsRefused++;
        }
        const r = await stack.activator.activate('dyn', dk);
        if (r.ok) activated.set(dk, r.deviceSecret);
        else {
          activationsRefused++;
          refusedDks.push(dk);
          activationRefusals[r.reason] = (activationRefusals[r.reason] ?? 0) + 1;
          // a refused device retries later (Max-Age): no busy loop while Redis is away
          await new Promise((res) => setTimeout(res, 20));
        }
      }
    };
    const loops = Array.from({ length: o.writers }, (_, w) => writer(w));
    await new Promise((r) => setTimeout(r, o.beforeMs));
    const t0 = Date.now();
    const promoted = topo.crash(victim, commandQueueKey(p, device));
    clock.killedAt = t0;
    await promoted;
    const promotedAfterMs = Date.now() - t0;
    const again = await until(() => ackedAfterKill.size === o.writers, 20_000);
    const writingAgainAfterMs = Date.now() - t0;
    stop = true;
    await Promise.all(loops);
    if (!again) log(`${name}: not every writer wrote again within 20 s`);

    const check = topo.client();
    closers.push(() => {
      check.disconnect();
      return Promise.resolve();
    });
    const present = new Set(
      (await check.lrange(commandQueueKey(p, device), 0, -1)).map((t) => decodeEntry(t)?.messageId),
    );
    let activationsLost = 0;
    const dks = [...activated.keys()];
    for (let i = 0; i < dks.length; i += 500) {
      const batch = dks.slice(i, i + 500);
      const values = await Promise.all(batch.map((dk) => check.get(keys.activation('dyn', dk))));
      batch.forEach((dk, j) => {
        const v = values[j];
        if (v === null || v === undefined || !v.includes(activated.get(dk) ?? '?')) {
          activationsLost++;
        }
      });
    }
    let activationsRefusedButStored = 0;
    for (let i = 0; i < refusedDks.length; i += 500) {
      const batch = refusedDks.slice(i, i + 500);
      const there = await Promise.all(batch.map((dk) => check.exists(keys.activation('dyn', dk))));
      activationsRefusedButStored += there.filter((n) => n === 1).length;
    }
    return {
      commandsAcked: acked.size,
      commandsRefused,
      commandsLost: [...acked].filter((id) => !present.has(id)).length,
      activationsAcked: activated.size,
      activationsRefused,
      activationsLost,
      activationsRefusedButStored,
      activationsReleased: stacks.reduce((a, st) => a + st.stats.activationsReleased, 0),
      activationReadErrors: stacks.reduce(
        (a, st) => a + st.stats.lookups.activation.error + st.stats.lookups.activation.timeout,
        0,
      ),
      activationStoreErrors: stacks.reduce((a, st) => a + st.stats.activationStoreErrors, 0),
      activationRefusals,
      promotedAfterMs,
      writingAgainAfterMs,
    };
  } finally {
    for (const c of closers.reverse()) await c();
    await topo.stop();
  }
}

runScript('redis-crash-loss', USAGE, async () => {
  const flags = parseFlags(
    ['topologies', 'crashes', 'writers', 'wait-replicas', 'replicas', 'before'],
    [],
  );
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const names = stringFlag(flags, 'topologies', 'cluster,sentinel').split(',');
  for (const n of names) {
    if (n !== 'cluster' && n !== 'sentinel') throw new UsageError(`unknown topology ${n}`);
  }
  const o = {
    crashes: numberFlag(flags, 'crashes', 5, 1, 100),
    writers: numberFlag(flags, 'writers', 16, 1, 256),
    waitReplicas: numberFlag(flags, 'wait-replicas', 0, 0, 2),
    replicas: numberFlag(flags, 'replicas', 2, 1, 3),
    beforeMs: numberFlag(flags, 'before', 1_000, 100, 60_000),
  };
  const startedAt = new Date();
  const env = environment();
  const results: Record<string, CrashResult[]> = {};
  for (const name of names as CrashTopologyName[]) {
    const runs: CrashResult[] = [];
    for (let i = 0; i < o.crashes; i++) {
      const r = await oneCrash(name, o);
      log(`${name} crash ${i + 1}/${o.crashes}: ${JSON.stringify(r)}`);
      runs.push(r);
    }
    results[name] = runs;
  }
  const sum = (runs: CrashResult[], k: Exclude<keyof CrashResult, 'activationRefusals'>) =>
    runs.reduce((a, r) => a + r[k], 0);
  const totals = Object.fromEntries(
    Object.entries(results).map(([name, runs]) => [
      name,
      {
        commandsAcked: sum(runs, 'commandsAcked'),
        commandsLost: sum(runs, 'commandsLost'),
        activationsAcked: sum(runs, 'activationsAcked'),
        activationsLost: sum(runs, 'activationsLost'),
        activationsRefusedButStored: sum(runs, 'activationsRefusedButStored'),
        activationsReleased: sum(runs, 'activationsReleased'),
        crashesWithLoss: runs.filter((r) => r.commandsLost + r.activationsLost > 0).length,
      },
    ]),
  );
  const result = {
    bench: 'redis-crash-loss',
    command: commandLine(),
    options: o,
    environment: env,
    totals,
    runs: results,
  };
  log(`written to ${writeResult('redis-crash-loss', startedAt, result)}`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
});
