/**
 * Device presence (docs/protocol.md, "Lifetime and presence"), one tracker per pod.
 *
 * - `seen(p)` on every successful request. The first one of a device that is not online makes
 *   it online (event `online`, reason `first-request`); every request moves its deadline to
 *   request time + lifetime. `seen` is synchronous and cheap: the store is written at most
 *   once per `lifetime × refreshFraction` (¼) per device and session, plus one flush shortly
 *   before the stored deadline when requests came in since the last write, so the stored
 *   deadline is the last request + lifetime although most requests write nothing.
 * - `sessionClosed(p, reason)`: `close-notify` and `evicted` make the device offline when the
 *   closing session is its current one (a device that re-handshaked, here or on another pod,
 *   stays online). `idle` and `shutdown` publish nothing (see below).
 * - Every `sweepIntervalMs` each pod claims devices whose deadline passed; the store hands each
 *   one to exactly one claimer, which publishes `offline` (reason `lifetime-lapsed`).
 *
 * Exactly once across pods: the store decides every transition atomically (Redis Lua) and
 * answers it to one caller only, which alone publishes. A store answer lost to a timeout is
 * recovered by retrying with the same idempotency token (the store keeps transition answers
 * for a minute). Delivery to sinks has one retry and may duplicate; events carry `seq` to
 * drop duplicates by.
 *
 * Pod shutdown (`close()`, sessions closed with `shutdown`): **no offline events**. The pod's
 * devices re-handshake with another pod within seconds and stay online there; offline then
 * online again would be noise. Before closing, the tracker flushes the deadlines of its
 * devices, so a device that does not come back goes offline when its lifetime lapses, by
 * another pod's sweeper. `idle` (the DTLS layer dropped a quiet association) is treated the
 * same way: the lifetime decides, not the association table.
 *
 * Store down (Redis outage): `seen` and `sessionClosed` never block or throw; failures are
 * counted and logged once per outage. Writes are retried (same token) from the next request
 * or sweep after `retryMs`, closes wait in a bounded list and are retried each sweep, claims
 * resume when Redis is back. So transitions are delayed, not duplicated. What is lost: closes
 * beyond `maxPendingCloses` (those devices go offline by lifetime instead), the retries of a
 * pod that dies during the outage, and transitions that cancel out while Redis is away (a
 * device that closed and re-handshaked may stay online without an offline/online pair).
 * Devices that lapsed during the outage go offline when it ends, with their true `time`.
 *
 * Test hook: `lifetimeScale` multiplies every lifetime (0.1: a device announcing 30 s counts as
 * 3 s); events still report the announced lifetime.
 */
import { randomBytes } from 'node:crypto';
import { systemClock, type Clock, type TimerHandle } from '../../time/clock.js';
import type { DeviceKey, Principal } from '../types.js';
import {
  PresenceError,
  type LapsedDevice,
  type OfflineReason,
  type PresenceEvent,
  type PresenceLogger,
  type PresenceStore,
  type SessionCloseReason,
} from './types.js';

