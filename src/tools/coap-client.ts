/**
 * A device-side CoAP client over our DTLS client: confirmable requests with RFC 7252
 * retransmission, piggybacked and separate responses (an empty ACK, then a CON response
 * that is acknowledged), and Block2 follow-ups for long answers. Used by `coap-edge
 * device`, the load generator and tests.
 */
import { CoapEdgeError } from '../errors/index.js';
import { randomBytes, randomInt } from 'node:crypto';
import { decode, encode, type CoapMessage, type CoapOption } from '../coap/codec.js';
import {
  ACK,
  ACK_RANDOM_FACTOR,
  ACK_TIMEOUT_MS,
  CON,
  NON,
  Code,
  ContentFormat,
  MAX_RETRANSMIT,
  OptionNumber,
  RST,
} from '../coap/constants.js';
import { decodeBlock, encodeBlock, encodeUint } from '../coap/options.js';
import { DtlsClient, type DtlsClientOptions } from '../dtls/client.js';

export interface CoapRequestOptions {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Path such as `/topic/sys/pk/dk/thing/measurepoint/post`. */
  readonly path: string;
  readonly query?: readonly string[];
  readonly payload?: Buffer;
  readonly contentFormat?: number;
  /** Extra options (e.g. Block2 to ask for small blocks). */
  readonly options?: readonly CoapOption[];
  /** Overall time to wait for the answer (default: RFC 7252 MAX_TRANSMIT_WAIT plus slack). */
  readonly timeoutMs?: number;
  /** Initial retransmission timeout (default ACK_TIMEOUT × random factor). */
  readonly ackTimeoutMs?: number;
  /** Follow Block2 to fetch the whole answer (default true). */
  readonly followBlocks?: boolean;
  /**
   * Send a non-confirmable request (RFC 7252 §5.2.3): no retransmission; the answer, if the
   * server sends one, is a NON matched by token. Default false (CON).
   */
  readonly nonConfirmable?: boolean;
}

export interface CoapResponse {
  readonly code: number;
  readonly payload: Buffer;
  readonly options: readonly CoapOption[];
  /** True when the answer came as a separate CON response after an empty ACK. */
  readonly separate: boolean;
  /** How many times the request was retransmitted. */
  readonly retransmissions: number;
}

const METHODS = { GET: Code.GET, POST: Code.POST, PUT: Code.PUT, DELETE: Code.DELETE } as const;
const EMPTY = Buffer.alloc(0);

interface Pending {
  readonly token: Buffer;
  readonly confirmable: boolean;
  messageId: number;
  resolve(msg: CoapMessage, separate: boolean): void;
  /** Ends the exchange with `err` (the association closed: no answer can come). */
  fail(err: Error): void;
  acked: boolean;
}

export class CoapClientError extends CoapEdgeError {
  constructor(
    readonly code: 'COAP_TIMEOUT' | 'COAP_RESET' | 'COAP_CLOSED',
    message: string,
  ) {
    super(message);
    this.name = 'CoapClientError';
  }
}

export class CoapDtlsClient {
  private nextMessageId = randomInt(0x10000);
  private readonly pending = new Map<string, Pending>();

  private constructor(readonly dtls: DtlsClient) {
    dtls.on('message', (data) => this.onDatagram(data));
    // a closed association's socket is closed: nothing can answer, so no exchange is left
    // waiting for its deadline (its timer would also hold the process open)
    dtls.on('close', () => {
      const closed = new CoapClientError('COAP_CLOSED', 'DTLS association closed');
      for (const p of [...this.pending.values()]) p.fail(closed);
    });
  }

  static async connect(opts: DtlsClientOptions): Promise<CoapDtlsClient> {
    return new CoapDtlsClient(await DtlsClient.connect(opts));
  }

  /** Wraps an already connected DTLS client. */
  static over(dtls: DtlsClient): CoapDtlsClient {
    return new CoapDtlsClient(dtls);
  }

  close(): Promise<void> {
    return this.dtls.close();
  }

  async request(o: CoapRequestOptions): Promise<CoapResponse> {
    const first = await this.exchange(o, buildOptions(o));
    if (o.followBlocks === false) return first;
    let block = blockOf(first);
    if (block === undefined || !block.more) return first;
    const parts: Buffer[] = [first.payload];
    let retransmissions = first.retransmissions;
    let last = first;
    while (block?.more === true) {
      const next = encodeBlock({ num: block.num + 1, more: false, szx: block.szx });
      const opts = buildOptions({ ...o, payload: undefined }).filter(
        (x) => x.number !== OptionNumber.BLOCK2,
      );
      opts.push({ number: OptionNumber.BLOCK2, value: next });
      last = await this.exchange({ ...o, payload: undefined }, opts);
      retransmissions += last.retransmissions;
      if (last.code !== first.code) return last;
      parts.push(last.payload);
      block = blockOf(last);
    }
    return { ...last, payload: Buffer.concat(parts), retransmissions };
  }

