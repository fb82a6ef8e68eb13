/**
 * CoAP protocol constants: message types, codes, option numbers, content formats and the
 * transmission parameters of RFC 7252 (with the block-wise additions of RFC 7959).
 *
 * Everything here is a plain immutable value or a pure function; nothing keeps state.
 *
 * @module
 */

/** Protocol version carried in every message header (RFC 7252 §3, "Version (Ver)"). */
export const VERSION = 1;

/** Byte that separates the options from a non-empty payload (RFC 7252 §3). */
export const PAYLOAD_MARKER = 0xff;

/** Largest token length a message may carry (RFC 7252 §3: TKL 9-15 are reserved). */
export const MAX_TOKEN_LENGTH = 8;

/** Largest option number that can be expressed (RFC 7252 §3.1, §12.2: 0-65535). */
export const MAX_OPTION_NUMBER = 65535;

/**
 * Largest option value length the wire format can express: length nibble 14 plus a 16-bit
 * extension (RFC 7252 §3.1), i.e. 65535 + 269.
 */
export const MAX_OPTION_LENGTH = 65535 + 269;

// ---------------------------------------------------------------------------------------
// Message types (RFC 7252 §3, §4)
// ---------------------------------------------------------------------------------------

/** Confirmable: the peer must acknowledge or reset it (RFC 7252 §4.2). */
export const CON = 0;
/** Non-confirmable: no acknowledgement expected (RFC 7252 §4.3). */
export const NON = 1;
/** Acknowledgement of a Confirmable message, possibly carrying a response (RFC 7252 §4.2). */
export const ACK = 2;
/** Reset: the recipient cannot process a message (RFC 7252 §4.2, §4.3). */
export const RST = 3;

/** The four message types of the 2-bit Type field (RFC 7252 §3). */
export type MessageType = typeof CON | typeof NON | typeof ACK | typeof RST;

// ---------------------------------------------------------------------------------------
// Codes (RFC 7252 §3, §5.8, §5.9, §12.1)
// ---------------------------------------------------------------------------------------

/**
 * Builds a code byte from its class (3 bits) and detail (5 bits): `code(2, 5)` is 2.05 =
 * 0x45 (RFC 7252 §3, "c.dd").
 *
 * @throws RangeError when `cls` is not 0-7 or `detail` is not 0-31.
 */
export function code(cls: number, detail: number): number {
  if (!Number.isInteger(cls) || cls < 0 || cls > 7) throw new RangeError('code class must be 0-7');
  if (!Number.isInteger(detail) || detail < 0 || detail > 31) {
    throw new RangeError('code detail must be 0-31');
  }
  return (cls << 5) | detail;
}

/** Class of a code byte: 0 request, 2 success, 4 client error, 5 server error (RFC 7252 §3). */
export function codeClass(c: number): number {
  return (c >>> 5) & 0x07;
}

/** Detail of a code byte, the `dd` of `c.dd` (RFC 7252 §3). */
export function codeDetail(c: number): number {
  return c & 0x1f;
}

/** Formats a code byte the way the RFCs write it: `0x45` → `"2.05"` (RFC 7252 §3). */
export function formatCode(c: number): string {
  const detail = c & 0x1f;
  return `${(c >>> 5) & 0x07}.${detail < 10 ? '0' : ''}${detail}`;
}

/** True for the Empty message code 0.00 (RFC 7252 §4.1). */
export function isEmptyCode(c: number): boolean {
  return c === 0;
}

/** True for a request method code: class 0 and not 0.00 (RFC 7252 §5.8, §12.1.1). */
export function isRequestCode(c: number): boolean {
  return c > 0 && c < 32;
}

/** True for a response code: class 2, 4 or 5 (RFC 7252 §5.9, §12.1.2). */
export function isResponseCode(c: number): boolean {
  const cls = (c >>> 5) & 0x07;
  return cls === 2 || cls === 4 || cls === 5;
}

/**
 * True for a code of a reserved class 1, 6 or 7; a message with such a code is rejected
 * (RFC 7252 §4.2, §4.3, §12.1).
 */
export function isReservedCodeClass(c: number): boolean {
  const cls = (c >>> 5) & 0x07;
  return cls === 1 || cls === 6 || cls === 7;
}

