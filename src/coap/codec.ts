/**
 * CoAP message codec (RFC 7252 §3, §3.1, §4.1): one datagram ⇄ one {@link CoapMessage}.
 *
 * `decode` is a pure function over the datagram: it checks every length before reading,
 * returns zero-copy `subarray` views into the input (token, option values, payload), and
 * throws only {@link CoapFormatError}. `decodeWire`, the exchange layer's, is the same parser
 * but leaves each option value where it lies in the datagram ({@link WireOption}): the view
 * is made only if something reads `value`. `encode` computes the exact length first, makes
 * one allocation and writes into it. None keeps state between calls.
 *
 * The wire format is canonical (each delta and length has exactly one encoding, and the
 * payload marker appears only before a non-empty payload), so for every datagram `decode`
 * accepts, `encode(decode(b))` returns the same bytes.
 *
 * @module
 */

// Node's global `Buffer` is a getter: an imported binding is a constant
// (bench/history/records.md, "The record path, third pass")
import { Buffer } from 'node:buffer';
import {
  MAX_OPTION_LENGTH,
  MAX_OPTION_NUMBER,
  MAX_TOKEN_LENGTH,
  PAYLOAD_MARKER,
  VERSION,
  type MessageType,
} from './constants.js';
import { CoapFormatError } from './errors.js';

/** One option instance: its absolute number and raw value (RFC 7252 §5.4). */
export interface CoapOption {
  readonly number: number;
  readonly value: Buffer;
}

/** A CoAP message (RFC 7252 §3). */
export interface CoapMessage {
  /** CON 0, NON 1, ACK 2, RST 3. */
  readonly type: MessageType;
  /** Code byte, class << 5 | detail (see `code()` in constants.ts). */
  readonly code: number;
  /** 16-bit message ID. */
  readonly messageId: number;
  /** Token, 0-8 bytes. */
  readonly token: Buffer;
  /** Options in ascending number order; repeated options keep their relative order. */
  readonly options: readonly CoapOption[];
  /** Payload; an empty Buffer when there is none. */
  readonly payload: Buffer;
}

/** Shared zero-length buffer for absent token and payload; it has no bytes to change. */
const EMPTY: Buffer = Buffer.alloc(0);
/** Shared option list of messages without options. */
const NO_OPTIONS: readonly CoapOption[] = Object.freeze([]);

/**
 * An option of a message from {@link decodeWire}: its value is `bytes[start, end)` of the
 * datagram, and `value` makes the Buffer view of it on first read (and keeps it). A view costs
 * a typed array's construction (~1 k instructions through `subarray`'s species lookup,
 * bench/history/uplink.md, "The CoAP decode, the Uri-Path and the exchange timer"); the request
 * path
 * reads its seven Uri-Path segments and its Content-Format straight from the bytes
 * (options.ts), so on that path no view is made at all.
 */
export class WireOption implements CoapOption {
  private view: Buffer | undefined = undefined;

  /**
   * @param number the option's absolute number
   * @param bytes the datagram
   * @param start where the value starts in `bytes`
   * @param end where it ends (exclusive); `start <= end <= bytes.length`, checked by the decoder
   */
  constructor(
    readonly number: number,
    readonly bytes: Buffer,
    readonly start: number,
    readonly end: number,
  ) {}

  /** The value as a view into the datagram (the shared empty Buffer when it has no bytes). */
  get value(): Buffer {
    let v = this.view;
    if (v === undefined) {
      v = this.start === this.end ? EMPTY : this.bytes.subarray(this.start, this.end);
      this.view = v;
    }
    return v;
  }
}

/**
 * Decodes one datagram into a message.
 *
 * The returned token, option values and payload are views into `buf`, valid as long as
 * `buf` is not reused; copy them if they must outlive it. Options come out in wire order,
 * which the format guarantees to be ascending by number.
 *
 * @throws CoapFormatError for every malformed input; its `reaction` and `messageId` say
 *   whether to answer with a Reset (RFC 7252 §4.2) or drop it.
 */
export function decode(buf: Buffer): CoapMessage {
  return decodeMessage(buf, false);
}

/**
 * {@link decode} with each option a {@link WireOption}: the same checks, errors and message,
 * but an option value's view is made only when `value` is read. The exchange layer decodes
 * with it; where the value lies (`bytes`, `start`, `end`) is what options.ts reads on the
 * request path.
 *
 * @throws CoapFormatError exactly as {@link decode} does.
 */
export function decodeWire(buf: Buffer): CoapMessage {
  return decodeMessage(buf, true);
}

