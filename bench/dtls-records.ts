/**
 * DTLS application-record benchmark: coap-edge against libcoap's
 * `coap-server-openssl -k <key>`, each in its own process, driven side by side in one run by
 * the same load generator (our DtlsClient). K established associations each send CON GET
 * /nothing in a closed loop (one outstanding, new message ID and token each); both servers
 * answer with a piggybacked ACK 4.04, so every request is one application-data record each
 * way.
 *
 * Beside them, in the same rotating rounds (`--servers`): `floor`, the minimal Node program
 * doing the same work per request (bench/lib/records-floor.ts); `udpEcho`, the same program's
 * plain UDP echo of datagrams of the same sizes (the pure Node UDP cost, no DTLS, no CoAP);
 * `coapEdgeControl`, a second coap-edge process started identically (the noise floor of two
 * identical processes). On request only (`--servers nativeCrypto,nativeIo,native`, after
 * `npm run bench:native`): the floor with bench-only native pieces (bench/native/): CCM_8 on
 * OpenSSL EVP contexts (`floorNativeCrypto`), recvmmsg / sendmmsg batches instead of
 * node:dgram (`floorNativeIo`; `floorNativeIo1` in batches of one datagram), both
 * (`floorNative`).
 *
 * Reports requests/s (= records/s each way), p50/p99 latency, server CPU µs per request
 * (utime + stime from /proc) per server and round, medians over rotating rounds, the ratios
 * coap-edge / libcoap and the pair ratios (coap-edge / floor, floor / libcoap, control /
 * coap-edge, …). One JSON object on stdout, progress on stderr, a copy in bench/results/.
 *
 * Run: `npm run build && node dist/bench/dtls-records.js [--clients 50] [--suite ccm8|cbc]
 *   [--rounds 3] [--duration 5] [--warmup 1] [--timeout 2000] [--devices file] [--device dk]
 *   [--servers floor,echo,control] [--profile]`
 */
import { numberFlag, parseFlags, runScript } from './lib/args.js';
import {
  SERVER_FLAGS,
  controlServer,
  runBench,
  serverFlags,
  serversFlag,
  type ExtraServer,
} from './lib/driver.js';
import {
  echoAnswerBytes,
  echoRequestBytes,
  runRecords,
  runUdpEcho,
  type RecordsLoad,
  type RecordsResult,
} from './lib/records-load.js';
import { startRecordsFloor } from './lib/servers.js';
import { SUITES } from './lib/client.js';

const USAGE = `usage: node dist/bench/dtls-records.js [options]
  --clients <n>       established associations, one request outstanding each (default 50)
  --suite <s>         ccm8 (TLS_PSK_WITH_AES_128_CCM_8, default) or cbc (..._CBC_SHA256)
  --rounds <n>        alternating rounds (default 3)
  --duration <s>      measured seconds per server per round (default 5)
  --warmup <s>        unmeasured seconds of load before each measured window (default 1)
  --timeout <ms>      a request unanswered this long is replaced by a new one (default 2000)
  --devices <file>    devices file for coap-edge (default deploy/examples/devices.json)
  --device <key>      device whose identity and PSK are used (default device001)
  --servers <list>    measured beside coap-edge and libcoap, comma-separated, or "none":
                      floor (bench/lib/records-floor.ts), echo (its plain UDP echo),
                      control (a second identical coap-edge); default floor,echo,control
                      (floor and echo: CCM_8 only); also nativeCrypto, nativeIo, nativeIo1, native: the
                      floor with bench-only native pieces (npm run bench:native first)
  --profile           run coap-edge under node --cpu-prof and print its top functions`;