/** Named code bytes. Methods: RFC 7252 §5.8, §12.1.1; RFC 8132 (FETCH, PATCH, iPATCH). */
export const Code = Object.freeze({
  /** 0.00 Empty message (RFC 7252 §4.1). */
  EMPTY: 0x00,
  /** 0.01 GET (RFC 7252 §5.8.1). */
  GET: 0x01,
  /** 0.02 POST (RFC 7252 §5.8.2). */
  POST: 0x02,
  /** 0.03 PUT (RFC 7252 §5.8.3). */
  PUT: 0x03,
  /** 0.04 DELETE (RFC 7252 §5.8.4). */
  DELETE: 0x04,
  /** 0.05 FETCH (RFC 8132 §2). */
  FETCH: 0x05,
  /** 0.06 PATCH (RFC 8132 §3). */
  PATCH: 0x06,
  /** 0.07 iPATCH (RFC 8132 §3). */
  IPATCH: 0x07,

  /** 2.01 Created (RFC 7252 §5.9.1.1). */
  CREATED: 0x41,
  /** 2.02 Deleted (RFC 7252 §5.9.1.2). */
  DELETED: 0x42,
  /** 2.03 Valid (RFC 7252 §5.9.1.3). */
  VALID: 0x43,
  /** 2.04 Changed (RFC 7252 §5.9.1.4). */
  CHANGED: 0x44,
  /** 2.05 Content (RFC 7252 §5.9.1.5). */
  CONTENT: 0x45,
  /** 2.31 Continue (RFC 7959 §2.9.1). */
  CONTINUE: 0x5f,

  /** 4.00 Bad Request (RFC 7252 §5.9.2.1). */
  BAD_REQUEST: 0x80,
  /** 4.01 Unauthorized (RFC 7252 §5.9.2.2). */
  UNAUTHORIZED: 0x81,
  /** 4.02 Bad Option (RFC 7252 §5.9.2.3). */
  BAD_OPTION: 0x82,
  /** 4.03 Forbidden (RFC 7252 §5.9.2.4). */
  FORBIDDEN: 0x83,
  /** 4.04 Not Found (RFC 7252 §5.9.2.5). */
  NOT_FOUND: 0x84,
  /** 4.05 Method Not Allowed (RFC 7252 §5.9.2.6). */
  METHOD_NOT_ALLOWED: 0x85,
  /** 4.06 Not Acceptable (RFC 7252 §5.9.2.7). */
  NOT_ACCEPTABLE: 0x86,
  /** 4.08 Request Entity Incomplete (RFC 7959 §2.9.2). */
  REQUEST_ENTITY_INCOMPLETE: 0x88,
  /** 4.12 Precondition Failed (RFC 7252 §5.9.2.8). */
  PRECONDITION_FAILED: 0x8c,
  /** 4.13 Request Entity Too Large (RFC 7252 §5.9.2.9, RFC 7959 §2.9.3). */
  REQUEST_ENTITY_TOO_LARGE: 0x8d,
  /** 4.15 Unsupported Content-Format (RFC 7252 §5.9.2.10). */
  UNSUPPORTED_CONTENT_FORMAT: 0x8f,
  /** 4.29 Too Many Requests (RFC 8516 §3). */
  TOO_MANY_REQUESTS: 0x9d,

  /** 5.00 Internal Server Error (RFC 7252 §5.9.3.1). */
  INTERNAL_SERVER_ERROR: 0xa0,
  /** 5.01 Not Implemented (RFC 7252 §5.9.3.2). */
  NOT_IMPLEMENTED: 0xa1,
  /** 5.02 Bad Gateway (RFC 7252 §5.9.3.3). */
  BAD_GATEWAY: 0xa2,
  /** 5.03 Service Unavailable (RFC 7252 §5.9.3.4). */
  SERVICE_UNAVAILABLE: 0xa3,
  /** 5.04 Gateway Timeout (RFC 7252 §5.9.3.5). */
  GATEWAY_TIMEOUT: 0xa4,
} as const);

