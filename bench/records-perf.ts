/**
 * Where a records request's server CPU goes: one server of bench/dtls-records.ts at a time
 * under the same load (K associations, CON GET /nothing in a closed loop), `perf record -e
 * cpu-clock -g -p <pid>` over the measured window, Node servers run with `--perf-basic-prof`
 * (JIT frames named from /tmp/perf-<pid>.map). Each sample is put in one category by its stack
 * (bench/lib/perf-split.ts); the shares times the window's CPU per request (/proc) give µs per
 * request. Prints one JSON object per server.
 *
 * Run: `node dist/bench/records-perf.js [--servers floor,libcoap,...] [--clients 50]
 *   [--duration 6] [--warmup 4] [--frequency 2000] [--keep]`
 *   servers: coapEdge, libcoap, floor, udpEcho, floorNativeCrypto, floorNativeIo, floorNativeIo1,
 *   floorNative (the native floors need `npm run bench:native`). Needs `perf` and permission to attach.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { numberFlag, parseFlags, runScript, stringFlag } from './lib/args.js';
import { SUITES, withClones } from './lib/client.js';
import { splitPerfScript } from './lib/perf-split.js';
import { echoAnswerBytes, runRecords, runUdpEcho, type RecordsLoad } from './lib/records-load.js';
import {
  REPO_ROOT,
  installCleanup,
  startCoapEdge,
  startLibcoap,
  startRecordsFloor,
  type ServerProcess,
} from './lib/servers.js';

const USAGE = `usage: node dist/bench/records-perf.js [options]
  --servers <list>   default floor,libcoap (also coapEdge, udpEcho, floorNativeCrypto,
                     floorNativeIo, floorNativeIo1, floorNative)
  --clients <n>      associations (default 50)
  --duration <s>     perf window (default 6)     --warmup <s>  load before it (default 4)
  --frequency <hz>   cpu-clock sampling rate (default 2000)
  --keep             keep the perf.data files (their directory is printed)`;

const PERF_FLAG = ['--perf-basic-prof'];
const NATIVE = {
  floorNativeCrypto: ['crypto'],
  floorNativeIo: ['io'],
  floorNativeIo1: ['io'],
  floorNative: ['crypto', 'io'],
} as const;

async function main(): Promise<void> {
  const flags = parseFlags(['servers', 'clients', 'duration', 'warmup', 'frequency'], ['keep']);
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  installCleanup();
  const names = stringFlag(flags, 'servers', 'floor,libcoap').split(',');
  const clients = numberFlag(flags, 'clients', 50, 1, 10_000);
  const durationS = numberFlag(flags, 'duration', 6, 1, 600);
  const warmupS = numberFlag(flags, 'warmup', 4, 0, 600);
  const frequency = numberFlag(flags, 'frequency', 2000, 100, 20_000);
  const dir = mkdtempSync(join(tmpdir(), 'records-perf-'));
  const { file: devicesFile, creds } = withClones(
    join(REPO_ROOT, 'deploy/examples/devices.json'),
    'device001',
    clients,
    dir,
  );
  const load: RecordsLoad = {
    creds,
    suite: SUITES.ccm8,
    clients,
    warmupMs: warmupS * 1000,
    durationMs: durationS * 1000,
    requestTimeoutMs: 2000,
  };

  for (const name of names) {
    let s: ServerProcess;
    if (name === 'libcoap') s = await startLibcoap(creds.psk, creds);
    else if (name === 'coapEdge')
      s = await startCoapEdge({ devicesFile, nodeFlags: PERF_FLAG }, creds);
    else if (name === 'floor')
      s = await startRecordsFloor({ devicesFile, nodeFlags: PERF_FLAG }, creds);
    else if (name === 'udpEcho') {
      s = await startRecordsFloor(
        { devicesFile, echoBytes: echoAnswerBytes, nodeFlags: PERF_FLAG },
        creds,
      );
    } else if (name in NATIVE) {
      const n = name as keyof typeof NATIVE;
      s = await startRecordsFloor(
        {
          devicesFile,
          native: { name: n, parts: NATIVE[n], batch: n === 'floorNativeIo1' ? 1 : undefined },
          nodeFlags: PERF_FLAG,
        },
        creds,
      );
    } else throw new Error(`unknown server ${name}`);
    const data = join(dir, `${name}.perf.data`);
    // perf starts when the load's warm-up ends and stops with the measured window
    const perf = new Promise<void>((resolve, reject) => {
      setTimeout(() => {
        const p = spawn(
          'perf',
          [
            'record',
            '-q',
            '-e',
            'cpu-clock',
            '-F',
            String(frequency),
            '-g',
            '-o',
            data,
            '-p',
            String(s.pid),
            '--',
            'sleep',
            String(durationS),
          ],
          { stdio: ['ignore', 'ignore', 'inherit'] },
        );
        p.on('error', reject);
        p.on('exit', () => resolve());
      }, load.warmupMs);
    });
    const result = name === 'udpEcho' ? await runUdpEcho(s, load) : await runRecords(s, load);
    await perf;
    await s.stop(2000);
    // the native socket's floor says how many datagrams each batch held
    const batches = /records-floor: (\d+) datagrams in (\d+) batches, (\d+) sendmmsg/.exec(
      s.outputTail(),
    );
    const script = spawnSync('perf', ['script', '-i', data, '-F', 'ip,sym,dso'], {
      encoding: 'utf8',
      maxBuffer: 1 << 30,
    });
    const split = splitPerfScript(script.stdout);
    const us = result.serverCpuUsPerRequest ?? 0;
    const perRequest = Object.fromEntries(
      Object.entries(split.shares).map(([k, v]) => [k, Math.round(v * us * 100) / 100]),
    );
    process.stdout.write(
      `${JSON.stringify(
        {
          server: name,
          requestsPerSec: result.requestsPerSec,
          serverCpuUsPerRequest: us,
          serverSystemCpuUsPerRequest: result.serverSystemCpuUsPerRequest,
          samples: split.samples,
          usPerRequest: perRequest,
          datagramsPerBatch:
            batches === null ? undefined : Math.round((+batches[1]! / +batches[2]!) * 100) / 100,
          onAllocUsPerRequest: Math.round(split.onAllocShare * us * 100) / 100,
          topLeaves: split.topLeaves,
        },
        null,
        1,
      )}\n`,
    );
  }
  if (flags.keep === true) process.stderr.write(`records-perf: perf data in ${dir}\n`);
  else rmSync(dir, { recursive: true, force: true });
}

runScript('records-perf', USAGE, main);
