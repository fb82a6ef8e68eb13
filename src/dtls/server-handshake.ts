/**
 * Server side of one full PSK handshake, from the verified ClientHello to the Finished
 * exchange (RFC 6347 §4.2, RFC 4279 §2). It exists only after the client returned a valid
 * cookie. The PSK lookup may be asynchronous: the handshake waits in the `lookup` state,
 * buffering the client's CCS and Finished, and resumes when the key arrives.
 */
import { Buffer } from 'node:buffer';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import {
  AlertDescription,
  AlertLevel,
  CipherSuite,
  ContentType,
  DTLS_1_2,
  EMPTY_RENEGOTIATION_INFO_SCSV,
  ExtensionType,
  HandshakeType,
  MAX_CID_LENGTH,
  MAX_PLAINTEXT,
  MAX_PSK_IDENTITY,
  MIN_RECORD_SIZE_LIMIT,
  alertName,
  cipherSuiteName,
} from './constants.js';
import { get16, put16 } from './bytes.js';
import { DtlsError } from './errors.js';
import { encodeFlight, type FlightEntry } from './flight.js';
import { ownCopy } from './own-buffer.js';
import {
  MAX_HANDSHAKE_MESSAGE,
  handshakeMessage,
  parseClientKeyExchange,
  parseFinished,
  readFragments,
  serverHelloBody,
  type ClientHello,
} from './handshake.js';
import { CHANGE_CIPHER_SPEC, EpochState, Transcript, deriveSessionKeys } from './keys.js';
import type { DirectionKeys } from './record-cipher.js';
import { verifyData } from './prf.js';
import { Reassembler, type HandshakeMessage } from './reassembly.js';
import { plainRecord, type DtlsRecord } from './record.js';
import type { DtlsStats, HandshakeFailReason, PeerAddress, PskResolution } from './types.js';
import type { Clock, Timed, TimerQueue } from '../time/clock.js';

export interface HandshakeSettings {
  readonly cipherSuites: readonly number[];
  readonly handshakeTimeoutMs: number;
  readonly retransmitTimeoutMs: number;
  readonly maxRetransmitTimeoutMs: number;
  readonly pskIdentityHint: Buffer | undefined;
  /**
   * Send the alert that names why a PSK was refused (unknown_psk_identity, handshake_failure,
   * bad_record_mac). Off by default: every refusal then looks like a wrong key.
   */
  readonly detailedPskAlerts: boolean;
  /** Length of the Connection IDs we hand out (RFC 9146); 0: CID is not negotiated. */
  readonly cidLength: number;
}

export interface HandshakeHost<P> {
  readonly settings: HandshakeSettings;
  readonly stats: DtlsStats;
  /** Its monotonic time (`now()`) is the time of {@link handshakeTimers}' deadlines. */
  readonly clock: Clock;
  /**
   * The retransmission, deadline and verdict timers of every handshake: one queue with one
   * host timer, each handshake its own entry (no Node timer and no closure per handshake).
   */
  readonly handshakeTimers: TimerQueue;
  /** The server's time (wall milliseconds, as every time of the DTLS layer). */
  now(): number;
  send(data: Buffer, port: number, address: string): void;
  resolvePsk(identity: Buffer, from: PeerAddress): PskResolution<P> | Promise<PskResolution<P>>;
  /** A fresh Connection ID of `settings.cidLength` bytes, unused here; undefined: none free. */
  newConnectionId(): Buffer | undefined;
  /** Whether a handshake whose Finished verified may become an association (room for it). */
  admit(hs: ServerHandshake<P>, principal: P, identity: string): boolean;
  completed(hs: ServerHandshake<P>, result: CompletedHandshake<P>): void;
  failed(
    hs: ServerHandshake<P>,
    reason: HandshakeFailReason,
    detail: string | undefined,
    alert: string | undefined,
  ): void;
}

