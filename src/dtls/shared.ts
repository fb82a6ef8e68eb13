/**
 * Associations shared between pods: what lets any pod continue an association another pod
 * established, with no new handshake (docs/design.md, "Shared associations").
 *
 * A store (Redis in production, {@link MemoryAssociationStore} in one process) keeps, per
 * association, under one handle:
 * - the sealed snapshot (keys encrypted under the association key, see snapshot.ts);
 * - the holder: the one pod instance (`owner`, random per process) allowed to extend the
 *   association's leases; adopting the association elsewhere makes the adopter the holder;
 * - the write counter: the next write sequence number nobody has leased yet;
 * - the receive fence: every record any pod accepted, or may still accept without asking
 *   again, has a sequence number below it.
 *
 * Nonce safety: a pod seals records only with sequence numbers of blocks it leased from the
 * write counter (an atomic increment), so two pods never seal two records with one key and
 * one sequence number (the CCM nonce is epoch ‖ seq). Replay safety: a pod accepts a record
 * only below its receive limit, which it raised in the store before accepting; an adopter
 * starts at the fence, above everything the previous holder could accept. Both hold as long
 * as the store does not lose an acknowledged write (see docs/operations.md, Redis failover).
 */

/** What an adopter gets back: the snapshot and its leases. */
export interface AdoptedState {
  /** The sealed snapshot, as stored by {@link SharedAssociationStore.create}. */
  readonly blob: Buffer;
  /** The fence before adoption: records below it may have been accepted elsewhere. */
  readonly rxFloor: number;
  /** The fence after adoption: the adopter may accept up to (not including) it. */
  readonly rxLimit: number;
  /** First write sequence number of the adopter's block. */
  readonly txStart: number;
}

/**
 * Shared storage of associations, by handle (`c:<cid hex>` for an association with a
 * Connection ID, `a:<address>|<port>` without). Every method resolves when the store
 * acknowledged it, and rejects when the store cannot be reached.
 */
export interface SharedAssociationStore {
  /**
   * Reads an association without changing it: its sealed snapshot and receive fence, or
   * undefined when none is stored. A pod peeks, authenticates the record that asked for the
   * association with the snapshot's keys, and only then adopts: a forged or replayed record
   * never moves an association.
   */
  peek(
    handle: string,
  ): Promise<
    { readonly blob: Buffer; readonly rxFence: number; readonly owner: string } | undefined
  >;
  /**
   * Marks `owner` (a pod instance) alive for `ttlMs`; 0 marks it gone at once (a pod that
   * stops). An adopter that finds an association's fence up asks whether its holder lives.
   */
  heartbeat(owner: string, ttlMs: number): Promise<void>;
  /** Whether `owner` sent a heartbeat that has not expired. */
  alive(owner: string): Promise<boolean>;
  /**
   * Stores a new association held by `owner`: its sealed `blob`, the write counter at
   * `txNext` (the creator holds [0, txNext)), the receive fence at `rxFence`, all expiring
   * after `ttlMs` without a lease. With `identity`, it becomes that identity's live
   * association, and the association stored before for that identity (another handle) is
   * deleted, if that handle still holds that identity's association.
   */
  create(
    handle: string,
    owner: string,
    blob: Buffer,
    txNext: number,
    rxFence: number,
    ttlMs: number,
    identity: string | undefined,
  ): Promise<void>;
  /**
   * Takes the association over for `owner`: the holder becomes `owner`, the receive fence
   * rises by `rxLease`, the write counter by `txLease`; expiry restarts. Undefined when no
   * association is stored under `handle`.
   */
  adopt(
    handle: string,
    owner: string,
    rxLease: number,
    txLease: number,
    ttlMs: number,
  ): Promise<AdoptedState | undefined>;
  /**
   * Leases `count` more write sequence numbers: the first of them, or undefined when `owner`
   * no longer holds the association (adopted elsewhere, retired, expired). Expiry restarts.
   */
  leaseTx(handle: string, owner: string, count: number, ttlMs: number): Promise<number | undefined>;
  /**
   * Sets the receive fence (raised before accepting more, lowered to just above the highest
   * record accepted when the association goes quiet): false when `owner` no longer holds
   * the association. Expiry restarts.
   */
  setRxFence(handle: string, owner: string, fence: number, ttlMs: number): Promise<boolean>;
  /**
   * Restarts the expiry of `identity`'s index entry (written by create) while it still names
   * `handle`: the holder calls it every half TTL while the association is in use, so the
   * index lives as long as the association it names.
   */
  touchIdentity(identity: string, handle: string, ttlMs: number): Promise<void>;
  /** Deletes the association (it ended for good) if `owner` still holds it. */
  remove(handle: string, owner: string): Promise<void>;
}

interface MemoryEntry {
  blob: Buffer;
  owner: string;
  identity: string | undefined;
  tx: number;
  rx: number;
  expires: number;
}

/**
 * The store in one process: for tests and for several servers in one process. Same
 * semantics as the Redis store, expiry checked on access.
 */
