/**
 * DTLS 1.2 PSK handshake benchmark: coap-edge against libcoap's
 * `coap-server-openssl -k <key>`, each in its own process, driven side by side in one run by
 * the same load generator (our DtlsClient). N concurrent connectors each do a full
 * handshake, HelloVerifyRequest round trip included, then close_notify, in a loop.
 *
 * The floor (`--servers`, CCM_8 only): first a census of coap-edge's handshake
 * (bench/lib/handshake-census.ts: its node:crypto calls per handshake and the datagrams each
 * way, under a counter and through a relay: `prepared` in the JSON), then in the same
 * rotating rounds bench/lib/handshake-floor.ts replaying those datagrams: `floor` with the
 * crypto calls a minimal server must do at each step, `floorUdp` the datagrams alone (two
 * Node processes ping-ponging), `floorCrypto` the crypto alone in a loop; and
 * `coapEdgeControl`, a second coap-edge started identically.
 *
 * Reports handshakes/s, server CPU µs per handshake (utime + stime from /proc), latency
 * and failures per server and round, medians over rotating rounds, the ratios coap-edge /
 * libcoap and the pair ratios (coap-edge / floor, floor / libcoap, …). One JSON object on
 * stdout, progress on stderr, a copy in bench/results/.
 *
 * Run: `npm run build && node dist/bench/dtls-handshakes.js [--concurrency 16] [--suite ccm8|cbc]
 *   [--rounds 3] [--duration 5] [--warmup 1] [--warmup-handshakes n] [--timeout 5000] [--rate n]
 *   [--devices file] [--device dk]
 *   [--servers floor,udp,crypto,control] [--profile]`
 */
import { numberFlag, parseFlags, runScript } from './lib/args.js';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SUITES } from './lib/client.js';
import {
  SERVER_FLAGS,
  controlServer,
  runBench,
  serverFlags,
  serversFlag,
  type ExtraServer,
} from './lib/driver.js';
import { handshakeCensus, type Census } from './lib/handshake-census.js';
import {
  runCryptoOnly,
  runHandshakes,
  runPingPong,
  type HandshakeLoad,
  type HandshakeResult,
} from './lib/handshake-load.js';
import { startHandshakeFloor } from './lib/servers.js';

const USAGE = `usage: node dist/bench/dtls-handshakes.js [options]
  --concurrency <n>   concurrent connectors (default 16)
  --suite <s>         ccm8 (TLS_PSK_WITH_AES_128_CCM_8, default) or cbc (..._CBC_SHA256)
  --rounds <n>        alternating rounds (default 3)
  --duration <s>      measured seconds per server per round (default 5)
  --warmup <s>        unmeasured seconds before each measured window (default 1)
  --timeout <ms>      handshake timeout (default 5000)
  --warmup-handshakes <n>  the window opens only after n handshakes of the phase too (at
                      most 120 s; default 0): coap-edge's handshake path is optimized by V8
                      only after ~2 000, which a low rate does not reach in --warmup seconds
  --rate <n>          at most n handshakes started per second, every server alike (default:
                      no limit; each server then runs at its own rate, and CPU per handshake
                      falls as the rate rises: compare servers at one rate)
  --devices <file>    devices file for coap-edge (default deploy/examples/devices.json)
  --device <key>      device whose identity and PSK are used (default device001)
  --servers <list>    measured beside coap-edge and libcoap, comma-separated, or "none":
                      floor (handshake-floor.ts: census datagrams + minimal crypto),
                      udp (the datagrams alone), crypto (the crypto alone), control (a
                      second identical coap-edge); default floor,udp,crypto,control
                      (floor, udp, crypto: CCM_8 only)
  --profile           run coap-edge under node --cpu-prof and print its top functions`;

/** The floor's node:crypto calls per handshake (bench/lib/handshake-floor.ts), as counted. */
const FLOOR_CRYPTO = {
  'createHmac sha256': 14,
  'createHash sha256': 1,
  'Hash#copy': 1,
  'Hash#digest': 2,
  randomBytes: 1,
  timingSafeEqual: 2,
  'createCipheriv aes-128-ccm': 2,
  'createDecipheriv aes-128-ccm': 2,
};

