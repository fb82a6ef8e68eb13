/**
 * The DTLS server's side of shared associations (shared.ts; docs/design.md, "Shared
 * associations"): storing an association after its handshake, adopting one another pod
 * established, and the sequence leases that keep two pods from sealing with the same nonce
 * or accepting the same record.
 *
 * Costs: nothing per datagram in steady state but a comparison or two. The store is asked
 * once per handshake, once per adoption (peek, then adopt), once per `txLease` records sent,
 * and for the receive side about once a second per busy association: each raise of the
 * receive fence covers about a second of the device's own records (its rate since the last
 * raise, at most `rxLease`), so that after a pod crash the device's records the fence still
 * covers are about one second's worth. A device that sends less than once a second gets a
 * fence exactly above each record (one store operation per record, at its low rate). When an
 * association goes quiet its fence comes down to just above the last record, so the next pod
 * to see the device, after a NAT rebinding or a rolling update, starts exactly there.
 */
import { randomBytes } from 'node:crypto';
import type { Clock, TimerHandle } from '../time/clock.js';
import type { DtlsRecord } from './record.js';
import type { SharedAssociationStore, SharedStats } from './shared.js';
import { openSnapshot, type AssociationSnapshot } from './snapshot.js';

/** A record waiting for an adoption or a lease, with where it came from. */
export interface HeldRecord {
  readonly rec: DtlsRecord;
  readonly key: string;
  readonly address: string;
  readonly port: number;
}

/** Whether record `a` comes before record `b` (epoch, then sequence number). */
function older(a: DtlsRecord, b: DtlsRecord): boolean {
  return a.epoch !== b.epoch ? a.epoch < b.epoch : a.seq < b.seq;
}

/** What sharing needs of an association. */
export interface SharedAssociationView {
  readonly open: boolean;
  readonly lastActivity: number;
  readonly lease: Lease | undefined;
  readonly state: {
    acceptBelow: number;
    readonly window: { readonly highest: number };
    readonly writesLeft: number;
    addWriteBlock(start: number, count: number): void;
  };
}

/** Per association: its handle and where its leases stand. */
export class Lease {
  /** The store acknowledged the association (create or adopt): leases may be asked for. */
  ready = false;
  txBusy = false;
  fenceBusy = false;
  /** A raise asked for while another fence operation was in flight. */
  raiseWanted = false;
  /** Received records since the fence last came down. */
  dirty = false;
  /** The fence operation in flight (raise or lowering; never rejects), for a hand-over. */
  fenceOp: Promise<unknown> | undefined;
  /** Records authenticated past the receive limit, waiting for a raise. */
  readonly heldIn: HeldRecord[] = [];
  /** Plaintexts waiting for write sequence numbers. */
  readonly heldOut: { readonly type: number; readonly data: Buffer }[] = [];
  /** Records accepted since the last raise, and when that was: the device's rate. */
  acceptedSinceRaise = 0;
  lastRaiseAt: number;
  /** A raise happened since the handshake or adoption: the rate below means something. */
  measured = false;
  /** Records the last raise covered beyond the highest one (prefetch at half of it). */
  rxLease: number;
  /** When the identity index's expiry is next restarted (touchIdentity). */
  identityDueAt: number;

  constructor(
    readonly handle: string,
    now: number,
    rxLease: number,
    /** The identity index entry naming this association (one live one per identity). */
    readonly identity: string | undefined,
    identityDueAt: number,
  ) {
    this.lastRaiseAt = now;
    this.rxLease = rxLease;
    this.identityDueAt = identityDueAt;
  }
}

/** How often a pod tells the store it lives, and how long that holds. */
const HEARTBEAT_MS = 500;
const HEARTBEAT_TTL_MS = 1_500;
const HEARTBEAT_RETRY_MS = 100;

/** Receive records a new or adopted association may take before its first raise. */
const INITIAL_RX_LEASE = 2;
/** A raise covers this long of the device's records at its recent rate. */
const RX_LEASE_SPAN_MS = 1_000;