export interface PresenceTrackerOptions {
  readonly store: PresenceStore;
  /** Sends one event to the sinks (see `presencePublisher`); may reject, is counted then. */
  readonly publish: (event: PresenceEvent) => Promise<void>;
  /** ms between sweeps (setting `presenceSweepIntervalSeconds` × 1000). */
  readonly sweepIntervalMs: number;
  /**
   * Time and timers: deadlines and event times are its wall time (they are shared with other
   * pods through the store); sweeps and the publish and close timeouts are its timers.
   * @default the system clock
   */
  readonly clock?: Clock;
  readonly logger?: PresenceLogger;
  /** Test only: factor applied to every lifetime. @default 1 */
  readonly lifetimeScale?: number;
  /** Part of the lifetime between two deadline writes of a busy device. @default 0.25 */
  readonly refreshFraction?: number;
  /** ms before retrying a failed store write of a device. @default 1000 */
  readonly retryMs?: number;
  /** Devices claimed per store call. @default 500 */
  readonly sweepBatch?: number;
  /** Store calls per sweep to claim lapsed devices. @default 20 */
  readonly maxBatchesPerSweep?: number;
  /** Store writes started per sweep (flushes, retries). @default 10000 */
  readonly maxWritesPerSweep?: number;
  /** Devices with local state; beyond it the least recently written is forgotten. @default 1000000 */
  readonly maxTracked?: number;
  /** Closes waiting for the store; beyond it the oldest is dropped. @default 10000 */
  readonly maxPendingCloses?: number;
  /** Events waiting for `publish`; beyond it new events are dropped. @default 10000 */
  readonly maxQueuedEvents?: number;
  /** `publish` calls in flight. @default 16 */
  readonly maxConcurrentPublishes?: number;
  /** ms after which a `publish` call counts as failed. @default 30000 */
  readonly publishTimeoutMs?: number;
  /** ms `close()` spends at most flushing and publishing. @default 3000 */
  readonly closeTimeoutMs?: number;
}

export interface PresenceStats {
  /** Devices (sessions) this pod keeps local state for. */
  readonly tracked: number;
  /** `seen` calls. */
  readonly seen: number;
  /** `seen` calls that caused no store write (coalesced). */
  readonly coalesced: number;
  /** Deadline writes sent to the store (requests, flushes, retries). */
  readonly storeWrites: number;
  /** Store calls that failed (rejected, timed out, malformed answer). */
  readonly storeErrors: number;
  /** False from a store failure until the next store success. */
  readonly storeAvailable: boolean;
  /** Transitions this pod decided (each also published, unless dropped). */
  readonly online: number;
  readonly offline: { readonly [R in OfflineReason]: number };
  /** `sessionClosed` calls by reason. */
  readonly sessionCloses: { readonly [R in SessionCloseReason]: number };
  /** Closes of a session that was not the device's current one (nothing published). */
  readonly closesNotCurrent: number;
  /** `seen` calls on a session that ended here with close_notify or eviction (ignored). */
  readonly requestsAfterClose: number;
  /** Closes waiting for the store now. */
  readonly pendingCloses: number;
  /** Closes dropped because too many waited (the device goes offline by lifetime instead). */
  readonly closesDropped: number;
  readonly sweeps: number;
  /** Sweeps that claimed nothing because the event queue was too long. */
  readonly claimsDeferred: number;
  /** Local entries forgotten because of `maxTracked`. */
  readonly trackedEvicted: number;
  readonly events: {
    readonly queued: number;
    readonly publishing: number;
    readonly published: number;
    readonly failed: number;
    /** Dropped: queue full, or still queued when `close()` gave up. */
    readonly dropped: number;
  };
}

/** What this pod knows about one device's current session. */
interface Local {
  readonly key: string;
  readonly device: DeviceKey;
  readonly sessionId: string;
  readonly lifetime: number;
  readonly lifetimeMs: number;
  readonly refreshMs: number;
  /** ms: the latest request. */
  lastSeen: number;
  /** ms: `seenAt` of the latest write the store confirmed. */
  confirmedAt: number;
  /** ms: the deadline of that write. */
  confirmedDeadline: number;
  /** The write in flight (it never rejects). */
  inflight: Promise<void> | undefined;
  /** Token of a write not confirmed yet (in flight or failed); its retry reuses it. */
  token: string | undefined;
  /** ms: the request of the first attempt with `token` (the time of an `online`). */
  firstAttempt: number;
  /** ms: a failed write is retried from then on. */
  retryAt: number;
  /** No longer in the map (replaced, closed, lapsed); a write in flight still reports. */
  detached: boolean;
}

interface CloseOp {
  readonly device: DeviceKey;
  readonly sessionId: string;
  readonly lifetime: number;
  readonly reason: 'close-notify' | 'evicted';
  readonly time: number;
  readonly token: string;
  /** The closing session's unconfirmed write, settled before the close. */
  touch: Local | undefined;
}