export interface CompletedHandshake<P> {
  readonly principal: P;
  readonly identity: string;
  readonly suite: number;
  readonly extendedMasterSecret: boolean;
  readonly encryptThenMac: boolean;
  readonly state: EpochState;
  readonly epoch0: { seq: number };
  readonly lastFlight: readonly FlightEntry[];
  readonly clientFinishedSeq: number;
  readonly clientRandom: Buffer;
  /** The CID the client puts in its records to us, when one was negotiated. */
  readonly connectionId: Buffer | undefined;
  /** The CID we put in our records to the client (may be empty or absent). */
  readonly peerConnectionId: Buffer | undefined;
  /** Both directions' key material (a shared association's snapshot carries it). */
  readonly keys: { readonly client: DirectionKeys; readonly server: DirectionKeys } | undefined;
  /**
   * Largest plaintext the peer accepts in one record (RFC 8449 record_size_limit or RFC 6066
   * max_fragment_length); {@link MAX_PLAINTEXT} when it announced none.
   */
  readonly peerRecordLimit: number;
  /** ms from the verified ClientHello to the client's Finished. */
  readonly durationMs: number;
}

type State = 'wait-cke' | 'lookup' | 'wait-finished' | 'done';

/** Epoch-1 records held while keys or the CCS are not there yet (Finished arriving early). */
const MAX_HELD_RECORDS = 8;

/**
 * The one alert for every refused PSK by default. RFC 4279 §2 lets a server hide whether an
 * identity exists by carrying on as if it did and the key were wrong, which ends in
 * decrypt_error; a real wrong key ends the same way, so unknown devices, wrong keys and
 * identities that may not connect cannot be told apart from the outside.
 */
const UNIFORM_PSK_ALERT = AlertDescription.decryptError;

/** Why a PSK was refused, kept while the handshake carries on with a throw-away key. */
interface Refusal {
  readonly reason: HandshakeFailReason;
  readonly detail: string;
}

const NO_DATA = Buffer.alloc(0);
const NO_FLIGHT: readonly FlightEntry[] = [];
/** Never pushed to: onProtectedRecord gives a handshake its own array first. */
const NO_HELD: DtlsRecord[] = [];
const RENEGOTIATION_INFO_EMPTY = Buffer.from([0]);

/**
 * Server randoms are cut from a block drawn 64 at a time (one randomFillSync per 64
 * handshakes instead of one each). Each is a view of its block; a new block is drawn when one
 * is used up, so no random is handed out twice. They are public (sent in the ServerHello).
 */
const RANDOMS_PER_BLOCK = 64;
const SERVER_RANDOM_LENGTH = 32;
let randomBlock = Buffer.alloc(0);
let randomAt = 0;

function nextServerRandom(): Buffer {
  if (randomAt + SERVER_RANDOM_LENGTH > randomBlock.length) {
    randomBlock = randomBytes(RANDOMS_PER_BLOCK * SERVER_RANDOM_LENGTH);
    randomAt = 0;
  }
  const r = randomBlock.subarray(randomAt, randomAt + SERVER_RANDOM_LENGTH);
  randomAt += SERVER_RANDOM_LENGTH;
  return r;
}

/** Our first suite the client offers as well; 0: none. */
function firstShared(ours: readonly number[], offered: readonly number[]): number {
  for (const cs of ours) if (offered.includes(cs)) return cs;
  return 0;
}

/** Whether the null compression method (0) is offered; a loop, not Buffer's native indexOf. */
function hasNullCompression(methods: Buffer): boolean {
  for (let i = 0; i < methods.length; i++) if (methods[i] === 0) return true;
  return false;
}

