/**
 * Whether a request body is a JSON object (docs/integration.md), decided from its bytes
 * without decoding them or building the object.
 *
 * A publish-only uplink needs no field of its body, only the answer to "is it a JSON
 * object": `JSON.parse(payload.toString('utf8'))` decodes the body into a string and builds
 * every object, string and number in it only to drop them. This scanner reads each byte
 * once and allocates nothing. It accepts exactly the bodies that `JSON.parse` of their UTF-8
 * decoding accepts as an object (not an array or `null`), which holds without decoding:
 * outside strings JSON allows only ASCII, and inside strings any character at or above
 * U+0020 (so any byte of a multi-byte or even malformed UTF-8 sequence: the decoder turns a
 * malformed one into U+FFFD, and never takes an ASCII byte such as the closing quote into
 * it). Written here because the libraries that validate JSON parse it first; the tests
 * compare it with `JSON.parse` on generated and edge-case bodies.
 *
 * A request with a reply, and the reply that answers it, need one field more: the top-level
 * `id` that matches the two (docs/protocol.md). The same scan notes where the last top-level
 * `id` value lies (`JSON.parse` keeps the last of duplicate keys), and {@link jsonObjectId}
 * reads it from the bytes when it is a plain string or integer; anything else (an escape
 * anywhere in the body, non-ASCII, fractions) is left to `JSON.parse`.
 */

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const QUOTE = 0x22;
const PLUS = 0x2b;
const COMMA = 0x2c;
const MINUS = 0x2d;
const DOT = 0x2e;
const SLASH = 0x2f;
const ZERO = 0x30;
const ONE = 0x31;
const NINE = 0x39;
const COLON = 0x3a;
const UPPER_E = 0x45;
const LEFT_BRACKET = 0x5b;
const BACKSLASH = 0x5c;
const RIGHT_BRACKET = 0x5d;
const LOWER_B = 0x62;
const LOWER_E = 0x65;
const LOWER_D = 0x64;
const LOWER_F = 0x66;
const LOWER_I = 0x69;
const LOWER_N = 0x6e;
const LOWER_R = 0x72;
const LOWER_T = 0x74;
const LOWER_U = 0x75;
const LEFT_BRACE = 0x7b;
const RIGHT_BRACE = 0x7d;

/**
 * Containers the scanner tracks open at once; a body nested deeper is left to `JSON.parse`
 * (which has no such limit), so the answer stays the same at any depth.
 */
export const SCAN_MAX_DEPTH = 64;

/** Per open container, whether it is an object (1) or an array (0): one scan at a time. */
const open = new Uint8Array(SCAN_MAX_DEPTH);

/**
 * Where the last scan that answered {@link SCAN_YES} found the value of the last top-level
 * `id` key: its first byte and the index after it (the same index for an object or array
 * value); -1 when there was none. And whether that body held an escape anywhere (a key
 * written with one might spell `id`).
 */
let idStart = -1;
let idEnd = -1;
let sawEscape = false;
/**
 * Backslashes {@link skipString} went past, all scans together, wrapping at 2^31 (only
 * whether it changed during a scan is read).
 */
let escapes = 0;

/** What {@link scanJsonObject} found: not a JSON object, one, or nested too deep to say. */
export const SCAN_NO = 0;
export const SCAN_YES = 1;
export const SCAN_TOO_DEEP = 2;
export type JsonScan = typeof SCAN_NO | typeof SCAN_YES | typeof SCAN_TOO_DEEP;

/** The index of the first byte from `i` that is not JSON whitespace (`n` when none). */
function skipSpace(b: Uint8Array, i: number, n: number): number {
  while (i < n) {
    const c = b[i]!;
    if (c !== SPACE && c !== LF && c !== CR && c !== TAB) return i;
    i++;
  }
  return n;
}

function isHex(c: number): boolean {
  return (c >= ZERO && c <= NINE) || ((c | 0x20) >= 0x61 && (c | 0x20) <= LOWER_F);
}

