/**
 * Message deduplication (RFC 7252 §4.5): remembers, per peer and message ID, what was
 * answered, so that a duplicate Confirmable request is acknowledged with the same bytes
 * and never processed twice; duplicate Non-confirmable requests are silently ignored.
 *
 * Structure: one lookup of the peer's key (a constant string with a cached hash) in a map of
 * peer records gives the peer a small integer index; (index, message ID) is then looked up in
 * an open-addressing hash table of the cache's own, in an `Int32Array`. Completed entries live
 * in one global FIFO, oldest first, kept in typed arrays too (a ring of slots: peer index,
 * message ID, expiry, where the answer lies, and a per-peer chain), and the answers they resend
 * are copied once into a byte ring the cache owns, in the same order. The FIFO serves both the
 * lifetime (entries expire EXCHANGE_LIFETIME after a CON, NON_LIFETIME after a NON, counted
 * from receipt, §4.8.2) and the global caps on entries and cached bytes, which evict from the
 * head. Exchanges still in progress are objects ({@link DedupEntry}; the exchange holds
 * one anyway), mapped in the same table and kept out of the FIFO.
 *
 * Why FIFO with a TTL and not an LRU: a message ID's validity runs from its first
 * transmission and is not extended by duplicates (a peer may reuse the ID after
 * EXCHANGE_LIFETIME, and an entry kept alive by hits would wrongly swallow that new
 * request), and retransmissions arrive within MAX_TRANSMIT_SPAN (45 s) of the original,
 * so the oldest entry is always the least likely to be needed: insertion order is the right
 * eviction order, and it needs no reordering on hits. Per-peer chains (of its completed
 * slots, of its entries in progress) make `dropPeer` cost the size of that peer's state
 * rather than a scan of the whole cache (which lru-cache would need), and entries of exchanges still in progress are kept out of the FIFO so caps
 * can never evict them (a duplicate during processing must not reach the handler again).
 *
 * Why our own structure and no heap object per completed entry: completed entries outlive
 * the requests by minutes (100 000 of them at the default cap), far longer than a young
 * generation's life, so every object one holds (an entry object, a Buffer view, a Map slot's
 * share of a backing store that is reallocated as the map churns, the Buffer pool slab its
 * answer was encoded in) is copied by scavenges, promoted to the old generation, and marked
 * there until a mark-compact frees it: at thousands of requests a second that alone fills the
 * old generation and brings on the mark-compacts that make the tail latency. No cache library
 * keeps its entries off the GC's heap (they all hold an object or a map entry per key), and a
 * `Map<number, number>` per peer, though its keys and values are small integers stored inline,
 * still reallocates its backing store as entries come and go. Typed arrays are one object each,
 * never scanned by the GC, and grow only while the cache fills (doubling, up to twice its
 * caps). Expiries are small integers (ms after the cache's base time), and expired entries are
 * swept in bounded batches, so a backlog of them never holds up the event loop for a whole
 * scan (bench/history/dedup-and-gc.md, "Completed dedup entries without heap objects").
 *
 * Entries removed from the middle of the FIFO (a peer dropped, an expired entry found, a
 * message ID begun again) leave a dead slot that is freed when it reaches the head. A full
 * ring is rebuilt with its live slots only, at twice its size or, when at least half of it is
 * dead, at the same size (the byte ring likewise): both stay within twice the caps, and no
 * live entry is ever evicted but by the caps and the lifetimes. Rebuilding is linear in the
 * ring (the byte ring's moves its live answers, up to `maxBytes`, in one turn), and is needed
 * only while the cache fills or after as many removals from the middle as it holds. At the
 * same size it is done in place (no fresh memory to fault in), which cuts such a turn
 * several-fold (bench/history/dedup-and-gc.md, "The dedup rings' rebuild under peer churn").
 *
 * @module
 */

// Node's global `Buffer` is a getter: an imported binding is a constant
// (bench/history/records.md, "The record path, third pass")
import { Buffer } from 'node:buffer';
import { LinkedQueue, type QueueNode } from './linked-queue.js';
import type { CoapStats } from './stats.js';

/** The handler is running and nothing has been sent: a duplicate gets nothing yet. */
export const IN_PROGRESS = 0;
/** The handler is running and an empty ACK was sent: a duplicate gets the empty ACK again. */
const ACKED = 1;
/** Answered: a duplicate gets `bytes` again (nothing for NON requests). */
export const COMPLETE = 2;
/** The peer was closed; the exchange finishing later must not touch the cache. */
export const DROPPED = 3;

