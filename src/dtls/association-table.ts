/**
 * The established associations, by peer address and port, with admission rules that keep one
 * credential from crowding out everybody else:
 *
 * - One live association per admission key (a peer identity). When a handshake with that key
 *   completes, the older association with the key is retired, whatever its address: a device
 *   that moved (NAT rebinding, new radio bearer) or a clone holds one slot, not one per port.
 * - At most `maxPerGroup` associations per group (associations authenticated with one shared
 *   key): a new one retires the group's oldest, so a leaked shared key churns its own group.
 * - When the table is full, the victim comes from the first class that has one: restricted
 *   associations (cheap to lose, e.g. activation-only sessions), then idle ones (never carried
 *   application data, past a grace period), then the least recently active of the rest. A
 *   restricted newcomer never displaces an association of the last class: it is refused.
 *
 * What a key, a group and "restricted" mean is the layer above's business (an
 * {@link AdmissionPolicy}); this table applies the rules to any values.
 */

/** How an association counts for admission; decided by the layer above from its identity. */
export interface Admission {
  /** Associations with the same key are one peer: at most one of them is live. */
  readonly key?: string | undefined;
  /** Associations with the same group are capped together (`maxPerGroup`). */
  readonly group?: string | undefined;
  /** Cheap to lose: evicted first, and never admitted at the cost of an active association. */
  readonly restricted: boolean;
}

export type AdmissionPolicy<P> = (identity: string, principal: P) => Admission;

/** Why an association had to go to make room; a metric label. */
export type EvictionClass = 'group-cap' | 'restricted' | 'idle' | 'active';

export const EVICTION_CLASSES: readonly EvictionClass[] = [
  'group-cap',
  'restricted',
  'idle',
  'active',
];

/** The plan of a newcomer for whom nobody leaves (frozen: shared by every such plan). */
const NOBODY_LEAVES: AdmissionPlan<never> = Object.freeze({
  replaced: undefined,
  superseded: undefined,
  evicted: Object.freeze([]),
});

/** Every association alone, unrestricted: plain LRU (for servers without a policy). */
export const NO_ADMISSION: Admission = { restricted: false };

type Lane = 'restricted' | 'idle' | 'active';

/**
 * The table's key of a peer address and port. {@link AssociationTable.at} finds an
 * association by address and port without building it, for peers added under this key.
 */
export function peerKey(address: string, port: number): string {
  return `${address}|${port}`;
}

interface Slot<A> {
  readonly assoc: A;
  peer: string;
  /** The address and port of `peer` when it is a {@link peerKey}; port -1 otherwise. */
  address: string;
  port: number;
  readonly admission: Admission;
  lane: Lane;
  /** When the slot last moved to the end of its lane (at most once per `touchMs`). */
  touchedAt: number;
}

/** What admitting a new association costs: the associations that go, and why. */
export interface AdmissionPlan<A> {
  /** The association of the same peer address (a re-handshake). */
  readonly replaced: A | undefined;
  /** The older association of the same admission key on another address. */
  readonly superseded: A | undefined;
  /** Associations evicted to respect the group cap or the table size. */
  readonly evicted: readonly { readonly assoc: A; readonly cls: EvictionClass }[];
}

export interface AssociationTableOptions {
  readonly maxSize: number;
  readonly maxPerGroup: number;
  /** An association without application data counts as idle only after this long. */
  readonly idleGraceMs: number;
  /** Lanes are reordered at most this often per association (a Map delete+set each). */
  readonly touchMs: number;
}

export class AssociationTable<A> {
  private readonly byPeer = new Map<string, Slot<A>>();
  /**
   * The slots of {@link peerKey} peers by port: the one slot of a port, or a map of a port's
   * slots by address when several addresses share it (devices on a private APN may all use
   * one source port). The datagram path finds its association from the socket's address and
   * port with a small-integer lookup and a string comparison, instead of building and hashing
   * a key string per datagram.
   */
  private readonly byPort = new Map<number, Slot<A> | Map<string, Slot<A>>>();
  private readonly byKey = new Map<string, Slot<A>>();
  /** Members of each group, oldest first (establishment order). */
  private readonly groups = new Map<string, Set<Slot<A>>>();
  /** Each lane in least-recently-touched order. */
  private readonly lanes: Record<Lane, Map<string, Slot<A>>> = {
    restricted: new Map(),
    idle: new Map(),
    active: new Map(),
  };