/** Ended sessions remembered to ignore late requests on them. */
const MAX_ENDED = 10_000;

function keyOf(d: DeviceKey): string {
  return `${d.productKey}\u0000${d.deviceKey}`;
}

/**
 * The key of a principal, made once per principal object: a session's requests all carry the
 * same one, so `seen` builds and hashes no key string per request.
 */
const principalKeys = new WeakMap<Principal, string>();

function keyOfPrincipal(p: Principal): string {
  let key = principalKeys.get(p);
  if (key === undefined) {
    key = keyOf(p);
    principalKeys.set(p, key);
  }
  return key;
}

function describe(err: unknown): string {
  if (err instanceof PresenceError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${err.name} ${code}` : `${err.name}: ${err.message}`;
  }
  return 'unknown error';
}

function positive(name: string, v: number): number {
  if (!(Number.isFinite(v) && v > 0)) {
    throw new PresenceError('PRESENCE_BAD_CONFIG', `presence: ${name} must be a positive number`);
  }
  return v;
}

export class PresenceTracker {
  readonly #store: PresenceStore;
  readonly #publish: (event: PresenceEvent) => Promise<void>;
  readonly #clock: Clock;
  readonly #log: PresenceLogger | undefined;
  readonly #sweepIntervalMs: number;
  readonly #scale: number;
  readonly #refreshFraction: number;
  readonly #retryMs: number;
  readonly #batch: number;
  readonly #maxBatches: number;
  readonly #maxWrites: number;
  readonly #maxTracked: number;
  readonly #maxPendingCloses: number;
  readonly #maxQueued: number;
  readonly #maxConcurrent: number;
  readonly #publishTimeoutMs: number;
  readonly #closeTimeoutMs: number;

  readonly #tokenPrefix = randomBytes(8).toString('hex');
  #tokenCounter = 0;
  readonly #local = new Map<string, Local>();
  /** Sessions ended by close_notify or eviction (bounded, oldest first): late requests on them. */
  readonly #ended = new Set<string>();
  #pendingCloses: CloseOp[] = [];
  #pendingClaim: { readonly token: string; readonly now: number } | undefined;
  /** Store operations in flight. */
  readonly #ops = new Set<Promise<unknown>>();
  readonly #queue: PresenceEvent[] = [];
  readonly #busy = new Set<string>();
  #publishing = 0;
  #drainWaiters: (() => void)[] = [];
  #timer: TimerHandle = undefined;
  #sweeping: Promise<void> | undefined;
  #sweepsCompleted = 0;
  #started = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  #storeFailing = false;
  #lastPublishWarn = -Infinity;

  readonly #s = {
    seen: 0,
    coalesced: 0,
    storeWrites: 0,
    storeErrors: 0,
    online: 0,
    offline: { 'lifetime-lapsed': 0, 'close-notify': 0, evicted: 0 },
    sessionCloses: { 'close-notify': 0, evicted: 0, idle: 0, shutdown: 0 },
    closesNotCurrent: 0,
    requestsAfterClose: 0,
    closesDropped: 0,
    sweeps: 0,
    claimsDeferred: 0,
    trackedEvicted: 0,
    published: 0,
    publishFailed: 0,
    eventsDropped: 0,
  };

  constructor(o: PresenceTrackerOptions) {
    this.#store = o.store;
    this.#publish = o.publish;
    this.#clock = o.clock ?? systemClock;
    this.#log = o.logger;
    this.#sweepIntervalMs = positive('sweepIntervalMs', o.sweepIntervalMs);
    this.#scale = positive('lifetimeScale', o.lifetimeScale ?? 1);
    this.#refreshFraction = positive('refreshFraction', o.refreshFraction ?? 0.25);
    this.#retryMs = positive('retryMs', o.retryMs ?? 1_000);
    const batch = Math.ceil(positive('sweepBatch', o.sweepBatch ?? 500));
    this.#maxBatches = Math.ceil(positive('maxBatchesPerSweep', o.maxBatchesPerSweep ?? 20));
    this.#maxWrites = Math.ceil(positive('maxWritesPerSweep', o.maxWritesPerSweep ?? 10_000));
    this.#maxTracked = Math.ceil(positive('maxTracked', o.maxTracked ?? 1_000_000));
    this.#maxPendingCloses = Math.ceil(positive('maxPendingCloses', o.maxPendingCloses ?? 10_000));
    this.#maxQueued = Math.ceil(positive('maxQueuedEvents', o.maxQueuedEvents ?? 10_000));
    // a claim must fit in the event queue, or nothing would ever be claimed
    this.#batch = Math.min(batch, this.#maxQueued);
    this.#maxConcurrent = Math.ceil(
      positive('maxConcurrentPublishes', o.maxConcurrentPublishes ?? 16),
    );
    this.#publishTimeoutMs = positive('publishTimeoutMs', o.publishTimeoutMs ?? 30_000);
    this.#closeTimeoutMs = positive('closeTimeoutMs', o.closeTimeoutMs ?? 3_000);
    if (this.#refreshFraction > 1) {
      throw new PresenceError('PRESENCE_BAD_CONFIG', 'presence: refreshFraction must be <= 1');
    }
  }

  /** A successful request of `p`'s device on `p`'s session. Never throws, never waits. */
  seen(p: Principal): void {
    if (this.#closed) return;
    this.#s.seen++;
    const now = this.#clock.wallNow();
    const key = keyOfPrincipal(p);
    const e = this.#local.get(key);
    if (e !== undefined && e.sessionId === p.sessionId && e.lifetime === p.lifetime) {
      if (now > e.lastSeen) e.lastSeen = now;
      if (!this.#due(e, now)) {
        this.#s.coalesced++;
        return;
      }
      void this.#write(e);
      return;
    }
    // a new session (or a device this pod does not know): write at once, unless the session
    // has ended here already (a request whose answer was still on its way when it closed)
    if (this.#ended.has(p.sessionId)) {
      this.#s.requestsAfterClose++;
      return;
    }
    if (e !== undefined) this.#forget(e, false);
    const lifetimeMs = p.lifetime * 1_000 * this.#scale;
    const fresh: Local = {
      key,
      device: { productKey: p.productKey, deviceKey: p.deviceKey },
      sessionId: p.sessionId,
      lifetime: p.lifetime,
      lifetimeMs,
      refreshMs: lifetimeMs * this.#refreshFraction,
      lastSeen: now,
      confirmedAt: -Infinity,
      confirmedDeadline: -Infinity,
      inflight: undefined,
      token: undefined,
      firstAttempt: now,
      retryAt: 0,
      detached: false,
    };
    if (this.#local.size >= this.#maxTracked) {
      const oldest = this.#local.values().next();
      if (oldest.done !== true) {
        this.#s.trackedEvicted++;
        this.#forget(oldest.value, true);
      }
    }
    this.#local.set(key, fresh);
    void this.#write(fresh);
  }

  /**
   * `p`'s DTLS session ended. Never throws, never waits. `carriedData` false: no request came
   * in on the session (it only shook hands, on this pod), so no pod's store write names it and
   * it is nobody's current session: counted as the store would answer, with no store call.
   */
  sessionClosed(p: Principal, reason: SessionCloseReason, carriedData = true): void {
    if (this.#closed) return;
    this.#s.sessionCloses[reason]++;
    if (!carriedData) {
      if (reason === 'close-notify' || reason === 'evicted') this.#s.closesNotCurrent++;
      return;
    }
    const e = this.#local.get(keyOf(p));
    const current = e !== undefined && e.sessionId === p.sessionId ? e : undefined;
    if (reason === 'idle' || reason === 'shutdown') {
      // the lifetime decides; make sure the store has this session's latest deadline
      if (current !== undefined) this.#forget(current, true);
      return;
    }
    if (e !== undefined && current === undefined) {
      // this pod saw a newer session of the device: the closing one is not current
      this.#s.closesNotCurrent++;
      return;
    }
    this.#ended.add(p.sessionId);
    if (this.#ended.size > MAX_ENDED) {
      const oldest = this.#ended.values().next();
      if (oldest.done !== true) this.#ended.delete(oldest.value);
    }
    let touch: Local | undefined;
    if (current !== undefined) {
      this.#detach(current);
      if (current.inflight !== undefined || current.token !== undefined) touch = current;
    }
    void this.#runClose({
      device: { productKey: p.productKey, deviceKey: p.deviceKey },
      sessionId: p.sessionId,
      lifetime: p.lifetime,
      reason,
      time: this.#clock.wallNow(),
      token: this.#newToken(),
      touch,
    });
  }

  /** Sweeps every `sweepIntervalMs` until `close()`. */
  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    const next = (): void => {
      this.#timer = this.#clock.setTimeout(() => {
        void this.sweep().then(() => {
          if (!this.#closed) next();
        });
      }, this.#sweepIntervalMs);
    };
    next();
  }

  /**
   * One sweep now (the timer calls it; tests too): retries waiting closes and failed writes,
   * flushes deadlines about to pass, forgets lapsed local state, claims lapsed devices.
   * Never rejects; a sweep already running is joined.
   */
  sweep(): Promise<void> {
    this.#sweeping ??= this.#sweepOnce()
      .catch((err: unknown) => {
        this.#log?.warn({ error: describe(err) }, 'presence sweep failed');
      })
      .finally(() => {
        this.#sweepsCompleted++;
        this.#sweeping = undefined;
      });
    return this.#sweeping;
  }

  /**
   * For observers (tests, diagnostics): sweeps finished so far, failed ones included
   * (`stats().sweeps` counts sweeps started). A sweep that finishes after a moment started
   * after it (or with it) when this number has grown by 2 since then.
   */
  get sweepsCompleted(): number {
    return this.#sweepsCompleted;
  }

  /**
   * For observers: resolves once nothing is in flight at the same moment: no sweep, no store
   * call (write, close, claim) and no event queued or being published. Events a store answer
   * decides are queued before its call counts as done, so after `settled()` every transition
   * decided so far has been handed to `publish` and its call has ended. Closes waiting for
   * the next sweep (store down) are not in flight. Never rejects; may take as long as
   * `publishTimeoutMs` when a sink hangs.
   */
  async settled(): Promise<void> {
    for (;;) {
      if (this.#sweeping !== undefined) await this.#sweeping;
      else if (this.#ops.size > 0) await Promise.allSettled([...this.#ops]);
      else if (this.#publishing > 0 || this.#queue.length > 0) await this.#drained();
      else return;
    }
  }

  /**
   * Stops sweeping; flushes deadlines and waiting closes, and publishes queued events, for
   * at most `closeTimeoutMs`. Publishes no offline events for this pod's devices (see top).
   * Does not close the store or the publisher.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  stats(): PresenceStats {
    const s = this.#s;
    return {
      tracked: this.#local.size,
      seen: s.seen,
      coalesced: s.coalesced,
      storeWrites: s.storeWrites,
      storeErrors: s.storeErrors,
      storeAvailable: !this.#storeFailing,
      online: s.online,
      offline: { ...s.offline },
      sessionCloses: { ...s.sessionCloses },
      closesNotCurrent: s.closesNotCurrent,
      requestsAfterClose: s.requestsAfterClose,
      pendingCloses: this.#pendingCloses.length,
      closesDropped: s.closesDropped,
      sweeps: s.sweeps,
      claimsDeferred: s.claimsDeferred,
      trackedEvicted: s.trackedEvicted,
      events: {
        queued: this.#queue.length,
        publishing: this.#publishing,
        published: s.published,
        failed: s.publishFailed,
        dropped: s.eventsDropped,
      },
    };
  }

  // --- writes ---------------------------------------------------------------------------

  #due(e: Local, now: number): boolean {
    if (e.inflight !== undefined) return false;
    if (e.token !== undefined) return now >= e.retryAt;
    return now - e.confirmedAt >= e.refreshMs;
  }

  #newToken(): string {
    return `${this.#tokenPrefix}-${(this.#tokenCounter++).toString(36)}`;
  }

  /** Writes `e`'s latest request to the store; resolves when settled, never rejects. */
  #write(e: Local): Promise<void> {
    if (e.inflight !== undefined) return e.inflight;
    if (e.token === undefined) {
      e.token = this.#newToken();
      e.firstAttempt = e.lastSeen;
    }
    const token = e.token;
    const seenAt = e.lastSeen;
    const deadline = seenAt + e.lifetimeMs;
    if (!e.detached) {
      // keep the map ordered by last write: the first entry is the one to forget at the bound
      this.#local.delete(e.key);
      this.#local.set(e.key, e);
    }
    this.#s.storeWrites++;
    const p = this.#call(() =>
      this.#store.touch({
        device: e.device,
        sessionId: e.sessionId,
        lifetime: e.lifetime,
        seenAt,
        deadline,
        token,
      }),
    ).then(
      (r) => {
        this.#storeOk();
        e.inflight = undefined;
        e.token = undefined;
        if (seenAt > e.confirmedAt) e.confirmedAt = seenAt;
        if (deadline > e.confirmedDeadline) e.confirmedDeadline = deadline;
        if (r.kind === 'online') {
          this.#s.online++;
          this.#emit({
            productKey: e.device.productKey,
            deviceKey: e.device.deviceKey,
            status: 'online',
            reason: 'first-request',
            time: new Date(e.firstAttempt).toISOString(),
            lifetime: e.lifetime,
            sessionId: e.sessionId,
            seq: r.seq,
          });
        }
      },
      (err: unknown) => {
        e.inflight = undefined;
        e.retryAt = this.#clock.wallNow() + this.#retryMs;
        this.#storeFailed('touch', err);
      },
    );
    e.inflight = p;
    return this.#track(p);
  }

  #detach(e: Local): void {
    if (e.detached) return;
    e.detached = true;
    if (this.#local.get(e.key) === e) this.#local.delete(e.key);
  }

  /**
   * Drops local state. A write that failed is retried once more (it may have made the device
   * online); with `flush`, requests not yet written are written.
   */
  #forget(e: Local, flush: boolean): void {
    this.#detach(e);
    if (e.inflight !== undefined) return;
    if (e.token !== undefined || (flush && e.lastSeen > e.confirmedAt)) void this.#write(e);
  }

  // --- closes ---------------------------------------------------------------------------

  #runClose(op: CloseOp): Promise<void> {
    return this.#track(
      this.#closeOnce(op).then(
        (done) => {
          if (!done) this.#deferClose(op);
        },
        (err: unknown) => {
          this.#storeFailed('close', err);
          this.#deferClose(op);
        },
      ),
    );
  }

  /** False when the session's own write could not be settled first (already counted). */
  async #closeOnce(op: CloseOp): Promise<boolean> {
    const t = op.touch;
    if (t !== undefined) {
      // the write that may have made the device online is settled first, so its online
      // event is published (once) before the offline
      if (t.inflight !== undefined) await t.inflight;
      if (t.token !== undefined) await this.#write(t);
      if (t.token !== undefined) return false;
      op.touch = undefined;
    }
    const r = await this.#call(() => this.#store.close(op.device, op.sessionId, op.token));
    this.#storeOk();
    if (r.kind !== 'offline') {
      this.#s.closesNotCurrent++;
      return true;
    }
    this.#s.offline[op.reason]++;
    this.#emit({
      productKey: op.device.productKey,
      deviceKey: op.device.deviceKey,
      status: 'offline',
      reason: op.reason,
      time: new Date(op.time).toISOString(),
      lifetime: op.lifetime,
      sessionId: op.sessionId,
      seq: r.seq,
    });
    return true;
  }

  #deferClose(op: CloseOp): void {
    if (this.#pendingCloses.length >= this.#maxPendingCloses) {
      this.#pendingCloses.shift();
      this.#s.closesDropped++;
    }
    this.#pendingCloses.push(op);
  }

  async #retryCloses(): Promise<void> {
    if (this.#pendingCloses.length === 0) return;
    const ops = this.#pendingCloses;
    this.#pendingCloses = [];
    await Promise.all(ops.map((op) => this.#runClose(op)));
  }

  // --- sweeps ---------------------------------------------------------------------------

  async #sweepOnce(): Promise<void> {
    const now = this.#clock.wallNow();
    this.#s.sweeps++;
    await this.#retryCloses();
    // flush before claiming, so this pod's own sweeper never claims a device it has news of
    const lead = 2 * this.#sweepIntervalMs;
    const writes: Promise<void>[] = [];
    // #write moves entries to the end: they are visited again, in flight, and skipped
    for (const e of this.#local.values()) {
      if (e.inflight !== undefined) continue;
      if (e.token !== undefined) {
        if (now >= e.retryAt && writes.length < this.#maxWrites) writes.push(this.#write(e));
      } else if (e.lastSeen > e.confirmedAt) {
        if (e.confirmedDeadline - now <= lead && writes.length < this.#maxWrites) {
          writes.push(this.#write(e));
        }
      } else if (e.lastSeen + e.lifetimeMs < now) {
        // lapsed as far as this pod knows (a sweeper claims it, if no other pod saw it)
        this.#detach(e);
      }
    }
    await Promise.all(writes);
    await this.#claim(now);
  }

  async #claim(now: number): Promise<void> {
    for (let i = 0; i < this.#maxBatches; i++) {
      if (this.#queue.length + this.#batch > this.#maxQueued) {
        // claimed devices must be published: claim only what the queue can take
        this.#s.claimsDeferred++;
        return;
      }
      const claim = this.#pendingClaim ?? { token: this.#newToken(), now };
      this.#pendingClaim = claim;
      let lapsed: readonly LapsedDevice[];
      try {
        lapsed = await this.#track(
          this.#call(() => this.#store.claimLapsed(claim.now, this.#batch, claim.token)),
        );
      } catch (err: unknown) {
        // retried with the same token next sweep: a claim applied but unanswered is not lost
        this.#storeFailed('claim', err);
        return;
      }
      this.#pendingClaim = undefined;
      this.#storeOk();
      for (const l of lapsed) {
        const e = this.#local.get(keyOf(l.device));
        if (e !== undefined) this.#detach(e);
        this.#s.offline['lifetime-lapsed']++;
        this.#emit({
          productKey: l.device.productKey,
          deviceKey: l.device.deviceKey,
          status: 'offline',
          reason: 'lifetime-lapsed',
          time: new Date(l.deadline).toISOString(),
          lifetime: l.lifetime,
          ...(l.sessionId === undefined ? {} : { sessionId: l.sessionId }),
          seq: l.seq,
        });
      }
      // a retried claim used an older `now`: go on with a fresh one
      if (lapsed.length < this.#batch && claim.now === now) return;
    }
  }

  // --- events ---------------------------------------------------------------------------

  #emit(ev: PresenceEvent): void {
    if (this.#queue.length >= this.#maxQueued) {
      this.#s.eventsDropped++;
      this.#warnPublish('presence event queue full; event dropped', ev, undefined);
      return;
    }
    this.#queue.push(ev);
    this.#pump();
  }

  /** Starts publishes up to the bound, one at a time per device (so its events stay in order). */
  #pump(): void {
    while (this.#publishing < this.#maxConcurrent && this.#queue.length > 0) {
      const i = this.#queue.findIndex((ev) => !this.#busy.has(keyOf(ev)));
      if (i < 0) break;
      const [ev] = this.#queue.splice(i, 1);
      if (ev === undefined) break;
      const k = keyOf(ev);
      this.#busy.add(k);
      this.#publishing++;
      void this.#publishOne(ev).then(() => {
        this.#busy.delete(k);
        this.#publishing--;
        this.#pump();
      });
    }
    if (this.#publishing === 0 && this.#queue.length === 0 && this.#drainWaiters.length > 0) {
      const waiters = this.#drainWaiters;
      this.#drainWaiters = [];
      for (const w of waiters) w();
    }
  }

  async #publishOne(ev: PresenceEvent): Promise<void> {
    let timer: TimerHandle;
    const timeout = new Promise<never>((_, reject) => {
      timer = this.#clock.setTimeout(
        () =>
          reject(
            new PresenceError(
              'PRESENCE_PUBLISH_TIMEOUT',
              `publish took longer than ${this.#publishTimeoutMs} ms`,
            ),
          ),
        this.#publishTimeoutMs,
        true,
      );
    });
    try {
      await Promise.race([this.#call(() => this.#publish(ev)), timeout]);
      this.#s.published++;
    } catch (err: unknown) {
      this.#s.publishFailed++;
      this.#warnPublish('presence event not published', ev, err);
    } finally {
      this.#clock.clearTimeout(timer);
    }
  }

  #warnPublish(msg: string, ev: PresenceEvent, err: unknown): void {
    const t = this.#clock.now();
    if (t - this.#lastPublishWarn < 10_000) return;
    this.#lastPublishWarn = t;
    this.#log?.warn(
      {
        productKey: ev.productKey,
        deviceKey: ev.deviceKey,
        status: ev.status,
        ...(err === undefined ? {} : { error: describe(err) }),
        failed: this.#s.publishFailed,
        dropped: this.#s.eventsDropped,
      },
      msg,
    );
  }

  #drained(): Promise<void> {
    if (this.#publishing === 0 && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  // --- plumbing -------------------------------------------------------------------------

  /** Runs a store or publish call; a synchronous throw becomes a rejection. */
  #call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return fn();
    } catch (err: unknown) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#ops.add(p);
    const done = (): void => {
      this.#ops.delete(p);
    };
    p.then(done, done);
    return p;
  }

  #storeFailed(op: string, err: unknown): void {
    this.#s.storeErrors++;
    if (this.#storeFailing) return;
    this.#storeFailing = true;
    this.#log?.warn(
      { op, error: describe(err) },
      'presence store unavailable: transitions wait until it is back',
    );
  }

  #storeOk(): void {
    if (!this.#storeFailing) return;
    this.#storeFailing = false;
    this.#log?.info({ storeErrors: this.#s.storeErrors }, 'presence store available again');
  }

  async #shutdown(): Promise<void> {
    this.#closed = true;
    this.#clock.clearTimeout(this.#timer);
    const work = (async () => {
      if (this.#sweeping !== undefined) await this.#sweeping;
      await this.#retryCloses();
      const writes: Promise<void>[] = [];
      for (const e of this.#local.values()) {
        if (e.inflight === undefined && (e.token !== undefined || e.lastSeen > e.confirmedAt)) {
          writes.push(this.#write(e));
        }
      }
      await Promise.all(writes);
      await Promise.allSettled([...this.#ops]);
      await this.#drained();
    })().catch((err: unknown) => {
      this.#log?.warn({ error: describe(err) }, 'presence: close failed');
    });
    let timer: TimerHandle;
    const gaveUp = await Promise.race([
      work.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = this.#clock.setTimeout(() => resolve(true), this.#closeTimeoutMs, true);
      }),
    ]);
    this.#clock.clearTimeout(timer);
    if (gaveUp) {
      this.#s.eventsDropped += this.#queue.length;
      this.#log?.warn(
        { queued: this.#queue.length, pendingCloses: this.#pendingCloses.length },
        'presence: close timed out; queued events dropped',
      );
      this.#queue.length = 0;
    }
    this.#local.clear();
  }
}