// ---------------------------------------------------------------------------------------
// Option numbers (RFC 7252 §5.10, §12.2; RFC 7641; RFC 7959)
// ---------------------------------------------------------------------------------------

/** Registered option numbers used by this project (RFC 7252 §12.2 table). */
export const OptionNumber = Object.freeze({
  /** If-Match, opaque 0-8, repeatable (RFC 7252 §5.10.8.1). */
  IF_MATCH: 1,
  /** Uri-Host, string 1-255 (RFC 7252 §5.10.1). */
  URI_HOST: 3,
  /** ETag, opaque 1-8 (RFC 7252 §5.10.6). */
  ETAG: 4,
  /** If-None-Match, empty (RFC 7252 §5.10.8.2). */
  IF_NONE_MATCH: 5,
  /** Observe, uint 0-3 (RFC 7641 §2). */
  OBSERVE: 6,
  /** Uri-Port, uint 0-2 (RFC 7252 §5.10.1). */
  URI_PORT: 7,
  /** Location-Path, string 0-255, repeatable (RFC 7252 §5.10.7). */
  LOCATION_PATH: 8,
  /** Uri-Path, string 0-255, repeatable (RFC 7252 §5.10.1). */
  URI_PATH: 11,
  /** Content-Format, uint 0-2 (RFC 7252 §5.10.3). */
  CONTENT_FORMAT: 12,
  /** Max-Age, uint 0-4, default 60 s (RFC 7252 §5.10.5). */
  MAX_AGE: 14,
  /** Uri-Query, string 0-255, repeatable (RFC 7252 §5.10.1). */
  URI_QUERY: 15,
  /** Accept, uint 0-2 (RFC 7252 §5.10.4). */
  ACCEPT: 17,
  /** Location-Query, string 0-255, repeatable (RFC 7252 §5.10.7). */
  LOCATION_QUERY: 20,
  /** Block2, uint 0-3 (RFC 7959 §2.1). */
  BLOCK2: 23,
  /** Block1, uint 0-3 (RFC 7959 §2.1). */
  BLOCK1: 27,
  /** Size2, uint 0-4 (RFC 7959 §4). */
  SIZE2: 28,
  /** Proxy-Uri, string 1-1034 (RFC 7252 §5.10.2). */
  PROXY_URI: 35,
  /** Proxy-Scheme, string 1-255 (RFC 7252 §5.10.2). */
  PROXY_SCHEME: 39,
  /** Size1, uint 0-4 (RFC 7252 §5.10.9, RFC 7959 §4). */
  SIZE1: 60,
  /**
   * EnOS private option: `/topic/{commandTopic}` of a queued command, carried on a response
   * (docs/protocol.md, "Commands for sleepy devices"). Even, so elective (RFC 7252 §5.4.6).
   */
  COMMAND_TOPIC: 2100,
  /**
   * EnOS private option: the queued command's payload, when it fits
   * (docs/protocol.md, "Commands for sleepy devices"). Even, so elective (RFC 7252 §5.4.6).
   */
  COMMAND_PAYLOAD: 2102,
} as const);

/**
 * Critical options must be understood by the recipient; the number is odd
 * (RFC 7252 §5.4.1, §5.4.6).
 */
export function isCritical(n: number): boolean {
  return (n & 1) === 1;
}

/**
 * Unsafe-to-forward options (bit 1 set) must be understood by a proxy
 * (RFC 7252 §5.4.2, §5.4.6).
 */
export function isUnsafe(n: number): boolean {
  return (n & 2) === 2;
}

/** NoCacheKey options are not part of the cache key (RFC 7252 §5.4.6). */
export function isNoCacheKey(n: number): boolean {
  return (n & 0x1e) === 0x1c;
}

// ---------------------------------------------------------------------------------------
// Content formats (RFC 7252 §12.3; RFC 7049 / 8949 for CBOR)
// ---------------------------------------------------------------------------------------

/** Content-Format identifiers used by this project (RFC 7252 §12.3 registry). */
export const ContentFormat = Object.freeze({
  /** `text/plain; charset=utf-8` (RFC 7252 §12.3). */
  TEXT_PLAIN: 0,
  /** `application/octet-stream` (RFC 7252 §12.3). */
  OCTET_STREAM: 42,
  /** `application/json` (RFC 7252 §12.3). */
  JSON: 50,
  /** `application/cbor` (RFC 7049 §7.4, RFC 8949 §9.5). */
  CBOR: 60,
} as const);