/** Expiries are kept below this many ms after the base (small integers); see `rebase`. */
const REBASE_AFTER_MS = 2 ** 29;
/** Most expired entries one {@link DedupCache.sweep} removes: a turn of the loop stays short. */
export const SWEEP_BATCH = 2048;

const NONE = -1;
/** Completion stamps (which completion a slot holds): the low 30 bits of a counter. */
const STAMP_MASK = 0x3fffffff;
/** Fields of a slot of the completed-entry ring (one `Int32Array`, {@link SLOT} ints each). */
const S_PEER = 0; // peer index, NONE: dead (removed before it reached the head)
const S_ID = 1; // message ID
const S_EXPIRES = 2; // ms after the cache's base
const S_OFFSET = 3; // where the answer lies in the byte ring
const S_LENGTH = 4; // its length; NONE: nothing to resend
const S_NEXT = 5; // the peer's chain of completed entries (ring indices), newest first
const S_PREV = 6;
const S_STAMP = 7; // the completion's stamp
const SLOT = 8;
/** Fields of a hash table position (one `Int32Array`, {@link POS} ints each). */
const T_PEER = 0; // peer index + 1; 0: free
const T_ID = 1;
const T_REF = 2; // >= 0: a completed entry's ring index; < 0: ~index of an entry in progress
const POS = 4;
/** Sizes the typed arrays start at; they double as the cache fills. */
const FIRST_SLOTS = 256;
const FIRST_BYTES = 16 * 1024;
const FIRST_POSITIONS = 1024;

/**
 * One exchange's entry. An exchange in progress is this object; a completed one is a slot of
 * the cache's typed arrays, and the object {@link DedupCache.begin} returned (or one
 * {@link DedupCache.find} makes for a duplicate) only names that slot: its {@link state} and
 * {@link bytes} read the cache.
 */
export class DedupEntry implements QueueNode<DedupEntry> {
  prev: DedupEntry | undefined = undefined;
  next: DedupEntry | undefined = undefined;
  /** @internal Index in the cache's entries in progress; NONE once it left them. */
  pending = NONE;
  /** @internal The completion's stamp; NONE before. */
  seq = NONE;
  private phase: number = IN_PROGRESS;
  /** The empty ACK kept while the handler runs: where it lies, not a view (see `bytes`). */
  private memory: ArrayBufferLike | undefined = undefined;
  private offset = 0;
  private length = 0;

  /**
   * @param record the peer's record
   * @param messageId the request's message ID
   * @param expires when a duplicate is no longer recognised (integer ms after the cache's base)
   */
  constructor(
    readonly record: DedupPeer,
    readonly messageId: number,
    /** @internal */
    public expires: number,
  ) {}

  /** {@link IN_PROGRESS}, {@link ACKED}, {@link COMPLETE} or {@link DROPPED}. */
  get state(): number {
    const phase = this.phase;
    return phase === COMPLETE && this.record.cache.slotOfEntry(this) < 0 ? DROPPED : phase;
  }

  /**
   * The datagram to send again for a duplicate; undefined: send nothing. For a completed
   * entry a copy of the cache's bytes (the ring reuses its memory; a send may hold the
   * buffer past this turn), made only for a duplicate, which is rare.
   */
  get bytes(): Buffer | undefined {
    if (this.phase === COMPLETE) return this.record.cache.bytesOf(this);
    const memory = this.memory;
    return memory === undefined ? undefined : Buffer.from(memory, this.offset, this.length);
  }

  /** @internal */
  set(phase: number, seq: number): void {
    this.phase = phase;
    this.seq = seq;
  }

  /** @internal The phase as set, without asking the cache. */
  get own(): number {
    return this.phase;
  }

  /** @internal Keeps where `bytes` lies for {@link bytes} while in progress; undefined: none. */
  keep(bytes: Buffer | undefined): void {
    if (bytes === undefined) {
      this.memory = undefined;
      this.offset = 0;
      this.length = 0;
    } else {
      this.memory = bytes.buffer;
      this.offset = bytes.byteOffset;
      this.length = bytes.length;
    }
  }
}

/**
 * One peer's record: its index in the cache's tables, its entries in progress, the chain of
 * its completed ones, and the counter for the message IDs we send it (NON responses,
 * separate CON responses). The record lives as long as the peer has recent message IDs,
 * which covers the span in which our own IDs towards it must not repeat (§4.4).
 */
