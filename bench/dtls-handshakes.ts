/**
 * DTLS 1.2 PSK handshake benchmark: coap-edge against libcoap's
 * `coap-server-openssl -k <key>`, each in its own process, driven side by side in one run by
 * the same load generator (our DtlsClient). N concurrent connectors each do a full
 * handshake, HelloVerifyRequest round trip included, then close_notify, in a loop.
 *
 * Reports handshakes/s, server CPU µs per handshake (utime + stime from /proc), latency
 * and failures per server and round, medians over alternating rounds and the ratios
 * coap-edge / libcoap. One JSON object on stdout, progress on stderr, a copy in
 * bench/results/.
 *
 * Run: `npm run build && node dist/bench/dtls-handshakes.js [--concurrency 16] [--suite ccm8|cbc]
 *   [--rounds 3] [--duration 5] [--warmup 1] [--timeout 5000] [--devices file] [--device dk]
 *   [--profile]`
 */
import { numberFlag, parseFlags, runScript } from './lib/args.js';
import { SERVER_FLAGS, runBench, serverFlags } from './lib/driver.js';
import { runHandshakes, type HandshakeResult } from './lib/handshake-load.js';

const USAGE = `usage: node dist/bench/dtls-handshakes.js [options]
  --concurrency <n>   concurrent connectors (default 16)
  --suite <s>         ccm8 (TLS_PSK_WITH_AES_128_CCM_8, default) or cbc (..._CBC_SHA256)
  --rounds <n>        alternating rounds (default 3)
  --duration <s>      measured seconds per server per round (default 5)
  --warmup <s>        unmeasured seconds before each measured window (default 1)
  --timeout <ms>      handshake timeout (default 5000)
  --devices <file>    devices file for coap-edge (default deploy/examples/devices.json)
  --device <key>      device whose identity and PSK are used (default device001)
  --profile           run coap-edge under node --cpu-prof and print its top functions`;

async function main(): Promise<void> {
  const flags = parseFlags(['concurrency', 'timeout', ...SERVER_FLAGS], ['profile']);
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const concurrency = numberFlag(flags, 'concurrency', 16, 1, 1000);
  const { suite, rounds, durationS, warmupS, devicesFile, device, profile } = serverFlags(flags);
  const timeoutMs = numberFlag(flags, 'timeout', 5000, 100, 120_000);

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
    },
    parameters: {
      concurrency,
      durationS,
      warmupS,
      handshakeTimeoutMs: timeoutMs,
      extensions: 'renegotiation_info, encrypt_then_mac, extended_master_secret',
    },
    suite,
    rounds,
    devicesFile,
    device,
    identities: concurrency,
    profile,
    run: (server, creds) =>
      runHandshakes(server, {
        creds,
        suite,
        concurrency,
        warmupMs: warmupS * 1000,
        durationMs: durationS * 1000,
        handshakeTimeoutMs: timeoutMs,
      }),
    describe: (r) =>
      `${r.handshakesPerSec ?? '-'} hs/s, server ${r.serverCpuUsPerHandshake ?? '-'} µs/hs ` +
      `(${r.window.serverCpuTicks} ticks, util ${r.window.serverCpuUtilisation}), ` +
      `loadgen util ${r.window.loadGenCpuUtilisation}, p50 ${r.latency.p50Ms} ms, ` +
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