async function main(): Promise<void> {
  const flags = parseFlags(
    ['concurrency', 'timeout', 'rate', 'warmup-handshakes', 'servers', ...SERVER_FLAGS],
    ['profile'],
  );
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const concurrency = numberFlag(flags, 'concurrency', 16, 1, 1000);
  const { suite, rounds, durationS, warmupS, devicesFile, device, profile } = serverFlags(flags);
  const timeoutMs = numberFlag(flags, 'timeout', 5000, 100, 120_000);
  const rate = numberFlag(flags, 'rate', 0, 0, 100_000);
  const warmupHandshakes = numberFlag(flags, 'warmup-handshakes', 0, 0, 1_000_000);
  const wanted = serversFlag(flags, ['floor', 'udp', 'crypto', 'control']);

  const load = (creds: HandshakeLoad['creds']): HandshakeLoad => ({
    creds,
    suite,
    concurrency,
    warmupMs: warmupS * 1000,
    durationMs: durationS * 1000,
    handshakeTimeoutMs: timeoutMs,
    handshakesPerSec: rate > 0 ? rate : undefined,
    warmupHandshakes,
  });
  const floors = suite === SUITES.ccm8 && ['floor', 'udp', 'crypto'].some((w) => wanted.has(w));
  let census: Census | undefined;
  const scriptFile = join(tmpdir(), `coap-edge-handshake-floor-${process.pid}.json`);
  const steps = (): Census['steps'] => census?.steps ?? [];
  const extraServers: ExtraServer<HandshakeResult>[] = [];
  if (wanted.has('control')) extraServers.push(controlServer());
  const floor = (
    name: 'floor' | 'floorUdp' | 'floorCrypto',
    crypto: boolean,
    description: string,
    run: ExtraServer<HandshakeResult>['run'],
  ): void => {
    extraServers.push({
      name,
      description,
      start: () => startHandshakeFloor({ name, scriptFile, crypto }),
      run,
      preflight: false,
    });
  };
  if (floors && wanted.has('floor')) {
    floor(
      'floor',
      true,
      'handshake floor: handshake-floor.ts --crypto, the census datagrams ping-ponged with ' +
        'the minimal crypto of each step (see prepared.floorCrypto)',
      (server, creds) => runPingPong(server, load(creds), steps()),
    );
  }
  if (floors && wanted.has('udp')) {
    floor(
      'floorUdp',
      false,
      'handshake floor, datagrams alone: handshake-floor.ts without --crypto (two Node ' +
        'processes ping-ponging the census datagrams, a new client socket per handshake)',
      (server, creds) => runPingPong(server, load(creds), steps()),
    );
  }
  if (floors && wanted.has('crypto')) {
    floor(
      'floorCrypto',
      true,
      'handshake floor, crypto alone: the same crypto of all steps in a loop in the floor ' +
        'process, no datagram per step',
      (server, creds) => runCryptoOnly(server, load(creds)),
    );
  }

  await runBench<HandshakeResult>({
    name: 'dtls-handshakes',
    description:
      'full DTLS 1.2 PSK handshakes (ClientHello, HelloVerifyRequest, ClientHello+cookie, ' +
      'server flight, client Finished flight, server Finished) followed by close_notify, ' +
      'by N concurrent connectors of our DtlsClient in the bench process',
    units: {
      handshakesPerSec: 'handshakes completed per second of the measured window',
      serverCpuUsPerHandshake:
        'server process utime+stime (/proc/<pid>/stat, all threads) over the window / handshakes',
      serverCpuUsPerHandshakeSchedstat: 'the same from summed per-thread schedstat (ns resolution)',
      serverSystemCpuUsPerHandshake:
        'the kernel (stime) part of serverCpuUsPerHandshake: system calls, loopback delivery',
      loadGenCpuUsPerHandshake: 'the bench process own CPU per handshake (the load generator)',
      latency: 'connect() to established, ms, nearest-rank percentiles',
      serverCpuUtilisation: 'server CPU / wall time; 1 = one core busy',
      serverRunqueueWait:
        "share of the window the server's main thread was runnable but waiting for a CPU (schedstat)",
      loadGenRunqueueWait: "the same for the bench process's main thread (the load generator)",
    },
    parameters: {
      concurrency,
      durationS,
      warmupS,
      handshakeTimeoutMs: timeoutMs,
      offeredHandshakesPerSec: rate > 0 ? rate : 'as fast as each server answers',
      warmupHandshakes,
      extensions: 'renegotiation_info, encrypt_then_mac, extended_master_secret',
      servers: ['coapEdge', 'libcoap', ...extraServers.map((e) => e.name)],
    },
    suite,
    rounds,
    devicesFile,
    device,
    identities: concurrency,
    profile,
    run: (server, creds) => runHandshakes(server, load(creds)),
    ...(floors
      ? {
          prepare: async (devicesFile, creds) => {
            census = await handshakeCensus(devicesFile, creds, suite);
            writeFileSync(scriptFile, JSON.stringify(census.steps));
            process.once('exit', () => rmSync(scriptFile, { force: true }));
            return { census, floorCrypto: FLOOR_CRYPTO };
          },
        }
      : {}),
    extraServers,
    pairRatios: {
      coapEdgeToFloor: ['coapEdge', 'floor'],
      floorToLibcoap: ['floor', 'libcoap'],
      floorUdpToFloor: ['floorUdp', 'floor'],
      floorCryptoToFloor: ['floorCrypto', 'floor'],
      controlToCoapEdge: ['coapEdgeControl', 'coapEdge'],
    },
    describe: (r) =>
      `${r.handshakesPerSec ?? '-'} hs/s, server ${r.serverCpuUsPerHandshake ?? '-'} µs/hs ` +
      `(${r.window.serverCpuTicks} ticks, util ${r.window.serverCpuUtilisation}), ` +
      `loadgen util ${r.window.loadGenCpuUtilisation}, run-queue wait server ` +
      `${r.window.serverRunqueueWait ?? '-'} loadgen ${r.window.loadGenRunqueueWait ?? '-'}, ` +
      `p50 ${r.latency.p50Ms} ms, ` +
      `after ${r.warmup.handshakes} warm-up handshakes in ${r.warmup.ms} ms, ` +
      `failures ${r.failures}`,
    metrics: {
      handshakesPerSec: { get: (r) => r.handshakesPerSec, digits: 1 },
      serverCpuUsPerHandshake: { get: (r) => r.serverCpuUsPerHandshake, digits: 1 },
      serverSystemCpuUsPerHandshake: { get: (r) => r.serverSystemCpuUsPerHandshake, digits: 1 },
      serverCpuUsPerHandshakeSchedstat: {
        get: (r) => r.serverCpuUsPerHandshakeSchedstat,
        digits: 1,
      },
      serverCpuUtilisation: { get: (r) => r.window.serverCpuUtilisation ?? null, digits: 3 },
      serverRunqueueWait: {
        get: (r) => r.window.serverRunqueueWait ?? null,
        digits: 3,
        compare: false,
      },
      loadGenRunqueueWait: {
        get: (r) => r.window.loadGenRunqueueWait ?? null,
        digits: 3,
        compare: false,
      },
      loadGenCpuUsPerHandshake: { get: (r) => r.loadGenCpuUsPerHandshake, digits: 1 },
      latencyP50Ms: { get: (r) => r.latency.p50Ms, digits: 3 },
      latencyP99Ms: { get: (r) => r.latency.p99Ms, digits: 3 },
      failures: { get: (r) => r.failures, digits: 0, compare: false },
      retransmissions: { get: (r) => r.retransmissions, digits: 0, compare: false },
      serverRssKiB: { get: (r) => r.serverRssKiB, digits: 0 },
    },
    notes: [
      'loopback on one machine: the load generator and both servers share the same cores, so ' +
        'server CPU per handshake is the primary figure and handshakes/s is secondary ' +
        '(bounded by whichever side saturates first; see loadGenCpuUtilisation)',
      'failures are counted over the whole phase (warm-up and drain included)',
    ],
  });
}

runScript('dtls-handshakes', USAGE, main);
