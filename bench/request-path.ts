/**
 * Micro-benchmark of the request's own layers, in process and without DTLS: a `CoapEndpoint`
 * with the gateway's request handler, the bridge `Router` (with a memory command store) and
 * an `MqttBridgeBackend` connected to a real broker (Mosquitto at 127.0.0.1:1883 unless
 * `--mqtt`), fed encoded CoAP requests by 100 in-process "devices" in a closed loop (one
 * request outstanding each). The platform stand-in (subscribes to the request topic and
 * answers on its `_reply` topic with the same JSON id) runs in this driver process, so its
 * CPU is not counted.
 *
 * Two builds side by side: `--old <dist>` (e.g. main built in a detached copy) and this
 * build (`--new`, default: the dist this script runs from). Each round runs one worker
 * process per build and variant, and an identical-process control (the old build again), the
 * order rotating per round. Figure: the worker's CPU (`process.cpuUsage`, user + system) per
 * request over a measured window after a warm-up; ratios are taken per round (new/old,
 * control/old) and their medians reported. The machine is shared: read new/old against
 * control/old, never against 1.
 *
 * Prints one JSON object. Run:
 *   node dist/bench/request-path.js --old /tmp/old/dist --rounds 8 --duration 3 --warmup 1
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';

import { choiceFlag, numberFlag, parseFlags, UsageError } from './lib/args.js';
import { commandLine, environment, log, writeResult } from './lib/harness.js';
import { median, round } from './lib/stats.js';
import type * as EndpointModule from '../src/coap/endpoint.js';
import type * as CodecModule from '../src/coap/codec.js';
import type * as HandlerModule from '../src/gateway/translation/request-handler.js';
import type * as RouterModule from '../src/bridge/router.js';
import type * as BackendModule from '../src/bridge/mqtt/backend.js';
import type * as MemoryStoreModule from '../src/bridge/commands/memory-store.js';
import type * as MetricsModule from '../src/telemetry/metrics.js';
import type { DeviceMessageBackend, Principal } from '../src/bridge/types.js';

const VARIANTS = ['reply', 'publish'] as const;
type Variant = (typeof VARIANTS)[number];

/** The EnOS topic tail of each variant (as in uplink.ts: publish-only is rrpc/response/1). */
const TAIL: Record<Variant, string> = {
  reply: 'thing/measurepoint/post',
  publish: 'rrpc/response/1',
};

const here = path.dirname(fileURLToPath(import.meta.url));
/** This build's dist root (dist/bench/request-path.js → dist). */
const OWN_DIST = path.resolve(here, '..');

interface WorkerResult {
  readonly requests: number;
  readonly cpuUsPerRequest: number;
  readonly requestsPerSec: number;
  readonly unexpected: number;
}

// --- worker ------------------------------------------------------------------------------

