/** An established DTLS association: epoch-1 state for one peer address. */
import { Buffer } from 'node:buffer';
import {
  AlertLevel,
  AlertDescription,
  ContentType,
  HandshakeType,
  MAX_PLAINTEXT,
} from './constants.js';
import { get16 } from './bytes.js';
import { encodeFlight, type FlightEntry } from './flight.js';
import { ALERT_CLOSE_NOTIFY, type EpochState } from './keys.js';
import type { Lease } from './sharing.js';
import type { DtlsStats, CloseReason } from './types.js';

export interface AssociationHost {
  send(data: Buffer, port: number, address: string): void;
  readonly stats: DtlsStats;
  /** Removes the association from the server's table and reports it closed. */
  release(assoc: Association<unknown>, reason: CloseReason): void;
  /** A shared association sealed records (its leased block may need renewing). */
  sealed(assoc: Association<unknown>): void;
  /** A shared association's leased blocks are used up: keep `data` until the next one. */
  holdOut(assoc: Association<unknown>, type: number, data: Buffer): boolean;
}

export interface DtlsAssociation<P> {
  /**
   * Stable for the association's life, unique among live ones: the peer address and port it
   * was established from, and with a Connection ID that CID too (the address may change).
   */
  readonly key: string;
  /** Where records go now: with a CID, the newest authenticated source (RFC 9146 §6). */
  readonly address: string;
  readonly port: number;
  /** Our RFC 9146 Connection ID (what the peer's records carry), when one was negotiated. */
  readonly connectionId: Buffer | undefined;
  /** What the PSK lookup returned: the authenticated principal. */
  readonly principal: P;
  /** The PSK identity as sent (printable; identities are not secret). */
  readonly identity: string;
  readonly cipherSuite: string;
  readonly extendedMasterSecret: boolean;
  /** RFC 7366 Encrypt-then-MAC in use (CBC suites only). */
  readonly encryptThenMac: boolean;
  readonly establishedAt: number;
  /** ms the handshake took, from the verified ClientHello to the client's Finished. */
  readonly handshakeDurationMs: number;
  readonly lastActivity: number;
  readonly open: boolean;
  /**
   * Application data came in on this association: a record here, or (assumed) before it was
   * adopted from another pod. False for a session that only shook hands: the layer above
   * has had nothing from it.
   */
  readonly carriedData: boolean;
  /**
   * Largest `data` {@link send} takes: the peer's record size limit (RFC 8449
   * record_size_limit, RFC 6066 max_fragment_length; 2^14 when it announced none), less the
   * inner content type byte when our records carry a CID (RFC 9146). The layer above sizes
   * its messages to fit: nothing is split here.
   */
  readonly maxPlaintext: number;
  /**
   * {@link maxPlaintext} under the name a datagram channel's user reads (the CoAP layer's
   * `CoapPeer.maxMessage`: one message per record).
   */
  readonly maxMessage: number;
  /**
   * Sends one application-data record; false when the association is closed or `data` is
   * longer than {@link maxPlaintext} (counted as `recordTooLarge`, nothing sent).
   */
  send(data: Buffer): boolean;
  /** Sends close_notify and forgets the association. */
  close(): void;
}

const NO_RENEGOTIATION = Buffer.from([AlertLevel.warning, AlertDescription.noRenegotiation]);

/** RFC 9853 §4 anti-amplification: at most this many bytes out per byte in, until validated. */
const AMPLIFICATION_FACTOR = 3;

export class Association<P> implements DtlsAssociation<P> {
  lastActivity: number;
  open = true;
  carriedData = false;
  /** The key of the server's table: the current peer address and port. */
  peer: string;
  /** Our last flight (CCS, Finished), re-sent when the client repeats its Finished. */
  private lastFlight: readonly FlightEntry[] | undefined;
  /**
   * Bytes we may still send to an address the peer moved to and that is not validated yet;
   * Infinity once it is (and for the address the handshake ran on, which the cookie proved).
   */
  private budget = Infinity;
  /** Something was sent to the unvalidated address since the move. */
  private sentSinceMove = false;
  /** Where a shared association's leases stand (shared.ts); undefined when not shared. */
  lease: Lease | undefined;

  constructor(
    private readonly host: AssociationHost,
    readonly key: string,
    public address: string,
    public port: number,
    readonly principal: P,
    readonly identity: string,
    readonly cipherSuite: string,
    readonly extendedMasterSecret: boolean,
    readonly encryptThenMac: boolean,
    readonly state: EpochState,
    private readonly epoch0: { seq: number },
    lastFlight: readonly FlightEntry[],
    /** message_seq of the client's Finished, to recognise its retransmission. */
    private readonly clientFinishedSeq: number,
    readonly establishedAt: number,
    readonly handshakeDurationMs: number,
    /** client_random of the ClientHello that started this association's handshake. */
    private readonly clientRandom: Buffer,
    readonly connectionId: Buffer | undefined,
    peer: string,
    /** Largest plaintext the peer accepts per record (RFC 8449 / RFC 6066). */
    readonly peerRecordLimit: number = MAX_PLAINTEXT,
  ) {
    this.lastActivity = establishedAt;
    this.lastFlight = lastFlight;
    this.peer = peer;
  }

  get maxPlaintext(): number {
    // tls12_cid records carry the real content type inside the plaintext (RFC 9146 §4):
    // counted against the peer's limit, to be safe
    return this.state.writeCid !== undefined ? this.peerRecordLimit - 1 : this.peerRecordLimit;
  }