export interface SharingHost<A extends SharedAssociationView> {
  readonly stats: { readonly shared: SharedStats };
  /** The server's clock: the fence-lowering pass, the heartbeat and its retry run on it. */
  readonly clock: Clock;
  now(): number;
  /** Found and authenticated: make it an association and hand it the held records. */
  adopted(
    handle: string,
    snapshot: AssociationSnapshot,
    rx: { floor: number; limit: number },
    txStart: number,
    held: readonly HeldRecord[],
    startedAt: number,
  ): void;
  /** Whether `rec` authenticates under the snapshot's keys (it asked for the association). */
  authenticates(snapshot: AssociationSnapshot, rec: DtlsRecord): boolean;
  /** Nothing stored (or unreadable): the held records were for nobody here. */
  unknown(held: readonly HeldRecord[]): void;
  /** The receive limit was raised: deliver the held records again. */
  redeliver(assoc: A, held: readonly HeldRecord[]): void;
  /** Write sequence numbers arrived: seal and send what waited. */
  flushOut(assoc: A): void;
  /** Another pod holds the association now (or it expired): forget it here. */
  lost(assoc: A): void;
  /** A store operation failed (`op`: create, lookup, lease, fence, remove); counted too. */
  storeFailed(op: string, err: unknown): void;
}

export interface SharingOptions {
  readonly store: SharedAssociationStore;
  /** The association key (32 bytes). */
  readonly key: Buffer;
  /** Write sequence numbers leased at a time (default 256). */
  readonly txLease?: number;
  /**
   * Most receive sequence numbers one raise of the fence covers (default 64): a busy device's
   * records in a second, up to this, at most this many refused after a crash. 0: an exact
   * fence for every device (each record waits for its own raise; a crash then refuses none
   * of the device's new records, at one store write per record).
   */
  readonly rxLease?: number;
  /** An association this long without records gets its fence lowered (default 1 s). */
  readonly quietMs?: number;
  /** Expiry in the store, restarted by every lease (default: the idle timeout). */
  readonly ttlMs?: number;
  /** Most adoptions looked up at once (default 256); records beyond are dropped. */
  readonly maxLookups?: number;
  /** How long "not stored" is remembered for a handle (default 5 s). */
  readonly negativeTtlMs?: number;
}

/** Records held per pending adoption, and per association waiting for a lease. */
const MAX_HELD = 8;
/** Handles remembered as not stored. */
const NEGATIVE_MAX = 10_000;

export class Sharing<A extends SharedAssociationView> {
  readonly owner = randomBytes(12).toString('base64url');
  readonly txLease: number;
  readonly rxLease: number;
  /** Records a new or adopted association may take before its first raise. */
  readonly initialRxLease: number;
  readonly ttlMs: number;
  private readonly store: SharedAssociationStore;
  /** The association key: seals snapshots for the store. */
  readonly key: Buffer;
  private readonly quietMs: number;
  private readonly maxLookups: number;
  private readonly negativeTtlMs: number;
  private readonly pending = new Map<string, { held: HeldRecord[]; startedAt: number }>();
  private readonly negative = new Map<string, number>();
  /** Associations that received records since their fence came down. */
  private readonly dirty = new Set<A>();
  private readonly timer: TimerHandle;
  private readonly heart: TimerHandle;
  private closed = false;

  constructor(
    private readonly host: SharingHost<A>,
    o: SharingOptions,
    idleTimeoutMs: number,
  ) {
    this.store = o.store;
    if (o.key.length !== 32) throw new RangeError('association key must be 32 bytes');
    this.key = o.key;
    this.txLease = o.txLease ?? 256;
    this.rxLease = o.rxLease ?? 64;
    this.initialRxLease = Math.min(INITIAL_RX_LEASE, this.rxLease);
    this.quietMs = o.quietMs ?? 1_000;
    this.ttlMs = o.ttlMs ?? idleTimeoutMs;
    this.maxLookups = o.maxLookups ?? 256;
    this.negativeTtlMs = o.negativeTtlMs ?? 5_000;
    const clock = host.clock;
    this.timer = clock.setInterval(() => this.lowerQuiet(), Math.max(50, this.quietMs / 2));
    this.beat();
    this.heart = clock.setInterval(() => this.beat(), HEARTBEAT_MS);
  }

