/**
 * Instructions per operation: a server process runs under `valgrind --tool=callgrind` and is
 * driven by this (unvalgrinded) process with a fixed number of operations at a fixed modest
 * rate. Callgrind counts the instructions (Ir) the server executes, all its threads together;
 * unlike CPU time, the count does not depend on the machine's load.
 *
 * One run: start-up, set-up (associations, broker…) and `--warmup` operations with callgrind's
 * instrumentation off (`--instr-atstart=no`: valgrind still runs the code, several times
 * faster than when counting), then `callgrind_control --instr=on`, a transition of N/5
 * operations, and `--segments` (default 2) segments of `--ops` N operations each. After each
 * segment, once the operations are answered and the server is idle, `callgrind_control --dump`
 * writes the counts since the previous dump and zeroes them. Ir(kN), the count from the end of
 * the transition to the end of segment k, gives (Ir(2N) − Ir(N)) / N = segment 2's Ir / N:
 * start-up, set-up, warm-up and shut-down are not in it. Every segment's Ir/op is reported;
 * `irPerOp` is the last segment's. `--repeat` runs the whole thing again in a new server
 * process. V8 JIT compiles and garbage collections fall in some segments and not others: see
 * the per-segment shares and bench/README.md.
 *
 * Kinds (`--kind`):
 * - `handshake`: a full DTLS 1.2 PSK handshake (HelloVerifyRequest round trip included) with
 *   our DtlsClient, then close_notify, as bench/dtls-handshakes.ts does.
 * - `record`: CON GET /nothing → piggybacked ACK 4.04 on one of `--associations` established
 *   associations (one application record each way), as bench/dtls-records.ts does.
 * - `uplink-publish` / `uplink-reply`: a device's CON POST of a measurepoint body through a
 *   Mosquitto of its own, as bench/uplink.ts does: publish only (answered 2.04 on the PUBACK) or
 *   publish + platform reply (a stand-in process answers on `…_reply`). `--tracing 0|1|100`
 *   gives coap-edge an OTLP endpoint (a sink process) and that sampling percentage (0: tracing
 *   on with no datagram sampled, the unsampled path alone); the sink's spans and export
 *   requests per segment are reported (`segmentSpans`).
 *   `--alternate off,1,off,0 --rounds R` runs those tracing variants as the segments of ONE
 *   process (bench/lib/tracing-switch.ts switches them between segments; round r runs the list
 *   rotated by r; a repeated name, `off` twice, is the identical control) and reports each
 *   variant's segments' Ir/op against their neighbouring `off` segments (`alternate`).
 *   `--scrape-metrics N` adds coap-edge's admin HTTP server and N GETs of its /metrics spread
 *   over the warm-up (uncounted): a scraped pod's process.
 * Servers (`--server`): `coap-edge` (`--build <dir>`: a checkout with a compiled dist/; default
 * this one), `libcoap` (coap-server-openssl -k, as dtls-records runs it; `-d` for the uplink
 * kinds, which it answers with no backend) and `floor` (bench/lib/records-floor.ts for records,
 * bench/lib/uplink-floor.ts for the uplink kinds, bench/lib/handshake-floor.ts --crypto for
 * handshakes: the census of this checkout's coap-edge first, as dtls-handshakes.js takes it).
 *
 * Operations go one at a time, started every 1/`--rate` s (later if the previous one is still
 * outstanding: counted as late starts). Timeouts and retransmissions are counted; any during the
 * warm-up or a segment fails the run (exit 1 after the report), since the repeated work would be
 * counted as the operation's. The report also splits the last segment's Ir by function
 * (callgrind_annotate, exclusive and inclusive), per operation.
 *
 * Run: `npm run build && node dist/bench/instructions.js --kind handshake|record|uplink-publish|
 *   uplink-reply [--server coap-edge|libcoap|floor] [--build dir] [--tracing off|0|1|100]
 *   [--ops N] [--warmup W] [--segments 2] [--rate r] [--repeat 1] [--top 15]
 *   [--separate-threads] [--keep]`
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { decode } from '../src/coap/codec.js';
import { Code, ContentFormat } from '../src/coap/constants.js';
import type { DtlsClient } from '../src/dtls/client.js';
import { derivePsk, pskUsableOnCommandLine } from '../src/enos/index.js';
import { CoapClientError, CoapDtlsClient } from '../src/tools/coap-client.js';
import { generateDevices } from '../src/tools/load.js';
import {
  UsageError,
  choiceFlag,
  numberFlag,
  parseFlags,
  runScript,
  stringFlag,
} from './lib/args.js';
import {
  EXPECTED_CODE,
  SUITES,
  connect,
  failureName,
  loadCredentials,
  nothingRequest,
  withClones,
  type Credentials,
} from './lib/client.js';
import { handshakeCensus } from './lib/handshake-census.js';
import { pingPongHandshake, pingPongRequests } from './lib/handshake-load.js';
import { commandLine, environment, log, writeResult } from './lib/harness.js';
import {
  REPO_ROOT,
  freeTcpPort,
  installCleanup,
  startCoapEdge,
  startFloor,
  startHandshakeFloor,
  startLibcoap,
  startRecordsFloor,
  stopAll,
  type Launch,
  type ServerProcess,
} from './lib/servers.js';
import { codeName, measurepointBody, type UplinkDevice } from './lib/uplink-load.js';
import { IpcChild, startMosquitto, type Broker } from './lib/uplink-procs.js';
import { increment, round, sleep, spreadOf } from './lib/stats.js';

const execFileP = promisify(execFile);

const USAGE = `usage: node dist/bench/instructions.js --kind <k> [options]
  --kind <k>          handshake, record, uplink-publish or uplink-reply
  --server <s>        coap-edge (default), libcoap, floor (record: bench/lib/records-floor.ts;
                      uplink kinds: bench/lib/uplink-floor.ts; handshake:
                      bench/lib/handshake-floor.ts --crypto on this checkout's census)
  --build <dir>       checkout whose dist/src/cli.js is the coap-edge run (default this one)
  --tracing <t>       off (default), 0, 1 or 100: coap-edge's trace sampling % (uplink kinds)
  --ops <n>           operations per measured segment (default: handshake 60, others 150)
  --warmup <n>        unmeasured operations before the first segment, one at a time with no
                      pause (default 10 × --ops)
  --segments <n>      measured segments (default 2; irPerOp is the last one's)
  --rate <r>          operations started per second (default: handshake 4, others 10)
  --repeat <n>        server processes, one after the other (default 1)
  --associations <n>  record/uplink: associations (devices) used in turn (default 4)
  --top <n>           functions listed from callgrind_annotate (default 15)
  --node-flags <f>    space-separated node flags for coap-edge or a floor program
                      (coap-edge's output tail is reported)
  --export-delay <ms> with --tracing: OTEL_BSP_SCHEDULE_DELAY for coap-edge (default: none set,
                      so its default, 5000); longer than the run = the spans without any export
  --alternate <list>  coap-edge uplink kinds: comma list of tracing variants (off or a
                      sampling percentage: 0, 1, 20, 100…)
                      run as the segments of one process, switched at run time
                      (bench/lib/tracing-switch.ts); a repeated name is a control of the same
                      variant; the warm-up runs --tracing's variant (default 1); at each
                      segment's end the batch processor is flushed (its export lands in the
                      segment); --segments is then rounds × list length
  --rounds <n>        with --alternate: rounds (default 4), list rotated by one per round
  --switch-gc         with --alternate: a full GC before every segment (after the dump);
                      a pod does not do that (bench/history/tracing.md, "i11-trace3"):
                      off by default
  --lead-in <n>       with --alternate: after each switch, n operations at the new setting at
                      --rate, dumped apart (not counted); for a sampling variant above 0 it
                      goes on until one trace of it is exported (at most 5 n): the segment
                      then starts as in a pod that has run at that setting all along
  --scrape-metrics <n> coap-edge uplink kinds: serve the admin HTTP server (--http-port) and
                      GET its /metrics n times, spread over the warm-up (none counted): a
                      scraped pod's HTTP sockets in the process, with or without --tracing
  --http-posts <n>    coap-edge uplink kinds: n HTTP client POSTs made by coap-edge's process
                      (preload dist/bench/lib/http-posts.js, SIGUSR2) to a sink, spread over
                      the warm-up (uncounted), without tracing
  --http-transport <t> http (default), undici, net or worker: how --http-posts are made
  --gc-between-segments  one forced full GC (a mark-compact) in the server before every
                      segment, after the previous dump (preload dist/bench/lib/gc-signal.js,
                      --expose-gc, SIGUSR2): each segment is the path right after a full GC
  --separate-threads  callgrind --separate-threads=yes (one count per thread)
  --keep              keep the callgrind output directory (its path is in the report)`;

export type Kind = 'handshake' | 'record' | 'uplink-publish' | 'uplink-reply';
export type Server = 'coap-edge' | 'libcoap' | 'floor';
export const KINDS: readonly Kind[] = ['handshake', 'record', 'uplink-publish', 'uplink-reply'];
export const SERVERS: readonly Server[] = ['coap-edge', 'libcoap', 'floor'];
const TRACING = ['off', '0', '1', '100'] as const;

const SEED = 'bench-secret';
const EDGE_PK = 'benchPK';
const FLOOR_PK = 'benchPKf';
const MEASUREPOINT_TAIL = 'thing/measurepoint/post';
const PUBLISH_TAIL = 'rrpc/response/1';
/** Timeouts far beyond what a server under callgrind needs: any expiry is a fault. */
const OP_TIMEOUT_MS = 60_000;
const RETRANSMIT_MS = 20_000;
/** Idle time after a segment's last answer before the dump (trailing work lands in it). */
const SETTLE_MS = 500;
/** Helper processes (platform stand-in, sinks) may take long to start beside callgrind waves. */
const HELPER_READY_MS = 120_000;