/** The one parser of {@link decode} and {@link decodeWire}; `wire` picks the option kind. */
function decodeMessage(buf: Buffer, wire: boolean): CoapMessage {
  const len = buf.length;
  if (len < 4) throw new CoapFormatError('COAP_TRUNCATED_HEADER', 0, undefined, undefined);
  const b0 = buf[0] ?? 0;
  if (b0 >>> 6 !== VERSION) {
    throw new CoapFormatError('COAP_BAD_VERSION', 0, undefined, undefined);
  }
  // Two bits, so always one of 0-3.
  const type = ((b0 >>> 4) & 0x03) as MessageType;
  const tkl = b0 & 0x0f;
  const code = buf[1] ?? 0;
  const messageId = ((buf[2] ?? 0) << 8) | (buf[3] ?? 0);

  if (code === 0) {
    // RFC 7252 §4.1: TKL 0 and nothing after the Message ID.
    if (tkl !== 0 || len !== 4) {
      throw new CoapFormatError('COAP_BAD_EMPTY_MESSAGE', 4, type, messageId);
    }
    return { type, code, messageId, token: EMPTY, options: NO_OPTIONS, payload: EMPTY };
  }
  if (tkl > MAX_TOKEN_LENGTH) {
    throw new CoapFormatError('COAP_BAD_TOKEN_LENGTH', 0, type, messageId);
  }
  let off = 4 + tkl;
  if (off > len) throw new CoapFormatError('COAP_TRUNCATED_TOKEN', 4, type, messageId);
  const token = tkl === 0 ? EMPTY : buf.subarray(4, off);

  let options = NO_OPTIONS;
  let list: CoapOption[] | undefined;
  let payload = EMPTY;
  let number = 0;
  while (off < len) {
    const head = buf[off] ?? 0;
    if (head === PAYLOAD_MARKER) {
      off += 1;
      if (off === len) {
        throw new CoapFormatError('COAP_EMPTY_PAYLOAD_AFTER_MARKER', off, type, messageId);
      }
      payload = buf.subarray(off, len);
      break;
    }
    const start = off;
    off += 1;
    let delta = head >>> 4;
    let length = head & 0x0f;
    // RFC 7252 §3.1: 15 is reserved in either nibble except in the marker 0xFF.
    if (delta === 15 || length === 15) {
      throw new CoapFormatError('COAP_RESERVED_OPTION_NIBBLE', start, type, messageId);
    }
    if (delta === 13) {
      if (off + 1 > len) throw new CoapFormatError('COAP_TRUNCATED_OPTION', start, type, messageId);
      delta = (buf[off] ?? 0) + 13;
      off += 1;
    } else if (delta === 14) {
      if (off + 2 > len) throw new CoapFormatError('COAP_TRUNCATED_OPTION', start, type, messageId);
      delta = (((buf[off] ?? 0) << 8) | (buf[off + 1] ?? 0)) + 269;
      off += 2;
    }
    if (length === 13) {
      if (off + 1 > len) throw new CoapFormatError('COAP_TRUNCATED_OPTION', start, type, messageId);
      length = (buf[off] ?? 0) + 13;
      off += 1;
    } else if (length === 14) {
      if (off + 2 > len) throw new CoapFormatError('COAP_TRUNCATED_OPTION', start, type, messageId);
      length = (((buf[off] ?? 0) << 8) | (buf[off + 1] ?? 0)) + 269;
      off += 2;
    }
    number += delta;
    if (number > MAX_OPTION_NUMBER) {
      throw new CoapFormatError('COAP_OPTION_NUMBER_OVERFLOW', start, type, messageId);
    }
    if (length > len - off) {
      throw new CoapFormatError('COAP_TRUNCATED_OPTION', start, type, messageId);
    }
    const option: CoapOption = wire
      ? new WireOption(number, buf, off, off + length)
      : { number, value: length === 0 ? EMPTY : buf.subarray(off, off + length) };
    off += length;
    if (list === undefined) {
      list = [];
      options = list;
    }
    list.push(option);
  }
  return { type, code, messageId, token, options, payload };
}

/** Comparator for a stable ascending sort by option number (module level: no closure per call). */
function byNumber(a: CoapOption, b: CoapOption): number {
  return a.number - b.number;
}

/** The options in ascending order: the input itself when already sorted, else a sorted copy. */
function sortedOptions(options: readonly CoapOption[]): readonly CoapOption[] {
  let prev = -1;
  for (let i = 0; i < options.length; i++) {
    const opt = options[i];
    if (opt === undefined) break;
    if (opt.number < prev) return options.slice().sort(byNumber);
    prev = opt.number;
  }
  return options;
}

