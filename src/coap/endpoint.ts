/**
 * CoAP message layer over an authenticated datagram channel (RFC 7252 §4). It knows
 * nothing of DTLS: a peer is anything with a key, a principal and a `send`.
 *
 * This first version answers confirmable requests with piggybacked responses, non-
 * confirmable ones with NON responses, CoAP pings with RST, and malformed messages as
 * RFC 7252 §4.2/§4.3 say (RST for a CON, silence otherwise).
 */
import { decode, encode, type CoapMessage, type CoapOption } from './codec.js';
import { ACK, CON, Code, NON, RST, isRequestCode } from './constants.js';
import { CoapFormatError } from './errors.js';

export interface CoapPeer<I> {
  /** Stable per association (address and port). */
  readonly key: string;
  /** Who the channel authenticated, or undefined on the plain (development) port. */
  readonly principal: I;
  send(datagram: Buffer): boolean;
}

export interface CoapRequest<I> {
  readonly peer: CoapPeer<I>;
  readonly message: CoapMessage;
}

export interface CoapReply {
  readonly code: number;
  readonly options?: readonly CoapOption[];
  readonly payload?: Buffer;
}

export type CoapRequestHandler<I> = (req: CoapRequest<I>) => CoapReply | Promise<CoapReply>;

export class CoapStats {
  messagesIn = 0;
  requests = 0;
  responses = 0;
  resets = 0;
  malformed = 0;
  pings = 0;
  ignored = 0;
  handlerErrors = 0;
}

const EMPTY = Buffer.alloc(0);
const NO_OPTIONS: readonly CoapOption[] = [];
const INTERNAL_ERROR: CoapReply = { code: Code.INTERNAL_SERVER_ERROR };

export interface CoapEndpointOptions<I> {
  readonly handler: CoapRequestHandler<I>;
  readonly onError?: (err: unknown) => void;
}

export class CoapEndpoint<I> {
  readonly stats = new CoapStats();
  private nextMessageId = Math.floor(Math.random() * 0x10000);

  constructor(private readonly opts: CoapEndpointOptions<I>) {}

  /** Handles one datagram (one CoAP message) from a peer. */
  receive(peer: CoapPeer<I>, datagram: Buffer): void {
    this.stats.messagesIn++;
    let msg: CoapMessage;
    try {
      msg = decode(datagram);
    } catch (err) {
      if (!(err instanceof CoapFormatError)) throw err;
      this.stats.malformed++;
      if (err.reaction === 'reset' && err.messageId !== undefined) this.reset(peer, err.messageId);
      return;
    }
    if (msg.type === ACK || msg.type === RST) {
      this.stats.ignored++;
      return;
    }
    if (msg.code === Code.EMPTY) {
      // CoAP ping: an Empty CON is answered with RST (RFC 7252 §4.3)
      if (msg.type === CON) {
        this.stats.pings++;
        this.reset(peer, msg.messageId);
      } else this.stats.ignored++;
      return;
    }
    if (!isRequestCode(msg.code)) {
      // a response we did not ask for: reject CON, ignore NON (RFC 7252 §4.2, §4.3)
      if (msg.type === CON) this.reset(peer, msg.messageId);
      else this.stats.ignored++;
      return;
    }
    this.stats.requests++;
    let reply: CoapReply | Promise<CoapReply>;
    try {
      reply = this.opts.handler({ peer, message: msg });
    } catch (err) {
      this.failed(err);
      reply = INTERNAL_ERROR;
    }
    if (reply instanceof Promise) {
      reply.then(
        (r) => this.respond(peer, msg, r),
        (err: unknown) => {
          this.failed(err);
          this.respond(peer, msg, INTERNAL_ERROR);
        },
      );
    } else {
      this.respond(peer, msg, reply);
    }
  }

  private failed(err: unknown): void {
    this.stats.handlerErrors++;
    this.opts.onError?.(err);
  }

  private respond(peer: CoapPeer<I>, req: CoapMessage, reply: CoapReply): void {
    const piggybacked = req.type === CON;
    this.stats.responses++;
    peer.send(
      encode({
        type: piggybacked ? ACK : NON,
        code: reply.code,
        messageId: piggybacked ? req.messageId : this.allocateMessageId(),
        token: req.token,
        options: reply.options ?? NO_OPTIONS,
        payload: reply.payload ?? EMPTY,
      }),
    );
  }

  private reset(peer: CoapPeer<I>, messageId: number): void {
    this.stats.resets++;
    peer.send(
      encode({
        type: RST,
        code: Code.EMPTY,
        messageId,
        token: EMPTY,
        options: NO_OPTIONS,
        payload: EMPTY,
      }),
    );
  }

  private allocateMessageId(): number {
    this.nextMessageId = (this.nextMessageId + 1) & 0xffff;
    return this.nextMessageId;
  }
}
