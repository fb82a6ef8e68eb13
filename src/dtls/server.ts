/**
 * DTLS 1.2 PSK server over any datagram transport (RFC 6347, RFC 4279, RFC 6655, RFC 5487,
 * RFC 7627, RFC 7366, RFC 5746).
 *
 * Why our own: Node has no DTLS, and no npm package is a PSK DTLS server (docs/design.md, "Decisions, and why").
 *
 * One association per peer address and port; with an RFC 9146 Connection ID, records are
 * matched by CID first and the association follows its peer to a new address (§6). Nothing
 * is allocated for a peer until it returns a valid HelloVerifyRequest cookie; handshakes and
 * associations are bounded and evicted (associations by the rules of {@link AssociationTable}, from an admission policy the
 * layer above injects). Invalid records are dropped silently and counted (RFC 6347 §4.1.2.7).
 */
import { randomBytes } from 'node:crypto';
import {
  ContentType,
  HandshakeType,
  MAX_CID_LENGTH,
  MAX_PLAINTEXT,
  cipherSuiteName,
} from './constants.js';
import { Association, type AssociationHost, type DtlsAssociation } from './association.js';
import { HalfOpenAdmission } from './admission.js';
import {
  AssociationTable,
  NO_ADMISSION,
  peerKey,
  type Admission,
  type AdmissionPlan,
  type AdmissionPolicy,
} from './association-table.js';
import { CookieJar } from './cookie.js';
import { EpochState } from './keys.js';
import { createRecordCipher } from './record-cipher.js';
import {
  Lease,
  Sharing,
  type HeldRecord,
  type SharingHost,
  type SharingOptions,
} from './sharing.js';
import { sealSnapshot, type AssociationSnapshot } from './snapshot.js';
import { DtlsError } from './errors.js';
import { publishHandshake } from './events.js';
import { parseClientHello, readFragments } from './handshake.js';
import { ALERT_CLOSE_NOTIFY } from './keys.js';
import {
  NO_TRACING,
  endWithError,
  isTraced,
  startChild,
  withSpan,
  type Tracing,
} from '../telemetry/trace.js';
import { TimerQueue, systemClock, type Clock, type TimerHandle } from '../time/clock.js';
import { helloVerifyRequestRecord, readRecord, type DtlsRecord } from './record.js';
import {
  ServerHandshake,
  type CompletedHandshake,
  type HandshakeHost,
  type HandshakeSettings,
} from './server-handshake.js';
import {
  DtlsStats,
  type CloseReason,
  type HandshakeFailReason,
  type HandshakeFailure,
  type PeerAddress,
  type PskResolution,
} from './types.js';

export interface DtlsServerHandler<P> {
  /** Maps a PSK identity to its key; may be asynchronous (cache, Redis, registry). */
  resolvePsk(identity: Buffer, from: PeerAddress): PskResolution<P> | Promise<PskResolution<P>>;
  /** Application data from an established association. */
  onData(assoc: DtlsAssociation<P>, data: Buffer): void;
  onEstablished?(assoc: DtlsAssociation<P>): void;
  /**
   * An association established elsewhere was taken over from the shared store; `ms` is the
   * time from the first record to the adoption (store round trip included).
   */
  onAdopted?(assoc: DtlsAssociation<P>, ms: number): void;
  /**
   * An operation of the shared association store failed (`op`: create, lookup, lease,
   * fence, remove); counted in `stats.shared` too. Never carries key material.
   */
  onShareError?(op: string, err: unknown): void;
  onClosed?(assoc: DtlsAssociation<P>, reason: CloseReason): void;
  onHandshakeFailed?(failure: HandshakeFailure): void;
  /** An exception escaped a handler or the server itself; the datagram was dropped. */
  onInternalError?(err: unknown): void;
  /**
   * A protected record from a peer we have no association with (by address, or by CID) was
   * dropped. Called at most once per second; `suppressed` counts the drops since the last call.
   */
  onUnknownRecord?(
    from: PeerAddress,
    reason: 'unknown-peer' | 'unknown-cid',
    suppressed: number,
  ): void;
}

