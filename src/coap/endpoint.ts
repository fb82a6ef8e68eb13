/**
 * CoAP exchange layer over an authenticated datagram channel (RFC 7252 §4, §5.2; RFC 7959).
 * It knows nothing of DTLS: a peer is anything with a key, a principal and a `send`.
 *
 * What it does with each datagram from a peer:
 * - decodes it; malformed or wrongly shaped messages are rejected as RFC 7252 §4.2/§4.3
 *   say (RST for a CON, silence otherwise), a CoAP ping (Empty CON) gets an RST;
 * - ACK and RST messages settle our separate CON responses (§4.2);
 * - a request is looked up in the deduplication cache by peer and message ID (§4.5): a
 *   duplicate CON is answered with the cached datagram (the response, or the empty ACK
 *   while/after a separate response is under way), never handed to the handler again;
 *   a duplicate NON is ignored;
 * - unrecognised critical options get 4.02 (§5.4.1); the first block of a Block1 upload
 *   goes to the `admit` hook, which may refuse the whole upload before anything is kept;
 *   Block1 uploads are reassembled (RFC 7959 §2.3, 2.31 Continue / 4.08 / 4.13 with Size1,
 *   5.03 when the upload caps are reached), Block2 follow-ups are served from a body cache
 *   (§2.4) without calling the handler;
 * - otherwise the handler gets the request with its complete payload. A reply ready at
 *   once, or within `ackTimeoutMs`, is piggybacked on the ACK; a later one follows an empty
 *   ACK as a separate CON response, retransmitted until acknowledged (§5.2.2, §4.2). NON
 *   requests get NON responses (§5.2.3). Large replies go out block-wise (Block2).
 *
 * Hot path (a request answered synchronously): no closure, no JSON, no Buffer.concat; the
 * response is encoded once and the same bytes are cached for duplicates.
 *
 * Retained data: the endpoint keeps views into a received datagram while its exchange is in
 * flight (the request message), so callers must not reuse a datagram buffer after handing
 * it to {@link CoapEndpoint.receive}. Block1 blocks are copied out: an upload holds the
 * bytes its blocks carried, not the datagrams. A request padded with more than a few bytes
 * of options nobody understands is copied without them before it is handed on, so what an
 * exchange in flight keeps alive is its real size, not its datagram's.
 *
 * @module
 */
import {
  BLOCK1_BAD,
  BLOCK1_BUSY,
  BLOCK1_INCOMPLETE,
  BLOCK1_TOO_LARGE,
  BlockStore,
  transferKey,
  type CachedBody,
} from './blockwise.js';
import { decodeWire, encode, type CoapMessage, type CoapOption } from './codec.js';
import {
  ACK,
  ACK_RANDOM_FACTOR,
  ACK_TIMEOUT_MS,
  CON,
  Code,
  EXCHANGE_LIFETIME_MS,
  MAX_RETRANSMIT,
  NON,
  NON_LIFETIME_MS,
  OptionNumber,
  RST,
  isRequestCode,
  isResponseCode,
} from './constants.js';
import { DROPPED, DedupCache, IN_PROGRESS, type DedupEntry } from './dedup.js';
import { CoapFormatError } from './errors.js';
import { publishDuplicate } from './events.js';
import {
  blockSizeToSzx,
  decodeBlock,
  decodeUint,
  encodeBlock,
  encodeUint,
  type BlockOption,
} from './options.js';
import { Retransmitter } from './retransmit.js';
import { CoapStats } from './stats.js';
import { systemClock, TimerQueue, type Clock, type Timed } from '../time/clock.js';

/** An authenticated datagram channel to one peer; a DTLS association implements it directly. */
export interface CoapPeer<I> {
  /** Stable per association (address and port). */
  readonly key: string;
  /** Who the channel authenticated, or undefined on the plain (development) port. */
  readonly principal: I;
  /**
   * Largest datagram the peer takes (a DTLS association: the device's record size limit,
   * RFC 8449 / RFC 6066). Responses are cut into Block2 blocks small enough for it; absent:
   * no limit beyond the block size.
   */
  readonly maxMessage?: number;
  /** Sends one datagram; false when the channel is closed or it is too large. */
  send(datagram: Buffer): boolean;
}

/**
 * A request as the handler sees it. Path and query are left to the application
 * (`uriPath(req.message)`, `uriQuery(req.message)` in options.ts): parsing them here would
 * cost string allocations on every request whether or not they are used.
 */
export interface CoapRequest<I> {
  readonly peer: CoapPeer<I>;
  /**
   * The (last) message of the request: type, code, token and options. After a Block1
   * transfer its payload is only the last block; use {@link CoapRequest.payload}.
   */
  readonly message: CoapMessage;
  /** The complete request body, reassembled from Block1 blocks when there were any. */
  readonly payload: Buffer;
  /** The method code (`Code.GET`, `Code.POST`, …), i.e. `message.code`. */
  readonly method: number;
  /** True for a CON request (the peer expects at-least-once handling). */
  readonly confirmable: boolean;
}

/**
 * A handler's answer. Any options may be given, including private ones such as 2100/2102
 * (the encoder sorts them); Block1, Block2 and Size2 belong to this layer and are replaced
 * when it adds its own. Put no internal error text in `payload`.
 */