export class ServerHandshake<P> implements Timed {
  private state: State = 'wait-cke';
  private readonly transcript = new Transcript();
  private readonly reassembler: Reassembler;
  private readonly epoch0: { seq: number };
  private readonly serverRandom = nextServerRandom();
  private readonly clientRandom: Buffer;
  private readonly clientHelloSeq: number;
  private readonly suite: number;
  private readonly ems: boolean;
  private readonly etm: boolean;
  /** Largest plaintext the peer accepts per record (RFC 8449 / RFC 6066); 2^14 by default. */
  private peerRecordLimit = MAX_PLAINTEXT;
  private sendSeq: number;
  private flight: readonly FlightEntry[] = NO_FLIGHT;
  private epoch1: EpochState | undefined;
  private master: Buffer | undefined;
  private directionKeys: { client: DirectionKeys; server: DirectionKeys } | undefined;
  /** The transcript hash through ClientKeyExchange (see onClientKeyExchange). */
  private throughCke: Buffer | undefined;
  private ccsSeen = false;
  /** Shared empty array until a record is held (most handshakes hold none). */
  private held: DtlsRecord[] = NO_HELD;
  /** Set when the lookup refused the identity and the handshake goes on with a random key. */
  private refusal: Refusal | undefined;
  /** An epoch-1 record failed authentication; the verdict timer is running. */
  private verdictArmed = false;
  private identity: string | undefined;
  private principal: P | undefined;
  /** Our CID (what the client's records carry), when negotiated. */
  private cid: Buffer | undefined;
  /** The client's CID (what ours carry); empty when it wants none (RFC 9146 §3). */
  private peerCid: Buffer | undefined;
  /** The timer queue's (Timed): deadline on the host clock, place in the queue. */
  dueAt = 0;
  heapIndex = -1;
  private retransmitMs: number;
  private readonly deadline: number;
  readonly startedAt: number;
  private deadlineArmed = false;
  /** Our ServerHello went out: the suite is the negotiated one from then on. */
  private helloSent = false;

  constructor(
    private readonly host: HandshakeHost<P>,
    readonly key: string,
    readonly address: string,
    readonly port: number,
    ch: ClientHello,
    clientHelloSeq: number,
    recordSeq: number,
    /**
     * The ClientHello as it came, header and body: what enters the transcript. Given when the
     * caller has it whole (an unfragmented ClientHello is its record's body); else it is made.
     */
    helloMessage?: Buffer,
  ) {
    const s = host.settings;
    // kept by the association: its own allocation, not a pool slice (own-buffer.ts)
    this.clientRandom = ownCopy(ch.random);
    this.clientHelloSeq = clientHelloSeq;
    this.reassembler = new Reassembler(clientHelloSeq + 1);
    this.sendSeq = clientHelloSeq;
    // A stateless server starts its epoch-0 record numbers at the ClientHello's (RFC 6347 §4.2.1).
    this.epoch0 = { seq: recordSeq };
    this.retransmitMs = s.retransmitTimeoutMs;
    this.startedAt = host.now();
    this.deadline = this.startedAt + s.handshakeTimeoutMs;
    this.suite = firstShared(s.cipherSuites, ch.cipherSuites);
    this.ems = ch.extensions.has(ExtensionType.extendedMasterSecret);
    this.etm =
      ch.extensions.has(ExtensionType.encryptThenMac) &&
      this.suite === CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256;
    this.start(ch, clientHelloSeq, helloMessage);
  }

  /** The cipher suite our ServerHello announced; undefined before it went out. */
  get announcedSuite(): number | undefined {
    return this.helloSent ? this.suite : undefined;
  }

  get finished(): boolean {
    return this.state === 'done';
  }

  /** The client has not answered our ServerHello flight yet. */
  get stalled(): boolean {
    return this.state === 'wait-cke';
  }

  /** Given up early to make room (the table is under pressure); no alert. */
  expire(): void {
    this.fail('stalled', undefined, undefined);
  }

  /** Our Connection ID, when one was negotiated. */
  get connectionId(): Buffer | undefined {
    return this.cid;
  }

  /** Whether a ClientHello is a retransmission of the one this handshake answers. */
  isSameClientHello(messageSeq: number, random: Buffer): boolean {
    return messageSeq === this.clientHelloSeq && random.equals(this.clientRandom);
  }

