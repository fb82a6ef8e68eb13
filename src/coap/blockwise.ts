/**
 * Block-wise transfer state (RFC 7959): Block1 uploads being reassembled and response
 * bodies kept for Block2 follow-up requests, per peer and per transfer key, with global
 * caps on count and bytes and a lifetime.
 *
 * A transfer is identified by the peer and the request's method and URI (Uri-Host,
 * Uri-Port, Uri-Path, Uri-Query), not by the token: a client may use a new token for each
 * block (RFC 7959 §2.4, §2.5, §3.3 show follow-ups matched by URI; RFC 7252 §5.4.2 cache
 * key minus the block options).
 *
 * Uploads are ordered by last activity (an LRU in an intrusive queue; a stale upload is
 * one whose client went quiet, so expiry runs from the last block); bodies are ordered by
 * creation (FIFO: a body serves one transfer, which starts right after it is stored).
 * Both queues are global so the caps evict the oldest across peers, and every peer's
 * transfers are also in that peer's own maps so `dropPeer` needs no scan.
 *
 * Upload memory follows the bytes the blocks carry: each block is copied into the upload's
 * own buffer (never kept as a view into its datagram), and the global byte budget is
 * charged with that buffer as allocated plus the key and a per-upload overhead.
 *
 * @module
 */

import type { CoapMessage, CoapOption } from './codec.js';
import { OptionNumber } from './constants.js';
import { LinkedQueue, type QueueNode } from './linked-queue.js';
import type { BlockOption } from './options.js';
import type { CoapStats } from './stats.js';

/**
 * Key of a block-wise transfer within one peer: the method code and the URI options, with
 * each value length-prefixed so no two option lists give the same key.
 */
export function transferKey(msg: CoapMessage): string {
  let key = String(msg.code);
  const options = msg.options;
  for (let i = 0; i < options.length; i++) {
    const o = options[i];
    if (o === undefined) continue;
    const n = o.number;
    if (
      n === OptionNumber.URI_HOST ||
      n === OptionNumber.URI_PORT ||
      n === OptionNumber.URI_PATH ||
      n === OptionNumber.URI_QUERY
    ) {
      key += `|${n}:${o.value.length}:${o.value.toString('latin1')}`;
    }
  }
  return key;
}

/** An intermediate block was stored: answer 2.31 Continue (RFC 7959 §2.3, §2.9.1). */
const BLOCK1_CONTINUE = 0;
/** No transfer for this block or not the next one: answer 4.08 (RFC 7959 §2.9.2). */
export const BLOCK1_INCOMPLETE = 1;
/** The body would exceed maxPayload: answer 4.13 with Size1 (RFC 7959 §2.9.3, §4). */
export const BLOCK1_TOO_LARGE = 2;
/** The block's size does not match its SZX: answer 4.00 (RFC 7959 §2.3). */
export const BLOCK1_BAD = 3;
/** Too many uploads or upload bytes in flight globally: answer 5.03. */
export const BLOCK1_BUSY = 4;

/** One of the `BLOCK1_*` statuses. */
export type Block1Status =
  | typeof BLOCK1_CONTINUE
  | typeof BLOCK1_INCOMPLETE
  | typeof BLOCK1_TOO_LARGE
  | typeof BLOCK1_BAD
  | typeof BLOCK1_BUSY;

/**
 * Bytes charged to every upload besides its buffer and key: the upload object, its map
 * entry and queue links. An estimate, but it keeps a flood of tiny uploads from looking free.
 */
export const UPLOAD_OVERHEAD = 256;

/**
 * A Block1 upload being reassembled. Each block is copied into `data`, so an upload holds
 * what its blocks carried, not the datagrams they came in (a 16-byte block may arrive in a
 * 16 KB datagram padded with options this layer ignores).
 */
class Upload implements QueueNode<Upload> {
  prev: Upload | undefined = undefined;
  next: Upload | undefined = undefined;
  /** The body so far in `data[0, received)`; the rest is room to grow. */
  data: Buffer;
  /** Bytes so far, i.e. the offset the next block must start at. */
  received = 0;
  /** Bytes charged to the global budget: `data.length`, the key and {@link UPLOAD_OVERHEAD}. */
  held: number;