class DedupPeer {
  /** Entries in progress and completed. */
  live = 0;
  /** Newest of its completed entries (ring index); NONE: none. */
  first = NONE;
  readonly pending = new LinkedQueue<DedupEntry>();
  /** Last message ID we used towards this peer. */
  lastMessageId: number;

  /**
   * @param cache the cache the record belongs to
   * @param key the peer's key
   * @param index its index in the cache's tables
   * @param firstMessageId random start of our message IDs (§4.4: "randomized")
   */
  constructor(
    readonly cache: DedupCache,
    readonly key: string,
    readonly index: number,
    firstMessageId: number,
  ) {
    this.lastMessageId = firstMessageId;
  }
}

/** Lifetimes and global caps of a {@link DedupCache}. */
export interface DedupLimits {
  /** Most completed entries, all peers together. */
  readonly maxEntries: number;
  /** Most bytes of cached datagrams, all peers together. */
  readonly maxBytes: number;
  /** Lifetime of a CON request's entry (EXCHANGE_LIFETIME, 247 s). */
  readonly exchangeLifetimeMs: number;
  /** Lifetime of a NON request's entry (NON_LIFETIME, 145 s). */
  readonly nonLifetimeMs: number;
}

/** Hash of a (peer index, message ID) key. */
function hashOf(peer: number, id: number): number {
  const h = Math.imul(peer, 0x9e3779b1) ^ Math.imul(id + 1, 0x85ebca6b);
  return h ^ (h >>> 15);
}

/** Deduplication cache; see the module comment for its structure. */
export class DedupCache {
  private readonly peers = new Map<string, DedupPeer>();
  private byIndex: (DedupPeer | undefined)[] = [];
  private freeIndexes: number[] = [];
  /** Entries in progress, by the index their table position refers to. */
  private inProgress: (DedupEntry | undefined)[] = [];
  private freeInProgress: number[] = [];
  /** Open-addressing table (linear probing) of (peer index, message ID) → entry. */
  private table = new Int32Array(FIRST_POSITIONS * POS);
  private mask = FIRST_POSITIONS - 1;
  private mapped = 0;
  /** Ring of completed entries' slots, oldest at `head`; `count` slots, live or dead. */
  private slots: Int32Array;
  private slotCap: number;
  private readonly slotLimit: number;
  private head = 0;
  private count = 0;
  /** Counter of completions, for their stamps. */
  private stamps = 0;
  /** Live completed entries and their bytes. */
  private live = 0;
  private bytes = 0;
  /** Byte ring of the answers: in use [byteHead, byteTail), or [byteHead, wrapEnd) + [0, byteTail). */
  private data: Buffer;
  private readonly byteLimit: number;
  private byteHead = 0;
  private byteTail = 0;
  private wrapEnd = 0;
  private wrapped = false;
  /** Clock ms that entry expiries count from (integers: no heap number per entry). */
  private base = 0;
  /**
   * What the last {@link find} that returned nothing saw: the peer's record (undefined: no
   * record) under `foundKey`, and that `foundId` had no entry. {@link begin} right after it for
   * the same peer and ID (the datagram path) looks nothing up again. Forgotten whenever a
   * record leaves the map.
   */
  private foundKey: string | undefined = undefined;
  private foundId = -1;
  private found: DedupPeer | undefined = undefined;

  /**
   * @param limits lifetimes and caps
   * @param stats gauges `peers`, `dedupEntries`, `dedupBytes`, counter `dedupEvictions`
   * @param random source of the random start of message IDs, in [0, 1)
   */
  constructor(
    private readonly limits: DedupLimits,
    private readonly stats: CoapStats,
    private readonly random: () => number,
  ) {
    this.slotLimit = Math.max(2, 2 * limits.maxEntries);
    this.slotCap = Math.min(FIRST_SLOTS, this.slotLimit);
    this.slots = new Int32Array(this.slotCap * SLOT);
    this.byteLimit = Math.max(2, 2 * limits.maxBytes);
    this.data = Buffer.allocUnsafeSlow(Math.min(FIRST_BYTES, this.byteLimit));
  }

  /** Completed entries in the FIFO. */
  get size(): number {
    return this.live;
  }

  /** True when no peer has any state. */
  get empty(): boolean {
    return this.peers.size === 0;
  }