export interface Faults {
  timeouts: number;
  retransmissions: number;
  lateStarts: number;
  readonly failures: Record<string, number>;
}

/** One operation; adds what went wrong to `f` (never throws for a failed operation). */
export type Op = (i: number, f: Faults) => Promise<void>;

export interface Rig {
  readonly server: ServerProcess;
  readonly op: Op;
  readonly close: () => Promise<void>;
  /** With `--tracing`: the OTLP sink's counts so far (export requests, spans). */
  readonly spanCounts?: () => Promise<SpanCounts>;
  /** With `--scrape-metrics`: one GET of coap-edge's /metrics (throws unless a 200 with metrics). */
  readonly scrape?: () => Promise<void>;
  /** With `--http-posts`: one POST made by the server process, waited for at the sink. */
  readonly post?: () => Promise<void>;
  /** With `--alternate`: one command to bench/lib/tracing-switch.ts, waited for. */
  readonly switchTracing?: (c: SwitchCommand) => Promise<void>;
}

/** A command of bench/lib/tracing-switch.ts. */
export interface SwitchCommand {
  readonly flush?: boolean;
  readonly gc?: boolean;
  readonly mode?: string;
}

interface SpanCounts {
  readonly requests: number;
  readonly spans: number;
}

export interface Config {
  readonly kind: Kind;
  readonly server: Server;
  readonly cliPath: string;
  readonly tracing: (typeof TRACING)[number];
  readonly associations: number;
  readonly suite: number;
  readonly tmp: string;
  /** Node flags for a coap-edge server (e.g. --trace-opt to see what V8 still compiles). */
  readonly nodeFlags: readonly string[];
  /** `--scrape-metrics`: GETs of coap-edge's /metrics during the warm-up (0: no admin server). */
  readonly scrapes: number;
  /** `--http-posts`: HTTP client POSTs by coap-edge's process during the warm-up. */
  readonly posts: number;
  readonly postTransport: string;
  /** `--alternate`: the variants of one round (empty: one variant per process). */
  readonly alternate: readonly string[];
}

function callgrindLaunch(outFile: string, separateThreads: boolean): Launch {
  return {
    launcher: [
      'valgrind',
      '--tool=callgrind',
      // Node's JIT writes code into anonymous memory and patches it
      '--smc-check=all-non-file',
      `--callgrind-out-file=${outFile}`,
      `--separate-threads=${separateThreads ? 'yes' : 'no'}`,
      '--trace-children=no',
      // start-up and warm-up run uninstrumented (several times faster); counting starts after
      '--instr-atstart=no',
    ],
    readyTimeoutMs: 600_000,
    attemptTimeoutMs: 20_000,
  };
}

function uplinkDevices(n: number, pk: string, tail: string, key?: Buffer): UplinkDevice[] {
  return generateDevices(n, pk, SEED).devices.map((d) => ({
    identity: `${d.productKey},${d.deviceKey},2,86400`,
    psk: key ?? derivePsk(d.deviceSecret),
    path: `/topic/sys/${d.productKey}/${d.deviceKey}/${tail}`,
  }));
}