export interface CoapReply {
  /** A response code: class 2, 4 or 5 (anything else is answered 5.00). */
  readonly code: number;
  readonly options?: readonly CoapOption[];
  readonly payload?: Buffer;
}

export type CoapRequestHandler<I> = (req: CoapRequest<I>) => CoapReply | Promise<CoapReply>;

/**
 * Admission of a Block1 upload, asked with its first block (num 0, more to come) before
 * any state is kept for it: a CoAP error code (class 4 or 5) refuses the upload and is the
 * answer; undefined admits it. `req.payload` is that first block only. The later blocks are
 * matched to the admitted transfer by peer, method and URI, so they are not asked about.
 */
export type CoapAdmission<I> = (req: CoapRequest<I>) => number | undefined;

/**
 * Options the application of this project understands (RFC 7252 §5.4.1): Uri-Host,
 * Uri-Port, Uri-Path, Uri-Query, Content-Format, Accept, Block1, Block2, Size1, Size2 and
 * the EnOS private options 2100/2102 (elective anyway). Only odd (critical) numbers matter.
 */
const DEFAULT_UNDERSTOOD_OPTIONS: ReadonlySet<number> = new Set<number>([
  OptionNumber.URI_HOST,
  OptionNumber.URI_PORT,
  OptionNumber.URI_PATH,
  OptionNumber.CONTENT_FORMAT,
  OptionNumber.URI_QUERY,
  OptionNumber.ACCEPT,
  OptionNumber.BLOCK2,
  OptionNumber.BLOCK1,
  OptionNumber.SIZE2,
  OptionNumber.SIZE1,
  OptionNumber.COMMAND_TOPIC,
  OptionNumber.COMMAND_PAYLOAD,
]);

/** Construction options of a {@link CoapEndpoint}; the bounds a setting defines are required, the others have defaults. */
export interface CoapEndpointOptions<I> {
  readonly handler: CoapRequestHandler<I>;
  /**
   * Asked before a Block1 upload starts (see {@link CoapAdmission}); lets the application
   * refuse what it would refuse anyway (path, rights) before any body is reassembled.
   * Default: every upload is admitted.
   */
  readonly admit?: CoapAdmission<I>;
  /** Handler exceptions and rejections, and replies that cannot be encoded. */
  readonly onError?: (err: unknown) => void;
  /**
   * Told of each duplicate request (§4.5) after it was handled here; `resent` is true when
   * the cached answer went out again. The handler never sees duplicates.
   */
  readonly onDuplicate?: (peer: CoapPeer<I>, message: CoapMessage, resent: boolean) => void;
  /**
   * Milliseconds to wait for an asynchronous handler before an empty ACK goes out and the
   * answer follows as a separate CON response; 0: always separate (also for replies ready
   * at once); -1: always piggybacked, never an empty ACK (setting `ackTimeoutMs`).
   */
  readonly ackTimeoutMs: number;
  /** Largest request body, also after Block1 reassembly; beyond it 4.13 (`maxPayload`). */
  readonly maxPayload: number;
  /** Largest response payload per message (16-1024, power of two; setting `blockSize`). */
  readonly blockSize: number;
  /**
   * Option numbers the application understands; a request with any other critical option
   * gets 4.02 (CON) or is dropped (NON). Block1/Block2 are always understood (this layer
   * implements them). `null` turns the check off. Default {@link DEFAULT_UNDERSTOOD_OPTIONS}.
   */
  readonly understoodOptions?: Iterable<number> | null;
  /** Most completed exchanges remembered for deduplication, all peers. Default 100000. */
  readonly dedupMaxEntries?: number;
  /** Most bytes of cached response datagrams, all peers. Default 32 MiB. */
  readonly dedupMaxBytes?: number;
  /** EXCHANGE_LIFETIME (RFC 7252 §4.8.2); default 247 s. */
  readonly exchangeLifetimeMs?: number;
  /** NON_LIFETIME (RFC 7252 §4.8.2); default 145 s. */
  readonly nonLifetimeMs?: number;
  /** ACK_TIMEOUT for separate CON responses (RFC 7252 §4.8); default 2000. */
  readonly retransmitTimeoutMs?: number;
  /** ACK_RANDOM_FACTOR (RFC 7252 §4.8); default 1.5. */
  readonly retransmitRandomFactor?: number;
  /** MAX_RETRANSMIT (RFC 7252 §4.8); default 4. */
  readonly maxRetransmit?: number;
  /** Block1 uploads and Block2 bodies expire this long after last use / creation. Default 120 s. */
  readonly blockLifetimeMs?: number;
  /** Concurrent Block1 uploads per peer (at least 1); a new one replaces the oldest. */
  readonly maxUploadsPerPeer: number;
  /** Concurrent Block1 uploads, all peers; beyond it 5.03 (setting `maxUploads`). */
  readonly maxUploads: number;
  /**
   * Bytes held by Block1 uploads, all peers (buffers as allocated, keys, bookkeeping);
   * beyond it 5.03 (setting `maxUploadBytes`).
   */
  readonly maxUploadBytes: number;
  /** Response bodies kept for Block2 follow-ups, all peers; oldest evicted. Default 1000. */
  readonly maxBodies?: number;
  /** Bytes of kept response bodies, all peers; oldest evicted. Default 16 MiB. */
  readonly maxBodyBytes?: number;
  /**
   * Handlers running plus separate responses awaiting their ACK, all peers; a new request
   * beyond it gets 5.03 with Max-Age. Default 50000.
   */
  readonly maxInFlight?: number;
  /** Max-Age (seconds) on 5.03 answers to overload. Default 5. */
  readonly busyMaxAgeS?: number;
  /** How often expired cache entries are dropped. Default 5000. */
  readonly sweepIntervalMs?: number;
  /** Clock and host timer (tests inject a `ManualClock`). */
  readonly clock?: Clock;
  /** Uniform random in [0, 1) for retransmission jitter and message IDs. */
  readonly random?: () => number;
}

