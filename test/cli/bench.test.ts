/**
 * `coap-edge bench`, the fleet simulator: its formatters and histogram as functions, and the
 * command as a process against a `coap-edge serve` process (embedded broker and demo
 * platform, a devices file written by `bench --generate --out`, the admin server for
 * /metrics): `--json` prints exactly one JSON line, the summary table otherwise, NON and
 * payload size are applied, failed handshakes are counted by kind, memory per association is
 * read from coap-edge's /metrics.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DtlsError } from '../../src/dtls/errors.js';
import { CoapClientError } from '../../src/tools/coap-client.js';
import {
  LatencyHistogram,
  errorKind,
  formatProgress,
  formatSummary,
  measurepointBody,
  scrapeValue,
  type LoadResult,
} from '../../src/tools/load.js';
import { CLI_FAIL } from '../../src/cli.js';
import { cliInProcess, describeResult } from '../helpers/cli-in-process.js';
import {
  REPO_ROOT,
  killAll,
  listeningPort,
  runCli,
  startCli,
  type ProcessResult,
} from '../helpers/processes.js';

after(killAll);

function out(r: ProcessResult): string {
  return `exit ${r.code} signal ${r.signal}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

const RESULT: LoadResult = {
  devices: 10,
  connected: 9,
  connectFailures: 1,
  type: 'NON',
  payloadBytes: 256,
  rampMs: 2000,
  handshakesPerSecond: 5,
  handshakeMs: { p50: 12.34, p99: 250 },
  durationMs: 10_000,
  requests: 900,
  ok: 880,
  failed: 10,
  codes: { '2.04': 880, '4.03': 10 },
  errors: { 'handshake:handshake_timeout': 1, 'request:timeout': 10, 'response:4.03': 10 },
  messagesPerSecond: 89,
  latencyMs: { p50: 1.5, p90: 3, p99: 9.99, max: 120 },
  memory: {
    rssBeforeBytes: 100 * 2 ** 20,
    rssAfterBytes: 110 * 2 ** 20,
    associations: 1000,
    bytesPerAssociation: 10_486,
  },
};

describe('bench: formatters and histogram', () => {
  it('the latency histogram gives percentiles within its 4 % buckets, any time', () => {
    const h = new LatencyHistogram();
    assert.equal(h.quantile(50), 0);
    for (let ms = 1; ms <= 1000; ms++) h.record(ms);
    assert.equal(h.count, 1000);
    assert.equal(h.max, 1000);
    for (const [p, exact] of [
      [50, 500],
      [90, 900],
      [99, 990],
    ] as const) {
      const q = h.quantile(p);
      assert.ok(q >= exact && q <= exact * 1.04, `p${p} ${q} for ${exact}`);
    }
    assert.equal(h.quantile(100), 1000, 'never above the maximum');
    h.record(0);
    h.record(1e9);
    assert.equal(h.max, 1e9);
  });

  it('formatProgress: devices, handshakes/s, requests/s, p50/p99 and errors by kind on one line', () => {
    const line = formatProgress({
      phase: 'connecting',
      elapsedMs: 12_400,
      devices: 100_000,
      connected: 4_500,
      handshakesPerSecond: 380.4,
      requests: 0,
      requestsPerSecond: 0,
      latencyMs: { p50: 0, p99: 0 },
      errors: { 'handshake:handshake_timeout': 3, 'handshake:alert_received': 7 },
    });
    assert.doesNotMatch(line, /\n/);
    assert.match(line, /^\[ {2}12 s\] ramp/);
    assert.match(line, /4500\/100000 devices connected/);
    assert.match(line, /380 handshakes\/s/);
    assert.match(line, /0 req\/s/);
    assert.match(line, /p50 0\.0 ms p99 0\.0 ms/);
    // most frequent kind first
    assert.match(line, /errors: handshake:alert_received 7, handshake:handshake_timeout 3$/);
    const running = formatProgress({
      phase: 'running',
      elapsedMs: 30_000,
      devices: 10,
      connected: 10,
      handshakesPerSecond: 0,
      requests: 5000,
      requestsPerSecond: 1234.5,
      latencyMs: { p50: 1.25, p99: 180 },
      errors: {},
    });
    assert.match(running, /load .* 1235 req\/s \| p50 1\.3 ms p99 180 ms \| errors: none$/);
  });

  it('formatSummary: an aligned table with every figure of the result', () => {
    const text = formatSummary(RESULT);
    const lines = text.trimEnd().split('\n');
    assert.ok(text.endsWith('\n'));
    const col = lines.map((l) => /^ {2}\S.*? {2,}(\S)/.exec(l)?.[0].length);
    assert.ok(
      col.every((c) => c !== undefined && c === col[0]),
      `values in one column:\n${text}`,
    );
    assert.match(text, /devices +9\/10 connected \(1 failed\)/);
    assert.match(text, /ramp-up +2\.0 s, 5\.0 handshakes\/s/);
    assert.match(text, /handshake time +p50 12\.3 ms, p99 250 ms/);
    assert.match(text, /requests +NON, 256-byte body, 10\.0 s/);
    assert.match(text, /answered +900 sent, 880 ok \(2\.xx\), 10 unanswered; 89\.0 answers\/s/);
    assert.match(text, /latency +p50 1\.5 ms, p90 3\.0 ms, p99 10\.0 ms, max 120 ms/);
    assert.match(text, /response codes +2\.04 880, 4\.03 10/);
    assert.match(
      text,
      /errors +request:timeout 10, response:4\.03 10, handshake:handshake_timeout 1/,
    );
    assert.match(text, /coap-edge memory +10\.2 KiB RSS per association \(100 → 110 MiB for 1000/);
    const noMemory: LoadResult = { ...RESULT, memory: undefined };
    assert.doesNotMatch(formatSummary(noMemory), /memory/);
  });

  it('measurepoint bodies: an EnOS request, padded to the payload size asked', () => {
    const plain = JSON.parse(measurepointBody().toString('utf8')) as Record<string, unknown>;
    assert.equal(plain.method, 'thing.measurepoint.post');
    for (const size of [200, 256, 1024]) {
      const b = measurepointBody(size);
      assert.equal(b.length, size);
      const j = JSON.parse(b.toString('utf8')) as { method: string; params: { pad: string } };
      assert.equal(j.method, 'thing.measurepoint.post');
    }
    // smaller than the request itself: the request unpadded
    assert.ok(measurepointBody(10).length > 10);
  });

  it('scrapeValue reads a family from an exposition (sums labelled samples)', () => {
    const text = [
      '# HELP process_resident_memory_bytes Resident memory size in bytes.',
      '# TYPE process_resident_memory_bytes gauge',
      'process_resident_memory_bytes 123456789',
      'coap_edge_dtls_associations 42',
      'coap_edge_dtls_associations_evicted_total{class="idle"} 5',
      'x{a="1"} 2',
      'x{a="2"} 3',
    ].join('\n');
    assert.equal(scrapeValue(text, 'process_resident_memory_bytes'), 123456789);
    assert.equal(scrapeValue(text, 'coap_edge_dtls_associations'), 42);
    assert.equal(scrapeValue(text, 'x'), 5);
    assert.equal(scrapeValue(text, 'missing'), undefined);
  });

  it('errorKind: stable lower-case names by stage', () => {
    assert.equal(
      errorKind('handshake', new DtlsError('DTLS_HANDSHAKE_TIMEOUT', 'handshake timed out')),
      'handshake:handshake_timeout',
    );
    assert.equal(
      errorKind('request', new CoapClientError('COAP_TIMEOUT', 'no answer')),
      'request:timeout',
    );
    assert.equal(errorKind('request', 'x'), 'request:unknown');
  });
});

describe('bench: the command against a coap-edge process', () => {
  let dir = '';
  let devices = '';
  let dtlsPort = 0;
  let metricsUrl = '';

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-bench-'));
    devices = join(dir, 'devices.json');
    // --generate in-process: only the load runs below need their own process
    const gen = await cliInProcess([
      'bench',
      '--generate',
      '--count',
      '6',
      '--product-key',
      'benchTestPK',
      '--out',
      devices,
    ]);
    assert.equal(gen.code, 0, describeResult(gen));
    assert.equal(gen.stdout, '');
    assert.match(gen.stderr, /wrote 6 devices of product benchTestPK/);
    const file = JSON.parse(readFileSync(devices, 'utf8')) as { devices: unknown[] };
    assert.equal(file.devices.length, 6);
    const proc = startCli(
      [
        'serve',
        '--config',
        join(REPO_ROOT, 'deploy', 'examples', 'embedded.yaml'),
        '--devices',
        devices,
        '--dtls-port',
        '0',
        '--embedded-broker',
        '0',
        '--http-port',
        '0',
        '--http-bind',
        '127.0.0.1',
        '--bind',
        '127.0.0.1',
      ],
      { timeoutMs: 120_000 },
    );
    dtlsPort = await listeningPort(proc);
    const admin = await proc.waitFor(/"http":"127\.0\.0\.1:(\d+)"/, { stream: 'stdout' });
    metricsUrl = `http://127.0.0.1:${admin[1]}/metrics`;
  });

  after(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  /** `coap-edge bench` against the serve process, with the devices of `file`. */
  const bench = (args: readonly string[], file = devices): Promise<ProcessResult> =>
    runCli(['bench', '--devices', file, '--port', String(dtlsPort), ...args], {
      timeoutMs: 60_000,
    });

  it('--json prints exactly one JSON line (and nothing on stderr), with memory per association', async () => {
    const r = await bench([
      ...['--count', '6', '--duration', '1', '--rate', '5'],
      ...['--json', '--metrics-url', metricsUrl],
    ]);
    assert.equal(r.code, 0, out(r));
    assert.equal(r.stderr, '', out(r));
    assert.match(r.stdout, /^\{.*\}\n$/, out(r));
    const j = JSON.parse(r.stdout) as LoadResult;
    assert.equal(j.devices, 6);
    assert.equal(j.connected, 6, out(r));
    assert.equal(j.type, 'CON');
    assert.ok(j.ok > 0 && j.codes['2.04'] === j.ok, out(r));
    assert.deepEqual(j.errors, {}, out(r));
    assert.ok(j.memory !== undefined, out(r));
    assert.equal(j.memory.associations, 6, out(r));
    assert.ok(j.memory.rssAfterBytes > 0);
  });

  it('the summary table otherwise; NON requests padded to --payload-size at a --ramp', async () => {
    const r = await bench([
      ...['--count', '4', '--duration', '1', '--rate', '4', '--ramp', '20'],
      ...['--non', '--payload-size', '300'],
    ]);
    assert.equal(r.code, 0, out(r));
    assert.doesNotMatch(r.stdout, /^\{/m, 'no JSON');
    assert.match(r.stdout, /devices +4\/4 connected\n/, out(r));
    assert.match(r.stdout, /requests +NON, 300-byte body/, out(r));
    assert.match(r.stdout, /response codes +2\.04 \d+/, out(r));
    assert.match(r.stdout, /errors +none/, out(r));
    // not a terminal: no progress line
    assert.equal(r.stderr, '', out(r));
  });

  it('devices with wrong secrets: no connection, handshake errors by kind, exit 1', async () => {
    const wrong = join(dir, 'wrong.json');
    const gen = await cliInProcess([
      'bench',
      '--generate',
      '--count',
      '2',
      '--product-key',
      'benchTestPK',
      '--seed',
      'not-the-seed',
      '--out',
      wrong,
    ]);
    assert.equal(gen.code, 0, describeResult(gen));
    const r = await bench(['--count', '2', '--json'], wrong);
    assert.equal(r.code, 1, out(r));
    const j = JSON.parse(r.stdout) as LoadResult;
    assert.equal(j.connected, 0);
    assert.equal(j.connectFailures, 2);
    const kinds = Object.entries(j.errors);
    assert.equal(
      kinds.reduce((n, [, v]) => n + v, 0),
      2,
      out(r),
    );
    assert.ok(
      kinds.every(([k]) => k.startsWith('handshake:')),
      out(r),
    );
  });

  it('bad numbers are usage errors (exit 2)', async () => {
    for (const args of [
      ['--count', '0'],
      ['--ramp', '-1'],
      ['--payload-size', 'big'],
    ]) {
      // in-process: the error the binary prints as `coap-edge: <message>` (test/cli/cli.test.ts)
      const r = await cliInProcess(['bench', '--devices', devices, ...args]);
      assert.equal(r.code, 2, describeResult(r));
      assert.equal(r.error?.code, CLI_FAIL, describeResult(r));
      assert.match(r.error.message, /^--/, describeResult(r));
      assert.equal(r.stdout + r.stderr, '', describeResult(r));
    }
  });
});
