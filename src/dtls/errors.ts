/**
 * Typed DTLS errors. Each carries a stable code and the protocol reaction: the fatal alert to
 * send to the peer, or none when the datagram is simply dropped (RFC 6347 §4.1.2.7: invalid
 * records are discarded silently; alerts only for a peer that proved its address).
 * Every code is listed in docs/errors.md.
 */
import { CoapEdgeError } from '../errors/index.js';
import { AlertDescription } from './constants.js';

export type DtlsErrorCode =
  | 'DTLS_DECODE_ERROR'
  | 'DTLS_ILLEGAL_PARAMETER'
  | 'DTLS_UNEXPECTED_MESSAGE'
  | 'DTLS_HANDSHAKE_FAILURE'
  | 'DTLS_PROTOCOL_VERSION'
  | 'DTLS_UNKNOWN_PSK_IDENTITY'
  | 'DTLS_BAD_RECORD_MAC'
  | 'DTLS_DECRYPT_ERROR'
  | 'DTLS_INTERNAL_ERROR'
  | 'DTLS_HANDSHAKE_TIMEOUT'
  | 'DTLS_ALERT_RECEIVED'
  | 'DTLS_CLOSED';

const alertFor: Record<DtlsErrorCode, number | undefined> = {
  DTLS_DECODE_ERROR: AlertDescription.decodeError,
  DTLS_ILLEGAL_PARAMETER: AlertDescription.illegalParameter,
  DTLS_UNEXPECTED_MESSAGE: AlertDescription.unexpectedMessage,
  DTLS_HANDSHAKE_FAILURE: AlertDescription.handshakeFailure,
  DTLS_PROTOCOL_VERSION: AlertDescription.protocolVersion,
  DTLS_UNKNOWN_PSK_IDENTITY: AlertDescription.unknownPskIdentity,
  DTLS_BAD_RECORD_MAC: AlertDescription.badRecordMac,
  DTLS_DECRYPT_ERROR: AlertDescription.decryptError,
  DTLS_INTERNAL_ERROR: AlertDescription.internalError,
  DTLS_HANDSHAKE_TIMEOUT: undefined,
  DTLS_ALERT_RECEIVED: undefined,
  DTLS_CLOSED: undefined,
};

const kDtlsError = Symbol.for('coap-edge.dtls.error');

export class DtlsError extends CoapEdgeError {
  readonly code: DtlsErrorCode;
  /** Fatal alert to send to the peer, if any. */
  override readonly alert: number | undefined;
  readonly [kDtlsError] = true;

  constructor(code: DtlsErrorCode, message: string, alert: number | undefined = alertFor[code]) {
    super(message);
    this.name = 'DtlsError';
    this.code = code;
    this.alert = alert;
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && kDtlsError in value;
  }
}

/** Shorthand for the most common parse failure. */
export function decodeError(what: string): DtlsError {
  return new DtlsError('DTLS_DECODE_ERROR', `malformed ${what}`);
}
