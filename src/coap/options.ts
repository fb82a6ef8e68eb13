/**
 * Option helpers over a decoded {@link CoapMessage}: lookups, string and uint option values
 * (RFC 7252 §3.2, §5.10), and the Block1/Block2 value codec (RFC 7959 §2.2).
 *
 * @module
 */

import { isUtf8 } from 'node:buffer';
import { OptionNumber } from './constants.js';
import { WireOption, type CoapMessage, type CoapOption } from './codec.js';

/** Value of the first option numbered `n`, or undefined when absent. */
export function getOption(msg: CoapMessage, n: number): Buffer | undefined {
  return findOption(msg, n)?.value;
}

/** Values of every option numbered `n`, in message order (empty array when absent). */
export function getOptions(msg: CoapMessage, n: number): Buffer[] {
  const out: Buffer[] = [];
  const options = msg.options;
  for (let i = 0; i < options.length; i++) {
    const opt = options[i];
    if (opt !== undefined && opt.number === n) out.push(opt.value);
  }
  return out;
}

/** Values of every option numbered `n`, decoded as UTF-8 strings (RFC 7252 §3.2). */
function getStrings(msg: CoapMessage, n: number): string[] {
  const out: string[] = [];
  const options = msg.options;
  for (let i = 0; i < options.length; i++) {
    const opt = options[i];
    if (opt !== undefined && opt.number === n) out.push(opt.value.toString('utf8'));
  }
  return out;
}

/**
 * Uri-Path segments decoded as UTF-8 (RFC 7252 §5.10.1, §6.5). Invalid UTF-8 sequences
 * become U+FFFD; use {@link uriPathStrict} where that rewrite must not happen.
 */
export function uriPath(msg: CoapMessage): string[] {
  return getStrings(msg, OptionNumber.URI_PATH);
}

/**
 * Uri-Path segments decoded as UTF-8, or undefined when any segment is not well-formed UTF-8
 * (overlong forms, surrogates, truncated or stray bytes, code points above U+10FFFF). Uri-Path
 * is a string option (RFC 7252 §3.2: UTF-8, Net-Unicode), so such a request is malformed; a
 * server answers 4.00 instead of guessing at what the bytes meant. Checked on the raw option
 * bytes, before any decoding could replace the bad bytes with U+FFFD.
 */
export function uriPathStrict(msg: CoapMessage): string[] | undefined {
  const out: string[] = [];
  const options = msg.options;
  for (let i = 0; i < options.length; i++) {
    const opt = options[i];
    if (opt === undefined || opt.number !== OptionNumber.URI_PATH) continue;
    // a decoded option is read where it lies in the datagram: no view made for it
    let ascii: string | undefined;
    if (opt instanceof WireOption) {
      ascii =
        opt.end - opt.start <= MAX_SEGMENT ? asciiString(opt.bytes, opt.start, opt.end) : undefined;
    } else {
      const v = opt.value;
      ascii = v.length <= MAX_SEGMENT ? asciiString(v, 0, v.length) : undefined;
    }
    if (ascii !== undefined) {
      out.push(ascii);
      continue;
    }
    const value = opt.value;
    if (isUtf8(value)) out.push(value.toString('utf8'));
    else return undefined;
  }
  return out;
}

/**
 * A Uri-Path segment is at most 255 bytes (RFC 7252 §5.10); the decoder does not hold option
 * values to their ranges, so a longer one takes the general path.
 */
const MAX_SEGMENT = 255;

/**
 * `bytes[start, end)` as a string when every byte is below 0x80 (such bytes are well-formed
 * UTF-8 and decode to the same code points), else undefined. Uri-Path segments nearly always
 * are ASCII and mostly the same few words (`topic`, `sys`, the product key, `thing`…): a
 * segment of up to {@link MAX_CACHED_SEGMENT} bytes looks in its slot of
 * {@link segmentCache} (by its length and three of its bytes) and, when the string there has
 * the same characters, that string is returned: nothing is allocated. Otherwise the string is
 * built a character at a time (for a few bytes fewer instructions than the two calls into
 * C++, `isUtf8` then `toString`, bench/history/sessions.md, "The floors measured")
 * and takes the slot.
 */
