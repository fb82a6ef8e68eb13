/**
 * The one error type of `src/enos`. The hot-path parsers (`parseIdentity`, `parseTopicPath`)
 * never throw; they return a result. `EnosError` is thrown only by the builders
 * (`formatIdentity`, `derivePsk`, `enosMqttLogin`, `activationReply`, ...) when a caller hands
 * them values that would produce something the platform or a device cannot use.
 *
 * Messages are short constants per code plus, at most, the name of the offending field or a
 * capped, escaped echo of a non-secret value (see {@link safeEcho}). Secrets never appear.
 */

import { CoapEdgeError } from '../errors/index.js';

/** Stable error codes; callers switch on these, never on the message text. */
export type EnosErrorCode =
  /** The identity is not `{productKey},{deviceKey},{secureMode},{lifetime}` (field count, UTF-8, length). */
  | 'ENOS_IDENTITY_FORMAT'
  /** secureMode is not exactly `2` or `3`. */
  | 'ENOS_IDENTITY_MODE'
  /** lifetime is not a plain decimal integer in 30..86400. */
  | 'ENOS_IDENTITY_LIFETIME'
  /** productKey or deviceKey is empty, too long or has a character that is not allowed. */
  | 'ENOS_IDENTITY_KEY'
  /** A secret is empty or not well-formed Unicode, so no key can be derived from it. */
  | 'ENOS_SECRET'
  /** A PSK cannot be rendered for a command line (it contains a 0x00 byte). */
  | 'ENOS_PSK_COMMAND_LINE'
  /** An MQTT login cannot be built from the given values. */
  | 'ENOS_MQTT_LOGIN'
  /** A topic cannot be built from the given keys (they would inject MQTT wildcards or levels). */
  | 'ENOS_TOPIC'
  /** An activation reply cannot be built from the given values. */
  | 'ENOS_ACTIVATION';

const messages: { readonly [C in EnosErrorCode]: string } = {
  ENOS_IDENTITY_FORMAT: 'PSK identity is not "{productKey},{deviceKey},{secureMode},{lifetime}"',
  ENOS_IDENTITY_MODE: 'PSK identity secureMode must be 2 or 3',
  ENOS_IDENTITY_LIFETIME: 'PSK identity lifetime must be an integer from 30 to 86400',
  ENOS_IDENTITY_KEY: 'PSK identity productKey/deviceKey is not allowed',
  ENOS_SECRET: 'secret must be a non-empty, well-formed string',
  ENOS_PSK_COMMAND_LINE: 'PSK contains a 0x00 byte and cannot be passed on a command line',
  ENOS_MQTT_LOGIN: 'cannot build an EnOS MQTT login',
  ENOS_TOPIC: 'cannot build an EnOS topic',
  ENOS_ACTIVATION: 'cannot build an activation reply',
};

/** Longest echo of caller input put into a message, in UTF-16 code units. */
export const MAX_ECHO = 64;

/**
 * Renders a non-secret value for an error message: at most {@link MAX_ECHO} characters,
 * control characters (C0, DEL, C1), lone surrogates, quotes and backslashes escaped as
 * `\xNN` / `\uNNNN`, and an ellipsis when cut. Never pass a secret here.
 */
export function safeEcho(value: string): string {
  const cut = value.length > MAX_ECHO;
  const head = cut ? value.slice(0, MAX_ECHO) : value;
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  const escaped = head.replace(/[\u0000-\u001f\u007f-\u009f"\\]|\p{Cs}/gu, (c) => {
    const n = c.charCodeAt(0);
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16)}`;
  });
  return `"${escaped}"${cut ? '…' : ''}`;
}

/** An EnOS rule was broken by a value handed to a builder. `code` is stable. */
export class EnosError extends CoapEdgeError {
  readonly code: EnosErrorCode;

  /**
   * @param code the stable code; the message starts with its constant text.
   * @param detail optional non-secret context (a field name, or an already `safeEcho`ed value).
   */
  constructor(code: EnosErrorCode, detail?: string) {
    super(detail === undefined ? messages[code] : `${messages[code]}: ${detail}`);
    this.name = 'EnosError';
    this.code = code;
  }
}