  /** The live entry for this peer and message ID, or undefined (expired entries are removed). */
  find(peerKey: string, messageId: number, now: number): DedupEntry | undefined {
    const record = this.peers.get(peerKey);
    if (record !== undefined) {
      const at = this.lookup(record.index, messageId);
      if (at >= 0) {
        const ref = this.table[at * POS + T_REF]!;
        if (ref < 0) return this.inProgress[~ref];
        const p = ref * SLOT;
        const expires = this.slots[p + S_EXPIRES]!;
        if (expires > now - this.base) {
          // a duplicate: an object naming the slot (the cache keeps none per entry)
          const e = new DedupEntry(record, messageId, expires);
          e.set(COMPLETE, this.slots[p + S_STAMP]!);
          return e;
        }
        this.removeSlot(p);
        this.trim();
        this.gauges();
      }
    }
    // removeSlot() may have taken the record out of the map: only a record still in it is kept
    this.foundKey = peerKey;
    this.foundId = messageId;
    this.found = record !== undefined && record.live > 0 ? record : this.peers.get(peerKey);
    return undefined;
  }

  /**
   * Registers a new request as {@link IN_PROGRESS}; call {@link find} first. Entries in
   * progress are not subject to the caps.
   */
  begin(peerKey: string, messageId: number, confirmable: boolean, now: number): DedupEntry {
    const known = this.foundKey === peerKey && this.foundId === messageId;
    let record = known ? this.found : this.peers.get(peerKey);
    this.forgetFound();
    if (record === undefined) {
      const index = this.freeIndexes.pop() ?? this.byIndex.length;
      record = new DedupPeer(this, peerKey, index, Math.floor(this.random() * 0x10000) & 0xffff);
      this.byIndex[index] = record;
      this.peers.set(peerKey, record);
      this.stats.peers = this.peers.size;
    }
    if (!known) {
      const old = this.lookup(record.index, messageId);
      if (old >= 0) this.removeAt(old);
    }
    if (now - this.base > REBASE_AFTER_MS) this.rebase(now);
    const lifetime = confirmable ? this.limits.exchangeLifetimeMs : this.limits.nonLifetimeMs;
    // rounded up: an entry lives its whole lifetime, at most 1 ms more
    const e = new DedupEntry(record, messageId, Math.ceil(now - this.base + lifetime));
    const index = this.freeInProgress.pop() ?? this.inProgress.length;
    this.inProgress[index] = e;
    e.pending = index;
    record.pending.push(e);
    record.live++;
    this.insert(record.index, messageId, ~index);
    return e;
  }

  /** The handler is still running and `emptyAck` went out: duplicates get it again. */
  acked(e: DedupEntry, emptyAck: Buffer): void {
    if (e.own !== IN_PROGRESS) return;
    e.set(ACKED, NONE);
    e.keep(emptyAck);
  }

  /**
   * The exchange is answered: duplicates get `bytes` (undefined: nothing; the bytes are copied
   * into the cache) until the entry expires or the caps evict it. No-op for an entry whose
   * peer was dropped.
   */
  complete(e: DedupEntry, bytes: Buffer | undefined, now: number): void {
    const phase = e.own;
    if (phase === DROPPED || phase === COMPLETE) return;
    const record = e.record;
    this.leaveInProgress(e);
    if (e.expires <= now - this.base) {
      // the handler outlived the message ID's lifetime: nothing left to deduplicate
      this.forget(e);
      this.gauges();
      return;
    }
    const length = bytes === undefined ? NONE : bytes.length;
    const size = length > 0 ? length : 0;
    const { maxEntries, maxBytes } = this.limits;
    // the caps, the new entry counted: evict from the head
    while ((this.live >= maxEntries || this.bytes + size > maxBytes) && this.live > 0) {
      this.evictHead();
    }
    if (size > maxBytes) {
      // larger than the byte cap by itself: evicted at once, like any entry over the caps
      this.forget(e);
      this.stats.dedupEvictions++;
      this.gauges();
      return;
    }
    if (this.count === this.slotCap) {
      // rebuilt with its live slots only: at the same size when half of it is dead
      this.relayout(
        2 * this.live <= this.slotCap ? this.slotCap : Math.min(this.slotLimit, 2 * this.slotCap),
      );
    }
    const offset = size > 0 ? this.reserve(size) : 0;
    if (size > 0) this.data.set(bytes!, offset);
    const stamp = this.stamps++ & STAMP_MASK;
    this.stamps &= STAMP_MASK;
    const ref = this.slotAt(this.count);
    const p = ref * SLOT;
    const slots = this.slots;
    slots[p + S_PEER] = record.index;
    slots[p + S_ID] = e.messageId;
    slots[p + S_EXPIRES] = e.expires;
    slots[p + S_OFFSET] = offset;
    slots[p + S_LENGTH] = length;
    slots[p + S_PREV] = NONE;
    slots[p + S_STAMP] = stamp;
    const first = record.first;
    slots[p + S_NEXT] = first;
    if (first !== NONE) slots[first * SLOT + S_PREV] = ref;
    record.first = ref;
    this.count++;
    this.live++;
    this.bytes += size;
    this.table[this.lookup(record.index, e.messageId) * POS + T_REF] = ref;
    e.set(COMPLETE, stamp);
    this.gauges();
  }