function asciiString(bytes: Uint8Array, start: number, end: number): string | undefined {
  const len = end - start;
  if (len === 0) return '';
  if (len > MAX_CACHED_SEGMENT) return buildAscii(bytes, start, end);
  const slot =
    (len * 7 +
      (bytes[start] ?? 0) * 31 +
      (bytes[end - 1] ?? 0) * 3 +
      (bytes[start + (len >> 1)] ?? 0)) &
    (SEGMENT_CACHE_SLOTS - 1);
  const cached = segmentCache[slot];
  if (cached !== undefined && cached.length === len) {
    // the cached string is ASCII: equal characters mean these bytes are ASCII too
    let i = 0;
    while (i < len && cached.charCodeAt(i) === bytes[start + i]) i++;
    if (i === len) return cached;
  }
  const s = buildAscii(bytes, start, end);
  if (s !== undefined) segmentCache[slot] = s;
  return s;
}

/** {@link asciiString} without the cache: the string built a character at a time. */
function buildAscii(bytes: Uint8Array, start: number, end: number): string | undefined {
  let s = '';
  for (let i = start; i < end; i++) {
    const b = bytes[i] ?? 0;
    if (b > 0x7f) return undefined;
    s += String.fromCharCode(b);
  }
  return s;
}

/** Longest segment the cache holds; longer ones are rare and built each time. */
const MAX_CACHED_SEGMENT = 32;
/**
 * Slots of the segment cache, a power of two (one string each, at most
 * {@link MAX_CACHED_SEGMENT} characters: a few kilobytes in all). Two segments with one slot
 * take it in turn: the words every request carries win it back at once, and a miss costs a
 * compare beside the build. Only ever equal strings are returned, so a collision costs
 * instructions, never a wrong segment.
 */
const SEGMENT_CACHE_SLOTS = 256;
const segmentCache: (string | undefined)[] = new Array<string | undefined>(
  SEGMENT_CACHE_SLOTS,
).fill(undefined);

/** Uri-Query arguments decoded as UTF-8 (RFC 7252 §5.10.1, §6.5). */
export function uriQuery(msg: CoapMessage): string[] {
  return getStrings(msg, OptionNumber.URI_QUERY);
}

/**
 * Minimal big-endian encoding of an unsigned integer option value; 0 is the empty value
 * (RFC 7252 §3.2, "uint").
 *
 * @throws RangeError unless `n` is an integer in 0..2^32-1.
 */
