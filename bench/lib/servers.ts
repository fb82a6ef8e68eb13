/**
 * The two servers under test, each in a process of its own so its CPU can be read from
 * /proc: coap-edge (`node dist/src/cli.js serve`) and libcoap's `coap-server-openssl -k`.
 * Every child is registered so it is stopped on normal exit, on errors and on SIGINT/SIGTERM.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { pskShellLiteral, pskUsableOnCommandLine } from '../../src/enos/index.js';
import { waitReady, type Credentials, type Target } from './client.js';
import { isAlive, readCpu, readRssKiB, type CpuSample } from './proc.js';

export type ServerName =
  | 'coapEdge'
  | 'coapEdgeControl'
  | 'libcoap'
  | 'floor'
  | 'udpEcho'
  | 'floorUdp'
  | 'floorCrypto'
  | 'floorNativeCrypto'
  | 'floorNativeIo'
  | 'floorNativeIo1'
  | 'floorNative';

export interface ServerProcess {
  readonly name: ServerName;
  readonly pid: number;
  readonly target: Target;
  /** The command line, with the key shown as `<psk>`. */
  readonly command: string;
  cpu(): CpuSample;
  rssKiB(): number | undefined;
  alive(): boolean;
  /** The last few KiB the process wrote to stdout and stderr. */
  outputTail(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
  stop(graceMs?: number): Promise<void>;
}

const HOST = '127.0.0.1';
const TAIL_BYTES = 8192;
const children = new Set<ChildProcess>();

/** Path of the compiled CLI (this file is dist/bench/lib/servers.js). */
export const CLI_PATH = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
/** Repository root (three levels above dist/bench/lib). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

let cleanupInstalled = false;

/** Kills every child on exit; stops them and exits on SIGINT/SIGTERM. Call once at start. */
export function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on('exit', () => {
    for (const c of children) c.kill('SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping servers\n`);
      void stopAll().finally(() => process.exit(130));
    });
  }
}

/** Stops every running child (SIGTERM, then SIGKILL). */
export async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c, 3000)));
}

function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    children.delete(child);
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(kill);
      children.delete(child);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function track(child: ChildProcess): () => string {
  children.add(child);
  child.once('exit', () => children.delete(child));
  let tail = '';
  const keep = (d: Buffer): void => {
    tail = (tail + d.toString('utf8')).slice(-TAIL_BYTES);
  };
  // Always drain the pipes: a full pipe would block the server.
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return () => tail;
}

function canBindUdp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    s.once('error', () => {
      s.close();
      resolve(false);
    });
    s.bind(port, HOST, () => s.close(() => resolve(true)));
  });
}

function canBindTcp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, HOST, () => s.close(() => resolve(true)));
  });
}

/** A port p such that UDP and TCP p and p+1 are free (libcoap binds all four). */
async function freePortPair(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const p = 20_000 + 2 * Math.floor(Math.random() * 15_000);
    if (
      (await canBindUdp(p)) &&
      (await canBindUdp(p + 1)) &&
      (await canBindTcp(p)) &&
      (await canBindTcp(p + 1))
    ) {
      return p;
    }
  }
  throw new Error('no free port pair found');
}