  private start(ch: ClientHello, seq: number, helloMessage: Buffer | undefined): void {
    if (ch.clientVersion >>> 8 !== 0xfe || ch.clientVersion > DTLS_1_2) {
      this.fail('protocol-version', undefined, AlertDescription.protocolVersion);
      return;
    }
    if (!hasNullCompression(ch.compressionMethods)) {
      this.fail('protocol-error', 'no null compression', AlertDescription.illegalParameter);
      return;
    }
    if (this.suite === 0) {
      this.fail('no-shared-cipher', undefined, AlertDescription.handshakeFailure);
      return;
    }
    const reneg = ch.extensions.get(ExtensionType.renegotiationInfo);
    if (reneg !== undefined && !reneg.equals(RENEGOTIATION_INFO_EMPTY)) {
      // RFC 5746 §3.6: an initial handshake carries an empty renegotiated_connection
      this.fail('protocol-error', 'renegotiation_info', AlertDescription.handshakeFailure);
      return;
    }
    const emsData = ch.extensions.get(ExtensionType.extendedMasterSecret);
    if (emsData !== undefined && emsData.length !== 0) {
      this.fail('protocol-error', 'extended_master_secret', AlertDescription.decodeError);
      return;
    }
    // with CID off the extension is ignored like any other we do not speak
    const offeredCid =
      this.host.settings.cidLength > 0 ? ch.extensions.get(ExtensionType.connectionId) : undefined;
    if (offeredCid !== undefined && offeredCid[0] !== offeredCid.length - 1) {
      // RFC 9146 §3: opaque cid<0..2^8-1>, exactly
      this.fail('protocol-error', 'connection_id', AlertDescription.decodeError);
      return;
    }
    const limits = recordLimits(ch);
    if ('refused' in limits) {
      this.fail('protocol-error', limits.refused, limits.alert);
      return;
    }
    this.peerRecordLimit = limits.limit;
    const secureRenegotiation =
      reneg !== undefined || ch.cipherSuites.includes(EMPTY_RENEGOTIATION_INFO_SCSV);

    this.transcript.add(helloMessage ?? handshakeMessage(HandshakeType.clientHello, seq, ch.body));
    const extensions: [number, Buffer][] = [];
    if (secureRenegotiation)
      extensions.push([ExtensionType.renegotiationInfo, RENEGOTIATION_INFO_EMPTY]);
    if (this.ems) extensions.push([ExtensionType.extendedMasterSecret, NO_DATA]);
    if (this.etm) extensions.push([ExtensionType.encryptThenMac, NO_DATA]);
    if (limits.answer !== undefined) extensions.push(limits.answer);
    // RFC 9146 §3: we hand every client that offers the extension a CID of ours, also when it
    // asks for none itself (a zero-length CID: our records to it stay plain). A client CID
    // longer than we accept for ourselves is declined by not answering the extension.
    if (offeredCid !== undefined && offeredCid.length - 1 <= MAX_CID_LENGTH) {
      this.cid = this.host.newConnectionId();
      if (this.cid !== undefined) {
        this.peerCid = ownCopy(offeredCid.subarray(1));
        const ext = Buffer.allocUnsafe(1 + this.cid.length);
        ext[0] = this.cid.length;
        this.cid.copy(ext, 1);
        extensions.push([ExtensionType.connectionId, ext]);
      }
    }
    const flight: FlightEntry[] = [];
    this.addToFlight(
      flight,
      HandshakeType.serverHello,
      serverHelloBody({
        random: this.serverRandom,
        sessionId: NO_DATA, // no session resumption: every handshake is a full one
        cipherSuite: this.suite,
        extensions,
      }),
    );
    const hint = this.host.settings.pskIdentityHint;
    if (hint !== undefined) {
      const ske = Buffer.allocUnsafe(2 + hint.length);
      put16(ske, 0, hint.length);
      hint.copy(ske, 2);
      this.addToFlight(flight, HandshakeType.serverKeyExchange, ske);
    }
    this.addToFlight(flight, HandshakeType.serverHelloDone, NO_DATA);
    this.flight = flight;
    this.helloSent = true;
    this.transmit();
    this.schedule(this.retransmitMs);
  }

  /** Our next handshake message, into the transcript and (one record) into `flight`. */
  private addToFlight(flight: FlightEntry[], msgType: number, body: Buffer): void {
    const payload = handshakeMessage(msgType, this.sendSeq++, body);
    this.transcript.add(payload);
    flight.push({ type: ContentType.handshake, epoch: 0, payload });
  }

  /** The client repeated its ClientHello: our flight was lost (RFC 6347 §4.2.4). */
  onClientHelloRetransmit(): void {
    if (this.state === 'wait-cke') {
      this.host.stats.retransmissions++;
      this.transmit();
    }
  }

  /** A record from this peer that belongs to the handshake (epoch 0 or 1, not ClientHello). */
  onRecord(rec: DtlsRecord): void {
    if (this.state === 'done') return;
    try {
      if (rec.epoch === 0) this.onPlainRecord(rec);
      else this.onProtectedRecord(rec);
    } catch (err) {
      if (err instanceof DtlsError) {
        this.fail('protocol-error', err.code, err.alert);
        return;
      }
      throw err;
    }
  }