const EMPTY = Buffer.alloc(0);
/**
 * Bytes of ignored (unknown elective) options a request may carry and still be handed on
 * as views into its datagram; beyond it the request is copied without them.
 */
const MAX_IGNORED_BYTES_KEPT = 64;
const NO_OPTIONS: readonly CoapOption[] = Object.freeze([]);
const INTERNAL_ERROR: CoapReply = Object.freeze({ code: Code.INTERNAL_SERVER_ERROR });

/** Byte 0 of an Empty ACK / RST: version 1, type, TKL 0 (RFC 7252 §3). */
const EMPTY_ACK_B0 = 0x40 | (ACK << 4);
const EMPTY_RST_B0 = 0x40 | (RST << 4);

function emptyMessage(b0: number, messageId: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b[0] = b0;
  b[1] = 0;
  b[2] = messageId >>> 8;
  b[3] = messageId & 0xff;
  return b;
}

/** Safe methods may be re-run to serve a Block2 block nobody cached (RFC 7252 §5.1). */
function isSafeMethod(code: number): boolean {
  return code === Code.GET || code === Code.FETCH;
}

function positive(v: number | undefined, dflt: number, name: string): number {
  return nonNegative(v ?? dflt, name);
}

function nonNegative(n: number, name: string): number {
  if (!Number.isFinite(n) || n < 0) throw new RangeError(`${name} must be a number >= 0`);
  return n;
}

/** An asynchronous exchange: a request whose handler returned a promise. */
class Exchange<I> implements Timed {
  dueAt = 0;
  heapIndex = -1;
  /** An empty ACK went out: the reply becomes a separate response. */
  acked = false;
  /** The handler's promise settled. */
  settled = false;

  constructor(
    readonly endpoint: CoapEndpoint<I>,
    readonly peer: CoapPeer<I>,
    readonly message: CoapMessage,
    readonly entry: DedupEntry,
    readonly block1: BlockOption | undefined,
    readonly block2: BlockOption | undefined,
  ) {}

  /** The ACK timeout passed. */
  onTimer(): void {
    this.endpoint.exchangeTimedOut(this);
  }
}

/**
 * The latest asynchronous exchange, held until the next one: with no Exchange alive a full GC
 * frees the maps of its fields and deoptimizes the request path compiled against them (see
 * NATIVE_BUFFER_MAP_HOLDER in src/dtls/record-cipher.ts).
 */
const latest: { exchange: object | undefined } = { exchange: undefined };

/** Periodic expiry of the caches; scheduled only while they hold something. */
class Sweeper implements Timed {
  dueAt = 0;
  heapIndex = -1;
  constructor(private readonly target: { sweep(now: number): void }) {}
  onTimer(now: number): void {
    this.target.sweep(now);
  }
}

/**
 * The CoAP exchange layer for all peers of one socket (or DTLS server): call
 * {@link receive} with every datagram, {@link peerClosed} when a peer's channel closes,
 * {@link close} on shutdown.
 */
export class CoapEndpoint<I> {
  readonly stats = new CoapStats();
  private readonly handler: CoapRequestHandler<I>;
  private readonly admit: CoapAdmission<I> | undefined;
  private readonly onError: ((err: unknown) => void) | undefined;
  private readonly onDuplicate: CoapEndpointOptions<I>['onDuplicate'];
  private readonly clock: Clock;
  private readonly timers: TimerQueue;
  private readonly dedup: DedupCache;
  private readonly blocks: BlockStore;
  private readonly retransmit: Retransmitter;
  /** Drains waiting for no exchange in flight ({@link whenIdle}). */
  private readonly idleWaiters: (() => void)[] = [];
  private readonly sweeper: Sweeper;
  private readonly understood: ReadonlySet<number> | undefined;
  private readonly ackTimeoutMs: number;
  private readonly maxPayload: number;
  private readonly blockSize: number;
  private readonly blockSzx: number;
  private readonly maxInFlight: number;
  private readonly sweepIntervalMs: number;
  private readonly tooLargeOptions: readonly CoapOption[];
  private readonly busyOptions: readonly CoapOption[];
  private closed = false;

