/**
 * Message deduplication (RFC 7252 §4.5): remembers, per peer and message ID, what was
 * answered, so that a duplicate Confirmable request is acknowledged with the same bytes
 * and never processed twice; duplicate Non-confirmable requests are silently ignored.
 *
 * Structure: each peer has its own `Map<messageId, entry>` (one lookup of the peer's key,
 * which is a constant string with a cached hash, then a small-integer lookup; no key string
 * is built per datagram), and every completed entry is also linked into one global
 * intrusive FIFO, oldest first. The FIFO serves both the lifetime (entries expire
 * EXCHANGE_LIFETIME after a CON, NON_LIFETIME after a NON, counted from receipt,
 * §4.8.2) and the global caps on entries and cached bytes, which evict from the head.
 *
 * Why FIFO with a TTL and not an LRU: a message ID's validity runs from its first
 * transmission and is not extended by duplicates (a peer may reuse the ID after
 * EXCHANGE_LIFETIME, and an entry kept alive by hits would wrongly swallow that new
 * request), and retransmissions arrive within MAX_TRANSMIT_SPAN (45 s) of the original,
 * so the oldest entry is always the least likely to be needed: insertion order is the right
 * eviction order, and it needs no reordering on hits. Per-peer maps make `dropPeer` cost
 * the size of that peer's state rather than a scan of the whole cache (which lru-cache
 * would need), and entries of exchanges still in progress are kept out of the FIFO so caps
 * can never evict them (a duplicate during processing must not reach the handler again).
 *
 * Completed entries outlive the requests by minutes (100 000 of them at the default cap), so
 * every object they hold survives the young generation, is copied by each scavenge on its way
 * and later needs a mark-compact: an entry's expiry is a small integer (ms after the cache's
 * base time, stored in the entry) rather than a fractional clock reading (which V8 boxes as a
 * heap number of its own per entry). Expired entries are swept in bounded batches, so a
 * backlog of them never holds up the event loop for a whole scan (bench/README.md, "Latency
 * at half saturation").
 *
 * @module
 */

// Node's global `Buffer` is a getter: an imported binding is a constant (bench/README.md, records)
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

/** What the cache remembers about one message ID of one peer. */
export class DedupEntry implements QueueNode<DedupEntry> {
  prev: DedupEntry | undefined = undefined;
  next: DedupEntry | undefined = undefined;
  /** {@link IN_PROGRESS}, {@link ACKED}, {@link COMPLETE} or {@link DROPPED}. */
  state: number = IN_PROGRESS;
  /**
   * The memory of the encoded datagram to send again for a duplicate (undefined: send
   * nothing), and where in it the datagram lies. A completed entry outlives its request by
   * minutes, so it keeps no Buffer view of its own (~100 bytes of heap object for a datagram
   * of a dozen): every object it holds is copied by the scavenges on its way to the old
   * generation and marked by every mark-compact. The view is made again for a duplicate
   * ({@link bytes}), which is rare; the memory is the one the view held (for an encoded answer
   * a slice of Node's Buffer pool, which other slices of it keep alive anyway).
   */
  private memory: ArrayBufferLike | undefined = undefined;
  private offset = 0;
  /** Length of the kept datagram in bytes (0 when none is kept). */
  byteLength = 0;

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

  /** The datagram to send again for a duplicate (a new view of it); undefined: send nothing. */
  get bytes(): Buffer | undefined {
    const memory = this.memory;
    return memory === undefined ? undefined : Buffer.from(memory, this.offset, this.byteLength);
  }

  /** @internal Keeps `bytes` (where it lies, not the view) for {@link bytes}; undefined: none. */
  keep(bytes: Buffer | undefined): void {
    if (bytes === undefined) {
      this.memory = undefined;
      this.offset = 0;
      this.byteLength = 0;
    } else {
      this.memory = bytes.buffer;
      this.offset = bytes.byteOffset;
      this.byteLength = bytes.length;
    }
  }
}

/**
 * One peer's entries, and the counter for the message IDs we send it (NON responses,
 * separate CON responses). The record lives as long as the peer has recent message IDs,
 * which covers the span in which our own IDs towards it must not repeat (§4.4).
 */
class DedupPeer {
  readonly entries = new Map<number, DedupEntry>();
  /** Last message ID we used towards this peer. */
  lastMessageId: number;