export async function dtlsRig(c: Config, launch: Launch): Promise<Rig> {
  const devicesFile = join(REPO_ROOT, 'deploy', 'examples', 'devices.json');
  const { file, creds } = withClones(devicesFile, 'device001', c.associations, c.tmp);
  if (c.kind === 'handshake' && c.server === 'floor') return handshakeFloorRig(c, launch);
  const server =
    c.server === 'libcoap'
      ? await startLibcoap(creds.psk, creds, [], launch)
      : c.server === 'floor'
        ? await startRecordsFloor({ devicesFile: file, nodeFlags: c.nodeFlags, ...launch }, creds)
        : await startCoapEdge(
            { devicesFile: file, cliPath: c.cliPath, nodeFlags: c.nodeFlags, ...launch },
            creds,
          );
  const dtlsOpts = {
    suite: c.suite,
    handshakeTimeoutMs: OP_TIMEOUT_MS,
    retransmitTimeoutMs: RETRANSMIT_MS,
  };
  if (c.kind === 'handshake') {
    const op: Op = async (_i, f) => {
      try {
        const client = await connect(server.target, creds, dtlsOpts);
        f.retransmissions += client.trace.retransmissions;
        await client.close();
      } catch (err) {
        increment(f.failures, failureName(err));
      }
    };
    return { server, op, close: () => Promise.resolve() };
  }
  const clients: DtlsClient[] = [];
  for (let i = 0; i < c.associations; i++) {
    const id: Credentials = { ...creds, identity: creds.identities[i] ?? creds.identity };
    clients.push(await connect(server.target, id, dtlsOpts));
  }
  const token = Buffer.alloc(4);
  const op: Op = async (i, f) => {
    const client = clients[i % clients.length]!;
    const mid = i & 0xffff;
    token.writeUInt32BE(i >>> 0, 0);
    const req = nothingRequest(mid, token);
    const answer = await new Promise<Buffer | undefined>((done) => {
      const timer = setTimeout(() => {
        client.off('message', onMessage);
        done(undefined);
      }, OP_TIMEOUT_MS);
      const onMessage = (m: Buffer): void => {
        clearTimeout(timer);
        client.off('message', onMessage);
        done(m);
      };
      client.on('message', onMessage);
      client.send(req);
    });
    if (answer === undefined) {
      f.timeouts++;
      return;
    }
    const m = decode(answer);
    if (m.messageId !== mid || m.code !== EXPECTED_CODE) {
      increment(f.failures, `answer ${codeName(m.code)} mid ${m.messageId}`);
    }
  };
  return {
    server,
    op,
    close: async () => {
      await Promise.all(clients.map((x) => x.close()));
    },
  };
}

/**
 * The handshake floor (bench/lib/handshake-floor.ts --crypto), as dtls-handshakes.js runs it:
 * first the census of this checkout's coap-edge (its datagrams, uncounted, outside callgrind),
 * then the floor program under callgrind replaying them, one handshake a new client socket.
 */
async function handshakeFloorRig(c: Config, launch: Launch): Promise<Rig> {
  const devicesFile = join(REPO_ROOT, 'deploy', 'examples', 'devices.json');
  const creds = loadCredentials(devicesFile, 'device001');
  const census = await handshakeCensus(devicesFile, creds, c.suite);
  log(`handshake floor: census ${JSON.stringify(census.datagrams)}`);
  const scriptFile = join(c.tmp, 'handshake-floor.json');
  writeFileSync(scriptFile, JSON.stringify(census.steps));
  const server = await startHandshakeFloor({
    name: 'floor',
    scriptFile,
    crypto: true,
    nodeFlags: c.nodeFlags,
    ...launch,
  });
  const requests = pingPongRequests(census.steps);
  const op: Op = async (_i, f) => {
    if (!(await pingPongHandshake(server.target, census.steps, requests, OP_TIMEOUT_MS)))
      f.timeouts++;
  };
  return { server, op, close: () => Promise.resolve() };
}

