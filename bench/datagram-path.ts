/**
 * In-process micro-benchmark of the untraced datagram path: `DtlsServer.handleDatagram` of
 * application records up through the CoAP endpoint (a synchronous 4.04 answer, sealed and
 * handed to a no-op send), for two builds side by side in one process: this checkout's
 * `dist/` ("new") and another build ("old", `--old <dir>`, e.g. main's tree compiled to
 * `.old/dist`), plus a second instance of the new build as the identical control (its ratio
 * to "new" is the noise floor). Tracing is off in all three.
 *
 * Each instance gets its own association (a real handshake over loopback with our
 * DtlsClient); the client's records are then captured from the socket instead of handled, so
 * every timed batch is fresh records in order. Per round each instance handles one batch of
 * fresh records, then the same batch again (every record a replay: the drop path); the
 * order rotates per round. Medians over rounds of process CPU ns per datagram
 * (`process.cpuUsage`, not wall time: the machine is shared), and the ratios to "new".
 *
 * With `--trace-ratio r`, tracing is on (through each build's DatagramTracer, spans dropped
 * by a discarding exporter) for old, new and the control, and "newOff" is the new build
 * with tracing off: newOff/new is the cost of tracing at that ratio. The old build's
 * tracing is a process-global flag, so no untraced old instance can run next to them.
 *
 * Run: `npm run build && node --expose-gc dist/bench/datagram-path.js --old .old/dist
 *   [--rounds 9] [--batch 2000] [--trace-ratio 0.01]`
 */
import { createSocket, type Socket } from 'node:dgram';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CON, Code } from '../src/coap/constants.js';
import { encode } from '../src/coap/codec.js';
import { DtlsClient } from '../src/dtls/client.js';
import { derivePsk } from '../src/enos/psk.js';
import { UsageError, numberFlag, parseFlags, runScript } from './lib/args.js';

const USAGE = `usage: node --expose-gc dist/bench/datagram-path.js --old <dist dir> [options]
  --old <dir>      the other build's dist directory (its src/ inside), e.g. .old/dist
  --rounds <n>     rounds (default 9)
  --batch <n>      records per instance and round (default 2000)
  --trace-ratio <r>  tracing on at this ratio (spans dropped) for old, new and a control,
                   next to new with tracing off ("newOff")`;

interface Instance {
  readonly name: string;
  readonly handle: (msg: Buffer, address: string, port: number) => void;
  readonly batches: Buffer[][];
  readonly fresh: number[];
  readonly replay: number[];
  close(): Promise<void>;
}

interface Build {
  DtlsServer: new (o: unknown) => {
    handleDatagram(b: Buffer, a: string, p: number): void;
    close(): void;
  };
  CoapEndpoint: new (o: unknown) => {
    receive(peer: unknown, data: Buffer): void;
    close(): void;
    stats: unknown;
  };
  dtlsServerSettings(c: unknown): object;
  coapEndpointSettings(c: unknown): object;
  loadConfig(o: unknown): unknown;
  setupTracing(o: unknown): { tracing?: unknown; shutdown(): Promise<void> } | undefined;
  DatagramTracer: new (...args: unknown[]) => {
    handle(m: Buffer, a: string, p: number): void;
  };
}

/** How an instance traces: not at all, or through the build's DatagramTracer. */
interface TraceMode {
  /** The new build's Tracing; undefined for the old build (its global flag). */
  readonly tracing?: unknown;
}

async function loadBuild(dir: string): Promise<Build> {
  const at = (p: string): Promise<Record<string, unknown>> =>
    import(pathToFileURL(resolve(dir, p)).href) as Promise<Record<string, unknown>>;
  const [server, endpoint, settings, load, setup, tracer] = await Promise.all([
    at('src/dtls/server.js'),
    at('src/coap/endpoint.js'),
    at('src/gateway/component-settings.js'),
    at('src/config/load.js'),
    at('src/telemetry/setup.js'),
    at('src/gateway/datagram-tracing.js'),
  ]);
  return {
    DtlsServer: server.DtlsServer as Build['DtlsServer'],
    CoapEndpoint: endpoint.CoapEndpoint as Build['CoapEndpoint'],
    dtlsServerSettings: settings.dtlsServerSettings as Build['dtlsServerSettings'],
    coapEndpointSettings: settings.coapEndpointSettings as Build['coapEndpointSettings'],
    loadConfig: load.loadConfig as Build['loadConfig'],
    setupTracing: setup.setupTracing as Build['setupTracing'],
    DatagramTracer: tracer.DatagramTracer as Build['DatagramTracer'],
  };
}

