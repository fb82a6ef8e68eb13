/**
 * Test harness for the CoAP exchange layer: a fake peer that records what it is sent, request
 * builders, and small helpers to read responses.
 */
import { decode, encode, type CoapMessage, type CoapOption } from '../../../src/coap/codec.js';
import { CON, Code, OptionNumber, type MessageType } from '../../../src/coap/constants.js';
import {
  CoapEndpoint,
  type CoapEndpointOptions,
  type CoapPeer,
} from '../../../src/coap/endpoint.js';
import {
  decodeBlock,
  decodeUint,
  encodeBlock,
  getOption,
  type BlockOption,
} from '../../../src/coap/options.js';
import { ManualClock } from '../../../src/time/clock.js';
import { COAP_ENDPOINT_DEFAULTS } from '../../helpers/component-defaults.js';

/** A peer whose `send` records datagrams; `open = false` makes it refuse them. */
export class FakePeer implements CoapPeer<string> {
  readonly sent: Buffer[] = [];
  open = true;
  /** The peer's largest message (a DTLS record size limit), when set. */
  maxMessage?: number;
  constructor(
    readonly key = 'peer-1',
    readonly principal = 'device-1',
  ) {}

  send(datagram: Buffer): boolean {
    if (!this.open) return false;
    this.sent.push(datagram);
    return true;
  }

  /** Decoded datagrams sent so far, and forgets them. */
  take(): CoapMessage[] {
    const out = this.sent.map((b) => decode(b));
    this.sent.length = 0;
    return out;
  }

  /** Raw datagrams sent so far, and forgets them. */
  takeRaw(): Buffer[] {
    const out = this.sent.slice();
    this.sent.length = 0;
    return out;
  }
}

/**
 * An endpoint with the defaults of the settings, `handler`, a manual clock at 0, `random` 0 and
 * `extra`, and a fake peer to talk to it.
 */
export function endpointSetup(
  handler: CoapEndpointOptions<string>['handler'],
  extra: Partial<CoapEndpointOptions<string>> = {},
): { ep: CoapEndpoint<string>; peer: FakePeer; clock: ManualClock } {
  const clock = new ManualClock(0);
  const ep = new CoapEndpoint<string>({
    ...COAP_ENDPOINT_DEFAULTS,
    handler,
    clock,
    random: () => 0,
    ...extra,
  });
  return { ep, peer: new FakePeer(), clock };
}

export interface RequestSpec {
  readonly type?: MessageType;
  readonly code?: number;
  readonly mid: number;
  readonly token?: Buffer;
  readonly path?: readonly string[];
  readonly options?: readonly CoapOption[];
  readonly payload?: Buffer;
  readonly block1?: { num: number; more: boolean; szx: number };
  readonly block2?: { num: number; more?: boolean; szx: number };
  readonly size1?: number;
}

export const TOKEN = Buffer.from([0xca, 0xfe]);

/** Encodes a request (CON POST to /t with token cafe unless told otherwise). */
export function req(spec: RequestSpec): Buffer {
  const options: CoapOption[] = [];
  for (const seg of spec.path ?? ['t']) {
    options.push({ number: OptionNumber.URI_PATH, value: Buffer.from(seg) });
  }
  if (spec.block1 !== undefined) {
    options.push({ number: OptionNumber.BLOCK1, value: encodeBlock(spec.block1) });
  }
  if (spec.block2 !== undefined) {
    options.push({
      number: OptionNumber.BLOCK2,
      value: encodeBlock({ more: false, ...spec.block2 }),
    });
  }
  if (spec.size1 !== undefined) {
    options.push({ number: OptionNumber.SIZE1, value: uint(spec.size1) });
  }
  options.push(...(spec.options ?? []));
  return encode({
    type: spec.type ?? CON,
    code: spec.code ?? Code.POST,
    messageId: spec.mid,
    token: spec.token ?? TOKEN,
    options,
    payload: spec.payload ?? Buffer.alloc(0),
  });
}

/** An Empty message (ACK, RST, ping) with the given type and message ID. */
export function empty(type: MessageType, mid: number): Buffer {
  return encode({
    type,
    code: 0,
    messageId: mid,
    token: Buffer.alloc(0),
    options: [],
    payload: Buffer.alloc(0),
  });
}

function uint(n: number): Buffer {
  const b: number[] = [];
  while (n > 0) {
    b.unshift(n & 0xff);
    n = Math.floor(n / 256);
  }
  return Buffer.from(b);
}

/** The Block1/Block2 option of a message, decoded. */
export function block(msg: CoapMessage, n: number): BlockOption | undefined {
  const v = getOption(msg, n);
  return v === undefined ? undefined : decodeBlock(v);
}

/** A uint option of a message, decoded. */
export function uintOption(msg: CoapMessage, n: number): number | undefined {
  const v = getOption(msg, n);
  return v === undefined ? undefined : decodeUint(v);
}

/** Lets pending promise callbacks run. */
export function flush(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** A promise with its resolve and reject. */
export function deferred<T>(): {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
} {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Deterministic bytes 0..n-1 modulo 251 (a prime, so blocks differ). */
export function bytes(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
}