/** The index after the string whose opening quote is before `i`; -1 when it is not one. */
function skipString(b: Uint8Array, i: number, n: number): number {
  while (i < n) {
    const c = b[i++]!;
    if (c > BACKSLASH) continue; // most bytes of a string: one comparison
    if (c === QUOTE) return i;
    if (c < SPACE) return -1;
    if (c !== BACKSLASH) continue;
    escapes = (escapes + 1) | 0;
    if (i >= n) return -1;
    const e = b[i++]!;
    if (e === LOWER_U) {
      if (i + 4 > n) return -1;
      if (!isHex(b[i]!) || !isHex(b[i + 1]!) || !isHex(b[i + 2]!) || !isHex(b[i + 3]!)) {
        return -1;
      }
      i += 4;
    } else if (
      e !== QUOTE &&
      e !== BACKSLASH &&
      e !== SLASH &&
      e !== LOWER_B &&
      e !== LOWER_F &&
      e !== LOWER_N &&
      e !== LOWER_R &&
      e !== LOWER_T
    ) {
      return -1;
    }
  }
  return -1;
}

/** The index after the digits from `i` (`i` itself when there are none). */
function skipDigits(b: Uint8Array, i: number, n: number): number {
  while (i < n) {
    const c = b[i]!;
    if (c < ZERO || c > NINE) return i;
    i++;
  }
  return n;
}

/** The index after the number that starts at `i` (`-` or a digit); -1 when it is not one. */
function skipNumber(b: Uint8Array, i: number, n: number): number {
  if (b[i] === MINUS) i++;
  if (i >= n) return -1;
  const first = b[i]!;
  if (first === ZERO) i++;
  else if (first >= ONE && first <= NINE) i = skipDigits(b, i + 1, n);
  else return -1;
  if (i < n && b[i] === DOT) {
    const from = i + 1;
    i = skipDigits(b, from, n);
    if (i === from) return -1;
  }
  if (i < n && (b[i] === LOWER_E || b[i] === UPPER_E)) {
    i++;
    if (i < n && (b[i] === PLUS || b[i] === MINUS)) i++;
    const from = i;
    i = skipDigits(b, from, n);
    if (i === from) return -1;
  }
  return i;
}

/** The index after `word` (ASCII) at `i`; -1 when the bytes there differ. */
function skipWord(b: Uint8Array, i: number, n: number, word: string): number {
  const end = i + word.length;
  if (end > n) return -1;
  for (let k = 1; k < word.length; k++) {
    if (b[i + k] !== word.charCodeAt(k)) return -1;
  }
  return end;
}

/**
 * The index after `"key" :` and the whitespace after it, with `i` at the key's opening
 * quote; -1 when that is not there.
 */
function skipKey(b: Uint8Array, i: number, n: number): number {
  if (i >= n || b[i] !== QUOTE) return -1;
  i = skipString(b, i + 1, n);
  if (i < 0) return -1;
  i = skipSpace(b, i, n);
  if (i >= n || b[i] !== COLON) return -1;
  return skipSpace(b, i + 1, n);
}

/** Whether the key whose opening quote is at `k` is `id` as written (no escape). */
function isIdKey(b: Uint8Array, k: number): boolean {
  return b[k + 1] === LOWER_I && b[k + 2] === LOWER_D && b[k + 3] === QUOTE;
}

/**
 * Whether `b` is the UTF-8 of a JSON object (RFC 8259 with `JSON.parse`'s rules: no byte
 * order mark, whitespace only around tokens, an object at the top). Allocates nothing.
 * Notes where the last top-level `id` value lies, for {@link jsonObjectId}.
 */