  /** Tells the store this pod lives (adopters wait for a live holder to lower its fences). */
  private beat(): void {
    this.store.heartbeat(this.owner, HEARTBEAT_TTL_MS).catch((err: unknown) => {
      this.host.storeFailed('heartbeat', err);
      // not beating makes this pod look dead to adopters: try again soon (e.g. at start,
      // before the connection is up)
      if (!this.closed) this.host.clock.setTimeout(() => this.beat(), HEARTBEAT_RETRY_MS);
    });
  }

  private get stats(): SharedStats {
    return this.host.stats.shared;
  }

  /** Stops the timers; the pod is gone for adopters at once (no waiting for its fences). */
  close(): void {
    this.closed = true;
    this.host.clock.clearTimeout(this.timer);
    this.host.clock.clearTimeout(this.heart);
    this.store.heartbeat(this.owner, 0).catch(() => undefined);
  }

  /** Stores a new association; until the store has it, no lease is asked for. */
  create(
    assoc: A,
    blob: Buffer,
    identity: string | undefined,
    onStored: (ok: boolean) => void,
  ): void {
    const lease = assoc.lease;
    if (lease === undefined) return;
    this.store
      .create(lease.handle, this.owner, blob, this.txLease, 1 + lease.rxLease, this.ttlMs, identity)
      .then(
        () => {
          this.stats.stored++;
          lease.ready = true;
          onStored(true);
          this.wake(assoc);
        },
        (err: unknown) => {
          this.stats.storeErrors++;
          this.host.storeFailed('create', err);
          onStored(false);
        },
      );
  }

  /**
   * A protected record for an association this pod does not hold: look it up (one lookup
   * per handle at a time, records held meanwhile), unless the handle was just found missing.
   */
  lookup(handle: string, held: HeldRecord): void {
    const p = this.pending.get(handle);
    if (p !== undefined) {
      if (p.held.length < MAX_HELD) {
        p.held.push(held);
        return;
      }
      // full: the record with the lowest sequence number goes, so that replays of old
      // records can never crowd out the device's fresh one (the highest) while we look
      let low = 0;
      for (let i = 1; i < p.held.length; i++) {
        const h = p.held[i];
        const l = p.held[low];
        if (h !== undefined && l !== undefined && older(h.rec, l.rec)) low = i;
      }
      const lowest = p.held[low];
      if (lowest === undefined || !older(lowest.rec, held.rec)) {
        this.host.unknown([held]);
        return;
      }
      p.held[low] = held;
      this.host.unknown([lowest]);
      return;
    }
    const until = this.negative.get(handle);
    if (until !== undefined) {
      if (until > this.host.now()) {
        this.stats.lookups.negative++;
        this.host.unknown([held]);
        return;
      }
      this.negative.delete(handle);
    }
    if (this.pending.size >= this.maxLookups) {
      this.stats.lookups.limited++;
      this.host.unknown([held]);
      return;
    }
    const entry = { held: [held], startedAt: this.host.now() };
    this.pending.set(handle, entry);
    this.peekThenAdopt(handle, entry).catch((err: unknown) => {
      this.stats.lookups.error++;
      this.host.storeFailed('lookup', err);
      this.settle(handle, entry, false);
    });
  }