  private exchange(o: CoapRequestOptions, options: CoapOption[]): Promise<CoapResponse> {
    const token = randomBytes(4);
    const key = token.toString('hex');
    const messageId = this.allocateMessageId();
    const confirmable = o.nonConfirmable !== true;
    const datagram = encode({
      type: confirmable ? CON : NON,
      code: METHODS[o.method],
      messageId,
      token,
      options,
      payload: o.payload ?? EMPTY,
    });
    const timeoutMs = o.timeoutMs ?? 100_000;
    return new Promise<CoapResponse>((resolve, reject) => {
      let retransmissions = 0;
      let timeout =
        o.ackTimeoutMs ?? ACK_TIMEOUT_MS * (1 + Math.random() * (ACK_RANDOM_FACTOR - 1));
      let timer: NodeJS.Timeout | undefined;
      const deadline = setTimeout(
        () => finish(new CoapClientError('COAP_TIMEOUT', 'no answer in time')),
        timeoutMs,
      );
      const finish = (result: CoapResponse | Error): void => {
        clearTimeout(deadline);
        if (timer !== undefined) clearTimeout(timer);
        this.pending.delete(key);
        if (result instanceof Error) reject(result);
        else resolve(result);
      };
      const p: Pending = {
        token,
        confirmable,
        messageId,
        acked: false,
        fail: finish,
        resolve: (msg, separate) => {
          if (msg.type === RST) {
            finish(new CoapClientError('COAP_RESET', 'request was reset by the server'));
            return;
          }
          finish({
            code: msg.code,
            payload: msg.payload,
            options: msg.options,
            separate,
            retransmissions,
          });
        },
      };
      this.pending.set(key, p);
      const send = (): void => {
        if (p.acked) return;
        try {
          this.dtls.send(datagram);
        } catch {
          finish(new CoapClientError('COAP_CLOSED', 'DTLS association closed'));
          return;
        }
        if (!confirmable) return; // a NON is sent once (§4.3)
        timer = setTimeout(() => {
          if (p.acked) return;
          if (retransmissions >= MAX_RETRANSMIT) return; // keep waiting until the deadline
          retransmissions++;
          timeout *= 2;
          send();
        }, timeout);
      };
      send();
    });
  }

  private onDatagram(data: Buffer): void {
    let msg: CoapMessage;
    try {
      msg = decode(data);
    } catch {
      return;
    }
    if (msg.type === ACK || msg.type === RST) {
      for (const p of this.pending.values()) {
        if (p.messageId !== msg.messageId) continue;
        if (msg.type === RST) p.resolve(msg, false);
        else if (msg.code === Code.EMPTY)
          p.acked = true; // separate response follows
        else p.resolve(msg, false);
        return;
      }
      return;
    }
    // a separate response (CON or NON) matched by token; a CON one is acknowledged
    if (msg.type === CON) {
      this.dtls.send(
        encode({
          type: ACK,
          code: Code.EMPTY,
          messageId: msg.messageId,
          token: EMPTY,
          options: [],
          payload: EMPTY,
        }),
      );
    }
    const p = this.pending.get(msg.token.toString('hex'));
    if (p !== undefined) {
      p.acked = true;
      // the answer to a NON request is a NON of its own, not a separate response (§5.2.3)
      p.resolve(msg, p.confirmable);
    }
  }

  private allocateMessageId(): number {
    this.nextMessageId = (this.nextMessageId + 1) & 0xffff;
    return this.nextMessageId;
  }
}

function buildOptions(o: CoapRequestOptions): CoapOption[] {
  const out: CoapOption[] = [];
  for (const seg of o.path.split('/')) {
    if (seg.length > 0)
      out.push({ number: OptionNumber.URI_PATH, value: Buffer.from(seg, 'utf8') });
  }
  for (const q of o.query ?? [])
    out.push({ number: OptionNumber.URI_QUERY, value: Buffer.from(q, 'utf8') });
  if (o.payload !== undefined && o.payload.length > 0) {
    out.push({
      number: OptionNumber.CONTENT_FORMAT,
      value: encodeUint(o.contentFormat ?? ContentFormat.JSON),
    });
  }
  for (const x of o.options ?? []) out.push(x);
  return out;
}

function blockOf(r: CoapResponse): ReturnType<typeof decodeBlock> {
  const v = r.options.find((x) => x.number === OptionNumber.BLOCK2)?.value;
  return v === undefined ? undefined : decodeBlock(v);
}
