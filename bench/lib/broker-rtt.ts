/**
 * The broker round trip of bench/uplink.ts `--half-saturation`: what the MQTT part of an
 * uplink costs in latency without any gateway. One mqtt.js client in the bench process (the
 * same process that times the devices' requests), MQTT 5, TCP_NODELAY, publishes the same
 * measurepoint body QoS 1 on `/sys/{pk}/{dk}/thing/measurepoint/post` for N simulated devices
 * at the same fixed rate per device as the device phases, and times each message from the
 * publish call until both its PUBACK and the platform stand-in's reply (on `..._reply`, same
 * JSON id) arrived — the two waits a gateway's reply flow has, without DTLS, CoAP and UDP.
 */
import { connect, type MqttClient } from 'mqtt';
import { openMultiWindow, type MultiWindow } from './cpu-window.js';
import { Samples, increment, sleep } from './stats.js';
import { measurepointBody } from './uplink-load.js';

export interface BrokerRttLoad {
  readonly url: string;
  /** Product key of the topics (its own: no process sees another's replies). */
  readonly productKey: string;
  readonly devices: number;
  /** Requests per second per device (> 0). */
  readonly ratePerDevice: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Prefix of every JSON id of this phase. */
  readonly tag: string;
  readonly timeoutMs: number;
  readonly cpuPids: Readonly<Record<string, number>>;
}

export interface BrokerRttPhase {
  /** Round trips completed inside the window. */
  readonly messages: number;
  readonly latency: Samples;
  readonly window: MultiWindow;
  /** Whole phase: ids that got their PUBACK (the /sys/# subscriber must have them). */
  readonly acknowledgedIds: Set<string>;
  readonly failures: Record<string, number>;
  readonly lateStarts: number;
}

interface Waiting {
  readonly t0: number;
  acked: boolean;
  replied: boolean;
  done: (() => void) | undefined;
}

async function open(url: string, filter: string): Promise<MqttClient> {
  const client = connect(url, {
    protocolVersion: 5,
    clientId: `bench-rtt-${process.pid}`,
    clean: true,
    reconnectPeriod: 0,
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
  await new Promise<void>((resolve, reject) =>
    client.subscribe(filter, { qos: 1 }, (err) =>
      err !== undefined && err !== null ? reject(err) : resolve(),
    ),
  );
  return client;
}

export async function runBrokerRttPhase(o: BrokerRttLoad): Promise<BrokerRttPhase> {
  const client = await open(o.url, `/sys/${o.productKey}/+/thing/measurepoint/post_reply`);
  const waiting = new Map<string, Waiting>();
  const latency = new Samples();
  const acknowledgedIds = new Set<string>();
  const failures: Record<string, number> = {};
  let running = true;
  let measuring = false;
  let messages = 0;
  let lateStarts = 0;
  let seq = 0;
  const interval = 1000 / o.ratePerDevice;

  const finish = (id: string, w: Waiting): void => {
    if (!w.acked || !w.replied) return;
    waiting.delete(id);
    if (measuring) {
      messages++;
      latency.push(performance.now() - w.t0);
    }
    w.done?.();
  };
  client.on('message', (_topic, payload) => {
    let id: unknown;
    try {
      id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
    } catch {
      return;
    }
    const w = typeof id === 'string' ? waiting.get(id) : undefined;
    if (w === undefined || typeof id !== 'string') return;
    w.replied = true;
    finish(id, w);
  });

  const one = (device: number): Promise<void> => {
    const id = `${o.tag}-${seq++}`;
    const w: Waiting = { t0: performance.now(), acked: false, replied: false, done: undefined };
    waiting.set(id, w);
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        if (waiting.delete(id)) increment(failures, w.acked ? 'REPLY_TIMEOUT' : 'PUBACK_TIMEOUT');
        resolve();
      }, o.timeoutMs);
      w.done = () => {
        clearTimeout(timer);
        resolve();
      };
      client.publish(
        `/sys/${o.productKey}/rtt${device}/thing/measurepoint/post`,
        measurepointBody(id),
        { qos: 1 },
        (err) => {
          if (err !== undefined && err !== null) {
            increment(failures, err.message);
            waiting.delete(id);
            clearTimeout(timer);
            resolve();
            return;
          }
          acknowledgedIds.add(id);
          w.acked = true;
          finish(id, w);
        },
      );
    });
  };

  // the schedule of bench/lib/uplink-load.ts: first requests spread over one interval, one
  // outstanding per device, no catch-up burst after a slow answer
  const loop = async (device: number): Promise<void> => {
    let next = performance.now() + (device / o.devices) * interval;
    while (running) {
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait);
      else if (wait < -1) lateStarts++;
      if (!running) break;
      next = Math.max(next + interval, performance.now());
      await one(device);
    }
  };
  const loops = Array.from({ length: o.devices }, (_, i) => loop(i));
  try {
    await sleep(o.warmupMs);
    const close = openMultiWindow(o.cpuPids);
    measuring = true;
    await sleep(o.durationMs);
    measuring = false;
    const window = close();
    running = false;
    await Promise.all(loops);
    return { messages, latency, window, acknowledgedIds, failures, lateStarts };
  } finally {
    running = false;
    await client.endAsync(true).catch(() => undefined);
  }
}