function handle(
  name: ServerName,
  child: ChildProcess,
  target: Target,
  command: string,
  tail: () => string,
): ServerProcess {
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${name}: spawn failed`);
  return {
    name,
    pid,
    target,
    command,
    cpu: () => readCpu(pid),
    rssKiB: () => readRssKiB(pid),
    alive: () => child.exitCode === null && child.signalCode === null && isAlive(pid),
    outputTail: tail,
    stop: (graceMs = 5000) => stopChild(child, graceMs),
  };
}

async function ready(s: ServerProcess, creds: Credentials, l: Launch = {}): Promise<ServerProcess> {
  try {
    await waitReady(s.target, creds, () => s.alive(), l.readyTimeoutMs, l.attemptTimeoutMs);
  } catch (err) {
    await s.stop(1000);
    const out = s.outputTail().trim();
    throw new Error(
      `${s.name} did not start: ${err instanceof Error ? err.message : String(err)}` +
        (out !== '' ? `\n--- ${s.name} output ---\n${out}` : ''),
    );
  }
  return s;
}

/**
 * How a server is launched when it is not started directly: a command prefix (e.g.
 * `valgrind --tool=callgrind …`, which runs the server in the same pid) and the start-up
 * patience such a slowed-down server needs.
 */
export interface Launch {
  /** Command and arguments put before the server's own command line. */
  readonly launcher?: readonly string[];
  /** How long the server may take to answer a first handshake (default 15 s). */
  readonly readyTimeoutMs?: number;
  /** Handshake timeout of each readiness attempt (default 1 s). */
  readonly attemptTimeoutMs?: number;
}

/** `[command, args]` of `command args…`, behind the launch's prefix if any. */
function launched(l: Launch, command: string, args: readonly string[]): [string, string[]] {
  const [first, ...rest] = l.launcher ?? [];
  return first === undefined ? [command, [...args]] : [first, [...rest, command, ...args]];
}

export interface CoapEdgeOptions extends Launch {
  /** The CLI to run (default this checkout's dist/src/cli.js; another build's to compare). */
  readonly cliPath?: string;
  readonly devicesFile: string;
  /** Directory for `node --cpu-prof` output; profiling is off when undefined. */
  readonly cpuProfDir?: string | undefined;
  /** More `serve` flags, appended after the defaults (e.g. `--mqtt-url <url>`). */
  readonly extraArgs?: readonly string[];
  /** Node flags before the script (e.g. `--trace-gc`). */
  readonly nodeFlags?: readonly string[];
  /** Its name in results (default `coapEdge`; `coapEdgeControl` for an identical second one). */
  readonly name?: ServerName;
}

/** `node dist/src/cli.js serve --bind 127.0.0.1 --dtls-port <p> --devices <file> --log-level warn`. */
export async function startCoapEdge(
  o: CoapEdgeOptions,
  creds: Credentials,
): Promise<ServerProcess> {
  const port = await freePortPair();
  const nodeFlags = [
    ...(o.cpuProfDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`] : []),
    ...(o.nodeFlags ?? []),
  ];
  const args = [
    ...nodeFlags,
    o.cliPath ?? CLI_PATH,
    'serve',
    '--bind',
    HOST,
    '--dtls-port',
    String(port),
    '--devices',
    o.devicesFile,
    '--log-level',
    'warn',
    ...(o.extraArgs ?? []),
  ];
  const child = spawn(...launched(o, process.execPath, args), {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail = track(child);
  const command = [...(o.launcher ?? []), 'node', ...args].join(' ');
  return ready(handle(o.name ?? 'coapEdge', child, { host: HOST, port }, command, tail), creds, o);
}

/**
 * The uplink floor reference (bench/lib/uplink-floor.ts): `node dist/bench/lib/uplink-floor.js
 * --port <p> --devices <file> --mqtt-url <url> --product-key <pk>`.
 */
export async function startFloor(
  o: {
    devicesFile: string;
    mqttUrl: string;
    productKey: string;
    nodeFlags?: readonly string[];
  } & Launch,
  creds: Credentials,
): Promise<ServerProcess> {
  const port = await freePortPair();
  const script = fileURLToPath(new URL('./uplink-floor.js', import.meta.url));
  const args = [
    ...(o.nodeFlags ?? []),
    script,
    '--port',
    String(port),
    '--devices',
    o.devicesFile,
    '--mqtt-url',
    o.mqttUrl,
    '--product-key',
    o.productKey,
  ];
  const child = spawn(...launched(o, process.execPath, args), {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail = track(child);
  const command = [...(o.launcher ?? []), 'node', ...args].join(' ');
  return ready(handle('floor', child, { host: HOST, port }, command, tail), creds, o);
}

/**
 * The records floor reference (bench/lib/records-floor.ts): `node dist/bench/lib/records-floor.js
 * --port <p> --devices <file>`, or with `echoBytes` its plain UDP echo (`--echo <bytes>`, no DTLS:
 * ready when it answers a datagram); with `native` its bench-only native variants
 * (`--native crypto,io`, bench/native/).
 */
export async function startRecordsFloor(
  o: {
    devicesFile: string;
    echoBytes?: number;
    /** `batch`: the native socket's largest batch (default 64). */
    native?: { name: ServerName; parts: readonly ('crypto' | 'io')[]; batch?: number };
    nodeFlags?: readonly string[];
  } & Launch,
  creds: Credentials,
): Promise<ServerProcess> {
  const port = await freePortPair();
  const script = fileURLToPath(new URL('./records-floor.js', import.meta.url));
  const mode =
    o.echoBytes !== undefined ? ['--echo', String(o.echoBytes)] : ['--devices', o.devicesFile];
  if (o.native !== undefined) mode.push('--native', o.native.parts.join(','));
  if (o.native?.batch !== undefined) mode.push('--batch', String(o.native.batch));
  const args = [...(o.nodeFlags ?? []), script, '--port', String(port), ...mode];
  const child = spawn(...launched(o, process.execPath, args), {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail = track(child);
  const command = [...(o.launcher ?? []), 'node', ...args].join(' ');
  const name = o.echoBytes !== undefined ? 'udpEcho' : (o.native?.name ?? 'floor');
  const s = handle(name, child, { host: HOST, port }, command, tail);
  return o.echoBytes === undefined ? ready(s, creds, o) : probed(s);
}

/**
 * The handshake floor (bench/lib/handshake-floor.ts): `node dist/bench/lib/handshake-floor.js
 * --port <p> --script <file> [--crypto]`, ready when it answers the probe datagram. With a
 * launch (callgrind, instructions.ts) the probe waits as long as the launch's ready timeout.
 */
export async function startHandshakeFloor(
  o: {
    name: ServerName;
    scriptFile: string;
    crypto: boolean;
    nodeFlags?: readonly string[];
  } & Launch,
): Promise<ServerProcess> {
  const port = await freePortPair();
  const script = fileURLToPath(new URL('./handshake-floor.js', import.meta.url));
  const args = [
    ...(o.nodeFlags ?? []),
    script,
    '--port',
    String(port),
    '--script',
    o.scriptFile,
    ...(o.crypto ? ['--crypto'] : []),
  ];
  const child = spawn(...launched(o, process.execPath, args), {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail = track(child);
  const command = [...(o.launcher ?? []), 'node', ...args].join(' ');
  return probed(handle(o.name, child, { host: HOST, port }, command, tail), o.readyTimeoutMs);
}

/** `s` once it answers a probe datagram `[0xff]`; stopped and thrown when it does not. */
async function probed(s: ServerProcess, timeoutMs = 15_000): Promise<ServerProcess> {
  try {
    await waitProbe(s, timeoutMs);
  } catch (err) {
    await s.stop(1000);
    throw new Error(`${s.name} did not start: ${String(err)}\n${s.outputTail()}`);
  }
  return s;
}

/** Resolves when a datagram `[0xff]` sent to the server is answered (tries for `timeoutMs`). */
async function waitProbe(s: ServerProcess, timeoutMs: number): Promise<void> {
  const sock = createSocket('udp4');
  try {
    const answered = new Promise<void>((resolve) => sock.once('message', () => resolve()));
    const deadline = performance.now() + timeoutMs;
    let done = false;
    void answered.then(() => (done = true));
    while (!done) {
      if (!s.alive()) throw new Error('exited during start-up');
      if (performance.now() > deadline) throw new Error(`no answer after ${timeoutMs} ms`);
      sock.send(Buffer.from([0xff]), s.target.port, s.target.host);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    sock.close();
  }
}

/**
 * `coap-server-openssl -A 127.0.0.1 -p <p> -k <key>`; DTLS listens on p + 1. `-k` takes the
 * key as the raw bytes of its argument, which a Node argument string cannot carry (it is
 * encoded as UTF-8), so the command runs through `bash -c 'exec …'` with the key as an
 * ANSI-C `$'\xNN…'` literal; `exec` keeps the pid the server's. With `-k` alone libcoap
 * accepts any identity.
 */
export async function startLibcoap(
  psk: Buffer,
  creds: Credentials,
  extraArgs: readonly string[] = [],
  l: Launch = {},
): Promise<ServerProcess> {
  if (!pskUsableOnCommandLine(psk)) {
    throw new Error('the PSK holds a 0x00 byte and cannot be given to coap-server-openssl -k');
  }
  // Extra arguments go through bash unquoted: plain flags and numbers only.
  const bad = [...(l.launcher ?? []), ...extraArgs].find((a) => !/^[-\w.=/%]+$/.test(a));
  if (bad !== undefined) throw new Error(`unsafe coap-server-openssl argument ${bad}`);
  const port = await freePortPair();
  const extra = extraArgs.map((a) => ` ${a}`).join('');
  const prefix = (l.launcher ?? []).map((a) => `${a} `).join('');
  const argv = (key: string): string =>
    `${prefix}coap-server-openssl -A ${HOST} -p ${port} -v 3${extra} -k ${key}`;
  const child = spawn('bash', ['-c', `exec ${argv(pskShellLiteral(psk))}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail = track(child);
  const s = handle('libcoap', child, { host: HOST, port: port + 1 }, argv('<psk>'), tail);
  await ready(s, creds, l);
  // under a launcher (valgrind) the pid's comm is the tool's; its command line names the server
  const comm =
    l.launcher === undefined
      ? readFileSync(`/proc/${s.pid}/comm`, 'utf8').trim()
      : (readFileSync(`/proc/${s.pid}/cmdline`, 'utf8')
          .split('\0')
          .find((a) => a.startsWith('coap-server')) ?? '');
  if (!comm.startsWith('coap-server')) {
    await s.stop(1000);
    throw new Error(`pid ${s.pid} is ${comm}, not coap-server-openssl`);
  }
  return s;
}

/** `coap-server-openssl v4.3.1 -- …; TLS Library: OpenSSL - runtime …`, or undefined. */
export function libcoapVersion(): string | undefined {
  const r = spawnSync('coap-server-openssl', ['-h'], { encoding: 'utf8', timeout: 5000 });
  const text = `${r.stdout ?? ''}\n${r.stderr ?? ''}`;
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^coap-server-openssl v|^TLS Library:/.test(l));
  return lines.length > 0 ? lines.join('; ') : undefined;
}

/** A helper process (broker, platform stand-in, subscriber), stopped with the servers. */
export interface HelperProcess {
  readonly name: string;
  readonly pid: number;
  readonly command: string;
  readonly child: ChildProcess;
  cpu(): CpuSample;
  rssKiB(): number | undefined;
  alive(): boolean;
  outputTail(): string;
  stop(graceMs?: number): Promise<void>;
}

/**
 * Spawns a helper process registered like the servers (killed on exit, stopped on SIGINT and
 * by {@link stopAll}); its stdout and stderr are drained into a short tail. `ipc` adds an
 * IPC channel (for node children).
 */
export function spawnHelper(
  name: string,
  command: string,
  args: readonly string[],
  ipc = false,
): HelperProcess {
  const child = spawn(command, args, {
    stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  });
  const tail = track(child);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${name}: spawn of ${command} failed`);
  return {
    name,
    pid,
    command: [command === process.execPath ? 'node' : command, ...args].join(' '),
    child,
    cpu: () => readCpu(pid),
    rssKiB: () => readRssKiB(pid),
    alive: () => child.exitCode === null && child.signalCode === null && isAlive(pid),
    outputTail: tail,
    stop: (graceMs = 5000) => stopChild(child, graceMs),
  };
}

/** A free TCP port on 127.0.0.1 (for a broker). */
export async function freeTcpPort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const p = 20_000 + Math.floor(Math.random() * 30_000);
    if (await canBindTcp(p)) return p;
  }
  throw new Error('no free TCP port found');
}