async function worker(
  dist: string,
  variant: Variant,
  url: string,
  prefix: string,
  devices: number,
  warmupS: number,
  durationS: number,
): Promise<WorkerResult> {
  const load = <T>(rel: string): Promise<T> => import(path.join(dist, 'src', rel)) as Promise<T>;
  const { CoapEndpoint } = await load<typeof EndpointModule>('coap/endpoint.js');
  const { encode } = await load<typeof CodecModule>('coap/codec.js');
  // gateway/translation/ since the composition root was split; older builds have it in gateway/
  const { createRequestHandler, createUploadAdmission } = await load<typeof HandlerModule>(
    'gateway/translation/request-handler.js',
  ).catch(() => load<typeof HandlerModule>('gateway/request-handler.js'));
  const { Router } = await load<typeof RouterModule>('bridge/router.js');
  const { MqttBridgeBackend } = await load<typeof BackendModule>('bridge/mqtt/backend.js');
  const { MemoryCommandStore } = await load<typeof MemoryStoreModule>(
    'bridge/commands/memory-store.js',
  );
  const { createMetrics } = await load<typeof MetricsModule>('telemetry/metrics.js');

  const bridge = new MqttBridgeBackend({
    url,
    clientIdPrefix: 'bench-rp',
    poolSize: 2,
    topicPrefix: prefix,
    publishTimeoutMs: 10_000,
    replyTimeoutMs: 10_000,
  });
  bridge.start();
  if (!(await bridge.waitConnected(10_000))) throw new Error(`no broker at ${url}`);
  // What the composition root hands the router in bridge mode: the build's own device
  // adapter when it has one, else the closures src/gateway/index.ts had before it.
  const withDevices = bridge as unknown as { forDevices?: () => DeviceMessageBackend };
  const devicesBackend: DeviceMessageBackend =
    typeof withDevices.forDevices === 'function'
      ? withDevices.forDevices()
      : {
          publish: (d, topic, payload, opts) =>
            bridge.publish(topic, payload, { ...opts, device: `${d.productKey}\n${d.deviceKey}` }),
          request: (d, topic, payload, replyTopic, id, opts) =>
            bridge.request(topic, payload, replyTopic, id, {
              ...opts,
              device: `${d.productKey}\n${d.deviceKey}`,
            }),
        };
  const store = new MemoryCommandStore({ queueLength: 10, expiryMs: 3_600_000, maxWaiters: 100 });
  const router = new Router({
    mqtt: devicesBackend,
    http: undefined,
    routes: undefined,
    activation: undefined,
    commands: store,
    presence: undefined,
    unavailableMaxAge: 5,
    maxInlineCommand: 512,
    maxTtd: 60,
    maxTtdWaitersPerDevice: 2,
    maxTtdWaiters: 1000,
  });
  const endpoint = new CoapEndpoint<Principal | undefined>({
    handler: createRequestHandler(router, createMetrics().requests),
    admit: createUploadAdmission(),
    ackTimeoutMs: 1500,
    maxPayload: 1024,
    blockSize: 1024,
    maxUploadsPerPeer: 2,
    maxUploads: 1000,
    maxUploadBytes: 1 << 20,
  });

  let completed = 0;
  let unexpected = 0;
  let running = true;
  class Device {
    readonly key: string;
    readonly principal: Principal;
    private mid = 1;
    private seq = 0;
    private readonly template: Buffer;
    private readonly idAt: number;
    constructor(i: number) {
      const dk = `dev${String(i).padStart(6, '0')}`;
      this.key = `127.0.0.1:${10_000 + i}`;
      this.principal = {
        productKey: 'benchPK',
        deviceKey: dk,
        secureMode: 2,
        lifetime: 86400,
        assetId: undefined,
        sessionId: `s${i}`,
      };
      const body =
        '{"id":"00000000","version":"1.0","method":"thing.measurepoint.post",' +
        '"params":{"measurepoints":{"temperature":21.5,"humidity":40},"time":1796573534093}}';
      this.template = encode({
        type: 0,
        code: 2,
        messageId: 0,
        token: Buffer.from([1, 2, 3, 4]),
        options: ['topic', 'sys', 'benchPK', dk, ...TAIL[variant].split('/')].map((s) => ({
          number: 11,
          value: Buffer.from(s),
        })),
        payload: Buffer.from(body),
      });
      this.idAt = this.template.indexOf('00000000');
    }
    next(): void {
      const d = Buffer.from(this.template);
      this.mid = (this.mid + 1) & 0xffff;
      d[2] = this.mid >>> 8;
      d[3] = this.mid & 0xff;
      d.write(String(this.seq++ % 1e8).padStart(8, '0'), this.idAt, 'latin1');
      endpoint.receive(this, d);
    }
    send(datagram: Buffer): boolean {
      // piggybacked ACK 2.04 (0x44)
      if (datagram[1] !== 0x44 || datagram.length <= 4) unexpected++;
      completed++;
      if (running) this.next();
      return true;
    }
  }
  const all = Array.from({ length: devices }, (_, i) => new Device(i));
  for (const d of all) d.next();
  await new Promise((r) => setTimeout(r, warmupS * 1000));
  const c0 = completed;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, durationS * 1000));
  const cpu = process.cpuUsage(cpu0);
  const t = performance.now() - t0;
  const n = completed - c0;
  running = false;
  await new Promise((r) => setTimeout(r, 500));
  endpoint.close();
  await bridge.close();
  await store.close();
  return {
    requests: n,
    cpuUsPerRequest: (cpu.user + cpu.system) / n,
    requestsPerSec: (n / t) * 1000,
    unexpected,
  };
}

// --- driver ------------------------------------------------------------------------------

/** The platform: answers each request on `{topic}_reply` with its JSON id. */
async function standIn(url: string, prefix: string): Promise<mqtt.MqttClient> {
  const client = await mqtt.connectAsync(url, { clientId: `bench-rp-platform-${prefix}` });
  await client.subscribeAsync(`${prefix}/sys/+/+/${TAIL.reply}`, { qos: 1 });
  client.on('message', (topic, payload) => {
    const m = /"id":"([0-9]+)"/.exec(payload.toString('latin1'));
    if (m === null) return;
    client.publish(`${topic}_reply`, `{"id":"${m[1]}","code":200,"data":null}`, { qos: 0 });
  });
  return client;
}

function runWorker(args: readonly string[]): Promise<WorkerResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--worker', ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`worker exited ${code}`));
      else resolve(JSON.parse(out) as WorkerResult);
    });
  });
}

