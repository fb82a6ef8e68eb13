/**
 * The table of per-device sessions (`per-device.ts`): one entry per device that has a session
 * open or opening, what each entry holds, and the counts of sessions by phase and by why
 * they ended. The manager decides when a session opens and ends; this only keeps the books.
 */
import type { DeviceKey, Principal } from '../types.js';
import type { MqttConnection } from './connection.js';
import { BackendUnavailableError } from './errors.js';
import type { ReplyMatcher } from './replies.js';
import type { ReplySubscriptions } from './subscriptions.js';

/** Why an open session ended. `error`: the connection was lost (broker, network, takeover). */
export type SessionCloseReason = 'lifetime' | 'evicted' | 'error' | 'shutdown';

export type SessionPhase = 'connecting' | 'up' | 'closed';

/** One device's session. */
export interface DeviceSession {
  readonly key: string;
  readonly device: DeviceKey;
  phase: SessionPhase;
  ready: Promise<void>;
  conn: MqttConnection | undefined;
  lifetimeMs: number;
  lastActivity: number;
  dtlsSessionId: string;
  /** Requests using the session now (the sweep leaves it alone meanwhile). */
  active: number;
  readonly filters: readonly string[];
  readonly replies: ReplyMatcher;
  readonly subscriptions: ReplySubscriptions<MqttConnection>;
  /** While opening: fails the open at once (closeDevice, close). */
  abort: ((err: Error) => void) | undefined;
  /** Why the session ended, for requests that waited on it. */
  endError: Error | undefined;
}

/** Map key of a device: keys cannot contain `,` (identity rules). */
export function keyOf(d: DeviceKey): string {
  return `${d.productKey},${d.deviceKey}`;
}

/** Throws when the session was ended while opening (closeDevice, close). */
export function checkOpening(s: DeviceSession): void {
  if (s.phase === 'closed') throw s.endError ?? new BackendUnavailableError('BACKEND_UNAVAILABLE');
}

/** The device as logs name it (`pk/dk`). */
export function label(d: DeviceKey): string {
  return `${d.productKey}/${d.deviceKey}`;
}

export class SessionTable {
  private readonly sessions = new Map<string, DeviceSession>();
  /** Open now (connected, command topics subscribed). */
  open = 0;
  /** Opening now. */
  connecting = 0;
  /** Sessions opened since start. */
  opened = 0;
  readonly closedBy: Record<SessionCloseReason, number> = {
    lifetime: 0,
    evicted: 0,
    error: 0,
    shutdown: 0,
  };
  /** Requests that came on a new DTLS session of a device and reused its connection. */
  reusedByNewDtlsSession = 0;

  /** Sessions open or opening. */
  get size(): number {
    return this.sessions.size;
  }

  get(key: string): DeviceSession | undefined {
    return this.sessions.get(key);
  }

  values(): IterableIterator<DeviceSession> {
    return this.sessions.values();
  }

  /** Adds a session that starts opening. */
  add(s: DeviceSession): void {
    this.sessions.set(s.key, s);
    this.connecting++;
  }

  /** The session finished opening. */
  opening(s: DeviceSession, now: number): void {
    s.phase = 'up';
    s.lastActivity = now;
    this.connecting--;
    this.open++;
    this.opened++;
  }

  /**
   * Takes the session out of the table, once; an open one is counted under `reason`.
   * Returns the phase it had (`closed`: it was taken out before).
   */
  remove(s: DeviceSession, reason: SessionCloseReason): SessionPhase {
    const was = s.phase;
    if (was === 'closed') return was;
    s.phase = 'closed';
    if (this.sessions.get(s.key) === s) this.sessions.delete(s.key);
    if (was === 'up') {
      this.open--;
      this.closedBy[reason]++;
    } else {
      this.connecting--;
    }
    return was;
  }

  /** A request of the device: its lifetime starts again (and may have changed). */
  refresh(s: DeviceSession, device: Principal, now: number): void {
    s.lastActivity = now;
    s.lifetimeMs = device.lifetime * 1000;
    if (s.dtlsSessionId !== device.sessionId) {
      s.dtlsSessionId = device.sessionId;
      this.reusedByNewDtlsSession++;
    }
  }

  /** Open sessions without a request in flight whose lifetime passed by `now`. */
  lapsed(now: number): DeviceSession[] {
    const out: DeviceSession[] = [];
    for (const s of this.sessions.values()) {
      if (s.phase === 'up' && s.active === 0 && now - s.lastActivity >= s.lifetimeMs) out.push(s);
    }
    return out;
  }
}
