/**
 * Presence decided in process, for a single instance without Redis. Same semantics as
 * {@link RedisPresenceStore} (see there); every call is synchronous inside, so no answer is
 * ever lost and idempotency tokens are not needed (they are accepted and ignored).
 * Finding lapsed devices scans all entries: fine for the device counts of one instance.
 * It keeps no claim marker and never answers `lapsed`: late news after a claim needs a second
 * pod, whose sweep claims what this one has not flushed; one tracker flushes before it claims.
 */
import type { DeviceKey } from '../types.js';
import type {
  CloseResult,
  LapsedDevice,
  PresenceEntry,
  PresenceStore,
  TouchRequest,
  TouchResult,
} from './types.js';

interface Entry {
  readonly device: DeviceKey;
  sessionId: string;
  /** seenAt of the write that set `sessionId`. */
  at: number;
  lifetime: number;
  deadline: number;
}

function keyOf(d: DeviceKey): string {
  return `${d.productKey}\u0000${d.deviceKey}`;
}

export class MemoryPresenceStore implements PresenceStore {
  readonly #entries = new Map<string, Entry>();
  #seq = 0;
  /** Calls per method (tests compare them with request counts). */
  readonly calls = { touch: 0, close: 0, claimLapsed: 0 };

  onlineCount(): Promise<number> {
    return Promise.resolve(this.#entries.size);
  }

  touch(t: TouchRequest): Promise<TouchResult> {
    this.calls.touch++;
    const key = keyOf(t.device);
    const e = this.#entries.get(key);
    if (e === undefined) {
      this.#entries.set(key, {
        device: { productKey: t.device.productKey, deviceKey: t.device.deviceKey },
        sessionId: t.sessionId,
        at: t.seenAt,
        lifetime: t.lifetime,
        deadline: t.deadline,
      });
      return Promise.resolve({ kind: 'online', seq: ++this.#seq });
    }
    if (e.at <= t.seenAt) {
      e.sessionId = t.sessionId;
      e.at = t.seenAt;
      e.lifetime = t.lifetime;
    }
    e.deadline = Math.max(e.deadline, t.deadline);
    return Promise.resolve({ kind: 'refreshed' });
  }

  close(device: DeviceKey, sessionId: string, _token: string): Promise<CloseResult> {
    this.calls.close++;
    const key = keyOf(device);
    const e = this.#entries.get(key);
    if (e === undefined) return Promise.resolve({ kind: 'absent' });
    if (e.sessionId !== sessionId) return Promise.resolve({ kind: 'not-current' });
    this.#entries.delete(key);
    return Promise.resolve({ kind: 'offline', seq: ++this.#seq, lifetime: e.lifetime });
  }

  claimLapsed(now: number, limit: number, _token: string): Promise<readonly LapsedDevice[]> {
    this.calls.claimLapsed++;
    const due: Entry[] = [];
    for (const e of this.#entries.values()) if (e.deadline <= now) due.push(e);
    due.sort((a, b) => a.deadline - b.deadline);
    const out: LapsedDevice[] = [];
    for (const e of due.slice(0, Math.max(0, limit))) {
      this.#entries.delete(keyOf(e.device));
      out.push({
        device: e.device,
        deadline: e.deadline,
        sessionId: e.sessionId,
        lifetime: e.lifetime,
        seq: ++this.#seq,
      });
    }
    return Promise.resolve(out);
  }

  get(device: DeviceKey): Promise<PresenceEntry | undefined> {
    const e = this.#entries.get(keyOf(device));
    return Promise.resolve(
      e === undefined
        ? undefined
        : { sessionId: e.sessionId, deadline: e.deadline, lifetime: e.lifetime },
    );
  }

  /** Devices online now. */
  get size(): number {
    return this.#entries.size;
  }
}