async function main(): Promise<void> {
  const flags = parseFlags(['clients', 'timeout', 'servers', ...SERVER_FLAGS], ['profile']);
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const clients = numberFlag(flags, 'clients', 50, 1, 10_000);
  const { suite, rounds, durationS, warmupS, devicesFile, device, profile } = serverFlags(flags);
  const timeoutMs = numberFlag(flags, 'timeout', 2000, 50, 120_000);
  const wanted = serversFlag(flags, [
    'floor',
    'echo',
    'control',
    'nativeCrypto',
    'nativeIo',
    'nativeIo1',
    'native',
  ]);

  const ccm8 = suite === SUITES.ccm8;
  const load = (creds: RecordsLoad['creds']): RecordsLoad => ({
    creds,
    suite,
    clients,
    warmupMs: warmupS * 1000,
    durationMs: durationS * 1000,
    requestTimeoutMs: timeoutMs,
  });
  const extraServers: ExtraServer<RecordsResult>[] = [];
  if (wanted.has('control')) extraServers.push(controlServer());
  if (wanted.has('floor') && ccm8) {
    extraServers.push({
      name: 'floor',
      description:
        'floor reference: bench/lib/records-floor.ts (handshakes by a DtlsServer; per ' +
        'request record header, CCM_8 open on long-lived objects, replay window, CoAP parse, ' +
        'ACK 4.04, CCM_8 seal, UDP send; nothing else)',
      start: (devicesFile, creds) => startRecordsFloor({ devicesFile }, creds),
    });
  }
  if (wanted.has('echo') && ccm8) {
    extraServers.push({
      name: 'udpEcho',
      description:
        `pure Node UDP: records-floor.js --echo answers each ${echoRequestBytes}-byte ` +
        `datagram (the request record's size) with one ${echoAnswerBytes}-byte datagram ` +
        '(the sealed 4.04), no DTLS, no CoAP; driven by K connected UDP sockets',
      start: (devicesFile, creds) =>
        startRecordsFloor({ devicesFile, echoBytes: echoAnswerBytes }, creds),
      run: (server, creds) => runUdpEcho(server, load(creds)),
      preflight: false,
    });
  }

  const nativeFloors = [
    { flag: 'nativeCrypto', name: 'floorNativeCrypto', parts: ['crypto'] },
    { flag: 'nativeIo', name: 'floorNativeIo', parts: ['io'] },
    { flag: 'nativeIo1', name: 'floorNativeIo1', parts: ['io'], batch: 1 },
    { flag: 'native', name: 'floorNative', parts: ['crypto', 'io'] },
  ] as const;
  for (const v of nativeFloors) {
    if (!wanted.has(v.flag) || !ccm8) continue;
    extraServers.push({
      name: v.name,
      description:
        `the floor with bench-only native pieces (bench/native/): ${v.parts.join(' and ')} ` +
        '(crypto: CCM_8 on one EVP context per key and direction; io: recvmmsg into an arena, ' +
        'one JavaScript call per batch, answers by sendmmsg after it, no node:dgram' +
        `${'batch' in v ? '; batches of one datagram' : ''})`,
      start: (devicesFile, creds) =>
        startRecordsFloor(
          {
            devicesFile,
            native: { name: v.name, parts: v.parts, batch: 'batch' in v ? v.batch : undefined },
          },
          creds,
        ),
    });
  }

  await runBench<RecordsResult>({
    name: 'dtls-records',
    description:
      'CON GET /nothing over established DTLS 1.2 PSK associations, answered by a piggybacked ' +
      'ACK 4.04; K associations of our DtlsClient in the bench process, one request ' +
      'outstanding each (closed loop); handshakes happen before the measured window',
    units: {
      requestsPerSec:
        'requests answered per second of the measured window (= application records/s each way)',
      serverCpuUsPerRequest:
        'server process utime+stime (/proc/<pid>/stat, all threads) over the window / requests',
      serverCpuUsPerRequestSchedstat: 'the same from summed per-thread schedstat (ns resolution)',
      serverSystemCpuUsPerRequest:
        'the kernel (stime) part of serverCpuUsPerRequest: system calls, loopback delivery',
      loadGenCpuUsPerRequest: 'the bench process own CPU per request (the load generator)',
      latency: 'request sent to matching response received, ms, nearest-rank percentiles',
      serverCpuUtilisation: 'server CPU / wall time; 1 = one core busy',
      serverRssKiB: 'server resident set size at the end of the window',
    },
    parameters: {
      clients,
      durationS,
      warmupS,
      requestTimeoutMs: timeoutMs,
      request: 'CON GET /nothing, 4-byte token',
      extensions: 'renegotiation_info, encrypt_then_mac, extended_master_secret',
      servers: ['coapEdge', 'libcoap', ...extraServers.map((e) => e.name)],
    },
    suite,
    rounds,
    devicesFile,
    device,
    identities: clients,
    profile,
    run: (server, creds) => runRecords(server, load(creds)),
    extraServers,
    pairRatios: {
      coapEdgeToFloor: ['coapEdge', 'floor'],
      floorToLibcoap: ['floor', 'libcoap'],
      floorToUdpEcho: ['floor', 'udpEcho'],
      udpEchoToLibcoap: ['udpEcho', 'libcoap'],
      controlToCoapEdge: ['coapEdgeControl', 'coapEdge'],
      floorNativeCryptoToFloor: ['floorNativeCrypto', 'floor'],
      floorNativeIoToFloor: ['floorNativeIo', 'floor'],
      floorNativeIo1ToFloor: ['floorNativeIo1', 'floor'],
      floorNativeToFloor: ['floorNative', 'floor'],
      floorNativeToLibcoap: ['floorNative', 'libcoap'],
    },
    describe: (r) =>
      `${r.requestsPerSec ?? '-'} req/s, server ${r.serverCpuUsPerRequest ?? '-'} µs/req ` +
      `(${r.window.serverCpuTicks} ticks, util ${r.window.serverCpuUtilisation}), ` +
      `loadgen util ${r.window.loadGenCpuUtilisation}, p50 ${r.latency.p50Ms} ms, ` +
      `p99 ${r.latency.p99Ms} ms, assoc ${r.associations}, timeouts ${r.timeouts}, ` +
      `unexpected ${JSON.stringify(r.unexpectedResponses)}`,
    metrics: {
      requestsPerSec: { get: (r) => r.requestsPerSec, digits: 1 },
      serverCpuUsPerRequest: { get: (r) => r.serverCpuUsPerRequest, digits: 2 },
      serverSystemCpuUsPerRequest: { get: (r) => r.serverSystemCpuUsPerRequest, digits: 2 },
      serverCpuUsPerRequestSchedstat: { get: (r) => r.serverCpuUsPerRequestSchedstat, digits: 2 },
      serverCpuUtilisation: { get: (r) => r.window.serverCpuUtilisation ?? null, digits: 3 },
      loadGenCpuUsPerRequest: { get: (r) => r.loadGenCpuUsPerRequest, digits: 2 },
      latencyP50Ms: { get: (r) => r.latency.p50Ms, digits: 3 },
      latencyP99Ms: { get: (r) => r.latency.p99Ms, digits: 3 },
      timeouts: { get: (r) => r.timeouts, digits: 0, compare: false },
      unexpectedResponses: {
        get: (r) => Object.values(r.unexpectedResponses).reduce((a, b) => a + b, 0),
        digits: 0,
        compare: false,
      },
      serverRssKiB: { get: (r) => r.serverRssKiB, digits: 0 },
      setupFailures: {
        get: (r) => Object.values(r.setupFailures).reduce((a, b) => a + b, 0),
        digits: 0,
        compare: false,
      },
      associationsLost: { get: (r) => r.associationsLost, digits: 0, compare: false },
    },
    notes: [
      'loopback on one machine: the load generator and both servers share the same cores, so ' +
        'server CPU per request is the primary figure and requests/s is secondary (bounded by ' +
        'whichever side saturates first; see loadGenCpuUtilisation)',
      'libcoap adds the diagnostic payload "Not Found" to its 4.04 (see preflight.responseBytes); ' +
        'coap-edge sends none',
    ],
  });
}

runScript('dtls-records', USAGE, main);
