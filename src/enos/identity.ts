/**
 * The EnOS PSK identity `{productKey},{deviceKey},{secureMode},{lifetime}`
 * (docs/protocol.md, "Identity and key").
 *
 * The platform documents the shape and the value ranges but no grammar, so the rules below are the
 * proxy's reading, chosen so that one identity has exactly one spelling (an accepted identity
 * re-formats to the very same string) and so that the keys are safe to put into MQTT topics,
 * MQTT usernames, Redis keys and logs:
 *
 * 1. At most {@link MAX_IDENTITY_BYTES} bytes. DTLS allows a psk_identity of up to 65535
 *    bytes (RFC 4279 §5.1); no real identity comes near 256, and the cap keeps a hostile
 *    ClientKeyExchange from costing decoding, hashing and cache-key space.
 * 2. Valid UTF-8 (RFC 4279 §5.1 says identities are UTF-8 text). The spec says "ASCII";
 *    non-ASCII keys are accepted because the registry, not this parser, decides which keys
 *    exist, and UTF-8 is what the DTLS RFC prescribes. A byte order mark is not stripped;
 *    it is rejected as a bad character.
 * 3. Exactly four fields separated by `,` (so keys cannot contain a comma).
 * 4. productKey and deviceKey: see {@link validateKey}.
 * 5. secureMode: exactly `2` (per-device secret) or `3` (per-product secret); not `02`, `+2`,
 *    ` 2`.
 * 6. lifetime: seconds, "value range is 30 to 86400"; written as a plain decimal integer with
 *    no sign, no leading zero, no spaces, no exponent or fraction.
 *
 * Anything else "is a handshake failure" (docs/protocol.md).
 */

import { EnosError, type EnosErrorCode } from './errors.js';

/** 2: unique certificate per device (device secret). 3: per product (product secret). */
export type SecureMode = 2 | 3;

/** A parsed, valid PSK identity. */
export interface DeviceIdentity {
  readonly productKey: string;
  readonly deviceKey: string;
  readonly secureMode: SecureMode;
  /** Seconds without a message after which the device counts as offline; 30..86400. */
  readonly lifetime: number;
}

/** Why an identity was refused. Stable; suitable as a metric label. */
export type IdentityRejectReason =
  /** The bytes are not valid UTF-8, or a string holds a lone surrogate. */
  | 'not-utf8'
  /** Not exactly four comma-separated fields. */
  | 'field-count'
  /** productKey or deviceKey is empty. */
  | 'empty-key'
  /** productKey or deviceKey holds a character that {@link validateKey} forbids. */
  | 'bad-character'
  /** secureMode is not exactly `2` or `3`. */
  | 'bad-mode'
  /** lifetime is not a plain decimal integer in 30..86400. */
  | 'bad-lifetime'
  /** The identity exceeds {@link MAX_IDENTITY_BYTES}, or a key exceeds {@link MAX_KEY_BYTES}. */
  | 'too-long';

export type IdentityParseResult =
  { ok: true; identity: DeviceIdentity } | { ok: false; reason: IdentityRejectReason };

/** Why a productKey/deviceKey was refused (a subset of {@link IdentityRejectReason}). */
export type KeyRejectReason = 'empty-key' | 'bad-character' | 'too-long' | 'not-utf8';

/** Longest accepted identity in UTF-8 bytes (see rule 1 in the module comment). */
export const MAX_IDENTITY_BYTES = 256;
/** Longest accepted productKey or deviceKey in UTF-8 bytes. */
const MAX_KEY_BYTES = 128;
/** Smallest lifetime in seconds (spec: "value range is 30 to 86400"). */
const LIFETIME_MIN = 30;
/** Largest lifetime in seconds (one day). */
const LIFETIME_MAX = 86400;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Characters a key must not contain: control characters (C0 U+0000–U+001F, DEL U+007F,
 * C1 U+0080–U+009F: `\p{Cc}`), any Unicode white space (`\p{White_Space}`, which covers
 * leading/trailing/inner spaces, NBSP, U+2028/9, ...), the BOM / zero-width no-break space
 * U+FEFF, lone surrogates (`\p{Cs}`; a `u` regex sees paired ones as one code point), Unicode
 * non-characters (U+FDD0–U+FDEF and the last two code points of every plane, U+nFFFE/U+nFFFF:
 * `\p{Noncharacter_Code_Point}`), the field separator `,`, and the MQTT topic level separator
 * and wildcards `/`, `+`, `#`: keys become topic levels (`/sys/{pk}/{dk}/...`) and subscription
 * filters, so these would let an identity address other devices' topics. Controls and
 * non-characters are also what MQTT 5 §1.5.4 lets a broker treat as malformed: Mosquitto 2
 * disconnects a client that publishes a topic holding one, which on a shared bridge connection
 * would fail every other device's publish in flight.
 */