export interface DtlsServerOptions<P> {
  /** Writes one datagram to the network. */
  readonly send: (data: Buffer, port: number, address: string) => void;
  readonly handler: DtlsServerHandler<P>;
  /** Suites in order of preference (setting `cipherSuites`). */
  readonly cipherSuites: readonly number[];
  /** Setting `maxAssociations`. */
  readonly maxAssociations: number;
  /**
   * How an association counts for admission: its peer identity (one live association each),
   * its group (capped at `maxPerGroup`) and whether it is restricted (evicted first, never at
   * the cost of an active one). Default: every association alone and unrestricted (plain LRU).
   */
  readonly admission?: AdmissionPolicy<P>;
  /** Most associations per admission group (default: no cap). */
  readonly maxPerGroup?: number;
  /** How long a new association without application data is not yet idle (default 60 s). */
  readonly idleGraceMs?: number;
  /** Setting `maxHandshakes`. */
  readonly maxHandshakes: number;
  /** Most half-open handshakes from one address (setting `maxHandshakesPerAddress`). */
  readonly maxHandshakesPerAddress: number;
  /** Most half-open handshakes from one /24 (IPv4) or /64 (IPv6) (`maxHandshakesPerPrefix`). */
  readonly maxHandshakesPerPrefix: number;
  /**
   * Once the handshake table is half full, a handshake whose client never answered the
   * ServerHello flight is given up after this long instead of the full handshake timeout
   * (setting `stalledHandshakeTimeoutSeconds`). Handshakes that progressed keep the full timeout.
   */
  readonly stalledHandshakeTimeoutMs: number;
  /** Setting `idleTimeoutSeconds`. */
  readonly idleTimeoutMs: number;
  /** Setting `handshakeTimeoutSeconds`. */
  readonly handshakeTimeoutMs: number;
  /** Setting `retransmitTimeoutMs`. */
  readonly retransmitTimeoutMs: number;
  readonly maxRetransmitTimeoutMs?: number;
  /** Setting `cookieLifetimeSeconds`. */
  readonly cookieLifetimeMs: number;
  /** Sent in a ServerKeyExchange when set (RFC 4279 §2); EnOS devices need none. */
  readonly pskIdentityHint?: Buffer;
  /** Tell clients why their PSK was refused instead of one uniform alert (default false). */
  readonly detailedPskAlerts?: boolean;
  /**
   * Length of the RFC 9146 Connection IDs handed to clients that offer the extension
   * (setting `cidLength`; 0: CID is not negotiated). At most 32.
   */
  readonly cidLength: number;
  /**
   * Share associations between servers (pods) through a store: each association is stored
   * after its handshake, and a record for one this server does not hold is looked up and
   * adopted (shared.ts). With sharing, associations pushed out of memory (maxAssociations)
   * or left at shutdown live on in the store instead of being closed.
   */
  readonly shared?: SharingOptions & { readonly principal: PrincipalCodec<P> };
  /** How often idle associations are looked for (default: idle timeout / 10, at most 30 s). */
  readonly sweepIntervalMs?: number;
  /**
   * Most associations the idle sweep checks in one turn of the event loop; a pass over more
   * goes on 1 ms later (default 4096).
   */
  readonly sweepBatch?: number;
  /**
   * Time and timers: flight retransmission, handshake and stalled-handshake timeouts, the
   * verdict timer, the idle sweep, cookie secret rotation (default: the system clock). The
   * layer reads its wall time (`wallNow`): an association's times travel in its snapshot.
   */
  readonly clock?: Clock;
  /**
   * Spans of handshake steps and decrypted records (`dtls.handshake`, `dtls.decrypt`) under
   * the traced datagram's span (default: no tracing).
   */
  readonly tracing?: Tracing;
}

/** How the layer above's principal goes into a shared association's snapshot and back. */
export interface PrincipalCodec<P> {
  encode(p: P): unknown;
  /** Undefined when the value is not a principal (another version wrote it). */
  decode(v: unknown): P | undefined;
}

/** Re-ordering the LRU on every record costs a Map delete+set; once a second is enough. */
const LRU_TOUCH_MS = 1000;
/** Records from unknown peers are reported to the handler at most this often. */
const UNKNOWN_REPORT_MS = 1000;
/** Tries at a fresh random CID before the handshake goes on without one. */
const CID_ATTEMPTS = 8;

