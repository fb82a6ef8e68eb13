/**
 * `coap-edge bench --idle-sockets`: devices that hold no socket while idle (suspend after each
 * request, resume on a new source port for the next, followed by the gateway through their
 * Connection ID). 300 devices with `--max-sockets 20` against a whole gateway (embedded
 * broker, demo platform): every request answered, never more than 20 sockets open (the
 * tool's count, and the sockets the process holds in /proc), one handshake per device.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  SocketBudget,
  formatSummary,
  generateDevices,
  loopbackAddress,
  writeDevicesFile,
  type LoadResult,
} from '../../src/tools/load.js';
import { CLI_FAIL } from '../../src/cli.js';
import { cliInProcess, describeResult } from '../helpers/cli-in-process.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { killAll, startCli, type ProcessResult } from '../helpers/processes.js';

after(killAll);

function out(r: ProcessResult): string {
  return `exit ${r.code} signal ${r.signal}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** UDP sockets a process holds right now (0 once it is gone); its stdio pipes do not count. */
function udpSocketsOf(pid: number): number {
  let udp: Set<string>;
  try {
    // the inode is the 10th column of /proc/net/udp
    udp = new Set(
      readFileSync(`/proc/${pid}/net/udp`, 'utf8')
        .split('\n')
        .slice(1)
        .map((l) => l.trim().split(/\s+/)[9] ?? ''),
    );
  } catch {
    return 0;
  }
  let n = 0;
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m?.[1] !== undefined && udp.has(m[1])) n++;
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    return 0;
  }
  return n;
}

describe('bench --idle-sockets: the socket budget', () => {
  it('SocketBudget lets `limit` in, then one per release, first come first served', async () => {
    const b = new SocketBudget(2);
    await b.acquire();
    await b.acquire();
    const order: number[] = [];
    const third = b.acquire().then(() => order.push(3));
    const fourth = b.acquire().then(() => order.push(4));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, [], 'nobody past the limit');
    assert.equal(b.waiting, 2);
    b.release();
    await third;
    assert.deepEqual(order, [3]);
    assert.equal(b.open, 2);
    b.release();
    await fourth;
    assert.deepEqual(order, [3, 4]);
    b.release();
    b.release();
    assert.equal(b.open, 0);
    assert.equal(b.peak, 2);
    assert.throws(() => new SocketBudget(0), RangeError);
  });

  it('loopbackAddress: one distinct 127/8 address per device', () => {
    assert.equal(loopbackAddress(0), '127.1.0.0');
    assert.equal(loopbackAddress(1), '127.1.0.1');
    assert.equal(loopbackAddress(256), '127.1.1.0');
    assert.equal(loopbackAddress(99_999), '127.2.134.159');
    assert.throws(() => loopbackAddress(0xffffff), RangeError);
  });

  it('the summary says how the sockets were shared, and the memory after the load', () => {
    const r: LoadResult = {
      devices: 300,
      connected: 300,
      connectFailures: 0,
      type: 'CON',
      payloadBytes: 147,
      rampMs: 1500,
      handshakesPerSecond: 200,
      handshakeMs: { p50: 5, p99: 50 },
      durationMs: 4000,
      requests: 600,
      ok: 600,
      failed: 0,
      codes: { '2.04': 600 },
      errors: {},
      messagesPerSecond: 150,
      latencyMs: { p50: 2, p90: 4, p99: 8, max: 20 },
      memory: {
        rssBeforeBytes: 100 * 2 ** 20,
        rssAfterBytes: 110 * 2 ** 20,
        associations: 1024,
        bytesPerAssociation: 10 * 1024,
        rssEndBytes: 120 * 2 ** 20,
        bytesPerAssociationEnd: 20 * 1024,
      },
      idleSockets: {
        maxSockets: 20,
        peakSockets: 20,
        handshakes: 300,
        resumes: 600,
        socketWaitMs: { p50: 0.5, p99: 30 },
      },
    };
    assert.match(
      formatSummary(r),
      /coap-edge memory +10\.0 KiB RSS per association \(100 → 110 MiB for 1024 associations\); 120 MiB after the load \(20\.0 KiB per association\)/,
    );
    assert.match(
      formatSummary(r),
      /idle sockets +at most 20 of 20 open at once; 300 handshakes, 600 resumed on a new socket; wait for a socket p50 0\.5 ms, p99 30\.0 ms/,
    );
  });
});