  constructor(opts: CoapEndpointOptions<I>) {
    this.handler = opts.handler;
    this.admit = opts.admit;
    this.onError = opts.onError;
    this.onDuplicate = opts.onDuplicate;
    this.clock = opts.clock ?? systemClock;
    const random = opts.random ?? Math.random;
    this.timers = new TimerQueue(this.clock);

    const ackTimeoutMs = opts.ackTimeoutMs;
    if (!Number.isFinite(ackTimeoutMs) || ackTimeoutMs < -1) {
      throw new RangeError('ackTimeoutMs must be -1, 0 or a positive number');
    }
    this.ackTimeoutMs = ackTimeoutMs;
    this.maxPayload = nonNegative(opts.maxPayload, 'maxPayload');
    this.blockSize = opts.blockSize;
    this.blockSzx = blockSizeToSzx(this.blockSize);
    this.maxInFlight = positive(opts.maxInFlight, 50_000, 'maxInFlight');
    this.sweepIntervalMs = Math.max(1, positive(opts.sweepIntervalMs, 5000, 'sweepIntervalMs'));
    this.tooLargeOptions = [{ number: OptionNumber.SIZE1, value: encodeUint(this.maxPayload) }];
    this.busyOptions = [
      {
        number: OptionNumber.MAX_AGE,
        value: encodeUint(positive(opts.busyMaxAgeS, 5, 'busyMaxAgeS')),
      },
    ];

    if (opts.understoodOptions === null) {
      this.understood = undefined;
    } else {
      const set = new Set<number>(opts.understoodOptions ?? DEFAULT_UNDERSTOOD_OPTIONS);
      set.add(OptionNumber.BLOCK1);
      set.add(OptionNumber.BLOCK2);
      this.understood = set;
    }

    this.dedup = new DedupCache(
      {
        maxEntries: positive(opts.dedupMaxEntries, 100_000, 'dedupMaxEntries'),
        maxBytes: positive(opts.dedupMaxBytes, 32 * 1024 * 1024, 'dedupMaxBytes'),
        exchangeLifetimeMs: positive(
          opts.exchangeLifetimeMs,
          EXCHANGE_LIFETIME_MS,
          'exchangeLifetimeMs',
        ),
        nonLifetimeMs: positive(opts.nonLifetimeMs, NON_LIFETIME_MS, 'nonLifetimeMs'),
      },
      this.stats,
      random,
    );
    this.blocks = new BlockStore(
      {
        maxPayload: this.maxPayload,
        lifetimeMs: positive(opts.blockLifetimeMs, 120_000, 'blockLifetimeMs'),
        maxUploadsPerPeer: Math.max(1, nonNegative(opts.maxUploadsPerPeer, 'maxUploadsPerPeer')),
        maxUploads: nonNegative(opts.maxUploads, 'maxUploads'),
        maxUploadBytes: nonNegative(opts.maxUploadBytes, 'maxUploadBytes'),
        maxBodies: positive(opts.maxBodies, 1000, 'maxBodies'),
        maxBodyBytes: positive(opts.maxBodyBytes, 16 * 1024 * 1024, 'maxBodyBytes'),
      },
      this.stats,
    );
    this.retransmit = new Retransmitter(
      {
        ackTimeoutMs: positive(opts.retransmitTimeoutMs, ACK_TIMEOUT_MS, 'retransmitTimeoutMs'),
        ackRandomFactor: Math.max(
          1,
          positive(opts.retransmitRandomFactor, ACK_RANDOM_FACTOR, 'retransmitRandomFactor'),
        ),
        maxRetransmit: positive(opts.maxRetransmit, MAX_RETRANSMIT, 'maxRetransmit'),
      },
      this.timers,
      this.stats,
      random,
      () => this.checkIdle(),
    );
    this.sweeper = new Sweeper(this);
  }