  private onPlainRecord(rec: DtlsRecord): void {
    switch (rec.type) {
      case ContentType.handshake:
        this.onFragments(rec.body, 0);
        return;
      case ContentType.changeCipherSpec:
        if (!rec.body.equals(CHANGE_CIPHER_SPEC)) {
          throw new DtlsError('DTLS_DECODE_ERROR', 'malformed ChangeCipherSpec');
        }
        this.ccsSeen = true;
        this.releaseHeld();
        return;
      case ContentType.alert:
        this.onAlert(rec.body);
        return;
      default:
        this.host.stats.drop('unexpected-record');
    }
  }

  private onProtectedRecord(rec: DtlsRecord): void {
    if (rec.epoch !== 1) {
      this.host.stats.drop('bad-epoch');
      return;
    }
    if ((rec.cid === undefined) !== (this.cid === undefined)) {
      // with a CID negotiated every protected record carries it, without one none does
      this.host.stats.drop('unexpected-record');
      return;
    }
    const state = this.epoch1;
    if (state === undefined || !this.ccsSeen) {
      if (this.held.length >= MAX_HELD_RECORDS) {
        // Unauthenticated records can be forged by anyone who knows the port: make room by
        // dropping the oldest, so records queued ahead cannot keep the client's out.
        this.held.shift();
        this.host.stats.drop('buffer-full');
      }
      if (this.held === NO_HELD) this.held = [];
      this.held.push({ ...rec, body: Buffer.from(rec.body) });
      return;
    }
    const pt = state.open(rec);
    if (pt === 'replay') {
      this.host.stats.drop('replay');
      return;
    }
    if (pt === 'bad-mac') {
      this.onAuthenticationFailure();
      return;
    }
    if (pt === 'malformed-record' || pt === 'fenced') {
      // (fenced: never here; the handshake's epoch has no receive limit)
      this.host.stats.drop('malformed-record');
      return;
    }
    if (state.contentType === ContentType.handshake) this.onFragments(pt, 1);
    else if (state.contentType === ContentType.alert) this.onAlert(pt);
    else this.host.stats.drop('unexpected-record');
  }

  /**
   * An epoch-1 record did not authenticate. It may be forged (anyone can send one from the
   * client's address), so it is dropped silently and the handshake goes on (RFC 6347
   * §4.1.2.7). It may also be the client's own Finished under a wrong key: if no record
   * authenticates within two retransmission intervals (time for the client's genuine Finished,
   * or its retransmission, to arrive after a forged one), the key is taken to be wrong.
   */
  private onAuthenticationFailure(): void {
    this.host.stats.drop('bad-mac');
    if (this.verdictArmed) return;
    this.verdictArmed = true;
    this.schedule(2 * this.host.settings.retransmitTimeoutMs);
  }

  /** Nothing authenticated after a failure: the client's key is not the one we hold. */
  private keyMismatch(): void {
    const r = this.refusal;
    const alert = this.host.settings.detailedPskAlerts
      ? AlertDescription.badRecordMac
      : UNIFORM_PSK_ALERT;
    if (r !== undefined) this.fail(r.reason, r.detail, alert);
    else this.fail('bad-record-mac', undefined, alert);
  }

  private releaseHeld(): void {
    if (this.epoch1 === undefined || !this.ccsSeen || this.held.length === 0) return;
    const held = this.held;
    this.held = NO_HELD;
    for (const rec of held) {
      if (this.state === 'done') return;
      this.onProtectedRecord(rec);
    }
  }

  private onAlert(body: Buffer): void {
    if (body.length === 2 && body[0] === AlertLevel.fatal) {
      this.fail('peer-alert', alertName.get(body[1] ?? -1), undefined);
    }
  }