  /**
   * Peeks, authenticates, adopts. A record that authenticates but lies below the fence may
   * have been accepted by the holder, or be a fresh record the holder's lease still covers
   * (the holder is alive and busy, or died busy). The holder lowers the fence once the
   * association is quiet there (`quietMs`), which it is once the device talks to us: so the
   * lookup looks again for up to twice that long. A holder whose heartbeat expired (a
   * crashed pod) is not waited for.
   */
  private async peekThenAdopt(
    handle: string,
    entry: { held: HeldRecord[]; startedAt: number },
  ): Promise<void> {
    const deadline = this.host.now() + 2 * this.quietMs;
    const genuine = new WeakSet<HeldRecord>();
    let snapshot: AssociationSnapshot | undefined;
    let fence = 0;
    for (;;) {
      const found = await this.store.peek(handle);
      if (found === undefined) {
        this.stats.lookups.missing++;
        this.settle(handle, entry, true);
        return;
      }
      snapshot ??= openSnapshot(found.blob, this.key, handle);
      if (snapshot === undefined) {
        this.stats.lookups.error++;
        this.settle(handle, entry, true);
        return;
      }
      fence = found.rxFence;
      let authentic = false;
      let above = false;
      for (const h of entry.held) {
        if (!genuine.has(h)) {
          if (!this.host.authenticates(snapshot, h.rec)) continue;
          genuine.add(h);
        }
        authentic = true;
        if (h.rec.seq >= found.rxFence) above = true;
      }
      if (above) break;
      if (!authentic) {
        this.stats.lookups.unproven++;
        this.settle(handle, entry, false);
        return;
      }
      // The device (or a replay of it) is here and the fence is up. A holder that died busy
      // will never lower it: take the association over at the fence (the records below it
      // are refused, they may have been accepted there; the device's next ones are not). A
      // live holder lowers it once the device is quiet there; replays never move it away.
      if (!(await this.store.alive(found.owner))) {
        this.stats.lookups.fenced++;
        break;
      }
      if (this.host.now() >= deadline) {
        this.stats.lookups.unproven++;
        this.settle(handle, entry, false);
        return;
      }
      await new Promise<void>((r) => this.host.clock.setTimeout(r, Math.max(10, this.quietMs / 4)));
    }
    // the fence rises just past the held records, plus a little for what follows them
    let top = -1;
    for (const h of entry.held) if (genuine.has(h) && h.rec.seq > top) top = h.rec.seq;
    const rise = Math.max(0, top + 1 - fence) + this.initialRxLease;
    const got = await this.store.adopt(handle, this.owner, rise, this.txLease, this.ttlMs);
    if (this.pending.get(handle) === entry) this.pending.delete(handle);
    if (got === undefined) {
      this.stats.lookups.missing++;
      this.remember(handle);
      this.host.unknown(entry.held);
      return;
    }
    this.stats.lookups.found++;
    const forged = entry.held.filter((h) => !genuine.has(h));
    if (forged.length > 0) this.host.unknown(forged);
    this.host.adopted(
      handle,
      snapshot,
      { floor: got.rxFloor, limit: got.rxLimit },
      got.txStart,
      entry.held.filter((h) => genuine.has(h)),
      entry.startedAt,
    );
  }

  private settle(handle: string, entry: { held: HeldRecord[] }, missing: boolean): void {
    if (this.pending.get(handle) === entry) this.pending.delete(handle);
    if (missing) this.remember(handle);
    this.host.unknown(entry.held);
  }

  private remember(handle: string): void {
    if (this.negative.size >= NEGATIVE_MAX) {
      const oldest = this.negative.keys().next();
      if (oldest.done !== true) this.negative.delete(oldest.value);
    }
    this.negative.set(handle, this.host.now() + this.negativeTtlMs);
  }

  /** The handle is in use here now (a handshake made it): forget that it was missing. */
  known(handle: string): void {
    this.negative.delete(handle);
  }

  /**
   * A record authenticated above the receive limit: hold it and raise the fence; the
   * record is delivered once the store has the new fence.
   */
  fenced(assoc: A, held: HeldRecord): void {
    const lease = assoc.lease;
    if (lease === undefined) return;
    // full (the store has been failing for a while): the oldest waiting record goes, the
    // device's newest (a retransmission of it, likely) waits, and the raise is tried again
    if (lease.heldIn.length >= MAX_HELD) {
      lease.heldIn.shift();
      this.stats.droppedForLease++;
    }
    this.stats.heldForLease++;
    lease.heldIn.push(held);
    this.raise(assoc);
  }

  /** A record was accepted: the association is busy, and its limit may need raising soon. */
  received(assoc: A, seq: number): void {
    const lease = assoc.lease;
    if (lease === undefined) return;
    if (!lease.dirty) this.busy(assoc, lease);
    lease.acceptedSinceRaise++;
    // ask early only with room ahead; an exact fence (a slow device) waits to be reached
    if (lease.rxLease >= 2 && seq >= assoc.state.acceptBelow - 1 - lease.rxLease / 2)
      this.raise(assoc);
  }