  /**
   * Resolves once no exchange is in flight and no separate response waits for its ACK (a
   * draining pod waits for this, or for its deadline).
   */
  whenIdle(): Promise<void> {
    if (this.inFlight() === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private inFlight(): number {
    return this.stats.exchangesInFlight + this.stats.separateInFlight;
  }

  private checkIdle(): void {
    if (this.idleWaiters.length === 0 || this.inFlight() !== 0) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Handles one datagram (one CoAP message) from a peer. Never throws for bad input. */
  receive(peer: CoapPeer<I>, datagram: Buffer): void {
    if (this.closed) return;
    this.stats.messagesIn++;
    let msg: CoapMessage;
    try {
      msg = decodeWire(datagram);
    } catch (err) {
      if (!(err instanceof CoapFormatError)) throw err;
      this.stats.malformed++;
      if (err.reaction === 'reset' && err.messageId !== undefined) this.reset(peer, err.messageId);
      return;
    }
    const type = msg.type;
    const code = msg.code;
    if (type === ACK || type === RST) {
      this.onAckOrReset(peer, msg);
      return;
    }
    if (code === Code.EMPTY) {
      if (type === CON) {
        // CoAP ping (RFC 7252 §4.3): answered with RST
        this.stats.pings++;
        this.reset(peer, msg.messageId);
      } else {
        // a NON must not be Empty (§4.3): rejected, i.e. ignored
        this.stats.malformed++;
      }
      return;
    }
    if (!isRequestCode(code)) {
      // a response we never asked for, or a reserved class 1/6/7 (§4.2, §4.3, §12.1):
      // reject a CON with RST, ignore a NON
      if (isResponseCode(code)) this.stats.ignored++;
      else this.stats.malformed++;
      if (type === CON) this.reset(peer, msg.messageId);
      return;
    }
    const now = this.clock.now();
    const dup = this.dedup.find(peer.key, msg.messageId, now);
    if (dup !== undefined) {
      this.stats.duplicates++;
      const bytes = type === CON ? dup.bytes : undefined;
      if (bytes !== undefined) {
        this.stats.duplicateResends++;
        peer.send(bytes);
      }
      publishDuplicate(this.stats, msg.messageId, bytes !== undefined);
      this.onDuplicate?.(peer, msg, bytes !== undefined);
      return;
    }
    this.stats.requests++;
    const entry = this.dedup.begin(peer.key, msg.messageId, type === CON, now);
    this.onRequest(peer, msg, entry, now);
    if (this.sweeper.heapIndex < 0) this.timers.schedule(this.sweeper, now + this.sweepIntervalMs);
  }

  /**
   * Forgets everything about one peer: deduplication entries, block-wise transfers and
   * separate responses still being retransmitted. Call it when the peer's DTLS association
   * closes. Handlers still running for it complete, but their replies are dropped.
   */
  peerClosed(key: string): void {
    this.dedup.dropPeer(key);
    this.blocks.dropPeer(key);
    this.retransmit.dropPeer(key);
  }

  /** Stops all timers and drops all state; later datagrams are ignored. */
  close(): void {
    this.closed = true;
    this.timers.clear();
    this.retransmit.clear();
    this.dedup.clear();
    this.blocks.clear();
  }

  /** @internal Drops expired cache entries; reschedules itself while state remains. */
  sweep(now: number): void {
    // a large backlog of expired entries goes in batches, one per turn of the loop
    const more = this.dedup.sweep(now);
    this.blocks.sweep(now);
    if (more) this.timers.schedule(this.sweeper, now + 1);
    else if (!this.dedup.empty || !this.blocks.empty) {
      this.timers.schedule(this.sweeper, now + this.sweepIntervalMs);
    }
  }

  /** @internal The ACK timeout of an asynchronous exchange passed: send the empty ACK. */
  exchangeTimedOut(ex: Exchange<I>): void {
    if (ex.settled || ex.acked || ex.entry.state !== IN_PROGRESS) return;
    this.sendEmptyAck(ex.peer, ex.message, ex.entry);
    ex.acked = true;
  }

  // ---------------------------------------------------------------------------------------

  private onAckOrReset(peer: CoapPeer<I>, msg: CoapMessage): void {
    if (msg.code !== Code.EMPTY) {
      // An RST must be Empty; an ACK carrying a request is malformed; an ACK carrying a
      // response answers a request we never sent. All are silently ignored (§4.2).
      if (msg.type === RST || isRequestCode(msg.code)) this.stats.malformed++;
      else this.stats.ignored++;
      return;
    }
    if (!this.retransmit.settle(peer.key, msg.messageId, msg.type === RST)) this.stats.ignored++;
  }

  private onRequest(peer: CoapPeer<I>, msg: CoapMessage, entry: DedupEntry, now: number): void {
    // One pass over the options: options we do not understand (critical ones refuse the
    // request, elective ones are ignored and their bytes counted), and the block options.
    let unknownCritical = false;
    let ignoredBytes = 0;
    let block1Raw: Buffer | undefined;
    let block2Raw: Buffer | undefined;
    let size1Raw: Buffer | undefined;
    const understood = this.understood;
    const options = msg.options;
    for (let i = 0; i < options.length; i++) {
      const o = options[i];
      if (o === undefined) continue;
      const n = o.number;
      if (n === OptionNumber.BLOCK1) block1Raw ??= o.value;
      else if (n === OptionNumber.BLOCK2) block2Raw ??= o.value;
      else if (n === OptionNumber.SIZE1) size1Raw ??= o.value;
      else if (understood !== undefined && !understood.has(n)) {
        if ((n & 1) === 1) unknownCritical = true;
        else ignoredBytes += o.value.length;
      }
    }
    if (unknownCritical) {
      // RFC 7252 §5.4.1: 4.02 for a CON; a NON is rejected (§4.3: ignored)
      this.stats.badOptions++;
      if (msg.type === CON)
        this.finish(peer, msg, entry, Code.BAD_OPTION, NO_OPTIONS, EMPTY, false, now);
      else this.dedup.complete(entry, undefined, now);
      return;
    }
    // Whatever is handed on (handler, exchange in flight) is a view into its datagram, so
    // padding in ignored options would stay alive with it: past a few bytes of such
    // padding the request is rebuilt without those options, in a buffer of its real size.
    if (ignoredBytes > MAX_IGNORED_BYTES_KEPT && understood !== undefined) {
      msg = withoutIgnoredOptions(msg, understood);
    }

    let block1: BlockOption | undefined;
    let block2: BlockOption | undefined;
    if (block1Raw !== undefined) {
      block1 = decodeBlock(block1Raw);
      if (block1 === undefined)
        return this.layerReply(peer, msg, entry, Code.BAD_REQUEST, NO_OPTIONS, now);
    }
    if (block2Raw !== undefined) {
      block2 = decodeBlock(block2Raw);
      if (block2 === undefined)
        return this.layerReply(peer, msg, entry, Code.BAD_REQUEST, NO_OPTIONS, now);
    }
    const size1 = size1Raw !== undefined ? decodeUint(size1Raw) : undefined;

    // Block2 follow-up (RFC 7959 §2.4): served from the body cache, handler not called.
    if (block2 !== undefined && block2.num > 0 && (block1 === undefined || !block1.more)) {
      const body = this.blocks.findBody(peer.key, transferKey(msg), now);
      if (body !== undefined) {
        this.serveBlock(peer, msg, entry, body, block2, now);
        return;
      }
      this.stats.block2Misses++;
      // Re-running an unsafe method would repeat its effect (e.g. a second publish).
      if (!isSafeMethod(msg.code)) {
        return this.layerReply(peer, msg, entry, Code.REQUEST_ENTITY_INCOMPLETE, NO_OPTIONS, now);
      }
      block1 = undefined; // random access to a GET: the reply is sliced at block2.num
    }

    let payload = msg.payload;
    if (block1 !== undefined) {
      if (block1.num === 0 && block1.more && this.admit !== undefined) {
        const refused = this.admission(this.admit, peer, msg);
        if (refused !== undefined) {
          this.stats.block1Refused++;
          return this.layerReply(peer, msg, entry, refused, NO_OPTIONS, now);
        }
      }
      const r = this.blocks.offerBlock1(peer.key, transferKey(msg), block1, payload, size1, now);
      if (typeof r === 'number') {
        switch (r) {
          case BLOCK1_INCOMPLETE:
            this.stats.block1Incomplete++;
            return this.layerReply(
              peer,
              msg,
              entry,
              Code.REQUEST_ENTITY_INCOMPLETE,
              NO_OPTIONS,
              now,
            );
          case BLOCK1_TOO_LARGE:
            this.stats.block1TooLarge++;
            return this.layerReply(
              peer,
              msg,
              entry,
              Code.REQUEST_ENTITY_TOO_LARGE,
              this.tooLargeOptions,
              now,
            );
          case BLOCK1_BAD:
            return this.layerReply(peer, msg, entry, Code.BAD_REQUEST, NO_OPTIONS, now);
          case BLOCK1_BUSY:
            this.stats.overloaded++;
            return this.layerReply(
              peer,
              msg,
              entry,
              Code.SERVICE_UNAVAILABLE,
              this.busyOptions,
              now,
            );
          default: {
            // 2.31 Continue echoing the block (RFC 7959 §2.3, §2.9.1)
            this.stats.block1Continues++;
            const echo: CoapOption[] = [
              {
                number: OptionNumber.BLOCK1,
                value: encodeBlock({ num: block1.num, more: true, szx: block1.szx }),
              },
            ];
            return this.layerReply(peer, msg, entry, Code.CONTINUE, echo, now);
          }
        }
      }
      payload = r;
      this.stats.block1Completed++;
    } else if (
      payload.length > this.maxPayload ||
      (size1 !== undefined && size1 > this.maxPayload)
    ) {
      this.stats.tooLarge++;
      return this.layerReply(
        peer,
        msg,
        entry,
        Code.REQUEST_ENTITY_TOO_LARGE,
        this.tooLargeOptions,
        now,
      );
    }

    if (this.stats.exchangesInFlight + this.stats.separateInFlight >= this.maxInFlight) {
      this.stats.overloaded++;
      return this.layerReply(peer, msg, entry, Code.SERVICE_UNAVAILABLE, this.busyOptions, now);
    }

    const req: CoapRequest<I> = {
      peer,
      message: msg,
      payload,
      method: msg.code,
      confirmable: msg.type === CON,
    };
    let result: CoapReply | Promise<CoapReply>;
    try {
      result = this.handler(req);
    } catch (err) {
      this.failed(err);
      result = INTERNAL_ERROR;
    }
    if (result instanceof Promise) {
      this.startAsync(peer, msg, entry, result, block1, block2, now);
      return;
    }
    let separate = false;
    if (this.ackTimeoutMs === 0 && msg.type === CON) {
      // "always separate": empty ACK first, then the answer as a CON
      this.sendEmptyAck(peer, msg, entry);
      separate = true;
    }
    this.respond(peer, msg, entry, result, block1, block2, separate, now);
  }

  /** Asks the admission hook about an upload's first block; the refusal code, if any. */
  private admission(
    admit: CoapAdmission<I>,
    peer: CoapPeer<I>,
    msg: CoapMessage,
  ): number | undefined {
    let code: number | undefined;
    try {
      code = admit({
        peer,
        message: msg,
        payload: msg.payload,
        method: msg.code,
        confirmable: msg.type === CON,
      });
    } catch (err) {
      this.failed(err);
      return Code.INTERNAL_SERVER_ERROR;
    }
    if (code === undefined) return undefined;
    // class 4 (0x80-0x9f) or class 5 (0xa0-0xbf)
    if (!Number.isInteger(code) || code < 0x80 || code > 0xbf) {
      this.failed(new RangeError('admission code is not a 4.xx or 5.xx response code'));
      return Code.INTERNAL_SERVER_ERROR;
    }
    return code;
  }

  private startAsync(
    peer: CoapPeer<I>,
    msg: CoapMessage,
    entry: DedupEntry,
    promise: Promise<CoapReply>,
    block1: BlockOption | undefined,
    block2: BlockOption | undefined,
    now: number,
  ): void {
    const ex = new Exchange<I>(this, peer, msg, entry, block1, block2);
    latest.exchange = ex;
    this.stats.exchangesInFlight++;
    if (msg.type === CON) {
      if (this.ackTimeoutMs === 0) {
        this.sendEmptyAck(peer, msg, entry);
        ex.acked = true;
      } else if (this.ackTimeoutMs > 0) {
        this.timers.schedule(ex, now + this.ackTimeoutMs);
      }
    }
    promise.then(
      (reply) => this.settle(ex, reply),
      (err: unknown) => {
        this.failed(err);
        this.settle(ex, INTERNAL_ERROR);
      },
    );
  }

  private settle(ex: Exchange<I>, reply: CoapReply): void {
    if (ex.settled) return;
    ex.settled = true;
    this.stats.exchangesInFlight--;
    if (this.idleWaiters.length > 0) queueMicrotask(() => this.checkIdle());
    this.timers.cancel(ex);
    if (this.closed || ex.entry.state === DROPPED) {
      this.stats.orphanedResponses++;
      return;
    }
    this.respond(
      ex.peer,
      ex.message,
      ex.entry,
      reply,
      ex.block1,
      ex.block2,
      ex.acked,
      this.clock.now(),
    );
  }

  /**
   * Turns a handler's reply into the response: validates the code, echoes Block1 after an
   * upload (RFC 7959 §2.3), splits a payload larger than the block size into Block2
   * blocks (§2.4), and sends it.
   */
  private respond(
    peer: CoapPeer<I>,
    msg: CoapMessage,
    entry: DedupEntry,
    reply: CoapReply,
    block1: BlockOption | undefined,
    block2: BlockOption | undefined,
    separate: boolean,
    now: number,
  ): void {
    if (!isResponseCode(reply.code)) {
      this.failed(new RangeError('handler reply code is not a response code'));
      reply = INTERNAL_ERROR;
    }
    let code = reply.code;
    let options = reply.options ?? NO_OPTIONS;
    let payload = reply.payload ?? EMPTY;

    // Block2 size: ours, or the smaller one the client asked for (RFC 7959 §2.4), or smaller
    // still so that a whole block fits the peer's largest message.
    let szx = block2 !== undefined && block2.szx < this.blockSzx ? block2.szx : this.blockSzx;
    let split = payload.length > 1 << (szx + 4) || (block2 !== undefined && block2.num > 0);
    const limit = peer.maxMessage;
    if (limit !== undefined) {
      let room = limit - messageOverhead(msg.token.length, options);
      if (room < MIN_BLOCK && hasOption(options, OptionNumber.COMMAND_PAYLOAD)) {
        // not even the smallest block fits beside the inline command: the command goes
        // without it (elective; the device fetches it, docs/protocol.md "Commands")
        options = options.filter(isNotCommandPayload);
        room = limit - messageOverhead(msg.token.length, options);
        this.stats.commandsNotInlined++;
      }
      if (payload.length > room && payload.length > 0) split = true;
      while (szx > 0 && 1 << (szx + 4) > room) szx--;
      if ((split ? 1 << (szx + 4) : payload.length) > room) this.stats.tooLargeForPeer++;
    }
    // a larger requested size is answered with ours and the num scaled (§2.4)
    const num = block2 !== undefined ? (block2.num << block2.szx) >>> szx : 0;
    const size = 1 << (szx + 4);
    if (block1 !== undefined || split) {
      const base = withoutBlockOptions(options);
      const out: CoapOption[] = base.slice();
      if (block1 !== undefined) {
        out.push({
          number: OptionNumber.BLOCK1,
          value: encodeBlock({ num: block1.num, more: false, szx: block1.szx }),
        });
      }
      if (split) {
        const total = payload.length;
        const offset = num * size;
        if (offset >= total) {
          // random access beyond the end of the representation
          code = Code.BAD_OPTION;
          payload = EMPTY;
        } else {
          const more = offset + size < total;
          if (more) this.blocks.storeBody(peer.key, transferKey(msg), code, base, payload, now);
          if (num === 0) this.stats.block2Transfers++;
          out.push(
            { number: OptionNumber.BLOCK2, value: encodeBlock({ num, more, szx }) },
            { number: OptionNumber.SIZE2, value: encodeUint(total) },
          );
          payload = payload.subarray(offset, offset + size);
        }
      }
      options = out;
    }
    this.finish(peer, msg, entry, code, options, payload, separate, now);
  }

  /** A Block2 follow-up served from the body cache (RFC 7959 §2.4). */
  private serveBlock(
    peer: CoapPeer<I>,
    msg: CoapMessage,
    entry: DedupEntry,
    body: CachedBody,
    block2: BlockOption,
    now: number,
  ): void {
    let szx = block2.szx < this.blockSzx ? block2.szx : this.blockSzx;
    const limit = peer.maxMessage;
    if (limit !== undefined) {
      const room = limit - messageOverhead(msg.token.length, body.options);
      while (szx > 0 && 1 << (szx + 4) > room) szx--;
      if (1 << (szx + 4) > room) this.stats.tooLargeForPeer++;
    }
    const num = (block2.num << block2.szx) >>> szx;
    const size = 1 << (szx + 4);
    const total = body.payload.length;
    const offset = num * size;
    if (offset >= total) {
      this.layerReply(peer, msg, entry, Code.BAD_OPTION, NO_OPTIONS, now);
      return;
    }
    this.stats.block2Served++;
    const more = offset + size < total;
    const options: CoapOption[] = body.options.slice();
    options.push(
      { number: OptionNumber.BLOCK2, value: encodeBlock({ num, more, szx }) },
      { number: OptionNumber.SIZE2, value: encodeUint(total) },
    );
    this.finish(
      peer,
      msg,
      entry,
      body.code,
      options,
      body.payload.subarray(offset, offset + size),
      false,
      now,
    );
  }

  /** A response of the layer itself (2.31, 4.xx, 5.03): always immediate. */
  private layerReply(
    peer: CoapPeer<I>,
    msg: CoapMessage,
    entry: DedupEntry,
    code: number,
    options: readonly CoapOption[],
    now: number,
  ): void {
    this.finish(peer, msg, entry, code, options, EMPTY, false, now);
  }

  /**
   * Encodes and sends the response and records it for duplicates: piggybacked on the ACK
   * (§5.2.1), as a NON for a NON request (§5.2.3), or as a separate CON after the empty
   * ACK (§5.2.2), then retransmitted until acknowledged.
   */
  private finish(
    peer: CoapPeer<I>,
    msg: CoapMessage,
    entry: DedupEntry,
    code: number,
    options: readonly CoapOption[],
    payload: Buffer,
    separate: boolean,
    now: number,
  ): void {
    const confirmable = msg.type === CON;
    const type = !confirmable ? NON : separate ? CON : ACK;
    const messageId = type === ACK ? msg.messageId : this.dedup.nextMessageId(entry);
    let bytes: Buffer;
    try {
      bytes = encode({ type, code, messageId, token: msg.token, options, payload });
    } catch (err) {
      // e.g. an option number or value length the wire format cannot carry
      this.failed(err);
      bytes = encode({
        type,
        code: Code.INTERNAL_SERVER_ERROR,
        messageId,
        token: msg.token,
        options: NO_OPTIONS,
        payload: EMPTY,
      });
    }
    this.stats.responses++;
    if (type === ACK) {
      this.dedup.complete(entry, bytes, now);
      peer.send(bytes);
    } else if (type === NON) {
      // duplicates of a NON are ignored (§4.5), so nothing is cached
      this.dedup.complete(entry, undefined, now);
      peer.send(bytes);
    } else {
      this.stats.separateResponses++;
      // duplicates of the request get the empty ACK again
      this.dedup.complete(entry, entry.bytes ?? emptyMessage(EMPTY_ACK_B0, msg.messageId), now);
      this.retransmit.start(peer, messageId, bytes, now);
    }
  }

  private sendEmptyAck(peer: CoapPeer<I>, msg: CoapMessage, entry: DedupEntry): void {
    const ack = emptyMessage(EMPTY_ACK_B0, msg.messageId);
    this.stats.emptyAcks++;
    this.dedup.acked(entry, ack);
    peer.send(ack);
  }

  private reset(peer: CoapPeer<I>, messageId: number): void {
    this.stats.resets++;
    peer.send(emptyMessage(EMPTY_RST_B0, messageId));
  }

  private failed(err: unknown): void {
    this.stats.handlerErrors++;
    this.onError?.(err);
  }
}

/**
 * The request re-encoded without the elective options nobody understands (RFC 7252 §5.4.1
 * says to ignore them), and decoded from that new, smaller buffer.
 */
function withoutIgnoredOptions(msg: CoapMessage, understood: ReadonlySet<number>): CoapMessage {
  const kept: CoapOption[] = [];
  for (let i = 0; i < msg.options.length; i++) {
    const o = msg.options[i];
    if (o === undefined) continue;
    const n = o.number;
    if (understood.has(n) || n === OptionNumber.SIZE1) kept.push(o);
  }
  return decodeWire(encode({ ...msg, options: kept }));
}

/** The smallest Block2 block (szx 0). */
const MIN_BLOCK = 16;
/**
 * Room the layer's own options may take beyond the handler's: Block1 and Block2 (value ≤ 3
 * bytes) and Size2 (≤ 4), each with a header of at most 5 bytes (RFC 7252 §3.1).
 */
const LAYER_OPTIONS_ROOM = 3 * 5 + 3 + 3 + 4;

/**
 * An upper bound of a response's size without its payload: header, token, the handler's
 * options each with the longest option header, the layer's block options and the payload
 * marker. Cheap (no encoding); a little generous, never short.
 */
function messageOverhead(tokenLength: number, options: readonly CoapOption[]): number {
  let n = 4 + tokenLength + LAYER_OPTIONS_ROOM + 1;
  for (let i = 0; i < options.length; i++) n += 5 + (options[i]?.value.length ?? 0);
  return n;
}

function hasOption(options: readonly CoapOption[], n: number): boolean {
  for (let i = 0; i < options.length; i++) if (options[i]?.number === n) return true;
  return false;
}

function isNotCommandPayload(o: CoapOption): boolean {
  return o.number !== OptionNumber.COMMAND_PAYLOAD;
}

/** The options without Block1, Block2 and Size2 (this layer sets those); no copy if none. */
function withoutBlockOptions(options: readonly CoapOption[]): readonly CoapOption[] {
  let found = false;
  for (let i = 0; i < options.length; i++) {
    const n = options[i]?.number;
    if (n === OptionNumber.BLOCK1 || n === OptionNumber.BLOCK2 || n === OptionNumber.SIZE2) {
      found = true;
      break;
    }
  }
  if (!found) return options;
  return options.filter(isNotBlockOption);
}

function isNotBlockOption(o: CoapOption): boolean {
  return (
    o.number !== OptionNumber.BLOCK1 &&
    o.number !== OptionNumber.BLOCK2 &&
    o.number !== OptionNumber.SIZE2
  );
}
