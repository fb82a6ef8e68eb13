/**
 * DTLS 1.2 PSK client, for the CLI device tool, the load generator and tests. It shares
 * the record protection, message codecs and key schedule with the server, and retransmits
 * its flights with a doubling timer (RFC 6347 §4.2.4), which node-dtls-client does not.
 */
import { createSocket, type Socket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import {
  AlertDescription,
  AlertLevel,
  CipherSuite,
  ContentType,
  DTLS_1_2,
  ExtensionType,
  HandshakeType,
  alertName,
  cipherSuiteName,
} from './constants.js';
import { DtlsError } from './errors.js';
import { encodeFlight, type FlightEntry } from './flight.js';
import {
  clientHelloBody,
  clientKeyExchangeBody,
  handshakeMessage,
  parseFinished,
  parseHelloVerifyRequest,
  parseServerHello,
  parseServerKeyExchange,
  readFragments,
} from './handshake.js';
import {
  ALERT_CLOSE_NOTIFY,
  CHANGE_CIPHER_SPEC,
  EpochState,
  Transcript,
  deriveSessionKeys,
} from './keys.js';
import { verifyData } from './prf.js';
import { Reassembler } from './reassembly.js';
import { readRecord, type DtlsRecord } from './record.js';
import { systemClock, type Clock, type TimerHandle } from '../time/clock.js';

export interface DtlsClientOptions {
  readonly host: string;
  readonly port: number;
  readonly identity: string | Buffer;
  readonly psk: Buffer;
  /** Suites to offer, in order (default: CCM_8, CBC-SHA256). */
  readonly cipherSuites?: readonly number[];
  /**
   * `standard`: offer renegotiation_info, Encrypt-then-MAC and Extended Master Secret, as
   * OpenSSL and GnuTLS do. `none`: no extensions block at all, as node-dtls-client.
   */
  readonly extensions?: 'standard' | 'none';
  readonly handshakeTimeoutMs?: number;
  readonly retransmitTimeoutMs?: number;
  /** Local address to bind (default: any). */
  readonly bindAddress?: string;
  /**
   * Offer an RFC 9146 Connection ID: the CID the server is to put in its records to us
   * (empty: we send CIDs but want none back). Needs `extensions: 'standard'`.
   */
  readonly connectionId?: Buffer;
  /** Offer RFC 8449 record_size_limit with this value (sent as given, for tests too). */
  readonly recordSizeLimit?: number;
  /** Offer RFC 6066 max_fragment_length: 1..4 ask for 2^9..2^12 bytes. */
  readonly maxFragmentLength?: 1 | 2 | 3 | 4;
  /** Time for the retransmission timer and the handshake deadline (default: the system clock). */
  readonly clock?: Clock;
}

type State = 'hello' | 'server-flight' | 'finishing' | 'established' | 'closed';

export interface DtlsClientEvents {
  message: [data: Buffer];
  close: [reason: string];
}

export class DtlsClient extends EventEmitter<DtlsClientEvents> {
  private state: State = 'hello';
  private socket: Socket;
  private readonly opts: Required<
    Omit<
      DtlsClientOptions,
      'bindAddress' | 'connectionId' | 'recordSizeLimit' | 'maxFragmentLength' | 'clock'
    >
  > &
    Pick<
      DtlsClientOptions,
      'bindAddress' | 'connectionId' | 'recordSizeLimit' | 'maxFragmentLength'
    >;
  private readonly clock: Clock;
  /** The extensions of the server's ServerHello, once it arrived (for tests). */
  serverHelloExtensions: ReadonlyMap<number, Buffer> | undefined;
  /** The server's CID (what our records carry), when negotiated. */
  private peerCid: Buffer | undefined;
  private readonly random = randomBytes(32);
  private readonly identity: Buffer;
  private transcript = new Transcript();
  private epoch0 = { seq: 0 };
  private sendSeq = 0;
  private flight: FlightEntry[] = [];
  private reassembler = new Reassembler(0);
  private epoch1: EpochState | undefined;
  private master: Buffer | undefined;
  private suite = 0;
  private ems = false;
  private etm = false;
  private serverCcs = false;
  private held: DtlsRecord[] = [];
  private timer: TimerHandle = undefined;
  private retransmitMs: number;
  private readonly onRetransmitTimer = (): void => {
    this.trace.retransmissions++;
    this.retransmitMs = Math.min(2 * this.retransmitMs, 60_000);
    this.transmit();
  };
  private settle: ((err?: Error) => void) | undefined;
  /** Record sequence numbers and message_seq values observed, for tests. */
  readonly trace = { retransmissions: 0, helloVerify: false };

  private constructor(opts: DtlsClientOptions) {
    super();
    this.opts = {
      cipherSuites: [
        CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
        CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
      ],
      extensions: 'standard',
      handshakeTimeoutMs: 30_000,
      retransmitTimeoutMs: 1_000,
      ...opts,
    };
    this.identity =
      typeof opts.identity === 'string' ? Buffer.from(opts.identity, 'utf8') : opts.identity;
    this.clock = opts.clock ?? systemClock;
    this.retransmitMs = this.opts.retransmitTimeoutMs;
    this.socket = this.newSocket();
  }

  private newSocket(): Socket {
    const socket = createSocket(this.opts.host.includes(':') ? 'udp6' : 'udp4');
    socket.on('message', (msg) => {
      if (socket === this.socket) this.onDatagram(msg);
    });
    socket.on('error', () => {
      if (socket === this.socket) this.shutdown('socket-error');
    });
    return socket;
  }

  /** Binds `socket` to an ephemeral port and connects it to the server. */
  private async open(socket: Socket): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, this.opts.bindAddress, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.connect(this.opts.port, this.opts.host);
    await new Promise<void>((resolve, reject) =>
      socket.once('connect', resolve).once('error', reject),
    );
  }

  /**
   * Moves the association to a new socket (a new source port), as a NAT rebinding does to a
   * device; the old socket is closed. With a Connection ID the server keeps the association.
   */
  async rebind(): Promise<void> {
    const next = this.newSocket();
    await this.open(next);
    const old = this.socket;
    this.socket = next;
    try {
      old.close();
    } catch {
      // already closed
    }
  }

  /**
   * Closes the socket without close_notify and keeps the association, as a device that goes
   * to sleep: it holds no socket while idle and the server keeps (or stores) the association.
   * {@link resume} opens a new socket; sends in between throw.
   */
  suspend(): void {
    this.clock.clearTimeout(this.timer);
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }

  /** Opens a new socket (a new source port) for a suspended association. */
  resume(): Promise<void> {
    return this.rebind();
  }

  /** The negotiated Connection IDs (RFC 9146), or undefined when none was. */
  get connectionIds(): { readonly own: Buffer; readonly peer: Buffer } | undefined {
    const own = this.opts.connectionId;
    return own !== undefined && this.peerCid !== undefined
      ? { own, peer: this.peerCid }
      : undefined;
  }

  /** Connects and completes the handshake; rejects on alert, timeout or socket error. */
  static async connect(opts: DtlsClientOptions): Promise<DtlsClient> {
    const c = new DtlsClient(opts);
    await c.open(c.socket);
    await new Promise<void>((resolve, reject) => {
      const deadline = c.clock.setTimeout(
        () => fail(new DtlsError('DTLS_HANDSHAKE_TIMEOUT', 'handshake timed out')),
        c.opts.handshakeTimeoutMs,
        true,
      );
      const fail = (err?: Error): void => {
        c.clock.clearTimeout(deadline);
        c.settle = undefined;
        if (err === undefined) {
          resolve();
          return;
        }
        c.shutdown('handshake-failed');
        reject(err);
      };
      c.settle = fail;
      c.sendClientHello(Buffer.alloc(0));
    });
    return c;
  }

  get cipherSuite(): string {
    return cipherSuiteName.get(this.suite) ?? 'none';
  }

  get extendedMasterSecret(): boolean {
    return this.ems;
  }

  get encryptThenMac(): boolean {
    return this.etm;
  }

  get localPort(): number {
    return this.socket.address().port;
  }

  get established(): boolean {
    return this.state === 'established';
  }

  /** Sends one application-data record. */
  send(data: Buffer): void {
    if (this.state !== 'established' || this.epoch1 === undefined) {
      throw new DtlsError('DTLS_CLOSED', 'association is not established');
    }
    const rec = this.epoch1.seal(ContentType.applicationData, data);
    if (rec === undefined) throw new DtlsError('DTLS_CLOSED', 'sequence numbers exhausted');
    this.socket.send(rec);
  }

  /** Sends raw bytes on the socket (tests: forged or replayed records). */
  sendRaw(datagram: Buffer): void {
    this.socket.send(datagram);
  }

  /** Seals a record without sending it (tests: replay). */
  sealRecord(type: number, data: Buffer): Buffer | undefined {
    return this.epoch1?.seal(type, data);
  }

  /** Sends close_notify (when established) and closes the socket. */
  close(): Promise<void> {
    if (this.state === 'established' && this.epoch1 !== undefined) {
      const rec = this.epoch1.seal(ContentType.alert, ALERT_CLOSE_NOTIFY);
      if (rec !== undefined) {
        return new Promise((resolve) => {
          this.socket.send(rec, () => {
            this.shutdown('local-close');
            resolve();
          });
        });
      }
    }
    this.shutdown('local-close');
    return Promise.resolve();
  }

  private shutdown(reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.clock.clearTimeout(this.timer);
    try {
      this.socket.close();
    } catch {
      // already closed
    }
    this.emit('close', reason);
  }

  private sendClientHello(cookie: Buffer): void {
    const exts: [number, Buffer][] | undefined =
      this.opts.extensions === 'none'
        ? undefined
        : [
            [ExtensionType.renegotiationInfo, Buffer.from([0])],
            [ExtensionType.encryptThenMac, Buffer.alloc(0)],
            [ExtensionType.extendedMasterSecret, Buffer.alloc(0)],
          ];
    const own = this.opts.connectionId;
    if (exts !== undefined && own !== undefined) {
      exts.push([ExtensionType.connectionId, Buffer.concat([Buffer.from([own.length]), own])]);
    }
    const rsl = this.opts.recordSizeLimit;
    if (exts !== undefined && rsl !== undefined) {
      const v = Buffer.alloc(2);
      v.writeUInt16BE(rsl, 0);
      exts.push([ExtensionType.recordSizeLimit, v]);
    }
    const mfl = this.opts.maxFragmentLength;
    if (exts !== undefined && mfl !== undefined)
      exts.push([ExtensionType.maxFragmentLength, Buffer.from([mfl])]);
    const body = clientHelloBody({
      random: this.random,
      cookie,
      cipherSuites: this.opts.cipherSuites,
      extensions: exts,
    });
    const msg = handshakeMessage(HandshakeType.clientHello, this.sendSeq++, body);
    this.transcript = new Transcript();
    this.transcript.add(msg);
    this.flight = [{ type: ContentType.handshake, epoch: 0, payload: msg }];
    this.reassembler = new Reassembler(this.sendSeq - 1);
    this.transmit();
  }

  private transmit(): void {
    const d = encodeFlight(this.flight, this.epoch0, this.epoch1);
    if (d !== undefined) this.socket.send(d);
    this.clock.clearTimeout(this.timer);
    this.timer = this.clock.setTimeout(this.onRetransmitTimer, this.retransmitMs);
  }

  private stopTimer(): void {
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private onDatagram(buf: Buffer): void {
    let off = 0;
    try {
      while (off < buf.length && this.state !== 'closed') {
        const rec = readRecord(buf, off, this.opts.connectionId?.length ?? 0);
        if (rec === undefined) return;
        off += rec.raw.length;
        this.onRecord(rec);
      }
    } catch (err) {
      const e =
        err instanceof DtlsError ? err : new DtlsError('DTLS_INTERNAL_ERROR', 'client error');
      this.abort(e);
    }
  }

  private abort(err: DtlsError): void {
    if (this.state === 'established') {
      this.shutdown(err.code);
      return;
    }
    const settle = this.settle;
    if (settle !== undefined) settle(err);
    else this.shutdown(err.code);
  }

  private onRecord(rec: DtlsRecord): void {
    if (rec.epoch === 0) {
      if (rec.type === ContentType.handshake) this.onHandshakeBytes(rec.body, 0);
      else if (rec.type === ContentType.changeCipherSpec) {
        this.serverCcs = true;
        this.releaseHeld();
      } else if (rec.type === ContentType.alert) this.onAlert(rec.body);
      return;
    }
    if (this.epoch1 === undefined || rec.epoch !== 1) return;
    // a CID record must carry ours, and only when we asked for a non-empty one
    const own = this.opts.connectionId;
    if (rec.cid !== undefined && (own === undefined || own.length === 0 || !rec.cid.equals(own)))
      return;
    if (this.state === 'finishing' && !this.serverCcs) {
      if (this.held.length < 8) this.held.push({ ...rec, body: Buffer.from(rec.body) });
      return;
    }
    const pt = this.epoch1.open(rec);
    if (typeof pt === 'string') return;
    const type = this.epoch1.contentType;
    if (type === ContentType.applicationData) {
      if (this.state === 'established') this.emit('message', pt);
    } else if (type === ContentType.alert) this.onAlert(pt);
    else if (type === ContentType.handshake) this.onHandshakeBytes(pt, 1);
  }

  private releaseHeld(): void {
    const held = this.held;
    this.held = [];
    for (const r of held) this.onRecord(r);
  }

  private onAlert(body: Buffer): void {
    if (body.length !== 2) return;
    const desc = body[1] ?? 0;
    if (desc === AlertDescription.closeNotify) {
      this.shutdown('peer-close-notify');
      return;
    }
    if (body[0] === AlertLevel.fatal) {
      this.abort(
        new DtlsError(
          'DTLS_ALERT_RECEIVED',
          `received fatal alert ${alertName.get(desc) ?? desc}`,
          desc,
        ),
      );
    }
  }

  private onHandshakeBytes(body: Buffer, epoch: number): void {
    for (const f of readFragments(body)) {
      if (this.state === 'hello' && f.msgType === HandshakeType.helloVerifyRequest) {
        const hvr = parseHelloVerifyRequest(f.fragment);
        this.trace.helloVerify = true;
        // A second HelloVerifyRequest with the same cookie answers a retransmission of our
        // first ClientHello: the ClientHello with the cookie is out already (and its timer
        // runs). Another ClientHello with a new message_seq would look like a new handshake.
        if (this.cookieSent?.equals(hvr.cookie) === true) continue;
        this.cookieSent = Buffer.from(hvr.cookie);
        this.sendClientHello(this.cookieSent);
        continue;
      }
      if (this.state === 'established') continue; // late retransmission of the server's flight
      const r = this.reassembler.add(f, epoch);
      if (r.kind !== 'messages') continue;
      for (const m of r.messages) this.onMessage(m.msgType, m.messageSeq, m.body, m.epoch);
    }
  }

  private onMessage(type: number, seq: number, body: Buffer, epoch: number): void {
    const msg = handshakeMessage(type, seq, body);
    if ((this.state === 'hello' || this.state === 'server-flight') && epoch === 0) {
      if (type === HandshakeType.serverHello) {
        this.stopTimer();
        const sh = parseServerHello(body);
        if (
          sh.version !== DTLS_1_2 ||
          !this.opts.cipherSuites.includes(sh.cipherSuite) ||
          sh.compression !== 0
        ) {
          throw new DtlsError('DTLS_HANDSHAKE_FAILURE', 'unacceptable ServerHello');
        }
        this.suite = sh.cipherSuite;
        this.serverHelloExtensions = sh.extensions;
        this.ems =
          this.opts.extensions === 'standard' &&
          sh.extensions.has(ExtensionType.extendedMasterSecret);
        this.etm =
          this.opts.extensions === 'standard' &&
          sh.extensions.has(ExtensionType.encryptThenMac) &&
          sh.cipherSuite === CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256;
        const cidExt = sh.extensions.get(ExtensionType.connectionId);
        if (cidExt !== undefined) {
          if (this.opts.connectionId === undefined || this.opts.extensions === 'none')
            throw new DtlsError('DTLS_HANDSHAKE_FAILURE', 'connection_id not offered');
          if (cidExt[0] !== cidExt.length - 1)
            throw new DtlsError('DTLS_DECODE_ERROR', 'malformed connection_id');
          this.peerCid = Buffer.from(cidExt.subarray(1));
        }
        this.serverRandom = Buffer.from(sh.random);
        this.state = 'server-flight';
        this.transcript.add(msg);
        return;
      }
      if (this.state === 'server-flight' && type === HandshakeType.serverKeyExchange) {
        parseServerKeyExchange(body);
        this.transcript.add(msg);
        return;
      }
      if (this.state === 'server-flight' && type === HandshakeType.serverHelloDone) {
        if (body.length !== 0)
          throw new DtlsError('DTLS_DECODE_ERROR', 'malformed ServerHelloDone');
        this.transcript.add(msg);
        this.sendFinishedFlight();
        return;
      }
    }
    if (
      this.state === 'finishing' &&
      type === HandshakeType.finished &&
      epoch === 1 &&
      this.master !== undefined
    ) {
      const expected = verifyData(this.master, 'server finished', this.transcript.digest());
      if (!timingSafeEqual(parseFinished(body), expected)) {
        throw new DtlsError('DTLS_DECRYPT_ERROR', 'server Finished does not verify');
      }
      this.stopTimer();
      this.state = 'established';
      this.settle?.();
      return;
    }
    throw new DtlsError('DTLS_UNEXPECTED_MESSAGE', `unexpected handshake message ${type}`);
  }

  private serverRandom: Buffer = Buffer.alloc(32);
  /** The cookie our last ClientHello carried. */
  private cookieSent: Buffer | undefined;

  private sendFinishedFlight(): void {
    const cke = handshakeMessage(
      HandshakeType.clientKeyExchange,
      this.sendSeq++,
      clientKeyExchangeBody(this.identity),
    );
    this.transcript.add(cke);
    const keys = deriveSessionKeys({
      suite: this.suite,
      psk: this.opts.psk,
      clientRandom: this.random,
      serverRandom: this.serverRandom,
      sessionHash: this.ems ? this.transcript.digest() : undefined,
      encryptThenMac: this.etm,
    });
    this.master = keys.master;
    // the client reads what the server writes, and the other way round
    this.epoch1 = new EpochState(1, keys.serverWrite, keys.clientWrite);
    // RFC 9146 §3: our records carry the server's CID, unless it gave a zero-length one
    if (this.peerCid !== undefined && this.peerCid.length > 0) this.epoch1.writeCid = this.peerCid;
    const fin = handshakeMessage(
      HandshakeType.finished,
      this.sendSeq++,
      verifyData(keys.master, 'client finished', this.transcript.digest()),
    );
    this.transcript.add(fin);
    this.flight = [
      { type: ContentType.handshake, epoch: 0, payload: cke },
      { type: ContentType.changeCipherSpec, epoch: 0, payload: CHANGE_CIPHER_SPEC },
      { type: ContentType.handshake, epoch: 1, payload: fin },
    ];
    this.state = 'finishing';
    this.retransmitMs = this.opts.retransmitTimeoutMs;
    this.transmit();
  }
}