  /** The next message ID for a message we send to the entry's peer (§4.4). */
  nextMessageId(e: DedupEntry): number {
    const record = e.record;
    record.lastMessageId = (record.lastMessageId + 1) & 0xffff;
    return record.lastMessageId;
  }

  /**
   * Drops expired entries from the head of the FIFO, at most {@link SWEEP_BATCH} of them (an
   * expired entry is absent for {@link find} either way).
   *
   * @returns true when expired entries are left at the head: sweep again soon
   */
  sweep(now: number): boolean {
    const at = now - this.base;
    let more = false;
    for (let n = 0; ; n++) {
      // the head slot is always live (see trim)
      if (this.count === 0 || this.slots[this.head * SLOT + S_EXPIRES]! > at) break;
      if (n === SWEEP_BATCH) {
        more = true;
        break;
      }
      this.removeSlot(this.head * SLOT);
      this.trim();
    }
    // Entries behind a longer-lived head may have expired too (NON after CON); `find`
    // treats them as absent and the caps still bound them.
    this.gauges();
    return more;
  }

  /** Forgets everything about one peer (its DTLS association closed). */
  dropPeer(peerKey: string): void {
    const record = this.peers.get(peerKey);
    if (record === undefined) return;
    for (let e = record.pending.head; e !== undefined; e = record.pending.head) {
      record.pending.remove(e);
      this.unmap(record.index, e.messageId);
      this.inProgress[e.pending] = undefined;
      this.freeInProgress.push(e.pending);
      e.pending = NONE;
      e.set(DROPPED, NONE);
      e.keep(undefined);
    }
    const slots = this.slots;
    for (let ref = record.first; ref !== NONE;) {
      const p = ref * SLOT;
      ref = slots[p + S_NEXT]!;
      this.unmap(record.index, slots[p + S_ID]!);
      this.kill(p);
    }
    record.first = NONE;
    record.live = 0;
    this.trim();
    this.dropRecord(record);
    this.gauges();
  }

  /** Forgets everything. */
  clear(): void {
    for (const e of this.inProgress) {
      if (e === undefined) continue;
      e.prev = undefined;
      e.next = undefined;
      e.pending = NONE;
      e.set(DROPPED, NONE);
      e.keep(undefined);
    }
    this.inProgress = [];
    this.freeInProgress = [];
    this.peers.clear();
    this.byIndex = [];
    this.freeIndexes = [];
    this.table.fill(0);
    this.mapped = 0;
    // entries that named a slot find it unmapped
    this.count = 0;
    this.head = 0;
    this.live = 0;
    this.bytes = 0;
    this.byteHead = 0;
    this.byteTail = 0;
    this.wrapped = false;
    this.forgetFound();
    this.gauges();
  }

  /** @internal The slot (times SLOT) of a completed entry while it is live; -1: gone. */
  slotOfEntry(e: DedupEntry): number {
    const record = e.record;
    if (this.byIndex[record.index] !== record) return -1;
    const at = this.lookup(record.index, e.messageId);
    if (at < 0) return -1;
    const ref = this.table[at * POS + T_REF]!;
    return ref >= 0 && this.slots[ref * SLOT + S_STAMP] === e.seq ? ref * SLOT : -1;
  }

  /** @internal A copy of the answer kept for a completed entry; undefined: none (or gone). */
  bytesOf(e: DedupEntry): Buffer | undefined {
    const p = this.slotOfEntry(e);
    if (p < 0) return undefined;
    const length = this.slots[p + S_LENGTH]!;
    if (length < 0) return undefined;
    const offset = this.slots[p + S_OFFSET]!;
    return Buffer.from(this.data.subarray(offset, offset + length));
  }

  // --- the FIFO ring --------------------------------------------------------------------

  /** The ring index `d` slots after the head. */
  private slotAt(d: number): number {
    const i = this.head + d;
    return i >= this.slotCap ? i - this.slotCap : i;
  }