  /** Its fence is to come down once it is quiet (a new association: after its handshake). */
  busy(assoc: A, lease: Lease): void {
    lease.dirty = true;
    this.dirty.add(assoc);
  }

  /** Records were sealed: ask for the next block early, so sending rarely waits. */
  sent(assoc: A): void {
    if (assoc.state.writesLeft < this.txLease / 2) this.leaseTx(assoc);
  }

  /** A plaintext found no sequence number: hold it until the next block arrives. */
  holdOut(assoc: A, type: number, data: Buffer): boolean {
    const lease = assoc.lease;
    if (lease === undefined) return false;
    if (lease.heldOut.length >= MAX_HELD) {
      this.stats.droppedForLease++;
      this.leaseTx(assoc); // the store may be back: try again
      return false;
    }
    this.stats.heldForLease++;
    lease.heldOut.push({ type, data });
    this.leaseTx(assoc);
    return true;
  }

  private leaseTx(assoc: A): void {
    const lease = assoc.lease;
    if (lease === undefined || !lease.ready || lease.txBusy) return;
    lease.txBusy = true;
    this.stats.leases.tx++;
    this.store.leaseTx(lease.handle, this.owner, this.txLease, this.ttlMs).then(
      (first) => {
        lease.txBusy = false;
        if (!assoc.open) return;
        if (first === undefined) {
          this.stats.leasesLost++;
          this.host.lost(assoc);
          return;
        }
        assoc.state.addWriteBlock(first, this.txLease);
        this.touchIdentity(lease);
        if (lease.heldOut.length > 0) this.host.flushOut(assoc);
      },
      (err: unknown) => {
        lease.txBusy = false;
        this.stats.leaseErrors++;
        this.host.storeFailed('lease', err);
      },
    );
  }

  /**
   * Raises the receive fence above the highest record seen or held, by about a second of
   * the device's records at its rate since the last raise (none for a device slower than
   * one record a second: the fence then sits just above its last record).
   */
  private raise(assoc: A): void {
    const lease = assoc.lease;
    if (lease === undefined) return;
    if (!lease.ready || lease.fenceBusy) {
      lease.raiseWanted = true;
      return;
    }
    let top = assoc.state.window.highest;
    for (const h of lease.heldIn) if (h.rec.seq > top) top = h.rec.seq;
    const now = this.host.now();
    // the first raise after the handshake or adoption has no rate yet: as many records
    // ahead as came so far (a record right after the handshake is no rate)
    const perSpan = lease.measured
      ? Math.floor(
          (lease.acceptedSinceRaise * RX_LEASE_SPAN_MS) /
            Math.max(RX_LEASE_SPAN_MS / 10, now - lease.lastRaiseAt),
        )
      : lease.acceptedSinceRaise;
    lease.measured = true;
    const ahead = Math.min(this.rxLease, perSpan);
    const fence = top + 1 + ahead;
    if (fence <= assoc.state.acceptBelow && lease.heldIn.length === 0) return;
    lease.fenceBusy = true;
    lease.raiseWanted = false;
    lease.rxLease = ahead;
    lease.acceptedSinceRaise = 0;
    lease.lastRaiseAt = now;
    this.stats.leases.rx++;
    lease.fenceOp = this.store.setRxFence(lease.handle, this.owner, fence, this.ttlMs).then(
      (ok) => {
        lease.fenceBusy = false;
        if (!assoc.open) return;
        if (!ok) {
          this.stats.leasesLost++;
          this.host.lost(assoc);
          return;
        }
        if (fence > assoc.state.acceptBelow) assoc.state.acceptBelow = fence;
        this.touchIdentity(lease);
        this.wake(assoc);
      },
      (err: unknown) => {
        lease.fenceBusy = false;
        this.stats.leaseErrors++;
        this.host.storeFailed('fence', err);
        // the held records wait for the next record's attempt (the device retransmits)
      },
    );
  }