  /**
   * @param owner the peer's record
   * @param key the transfer key
   * @param capacity initial size of `data`
   * @param lastActive clock ms of the last block
   */
  constructor(
    readonly owner: PeerBlocks,
    readonly key: string,
    capacity: number,
    public lastActive: number,
  ) {
    // not from the shared pool: a pooled slice would keep a whole pool slab alive
    this.data = Buffer.allocUnsafeSlow(capacity);
    this.held = capacity + uploadCost(key);
  }
}

/** What an upload costs besides its buffer. */
function uploadCost(key: string): number {
  return key.length + UPLOAD_OVERHEAD;
}

/** A response body kept for Block2 follow-up requests (RFC 7959 §2.4). */
export class CachedBody implements QueueNode<CachedBody> {
  prev: CachedBody | undefined = undefined;
  next: CachedBody | undefined = undefined;

  /**
   * @param owner the peer's record
   * @param key the transfer key
   * @param code the response code
   * @param options the response options, without Block1/Block2/Size2
   * @param payload the whole body
   * @param expiresAt clock ms after which follow-ups no longer find it
   */
  constructor(
    readonly owner: PeerBlocks,
    readonly key: string,
    readonly code: number,
    readonly options: readonly CoapOption[],
    readonly payload: Buffer,
    readonly expiresAt: number,
  ) {}
}

/** One peer's transfers; maps are created on first use. */
class PeerBlocks {
  uploads: Map<string, Upload> | undefined = undefined;
  bodies: Map<string, CachedBody> | undefined = undefined;
  /** @param key the peer's key */
  constructor(readonly key: string) {}
}

/** Bounds of a {@link BlockStore}. */
export interface BlockLimits {
  /** Largest reassembled request body (the `maxPayload` setting). */
  readonly maxPayload: number;
  /** Uploads and bodies expire this long after their last block / creation. */
  readonly lifetimeMs: number;
  /** Concurrent uploads of one peer; a new one beyond it replaces the peer's oldest. */
  readonly maxUploadsPerPeer: number;
  /** Concurrent uploads, all peers; a new one beyond it is refused (5.03). */
  readonly maxUploads: number;
  /**
   * Bytes held by uploads, all peers (buffers as allocated, keys and bookkeeping); a block
   * that would need more is refused (5.03) and its upload dropped.
   */
  readonly maxUploadBytes: number;
  /** Cached bodies, all peers; the oldest is evicted beyond it. */
  readonly maxBodies: number;
  /** Bytes of cached bodies, all peers; the oldest are evicted beyond it. */
  readonly maxBodyBytes: number;
}

/** Block1 uploads and Block2 bodies of all peers. */
export class BlockStore {
  private readonly peers = new Map<string, PeerBlocks>();
  private readonly uploads = new LinkedQueue<Upload>();
  private readonly bodies = new LinkedQueue<CachedBody>();
  private uploadBytes = 0;
  private bodyBytes = 0;

  /**
   * @param limits bounds
   * @param stats gauges `uploads`, `uploadBytes`, `bodies`, `bodyBytes`; counters
   *   `block1Dropped`, `block2Evicted`
   */
  constructor(
    readonly limits: BlockLimits,
    private readonly stats: CoapStats,
  ) {}

  /** True when no transfer state is held. */
  get empty(): boolean {
    return this.peers.size === 0;
  }