export async function uplinkRig(c: Config, launch: Launch): Promise<Rig> {
  const reply = c.kind === 'uplink-reply';
  const tail = reply ? MEASUREPOINT_TAIL : PUBLISH_TAIL;
  const n = c.associations;
  let broker: Broker | undefined;
  const helpers: IpcChild[] = [];
  let spanSink: IpcChild | undefined;
  let postSink: IpcChild | undefined;
  let metricsPort: number | undefined;
  let server: ServerProcess;
  let devices: UplinkDevice[];
  // libcoap (-d) creates a resource on a device's first POST (2.01), then updates it (2.04)
  const expected = new Set<number>([Code.CHANGED]);
  if (c.server === 'libcoap') {
    const key = uplinkDevices(n + 16, EDGE_PK, tail).find((d) => pskUsableOnCommandLine(d.psk));
    if (key === undefined) throw new Error('no generated device has a PSK without a 0x00 byte');
    devices = uplinkDevices(n, EDGE_PK, tail, key.psk);
    server = await startLibcoap(key.psk, devices[0]!, ['-d', String(n + 16)], launch);
    expected.add(Code.CREATED);
  } else {
    broker = await startMosquitto();
    if (reply)
      helpers.push(
        await IpcChild.start('platform', 'uplink-platform', [broker.url], HELPER_READY_MS),
      );
    const pk = c.server === 'floor' ? FLOOR_PK : EDGE_PK;
    const devicesFile = join(c.tmp, 'devices.json');
    writeFileSync(devicesFile, `${JSON.stringify(generateDevices(n, pk, SEED))}\n`);
    devices = uplinkDevices(n, pk, tail);
    if (c.server === 'floor') {
      server = await startFloor(
        { devicesFile, mqttUrl: broker.url, productKey: pk, nodeFlags: c.nodeFlags, ...launch },
        devices[0]!,
      );
    } else {
      const extraArgs = ['--mqtt-url', broker.url];
      if (c.scrapes > 0) {
        metricsPort = await freeTcpPort();
        extraArgs.push('--http-port', String(metricsPort), '--http-bind', '127.0.0.1');
      }
      const nodeFlags = [...c.nodeFlags];
      if (c.posts > 0) {
        const port = await freeTcpPort();
        postSink = await IpcChild.start('postSink', 'otlp-sink', [String(port)], HELPER_READY_MS);
        helpers.push(postSink);
        process.env.BENCH_HTTP_POSTS_URL = `http://127.0.0.1:${port}/posts`;
        process.env.BENCH_HTTP_POSTS_TRANSPORT = c.postTransport;
        nodeFlags.push(`--import=${new URL('./lib/http-posts.js', import.meta.url).href}`);
      }
      if (c.alternate.length > 0) {
        process.env.BENCH_TRACING_SWITCH_FILE = join(c.tmp, 'tracing-switch.json');
        nodeFlags.push(
          '--expose-gc',
          `--import=${new URL('./lib/tracing-switch.js', import.meta.url).href}`,
        );
      }
      if (c.tracing !== 'off') {
        const port = await freeTcpPort();
        spanSink = await IpcChild.start('spanSink', 'otlp-sink', [String(port)], HELPER_READY_MS);
        helpers.push(spanSink);
        extraArgs.push(
          '--otlp-endpoint',
          `http://127.0.0.1:${port}/v1/traces`,
          '--trace-sample-ratio',
          String(Number(c.tracing) / 100),
        );
      }
      server = await startCoapEdge(
        { devicesFile, cliPath: c.cliPath, extraArgs, nodeFlags, ...launch },
        devices[0]!,
      );
    }
  }
  const clients: CoapDtlsClient[] = [];
  for (const d of devices) {
    const dtls = await connect(server.target, d, {
      suite: c.suite,
      handshakeTimeoutMs: OP_TIMEOUT_MS,
      retransmitTimeoutMs: RETRANSMIT_MS,
    });
    clients.push(CoapDtlsClient.over(dtls));
  }
  const op: Op = async (i, f) => {
    const k = i % clients.length;
    const id = `insn-${i}`;
    try {
      const r = await clients[k]!.request({
        method: 'POST',
        path: devices[k]!.path,
        payload: measurepointBody(id),
        contentFormat: ContentFormat.JSON,
        timeoutMs: OP_TIMEOUT_MS,
        ackTimeoutMs: RETRANSMIT_MS,
        followBlocks: false,
      });
      f.retransmissions += r.retransmissions;
      if (!expected.has(r.code)) increment(f.failures, `code ${codeName(r.code)}`);
      else if (
        reply &&
        c.server !== 'libcoap' &&
        r.payload.toString('utf8') !== `{"id":"${id}","code":200,"data":null}`
      ) {
        increment(f.failures, 'reply mismatch');
      }
    } catch (err) {
      const kind = err instanceof CoapClientError ? err.code : failureName(err);
      if (kind === 'COAP_TIMEOUT') f.timeouts++;
      else increment(f.failures, kind);
    }
  };
  const sink = spanSink;
  const spanCounts =
    sink === undefined
      ? undefined
      : async (): Promise<SpanCounts> => {
          const st = await sink.request({ type: 'stats' });
          return { requests: Number(st.requests ?? 0), spans: Number(st.spans ?? 0) };
        };
  const port = metricsPort;
  const scrape =
    port === undefined
      ? undefined
      : async (): Promise<void> => {
          const res = await fetch(`http://127.0.0.1:${port}/metrics`);
          const text = await res.text();
          if (res.status !== 200 || !text.includes('# TYPE ')) {
            throw new Error(`/metrics answered ${res.status}: ${text.slice(0, 200)}`);
          }
        };
  const ps = postSink;
  const pid = server.pid;
  const out = (): string => server.outputTail();
  let switches = 0;
  const switchTracing =
    c.alternate.length === 0
      ? undefined
      : async (cmd: SwitchCommand): Promise<void> => {
          writeFileSync(process.env.BENCH_TRACING_SWITCH_FILE!, JSON.stringify(cmd));
          switches++;
          const done = `tracing-switch: ${switches} done`;
          const failed = `tracing-switch: ${switches} failed`;
          process.kill(pid, 'SIGUSR2');
          const until = performance.now() + OP_TIMEOUT_MS;
          while (!out().includes(done)) {
            if (out().includes(failed) || performance.now() > until)
              throw new Error(`tracing-switch: ${JSON.stringify(cmd)}: ${out().slice(-300)}`);
            await sleep(20);
          }
        };
  const posted = async (): Promise<number> =>
    Number((await ps!.request({ type: 'stats' })).otherRequests ?? 0);
  const post =
    ps === undefined
      ? undefined
      : async (): Promise<void> => {
          const before = await posted();
          process.kill(pid, 'SIGUSR2');
          const until = performance.now() + OP_TIMEOUT_MS;
          while ((await posted()) === before) {
            if (performance.now() > until)
              throw new Error('--http-posts: no POST reached the sink');
            await sleep(100);
          }
        };
  return {
    server,
    op,
    ...(post !== undefined ? { post } : {}),
    ...(switchTracing !== undefined ? { switchTracing } : {}),
    ...(spanCounts !== undefined ? { spanCounts } : {}),
    ...(scrape !== undefined ? { scrape } : {}),
    close: async () => {
      await Promise.all(clients.map((x) => x.close().catch(() => undefined)));
      broker?.cleanup();
    },
  };
}

/** Node flags of a server that runs a full GC on SIGUSR2 (bench/lib/gc-signal.ts). */
export const GC_SIGNAL_FLAGS: readonly string[] = [
  '--expose-gc',
  `--import=${new URL('./lib/gc-signal.js', import.meta.url).href}`,
];

/** The `n`th forced full GC in server `pid`, waited for (gc-signal's line in its output). */
export async function forceGc(pid: number, n: number, output: () => string): Promise<void> {
  process.kill(pid, 'SIGUSR2');
  const until = performance.now() + OP_TIMEOUT_MS;
  while (!output().includes(`gc-signal: ${n} done`)) {
    if (performance.now() > until) throw new Error(`gc-signal: no answer to forced GC ${n}`);
    await sleep(20);
  }
}

/** `count` operations, one at a time, started every `intervalMs` (or late). */
export async function drive(op: Op, first: number, count: number, intervalMs: number, f: Faults) {
  let next = performance.now();
  for (let i = first; i < first + count; i++) {
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
    else if (wait < -1) f.lateStarts++;
    next = Math.max(next + intervalMs, performance.now());
    await op(i, f);
  }
}

interface Part {
  readonly file: string;
  readonly part: number;
  readonly trigger: string;
  readonly ir: number;
}

/** Reads every dump file in `dir` (several per part with --separate-threads). */
function readParts(dir: string): Part[] {
  const parts: Part[] = [];
  for (const name of readdirSync(dir)) {
    const text = readFileSync(join(dir, name), 'utf8');
    const head = text.slice(0, 4096);
    const part = /^part: (\d+)$/m.exec(head);
    const trigger = /^desc: Trigger: (.*)$/m.exec(head);
    const summary = /^summary: (\d+)$/m.exec(text) ?? /^totals: (\d+)$/m.exec(text);
    if (part === null || summary === null) continue;
    parts.push({
      file: join(dir, name),
      part: Number(part[1]),
      trigger: trigger?.[1] ?? '?',
      ir: Number(summary[1]),
    });
  }
  return parts;
}

async function dump(pid: number, tag: string): Promise<void> {
  await execFileP('callgrind_control', ['--dump=' + tag, String(pid)], { timeout: 120_000 });
}