/** A span exporter that drops every span (the export itself is not what is measured). */
const DISCARD = {
  export: (_spans: unknown, done: (r: { code: number }) => void): void => done({ code: 0 }),
  shutdown: (): Promise<void> => Promise.resolve(),
};

const PSK = derivePsk('bench-secret-0123456789');
const IDENTITY = 'benchPK,benchDK,2,86400';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function instance(
  name: string,
  b: Build,
  rounds: number,
  batch: number,
  trace?: TraceMode,
): Promise<Instance> {
  const config = b.loadConfig({ overrides: {} });
  const socket: Socket = createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  const coap = new b.CoapEndpoint({
    ...b.coapEndpointSettings(config),
    handler: () => ({ code: Code.NOT_FOUND }),
  });
  let capturing = false;
  const server = new b.DtlsServer({
    ...b.dtlsServerSettings(config),
    send: (data: Buffer, port: number, address: string) => {
      if (!capturing) socket.send(data, port, address);
    },
    handler: {
      resolvePsk: () => ({ ok: true, psk: PSK, principal: 'bench' }),
      onData: (assoc: unknown, data: Buffer) => coap.receive(assoc, data),
    },
    ...(trace?.tracing !== undefined ? { tracing: trace.tracing } : {}),
  });
  const port = socket.address().port;
  const traced =
    trace === undefined
      ? undefined
      : new b.DatagramTracer(
          server,
          coap.stats,
          () => port,
          ...(trace.tracing !== undefined ? [trace.tracing] : []),
        );
  const captured: Buffer[] = [];
  let from = { address: '', port: 0 };
  socket.on('message', (msg, rinfo) => {
    if (capturing) captured.push(msg);
    else server.handleDatagram(msg, rinfo.address, rinfo.port);
  });
  const client = await DtlsClient.connect({
    host: '127.0.0.1',
    port: socket.address().port,
    identity: IDENTITY,
    psk: PSK,
  });
  from = { address: '127.0.0.1', port: client.localPort };
  capturing = true;
  const total = rounds * batch;
  const token = Buffer.from([1, 2, 3, 4]);
  for (let i = 0; i < total; i++) {
    client.send(
      encode({
        type: CON,
        code: Code.GET,
        messageId: i & 0xffff,
        token,
        options: [],
        payload: Buffer.alloc(0),
      }),
    );
    if (i % 25 === 24) await sleep(1);
  }
  for (let waited = 0; captured.length < total && waited < 3_000; waited += 20) await sleep(20);
  // loopback may lose a few under load: every round gets an equal share of what arrived
  if (captured.length < total * 0.8)
    throw new Error(`${name}: captured ${captured.length} of ${total}`);
  const per = Math.floor(captured.length / rounds);
  const batches: Buffer[][] = [];
  for (let r = 0; r < rounds; r++) batches.push(captured.slice(r * per, (r + 1) * per));
  return {
    name,
    handle:
      traced === undefined
        ? (msg) => server.handleDatagram(msg, from.address, from.port)
        : (msg) => traced.handle(msg, from.address, from.port),
    batches,
    fresh: [],
    replay: [],
    close: async () => {
      await client.close();
      server.close();
      coap.close();
      socket.close();
    },
  };
}

const REPLAY_PASSES = 20;