// ---------------------------------------------------------------------------------------
// Transmission parameters (RFC 7252 §4.8, §4.8.2). Times are milliseconds.
// ---------------------------------------------------------------------------------------

/** ACK_TIMEOUT, 2 s: initial retransmission timeout of a CON (RFC 7252 §4.8). */
export const ACK_TIMEOUT_MS = 2000;

/**
 * ACK_RANDOM_FACTOR, 1.5: the initial timeout is random in
 * [ACK_TIMEOUT, ACK_TIMEOUT × ACK_RANDOM_FACTOR] (RFC 7252 §4.2, §4.8).
 */
export const ACK_RANDOM_FACTOR = 1.5;

/** MAX_RETRANSMIT, 4: retransmissions of a CON before giving up (RFC 7252 §4.8). */
export const MAX_RETRANSMIT = 4;

/** NSTART, 1: outstanding interactions per peer (RFC 7252 §4.7, §4.8). */
export const NSTART = 1;

/** DEFAULT_LEISURE, 5 s: response spread for multicast requests (RFC 7252 §4.8, §8.2). */
export const DEFAULT_LEISURE_MS = 5000;

/**
 * PROBING_RATE, 1 byte/s: average data rate towards a peer that does not respond
 * (RFC 7252 §4.7, §4.8).
 */
export const PROBING_RATE_BYTES_PER_S = 1;

/**
 * MAX_TRANSMIT_SPAN, 45 s: ACK_TIMEOUT × (2^MAX_RETRANSMIT − 1) × ACK_RANDOM_FACTOR, the
 * longest time from first transmission of a CON to its last retransmission (RFC 7252 §4.8.2).
 */
export const MAX_TRANSMIT_SPAN_MS = ACK_TIMEOUT_MS * (2 ** MAX_RETRANSMIT - 1) * ACK_RANDOM_FACTOR;

/**
 * MAX_TRANSMIT_WAIT, 93 s: ACK_TIMEOUT × (2^(MAX_RETRANSMIT+1) − 1) × ACK_RANDOM_FACTOR, the
 * longest a sender waits for an ACK or RST after first transmitting a CON (RFC 7252 §4.8.2).
 */
export const MAX_TRANSMIT_WAIT_MS =
  ACK_TIMEOUT_MS * (2 ** (MAX_RETRANSMIT + 1) - 1) * ACK_RANDOM_FACTOR;

/** MAX_LATENCY, 100 s: assumed maximum time a datagram is in transit (RFC 7252 §4.8.2). */
export const MAX_LATENCY_MS = 100_000;

/**
 * PROCESSING_DELAY, 2 s (= ACK_TIMEOUT): time a node takes to turn a CON into an ACK
 * (RFC 7252 §4.8.2).
 */
export const PROCESSING_DELAY_MS = ACK_TIMEOUT_MS;

/** MAX_RTT, 202 s: 2 × MAX_LATENCY + PROCESSING_DELAY (RFC 7252 §4.8.2). */
export const MAX_RTT_MS = 2 * MAX_LATENCY_MS + PROCESSING_DELAY_MS;

/**
 * EXCHANGE_LIFETIME, 247 s: MAX_TRANSMIT_SPAN + 2 × MAX_LATENCY + PROCESSING_DELAY, how long a
 * message ID of a CON must not be reused and how long its duplicates are answered from the
 * cache (RFC 7252 §4.8.2).
 */
export const EXCHANGE_LIFETIME_MS = MAX_TRANSMIT_SPAN_MS + 2 * MAX_LATENCY_MS + PROCESSING_DELAY_MS;

/**
 * NON_LIFETIME, 145 s: MAX_TRANSMIT_SPAN + MAX_LATENCY, how long a message ID of a NON must not
 * be reused (RFC 7252 §4.8.2).
 */
export const NON_LIFETIME_MS = MAX_TRANSMIT_SPAN_MS + MAX_LATENCY_MS;