  private onFragments(body: Buffer, epoch: number): void {
    for (const f of readFragments(body)) {
      if (f.msgType === HandshakeType.clientHello) continue; // handled by the server
      if (
        f.msgType === HandshakeType.clientKeyExchange &&
        f.length > 2 + MAX_PSK_IDENTITY &&
        f.length <= MAX_HANDSHAKE_MESSAGE
      ) {
        // Refused before any of it is buffered or looked up. Its length is no secret, so an
        // alert at once tells nothing about which identities exist. (A length past the
        // message bound is malformed framing: the reassembler drops it and the handshake
        // goes on, so such a forged fragment cannot end it.)
        this.fail(
          'psk-rejected',
          'identity-too-long',
          this.host.settings.detailedPskAlerts
            ? AlertDescription.illegalParameter
            : UNIFORM_PSK_ALERT,
        );
        return;
      }
      const r = this.reassembler.add(f, epoch);
      if (r.kind === 'dropped') this.host.stats.drop('malformed-handshake');
      if (r.kind !== 'messages') continue;
      for (const m of r.messages) {
        this.onMessage(m);
        if (this.state === 'done') return;
      }
    }
  }

  private onMessage(m: HandshakeMessage): void {
    if (
      this.state === 'wait-cke' &&
      m.msgType === HandshakeType.clientKeyExchange &&
      m.epoch === 0
    ) {
      this.onClientKeyExchange(m);
      return;
    }
    if (this.state === 'wait-finished' && m.msgType === HandshakeType.finished && m.epoch === 1) {
      this.onFinished(m);
      return;
    }
    throw new DtlsError('DTLS_UNEXPECTED_MESSAGE', 'unexpected handshake message');
  }

