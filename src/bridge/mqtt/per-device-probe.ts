/**
 * Whether the broker of the per-device sessions is reachable at all (their readiness,
 * `per-device.ts`): the last evidence, from a session's CONNACK (even a refusal), a failed
 * connect, or a TCP connect to the broker's port made while no session is open. The probe
 * sends no MQTT login: it holds no credentials.
 */
import { createConnection } from 'node:net';
import type { Clock, TimerHandle } from '../../time/clock.js';
import type { BackendState } from './stats.js';
import { UpWaiters } from './up-waiters.js';

export interface BrokerProbeOptions {
  /** The broker URL; only its host and port are used. */
  readonly url: string;
  /** The broker URL without user info, for logs. */
  readonly urlForLogs: string;
  /** Ms a probe's TCP connect may take (on `clock`). */
  readonly connectTimeoutMs: number;
  /** The probe interval's, the connect timeout's and {@link BrokerProbe.wait}'s timers. */
  readonly clock: Clock;
  readonly warn: (obj: Record<string, unknown>, msg: string) => void;
}

export class BrokerProbe {
  /** Last evidence about the broker: answered (true), unreachable (false), none yet. */
  private reachable: boolean | undefined;
  private unreachableLogged = false;
  private probing = false;
  private stopped = false;
  private timer: TimerHandle = undefined;
  private readonly upWaiters: UpWaiters;

  constructor(private readonly o: BrokerProbeOptions) {
    this.upWaiters = new UpWaiters(o.clock);
  }

  /** Probes now and then every `intervalMs` while `idle()` (no session open). */
  start(intervalMs: number, idle: () => boolean): void {
    if (this.stopped || this.timer !== undefined) return;
    void this.probe();
    this.timer = this.o.clock.setInterval(() => {
      if (idle()) void this.probe();
    }, intervalMs);
  }

  /** Whether {@link start} is probing. */
  get started(): boolean {
    return this.timer !== undefined;
  }

  /** Stops probing; waiters get false. */
  stop(): void {
    this.stopped = true;
    this.o.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.upWaiters.settle(false);
  }

  /** Resolves true once the broker is known reachable, false after `timeoutMs`. */
  wait(timeoutMs: number): Promise<boolean> {
    return this.upWaiters.wait(timeoutMs);
  }

  /** `connected` when sessions are open or the broker last answered; see the manager. */
  state(openSessions: number): BackendState {
    if (this.stopped) return 'down';
    if (openSessions > 0) return 'connected';
    if (this.reachable === undefined) return 'connecting';
    return this.reachable ? 'connected' : 'down';
  }

  /** The broker answered (a CONNACK, a refusal too, or the port). */
  answered(): void {
    this.reachable = true;
    this.unreachableLogged = false;
    this.upWaiters.settle(true);
  }

  /** A connect found no broker (logged once until it answers again). */
  unreachable(err: Error | undefined): void {
    this.reachable = false;
    if (this.unreachableLogged) return;
    this.unreachableLogged = true;
    this.o.warn(
      { url: this.o.urlForLogs, err: err?.message ?? 'no CONNACK in time' },
      'mqtt broker unreachable for device sessions',
    );
  }

  /** A TCP connect to the broker's port: reachable or not. */
  async probe(): Promise<void> {
    if (this.probing || this.stopped) return;
    const target = probeTarget(this.o.url);
    if (target === undefined) return;
    this.probing = true;
    const clock = this.o.clock;
    try {
      const ok = await new Promise<boolean>((resolve) => {
        const sock = createConnection({ host: target.host, port: target.port });
        const timer = clock.setTimeout(
          () => {
            sock.destroy();
            resolve(false);
          },
          this.o.connectTimeoutMs,
          true,
        );
        sock.once('connect', () => {
          clock.clearTimeout(timer);
          sock.destroy();
          resolve(true);
        });
        sock.once('error', () => {
          clock.clearTimeout(timer);
          resolve(false);
        });
      });
      if (this.stopped) return;
      if (ok) this.answered();
      else this.reachable = false;
    } finally {
      this.probing = false;
    }
  }
}

/** Host and port of the broker URL for the TCP probe; undefined when it cannot be read. */
export function probeTarget(url: string): { host: string; port: number } | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  const defaults: Record<string, number> = {
    'mqtt:': 1883,
    'tcp:': 1883,
    'mqtts:': 8883,
    'ssl:': 8883,
    'tls:': 8883,
    'ws:': 80,
    'wss:': 443,
  };
  const port = u.port === '' ? defaults[u.protocol] : Number(u.port);
  if (port === undefined || !Number.isInteger(port) || u.hostname === '') return undefined;
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  return { host, port };
}