export class MemoryAssociationStore implements SharedAssociationStore {
  private readonly entries = new Map<string, MemoryEntry>();
  private readonly identities = new Map<string, string>();
  private readonly owners = new Map<string, number>();
  /** Calls made, by method (tests assert that steady state costs none). */
  readonly calls = {
    peek: 0,
    create: 0,
    adopt: 0,
    leaseTx: 0,
    setRxFence: 0,
    touchIdentity: 0,
    remove: 0,
  };

  constructor(private readonly now: () => number = Date.now) {}

  get size(): number {
    return this.entries.size;
  }

  private live(handle: string): MemoryEntry | undefined {
    const e = this.entries.get(handle);
    if (e !== undefined && e.expires <= this.now()) {
      this.entries.delete(handle);
      return undefined;
    }
    return e;
  }

  peek(handle: string): Promise<{ blob: Buffer; rxFence: number; owner: string } | undefined> {
    this.calls.peek++;
    const e = this.live(handle);
    return Promise.resolve(
      e === undefined ? undefined : { blob: e.blob, rxFence: e.rx, owner: e.owner },
    );
  }

  heartbeat(owner: string, ttlMs: number): Promise<void> {
    if (ttlMs <= 0) this.owners.delete(owner);
    else this.owners.set(owner, this.now() + ttlMs);
    return Promise.resolve();
  }

  alive(owner: string): Promise<boolean> {
    return Promise.resolve((this.owners.get(owner) ?? 0) > this.now());
  }

  create(
    handle: string,
    owner: string,
    blob: Buffer,
    txNext: number,
    rxFence: number,
    ttlMs: number,
    identity: string | undefined,
  ): Promise<void> {
    this.calls.create++;
    this.entries.set(handle, {
      blob,
      owner,
      tx: txNext,
      rx: rxFence,
      identity,
      expires: this.now() + ttlMs,
    });
    if (identity !== undefined) {
      const old = this.identities.get(identity);
      this.identities.set(identity, handle);
      // only while the old handle is still that identity's (an address handle may be reused)
      if (old !== undefined && old !== handle && this.entries.get(old)?.identity === identity)
        this.entries.delete(old);
    }
    return Promise.resolve();
  }

  adopt(
    handle: string,
    owner: string,
    rxLease: number,
    txLease: number,
    ttlMs: number,
  ): Promise<AdoptedState | undefined> {
    this.calls.adopt++;
    const e = this.live(handle);
    if (e === undefined) return Promise.resolve(undefined);
    const out: AdoptedState = {
      blob: e.blob,
      rxFloor: e.rx,
      rxLimit: e.rx + rxLease,
      txStart: e.tx,
    };
    e.owner = owner;
    e.rx += rxLease;
    e.tx += txLease;
    e.expires = this.now() + ttlMs;
    return Promise.resolve(out);
  }

  leaseTx(
    handle: string,
    owner: string,
    count: number,
    ttlMs: number,
  ): Promise<number | undefined> {
    this.calls.leaseTx++;
    const e = this.live(handle);
    if (e?.owner !== owner) return Promise.resolve(undefined);
    const first = e.tx;
    e.tx += count;
    e.expires = this.now() + ttlMs;
    return Promise.resolve(first);
  }

  setRxFence(handle: string, owner: string, fence: number, ttlMs: number): Promise<boolean> {
    this.calls.setRxFence++;
    const e = this.live(handle);
    if (e?.owner !== owner) return Promise.resolve(false);
    e.rx = fence;
    e.expires = this.now() + ttlMs;
    return Promise.resolve(true);
  }

  /** The index has no expiry here (entries do): only counted. */
  touchIdentity(): Promise<void> {
    this.calls.touchIdentity++;
    return Promise.resolve();
  }

  remove(handle: string, owner: string): Promise<void> {
    this.calls.remove++;
    if (this.live(handle)?.owner === owner) this.entries.delete(handle);
    return Promise.resolve();
  }
}

/** Counters of association sharing (all zero without a store). */
export class SharedStats {
  /** Associations taken over from the store, by what matched the record: CID or address. */
  readonly adoptions = { cid: 0, address: 0 };
  /**
   * Store lookups for records of unknown associations, by result: found (adopted), missing
   * (nothing stored), negative (answered by the negative cache, no lookup), limited (too
   * many lookups in flight, record dropped), unproven (stored, but no held record
   * authenticated above the fence: forged or replayed, nothing moved), error (store
   * unreachable or snapshot unreadable).
   */
  readonly lookups = {
    found: 0,
    missing: 0,
    negative: 0,
    limited: 0,
    unproven: 0,
    /** Adopted at a fence that did not come down in time (its holder died busy). */
    fenced: 0,
    error: 0,
  };
  /** Lease operations, by kind: write blocks, receive-fence raises, quiet lowerings. */
  readonly leases = { tx: 0, rx: 0, lower: 0 };
  /** Lease operations refused because another pod holds the association now. */
  leasesLost = 0;
  /** Lease or store operations that failed (store unreachable). */
  leaseErrors = 0;
  /** Records held while a lease was outstanding, and records dropped when too many waited. */
  heldForLease = 0;
  droppedForLease = 0;
  /** Associations stored after their handshake, and stores that failed. */
  stored = 0;
  storeErrors = 0;
  /** Associations dropped from memory that live on in the store (LRU, drain). */
  offloaded = 0;
}
