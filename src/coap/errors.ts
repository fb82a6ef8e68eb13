/**
 * The one error `decode` throws, carrying what the message layer must do about it.
 *
 * RFC 7252 calls every malformed message a "message format error" and ties the reaction to
 * the message type: a Confirmable message is rejected with a matching Reset (§4.2), a
 * Non-confirmable one may be answered with a Reset but is otherwise ignored (§4.3; we drop
 * it), an Acknowledgement or Reset is silently ignored (§4.2), and a message with an unknown
 * version is silently ignored (§3). The error never carries or quotes input bytes.
 *
 * @module
 */

import { CoapEdgeError } from '../errors/index.js';
import { CON, type MessageType } from './constants.js';

/** Stable identifiers of every way `decode` can reject a datagram. */
export const COAP_ERROR_CODES = [
  /** Fewer than the 4 bytes of the fixed header (RFC 7252 §3). */
  'COAP_TRUNCATED_HEADER',
  /** Version field is not 1 (RFC 7252 §3: silently ignore). */
  'COAP_BAD_VERSION',
  /** Token length 9-15 (RFC 7252 §3: reserved, a message format error). */
  'COAP_BAD_TOKEN_LENGTH',
  /** Fewer bytes left than the token length says (RFC 7252 §3). */
  'COAP_TRUNCATED_TOKEN',
  /** Option delta or length nibble 15 outside the payload marker (RFC 7252 §3.1). */
  'COAP_RESERVED_OPTION_NIBBLE',
  /** Option header, extended delta/length or value runs past the datagram (RFC 7252 §3.1). */
  'COAP_TRUNCATED_OPTION',
  /** Option number above 65535 after adding a delta (RFC 7252 §3.1, §12.2). */
  'COAP_OPTION_NUMBER_OVERFLOW',
  /** Payload marker followed by zero bytes (RFC 7252 §3: a message format error). */
  'COAP_EMPTY_PAYLOAD_AFTER_MARKER',
  /** Code 0.00 with a token or any byte after the header (RFC 7252 §4.1). */
  'COAP_BAD_EMPTY_MESSAGE',
] as const;

/** One of {@link COAP_ERROR_CODES}. */
export type CoapErrorCode = (typeof COAP_ERROR_CODES)[number];

/**
 * What the message layer does with a datagram that failed to decode.
 * - `reset`: send an Empty RST echoing {@link CoapFormatError.messageId} (RFC 7252 §4.2).
 * - `drop`: ignore it silently (and count it).
 */
export type CoapErrorReaction = 'reset' | 'drop';

const MESSAGES: { readonly [K in CoapErrorCode]: string } = Object.freeze({
  COAP_TRUNCATED_HEADER: 'CoAP message shorter than its 4-byte header',
  COAP_BAD_VERSION: 'CoAP version is not 1',
  COAP_BAD_TOKEN_LENGTH: 'CoAP token length 9-15 is reserved',
  COAP_TRUNCATED_TOKEN: 'CoAP token runs past the end of the message',
  COAP_RESERVED_OPTION_NIBBLE: 'CoAP option delta or length nibble 15 is reserved',
  COAP_TRUNCATED_OPTION: 'CoAP option runs past the end of the message',
  COAP_OPTION_NUMBER_OVERFLOW: 'CoAP option number exceeds 65535',
  COAP_EMPTY_PAYLOAD_AFTER_MARKER: 'CoAP payload marker is followed by no payload',
  COAP_BAD_EMPTY_MESSAGE: 'CoAP Empty message (0.00) has a token, options or payload',
});

const BRAND = Symbol.for('coap-edge.coap.CoapFormatError');

/**
 * A datagram is not a well-formed CoAP message (RFC 7252 §3, §4.1). `reaction` says what to
 * do about it; `messageId` and `type` are set whenever the fixed header was readable and its
 * version was 1, so a Reset can be built without looking at the bytes again.
 */
export class CoapFormatError extends CoapEdgeError {
  override readonly name = 'CoapFormatError';
  /** Stable identifier, safe for metrics labels and logs. */
  readonly code: CoapErrorCode;
  /** Protocol reaction implied by RFC 7252 §3, §4.2, §4.3. */
  readonly reaction: CoapErrorReaction;
  /** Message ID from the header, or undefined when the header was unreadable. */
  readonly messageId: number | undefined;
  /** Message type from the header, or undefined when the header was unreadable. */
  readonly type: MessageType | undefined;
  /** Byte offset at which decoding stopped. */
  readonly offset: number;

  /**
   * @param code what went wrong
   * @param offset byte offset where decoding stopped
   * @param type message type when the header was readable (version 1), else undefined
   * @param messageId message ID when the header was readable (version 1), else undefined
   */
  constructor(
    code: CoapErrorCode,
    offset: number,
    type: MessageType | undefined,
    messageId: number | undefined,
  ) {
    super(MESSAGES[code]);
    this.code = code;
    this.offset = offset;
    this.type = type;
    this.messageId = messageId;
    this.reaction = reactionFor(type);
  }

  /** Recognises instances created by another copy of this module too. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }

  /** @internal brand for {@link CoapFormatError}[Symbol.hasInstance] */
  get [BRAND](): true {
    return true;
  }
}

/**
 * Reaction to a format error in a message of the given type: Reset for a Confirmable
 * (RFC 7252 §4.2), drop for everything else, including an unreadable header (§3) and a
 * Non-confirmable message, for which a Reset is optional (§4.3).
 */
export function reactionFor(type: MessageType | undefined): CoapErrorReaction {
  return type === CON ? 'reset' : 'drop';
}