/** Bytes needed for an extended delta or length field holding `n`. */
function extSize(n: number): number {
  return n < 13 ? 0 : n < 269 ? 1 : 2;
}

/** Validates the message and returns its encoded size; `options` must be sorted. */
function measure(msg: CoapMessage, options: readonly CoapOption[]): number {
  const { type, code, messageId, token, payload } = msg;
  if (!Number.isInteger(type) || type < 0 || type > 3) throw new RangeError('type must be 0-3');
  if (!Number.isInteger(code) || code < 0 || code > 255) throw new RangeError('code must be 0-255');
  if (!Number.isInteger(messageId) || messageId < 0 || messageId > 0xffff) {
    throw new RangeError('messageId must be 0-65535');
  }
  if (token.length > MAX_TOKEN_LENGTH) throw new RangeError('token must be 0-8 bytes');
  if (code === 0) {
    if (token.length !== 0 || options.length !== 0 || payload.length !== 0) {
      throw new RangeError('an Empty message (0.00) has no token, options or payload');
    }
    return 4;
  }
  let size = 4 + token.length;
  let prev = 0;
  for (let i = 0; i < options.length; i++) {
    const opt = options[i];
    if (opt === undefined) throw new RangeError('options must not have holes');
    const n = opt.number;
    if (!Number.isInteger(n) || n < 0 || n > MAX_OPTION_NUMBER) {
      throw new RangeError('option number must be 0-65535');
    }
    const vlen = opt.value.length;
    if (vlen > MAX_OPTION_LENGTH) throw new RangeError('option value must be at most 65804 bytes');
    size += 1 + extSize(n - prev) + extSize(vlen) + vlen;
    prev = n;
  }
  if (payload.length > 0) size += 1 + payload.length;
  return size;
}

/**
 * Encoded size of `msg` in bytes, validating it as {@link encode} does.
 *
 * @throws RangeError when the message cannot be encoded (see {@link encode}).
 */
export function encodedLength(msg: CoapMessage): number {
  return measure(msg, sortedOptions(msg.options));
}

/** Writes an extended delta/length field for `n` at `off`; returns the new offset. */
function writeExt(out: Buffer, off: number, n: number): number {
  if (n >= 269) {
    const e = n - 269;
    out[off] = e >>> 8;
    out[off + 1] = e & 0xff;
    return off + 2;
  }
  if (n >= 13) {
    out[off] = n - 13;
    return off + 1;
  }
  return off;
}

/** Nibble for a delta or length `n` (RFC 7252 §3.1). */
function nibble(n: number): number {
  return n < 13 ? n : n < 269 ? 13 : 14;
}

/**
 * Encodes a message into a new Buffer. Options are written in ascending number order
 * (a stable sort, so repeated options keep their order); `msg` is not modified.
 *
 * @throws RangeError for a message that cannot be encoded: type not 0-3, code not 0-255,
 *   message ID not 0-65535, token over 8 bytes, option number not 0-65535, option value
 *   over 65804 bytes, or an Empty message (code 0) with a token, options or payload.
 */
export function encode(msg: CoapMessage): Buffer {
  const options = sortedOptions(msg.options);
  const size = measure(msg, options);
  const out = Buffer.allocUnsafe(size);
  const { token, payload } = msg;
  out[0] = (VERSION << 6) | (msg.type << 4) | token.length;
  out[1] = msg.code;
  out[2] = msg.messageId >>> 8;
  out[3] = msg.messageId & 0xff;
  let off = 4;
  if (token.length > 0) {
    out.set(token, off);
    off += token.length;
  }
  let prev = 0;
  for (let i = 0; i < options.length; i++) {
    const opt = options[i];
    if (opt === undefined) break; // measure() rejected holes
    const delta = opt.number - prev;
    const value = opt.value;
    const vlen = value.length;
    out[off] = (nibble(delta) << 4) | nibble(vlen);
    off = writeExt(out, off + 1, delta);
    off = writeExt(out, off, vlen);
    if (vlen > 0) {
      out.set(value, off);
      off += vlen;
    }
    prev = opt.number;
  }
  if (payload.length > 0) {
    out[off] = PAYLOAD_MARKER;
    out.set(payload, off + 1);
    off += 1 + payload.length;
  }
  // allocUnsafe memory may hold old data: every byte must have been written.
  if (off !== size) throw new Error('coap encode: length mismatch (bug)');
  return out;
}