  /**
   * @param key the peer's key
   * @param firstMessageId random start of our message IDs (§4.4: "randomized")
   */
  constructor(
    readonly key: string,
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

/** Deduplication cache; see the module comment for its structure. */
export class DedupCache {
  private readonly peers = new Map<string, DedupPeer>();
  private readonly fifo = new LinkedQueue<DedupEntry>();
  private bytes = 0;
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
  ) {}

  /** Completed entries in the FIFO. */
  get size(): number {
    return this.fifo.size;
  }

  /** True when no peer has any state. */
  get empty(): boolean {
    return this.peers.size === 0;
  }

  /** The live entry for this peer and message ID, or undefined (expired entries are removed). */
  find(peerKey: string, messageId: number, now: number): DedupEntry | undefined {
    const record = this.peers.get(peerKey);
    const e = record?.entries.get(messageId);
    if (e !== undefined) {
      if (e.state !== COMPLETE || e.expires > now - this.base) return e;
      this.remove(e);
      this.gauges();
    }
    // remove() may have taken the record out of the map: only a record still in it is kept
    this.foundKey = peerKey;
    this.foundId = messageId;
    this.found = record !== undefined && record.entries.size > 0 ? record : this.peers.get(peerKey);
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
      record = new DedupPeer(peerKey, Math.floor(this.random() * 0x10000) & 0xffff);
      this.peers.set(peerKey, record);
      this.stats.peers = this.peers.size;
    }
    if (!known) {
      const old = record.entries.get(messageId);
      if (old !== undefined) this.remove(old);
    }
    if (now - this.base > REBASE_AFTER_MS) this.rebase(now);
    const lifetime = confirmable ? this.limits.exchangeLifetimeMs : this.limits.nonLifetimeMs;
    // rounded up: an entry lives its whole lifetime, at most 1 ms more
    const e = new DedupEntry(record, messageId, Math.ceil(now - this.base + lifetime));
    record.entries.set(messageId, e);
    return e;
  }

  /** The handler is still running and `emptyAck` went out: duplicates get it again. */
  acked(e: DedupEntry, emptyAck: Buffer): void {
    if (e.state !== IN_PROGRESS) return;
    e.state = ACKED;
    e.keep(emptyAck);
  }

  /**
   * The exchange is answered: duplicates get `bytes` (undefined: nothing) until the entry
   * expires or the caps evict it. No-op for an entry whose peer was dropped.
   */
  complete(e: DedupEntry, bytes: Buffer | undefined, now: number): void {
    if (e.state === DROPPED || e.state === COMPLETE) return;
    e.state = COMPLETE;
    e.keep(bytes);
    if (e.expires <= now - this.base) {
      // the handler outlived the message ID's lifetime: nothing left to deduplicate
      this.remove(e);
      this.gauges();
      return;
    }
    this.fifo.push(e);
    if (bytes !== undefined) this.bytes += bytes.length;
    const { maxEntries, maxBytes } = this.limits;
    while (this.fifo.size > maxEntries || this.bytes > maxBytes) {
      const head = this.fifo.head;
      if (head === undefined) break;
      this.remove(head);
      this.stats.dedupEvictions++;
    }
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
      const head = this.fifo.head;
      if (head === undefined || head.expires > at) break;
      if (n === SWEEP_BATCH) {
        more = true;
        break;
      }
      this.remove(head);
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
    for (const e of record.entries.values()) {
      if (this.fifo.has(e)) {
        this.fifo.remove(e);
        this.bytes -= e.byteLength;
      }
      e.state = DROPPED;
      e.keep(undefined);
    }
    record.entries.clear();
    this.peers.delete(peerKey);
    this.forgetFound();
    this.gauges();
  }

  /** Forgets everything. */
  clear(): void {
    for (const record of this.peers.values()) {
      for (const e of record.entries.values()) {
        e.state = DROPPED;
        e.keep(undefined);
      }
    }
    this.fifo.clear();
    this.peers.clear();
    this.forgetFound();
    this.bytes = 0;
    this.gauges();
  }

  /**
   * Takes a live entry out of the FIFO and its record (and an emptied record out of `peers`).
   * A live entry (not {@link DROPPED}) is always the one its record maps its message ID to,
   * and its record the one `peers` maps its key to: `begin` removes the old entry of an ID
   * before it maps a new one, and `dropPeer` and `clear` mark every entry they unmap as
   * dropped. So one `delete` does, without a `get` to compare first: under load the cap
   * evicts an entry per request, and each map operation is a hash lookup.
   */
  private remove(e: DedupEntry): void {
    if (e.state === DROPPED) return;
    if (this.fifo.has(e)) {
      this.fifo.remove(e);
      this.bytes -= e.byteLength;
    }
    const record = e.record;
    record.entries.delete(e.messageId);
    if (record.entries.size === 0) {
      this.peers.delete(record.key);
      this.forgetFound();
    }
    e.state = DROPPED;
    e.keep(undefined);
  }

  /** Moves the base to `now`, keeping expiries small integers (once every ~6 days). */
  private rebase(now: number): void {
    const shift = Math.floor(now) - this.base;
    for (const record of this.peers.values()) {
      for (const e of record.entries.values()) e.expires -= shift;
    }
    this.base += shift;
  }

  private forgetFound(): void {
    this.foundKey = undefined;
    this.found = undefined;
  }

  private gauges(): void {
    this.stats.dedupEntries = this.fifo.size;
    this.stats.dedupBytes = this.bytes;
    this.stats.peers = this.peers.size;
  }
}