export function scanJsonObject(b: Uint8Array): JsonScan {
  const escapesBefore = escapes;
  const n = b.length;
  let i = skipSpace(b, 0, n);
  if (i >= n || b[i] !== LEFT_BRACE) return SCAN_NO;
  let depth = 0;
  /** The value that starts at `i` is the top-level `id`'s. */
  let idNext = false;
  let idS = -1;
  let idE = -1;
  for (;;) {
    // `i` is at the first byte of a value
    if (i >= n) return SCAN_NO;
    const c = b[i]!;
    if (c === LEFT_BRACE || c === LEFT_BRACKET) {
      if (idNext) {
        idNext = false;
        idS = idE = i; // neither a string nor a number
      }
      const isObject = c === LEFT_BRACE;
      i = skipSpace(b, i + 1, n);
      if (i < n && b[i] === (isObject ? RIGHT_BRACE : RIGHT_BRACKET)) {
        i++; // empty: a whole value
      } else {
        if (depth === SCAN_MAX_DEPTH) return SCAN_TOO_DEEP;
        open[depth++] = isObject ? 1 : 0;
        if (isObject) {
          const k = i;
          i = skipKey(b, i, n);
          if (i < 0) return SCAN_NO;
          if (depth === 1) idNext = isIdKey(b, k);
        }
        continue;
      }
    } else {
      const at = i;
      if (c === QUOTE) i = skipString(b, i + 1, n);
      else if (c === MINUS || (c >= ZERO && c <= NINE)) i = skipNumber(b, i, n);
      else if (c === LOWER_T) i = skipWord(b, i, n, 'true');
      else if (c === LOWER_F) i = skipWord(b, i, n, 'false');
      else if (c === LOWER_N) i = skipWord(b, i, n, 'null');
      else return SCAN_NO;
      if (i < 0) return SCAN_NO;
      if (idNext) {
        idNext = false;
        idS = at;
        idE = i;
      }
    }
    // after a value: close containers until a comma starts the next value
    for (;;) {
      i = skipSpace(b, i, n);
      if (depth === 0) {
        if (i !== n) return SCAN_NO;
        idStart = idS;
        idEnd = idE;
        sawEscape = escapes !== escapesBefore;
        return SCAN_YES;
      }
      if (i >= n) return SCAN_NO;
      const inObject = open[depth - 1] === 1;
      const d = b[i]!;
      if (d === COMMA) {
        i = skipSpace(b, i + 1, n);
        if (inObject) {
          const k = i;
          i = skipKey(b, i, n);
          if (i < 0) return SCAN_NO;
          if (depth === 1) idNext = isIdKey(b, k);
        }
        break;
      }
      if (d !== (inObject ? RIGHT_BRACE : RIGHT_BRACKET)) return SCAN_NO;
      depth--;
      i++;
    }
  }
}

/** Whether `payload` is a JSON object: {@link scanJsonObject}, with `JSON.parse` past its depth. */
export function isJsonObject(payload: Buffer): boolean {
  const scan = scanJsonObject(payload);
  if (scan !== SCAN_TOO_DEEP) return scan === SCAN_YES;
  return parseJsonObject(payload) !== undefined;
}

/** What {@link jsonObjectId} answers for a body that is not a JSON object. */
export const NOT_OBJECT = null;

/** Digits of an integer id read from its bytes: below 2^53, so exactly the parsed number. */
const MAX_ID_DIGITS = 15;

/**
 * The top-level `id` of a body that is a JSON object, as `JSON.parse` of its UTF-8 gives it
 * when it is a string or a number; undefined when the object has no `id` or one of another
 * type; {@link NOT_OBJECT} when the body is not a JSON object. A string of ASCII and an
 * integer of up to 15 digits are read from the bytes; any other id, a body with an escape
 * anywhere (a key so written may spell `id`) and nesting past the scanner's depth are left
 * to `JSON.parse` of the whole body. (Outside strings JSON is ASCII, so an ASCII string read as
 * Latin-1 is what the UTF-8 decoding gives.)
 */
export function jsonObjectId(payload: Buffer): string | number | undefined | typeof NOT_OBJECT {
  const scan = scanJsonObject(payload);
  if (scan === SCAN_NO) return NOT_OBJECT;
  if (scan === SCAN_YES && !sawEscape) {
    const start = idStart;
    if (start < 0) return undefined;
    const end = idEnd;
    const first = payload[start]!;
    if (first === QUOTE) {
      let k = start + 1;
      const last = end - 1;
      while (k < last && payload[k]! < 0x80) k++;
      if (k === last) return payload.toString('latin1', start + 1, last);
    } else if (first === MINUS || (first >= ZERO && first <= NINE)) {
      let k = first === MINUS ? start + 1 : start;
      if (end - k <= MAX_ID_DIGITS) {
        let v = 0;
        while (k < end) {
          const c = payload[k]!;
          if (c < ZERO || c > NINE) break;
          v = v * 10 + (c - ZERO);
          k++;
        }
        if (k === end) return first === MINUS ? -v : v;
      }
    } else return undefined; // true, false, null, an object or an array
  }
  const body = parseJsonObject(payload);
  if (body === undefined) return NOT_OBJECT;
  const id = body.id;
  return typeof id === 'string' || typeof id === 'number' ? id : undefined;
}

/** The JSON object a request body holds, or undefined when it holds something else. */
export function parseJsonObject(payload: Buffer): Record<string, unknown> | undefined {
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  return typeof body === 'object' && body !== null && !Array.isArray(body)
    ? (body as Record<string, unknown>)
    : undefined;
}