  get maxMessage(): number {
    return this.maxPlaintext;
  }

  /** Whether records go to an address the peer moved to that is not validated yet. */
  get unvalidated(): boolean {
    return this.budget !== Infinity;
  }

  /**
   * The peer moved (RFC 9146 §6: a record from `address` authenticated and was the newest
   * received). Until the new address is validated it may receive at most 3× what came from
   * it (RFC 9853 §4); `bytes` is the size of the record that moved it.
   */
  moveTo(peer: string, address: string, port: number, bytes: number): void {
    this.peer = peer;
    this.address = address;
    this.port = port;
    this.budget = AMPLIFICATION_FACTOR * bytes;
    this.sentSinceMove = false;
  }

  /**
   * Another authenticated record from the current, not yet validated address. Without RFC 9853
   * return routability checks in DTLS 1.2, the best evidence that the peer receives there is
   * that it goes on talking from there, with a newer record, after we sent it something:
   * that validates the address. Other records only add to the budget.
   */
  heardFromNewAddress(newest: boolean, bytes: number): void {
    if (newest && this.sentSinceMove) this.budget = Infinity;
    else this.budget += AMPLIFICATION_FACTOR * bytes;
  }

  /** Every datagram to the peer goes here: the amplification budget applies. */
  private transmit(datagram: Buffer): boolean {
    if (this.budget !== Infinity) {
      if (datagram.length > this.budget) {
        this.host.stats.amplificationLimited++;
        return false;
      }
      this.budget -= datagram.length;
      this.sentSinceMove = true;
    }
    this.host.stats.datagramsOut++;
    this.host.send(datagram, this.port, this.address);
    return true;
  }

  /**
   * Whether a ClientHello carries the random of the handshake that made this association: a
   * late or duplicated copy of it, not a new handshake (a new one has a fresh random).
   */
  startedBy(random: Buffer): boolean {
    return random.equals(this.clientRandom);
  }

  send(data: Buffer): boolean {
    if (!this.open) return false;
    return this.sealAndSend(ContentType.applicationData, data);
  }

  /**
   * Seals and sends one record. Without a sequence number left: a shared association keeps
   * the data until its next leased block arrives; otherwise the space is used up.
   */
  sealAndSend(type: number, data: Buffer): boolean {
    if (data.length > this.maxPlaintext) {
      // never split behind the layer above's back, never sent over the peer's limit
      this.host.stats.recordTooLarge++;
      return false;
    }
    const rec = this.state.seal(type, data);
    if (rec === undefined) {
      if (this.lease !== undefined && !this.state.exhausted)
        return this.host.holdOut(this, type, data);
      this.host.release(this, 'sequence-exhausted');
      return false;
    }
    if (this.transmit(rec) && type === ContentType.applicationData)
      this.host.stats.applicationRecordsOut++;
    if (this.lease !== undefined) this.host.sealed(this);
    return true;
  }

  close(): void {
    if (!this.open) return;
    this.sendAlert(ALERT_CLOSE_NOTIFY);
    this.host.release(this, 'local-close');
  }

  sendAlert(alert: Buffer): void {
    const rec = this.state.seal(ContentType.alert, alert);
    if (rec === undefined) return;
    this.transmit(rec);
    if (this.lease !== undefined) this.host.sealed(this);
  }

  /**
   * Handles an authenticated, decrypted record. Returns application data for the layer above,
   * or undefined when the record was consumed here.
   */
  onPlaintext(type: number, plaintext: Buffer, now: number): Buffer | undefined {
    this.lastActivity = now;
    switch (type) {
      case ContentType.applicationData:
        // The client sends data only after it processed our Finished: the flight arrived.
        this.lastFlight = undefined;
        this.carriedData = true;
        this.host.stats.applicationRecordsIn++;
        return plaintext;
      case ContentType.alert:
        this.onAlert(plaintext);
        return undefined;
      case ContentType.handshake:
        this.onHandshake(plaintext);
        return undefined;
      default:
        this.host.stats.drop('unexpected-record');
        return undefined;
    }
  }

  private onAlert(body: Buffer): void {
    if (body.length !== 2) {
      this.host.stats.drop('unexpected-record');
      return;
    }
    const level = body[0];
    const desc = body[1];
    if (desc === AlertDescription.closeNotify) {
      // RFC 5246 §7.2.1: answer close_notify with close_notify
      this.sendAlert(ALERT_CLOSE_NOTIFY);
      this.host.release(this, 'peer-close-notify');
    } else if (level === AlertLevel.fatal) {
      this.host.release(this, 'peer-fatal-alert');
    }
  }

  private onHandshake(body: Buffer): void {
    const msgType = body[0];
    if (body.length >= 6 && msgType === HandshakeType.finished) {
      const seq = get16(body, 4);
      if (seq === this.clientFinishedSeq && this.lastFlight !== undefined) {
        // The client did not get our last flight: send it again (RFC 6347 §4.2.4).
        const datagram = encodeFlight(this.lastFlight, this.epoch0, this.state);
        if (datagram !== undefined && this.transmit(datagram)) this.host.stats.retransmissions++;
      }
      return;
    }
    if (msgType === HandshakeType.clientHello) {
      // Renegotiation is not supported (RFC 5746 §4.2 allows refusing with a warning).
      this.sendAlert(NO_RENEGOTIATION);
      return;
    }
    this.host.stats.drop('unexpected-record');
  }
}