/** Process and thread entry frames (see {@link annotate}). */
const ENTRY_FRAME =
  /:(main|\(below main\)|__libc_start_main\S*|clone3?|start_thread|node::Start\(.*|node::NodeMainInstance::Run\(.*|node::SpinEventLoopInternal\(.*|0x0*1ab70) \[/;
/**
 * V8's garbage collector (scavenges, mark-compact, concurrent marking and sweeping on the
 * worker threads), by function name: a rough share (inlined parts and allocation are missed).
 */
const GC_FUNCTION =
  /v8::internal::(Heap::|MarkCompact|MinorMarkCompact|MinorMark|\w*Marking|Scavenge|\w*Sweep|\w*Evacuat|GCTracer|ConcurrentMarking|IncrementalMarking|MemoryAllocator|PagedSpace|\w*Compactor|MarkingVisitor|\w*RememberedSet|SlotSet|WeakObjects|MemoryChunk|ScavengeVisitor|\w*GC\w*::)|MarkingVisitorBase|ScavengerCollector|FullEvacuator/;

/** V8's compilers (TurboFan, Maglev, Sparkplug, the bytecode compiler): warm-up, not steady state. */
const COMPILE_FUNCTION =
  /v8::internal::(compiler::|maglev::|baseline::|interpreter::BytecodeGenerator|Compiler::|OptimizingCompileDispatcher|\w*Compilation\w*::|Parser::|ParserBase|Scanner::|AstNodeSourceRanges|DeclarationScope::|Scope::)/;

interface FunctionCost {
  readonly irPerOp: number;
  readonly percent: number;
  readonly fn: string;
}

/**
 * The functions of callgrind_annotate (exclusive or inclusive) of some dump files, costliest
 * first. A dump taken while the server runs lists the frames then on the stack (main,
 * node::Start, the event loop…; clone and start_thread for the other threads) with their
 * thread's whole cost even as exclusive cost: those entry frames are left out. Inclusive figures of V8's recursive builtins (`'2` cycles) can exceed 100 %.
 */
async function annotate(
  files: readonly string[],
  inclusive: boolean,
  ops: number,
): Promise<FunctionCost[]> {
  const { stdout } = await execFileP(
    'callgrind_annotate',
    [`--inclusive=${inclusive ? 'yes' : 'no'}`, '--threshold=100', ...files],
    { maxBuffer: 256 * 1024 * 1024, timeout: 300_000 },
  );
  const out: FunctionCost[] = [];
  let started = false;
  for (const line of stdout.split('\n')) {
    if (/^-+$/.test(line.trim()) && line.includes('-')) continue;
    if (!started) {
      if (/\bfile:function\b/.test(line)) started = true;
      continue;
    }
    const m = /^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)$/.exec(line);
    if (m === null) continue;
    // an unnamed function of half the total is the entry point of a stripped executable
    if (ENTRY_FRAME.test(m[3]!) || (Number(m[2]) >= 50 && /^\?\?\?:0x/.test(m[3]!))) continue;
    out.push({
      irPerOp: round(Number(m[1]!.replace(/,/g, '')) / ops, 0) ?? 0,
      percent: Number(m[2]),
      fn: m[3]!.trim(),
    });
  }
  return out;
}

/**
 * Exclusive Ir per operation by object file: `[???]` is code with no file behind it, i.e.
 * V8's JIT code (baseline, Maglev, TurboFan) and its stubs; `/usr/bin/node` holds V8's
 * builtins and runtime, libuv and the statically linked OpenSSL.
 */
function byObject(fns: readonly FunctionCost[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of fns) {
    const obj = /\[([^\]]*)\]$/.exec(f.fn)?.[1] ?? '?';
    out[obj] = (out[obj] ?? 0) + f.irPerOp;
  }
  return Object.fromEntries(Object.entries(out).sort((a, b) => b[1] - a[1]));
}

async function oneRun(c: Config, o: RunOptions, rep: number): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'coap-edge-insn-'));
  const launch = callgrindLaunch(join(dir, 'callgrind.out'), o.separateThreads);
  const faults: Faults = { timeouts: 0, retransmissions: 0, lateStarts: 0, failures: {} };
  const transitionFaults: Faults = {
    timeouts: 0,
    retransmissions: 0,
    lateStarts: 0,
    failures: {},
  };
  const transition = Math.ceil(o.ops / 5);
  const t0 = performance.now();
  const rig = c.kind === 'handshake' || c.kind === 'record' ? dtlsRig : uplinkRig;
  const { server, op, close, spanCounts, scrape, post, switchTracing } = await rig(c, launch);
  // --alternate: the variant of every segment, round r the list rotated by r
  const variants = segmentVariants(c.alternate, o.segments);
  log(
    `run ${rep}: ${c.server} pid ${server.pid} ready after ${round((performance.now() - t0) / 1000, 1)} s`,
  );
  const segmentFaults: Faults[] = [];
  const segmentMs: number[] = [];
  // spans and export requests the sink got by each dump (an export is up to a second late:
  // it counts where its instructions were counted)
  const segmentSpans: SpanCounts[] = [];
  // --lead-in: the operations run before each segment, and their total so far
  const segmentLeadIns: number[] = [];
  let leadInOps = 0;
  const interval = 1000 / o.rate;
  let outputTail = '';
  let scrapes = 0;
  let posts = 0;
  try {
    // the warm-up goes as fast as the answers come (still one at a time): JIT tiering needs
    // hundreds of operations, which at the measured rate would take minutes
    // with --scrape-metrics: a GET of /metrics after each of `scrapes` equal parts of it
    // with --http-posts: a POST by the server after each of `posts` equal parts of it
    const warmupParts = Math.max(
      1,
      scrape === undefined ? 0 : c.scrapes,
      post === undefined ? 0 : c.posts,
    );
    for (let p = 0, done = 0; p < warmupParts; p++) {
      const n = Math.round(((p + 1) * o.warmup) / warmupParts) - done;
      await drive(op, done, n, 0, faults);
      done += n;
      if (scrape !== undefined && scrapes < c.scrapes) {
        await scrape();
        scrapes++;
      }
      if (post !== undefined && posts < c.posts) {
        await post();
        posts++;
      }
    }
    faults.lateStarts = 0;
    await sleep(SETTLE_MS);
    await execFileP('callgrind_control', ['--instr=on', String(server.pid)], { timeout: 120_000 });
    // Counting makes the server several times slower at once: the first answers after the
    // switch may overrun the server's own timers (a 5.03 on an uplink). A short transition at
    // the measured rate, counted but not reported, absorbs that; its faults do not fail the run.
    await drive(op, o.warmup, transition, interval, transitionFaults);
    await sleep(SETTLE_MS);
    // --alternate: the warm-up's traces still waiting are exported before the first segment
    if (switchTracing !== undefined) {
      await switchTracing({ flush: true });
      await sleep(SETTLE_MS);
    }
    await dump(server.pid, 'warmup');
    let counted = await spanCounts?.();
    for (let s = 0; s < o.segments; s++) {
      const f: Faults = { timeouts: 0, retransmissions: 0, lateStarts: 0, failures: {} };
      // the forced GC's own instructions fall in this segment, as a mark-compact's would
      if (o.gcBetweenSegments) await forceGc(server.pid, s + 1, () => server.outputTail());
      // the switch (and its GC) after the previous dump: its few instructions fall in this
      // segment, the same in every segment
      if (switchTracing !== undefined)
        await switchTracing({ mode: variants[s]!.mode, gc: o.switchGc });
      let first = o.warmup + transition + s * o.ops + leadInOps;
      if (switchTracing !== undefined && o.leadIn > 0) {
        const n = await leadIn(op, first, o.leadIn, interval, f, variants[s]!.mode, async () => {
          await switchTracing({ flush: true });
          return (await spanCounts?.())?.spans ?? 0;
        });
        leadInOps += n;
        first += n;
        segmentLeadIns.push(n);
        await sleep(SETTLE_MS);
        await switchTracing({ flush: true });
        await sleep(SETTLE_MS);
        await dump(server.pid, `leadin${s + 1}`);
        counted = await spanCounts?.();
      }
      const ts = performance.now();
      await drive(op, first, o.ops, interval, f);
      segmentMs.push(round(performance.now() - ts, 0) ?? 0);
      await sleep(SETTLE_MS);
      // the segment's traces still waiting in the batch processor are exported in it (the
      // ones the 5 s timer exported already were): every trace's export is counted where the
      // trace was, none in the next segment, which may be an off one
      if (switchTracing !== undefined) {
        await switchTracing({ flush: true });
        await sleep(SETTLE_MS);
      }
      await dump(server.pid, `segment${s + 1}`);
      const now = await spanCounts?.();
      if (now !== undefined && counted !== undefined) {
        segmentSpans.push({
          requests: now.requests - counted.requests,
          spans: now.spans - counted.spans,
        });
      }
      counted = now;
      segmentFaults.push(f);
      log(`run ${rep}: segment ${s + 1} done (${JSON.stringify(f)})`);
    }
  } finally {
    await close();
    outputTail = server.outputTail();
    await stopAll();
  }
  const parts = readParts(dir);
  const byTrigger = (tag: string): Part[] => parts.filter((p) => p.trigger === `dump ${tag}`);
  const sum = (ps: readonly Part[]): number => ps.reduce((a, p) => a + p.ir, 0);
  const startup = sum(byTrigger('warmup'));
  const segIr = Array.from({ length: o.segments }, (_, s) => sum(byTrigger(`segment${s + 1}`)));
  if (segIr.some((x) => x === 0)) {
    throw new Error(`callgrind dumps missing in ${dir}: ${JSON.stringify(parts)}`);
  }
  const cumulative = segIr.map((_, k) => startup + segIr.slice(0, k + 1).reduce((a, b) => a + b));
  const lastFiles = byTrigger(`segment${o.segments}`).map((p) => p.file);
  const exclusive = await annotate(lastFiles, false, o.ops);
  // GC share of every segment (its cost comes in lumps: a segment with a mark-compact is dearer)
  // and the JIT compilers' (still at work if the warm-up did not reach the steady state)
  const segGc: number[] = [];
  const segCompile: number[] = [];
  const share = (fns: readonly FunctionCost[], re: RegExp): number =>
    fns.filter((f) => re.test(f.fn)).reduce((a, f) => a + f.irPerOp, 0);
  for (let s = 0; s < o.segments; s++) {
    const files = byTrigger(`segment${s + 1}`).map((p) => p.file);
    const fns = await annotate(files, false, o.ops);
    segGc.push(share(fns, GC_FUNCTION));
    segCompile.push(share(fns, COMPILE_FUNCTION));
  }
  const inclusive = await annotate(lastFiles, true, o.ops);
  const threads = o.separateThreads
    ? byTrigger(`segment${o.segments}`).map((p) => ({
        file: p.file.slice(dir.length + 1),
        irPerOp: round(p.ir / o.ops, 0),
      }))
    : undefined;
  if (!o.keep) rmSync(dir, { recursive: true, force: true });
  const last = segIr[segIr.length - 1]!;
  const perOp = {
    raw: segIr.map((x) => x / o.ops),
    withoutCompile: segIr.map((x, k) => x / o.ops - segCompile[k]!),
    withoutCompileAndGc: segIr.map((x, k) => x / o.ops - segCompile[k]! - segGc[k]!),
  };
  return {
    ...(variants.length > 0
      ? {
          alternate: alternateSummary(
            variants,
            perOp,
            segmentSpans.map((x) => x.spans),
            o.ops,
          ),
          segmentVariants: variants.map((v) => v.label),
        }
      : {}),
    pid: server.pid,
    command: server.command,
    irPerOp: round(last / o.ops, 0),
    segmentsIrPerOp: segIr.map((x) => round(x / o.ops, 0)),
    segmentsGcIrPerOp: segGc,
    segmentsCompileIrPerOp: segCompile,
    segmentsIrPerOpWithoutCompile: segIr.map((x, k) => round(x / o.ops - segCompile[k]!, 0)),
    segmentsIrPerOpWithoutCompileAndGc: segIr.map((x, k) =>
      round(x / o.ops - segCompile[k]! - segGc[k]!, 0),
    ),
    irStartupAndWarmup: startup,
    irCumulative: cumulative,
    irTwoNMinusN: o.segments >= 2 ? round((cumulative[1]! - cumulative[0]!) / o.ops, 0) : undefined,
    segmentMs,
    ...(o.leadIn > 0 ? { segmentLeadIns } : {}),
    ...(scrape !== undefined ? { metricsScrapes: scrapes } : {}),
    ...(post !== undefined ? { httpPosts: posts, httpTransport: c.postTransport } : {}),
    ...(spanCounts !== undefined ? { segmentSpans } : {}),
    warmupFaults: faults,
    transitionOps: transition,
    transitionFaults,
    segmentFaults,
    ...(threads !== undefined ? { threads } : {}),
    exclusiveByObject: byObject(exclusive),
    exclusive: exclusive.slice(0, o.top),
    inclusive: inclusive.slice(0, o.top),
    ...(o.keep ? { callgrindDir: dir } : {}),
    ...(c.nodeFlags.length > 0 ? { serverOutputTail: outputTail.split('\n') } : {}),
  };
}