  private onClientKeyExchange(m: HandshakeMessage): void {
    const identity = parseClientKeyExchange(m.body);
    this.identity = printableIdentity(identity);
    this.transcript.add(handshakeMessage(m.msgType, m.messageSeq, m.body));
    // No handshake message comes between ClientKeyExchange and the client's Finished (the
    // ChangeCipherSpec is not one): this digest is both the EMS session hash (RFC 7627 §3)
    // and what the client's verify_data covers, computed once.
    this.throughCke = this.transcript.digest();
    const sessionHash = this.ems ? this.throughCke : undefined;
    this.state = 'lookup';
    // The client answered our flight: no more retransmissions of it. The retransmission timer
    // is left running: when it fires outside wait-cke it only arms the deadline. Most
    // handshakes finish in this datagram's turn, before it fires, and so never set a timer of
    // the deadline's length (a Node timer list per distinct duration).
    this.host.stats.pskLookupsPending++;
    let result: PskResolution<P> | Promise<PskResolution<P>>;
    try {
      result = this.host.resolvePsk(Buffer.from(identity), {
        address: this.address,
        port: this.port,
      });
    } catch {
      this.onPsk(undefined, sessionHash);
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (r) => this.onPsk(r, sessionHash),
        () => this.onPsk(undefined, sessionHash),
      );
    } else {
      this.onPsk(result, sessionHash);
    }
  }

  private onPsk(r: PskResolution<P> | undefined, sessionHash: Buffer | undefined): void {
    this.host.stats.pskLookupsPending--;
    if (this.state !== 'lookup') return; // timed out, replaced or shut down meanwhile
    if (r === undefined) {
      this.fail('psk-lookup-error', undefined, AlertDescription.internalError);
      return;
    }
    let psk: Buffer;
    if (r.ok) psk = r.psk;
    else if (r.alert === 'internal_error' || this.host.settings.detailedPskAlerts) {
      // A lookup that could not answer says nothing about the identity: say so at once.
      const alert =
        r.alert === 'unknown_psk_identity'
          ? AlertDescription.unknownPskIdentity
          : r.alert === 'internal_error'
            ? AlertDescription.internalError
            : AlertDescription.handshakeFailure;
      this.fail('psk-rejected', r.reason, alert);
      return;
    } else {
      // RFC 4279 §2: continue as if the identity were known and the key wrong; the client's
      // Finished then fails to authenticate exactly as with a wrong key, and ends the same way.
      this.refusal = { reason: 'psk-rejected', detail: r.reason };
      psk = randomBytes(16);
    }
    const keys = deriveSessionKeys({
      suite: this.suite,
      psk,
      clientRandom: this.clientRandom,
      serverRandom: this.serverRandom,
      sessionHash,
      encryptThenMac: this.etm,
    });
    this.master = keys.master;
    this.directionKeys = keys.keys;
    this.epoch1 = new EpochState(1, keys.clientWrite, keys.serverWrite);
    if (this.peerCid !== undefined && this.peerCid.length > 0) this.epoch1.writeCid = this.peerCid;
    this.principal = r.ok ? r.principal : undefined;
    this.state = 'wait-finished';
    try {
      this.releaseHeld();
    } catch (err) {
      if (err instanceof DtlsError) this.fail('protocol-error', err.code, err.alert);
      else throw err;
    }
  }

  private onFinished(m: HandshakeMessage): void {
    const master = this.master;
    const state = this.epoch1;
    if (
      master === undefined ||
      state === undefined ||
      this.principal === undefined ||
      this.refusal !== undefined
    ) {
      throw new DtlsError('DTLS_UNEXPECTED_MESSAGE', 'Finished before keys');
    }
    const got = parseFinished(m.body);
    const throughCke = this.throughCke;
    if (throughCke === undefined)
      throw new DtlsError('DTLS_UNEXPECTED_MESSAGE', 'Finished before keys');
    const expected = verifyData(master, 'client finished', throughCke);
    if (!timingSafeEqual(got, expected)) {
      this.fail('bad-finished', undefined, AlertDescription.decryptError);
      return;
    }
    if (!this.host.admit(this, this.principal, this.identity ?? '')) {
      // no room for it: refused before our Finished, so the client never counts as connected
      master.fill(0);
      this.fail('association-limit', undefined, AlertDescription.internalError);
      return;
    }
    this.transcript.add(handshakeMessage(m.msgType, m.messageSeq, m.body));
    // the transcript's last use: its running hash is finished, not copied first
    const serverVerify = verifyData(master, 'server finished', this.transcript.finalDigest());
    master.fill(0);
    const lastFlight: FlightEntry[] = [
      { type: ContentType.changeCipherSpec, epoch: 0, payload: CHANGE_CIPHER_SPEC },
      {
        type: ContentType.handshake,
        epoch: 1,
        // kept by the association until the client's first data: not a pool slice
        payload: ownCopy(handshakeMessage(HandshakeType.finished, this.sendSeq++, serverVerify)),
      },
    ];
    this.flight = lastFlight;
    this.transmit();
    this.finish();
    this.host.stats.handshakesCompleted++;
    const name = cipherSuiteName.get(this.suite) ?? String(this.suite);
    this.host.stats.completedBySuite[name] = (this.host.stats.completedBySuite[name] ?? 0) + 1;
    this.host.completed(this, {
      principal: this.principal,
      identity: this.identity ?? '',
      suite: this.suite,
      extendedMasterSecret: this.ems,
      encryptThenMac: this.etm,
      state,
      epoch0: this.epoch0,
      lastFlight,
      clientFinishedSeq: m.messageSeq,
      clientRandom: this.clientRandom,
      connectionId: this.cid,
      peerConnectionId: this.peerCid,
      keys: this.directionKeys,
      peerRecordLimit: this.peerRecordLimit,
      durationMs: this.host.now() - this.startedAt,
    });
  }

  private transmit(): void {
    const datagram = encodeFlight(this.flight, this.epoch0, this.epoch1);
    if (datagram === undefined) return;
    this.host.stats.datagramsOut++;
    this.host.send(datagram, this.port, this.address);
  }

  /** Arms the timer for `ms`, or for the deadline when that comes first. */
  private schedule(ms: number): void {
    const untilDeadline = this.deadline - this.host.now();
    // timers may fire a little early: remember that this one is the deadline
    this.deadlineArmed = untilDeadline <= ms;
    this.host.handshakeTimers.schedule(
      this,
      this.host.clock.now() + Math.max(1, Math.min(ms, untilDeadline)),
    );
  }

  /** The timer queue's call (Timed), when this handshake's timer is due. */
  onTimer(): void {
    if (this.state === 'done') return;
    if (this.verdictArmed) {
      this.keyMismatch();
      return;
    }
    if (this.deadlineArmed || this.host.now() >= this.deadline) {
      this.fail('timeout', this.state, undefined);
      return;
    }
    if (this.state === 'wait-cke') {
      this.host.stats.retransmissions++;
      this.transmit();
      this.retransmitMs = Math.min(
        2 * this.retransmitMs,
        this.host.settings.maxRetransmitTimeoutMs,
      );
      this.schedule(this.retransmitMs);
    } else {
      this.schedule(Infinity);
    }
  }

  private finish(): void {
    this.state = 'done';
    this.held = NO_HELD;
    this.host.handshakeTimers.cancel(this);
  }

  /** Ends the handshake with a fatal alert (if any) and reports the failure. */
  fail(reason: HandshakeFailReason, detail: string | undefined, alert: number | undefined): void {
    if (this.state === 'done') return;
    this.finish();
    if (alert !== undefined) {
      const body = Buffer.from([AlertLevel.fatal, alert]);
      this.host.stats.datagramsOut++;
      this.host.send(
        plainRecord(ContentType.alert, DTLS_1_2, 0, this.epoch0.seq++, body),
        this.port,
        this.address,
      );
    }
    this.host.failed(this, reason, detail, alert !== undefined ? alertName.get(alert) : undefined);
  }

  /** Ends the handshake without an alert (replaced by a newer one, or server shutdown). */
  abort(reason: 'replaced' | 'server-shutdown'): void {
    this.fail(reason, undefined, undefined);
  }

  get pskIdentity(): string | undefined {
    return this.identity;
  }
}

