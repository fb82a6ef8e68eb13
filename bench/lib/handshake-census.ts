/**
 * A census of coap-edge's handshake, for the handshake floor (bench/lib/handshake-floor.ts):
 * a coap-edge process started under the node:crypto counter (bench/lib/crypto-count.ts),
 * reached through a UDP relay in this process that records every datagram's direction and
 * size. After a few warm-up handshakes, `n` sequential handshakes (connect, close_notify);
 * the counter's totals before and after give coap-edge's node:crypto calls per handshake,
 * and the relay's record of one of them gives the datagrams, grouped into steps: what the
 * client sent, then what the server answered.
 */
import { createSocket, type Socket } from 'node:dgram';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type Credentials, type Target } from './client.js';
import type { Step } from './handshake-floor.js';
import { startCoapEdge } from './servers.js';
import { sleep } from './stats.js';

export interface Census {
  readonly handshakes: number;
  /** coap-edge's node:crypto calls per handshake, by function (and algorithm). */
  readonly coapEdgeCryptoCallsPerHandshake: Record<string, number>;
  /** One handshake's datagrams: `c` client → server, `s` server → client, bytes. */
  readonly datagrams: readonly string[];
  readonly steps: readonly Step[];
}

const COUNTER = fileURLToPath(new URL('./crypto-count.js', import.meta.url));

/** A relay: one upstream socket per client address, every datagram recorded by client port. */
class Relay {
  readonly socket: Socket = createSocket('udp4');
  readonly log = new Map<number, string[]>();
  private readonly upstream = new Map<number, Socket>();

  constructor(private readonly server: Target) {
    this.socket.on('message', (msg, rinfo) => {
      this.record(rinfo.port, `c${msg.length}`);
      let up = this.upstream.get(rinfo.port);
      if (up === undefined) {
        const s = createSocket('udp4');
        s.on('message', (back) => {
          this.record(rinfo.port, `s${back.length}`);
          this.socket.send(back, rinfo.port, rinfo.address);
        });
        up = s;
        this.upstream.set(rinfo.port, s);
      }
      up.send(msg, this.server.port, this.server.host);
    });
  }

  private record(port: number, entry: string): void {
    const l = this.log.get(port) ?? [];
    l.push(entry);
    this.log.set(port, l);
  }

  async listen(): Promise<Target> {
    await new Promise<void>((resolve) => this.socket.bind(0, '127.0.0.1', resolve));
    return { host: '127.0.0.1', port: this.socket.address().port };
  }

  close(): void {
    for (const s of this.upstream.values()) s.close();
    this.socket.close();
  }
}

/** The counter's totals so far (SIGUSR2, then its file). */
async function counts(pid: number): Promise<Record<string, number>> {
  const file = join(tmpdir(), `crypto-count-${pid}.json`);
  rmSync(file, { force: true });
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 100 && !existsSync(file); i++) await sleep(20);
  await sleep(20);
  const c = JSON.parse(readFileSync(file, 'utf8')) as Record<string, number>;
  rmSync(file, { force: true });
  return c;
}

/** Client datagrams, then server answers, as steps (a step ends where the client sends again). */
export function toSteps(datagrams: readonly string[]): Step[] {
  const steps: { in: number[]; out: number[] }[] = [];
  for (const d of datagrams) {
    const bytes = Number(d.slice(1));
    const last = steps.at(-1);
    if (d.startsWith('c')) {
      if (last === undefined || last.out.length > 0) steps.push({ in: [bytes], out: [] });
      else last.in.push(bytes);
    } else if (last !== undefined) last.out.push(bytes);
  }
  return steps;
}

export async function handshakeCensus(
  devicesFile: string,
  creds: Credentials,
  suite: number,
  n = 20,
): Promise<Census> {
  const edge = await startCoapEdge(
    { devicesFile, nodeFlags: ['--import', COUNTER], name: 'coapEdgeControl' },
    creds,
  );
  const relay = new Relay(edge.target);
  try {
    const target = await relay.listen();
    const once = async (): Promise<void> => {
      const c = await connect(target, creds, { suite, handshakeTimeoutMs: 5000 });
      await c.close();
    };
    for (let i = 0; i < 3; i++) await once();
    await sleep(200);
    const before = await counts(edge.pid);
    const warm = new Set(relay.log.keys());
    for (let i = 0; i < n; i++) await once();
    await sleep(200);
    const after = await counts(edge.pid);
    const perHandshake: Record<string, number> = {};
    for (const [k, v] of Object.entries(after)) {
      const d = (v - (before[k] ?? 0)) / n;
      if (d !== 0) perHandshake[k] = Math.round(d * 100) / 100;
    }
    const one = [...relay.log].find(([p]) => !warm.has(p))?.[1] ?? [];
    return {
      handshakes: n,
      coapEdgeCryptoCallsPerHandshake: perHandshake,
      datagrams: one,
      steps: toSteps(one),
    };
  } finally {
    relay.close();
    await edge.stop(3000);
  }
}