  /**
   * Takes one Block1 request (RFC 7959 §2.3, §2.5). Returns the reassembled body when this
   * was the last block (num 0 without M: the payload itself, no copy), otherwise a
   * `BLOCK1_*` status. Any refusal drops the transfer, so the client has to start over.
   * The payload is copied; the caller's buffer is not kept.
   *
   * @param size1 the request's Size1 (RFC 7959 §4), if any
   */
  offerBlock1(
    peerKey: string,
    key: string,
    block: BlockOption,
    payload: Buffer,
    size1: number | undefined,
    now: number,
  ): Buffer | Block1Status {
    const max = this.limits.maxPayload;
    const record = this.peers.get(peerKey);
    let up = record?.uploads?.get(key);
    if (up !== undefined && up.lastActive + this.limits.lifetimeMs <= now) {
      this.dropUpload(up);
      up = undefined;
    }
    if (size1 !== undefined && size1 > max) {
      if (up !== undefined) this.dropUpload(up);
      return BLOCK1_TOO_LARGE;
    }
    const len = payload.length;
    // RFC 7959 §2.3: every block but the last has exactly the size SZX says
    if (block.more ? len !== block.size : len > block.size) {
      if (up !== undefined) this.dropUpload(up);
      return BLOCK1_BAD;
    }
    if (block.num === 0) {
      if (up !== undefined) this.dropUpload(up); // the client starts over
      if (len > max) return BLOCK1_TOO_LARGE;
      if (!block.more) return payload;
      return this.startUpload(peerKey, record, key, payload, now);
    }
    if (up === undefined || block.num * block.size !== up.received) {
      if (up !== undefined) this.dropUpload(up);
      return BLOCK1_INCOMPLETE;
    }
    if (up.received + len > max) {
      this.dropUpload(up);
      return BLOCK1_TOO_LARGE;
    }
    if (!this.reserve(up, up.received + len)) {
      this.dropUpload(up);
      return BLOCK1_BUSY;
    }
    payload.copy(up.data, up.received);
    up.received += len;
    up.lastActive = now;
    this.uploads.touch(up);
    if (block.more) {
      this.uploadGauges();
      return BLOCK1_CONTINUE;
    }
    // the upload's own buffer is handed over (no copy); it holds at most twice the body
    const body = up.data.subarray(0, up.received);
    this.removeUpload(up);
    return body;
  }

  /** The body cached for this transfer, if still fresh. */
  findBody(peerKey: string, key: string, now: number): CachedBody | undefined {
    const body = this.peers.get(peerKey)?.bodies?.get(key);
    if (body === undefined) return undefined;
    if (body.expiresAt <= now) {
      this.removeBody(body);
      return undefined;
    }
    return body;
  }

  /**
   * Keeps a response body for Block2 follow-ups, replacing any body of the same transfer
   * and evicting the oldest bodies beyond the caps. A body larger than the byte cap is not
   * kept (its follow-ups will miss).
   */
  storeBody(
    peerKey: string,
    key: string,
    code: number,
    options: readonly CoapOption[],
    payload: Buffer,
    now: number,
  ): void {
    let record = this.peers.get(peerKey);
    const old = record?.bodies?.get(key);
    if (old !== undefined) this.removeBody(old);
    if (payload.length > this.limits.maxBodyBytes || this.limits.maxBodies <= 0) return;
    record = this.peers.get(peerKey); // removeBody may have dropped an empty record
    if (record === undefined) {
      record = new PeerBlocks(peerKey);
      this.peers.set(peerKey, record);
    }
    record.bodies ??= new Map();
    const body = new CachedBody(record, key, code, options, payload, now + this.limits.lifetimeMs);
    record.bodies.set(key, body);
    this.bodies.push(body);
    this.bodyBytes += payload.length;
    while (this.bodies.size > this.limits.maxBodies || this.bodyBytes > this.limits.maxBodyBytes) {
      const head = this.bodies.head;
      if (head === undefined) break;
      this.removeBody(head);
      this.stats.block2Evicted++;
    }
    this.bodyGauges();
  }

  /** Drops expired uploads and bodies from the heads of their queues. */
  sweep(now: number): void {
    const lifetime = this.limits.lifetimeMs;
    for (;;) {
      const up = this.uploads.head;
      if (up === undefined || up.lastActive + lifetime > now) break;
      this.dropUpload(up);
    }
    for (;;) {
      const body = this.bodies.head;
      if (body === undefined || body.expiresAt > now) break;
      this.removeBody(body);
    }
  }

  /** Forgets every transfer of one peer. */
  dropPeer(peerKey: string): void {
    const record = this.peers.get(peerKey);
    if (record === undefined) return;
    if (record.uploads !== undefined) {
      for (const up of [...record.uploads.values()]) this.dropUpload(up);
    }
    if (record.bodies !== undefined) {
      for (const body of [...record.bodies.values()]) this.removeBody(body);
    }
    this.peers.delete(peerKey);
  }

