/**
 * A UDP relay that plays the load balancer in front of several gateways ("pods"): devices
 * talk to its front socket; each device flow leaves from a back socket of its own toward the
 * current target, as a Kubernetes Service's DNAT keeps one source address per flow, and
 * answers come back the same way. Switching `target` moves every flow to another pod (a pod
 * lost, a rolling update). Every datagram a device sent is kept in `captured` for replays.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';

async function udp(): Promise<Socket> {
  const s = createSocket('udp4');
  s.on('error', () => undefined); // ICMP unreachable from a killed pod is not the relay's concern
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

export class Relay {
  readonly captured: Buffer[] = [];
  private readonly flows = new Map<string, Socket>();
  private constructor(
    private readonly front: Socket,
    /** The port of the pod every flow goes to. */
    public target: number,
  ) {}

  static async start(target: number): Promise<Relay> {
    const r = new Relay(await udp(), target);
    r.front.on('message', (msg, rinfo) => void r.forward(msg, rinfo.address, rinfo.port));
    return r;
  }

  get port(): number {
    return this.front.address().port;
  }

  private async forward(msg: Buffer, address: string, port: number): Promise<void> {
    const k = `${address}|${port}`;
    let back = this.flows.get(k);
    if (back === undefined) {
      back = await udp();
      this.flows.set(k, back);
      back.on('message', (m) => this.front.send(m, port, address));
    }
    this.captured.push(Buffer.from(msg));
    back.send(msg, this.target, '127.0.0.1');
  }

  /** Sends `msg` to the target from the back socket of the first device flow. */
  inject(msg: Buffer): void {
    const back = this.flows.values().next().value;
    assert.ok(back !== undefined, 'no device flow yet');
    back.send(msg, this.target, '127.0.0.1');
  }

  async close(): Promise<void> {
    for (const s of [this.front, ...this.flows.values()])
      await new Promise<void>((done) => s.close(() => done()));
  }
}