export class DtlsServer<P>
  implements AssociationHost, HandshakeHost<P>, SharingHost<Association<P>>
{
  readonly stats = new DtlsStats();
  readonly settings: HandshakeSettings;
  private readonly associations: AssociationTable<Association<P>>;
  private readonly handshakes = new Map<string, ServerHandshake<P>>();
  /** Associations by our Connection ID (latin1 string of its bytes). */
  private readonly byCid = new Map<string, Association<P>>();
  /** CIDs handed out in handshakes not completed yet. */
  private readonly pendingCids = new Set<string>();
  private readonly cidLength: number;
  private unknownReportedAt = -Infinity;
  private unknownSuppressed = 0;
  /** Method-shaped so that a DtlsServer<string> still is a DtlsServer<unknown> for callers. */
  private readonly policy: { admission(identity: string, principal: P): Admission };
  private readonly cookies: CookieJar;
  private readonly handler: DtlsServerHandler<P>;
  private readonly transport: (data: Buffer, port: number, address: string) => void;
  private readonly maxHandshakes: number;
  private readonly admission: HalfOpenAdmission;
  private readonly stalledMs: number;
  private readonly tracing: Tracing;
  private readonly idleTimeoutMs: number;
  private readonly sweeper: TimerHandle;
  private readonly sweepBatch: number;
  /** The idle sweep's pass in progress, and the timer that goes on with it. */
  private sweepCursor: Iterator<Association<P>> | undefined = undefined;
  /** undefined: no pass waiting to go on */
  private sweepMore: TimerHandle = undefined;
  private readonly sweepOn = (): void => {
    this.sweepMore = undefined;
    this.sweep();
  };
  private readonly sharing: Sharing<Association<P>> | undefined;
  private readonly principalCodec: PrincipalCodec<P> | undefined;
  private accepting = true;
  /** A ClientHello of the current datagram was already handled. */
  private helloAnswered = false;
  /** What admit() decided for this handshake, used by completed() in the same turn. */
  private admittedHs: ServerHandshake<P> | undefined;
  private admittedAs: Admission | undefined;
  private admittedPlan: AdmissionPlan<Association<P>> | undefined;
  private closed = false;
  readonly clock: Clock;
  /**
   * Every handshake's timer (HandshakeHost). Lingering: when the last handshake finishes, the
   * host timer is left armed (not holding the process open) and serves the next handshake,
   * whose retransmission deadline is later, instead of a host timer set and cleared each.
   */
  readonly handshakeTimers: TimerQueue;

  constructor(opts: DtlsServerOptions<P>) {
    this.transport = opts.send;
    this.handler = opts.handler;
    this.clock = opts.clock ?? systemClock;
    this.handshakeTimers = new TimerQueue(this.clock, false, 'linger');
    this.tracing = opts.tracing ?? NO_TRACING;
    this.associations = new AssociationTable({
      maxSize: opts.maxAssociations,
      maxPerGroup: opts.maxPerGroup ?? Infinity,
      idleGraceMs: opts.idleGraceMs ?? 60_000,
      touchMs: LRU_TOUCH_MS,
    });
    this.policy = { admission: opts.admission ?? noAdmissionPolicy };
    this.maxHandshakes = opts.maxHandshakes;
    this.admission = new HalfOpenAdmission({
      perAddress: opts.maxHandshakesPerAddress,
      perPrefix: opts.maxHandshakesPerPrefix,
    });
    this.stalledMs = opts.stalledHandshakeTimeoutMs;
    this.idleTimeoutMs = opts.idleTimeoutMs;
    this.cidLength = opts.cidLength;
    if (!Number.isInteger(this.cidLength) || this.cidLength < 0 || this.cidLength > MAX_CID_LENGTH)
      throw new RangeError(`cidLength must be 0..${MAX_CID_LENGTH}`);
    this.settings = {
      cipherSuites: opts.cipherSuites,
      handshakeTimeoutMs: opts.handshakeTimeoutMs,
      retransmitTimeoutMs: opts.retransmitTimeoutMs,
      maxRetransmitTimeoutMs: opts.maxRetransmitTimeoutMs ?? 60_000,
      pskIdentityHint: opts.pskIdentityHint,
      detailedPskAlerts: opts.detailedPskAlerts ?? false,
      cidLength: this.cidLength,
    };
    this.cookies = new CookieJar(opts.cookieLifetimeMs, () => this.now());
    const sweep = opts.sweepIntervalMs ?? Math.min(30_000, Math.max(100, this.idleTimeoutMs / 10));
    this.sweepBatch = Math.max(1, Math.floor(opts.sweepBatch ?? 4096));
    this.sweeper = this.clock.setInterval(() => {
      // a pass still going on continues on its own timer
      if (this.sweepMore === undefined) this.sweep();
    }, sweep);
    this.principalCodec = opts.shared?.principal;
    this.sharing =
      opts.shared === undefined ? undefined : new Sharing(this, opts.shared, this.idleTimeoutMs);
  }

  /** Wall milliseconds from the clock: the time of every deadline and timestamp here. */
  now(): number {
    return this.clock.wallNow();
  }

  /** Whether associations are shared through a store. */
  get sharingOn(): boolean {
    return this.sharing !== undefined;
  }

  get associationCount(): number {
    return this.associations.size;
  }

  get handshakeCount(): number {
    return this.handshakes.size;
  }

  /** Established associations (for shutdown, diagnostics and tests). */
  *listAssociations(): IterableIterator<DtlsAssociation<P>> {
    yield* this.associations.values();
  }

  /** The principal of the association with a peer, if one is established. */
  principalOf(address: string, port: number): P | undefined {
    return this.associations.at(address, port)?.principal;
  }

  /** Whether a handshake with a peer is in progress (after its cookie). */
  handshaking(address: string, port: number): boolean {
    return this.handshakes.size > 0 && this.handshakes.has(peerKey(address, port));
  }

  /** Stop answering new ClientHellos (drain); established associations keep working. */
  stopAccepting(): void {
    this.accepting = false;
  }

  send(data: Buffer, port: number, address: string): void {
    this.transport(data, port, address);
  }

  resolvePsk(identity: Buffer, from: PeerAddress): PskResolution<P> | Promise<PskResolution<P>> {
    return this.handler.resolvePsk(identity, from);
  }

  /**
   * A random Connection ID, checked against the ones in use here. Unpredictable (an off-path
   * attacker cannot guess one to aim records at an association), and unique across pods
   * without coordination: with the default 8 bytes, two of a million live CIDs collide with
   * probability about 2.7e-8 (birthday bound, 2^64 values).
   */
  newConnectionId(): Buffer | undefined {
    for (let i = 0; i < CID_ATTEMPTS; i++) {
      const cid = randomBytes(this.cidLength);
      const k = cid.toString('latin1');
      if (this.byCid.has(k) || this.pendingCids.has(k)) continue;
      this.pendingCids.add(k);
      return cid;
    }
    return undefined;
  }

  /** Entry point for every datagram received on the socket. */
  handleDatagram(buf: Buffer, address: string, port: number): void {
    if (this.closed) return;
    this.stats.datagramsIn++;
    if (buf.length === 0) {
      this.stats.drop('malformed-record');
      return;
    }
    this.helloAnswered = false;
    try {
      let offset = 0;
      while (offset < buf.length) {
        const rec = readRecord(buf, offset, this.cidLength);
        if (rec === undefined) {
          this.stats.drop('malformed-record');
          return;
        }
        offset += rec.length;
        this.stats.recordsIn++;
        this.onRecord(address, port, rec);
      }
    } catch (err) {
      this.handler.onInternalError?.(err);
    }
  }

  /**
   * One record of a datagram. The peer key string is built only off the common path (an
   * established association's protected record, no handshake at the address): the
   * association is found by address and port.
   */
  private onRecord(address: string, port: number, rec: DtlsRecord): void {
    if (rec.epoch === 0) {
      const key = peerKey(address, port);
      if (rec.type === ContentType.handshake && rec.body[0] === HandshakeType.clientHello) {
        // One ClientHello per datagram: a datagram packed with hellos from a spoofed source
        // must not turn into as many answers.
        if (this.helloAnswered) {
          this.stats.drop('unexpected-record');
          return;
        }
        this.helloAnswered = true;
        if (this.tracing.on)
          this.traceHandshake(key, rec, () => this.onClientHello(key, address, port, rec));
        else this.onClientHello(key, address, port, rec);
        return;
      }
      const hs = this.handshakes.get(key);
      if (hs !== undefined) {
        if (this.tracing.on) this.traceHandshake(key, rec, () => hs.onRecord(rec));
        else hs.onRecord(rec);
      } else if (!this.associations.has(key)) this.unknownRecord(address, port, 'unknown-peer');
      // A late retransmission of the client's flight 5, or an alert or data in the clear for
      // an established association: none can be authenticated, all are ignored.
      else this.stats.drop('unexpected-record');
      return;
    }
    if (rec.type === ContentType.tls12Cid) {
      this.onCidRecord(peerKey(address, port), address, port, rec);
      return;
    }
    const assoc = this.associations.at(address, port);
    if (assoc === undefined || (this.handshakes.size > 0 && rec.type === ContentType.handshake)) {
      this.offPathRecord(assoc, address, port, rec);
      return;
    }
    if (assoc.connectionId !== undefined) {
      // RFC 9146 §4: with a CID negotiated the peer's protected records all carry it
      this.stats.drop('unexpected-record');
      return;
    }
    this.stats.demux.address++;
    this.deliver(assoc, undefined, address, port, rec);
  }

  /**
   * A protected record (no CID) without an association at its address, or a handshake record
   * while handshakes run: the handshake at the address takes it, else the association does,
   * else the shared store is asked.
   */
  private offPathRecord(
    assoc: Association<P> | undefined,
    address: string,
    port: number,
    rec: DtlsRecord,
  ): void {
    const key = peerKey(address, port);
    const hs = this.handshakes.get(key);
    if (hs !== undefined) {
      if (this.tracing.on) this.traceHandshake(key, rec, () => hs.onRecord(rec));
      else hs.onRecord(rec);
      return;
    }
    if (assoc === undefined) {
      if (this.sharing !== undefined) this.sharing.lookup(`a:${key}`, { rec, key, address, port });
      else this.unknownRecord(address, port, 'unknown-peer');
      return;
    }
    if (assoc.connectionId !== undefined) {
      // RFC 9146 §4: with a CID negotiated the peer's protected records all carry it
      this.stats.drop('unexpected-record');
      return;
    }
    this.stats.demux.address++;
    this.deliver(assoc, key, address, port, rec);
  }

  /**
   * A tls12_cid record (RFC 9146 §4): matched by its Connection ID first, whatever address it
   * came from; a CID not (yet) in the table may be that of the handshake at its address (the
   * client's Finished is its first CID record).
   */
  private onCidRecord(key: string, address: string, port: number, rec: DtlsRecord): void {
    const cid = rec.cid;
    const assoc =
      cid !== undefined && cid.length > 0 ? this.byCid.get(cid.toString('latin1')) : undefined;
    if (assoc === undefined) {
      const hs = this.handshakes.get(key);
      if (hs !== undefined && cid !== undefined && hs.connectionId?.equals(cid) === true) {
        if (this.tracing.on) this.traceHandshake(key, rec, () => hs.onRecord(rec));
        else hs.onRecord(rec);
        return;
      }
      if (this.sharing !== undefined && cid !== undefined && cid.length > 0)
        this.sharing.lookup(`c:${cid.toString('hex')}`, { rec, key, address, port });
      else this.unknownRecord(address, port, 'unknown-cid');
      return;
    }
    this.stats.demux.cid++;
    this.deliver(assoc, key, address, port, rec);
  }

  /**
   * Authenticates a protected record of an association and hands on what it carries. `key` is
   * the peer key of `address` and `port` when the caller made it (built here when needed).
   */
  private deliver(
    assoc: Association<P>,
    key: string | undefined,
    address: string,
    port: number,
    rec: DtlsRecord,
  ): void {
    if (rec.epoch !== assoc.state.epoch) {
      this.stats.drop('bad-epoch');
      return;
    }
    const span =
      this.tracing.on && isTraced()
        ? startChild('dtls.decrypt', { 'dtls.epoch': rec.epoch, 'dtls.record.sequence': rec.seq })
        : undefined;
    // asked before opening, which moves the window (RFC 9146 §6 "newer")
    const newest = rec.cid !== undefined && assoc.state.isNewest(rec);
    const pt = assoc.state.open(rec);
    if (typeof pt === 'string') {
      if (pt === 'fenced') {
        span?.end();
        this.sharing?.fenced(assoc, { rec, key: key ?? peerKey(address, port), address, port });
        return;
      }
      this.stats.drop(pt);
      endWithError(span, pt);
      return;
    }
    span?.end();
    const now = this.now();
    if (rec.cid !== undefined)
      this.followPeer(assoc, key ?? peerKey(address, port), address, port, newest, rec, now);
    if (assoc.lease !== undefined) this.sharing?.received(assoc, rec.seq);
    const data = assoc.onPlaintext(assoc.state.contentType, pt, now);
    // keep the table in least-recently-active order for eviction; data makes a device active
    this.associations.touch(assoc.peer, now, data !== undefined);
    if (data !== undefined && assoc.open) this.handler.onData(assoc, data);
  }

  /**
   * Peer address update for a CID record that authenticated (RFC 9146 §6). It moves the
   * association to the record's source only when the record is newer than every one received
   * before: a late, reordered datagram from the old address cannot undo a move, and a replay
   * (rejected earlier by the window) cannot cause one. Records that do not move it are still
   * delivered; the answers go to the current address.
   *
   * RFC 9146 §6 also asks for a way to make sure the new address can receive. DTLS 1.2 has no
   * return routability check short of RFC 9853's, which no device here speaks, so RFC 9853's
   * anti-amplification limit applies instead: until the new address is validated (see
   * Association.heardFromNewAddress) it gets at most 3× the bytes that came from it. The
   * record that moved the association already counts: the device's first request after a NAT
   * rebinding is answered at once, since a CoAP answer is rarely 3× its request. What remains
   * is RFC 9146 §9's on-path attacker, who can redirect traffic by relaying records.
   *
   * The old address key is removed; an association still held for the new address (a peer
   * whose NAT mapping the device now has) is released, as a new handshake from there would.
   */
  private followPeer(
    assoc: Association<P>,
    key: string,
    address: string,
    port: number,
    newest: boolean,
    rec: DtlsRecord,
    now: number,
  ): void {
    if (assoc.peer === key) {
      if (assoc.unvalidated) assoc.heardFromNewAddress(newest, rec.length);
      return;
    }
    if (!newest) return;
    const other = this.associations.get(key);
    if (other !== undefined) this.release(other, 'replaced');
    if (!this.associations.rekey(assoc.peer, key, assoc, now)) return;
    assoc.moveTo(key, address, port, rec.length);
    this.stats.peerAddressUpdates++;
  }

  /** Counts a record from an unknown peer, and tells the handler now and then. */
  private unknownRecord(
    address: string,
    port: number,
    reason: 'unknown-peer' | 'unknown-cid',
  ): void {
    this.stats.drop(reason);
    if (this.handler.onUnknownRecord === undefined) return;
    const now = this.now();
    if (now - this.unknownReportedAt < UNKNOWN_REPORT_MS) {
      this.unknownSuppressed++;
      return;
    }
    this.unknownReportedAt = now;
    const suppressed = this.unknownSuppressed;
    this.unknownSuppressed = 0;
    this.handler.onUnknownRecord({ address, port }, reason, suppressed);
  }

  /** Runs one handshake step inside a `dtls.handshake` span (tracing on only). */
  private traceHandshake(key: string, rec: DtlsRecord, step: () => void): void {
    if (!isTraced()) {
      step();
      return;
    }
    const span = startChild('dtls.handshake', {
      'dtls.epoch': rec.epoch,
      'dtls.content_type': rec.type,
      ...(rec.epoch === 0 && rec.type === ContentType.handshake
        ? { 'dtls.handshake.message_type': rec.body[0] ?? -1 }
        : {}),
    });
    const before = this.associations.get(key);
    withSpan(span, step);
    if (span === undefined) return;
    const after = this.associations.get(key);
    span.setAttribute(
      'dtls.handshake.outcome',
      after !== undefined && after !== before
        ? 'established'
        : this.handshakes.has(key)
          ? 'in_progress'
          : rec.body[0] === HandshakeType.clientHello && rec.epoch === 0
            ? 'hello_verify'
            : 'ended',
    );
    span.end();
  }

  private onClientHello(key: string, address: string, port: number, rec: DtlsRecord): void {
    let fragments;
    let ch;
    try {
      fragments = readFragments(rec.body);
      const f = fragments[0];
      if (fragments.length !== 1 || f === undefined)
        throw new DtlsError('DTLS_DECODE_ERROR', 'ClientHello record');
      if (f.fragmentOffset !== 0 || f.fragment.length !== f.length) {
        // A PSK ClientHello fits in one datagram; fragmented ones are a known attack vector
        // (CVE-2014-0195) and Scandium drops them too.
        this.stats.drop('fragmented-client-hello');
        return;
      }
      ch = { hello: parseClientHello(f.fragment), seq: f.messageSeq };
    } catch (err) {
      if (!(err instanceof DtlsError)) throw err;
      this.stats.drop('malformed-handshake');
      return;
    }
    const existing = this.handshakes.get(key);
    if (existing !== undefined && existing.isSameClientHello(ch.seq, ch.hello.random)) {
      existing.onClientHelloRetransmit();
      return;
    }
    // A late or duplicated copy of the ClientHello that made the current association still
    // carries a valid cookie; starting over on it would strand the client's retransmitted
    // last flight in a handshake that cannot verify it. The client has sent its Finished, so
    // the copy asks for nothing: ignore it (RFC 6347 §4.2.4 retransmissions are by flight).
    if (this.associations.get(key)?.startedBy(ch.hello.random) === true) {
      this.stats.drop('duplicate-client-hello');
      return;
    }
    if (!this.accepting) {
      this.stats.drop('not-accepting');
      return;
    }
    const input = ch.hello.cookieInput;
    if (
      ch.hello.cookie.length === 0 ||
      !this.cookies.verify(ch.hello.cookie, address, port, input)
    ) {
      // Stateless answer: record sequence number copied from the ClientHello and version
      // DTLS 1.0 for the HelloVerifyRequest (RFC 6347 §4.2.1).
      const cookie = this.cookies.make(address, port, input);
      this.stats.helloVerifySent++;
      this.stats.datagramsOut++;
      this.transport(helloVerifyRequestRecord(rec.seq, cookie), port, address);
      return;
    }
    // The cookie proves the address: a new handshake may start. An existing association for
    // this address keeps working until the new handshake completes (RFC 6347 §4.2.8).
    if (existing !== undefined) existing.abort('replaced');
    let bySource = this.admission.refusal(address);
    if (this.handshakes.size * 2 >= this.maxHandshakes || bySource !== undefined) {
      this.expireStalled();
      bySource = this.admission.refusal(address);
    }
    const refused = this.handshakes.size >= this.maxHandshakes ? 'handshake-limit' : bySource;
    if (refused !== undefined) {
      this.stats.drop(refused);
      return;
    }
    this.stats.handshakesStarted++;
    // the record holds the one unfragmented ClientHello: its body is the message as it came
    const hs = new ServerHandshake<P>(
      this,
      key,
      address,
      port,
      ch.hello,
      ch.seq,
      rec.seq,
      rec.body,
    );
    if (!hs.finished) {
      this.handshakes.set(key, hs);
      this.admission.add(address);
    }
  }

  /**
   * Under pressure (table half full, or this source at its cap), gives up the handshakes whose
   * client has not answered our ServerHello flight for stalledMs. The table is in start order,
   * so the scan stops at the first handshake younger than that.
   */
  private expireStalled(): void {
    const startedBefore = this.now() - this.stalledMs;
    for (const hs of this.handshakes.values()) {
      if (hs.startedAt > startedBefore) return;
      if (hs.stalled) hs.expire();
    }
  }

  /** Takes a handshake that ended out of the table (if it is still the one for its peer). */
  private forget(hs: ServerHandshake<P>): void {
    if (hs.connectionId !== undefined) this.pendingCids.delete(hs.connectionId.toString('latin1'));
    if (this.handshakes.get(hs.key) !== hs) return;
    this.handshakes.delete(hs.key);
    this.admission.remove(hs.address);
  }

  admit(hs: ServerHandshake<P>, principal: P, identity: string): boolean {
    const a = this.policy.admission(identity, principal);
    const plan = this.associations.plan(hs.key, a, this.now());
    // completed() follows in this same turn, with nothing changed in the table between
    this.admittedHs = plan !== undefined ? hs : undefined;
    this.admittedAs = a;
    this.admittedPlan = plan;
    return plan !== undefined;
  }

  completed(hs: ServerHandshake<P>, r: CompletedHandshake<P>): void {
    this.forget(hs);
    let admission = this.admittedAs;
    let plan = this.admittedPlan;
    if (this.admittedHs !== hs || admission === undefined) {
      admission = this.policy.admission(r.identity, r.principal);
      plan = this.associations.plan(hs.key, admission, this.now());
    }
    this.admittedHs = undefined;
    this.admittedAs = undefined;
    this.admittedPlan = undefined;
    if (plan !== undefined) this.makeRoom(plan);
    const cid = r.connectionId;
    const assoc = new Association<P>(
      this,
      // stable and unique even after the peer moved and another took its old address
      cid === undefined ? hs.key : `${hs.key}#${cid.toString('hex')}`,
      hs.address,
      hs.port,
      r.principal,
      r.identity,
      cipherSuiteName.get(r.suite) ?? String(r.suite),
      r.extendedMasterSecret,
      r.encryptThenMac,
      r.state,
      r.epoch0,
      r.lastFlight,
      r.clientFinishedSeq,
      this.now(),
      r.durationMs,
      r.clientRandom,
      cid,
      hs.key,
      r.peerRecordLimit,
    );
    this.associations.add(hs.key, assoc, admission, assoc.establishedAt);
    if (cid !== undefined) this.byCid.set(cid.toString('latin1'), assoc);
    if (this.sharing !== undefined) this.share(assoc, r, admission.key);
    publishHandshake(this.stats, assoc.cipherSuite, undefined);
    this.handler.onEstablished?.(assoc);
  }

  /**
   * Stores a new association for other pods. Until the store acknowledges it, the creator
   * holds the first leases (it may seal below `txLease` and accept a few records); if the
   * store refuses, the association stays this pod's alone (see {@link EpochState.unlease}).
   */
  private share(assoc: Association<P>, r: CompletedHandshake<P>, identity?: string): void {
    const sharing = this.sharing;
    const codec = this.principalCodec;
    if (sharing === undefined || codec === undefined || r.keys === undefined) return;
    const cid = r.connectionId;
    const handle = cid !== undefined ? `c:${cid.toString('hex')}` : `a:${assoc.peer}`;
    const snapshot: AssociationSnapshot = {
      suite: r.suite,
      encryptThenMac: r.encryptThenMac,
      extendedMasterSecret: r.extendedMasterSecret,
      epoch: r.state.epoch,
      client: r.keys.client,
      server: r.keys.server,
      connectionId: cid,
      peerConnectionId: r.peerConnectionId,
      address: assoc.address,
      port: assoc.port,
      identity: r.identity,
      principal: codec.encode(r.principal),
      establishedAt: assoc.establishedAt,
      handshakeDurationMs: assoc.handshakeDurationMs,
      clientRandom: r.clientRandom,
      peerRecordLimit: r.peerRecordLimit,
    };
    const now = this.now();
    assoc.lease = new Lease(handle, now, sharing.initialRxLease, identity, now + sharing.ttlMs / 2);
    // the client's Finished was the first record: its fence comes down once it is quiet
    sharing.busy(assoc, assoc.lease);
    r.state.writeLimit = sharing.txLease;
    r.state.acceptBelow = 1 + sharing.initialRxLease;
    sharing.known(handle);
    sharing.create(assoc, sealSnapshot(snapshot, sharing.key, handle), identity, (ok) => {
      if (ok || !assoc.open) return;
      // not shared after all: this pod alone, from a sequence range no lease reaches
      const lease = assoc.lease;
      assoc.lease = undefined;
      assoc.state.unlease(UNSHARED_SEQUENCE_BASE);
      if (lease !== undefined) this.drainHeld(assoc, lease);
    });
  }

  /** Delivers and sends what a lease no longer needed holds. */
  private drainHeld(assoc: Association<P>, lease: Lease): void {
    for (const h of lease.heldIn.splice(0)) this.deliver(assoc, h.key, h.address, h.port, h.rec);
    for (const o of lease.heldOut.splice(0)) assoc.sealAndSend(o.type, o.data);
  }

  // SharingHost: what the shared store's answers do here

  adopted(
    handle: string,
    snapshot: AssociationSnapshot,
    rx: { floor: number; limit: number },
    txStart: number,
    held: readonly HeldRecord[],
    startedAt: number,
  ): void {
    const first = held[0];
    const principal = this.principalCodec?.decode(snapshot.principal);
    const sharing = this.sharing;
    if (first === undefined || sharing === undefined || this.closed) return;
    if (principal === undefined) {
      this.stats.shared.lookups.error++;
      this.unknown(held);
      return;
    }
    const cid = snapshot.connectionId;
    const here =
      cid !== undefined ? this.byCid.get(cid.toString('latin1')) : this.associations.get(first.key);
    if (here !== undefined) {
      // made here meanwhile (a handshake): the records go to it
      for (const h of held) this.onRecord(h.address, h.port, h.rec);
      return;
    }
    const now = this.now();
    const admission = this.policy.admission(snapshot.identity, principal);
    const plan = this.associations.plan(first.key, admission, now);
    if (plan === undefined) {
      this.unknown(held);
      return;
    }
    this.makeRoom(plan);
    const etm = snapshot.encryptThenMac;
    const state = new EpochState(
      snapshot.epoch,
      createRecordCipher(snapshot.suite, snapshot.client, etm),
      createRecordCipher(snapshot.suite, snapshot.server, etm),
      txStart,
    );
    state.writeLimit = txStart + sharing.txLease;
    const peerCid = snapshot.peerConnectionId;
    if (peerCid !== undefined && peerCid.length > 0) state.writeCid = peerCid;
    state.window.refuseBelow(rx.floor);
    state.acceptBelow = rx.limit;
    const assoc = new Association<P>(
      this,
      cid === undefined ? first.key : `${first.key}#${cid.toString('hex')}`,
      first.address,
      first.port,
      principal,
      snapshot.identity,
      cipherSuiteName.get(snapshot.suite) ?? String(snapshot.suite),
      snapshot.extendedMasterSecret,
      etm,
      state,
      { seq: 0 },
      [],
      -1,
      snapshot.establishedAt,
      snapshot.handshakeDurationMs,
      snapshot.clientRandom,
      cid,
      first.key,
      snapshot.peerRecordLimit ?? MAX_PLAINTEXT,
    );
    assoc.lastActivity = now;
    // its records may have gone to the layer above on the pod it comes from
    assoc.carriedData = true;
    // the adopter restarts the identity index's expiry at its first lease
    const lease = new Lease(handle, now, rx.limit - rx.floor, admission.key, now);
    lease.ready = true;
    assoc.lease = lease;
    // a device seen from elsewhere than its handshake's address: the RFC 9853 budget applies
    // until it answers there (RFC 9146 §6 address update, as on one pod)
    if (first.key !== peerKey(snapshot.address, snapshot.port))
      assoc.moveTo(first.key, first.address, first.port, 0);
    this.associations.add(first.key, assoc, admission, now);
    if (cid !== undefined) this.byCid.set(cid.toString('latin1'), assoc);
    this.stats.shared.adoptions[cid !== undefined ? 'cid' : 'address']++;
    this.handler.onAdopted?.(assoc, now - startedAt);
    this.redeliver(assoc, held);
  }

  authenticates(snapshot: AssociationSnapshot, rec: DtlsRecord): boolean {
    if (rec.epoch !== snapshot.epoch) return false;
    const reader = createRecordCipher(snapshot.suite, snapshot.client, snapshot.encryptThenMac);
    return reader.open(rec.type, rec.version, rec.epoch, rec.seq, rec.body, rec.cid) !== undefined;
  }

  unknown(held: readonly HeldRecord[]): void {
    for (const h of held)
      this.unknownRecord(
        h.address,
        h.port,
        h.rec.type === ContentType.tls12Cid ? 'unknown-cid' : 'unknown-peer',
      );
  }

  redeliver(assoc: Association<P>, held: readonly HeldRecord[]): void {
    for (const h of held) {
      if (!assoc.open) return;
      this.deliver(assoc, h.key, h.address, h.port, h.rec);
    }
  }

  flushOut(assoc: Association<P>): void {
    const lease = assoc.lease;
    if (lease === undefined) return;
    for (const o of lease.heldOut.splice(0)) {
      if (!assoc.open) return;
      assoc.sealAndSend(o.type, o.data);
    }
  }

  lost(assoc: Association<P>): void {
    // the fence is the new holder's now: nothing to hand down
    if (assoc.lease !== undefined) assoc.lease.dirty = false;
    this.release(assoc, 'offloaded');
  }

  storeFailed(op: string, err: unknown): void {
    this.handler.onShareError?.(op, err);
  }

  sealed(assoc: Association<unknown>): void {
    this.sharing?.sent(assoc as Association<P>);
  }

  holdOut(assoc: Association<unknown>, type: number, data: Buffer): boolean {
    return this.sharing?.holdOut(assoc as Association<P>, type, data) ?? false;
  }

  failed(
    hs: ServerHandshake<P>,
    reason: HandshakeFailReason,
    detail: string | undefined,
    alert: string | undefined,
  ): void {
    this.forget(hs);
    const announced = hs.announcedSuite;
    const suite =
      announced === undefined ? 'none' : (cipherSuiteName.get(announced) ?? String(announced));
    this.stats.handshakeFailed(reason, suite);
    publishHandshake(this.stats, suite, reason);
    this.handler.onHandshakeFailed?.({
      address: hs.address,
      port: hs.port,
      reason,
      detail,
      identity: hs.pskIdentity,
      alert,
    });
  }

  release(assoc: Association<unknown>, reason: CloseReason): void {
    if (!assoc.open) return;
    assoc.open = false;
    this.associations.delete(assoc.peer, assoc as Association<P>);
    const cid = assoc.connectionId;
    if (cid !== undefined && this.byCid.get(cid.toString('latin1')) === assoc)
      this.byCid.delete(cid.toString('latin1'));
    this.stats.closed[reason]++;
    const sharing = this.sharing;
    if (sharing !== undefined && assoc.lease !== undefined) {
      // offloaded: lives on in the store; any other end: gone for every pod
      if (reason === 'offloaded') {
        this.stats.shared.offloaded++;
        sharing.offload(assoc as Association<P>);
      } else sharing.remove(assoc as Association<P>);
    }
    this.handler.onClosed?.(assoc as Association<P>, reason);
  }

  /**
   * Removes what a new association displaces: the peer's own older association and the older
   * one of the same identity go quietly (the peer holds the new one); evicted ones are told.
   */
  private makeRoom(plan: AdmissionPlan<Association<P>>): void {
    const replaced = plan.replaced;
    if (replaced !== undefined) {
      // An association with a CID is not its address: another device that now has that NAT
      // mapping handshakes here, and the first one's association waits for its device's next
      // record from wherever it is (RFC 9146 §6) — in the store when shared, else parked here.
      const cid = replaced.connectionId;
      if (cid === undefined) this.release(replaced, 'replaced');
      else if (replaced.lease !== undefined) this.release(replaced, 'offloaded');
      else this.park(replaced, cid);
    }
    if (plan.superseded !== undefined) this.release(plan.superseded, 'superseded');
    for (const { assoc, cls } of plan.evicted) {
      this.stats.evicted[cls]++;
      // out of memory only: a shared association lives on in the store (not past a group cap)
      if (assoc.lease !== undefined && cls !== 'group-cap') {
        this.release(assoc, 'offloaded');
        continue;
      }
      assoc.sendAlert(ALERT_CLOSE_NOTIFY);
      this.release(assoc, 'evicted');
    }
  }

  /**
   * Takes a CID association off its address, which a new peer has taken: it stays in the
   * table (an LRU entry like any other) under its CID, and sends nothing until its device
   * speaks again, from wherever it is (then the RFC 9146 §6 update moves it there).
   */
  private park(assoc: Association<P>, cid: Buffer): void {
    const key = `cid:${cid.toString('hex')}`;
    const now = this.now();
    if (!this.associations.rekey(assoc.peer, key, assoc, now)) {
      this.release(assoc, 'replaced');
      return;
    }
    assoc.moveTo(key, assoc.address, assoc.port, 0);
    this.stats.parked++;
  }

  /**
   * Ends the associations idle for longer than the idle timeout. A pass walks the live table
   * (no copy of it), at most `sweepBatch` associations per turn of the loop and the rest 1 ms
   * later: with hundreds of thousands of associations, one turn for all of them would hold up
   * every datagram behind it.
   */
  private sweep(): void {
    if (this.closed) return;
    const limit = this.now() - this.idleTimeoutMs;
    const pass = (this.sweepCursor ??= this.associations.values());
    for (let n = 0; n < this.sweepBatch; n++) {
      const next = pass.next();
      if (next.done === true) {
        this.sweepCursor = undefined;
        return;
      }
      const a = next.value;
      if (a.lastActivity < limit) {
        // a shared one leaves memory; the store's expiry ends it for good
        if (a.lease !== undefined) {
          this.release(a, 'offloaded');
          continue;
        }
        a.sendAlert(ALERT_CLOSE_NOTIFY);
        this.release(a, 'idle');
      }
    }
    this.sweepMore = this.clock.setTimeout(this.sweepOn, 1);
  }

  /**
   * Before stopping with sharing on: no new handshakes, and every shared association's
   * receive fence comes down to just above its last record, so the device goes on with
   * whichever pod it reaches next, from exactly there. Resolves with how many the store
   * took, at the latest after `timeoutMs`.
   */
  async handOver(timeoutMs: number): Promise<number> {
    this.stopAccepting();
    if (this.sharing === undefined) return 0;
    const shared = [...this.associations.values()].filter((a) => a.lease !== undefined);
    return this.sharing.handOver(shared, timeoutMs);
  }

  /**
   * Abandons handshakes, stops timers, and ends every association: close_notify to each,
   * except shared ones, which stay in the store for other pods (no close_notify: the
   * device goes on elsewhere).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.clock.clearTimeout(this.sweeper);
    this.clock.clearTimeout(this.sweepMore);
    this.sweepCursor = undefined;
    this.sharing?.close();
    for (const hs of [...this.handshakes.values()]) hs.abort('server-shutdown');
    this.handshakeTimers.clear();
    for (const a of [...this.associations.values()]) {
      if (a.lease !== undefined) {
        this.release(a, 'offloaded');
        continue;
      }
      a.sendAlert(ALERT_CLOSE_NOTIFY);
      this.release(a, 'server-shutdown');
    }
  }
}

/**
 * Write sequence numbers from here up belong to associations the store never acknowledged:
 * leases start at 0 and grow by blocks, and no association sends 2^47 records.
 */
const UNSHARED_SEQUENCE_BASE = 2 ** 47;

function noAdmissionPolicy(): Admission {
  return NO_ADMISSION;
}
