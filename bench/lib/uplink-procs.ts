/**
 * The extra processes of the uplink benchmark: a Mosquitto broker of its own (temporary
 * config on a free port), the platform stand-in and the counting subscriber (node children
 * with an IPC channel). All are registered with servers.ts, so they stop with the servers,
 * on errors and on SIGINT.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freeTcpPort, spawnHelper, type HelperProcess } from './servers.js';
import { sleep } from './stats.js';

const HOST = '127.0.0.1';

export interface Broker {
  readonly proc: HelperProcess;
  readonly port: number;
  readonly url: string;
  /** The config file's text. */
  readonly config: string;
  readonly version: string;
  /** Removes the temporary config directory. */
  cleanup(): void;
}

/** `mosquitto version 2.0.11`, or 'unknown'. */
export function mosquittoVersion(): string {
  const r = spawnSync('mosquitto', ['-h'], { encoding: 'utf8', timeout: 5000 });
  const line = `${r.stdout ?? ''}\n${r.stderr ?? ''}`
    .split('\n')
    .find((l) => /^mosquitto version/.test(l.trim()));
  return line?.trim() ?? 'unknown';
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect(port, HOST);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Mosquitto on 127.0.0.1:<free port>, anonymous, no persistence, with the limits raised so
 * the broker is not what limits the run: `max_inflight_messages 1000` (also the Receive
 * Maximum it announces to MQTT 5 clients; the default 20 would cap coap-edge's pool at 20
 * unacknowledged publishes per connection), `max_queued_messages 100000`, TCP_NODELAY.
 */
export async function startMosquitto(): Promise<Broker> {
  const dir = mkdtempSync(join(tmpdir(), 'coap-edge-uplink-mosquitto-'));
  const port = await freeTcpPort();
  const config = [
    `listener ${port} ${HOST}`,
    'allow_anonymous true',
    'persistence false',
    'max_inflight_messages 1000',
    'max_queued_messages 100000',
    'max_queued_bytes 0',
    'set_tcp_nodelay true',
    'connection_messages false',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    '',
  ].join('\n');
  const file = join(dir, 'mosquitto.conf');
  writeFileSync(file, config);
  const proc = spawnHelper('mosquitto', 'mosquitto', ['-c', file]);
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  process.once('exit', cleanup); // also on Ctrl-C
  const deadline = performance.now() + 10_000;
  while (!(await canConnect(port))) {
    if (!proc.alive() || performance.now() > deadline) {
      await proc.stop(1000);
      cleanup();
      throw new Error(`mosquitto did not start on port ${port}:\n${proc.outputTail()}`);
    }
    await sleep(50);
  }
  return {
    proc,
    port,
    url: `mqtt://${HOST}:${port}`,
    config,
    version: mosquittoVersion(),
    cleanup,
  };
}

/** A node child (compiled bench/lib script) with an IPC channel, request/answer by `seq`. */
export class IpcChild {
  private seq = 0;
  private readonly waiting = new Map<number, (m: Record<string, unknown>) => void>();

  private constructor(readonly proc: HelperProcess) {
    proc.child.on('message', (m: Record<string, unknown>) => {
      const seq = typeof m.seq === 'number' ? m.seq : undefined;
      const w = seq !== undefined ? this.waiting.get(seq) : undefined;
      if (w !== undefined && seq !== undefined) {
        this.waiting.delete(seq);
        w(m);
      }
    });
  }

  /** Starts `node dist/bench/lib/<script>.js <args>` and waits for its {type:'ready'}. */
  static async start(
    name: string,
    script: string,
    args: readonly string[],
    timeoutMs = 10_000,
  ): Promise<IpcChild> {
    const path = fileURLToPath(new URL(`./${script}.js`, import.meta.url));
    const proc = spawnHelper(name, process.execPath, [path, ...args], true);
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} not ready`)), timeoutMs);
      proc.child.on('message', (m: { type?: unknown }) => {
        if (m.type === 'ready') {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited (${code}):\n${proc.outputTail()}`));
      });
    });
    try {
      await ready;
    } catch (err) {
      await proc.stop(1000);
      throw err;
    }
    return new IpcChild(proc);
  }

  request(message: Record<string, unknown>, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(seq);
        reject(new Error(`${this.proc.name}: no answer to ${String(message.type)}`));
      }, timeoutMs);
      this.waiting.set(seq, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.proc.child.send({ ...message, seq });
    });
  }
}