describe('coap-edge bench --cid --idle-sockets against a gateway', () => {
  let dir = '';
  let devices = '';
  let gw: TestGateway | undefined;
  const current = (): TestGateway => {
    assert.ok(gw !== undefined, 'the gateway started');
    return gw;
  };
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-bench-idle-'));
    devices = join(dir, 'devices.json');
    writeDevicesFile(
      devices,
      JSON.stringify(generateDevices(300, 'benchIdlePK', `idle-${process.pid}`)),
    );
    gw = await startGateway({ devices, overrides: { embeddedBroker: 0, demoPlatform: true } });
  });
  after(async () => {
    await gw?.close();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  it('300 devices, --max-sockets 20: every request answered, ≤ 20 sockets, one handshake each', async () => {
    const stats = current().gateway.dtls.stats;
    const started = stats.handshakesStarted;
    const moved = stats.peerAddressUpdates;
    const proc = startCli(
      [
        ...['bench', '--devices', devices, '--port', String(current().port)],
        ...['--count', '300', '--cid', '--idle-sockets', '--max-sockets', '20'],
        // one request every 2 s per device: about 150 req/s for 4 s
        ...['--rate', '0.5', '--duration', '4', '--json'],
      ],
      { timeoutMs: 110_000 },
    );
    const pid = proc.child.pid;
    assert.ok(pid !== undefined);
    // what the kernel says the process holds, sampled while it runs
    let peakInProc = 0;
    let samples = 0;
    const sampler = setInterval(() => {
      peakInProc = Math.max(peakInProc, udpSocketsOf(pid));
      samples++;
    }, 5);
    const r = await proc.done.finally(() => clearInterval(sampler));
    assert.equal(r.code, 0, out(r));
    const j = JSON.parse(r.stdout) as LoadResult;
    assert.equal(j.connected, 300, out(r));
    assert.deepEqual(j.errors, {}, out(r));
    assert.equal(j.failed, 0, out(r));
    // every device sent at least once (its first request falls in the first 2 s of 4)
    assert.ok(j.requests >= 300, out(r));
    // every turn due in the 4 s was taken, however late the machine made it: two per device
    assert.equal(j.requests, 600, out(r));
    assert.equal(j.ok, j.requests, out(r));
    assert.ok(j.idleSockets !== undefined, out(r));
    assert.equal(j.idleSockets.maxSockets, 20);
    // 32 handshakes would be in flight without the budget: the limit was reached, not passed
    assert.equal(j.idleSockets.peakSockets, 20, out(r));
    assert.equal(j.idleSockets.handshakes, 300);
    assert.equal(j.idleSockets.resumes, j.requests, 'every request on a resumed socket');
    assert.ok(samples > 10, `sampled ${samples} times`);
    assert.ok(peakInProc <= 20, `the process held ${peakInProc} UDP sockets at once`);
    assert.ok(peakInProc >= 2, `sampling saw the sockets (${peakInProc})`);
    // the gateway: the initial handshakes only, and it followed every request to its new port
    assert.equal(stats.handshakesStarted - started, 300, 'one handshake per device');
    assert.ok(
      stats.peerAddressUpdates - moved >= j.requests,
      `${stats.peerAddressUpdates - moved} address updates for ${j.requests} requests`,
    );
  });

  it('--idle-sockets needs --cid and excludes --rebind-every (usage errors, exit 2)', async () => {
    for (const args of [
      ['--idle-sockets'],
      ['--idle-sockets', '--cid', '--rebind-every', '5'],
      ['--idle-sockets', '--cid', '--max-sockets', '0'],
    ]) {
      // in-process: the error the binary prints as `coap-edge: <message>` (test/cli/cli.test.ts)
      const r = await cliInProcess(['bench', '--devices', devices, ...args]);
      assert.equal(r.code, 2, describeResult(r));
      assert.equal(r.error?.code, CLI_FAIL, describeResult(r));
      assert.match(r.error.message, /^--/, describeResult(r));
    }
  });
});