export function encodeUint(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new RangeError('uint option value must be an integer 0..4294967295');
  }
  if (n === 0) return Buffer.alloc(0);
  if (n < 0x100) return Buffer.from([n]);
  if (n < 0x10000) return Buffer.from([n >>> 8, n & 0xff]);
  if (n < 0x1000000) return Buffer.from([n >>> 16, (n >>> 8) & 0xff, n & 0xff]);
  return Buffer.from([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

/**
 * Unsigned integer option value (RFC 7252 §3.2). Leading zero bytes are accepted; the empty
 * value is 0. Values longer than 4 bytes give undefined.
 */
export function decodeUint(buf: Buffer): number | undefined {
  return buf.length > 4 ? undefined : uintAt(buf, 0, buf.length);
}

/** The big-endian unsigned integer in `bytes[start, end)`; the caller keeps it to 4 bytes. */
function uintAt(bytes: Uint8Array, start: number, end: number): number {
  let n = 0;
  for (let i = start; i < end; i++) n = n * 256 + (bytes[i] ?? 0);
  return n;
}

/** The first option numbered `n`, or undefined when absent. */
function findOption(msg: CoapMessage, n: number): CoapOption | undefined {
  const options = msg.options;
  for (let i = 0; i < options.length; i++) {
    const opt = options[i];
    if (opt !== undefined && opt.number === n) return opt;
  }
  return undefined;
}

/**
 * Content-Format of the message (RFC 7252 §5.10.3), or undefined when absent or when its
 * value is longer than the 2 bytes the option allows; an elective option with a value
 * outside its range is treated as unrecognized, i.e. ignored (RFC 7252 §5.4.3).
 */
export function contentFormat(msg: CoapMessage): number | undefined {
  const opt = findOption(msg, OptionNumber.CONTENT_FORMAT);
  if (opt === undefined) return undefined;
  // a decoded option is read where it lies in the datagram: no view made for it
  if (opt instanceof WireOption) {
    return opt.end - opt.start > 2 ? undefined : uintAt(opt.bytes, opt.start, opt.end);
  }
  const value = opt.value;
  return value.length > 2 ? undefined : uintAt(value, 0, value.length);
}

/** A Block1/Block2 option value (RFC 7959 §2.2). */
export interface BlockOption {
  /** Block number, 0..2^20-1. */
  readonly num: number;
  /** More blocks follow (the M bit). */
  readonly more: boolean;
  /** Size exponent 0-6: the block size is 2^(szx+4) bytes. */
  readonly szx: number;
  /** Block size in bytes, 16-1024. */
  readonly size: number;
}

/** Largest block number the 3-byte option value can carry (RFC 7959 §2.2). */
export const MAX_BLOCK_NUM = 0xfffff;

/**
 * Decodes a Block1/Block2 option value (RFC 7959 §2.2). Returns undefined for a value longer
 * than 3 bytes or with the reserved SZX 7; RFC 7959 §2.2 has the server answer such a
 * request with 4.00 Bad Request.
 */
export function decodeBlock(buf: Buffer): BlockOption | undefined {
  const len = buf.length;
  if (len > 3) return undefined;
  let v = 0;
  for (let i = 0; i < len; i++) v = (v << 8) | (buf[i] ?? 0);
  const szx = v & 0x07;
  if (szx === 7) return undefined;
  return { num: v >>> 4, more: (v & 0x08) !== 0, szx, size: 1 << (szx + 4) };
}

/**
 * Encodes a Block1/Block2 option value in the fewest bytes (RFC 7959 §2.2); block 0 of
 * size 16 with no more blocks is the empty value.
 *
 * @throws RangeError unless `num` is 0..2^20-1 and `szx` is 0-6.
 */
export function encodeBlock(block: {
  readonly num: number;
  readonly more: boolean;
  readonly szx: number;
}): Buffer {
  const { num, more, szx } = block;
  if (!Number.isInteger(num) || num < 0 || num > MAX_BLOCK_NUM) {
    throw new RangeError('block num must be 0..1048575');
  }
  if (!Number.isInteger(szx) || szx < 0 || szx > 6) throw new RangeError('block szx must be 0-6');
  return encodeUint(((num << 4) | (more ? 0x08 : 0) | szx) >>> 0);
}

/**
 * SZX for a block size of 16, 32, 64, 128, 256, 512 or 1024 bytes (RFC 7959 §2.2).
 *
 * @throws RangeError for any other size.
 */
export function blockSizeToSzx(size: number): number {
  switch (size) {
    case 16:
      return 0;
    case 32:
      return 1;
    case 64:
      return 2;
    case 128:
      return 3;
    case 256:
      return 4;
    case 512:
      return 5;
    case 1024:
      return 6;
    default:
      throw new RangeError('block size must be a power of two from 16 to 1024');
  }
}

/**
 * Block size in bytes for SZX 0-6 (RFC 7959 §2.2).
 *
 * @throws RangeError for SZX outside 0-6 (7 is reserved).
 */
export function szxToBlockSize(szx: number): number {
  if (!Number.isInteger(szx) || szx < 0 || szx > 6) throw new RangeError('block szx must be 0-6');
  return 1 << (szx + 4);
}
