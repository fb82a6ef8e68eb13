/**
 * Child processes for interop and CLI tests: spawn with a hard timeout, collect output, wait
 * for a line, kill everything a test file started and is still running when it ends
 * (`after(killAll)`); each file's children are its own, also where files share a process.
 * Also: the repository root, the CLI path, free UDP ports, and argv builders for the real
 * peers (openssl s_client, libcoap's coap-client-openssl / coap-client-gnutls).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pskShellLiteral } from '../../src/enos/psk.js';
import { PerTestFile } from './file-scope.js';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      const name = (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name;
      if (name === 'coap-edge') return dir;
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('repository root (package.json of coap-edge) not found');
    dir = up;
  }
}

/** The repository root (the compiled helper lives in dist/test/helpers/). */
export const REPO_ROOT = findRoot();
/** The compiled command line. */
export const CLI = join(REPO_ROOT, 'dist', 'src', 'cli.js');

/** Default hard limit for one child process. */
export const PROCESS_TIMEOUT_MS = 15_000;
/**
 * How long a `serve` process may take to say it listens. Not a property under test: a start
 * that ends sooner ends the wait, and on a loaded 2-core machine starts took over 15 s. The
 * process's own limit (`startCli`: 30 s unless given) still ends a start that hangs.
 */
export const START_TIMEOUT_MS = 60_000;

export interface ProcessResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The process hit its time limit and was killed. */
  readonly timedOut: boolean;
}

export interface SpawnOptions {
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs?: number;
}

/**
 * The children still running, by the test file that started them, so that a file's `killAll`
 * ends only its own where files share a process (scripts/test-groups.mjs).
 */
const live = new PerTestFile<Proc>();

/**
 * Kills every child the calling test file started that is still running; call from `after` /
 * `t.after` of each test file. Children of other files in the same process are left alone.
 */
export async function killAll(): Promise<void> {
  await Promise.all([...live.own()].map((p) => p.kill()));
}

/** The environment of this process without any `COAP_EDGE_*` variable, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('COAP_EDGE_')) env[k] = v;
  }
  return { ...env, ...extra };
}

/** A running child with its output so far. Killed with SIGKILL when its time is up. */
export class Proc {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly done: Promise<ProcessResult>;
  private result: ProcessResult | undefined;
  private timedOut = false;
  private readonly listeners = new Set<() => void>();

  constructor(
    readonly command: string,
    readonly args: readonly string[],
    opts: SpawnOptions = {},
  ) {
    this.child = spawn(command, args, {
      cwd: opts.cwd ?? REPO_ROOT,
      env: opts.env ?? cleanEnv(),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const children = live.own();
    children.add(this);
    const timer = setTimeout(() => {
      this.timedOut = true;
      this.child.kill('SIGKILL');
    }, opts.timeoutMs ?? PROCESS_TIMEOUT_MS);
    this.child.stdout?.setEncoding('utf8').on('data', (s: string) => {
      this.stdout += s;
      this.notify();
    });
    this.child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      this.stderr += s;
      this.notify();
    });
    // a child that exits before reading its stdin must not crash the test with EPIPE
    this.child.stdin?.on('error', () => undefined);
    this.done = new Promise<ProcessResult>((resolve) => {
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (this.result !== undefined) return;
        clearTimeout(timer);
        children.delete(this);
        this.result = {
          code,
          signal,
          stdout: this.stdout,
          stderr: this.stderr,
          timedOut: this.timedOut,
        };
        this.notify();
        resolve(this.result);
      };
      // 'close' comes after the output streams have ended, so nothing printed is missed
      this.child.on('close', finish);
      this.child.on('error', (err) => {
        this.stderr += `spawn error: ${err.message}\n`;
        finish(null, null);
      });
    });
  }

  get exited(): boolean {
    return this.result !== undefined;
  }

  /** stdout and stderr, for assertion messages. */
  describe(): string {
    return `${this.command} ${this.args.join(' ')}\n--- stdout\n${this.stdout}\n--- stderr\n${this.stderr}`;
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }

  /**
   * Resolves with the first match of `re` in the output so far or to come; rejects when the
   * process exits or `timeoutMs` passes first.
   */
  waitFor(
    re: RegExp,
    opts: { stream?: 'stdout' | 'stderr' | 'both'; timeoutMs?: number } = {},
  ): Promise<RegExpMatchArray> {
    const stream = opts.stream ?? 'both';
    const text = (): string =>
      stream === 'stdout'
        ? this.stdout
        : stream === 'stderr'
          ? this.stderr
          : `${this.stdout}\n${this.stderr}`;
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const m = re.exec(text());
        if (m !== null) {
          done();
          resolve(m);
        } else if (this.result !== undefined) {
          done();
          reject(new Error(`process exited before printing ${String(re)}\n${this.describe()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out waiting for ${String(re)}\n${this.describe()}`));
      }, opts.timeoutMs ?? PROCESS_TIMEOUT_MS);
      const done = (): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  write(text: string): void {
    this.child.stdin?.write(text);
  }

  /** Closes the child's stdin (EOF). */
  end(): void {
    this.child.stdin?.end();
  }

  signal(sig: NodeJS.Signals): void {
    if (this.result === undefined) this.child.kill(sig);
  }

  /** SIGKILL unless already exited; resolves when it is gone. */
  async kill(): Promise<ProcessResult> {
    this.signal('SIGKILL');
    return this.done;
  }
}