/** Our record_size_limit (RFC 8449 §4): we accept every record DTLS 1.2 allows, 2^14 bytes. */
const OUR_RECORD_SIZE_LIMIT = Buffer.from([MAX_PLAINTEXT >>> 8, MAX_PLAINTEXT & 0xff]);

/**
 * The peer's record size limit from its ClientHello (docs/protocol.md, "Transport and
 * security"), and the extension our ServerHello answers with; a string names an illegal value
 * (illegal_parameter). RFC 8449 §5: when both are offered, record_size_limit wins and
 * max_fragment_length is neither applied nor echoed.
 */
export function recordLimits(
  ch: Pick<ClientHello, 'extensions'>,
):
  | { readonly limit: number; readonly answer: [number, Buffer] | undefined }
  | { readonly refused: string; readonly alert: number } {
  const rsl = ch.extensions.get(ExtensionType.recordSizeLimit);
  if (rsl !== undefined) {
    if (rsl.length !== 2)
      return { refused: 'record_size_limit', alert: AlertDescription.decodeError };
    const value = get16(rsl, 0);
    // RFC 8449 §4: below 64 is illegal_parameter; above 2^14 means no limit in DTLS 1.2
    if (value < MIN_RECORD_SIZE_LIMIT)
      return { refused: 'record_size_limit', alert: AlertDescription.illegalParameter };
    return {
      limit: Math.min(value, MAX_PLAINTEXT),
      answer: [ExtensionType.recordSizeLimit, OUR_RECORD_SIZE_LIMIT],
    };
  }
  const mfl = ch.extensions.get(ExtensionType.maxFragmentLength);
  if (mfl !== undefined) {
    if (mfl.length !== 1)
      return { refused: 'max_fragment_length', alert: AlertDescription.decodeError };
    const code = mfl[0] ?? 0;
    // RFC 6066 §4: 1..4 are 2^9..2^12; anything else is illegal_parameter
    if (code < 1 || code > 4)
      return { refused: 'max_fragment_length', alert: AlertDescription.illegalParameter };
    return {
      limit: 1 << (8 + code),
      answer: [ExtensionType.maxFragmentLength, Buffer.from([code])],
    };
  }
  return { limit: MAX_PLAINTEXT, answer: undefined };
}

/** Identities are ASCII in practice; anything else is shown escaped, length-capped. */
function printableIdentity(identity: Buffer): string {
  const n = identity.length;
  let plain = n <= 128;
  for (let i = 0; plain && i < n; i++) {
    const b = identity[i] ?? 0;
    plain = b >= 0x20 && b <= 0x7e;
  }
  // the usual identity: printable ASCII, short; no copy and no replace
  if (plain) return identity.toString('latin1');
  const s = identity.subarray(0, 128).toString('latin1');

  const clean = s.replace(
    /[^\x20-\x7e]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
  return identity.length > 128 ? `${clean}…` : clean;
}
