/**
 * The mbedTLS device client (test/fixtures/mbedtls-device/device.c) for interop tests: built
 * with `cc` at most once per test process for each mbedTLS (the system's 2.28 from
 * libmbedtls-dev, or the 3.6 that scripts/fetch-mbedtls36.sh unpacks under test/.cache/), into
 * test/.cache/mbedtls-device/, and run with a hard time limit. Missing tools make the build
 * throw with what to install: these tests fail rather than skip.
 *
 * Also a UDP relay between a device and the gateway that records the extensions of every
 * ClientHello and ServerHello going through, to see what was offered and what was answered.
 */
import type { RemoteInfo } from 'node:dgram';
import { existsSync, mkdirSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { ContentType, HandshakeType } from '../../src/dtls/constants.js';
import { parseClientHello, parseServerHello, readFragments } from '../../src/dtls/handshake.js';
import { readRecord } from '../../src/dtls/record.js';
import { REPO_ROOT, bindUdp, run, type ProcessResult } from './processes.js';

export type MbedtlsVersion = '2.28' | '3.6';

export const DEVICE_SOURCE = join(REPO_ROOT, 'test', 'fixtures', 'mbedtls-device', 'device.c');
/** Where scripts/fetch-mbedtls36.sh unpacks Debian 13's mbedTLS 3.6 packages. */
export const MBEDTLS36_DIR = join(REPO_ROOT, 'test', '.cache', 'mbedtls36');
const BUILD_DIR = join(REPO_ROOT, 'test', '.cache', 'mbedtls-device');
const CFLAGS = ['-std=c99', '-Wall', '-Wextra', '-Werror', '-O2'];
const LIBS = ['-lmbedtls', '-lmbedx509', '-lmbedcrypto'];

/** The compiler arguments for one mbedTLS; throws when 3.6 has not been fetched. */
function compileArgs(version: MbedtlsVersion, out: string): string[] {
  if (version === '2.28') return [...CFLAGS, '-o', out, DEVICE_SOURCE, ...LIBS];
  const usr = join(MBEDTLS36_DIR, 'usr');
  const libParent = join(usr, 'lib');
  const arch = existsSync(libParent)
    ? readdirSync(libParent).find((d) => existsSync(join(libParent, d, 'libmbedtls.so')))
    : undefined;
  if (!existsSync(join(usr, 'include', 'mbedtls', 'build_info.h')) || arch === undefined) {
    throw new Error(
      `mbedTLS 3.6 is not unpacked in ${MBEDTLS36_DIR}: run scripts/fetch-mbedtls36.sh ` +
        '(.ci/run does before the tests)',
    );
  }
  const lib = join(libParent, arch);
  // DT_RPATH rather than DT_RUNPATH: libmbedtls.so.21 finds libmbedx509 there too
  return [
    ...CFLAGS,
    '-I',
    join(usr, 'include'),
    '-o',
    out,
    DEVICE_SOURCE,
    `-L${lib}`,
    `-Wl,--disable-new-dtags,-rpath,${lib}`,
    ...LIBS,
  ];
}

const builds = new Map<MbedtlsVersion, Promise<string>>();

/** The device binary for `version`, compiled on first use in this process. */
export function buildDevice(version: MbedtlsVersion): Promise<string> {
  let p = builds.get(version);
  if (p === undefined) {
    p = compile(version);
    builds.set(version, p);
  }
  return p;
}

async function compile(version: MbedtlsVersion): Promise<string> {
  mkdirSync(BUILD_DIR, { recursive: true });
  const out = join(BUILD_DIR, `device-mbedtls-${version}`);
  // another test process may be running the old binary: build beside it and rename
  const tmp = `${out}.${process.pid}.tmp`;
  const r = await run('cc', compileArgs(version, tmp), { timeoutMs: 120_000 });
  if (r.stderr.includes('spawn error')) {
    throw new Error(`cc is not installed (apt-get install gcc libc6-dev): ${r.stderr}`);
  }
  if (r.code !== 0) {
    const hint = version === '2.28' ? ' (is libmbedtls-dev installed? .ci/run installs it)' : '';
    throw new Error(
      `compiling ${DEVICE_SOURCE} against mbedTLS ${version} failed${hint}:\n${r.stderr}`,
    );
  }
  renameSync(tmp, out);
  return out;
}

export interface DeviceRun {
  readonly port: number;
  readonly identity: string;
  readonly psk: Buffer;
  readonly suite?: 'ccm8' | 'cbc';
  readonly noEtm?: boolean;
  readonly cid?: boolean;
  readonly mfl?: 512 | 1024 | 2048 | 4096;
  readonly count?: number;
  readonly method?: 'get' | 'post' | 'put' | 'delete';
  readonly path: string;
  readonly payload?: string;
  readonly contentFormat?: number;
  readonly rebindAfter?: number;
  readonly ackTimeoutMs?: number;
  readonly maxRetransmit?: number;
  readonly handshakeTimeoutMs?: number;
}

export interface DeviceResult extends ProcessResult {
  /** The answers in order: CoAP code (`2.04`) and payload as printed. */
  readonly answers: { code: string; payload: string }[];
  /** The UDP source port of the session (before any rebind). */
  readonly localPort: number | undefined;
  /** stdout and stderr, for assertion messages. */
  readonly describe: string;
}

/** Runs the device client built for `version` to its end. */
export async function runDevice(
  version: MbedtlsVersion,
  opts: DeviceRun,
  timeoutMs = 30_000,
): Promise<DeviceResult> {
  const bin = await buildDevice(version);
  const args = [
    '--port',
    String(opts.port),
    '--identity',
    opts.identity,
    '--psk',
    opts.psk.toString('hex'),
    '--path',
    opts.path,
  ];
  const add = (flag: string, v: string | number | undefined): void => {
    if (v !== undefined) args.push(flag, String(v));
  };
  add('--suite', opts.suite);
  add('--mfl', opts.mfl);
  add('--count', opts.count);
  add('--method', opts.method);
  add('--payload', opts.payload);
  add('--content-format', opts.contentFormat);
  add('--rebind-after', opts.rebindAfter);
  add('--ack-timeout', opts.ackTimeoutMs);
  add('--max-retransmit', opts.maxRetransmit);
  add('--handshake-timeout', opts.handshakeTimeoutMs);
  if (opts.noEtm === true) args.push('--no-etm');
  if (opts.cid === true) args.push('--cid');
  const r = await run(bin, args, { timeoutMs });
  const answers = [...r.stdout.matchAll(/^(\d\.\d\d) (.*)$/gm)].map((m) => ({
    code: m[1] ?? '',
    payload: m[2] ?? '',
  }));
  const port = /^local port (\d+)$/m.exec(r.stdout)?.[1];
  return {
    ...r,
    answers,
    localPort: port === undefined ? undefined : Number(port),
    describe: `mbedTLS ${version} device ${args.filter((a) => !/^[0-9a-f]{32}$/.test(a)).join(' ')}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`,
  };
}

/** Extensions (type → data) of the hello messages a HelloTap saw. */
export interface HelloTap {
  readonly port: number;
  readonly clientHellos: ReadonlyMap<number, Buffer>[];
  readonly serverHellos: ReadonlyMap<number, Buffer>[];
  close(): Promise<void>;
}

/**
 * A UDP relay on 127.0.0.1 for one device: what arrives on `port` goes to the gateway from one
 * upstream socket, and what the gateway sends back goes to the device's last address. Every
 * unfragmented epoch-0 ClientHello and ServerHello passing through is parsed; the device
 * always sends them whole (a PSK hello is far below any fragment limit).
 */
export async function startHelloTap(gatewayPort: number): Promise<HelloTap> {
  const { socket: front, port } = await bindUdp();
  const { socket: upstream } = await bindUdp();
  const clientHellos: ReadonlyMap<number, Buffer>[] = [];
  const serverHellos: ReadonlyMap<number, Buffer>[] = [];
  let device: RemoteInfo | undefined;
  front.on('message', (msg, rinfo) => {
    device = rinfo;
    inspect(msg, HandshakeType.clientHello, (b) =>
      clientHellos.push(parseClientHello(b).extensions),
    );
    upstream.send(msg, gatewayPort, '127.0.0.1');
  });
  upstream.on('message', (msg) => {
    inspect(msg, HandshakeType.serverHello, (b) =>
      serverHellos.push(parseServerHello(b).extensions),
    );
    if (device !== undefined) front.send(msg, device.port, device.address);
  });
  return {
    port,
    clientHellos,
    serverHellos,
    close: async () => {
      await Promise.all([front, upstream].map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}

function inspect(datagram: Buffer, msgType: number, take: (body: Buffer) => void): void {
  let off = 0;
  for (;;) {
    const rec = readRecord(datagram, off);
    if (rec === undefined) return;
    off += rec.raw.length;
    if (rec.type !== ContentType.handshake || rec.epoch !== 0) continue;
    for (const f of readFragments(rec.body)) {
      if (f.msgType === msgType && f.fragmentOffset === 0 && f.fragment.length === f.length)
        take(f.fragment);
    }
  }
}
