/**
 * The one base of every error coap-edge throws (docs/errors.md lists every code).
 *
 * - `code`: stable, SCREAMING_SNAKE (e.g. `DTLS_DECODE_ERROR`); callers, metrics and logs use
 *   it, never the message.
 * - `coap`: the CoAP answer a request that failed with this error gets (code, Max-Age), for
 *   the errors that reach a device request; the router reads it (docs/protocol.md "Answers").
 * - `alert`: the DTLS fatal alert to send to the peer, for the DTLS errors that have one.
 *
 * Messages never hold secrets (keys, PSKs, passwords, the association key) nor bytes a device
 * sent; they are for operators, never sent to a device.
 *
 * This folder imports nothing of src/: every layer may import it (eslint.config.js).
 *
 * @module
 */

/** A CoAP response code an error may be answered with (RFC 7252 §5.9, RFC 8516 for 4.29). */
export type CoapResponseCode =
  | '4.00'
  | '4.01'
  | '4.03'
  | '4.04'
  | '4.05'
  | '4.13'
  | '4.15'
  | '4.29'
  | '5.00'
  | '5.02'
  | '5.03'
  | '5.04';

/** How a device request that failed with an error is answered. */
export interface CoapReaction {
  readonly code: CoapResponseCode;
  /**
   * Max-Age option (RFC 7252 §5.10.5, a retry hint): seconds, or `configured` for the
   * gateway's configured Max-Age of 5.03 answers; absent: no Max-Age.
   */
  readonly maxAge?: number | 'configured';
}

/** Brand shared by every copy of this module (two installed copies still agree). */
const BRAND = Symbol.for('coap-edge.error');

export abstract class CoapEdgeError extends Error {
  /** Stable SCREAMING_SNAKE code; see docs/errors.md. */
  abstract readonly code: string;

  /** Fatal DTLS alert to send to the peer, if any (set by the DTLS errors only). */
  declare readonly alert?: number | undefined;

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }

  /** The CoAP answer to a request that failed with this error; undefined: not decided here. */
  get coap(): CoapReaction | undefined {
    return undefined;
  }

  /** @internal brand for {@link isCoapEdgeError} */
  get [BRAND](): true {
    return true;
  }

  /**
   * `x instanceof CoapEdgeError` recognises errors of another copy of this module too; for a
   * subclass, `instanceof` keeps its ordinary meaning (or the subclass's own override).
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this === CoapEdgeError) return isCoapEdgeError(value);
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }
}

/** Whether `x` is a {@link CoapEdgeError}, from any copy of this module. */
export function isCoapEdgeError(x: unknown): x is CoapEdgeError {
  return typeof x === 'object' && x !== null && BRAND in x;
}