const forbiddenInKey = /[\p{Cc}\p{White_Space}\p{Cs}\p{Noncharacter_Code_Point}\uFEFF,/+#]/u;
const loneSurrogate = /\p{Cs}/u;
const lifetimeSyntax = /^[1-9][0-9]{1,4}$/;

function utf8Length(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/**
 * Checks a productKey or deviceKey (in an identity, in the devices file, in a topic):
 * non-empty, at most {@link MAX_KEY_BYTES} UTF-8 bytes, well-formed Unicode, and none of the
 * characters listed at `forbiddenInKey` (controls, white space, U+FEFF, non-characters, `,`,
 * `/`, `+`, `#`).
 * @returns `undefined` when the key is acceptable, else the reason.
 */
export function validateKey(key: string): KeyRejectReason | undefined {
  if (key.length === 0) return 'empty-key';
  // the common key, checked per request segment by segment (parseTopicPath): no regex
  if (key.length <= MAX_KEY_BYTES && plainAscii(key)) return undefined;
  // a UTF-16 code unit is at most 3 UTF-8 bytes: short keys need no byte count
  if (
    key.length > MAX_KEY_BYTES / 3 &&
    (key.length > MAX_KEY_BYTES || utf8Length(key) > MAX_KEY_BYTES)
  ) {
    return 'too-long';
  }
  if (forbiddenInKey.test(key)) return loneSurrogate.test(key) ? 'not-utf8' : 'bad-character';
  return undefined;
}

/**
 * True when every character is printable ASCII other than space, `,`, `/`, `+` and `#`: none
 * of the characters a key may not hold, and one UTF-8 byte each.
 */
function plainAscii(key: string): boolean {
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c === 0x2c || c === 0x2f || c === 0x2b || c === 0x23) {
      return false;
    }
  }
  return true;
}

/** True when {@link validateKey} accepts the key. */
export function isValidKey(key: string): boolean {
  return validateKey(key) === undefined;
}

function reject(reason: IdentityRejectReason): IdentityParseResult {
  return { ok: false, reason };
}

/**
 * Parses a PSK identity as received in the DTLS ClientKeyExchange (a Buffer) or as text.
 * Never throws; see the module comment for every rule.
 */
export function parseIdentity(raw: Buffer | string): IdentityParseResult {
  let text: string;
  if (typeof raw === 'string') {
    if (raw.length > MAX_IDENTITY_BYTES || utf8Length(raw) > MAX_IDENTITY_BYTES) {
      return reject('too-long');
    }
    if (loneSurrogate.test(raw)) return reject('not-utf8');
    text = raw;
  } else {
    if (raw.length > MAX_IDENTITY_BYTES) return reject('too-long');
    try {
      text = utf8.decode(raw);
    } catch {
      return reject('not-utf8');
    }
  }

  const fields = text.split(',');
  if (fields.length !== 4) return reject('field-count');
  const [productKey = '', deviceKey = '', mode = '', life = ''] = fields;

  const pkProblem = validateKey(productKey);
  if (pkProblem !== undefined) return reject(pkProblem);
  const dkProblem = validateKey(deviceKey);
  if (dkProblem !== undefined) return reject(dkProblem);

  let secureMode: SecureMode;
  if (mode === '2') secureMode = 2;
  else if (mode === '3') secureMode = 3;
  else return reject('bad-mode');

  if (!lifetimeSyntax.test(life)) return reject('bad-lifetime');
  const lifetime = Number(life);
  if (lifetime < LIFETIME_MIN || lifetime > LIFETIME_MAX) return reject('bad-lifetime');

  return { ok: true, identity: { productKey, deviceKey, secureMode, lifetime } };
}

/** The {@link EnosError} code that corresponds to a rejection reason. */
export function identityErrorCode(reason: IdentityRejectReason): EnosErrorCode {
  switch (reason) {
    case 'empty-key':
    case 'bad-character':
      return 'ENOS_IDENTITY_KEY';
    case 'bad-mode':
      return 'ENOS_IDENTITY_MODE';
    case 'bad-lifetime':
      return 'ENOS_IDENTITY_LIFETIME';
    case 'not-utf8':
    case 'field-count':
    case 'too-long':
      return 'ENOS_IDENTITY_FORMAT';
  }
}

/**
 * Writes an identity as `{productKey},{deviceKey},{secureMode},{lifetime}`, checking the same
 * rules as {@link parseIdentity} (so `parseIdentity(formatIdentity(id))` gives `id` back).
 * @throws EnosError when a value breaks a rule.
 */
export function formatIdentity(id: DeviceIdentity): string {
  for (const [field, key] of [
    ['productKey', id.productKey],
    ['deviceKey', id.deviceKey],
  ] as const) {
    const problem = typeof key === 'string' ? validateKey(key) : 'empty-key';
    if (problem !== undefined) {
      throw new EnosError(
        problem === 'too-long' ? 'ENOS_IDENTITY_FORMAT' : 'ENOS_IDENTITY_KEY',
        field,
      );
    }
  }
  if (id.secureMode !== 2 && id.secureMode !== 3) throw new EnosError('ENOS_IDENTITY_MODE');
  if (
    !Number.isSafeInteger(id.lifetime) ||
    id.lifetime < LIFETIME_MIN ||
    id.lifetime > LIFETIME_MAX
  ) {
    throw new EnosError('ENOS_IDENTITY_LIFETIME');
  }
  const text = `${id.productKey},${id.deviceKey},${id.secureMode},${id.lifetime}`;
  if (utf8Length(text) > MAX_IDENTITY_BYTES)
    throw new EnosError('ENOS_IDENTITY_FORMAT', 'too long');
  return text;
}