  /**
   * Restarts the identity index's expiry every half TTL while the association is in use
   * (its own expiry restarts with every lease): without it the index lapsed after one TTL
   * and a later handshake of the identity no longer retired this association.
   */
  private touchIdentity(lease: Lease): void {
    if (lease.identity === undefined) return;
    const now = this.host.now();
    if (now < lease.identityDueAt) return;
    lease.identityDueAt = now + this.ttlMs / 2;
    this.store.touchIdentity(lease.identity, lease.handle, this.ttlMs).catch((err: unknown) => {
      lease.identityDueAt = now; // the next lease tries again
      this.host.storeFailed('identity', err);
    });
  }

  /** After the store answered: deliver held records, send held data, do wanted work. */
  private wake(assoc: A): void {
    const lease = assoc.lease;
    if (lease === undefined || !assoc.open) return;
    if (lease.heldIn.length > 0) {
      const held = lease.heldIn.splice(0);
      this.host.redeliver(assoc, held);
    }
    if (lease.heldOut.length > 0) this.leaseTx(assoc);
    if (lease.raiseWanted || lease.heldIn.length > 0) this.raise(assoc);
  }

  /**
   * Lowers the fence of associations quiet for `quietMs` to just above their last record:
   * the next pod to adopt one starts where the device is, and this pod raises it again
   * (one store operation) when the device speaks next.
   */
  private lowerQuiet(): void {
    const quietSince = this.host.now() - this.quietMs;
    for (const a of this.dirty) {
      if (!a.open) {
        this.dirty.delete(a);
        continue;
      }
      const lease = a.lease;
      if (lease === undefined || a.lastActivity > quietSince || lease.fenceBusy) continue;
      this.dirty.delete(a);
      lease.dirty = false;
      void this.lower(a);
    }
  }

  /** Lowers the fence to just above the last accepted record; true when the store has it. */
  private async lower(assoc: A): Promise<boolean> {
    const lease = assoc.lease;
    if (lease === undefined || !lease.ready || lease.heldIn.length > 0) return false;
    const fence = assoc.state.window.highest + 1;
    if (fence >= assoc.state.acceptBelow) return true;
    // down here first: nothing at or above it is accepted while the store catches up
    assoc.state.acceptBelow = fence;
    lease.fenceBusy = true;
    this.stats.leases.lower++;
    const op = this.store.setRxFence(lease.handle, this.owner, fence, this.ttlMs);
    lease.fenceOp = op.catch(() => undefined);
    try {
      const ok = await op;
      if (!ok) this.stats.leasesLost++;
      return ok;
    } catch (err) {
      this.stats.leaseErrors++;
      this.host.storeFailed('fence', err);
      return false;
    } finally {
      lease.fenceBusy = false;
      if (lease.raiseWanted) this.raise(assoc);
    }
  }

  /**
   * Hands associations over before the pod stops (drain): every fence comes down to just
   * above its last record, so whichever pod the device reaches next goes on exactly there.
   * Resolves when the store has them all, or after `timeoutMs`.
   */
  async handOver(assocs: readonly A[], timeoutMs: number): Promise<number> {
    let done = 0;
    const all = Promise.all(
      assocs.map(async (a) => {
        const lease = a.lease;
        if (lease === undefined) return;
        // a fence operation in flight lands first (a raise delivers its held records)
        if (lease.fenceBusy) await lease.fenceOp;
        if (await this.lower(a)) done++;
      }),
    );
    let timer: TimerHandle;
    await Promise.race([
      all,
      new Promise<void>((r) => {
        // held open like the drain it is part of
        timer = this.host.clock.setTimeout(r, timeoutMs, true);
      }),
    ]);
    this.host.clock.clearTimeout(timer);
    return done;
  }

  /** The association ended for good: remove it from the store (if still held here). */
  remove(assoc: A): void {
    const lease = assoc.lease;
    this.dirty.delete(assoc);
    if (lease === undefined || !lease.ready) return;
    this.store.remove(lease.handle, this.owner).catch((err: unknown) => {
      this.stats.leaseErrors++;
      this.host.storeFailed('remove', err);
    });
  }

  /** The association leaves memory but lives on in the store: hand its fence down. */
  offload(assoc: A): void {
    this.dirty.delete(assoc);
    if (assoc.lease?.dirty === true) void this.lower(assoc);
  }
}