/**
 * `--lead-in`: `n` operations from index `first` at the segment's setting; for a sampling
 * variant above 0 then 10 more at a time until `exportedSpans` (which flushes the batch
 * processor first) has grown since the start, at most `5 n` in all. Returns how many ran.
 */
export async function leadIn(
  op: Op,
  first: number,
  n: number,
  intervalMs: number,
  f: Faults,
  mode: string,
  exportedSpans: () => Promise<number>,
): Promise<number> {
  const traced = mode !== 'off' && Number(mode) > 0;
  const before = traced ? await exportedSpans() : 0;
  await drive(op, first, n, intervalMs, f);
  let done = n;
  while (traced && done < 5 * n && (await exportedSpans()) === before) {
    const more = Math.min(10, 5 * n - done);
    await drive(op, first + done, more, intervalMs, f);
    done += more;
  }
  return done;
}

interface SegmentVariant {
  /** The variant's name in the list, `#2`, `#3`… added to a repeated one. */
  readonly label: string;
  /** tracing-switch's mode. */
  readonly mode: string;
  readonly round: number;
}

/** The variants of `segments` segments: round r runs the list rotated left by r. */
export function segmentVariants(list: readonly string[], segments: number): SegmentVariant[] {
  if (list.length === 0) return [];
  const seen: Record<string, number> = {};
  const labels = list.map((m) => {
    seen[m] = (seen[m] ?? 0) + 1;
    return seen[m] === 1 ? m : `${m}#${seen[m]}`;
  });
  const out: SegmentVariant[] = [];
  for (let s = 0; s < segments; s++) {
    const round = Math.floor(s / list.length);
    const i = (s + round) % list.length;
    out.push({ label: labels[i]!, mode: list[i]!, round });
  }
  return out;
}