  constructor(private readonly opts: AssociationTableOptions) {}

  get size(): number {
    return this.byPeer.size;
  }

  get(peer: string): A | undefined {
    return this.byPeer.get(peer)?.assoc;
  }

  /** The association of the peer at `address` and `port` (added under their {@link peerKey}). */
  at(address: string, port: number): A | undefined {
    const e = this.byPort.get(port);
    if (e === undefined) return undefined;
    if (e instanceof Map) return e.get(address)?.assoc;
    return e.address === address ? e.assoc : undefined;
  }

  has(peer: string): boolean {
    return this.byPeer.has(peer);
  }

  *values(): IterableIterator<A> {
    for (const s of this.byPeer.values()) yield s.assoc;
  }

  /**
   * Records activity of the association with `peer`: `carriedData` moves an idle association
   * into the active lane; otherwise it moves to the end of its lane now and then.
   */
  touch(peer: string, now: number, carriedData: boolean): void {
    const s = this.byPeer.get(peer);
    if (s === undefined) return;
    if (carriedData && s.lane === 'idle') {
      this.lanes.idle.delete(peer);
      s.lane = 'active';
    } else if (now - s.touchedAt >= this.opts.touchMs) {
      this.lanes[s.lane].delete(peer);
    } else return;
    this.lanes[s.lane].set(peer, s);
    s.touchedAt = now;
  }

  /**
   * What it takes to admit a new association for `peer` with `admission`, or undefined when it
   * is refused (a restricted newcomer and a full table of active associations). Changes
   * nothing: {@link add} applies the same plan.
   */
  plan(peer: string, admission: Admission, now: number): AdmissionPlan<A> | undefined {
    const replaced = this.byPeer.get(peer);
    if (
      replaced === undefined &&
      admission.group === undefined &&
      (admission.key === undefined || !this.byKey.has(admission.key)) &&
      this.byPeer.size < this.opts.maxSize
    ) {
      // the usual newcomer (a new peer, its key unused, no group, room left): nobody leaves,
      // and the plan is the shared empty one (no set, array or object per handshake)
      return NOBODY_LEAVES;
    }
    const leaving = new Set<Slot<A>>();
    if (replaced !== undefined) leaving.add(replaced);
    let superseded: Slot<A> | undefined;
    if (admission.key !== undefined) {
      superseded = this.byKey.get(admission.key);
      if (superseded !== undefined && leaving.has(superseded)) superseded = undefined;
      if (superseded !== undefined) leaving.add(superseded);
    }
    const evicted: { assoc: A; cls: EvictionClass }[] = [];
    if (admission.group !== undefined) {
      const members = this.groups.get(admission.group);
      if (members !== undefined) {
        let left = members.size;
        for (const s of members.values()) if (leaving.has(s)) left--;
        for (const s of members.values()) {
          if (left < this.opts.maxPerGroup) break;
          if (leaving.has(s)) continue;
          leaving.add(s);
          evicted.push({ assoc: s.assoc, cls: 'group-cap' });
          left--;
        }
      }
    }
    if (this.byPeer.size - leaving.size >= this.opts.maxSize) {
      const victim = this.victim(leaving, admission.restricted, now);
      if (victim === undefined) return undefined;
      evicted.push({ assoc: victim.slot.assoc, cls: victim.cls });
    }
    return { replaced: replaced?.assoc, superseded: superseded?.assoc, evicted };
  }