  /** Removes the oldest live entry for the caps. */
  private evictHead(): void {
    this.removeSlot(this.head * SLOT);
    this.trim();
    this.stats.dedupEvictions++;
  }

  /**
   * Takes a live completed entry (slot at `p`) out of the table and its peer's chain, and its
   * record out of `peers` when it was the last; the slot stays, dead, until it reaches the
   * head. A live slot's peer index always names its record (records leave only when empty).
   */
  private removeSlot(p: number): void {
    const slots = this.slots;
    const record = this.byIndex[slots[p + S_PEER]!]!;
    this.unmap(record.index, slots[p + S_ID]!);
    const next = slots[p + S_NEXT]!;
    const prev = slots[p + S_PREV]!;
    if (prev === NONE) record.first = next;
    else slots[prev * SLOT + S_NEXT] = next;
    if (next !== NONE) slots[next * SLOT + S_PREV] = prev;
    this.kill(p);
    if (--record.live === 0) this.dropRecord(record);
  }

  /** Marks a live slot dead and takes it out of the counts. */
  private kill(p: number): void {
    const length = this.slots[p + S_LENGTH]!;
    if (length > 0) this.bytes -= length;
    this.live--;
    this.slots[p + S_PEER] = NONE;
  }

  /** Frees dead slots (and their bytes) at the head, so the head is always live. */
  private trim(): void {
    const slots = this.slots;
    while (this.count > 0 && slots[this.head * SLOT + S_PEER] === NONE) {
      const p = this.head * SLOT;
      const length = slots[p + S_LENGTH]!;
      if (length > 0) {
        // byte allocations are in FIFO order: this one starts the ring's used part (past the
        // wrap when it lies before the head: the slots before it were rebuilt away)
        const offset = slots[p + S_OFFSET]!;
        if (this.wrapped && offset < this.byteHead) this.wrapped = false;
        this.byteHead = offset + length;
        if (this.wrapped && this.byteHead === this.wrapEnd) {
          this.wrapped = false;
          this.byteHead = 0;
        }
        if (!this.wrapped && this.byteHead === this.byteTail) {
          this.byteHead = 0;
          this.byteTail = 0;
        }
      }
      this.head = this.head + 1 === this.slotCap ? 0 : this.head + 1;
      this.count--;
    }
    if (this.count === 0) {
      this.head = 0;
      this.byteHead = 0;
      this.byteTail = 0;
      this.wrapped = false;
    }
  }

  /** Room for `size` (> 0) bytes at the tail of the byte ring, rebuilding it when full. */
  private reserve(size: number): number {
    for (;;) {
      const tail = this.byteTail;
      if (!this.wrapped) {
        if (tail + size <= this.data.length) {
          this.byteTail = tail + size;
          return tail;
        }
        if (size <= this.byteHead) {
          this.wrapEnd = tail;
          this.wrapped = true;
          this.byteTail = size;
          return 0;
        }
      } else if (tail + size <= this.byteHead) {
        this.byteTail = tail + size;
        return tail;
      }
      // the caps hold bytes + size <= maxBytes, half the limit: the rebuilt ring has room
      const length = this.data.length;
      const need = this.bytes + size;
      this.rebuildBytes(
        2 * need <= length ? length : Math.min(this.byteLimit, Math.max(2 * length, 2 * need)),
      );
    }
  }