/**
 * Per variant label, and pooled per mode (`byMode`: `1` and `1#2` together; mode `off` is the
 * control), each segment's Ir/op over a reference: the mean of the nearest segment of mode
 * `off` before it and the nearest after it (one of them at the ends), never the segment itself.
 * A neighbouring reference cancels the drift of the process (the JIT still improving the path,
 * 15–20 % over the first rounds); an `off` segment is measured against its own `off`
 * neighbours exactly as a traced one, so the spread of mode `off` is the bench's own (the
 * identical-segment control). Raw, without V8's compilers, without compilers and GC; and the
 * Ir over the reference per span the segment exported (spans of the sink: the segment's own,
 * flushed at its end). With a list of one `off` only (`off,1`), the `off` segments have no
 * control figures beyond their neighbours.
 */
export function alternateSummary(
  variants: readonly SegmentVariant[],
  perOp: Readonly<Record<'raw' | 'withoutCompile' | 'withoutCompileAndGc', readonly number[]>>,
  spans: readonly number[],
  ops: number,
): Record<string, unknown> {
  const offs = variants.flatMap((v, s) => (v.mode === 'off' ? [s] : []));
  const neighbours = (s: number): number[] => {
    const before = offs.filter((x) => x < s).at(-1);
    const after = offs.find((x) => x > s);
    return [before, after].filter((x): x is number => x !== undefined);
  };
  const summarize = (segments: readonly number[]): Record<string, unknown> => {
    const entry: Record<string, unknown> = {
      segments: segments.map((s) => s + 1),
      spans: segments.map((s) => spans[s]),
    };
    for (const metric of ['raw', 'withoutCompile', 'withoutCompileAndGc'] as const) {
      const ratios: number[] = [];
      const irPerSpan: number[] = [];
      for (const s of segments) {
        const refs = neighbours(s);
        if (refs.length === 0) continue;
        const x = perOp[metric][s]!;
        const ref = refs.reduce((acc, r) => acc + perOp[metric][r]!, 0) / refs.length;
        ratios.push(x / ref);
        const n = spans[s] ?? 0;
        if (n > 0) irPerSpan.push(((x - ref) * ops) / n);
      }
      entry[metric] = {
        ratios: spreadOf(
          ratios.map((x) => round(x, 4) ?? 0),
          4,
        ),
        ...(irPerSpan.length > 0
          ? {
              excessIrPerSpan: spreadOf(
                irPerSpan.map((x) => round(x, 0) ?? 0),
                0,
              ),
            }
          : {}),
      };
    }
    return entry;
  };
  const of = (key: 'label' | 'mode', value: string): number[] =>
    variants.flatMap((v, s) => (v[key] === value ? [s] : []));
  const out: Record<string, unknown> = {};
  for (const label of new Set(variants.map((v) => v.label))) {
    out[label] = summarize(of('label', label));
  }
  const byMode: Record<string, unknown> = {};
  for (const mode of new Set(variants.map((v) => v.mode)))
    byMode[mode] = summarize(of('mode', mode));
  out.byMode = byMode;
  out.offSpans = offs.map((s) => spans[s]);
  return out;
}

interface RunOptions {
  /** `--switch-gc`: tracing-switch runs a full GC before every segment. */
  readonly switchGc: boolean;
  /** `--lead-in`: uncounted operations after each switch (0: none). */
  readonly leadIn: number;
  /** `--gc-between-segments`: SIGUSR2 (bench/lib/gc-signal.ts) before every segment. */
  readonly gcBetweenSegments: boolean;
  readonly ops: number;
  readonly warmup: number;
  readonly segments: number;
  readonly rate: number;
  readonly top: number;
  readonly separateThreads: boolean;
  readonly keep: boolean;
}

function faulty(f: Faults): boolean {
  return f.timeouts + f.retransmissions + Object.values(f.failures).reduce((a, b) => a + b, 0) > 0;
}