async function main(): Promise<void> {
  const flags = parseFlags(
    [
      'old',
      'new',
      'mqtt',
      'rounds',
      'duration',
      'warmup',
      'devices',
      'variants',
      'variant',
      'dist',
      'prefix',
    ],
    ['worker'],
  );
  const url = typeof flags.mqtt === 'string' ? flags.mqtt : 'mqtt://127.0.0.1:1883';
  const devices = numberFlag(flags, 'devices', 100, 1, 10_000);
  const warmup = numberFlag(flags, 'warmup', 1, 0, 60, false);
  const duration = numberFlag(flags, 'duration', 3, 0.5, 600, false);
  if (flags.worker === true) {
    const variant = choiceFlag(flags, 'variant', VARIANTS, 'reply');
    if (typeof flags.dist !== 'string' || typeof flags.prefix !== 'string') {
      throw new UsageError('--worker needs --dist and --prefix');
    }
    const r = await worker(flags.dist, variant, url, flags.prefix, devices, warmup, duration);
    // exit at once: nothing of the worker needs to outlive its result
    process.stdout.write(JSON.stringify(r), () => process.exit(0));
    return;
  }
  if (typeof flags.old !== 'string')
    throw new UsageError('--old <dist of the old build> is required');
  const oldDist = path.resolve(flags.old);
  const newDist = typeof flags.new === 'string' ? path.resolve(flags.new) : OWN_DIST;
  const rounds = numberFlag(flags, 'rounds', 8, 1, 100);
  const variants = (typeof flags.variants === 'string' ? flags.variants : 'reply,publish')
    .split(',')
    .map((v) => {
      if (!(VARIANTS as readonly string[]).includes(v))
        throw new UsageError(`unknown variant ${v}`);
      return v as Variant;
    });
  const startedAt = new Date();
  const prefix = `bench-rp-${randomBytes(4).toString('hex')}`;
  const platform = await standIn(url, prefix);
  const builds = { old: oldDist, new: newDist, control: oldDist } as const;
  const names = ['old', 'new', 'control'] as const;
  const rows: Record<string, unknown>[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      for (const variant of variants) {
        const order = names.map((_, k) => names[(k + r) % names.length] ?? 'old');
        const res: Partial<Record<(typeof names)[number], WorkerResult>> = {};
        for (const name of order) {
          res[name] = await runWorker([
            '--dist',
            builds[name],
            '--variant',
            variant,
            '--prefix',
            prefix,
            '--mqtt',
            url,
            '--devices',
            String(devices),
            '--warmup',
            String(warmup),
            '--duration',
            String(duration),
          ]);
        }
        const o = res.old?.cpuUsPerRequest ?? NaN;
        const row = {
          round: r + 1,
          variant,
          order,
          cpuUsPerRequest: {
            old: round(res.old?.cpuUsPerRequest ?? null, 2),
            new: round(res.new?.cpuUsPerRequest ?? null, 2),
            control: round(res.control?.cpuUsPerRequest ?? null, 2),
          },
          requestsPerSec: {
            old: round(res.old?.requestsPerSec ?? null, 0),
            new: round(res.new?.requestsPerSec ?? null, 0),
            control: round(res.control?.requestsPerSec ?? null, 0),
          },
          unexpected:
            (res.old?.unexpected ?? 0) +
            (res.new?.unexpected ?? 0) +
            (res.control?.unexpected ?? 0),
          newOverOld: (res.new?.cpuUsPerRequest ?? NaN) / o,
          controlOverOld: (res.control?.cpuUsPerRequest ?? NaN) / o,
        };
        log(
          `round ${r + 1} ${variant}: ${JSON.stringify(row.cpuUsPerRequest)} new/old ${row.newOverOld.toFixed(3)} control/old ${row.controlOverOld.toFixed(3)}`,
        );
        rows.push(row);
      }
    }
  } finally {
    await platform.endAsync();
  }
  const summary: Record<string, unknown> = {};
  for (const variant of variants) {
    const mine = rows.filter((x) => x.variant === variant);
    const pick = (k: string): number[] => mine.map((x) => x[k] as number);
    const cpu = (k: 'old' | 'new' | 'control'): number | null =>
      median(mine.map((x) => (x.cpuUsPerRequest as Record<string, number | null>)[k] ?? null));
    summary[variant] = {
      newOverOld: round(median(pick('newOverOld')), 3),
      controlOverOld: round(median(pick('controlOverOld')), 3),
      newOverOldRange: [
        round(Math.min(...pick('newOverOld')), 3),
        round(Math.max(...pick('newOverOld')), 3),
      ],
      controlOverOldRange: [
        round(Math.min(...pick('controlOverOld')), 3),
        round(Math.max(...pick('controlOverOld')), 3),
      ],
      medianCpuUsPerRequest: { old: cpu('old'), new: cpu('new'), control: cpu('control') },
    };
  }
  const result = {
    bench: 'request-path',
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    environment: environment(),
    parameters: {
      old: oldDist,
      new: newDist,
      rounds,
      devices,
      warmupS: warmup,
      durationS: duration,
      variants,
      mqtt: url,
    },
    summary,
    rounds: rows,
  };
  writeResult('request-path', startedAt, result);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(err instanceof UsageError ? 2 : 1);
});