  /**
   * The byte ring rebuilt at `length` with the live answers only, in FIFO order. At its own
   * length (a ring full of dead answers: peers dropped) it is compacted in place: fresh memory
   * costs a page fault per 4 KiB on first touch, which at 30 MB of answers was most of a
   * rebuild (bench/history/dedup-and-gc.md, "The dedup rings' rebuild under peer churn"). The
   * answers after
   * the wrap (all of them when it has not wrapped) move down to the start, those before it up
   * against the end, so the ring stays wrapped with the free space between. Answers of
   * consecutive live slots lie side by side: each such run is one copy (a copy call costs more
   * than its bytes at these sizes). At another length (the cache filling) they are copied to
   * the start of a new buffer.
   */
  private rebuildBytes(length: number): void {
    const data = this.data;
    const slots = this.slots;
    const inPlace = length === data.length;
    const next = inPlace ? data : Buffer.allocUnsafeSlow(length);
    // in place and wrapped, answers at or past the head are before the wrap: the second pass
    const twoWays = inPlace && this.wrapped;
    const split = twoWays ? this.byteHead : length;
    let w = 0;
    let from = 0; // the run being gathered: data[from, to)
    let to = 0;
    for (let d = 0; d < this.count; d++) {
      const p = this.slotAt(d) * SLOT;
      const n = slots[p + S_LENGTH]!;
      if (n <= 0) continue;
      if (slots[p + S_PEER] === NONE) {
        slots[p + S_LENGTH] = NONE;
        continue;
      }
      const offset = slots[p + S_OFFSET]!;
      if (offset >= split) continue;
      if (offset !== to) {
        w += this.move(next, w, from, to);
        from = offset;
        to = offset;
      }
      slots[p + S_OFFSET] = w + (to - from);
      to += n;
    }
    w += this.move(next, w, from, to);
    let top = length;
    if (twoWays) {
      // before the wrap, newest first, up against the end: a run grows down from `to`
      from = to = -1;
      for (let d = this.count - 1; d >= 0; d--) {
        const p = this.slotAt(d) * SLOT;
        const n = slots[p + S_LENGTH]!;
        const offset = slots[p + S_OFFSET]!;
        if (n <= 0 || offset < split) continue;
        if (offset + n !== from) {
          top -= this.move(data, top - (to - from), from, to);
          from = offset + n;
          to = from;
        }
        from = offset;
        slots[p + S_OFFSET] = top - (to - offset);
      }
      top -= this.move(data, top - (to - from), from, to);
    }
    this.data = next;
    this.wrapped = top < length && w > 0;
    this.wrapEnd = length;
    this.byteHead = top < length ? top : 0;
    this.byteTail = top < length && w === 0 ? length : w;
  }

  /** Copies data[from, to) to `at` in `target` (which may be the ring itself); its length. */
  private move(target: Buffer, at: number, from: number, to: number): number {
    if (to <= from) return 0;
    if (target === this.data) {
      if (at !== from) target.copyWithin(at, from, to);
    } else this.data.copy(target, at, from, to);
    return to - from;
  }

  /**
   * A ring of `cap` slots holding the live ones in FIFO order: the dead are dropped, and the
   * ring indices in the peers' chains and the table follow the move. At its own size (half of
   * it dead) in place, as the byte ring: the slots after the wrap (all, when it has not
   * wrapped) down to the start, those before it up against the end; at another (the cache
   * filling) into a new ring from its start.
   */
  private relayout(cap: number): void {
    const old = this.slots;
    const inPlace = cap === this.slotCap;
    const next = inPlace ? old : new Int32Array(cap * SLOT);
    const moved = new Int32Array(this.slotCap);
    const end = this.head + this.count;
    const wraps = inPlace && end > this.slotCap;
    // first pass: oldest first to the start (in place: only what lies after the wrap)
    let w = 0;
    for (let d = wraps ? this.slotCap - this.head : 0; d < this.count; d++) {
      const i = this.slotAt(d) * SLOT;
      if (old[i + S_PEER] === NONE) continue;
      // field by field: a subarray per slot would be a heap object per slot
      const o = w * SLOT;
      if (!inPlace || o !== i) for (let f = 0; f < SLOT; f++) next[o + f] = old[i + f]!;
      moved[i / SLOT] = w++;
    }
    let top = cap;
    if (wraps) {
      for (let i = (this.slotCap - 1) * SLOT; i >= this.head * SLOT; i -= SLOT) {
        if (old[i + S_PEER] === NONE) continue;
        const o = --top * SLOT;
        if (o !== i) for (let f = 0; f < SLOT; f++) next[o + f] = old[i + f]!;
        moved[i / SLOT] = top;
      }
    }
    const relink = (j: number): void => {
      const p = j * SLOT;
      const n = next[p + S_NEXT]!;
      if (n !== NONE) next[p + S_NEXT] = moved[n]!;
      const q = next[p + S_PREV]!;
      if (q !== NONE) next[p + S_PREV] = moved[q]!;
    };
    for (let j = 0; j < w; j++) relink(j);
    for (let j = top; j < cap; j++) relink(j);
    // the table in one pass, in its order, rather than a probe per slot in the slots' order
    const table = this.table;
    for (let t = 0; t < table.length; t += POS) {
      if (table[t + T_PEER] !== 0 && table[t + T_REF]! >= 0) {
        table[t + T_REF] = moved[table[t + T_REF]!]!;
      }
    }
    for (const record of this.byIndex) {
      if (record !== undefined && record.first !== NONE) record.first = moved[record.first]!;
    }
    this.slots = next;
    this.slotCap = cap;
    this.head = top < cap ? top : 0;
    this.count = cap - top + w;
  }