async function main(): Promise<void> {
  const flags = parseFlags(
    [
      'kind',
      'server',
      'build',
      'tracing',
      'ops',
      'warmup',
      'segments',
      'rate',
      'repeat',
      'associations',
      'top',
      'suite',
      'node-flags',
      'export-delay',
      'scrape-metrics',
      'http-posts',
      'http-transport',
      'alternate',
      'rounds',
      'lead-in',
    ],
    ['separate-threads', 'keep', 'gc-between-segments', 'switch-gc'],
  );
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (flags.kind === undefined) throw new UsageError('--kind is required');
  const kind = choiceFlag(flags, 'kind', KINDS, 'handshake');
  const server = choiceFlag(flags, 'server', SERVERS, 'coap-edge');
  const alternate = stringFlag(flags, 'alternate', '')
    .split(',')
    .filter((x) => x !== '');
  for (const v of alternate) {
    const pct = Number(v);
    if (v !== 'off' && !(v !== '' && Number.isFinite(pct) && pct >= 0 && pct <= 100))
      throw new UsageError(`--alternate: ${v} is neither off nor a percentage (0–100)`);
  }
  if (alternate.length > 0 && !alternate.includes('off'))
    throw new UsageError('--alternate: the list needs an off (the reference)');
  // the process is set up with tracing (at --tracing's ratio, default 1 %) and switched
  const tracing = choiceFlag(flags, 'tracing', TRACING, alternate.length > 0 ? '1' : 'off');
  if (alternate.length > 0 && tracing === 'off')
    throw new UsageError('--alternate: the process needs tracing set up (--tracing 0|1|100)');
  const uplink = kind === 'uplink-publish' || kind === 'uplink-reply';
  if (tracing !== 'off' && (!uplink || server !== 'coap-edge')) {
    throw new UsageError('--tracing: coap-edge with an uplink kind only');
  }
  const exportDelay =
    flags['export-delay'] === undefined
      ? undefined
      : numberFlag(flags, 'export-delay', 5000, 0, 2 ** 31 - 1);
  if (exportDelay !== undefined && tracing === 'off') {
    throw new UsageError('--export-delay: with --tracing only');
  }
  const scrapes = numberFlag(flags, 'scrape-metrics', 0, 0, 100_000);
  if (scrapes > 0 && (!uplink || server !== 'coap-edge')) {
    throw new UsageError('--scrape-metrics: coap-edge with an uplink kind only');
  }
  const posts = numberFlag(flags, 'http-posts', 0, 0, 100_000);
  if (posts > 0 && (!uplink || server !== 'coap-edge')) {
    throw new UsageError('--http-posts: coap-edge with an uplink kind only');
  }
  const postTransport = choiceFlag(
    flags,
    'http-transport',
    ['http', 'undici', 'net', 'worker'],
    'http',
  );
  const build = resolve(stringFlag(flags, 'build', REPO_ROOT));
  const ops = numberFlag(flags, 'ops', kind === 'handshake' ? 60 : 150, 1, 1_000_000);
  const o: { -readonly [K in keyof RunOptions]: RunOptions[K] } = {
    ops,
    warmup: numberFlag(flags, 'warmup', 10 * ops, 0, 1_000_000),
    segments: numberFlag(flags, 'segments', 2, 1, 100),
    rate: numberFlag(flags, 'rate', kind === 'handshake' ? 4 : 10, 0.01, 10_000, false),
    top: numberFlag(flags, 'top', 15, 1, 1000),
    separateThreads: flags['separate-threads'] === true,
    keep: flags.keep === true,
    gcBetweenSegments: flags['gc-between-segments'] === true,
    switchGc: flags['switch-gc'] === true,
    leadIn: numberFlag(flags, 'lead-in', 0, 0, 100_000),
  };
  if (alternate.length > 0) {
    if (!uplink || server !== 'coap-edge')
      throw new UsageError('--alternate: coap-edge with an uplink kind only');
    if (o.gcBetweenSegments || posts > 0)
      throw new UsageError('--alternate: not with --gc-between-segments or --http-posts');
    o.segments = alternate.length * numberFlag(flags, 'rounds', 4, 1, 100);
  } else if (o.switchGc || o.leadIn > 0)
    throw new UsageError('--switch-gc, --lead-in: with --alternate only');
  if (o.gcBetweenSegments && (server === 'libcoap' || posts > 0)) {
    throw new UsageError(
      '--gc-between-segments: a node server (coap-edge or floor), no --http-posts',
    );
  }
  const repeat = numberFlag(flags, 'repeat', 1, 1, 100);
  const suiteFlag = choiceFlag(flags, 'suite', ['ccm8', 'cbc'], 'ccm8');

  installCleanup();
  const startedAt = new Date();
  const env = environment();
  log(`instructions: ${commandLine()}`);
  // OTEL_* variables would turn tracing on in the coap-edge child
  for (const k of Object.keys(process.env)) if (k.startsWith('OTEL_')) delete process.env[k];
  // ...but this one the child is meant to read (a build from before OTEL_BSP_* ignores it)
  if (exportDelay !== undefined) process.env.OTEL_BSP_SCHEDULE_DELAY = String(exportDelay);
  const tmp = mkdtempSync(join(tmpdir(), 'coap-edge-insn-setup-'));
  process.once('exit', () => rmSync(tmp, { recursive: true, force: true }));
  const c: Config = {
    kind,
    server,
    cliPath: join(build, 'dist', 'src', 'cli.js'),
    tracing,
    associations: numberFlag(flags, 'associations', 4, 1, 1000),
    suite: SUITES[suiteFlag],
    tmp,
    nodeFlags: [
      ...(o.gcBetweenSegments ? GC_SIGNAL_FLAGS : []),
      ...stringFlag(flags, 'node-flags', '')
        .split(' ')
        .filter((x) => x !== ''),
    ],
    scrapes,
    posts,
    postTransport,
    alternate,
  };
  const runs: Record<string, unknown>[] = [];
  for (let r = 0; r < repeat; r++) runs.push(await oneRun(c, o, r + 1));
  const perOp = runs.map((r) => r.irPerOp as number);
  const failed = runs.some(
    (r) => faulty(r.warmupFaults as Faults) || (r.segmentFaults as Faults[]).some((f) => faulty(f)),
  );
  const result = {
    bench: 'instructions',
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    environment: { ...env, loadAverageAtEnd: loadavg().map((x) => round(x, 2)) },
    description:
      'instructions (callgrind Ir, all threads of the server process) per operation: the last ' +
      'of --segments segments of --ops operations after --warmup operations, between ' +
      'callgrind_control dumps, so start-up, set-up, warm-up and shut-down are not in it',
    parameters: {
      kind,
      server,
      build: server === 'coap-edge' ? build : undefined,
      tracing,
      exportDelayMs: exportDelay,
      scrapeMetrics: scrapes,
      httpPosts: posts,
      httpTransport: posts > 0 ? postTransport : undefined,
      suite: suiteFlag,
      associations: kind === 'handshake' ? undefined : c.associations,
      ...o,
    },
    irPerOp: perOp,
    spread: perOp.length > 1 ? round(Math.max(...perOp) / Math.min(...perOp) - 1, 4) : undefined,
    failed,
    runs,
  };
  const file = writeResult(`instructions-${kind}-${server}`, startedAt, result);
  log(`instructions: Ir/op ${perOp.join(', ')} (${file})`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  if (failed) {
    log('instructions: timeouts, retransmissions or failed operations: the counts are not valid');
    process.exitCode = 1;
  }
}

// bench/deopt-gc.ts imports the rigs above: run main only when this file is the script
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runScript('instructions', USAGE, main);
}
