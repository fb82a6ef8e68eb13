/**
 * Brokers for the bridge tests: our own Mosquitto child processes on free ports (so fault
 * tests can stop, pause and restart them without touching the shared one on 1883), and small
 * MQTT client helpers. Every process is killed by `killBrokers()` (call it in `after`) and,
 * as a last resort, when the test process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { PerTestFile } from '../../helpers/file-scope.js';
import { missingCommands } from '../../helpers/tools.js';

/** True when a `mosquitto` binary is on the PATH; in CI (which installs it), throws if not. */
export const HAVE_MOSQUITTO = missingCommands([['mosquitto', '-h']]) === false;

/** A free TCP port on 127.0.0.1 (bound and released). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves once a TCP connect to the port succeeds; rejects after `timeoutMs`. */
export async function waitListening(port: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port}`);
    await sleep(25);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `cond` every 10 ms until true; throws after `timeoutMs`. */
export async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** By the test file that started them (files may share a process: scripts/test-groups.mjs). */
const live = new PerTestFile<Mosquitto>();
process.on('exit', () => {
  for (const m of live.all()) m.child?.kill('SIGKILL');
});

/** Kills every Mosquitto started by this file and removes their config directories. */
export async function killBrokers(): Promise<void> {
  await Promise.all([...live.own()].map((m) => m.dispose()));
}

/** A Mosquitto 2 child process listening on 127.0.0.1:`port`. */
export class Mosquitto {
  child: ChildProcess | undefined;
  log = '';
  private readonly dir: string;
  /** Its test file's brokers (`killBrokers`). */
  private readonly kept: Set<Mosquitto>;

  private constructor(
    readonly port: number,
    private readonly extraConfig: string,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'coap-edge-mosq-'));
    this.kept = live.own();
    this.kept.add(this);
  }

  /** Starts Mosquitto on `port` (a free one when omitted) and waits until it listens. */
  static async start(opts: { port?: number; config?: string } = {}): Promise<Mosquitto> {
    const m = new Mosquitto(opts.port ?? (await freePort()), opts.config ?? 'allow_anonymous true');
    await m.restart();
    return m;
  }

  /** (Re)starts the process on the same port. */
  async restart(): Promise<void> {
    if (this.child !== undefined) throw new Error('mosquitto is running');
    const conf = join(this.dir, 'mosquitto.conf');
    writeFileSync(conf, `listener ${this.port} 127.0.0.1\n${this.extraConfig}\n`);
    const child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stdout.setEncoding('utf8').on('data', (s: string) => (this.log += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (this.log += s));
    child.once('exit', () => {
      if (this.child === child) this.child = undefined;
    });
    try {
      await waitListening(this.port);
    } catch (e) {
      await this.stop('SIGKILL');
      throw new Error(`mosquitto did not start: ${String(e)}\n${this.log}`);
    }
  }

  /** SIGSTOP: the kernel still accepts bytes, the broker answers nothing. */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** Stops the process (SIGTERM, SIGKILL after 2 s) and waits for its exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (child === undefined) return;
    const exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    // a paused broker must run again to handle SIGTERM; SIGKILL works on it as it is
    if (signal !== 'SIGKILL') child.kill('SIGCONT');
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
    this.child = undefined;
  }

  /** Stops it for good and removes its directory. */
  async dispose(): Promise<void> {
    await this.stop();
    this.kept.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface Received {
  readonly topic: string;
  readonly payload: Buffer;
  readonly userProperties: Record<string, string | string[]> | undefined;
}

/** A subscriber client (MQTT 5 unless told otherwise) that records what it receives. */
export async function subscriber(
  port: number,
  filter: string,
  opts: IClientOptions = {},
): Promise<{ client: MqttClient; messages: Received[] }> {
  const client = connect(`mqtt://127.0.0.1:${port}`, {
    protocolVersion: 5,
    reconnectPeriod: 0,
    ...opts,
  });
  client.on('error', () => undefined);
  const messages: Received[] = [];
  client.on('message', (topic, payload, packet) => {
    messages.push({ topic, payload, userProperties: packet.properties?.userProperties });
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  await client.subscribeAsync(filter, { qos: 1 });
  return { client, messages };
}

/**
 * A stand-in platform: answers every request on `filter` with `reply(topic, payload)` on
 * `topic + '_reply'` (no answer when it returns undefined), after `delayMs(payload)`.
 */
export async function platform(
  port: number,
  filter: string,
  reply: (topic: string, payload: Buffer) => Buffer | string | undefined,
  delayMs: (payload: Buffer) => number = () => 0,
  opts: IClientOptions = {},
): Promise<MqttClient> {
  const { client } = await subscriber(port, filter, opts);
  client.on('message', (topic, payload) => {
    const answer = reply(topic, payload);
    if (answer === undefined) return;
    setTimeout(() => client.publish(`${topic}_reply`, answer, { qos: 1 }), delayMs(payload));
  });
  return client;
}

/** The JSON reply the EnOS platform sends for a request payload. */
export function enosReply(payload: Buffer): string | undefined {
  const req = JSON.parse(payload.toString('utf8')) as { id?: unknown };
  return JSON.stringify({ id: req.id, code: 200, data: {} });
}