  /** Forgets everything. */
  clear(): void {
    this.uploads.clear();
    this.bodies.clear();
    this.peers.clear();
    this.uploadBytes = 0;
    this.bodyBytes = 0;
    this.uploadGauges();
    this.bodyGauges();
  }

  private startUpload(
    peerKey: string,
    existing: PeerBlocks | undefined,
    key: string,
    payload: Buffer,
    now: number,
  ): Block1Status {
    const { maxUploads, maxUploadBytes, maxUploadsPerPeer } = this.limits;
    let record = existing;
    const mine = record?.uploads;
    if (mine !== undefined && mine.size >= maxUploadsPerPeer) {
      // the peer's least recently active upload gives way to the new one
      let oldest: Upload | undefined;
      for (const up of mine.values()) {
        if (oldest === undefined || up.lastActive < oldest.lastActive) oldest = up;
      }
      if (oldest !== undefined) this.dropUpload(oldest);
    }
    const cost = payload.length + uploadCost(key);
    if (this.uploads.size >= maxUploads || this.uploadBytes + cost > maxUploadBytes) {
      return BLOCK1_BUSY;
    }
    record = this.peers.get(peerKey);
    if (record === undefined) {
      record = new PeerBlocks(peerKey);
      this.peers.set(peerKey, record);
    }
    record.uploads ??= new Map();
    const up = new Upload(record, key, payload.length, now);
    payload.copy(up.data, 0);
    up.received = payload.length;
    record.uploads.set(key, up);
    this.uploads.push(up);
    this.uploadBytes += up.held;
    this.uploadGauges();
    return BLOCK1_CONTINUE;
  }

  /**
   * Makes room for `needed` bytes in the upload's buffer, doubling it (up to maxPayload) so
   * an upload of n blocks copies O(n) bytes in all. False when the global byte budget has no
   * room for the larger buffer.
   */
  private reserve(up: Upload, needed: number): boolean {
    const old = up.data;
    if (needed <= old.length) return true;
    const capacity = Math.min(this.limits.maxPayload, Math.max(needed, old.length * 2));
    const extra = capacity - old.length;
    if (this.uploadBytes + extra > this.limits.maxUploadBytes) return false;
    const data = Buffer.allocUnsafeSlow(capacity);
    old.copy(data, 0, 0, up.received);
    up.data = data;
    up.held += extra;
    this.uploadBytes += extra;
    return true;
  }

  /** Removes an upload that did not complete. */
  private dropUpload(up: Upload): void {
    this.stats.block1Dropped++;
    this.removeUpload(up);
  }

  private removeUpload(up: Upload): void {
    if (!this.uploads.has(up)) return;
    this.uploads.remove(up);
    this.uploadBytes -= up.held;
    const record = up.owner;
    if (record.uploads?.get(up.key) === up) {
      record.uploads.delete(up.key);
      if (record.uploads.size === 0) record.uploads = undefined;
    }
    this.releaseIfEmpty(record);
    this.uploadGauges();
  }

  private removeBody(body: CachedBody): void {
    if (!this.bodies.has(body)) return;
    this.bodies.remove(body);
    this.bodyBytes -= body.payload.length;
    const record = body.owner;
    if (record.bodies?.get(body.key) === body) {
      record.bodies.delete(body.key);
      if (record.bodies.size === 0) record.bodies = undefined;
    }
    this.releaseIfEmpty(record);
    this.bodyGauges();
  }

  private releaseIfEmpty(record: PeerBlocks): void {
    if (
      record.uploads === undefined &&
      record.bodies === undefined &&
      this.peers.get(record.key) === record
    ) {
      this.peers.delete(record.key);
    }
  }

  private uploadGauges(): void {
    this.stats.uploads = this.uploads.size;
    this.stats.uploadBytes = this.uploadBytes;
  }

  private bodyGauges(): void {
    this.stats.bodies = this.bodies.size;
    this.stats.bodyBytes = this.bodyBytes;
  }
}