  // --- entries in progress, records ------------------------------------------------------

  /** Takes an entry in progress out of the in-progress list (its table position stays). */
  private leaveInProgress(e: DedupEntry): void {
    e.record.pending.remove(e);
    this.inProgress[e.pending] = undefined;
    this.freeInProgress.push(e.pending);
    e.pending = NONE;
    e.keep(undefined);
  }

  /** Unmaps an entry that left the in-progress list, and its record when it was the last. */
  private forget(e: DedupEntry): void {
    const record = e.record;
    this.unmap(record.index, e.messageId);
    e.set(DROPPED, NONE);
    if (--record.live === 0) this.dropRecord(record);
  }

  /** Removes whatever the table position `at` maps (an entry in progress or completed). */
  private removeAt(at: number): void {
    const ref = this.table[at * POS + T_REF]!;
    if (ref >= 0) {
      this.removeSlot(ref * SLOT);
      this.trim();
      return;
    }
    const e = this.inProgress[~ref]!;
    this.leaveInProgress(e);
    this.forget(e);
  }

  private dropRecord(record: DedupPeer): void {
    this.peers.delete(record.key);
    this.byIndex[record.index] = undefined;
    this.freeIndexes.push(record.index);
    this.forgetFound();
  }

  // --- the hash table ---------------------------------------------------------------------

  /** The table position of (peer index, message ID), or -1. */
  private lookup(peer: number, id: number): number {
    const table = this.table;
    const mask = this.mask;
    const key = peer + 1;
    for (let i = hashOf(peer, id) & mask; ; i = (i + 1) & mask) {
      const k = table[i * POS + T_PEER];
      if (k === 0) return -1;
      if (k === key && table[i * POS + T_ID] === id) return i;
    }
  }

  /** Maps an absent (peer index, message ID) to `ref`. */
  private insert(peer: number, id: number, ref: number): void {
    if (2 * (this.mapped + 1) > this.mask + 1) this.growTable();
    const table = this.table;
    const mask = this.mask;
    let i = hashOf(peer, id) & mask;
    while (table[i * POS + T_PEER] !== 0) i = (i + 1) & mask;
    table[i * POS + T_PEER] = peer + 1;
    table[i * POS + T_ID] = id;
    table[i * POS + T_REF] = ref;
    this.mapped++;
  }

  /** Unmaps a mapped (peer index, message ID): backward-shift deletion, no tombstones. */
  private unmap(peer: number, id: number): void {
    const table = this.table;
    const mask = this.mask;
    let i = this.lookup(peer, id);
    table[i * POS + T_PEER] = 0;
    this.mapped--;
    for (let j = (i + 1) & mask; table[j * POS + T_PEER] !== 0; j = (j + 1) & mask) {
      const home = hashOf(table[j * POS + T_PEER]! - 1, table[j * POS + T_ID]!) & mask;
      // the entry at j may move to the hole at i unless its home lies cyclically in (i, j]
      if (i <= j ? home > i && home <= j : home > i || home <= j) continue;
      table.copyWithin(i * POS, j * POS, j * POS + POS);
      table[j * POS + T_PEER] = 0;
      i = j;
    }
  }

  /** Twice the positions, every mapping inserted again. */
  private growTable(): void {
    const old = this.table;
    const size = 2 * (this.mask + 1);
    this.table = new Int32Array(size * POS);
    this.mask = size - 1;
    this.mapped = 0;
    for (let i = 0; i < old.length; i += POS) {
      const k = old[i + T_PEER]!;
      if (k !== 0) this.insert(k - 1, old[i + T_ID]!, old[i + T_REF]!);
    }
  }

  /** Moves the base to `now`, keeping expiries small integers (once every ~6 days). */
  private rebase(now: number): void {
    const shift = Math.floor(now) - this.base;
    const slots = this.slots;
    for (let d = 0; d < this.count; d++) {
      const p = this.slotAt(d) * SLOT + S_EXPIRES;
      // long expired (dead, or behind a longer-lived head): kept in the Int32 range
      slots[p] = Math.max(slots[p]! - shift, -0x80000000);
    }
    for (const e of this.inProgress) if (e !== undefined) e.expires -= shift;
    this.base += shift;
  }

  private forgetFound(): void {
    this.foundKey = undefined;
    this.found = undefined;
  }

  private gauges(): void {
    this.stats.dedupEntries = this.live;
    this.stats.dedupBytes = this.bytes;
    this.stats.peers = this.peers.size;
  }
}