/** Runs a command to its end (stdin closed at once, or after writing `input`). */
export function run(
  command: string,
  args: readonly string[],
  opts: SpawnOptions & { input?: string } = {},
): Promise<ProcessResult> {
  const p = new Proc(command, args, opts);
  if (opts.input !== undefined) p.write(opts.input);
  p.end();
  return p.done;
}

/** Runs `node dist/src/cli.js ...args` to its end, with a clean environment plus `env`. */
export function runCli(
  args: readonly string[],
  opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<ProcessResult> {
  return run(process.execPath, [CLI, ...args], {
    env: cleanEnv(opts.env),
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
  });
}

/** Starts `node dist/src/cli.js ...args` and leaves it running. */
export function startCli(
  args: readonly string[],
  opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Proc {
  return new Proc(process.execPath, [CLI, ...args], {
    env: cleanEnv(opts.env),
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    timeoutMs: opts.timeoutMs ?? 30_000,
  });
}

/** Polls `pred` every 10 ms until it holds; rejects after `timeoutMs` with `what`. */
export async function waitUntil(
  pred: () => boolean,
  what: string,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Binds a UDP socket on 127.0.0.1 to a port the system picks; the caller closes it. */
export async function bindUdp(): Promise<{ socket: Socket; port: number }> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  return { socket, port: socket.address().port };
}

/** Sends one datagram to 127.0.0.1:`port` from a socket of its own, closed once it is sent. */
export async function sendDatagram(port: number, data: Buffer): Promise<void> {
  const { socket } = await bindUdp();
  try {
    await new Promise<void>((resolve) => socket.send(data, port, '127.0.0.1', () => resolve()));
  } finally {
    socket.close();
  }
}

// --- real peers ----------------------------------------------------------------------------

export type OpensslCipher = 'PSK-AES128-CCM8' | 'PSK-AES128-CBC-SHA256';

/**
 * `openssl s_client -dtls1_2` with a PSK. `-quiet` prints only the application data;
 * `-no_ign_eof` makes stdin EOF close the connection (close_notify) and end the process,
 * which `-quiet` alone would not; `-nocommands` keeps lines from being read as commands.
 */
export function startSClient(opts: {
  port: number;
  identity: string;
  psk: Buffer;
  cipher: OpensslCipher;
  noEtm?: boolean;
  timeoutMs?: number;
}): Proc {
  const args = [
    's_client',
    '-dtls1_2',
    '-connect',
    `127.0.0.1:${opts.port}`,
    '-psk_identity',
    opts.identity,
    '-psk',
    opts.psk.toString('hex'),
    '-cipher',
    opts.cipher,
    '-no_ticket',
    '-quiet',
    '-no_ign_eof',
    '-nocommands',
    ...(opts.noEtm === true ? ['-no_etm'] : []),
  ];
  return new Proc('openssl', args, { timeoutMs: opts.timeoutMs ?? PROCESS_TIMEOUT_MS });
}

export type CoapClientFlavor = 'coap-client-openssl' | 'coap-client-gnutls';

export interface CoapClientRequest {
  readonly port: number;
  readonly identity: string;
  readonly psk: Buffer;
  readonly method: 'get' | 'post' | 'put' | 'delete';
  /** Path with leading slash, e.g. `/topic/sys/pk/dk/thing/measurepoint/post`. */
  readonly path: string;
  readonly payload?: string;
  /** CoAP Content-Format number (50: application/json). */
  readonly contentFormat?: number;
  /** How long coap-client waits for the answer (`-B`), in seconds. @default 5 */
  readonly waitSeconds?: number;
}

/**
 * Runs libcoap's coap-client. Its `-k` takes the key as raw bytes, and Node encodes every argv
 * string as UTF-8 (so `key.toString('latin1')` would turn a byte 0xb0 into c2 b0); the key is
 * therefore passed through bash as the `$'\xNN...'` literal of `pskShellLiteral`, as the
 * README tells users to. The literal holds only `\xNN` escapes; everything else goes in argv.
 * libcoap prints a non-2.xx response code (e.g. `5.03`) on stderr and its DTLS warnings
 * (alerts) on stdout; it exits 0 either way.
 */
export function runCoapClient(
  flavor: CoapClientFlavor,
  req: CoapClientRequest,
  timeoutMs = PROCESS_TIMEOUT_MS,
): Promise<ProcessResult> {
  const args = [
    '-B',
    String(req.waitSeconds ?? 5),
    '-u',
    req.identity,
    '-m',
    req.method,
    ...(req.contentFormat !== undefined ? ['-t', String(req.contentFormat)] : []),
    ...(req.payload !== undefined ? ['-e', req.payload] : []),
    `coaps://127.0.0.1:${req.port}${req.path}`,
  ];
  const script = `key=${pskShellLiteral(req.psk)}; exec "$1" -k "$key" "\${@:2}"`;
  return run('bash', ['-c', script, 'bash', flavor, ...args], { timeoutMs });
}

/**
 * Waits for the "coap-edge listening" log line of a `serve` process and returns the DTLS port
 * it names (`"dtls":"127.0.0.1:40123"`), which is how `--dtls-port 0` becomes usable.
 */
export async function listeningPort(proc: Proc): Promise<number> {
  const m = await proc.waitFor(/^.*"msg":"coap-edge listening".*$/m, {
    stream: 'stdout',
    timeoutMs: START_TIMEOUT_MS,
  });
  const line = JSON.parse(m[0]) as { dtls?: unknown };
  const port = typeof line.dtls === 'string' ? Number(/:(\d+)$/.exec(line.dtls)?.[1]) : NaN;
  if (!(port > 0)) throw new Error(`no DTLS port in ${m[0]}`);
  return port;
}