function timeBatch(inst: Instance, batch: Buffer[], passes = 1): number {
  (globalThis as { gc?: () => void }).gc?.();
  // CPU time, not wall time: on a shared, loaded machine the wall clock counts other work
  const t0 = process.cpuUsage();
  for (let p = 0; p < passes; p++) for (const msg of batch) inst.handle(msg, '', 0);
  const d = process.cpuUsage(t0);
  return ((d.user + d.system) * 1000) / (batch.length * passes);
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  const flags = parseFlags(['old', 'rounds', 'batch', 'trace-ratio'], []);
  const oldDir = flags.old;
  if (typeof oldDir !== 'string') throw new UsageError('--old is required');
  const rounds = numberFlag(flags, 'rounds', 9, 1, 100);
  const batch = numberFlag(flags, 'batch', 2000, 300, 20_000);
  const newBuild = await loadBuild(resolve(import.meta.dirname, '..'));
  const oldBuild = await loadBuild(oldDir);
  const ratio = flags['trace-ratio'];
  let all: Instance[];
  const shutdowns: (() => Promise<void>)[] = [];
  if (typeof ratio === 'string') {
    // tracing on at this ratio, spans to an exporter that drops them: old (its Tracing, or for
    // a build from before the injected tracer its global flag, so no untraced old instance
    // can share the process) and new, and new with tracing off
    const traceOptions = {
      endpoint: undefined,
      exporter: DISCARD,
      sampleRatio: Number(ratio),
      forcedDevices: [],
      serviceName: 'bench',
      serviceVersion: '0',
      env: {},
    };
    const newSetup = newBuild.setupTracing(traceOptions)!;
    const oldSetup = oldBuild.setupTracing(traceOptions)!;
    shutdowns.push(
      () => newSetup.shutdown(),
      () => oldSetup.shutdown(),
    );
    all = [
      await instance('old', oldBuild, rounds, batch, { tracing: oldSetup.tracing }),
      await instance('new', newBuild, rounds, batch, { tracing: newSetup.tracing }),
      await instance('control', newBuild, rounds, batch, { tracing: newSetup.tracing }),
      await instance('newOff', newBuild, rounds, batch),
    ];
  } else {
    all = [
      await instance('old', oldBuild, rounds, batch),
      await instance('new', newBuild, rounds, batch),
      await instance('control', newBuild, rounds, batch),
    ];
  }
  // one unmeasured pass each, to warm up the JIT on both builds' code
  for (const inst of all) for (const msg of inst.batches[0]!.slice(0, 200)) inst.handle(msg, '', 0);
  for (let r = 0; r < rounds; r++) {
    const order = all.map((_, i) => all[(i + r) % all.length]!);
    for (const inst of order) {
      const b = inst.batches[r]!;
      inst.fresh.push(timeBatch(inst, r === 0 ? b.slice(200) : b));
      // replays are cheap: the batch 20 times over, for a CPU time above the clock's grain
      inst.replay.push(timeBatch(inst, b, REPLAY_PASSES));
    }
  }
  for (const inst of all) await inst.close();
  for (const s of shutdowns) await s();
  const med = Object.fromEntries(
    all.map((i) => [i.name, { freshNs: median(i.fresh), replayNs: median(i.replay) }]),
  );
  const ratioOf = (key: 'fresh' | 'replay', name: string): number[] => {
    const a = all.find((i) => i.name === name)!;
    const n = all.find((i) => i.name === 'new')!;
    return a[key].map((v, i) => v / n[key][i]!);
  };
  const out = {
    bench: 'datagram-path',
    what: 'ns per datagram of DtlsServer.handleDatagram → CoapEndpoint (sync 4.04), tracing off',
    rounds,
    batch,
    medians: med,
    traceRatio: typeof ratio === 'string' ? Number(ratio) : 'off',
    ratiosToNew: Object.fromEntries(
      all
        .filter((i) => i.name !== 'new')
        .map((i) => [
          i.name,
          { fresh: median(ratioOf('fresh', i.name)), replay: median(ratioOf('replay', i.name)) },
        ]),
    ),
    rounds_: all.map((i) => ({ name: i.name, fresh: i.fresh, replay: i.replay })),
  };
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
}

runScript('datagram-path', USAGE, main);