  /**
   * Who goes when the table is full: the least recently active restricted association, else
   * the stalest idle one past its grace, else (not for a restricted newcomer) whichever of
   * the active lane and the idle lane was touched least recently.
   */
  private victim(
    skip: ReadonlySet<Slot<A>>,
    restricted: boolean,
    now: number,
  ): { slot: Slot<A>; cls: EvictionClass } | undefined {
    const r = firstNotIn(this.lanes.restricted, skip);
    if (r !== undefined) return { slot: r, cls: 'restricted' };
    const i = firstNotIn(this.lanes.idle, skip);
    if (i !== undefined && now - i.touchedAt >= this.opts.idleGraceMs) {
      return { slot: i, cls: 'idle' };
    }
    if (restricted) return undefined;
    const a = firstNotIn(this.lanes.active, skip);
    if (a !== undefined && (i === undefined || a.touchedAt <= i.touchedAt)) {
      return { slot: a, cls: 'active' };
    }
    return i !== undefined ? { slot: i, cls: 'idle' } : undefined;
  }

  /** Adds an association for `peer`; the caller removed the plan's associations first. */
  add(peer: string, assoc: A, admission: Admission, now: number): void {
    const s: Slot<A> = {
      assoc,
      peer,
      address: '',
      port: -1,
      admission,
      lane: admission.restricted ? 'restricted' : 'idle',
      touchedAt: now,
    };
    this.byPeer.set(peer, s);
    this.index(s);
    this.lanes[s.lane].set(peer, s);
    if (admission.key !== undefined) this.byKey.set(admission.key, s);
    if (admission.group !== undefined) {
      let members = this.groups.get(admission.group);
      if (members === undefined) {
        members = new Set();
        this.groups.set(admission.group, members);
      }
      members.add(s);
    }
  }

  /** Removes `assoc` if it is the one held for `peer`. */
  delete(peer: string, assoc: A): boolean {
    const s = this.byPeer.get(peer);
    if (s === undefined || s.assoc !== assoc) return false;
    this.byPeer.delete(peer);
    this.unindex(s);
    this.lanes[s.lane].delete(peer);
    const { key, group } = s.admission;
    if (key !== undefined && this.byKey.get(key) === s) this.byKey.delete(key);
    if (group !== undefined) {
      const members = this.groups.get(group);
      members?.delete(s);
      if (members?.size === 0) this.groups.delete(group);
    }
    return true;
  }

  /**
   * Moves the association held for `from` to the peer key `to` (its peer address changed,
   * RFC 9146 §6), as activity now; the old key is gone. False when `from` does not hold
   * `assoc` or `to` is taken (the caller frees it first).
   */
  rekey(from: string, to: string, assoc: A, now: number): boolean {
    const s = this.byPeer.get(from);
    if (s === undefined || s.assoc !== assoc || this.byPeer.has(to)) return false;
    this.byPeer.delete(from);
    this.byPeer.set(to, s);
    this.unindex(s);
    this.lanes[s.lane].delete(from);
    this.lanes[s.lane].set(to, s);
    s.peer = to;
    s.touchedAt = now;
    this.index(s);
    return true;
  }

  /** Adds the slot to the port index when its peer is a {@link peerKey}. */
  private index(s: Slot<A>): void {
    const bar = s.peer.lastIndexOf('|');
    const tail = s.peer.slice(bar + 1);
    const port = Number(tail);
    if (bar < 0 || String(port) !== tail || !(port >= 0 && port <= 0xffff)) {
      s.port = -1;
      return;
    }
    s.address = s.peer.slice(0, bar);
    s.port = port;
    const e = this.byPort.get(port);
    if (e === undefined) this.byPort.set(port, s);
    else if (e instanceof Map) e.set(s.address, s);
    else
      this.byPort.set(
        port,
        new Map([
          [e.address, e],
          [s.address, s],
        ]),
      );
  }

  private unindex(s: Slot<A>): void {
    const port = s.port;
    if (port < 0) return;
    s.port = -1;
    const e = this.byPort.get(port);
    if (e === s) this.byPort.delete(port);
    else if (e instanceof Map && e.get(s.address) === s) {
      e.delete(s.address);
      // back to the one slot when one is left
      if (e.size === 1) for (const only of e.values()) this.byPort.set(port, only);
    }
  }

  /** Associations in a group (for tests and diagnostics). */
  groupSize(group: string): number {
    return this.groups.get(group)?.size ?? 0;
  }
}

function firstNotIn<T>(m: Map<string, T>, skip: ReadonlySet<T>): T | undefined {
  for (const v of m.values()) if (!skip.has(v)) return v;
  return undefined;
}
