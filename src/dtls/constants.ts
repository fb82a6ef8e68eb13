/** DTLS 1.2 code points used by the PSK server and client (RFC 6347, RFC 5246, RFC 4279). */

/** Record content types (RFC 5246 §6.2.1; 25 = tls12_cid, RFC 9146). */
export const ContentType = {
  changeCipherSpec: 20,
  alert: 21,
  handshake: 22,
  applicationData: 23,
  /** RFC 9146 §4: a record carrying a Connection ID; the real type is inside the ciphertext. */
  tls12Cid: 25,
} as const;

/** Handshake message types (RFC 5246 §7.4, RFC 6347 §4.3.2). */
export const HandshakeType = {
  helloRequest: 0,
  clientHello: 1,
  serverHello: 2,
  helloVerifyRequest: 3,
  serverKeyExchange: 12,
  serverHelloDone: 14,
  clientKeyExchange: 16,
  finished: 20,
} as const;

/** Wire versions: DTLS counts down (RFC 6347 §4.1). */
export const DTLS_1_0 = 0xfeff;
export const DTLS_1_2 = 0xfefd;

export const RECORD_HEADER_LENGTH = 13;
export const HANDSHAKE_HEADER_LENGTH = 12;
/** RFC 6347 §4.1: 2^14 plaintext plus at most 2048 bytes of expansion. */
export const MAX_RECORD_BODY = 16384 + 2048;
/** 48-bit sequence numbers must never wrap (RFC 6347 §4.1). */
export const MAX_SEQUENCE = 2 ** 48 - 1;

export const AlertLevel = { warning: 1, fatal: 2 } as const;

/** Alert descriptions (RFC 5246 §7.2, RFC 4279 §2, RFC 5746). */
export const AlertDescription = {
  closeNotify: 0,
  unexpectedMessage: 10,
  badRecordMac: 20,
  handshakeFailure: 40,
  illegalParameter: 47,
  decodeError: 50,
  decryptError: 51,
  protocolVersion: 70,
  insufficientSecurity: 71,
  internalError: 80,
  noRenegotiation: 100,
  unsupportedExtension: 110,
  unknownPskIdentity: 115,
} as const;
export type AlertDescriptionName = keyof typeof AlertDescription;

/** Alert description → RFC name (`unknown_psk_identity`), for logs and metrics. */
export const alertName: ReadonlyMap<number, string> = new Map(
  (Object.entries(AlertDescription) as [AlertDescriptionName, number][]).map(([k, v]) => [
    v,
    k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`),
  ]),
);

/** The two cipher suites of the EnOS CoAP endpoint. */
export const CipherSuite = {
  /** RFC 6655; the RFC 7925 mandatory suite. */
  TLS_PSK_WITH_AES_128_CCM_8: 0xc0a8,
  /** RFC 5487. */
  TLS_PSK_WITH_AES_128_CBC_SHA256: 0x00ae,
} as const;
export type CipherSuiteName = keyof typeof CipherSuite;
export const cipherSuiteName: ReadonlyMap<number, CipherSuiteName> = new Map(
  (Object.entries(CipherSuite) as [CipherSuiteName, number][]).map(([k, v]) => [v, k]),
);

/** TLS_EMPTY_RENEGOTIATION_INFO_SCSV (RFC 5746 §3.3). */
export const EMPTY_RENEGOTIATION_INFO_SCSV = 0x00ff;

/** Extension code points (RFC 6066, 7366, 7627, 8449, 5746). */
export const ExtensionType = {
  serverName: 0,
  maxFragmentLength: 1,
  encryptThenMac: 22,
  extendedMasterSecret: 23,
  recordSizeLimit: 28,
  sessionTicket: 35,
  connectionId: 54,
  renegotiationInfo: 0xff01,
} as const;

/** Largest record plaintext in DTLS 1.2 (RFC 6347 §4.1, RFC 5246 §6.2.1): 2^14. */
export const MAX_PLAINTEXT = 16384;
/** Smallest record_size_limit a peer may announce (RFC 8449 §4). */
export const MIN_RECORD_SIZE_LIMIT = 64;

/** Longest Connection ID (RFC 9146 §3: cid<0..2^8-1>; we hand out and accept at most 32). */
export const MAX_CID_LENGTH = 32;

export const CLIENT_RANDOM_LENGTH = 32;
/**
 * Longest PSK identity accepted. RFC 4279 allows 2^16-1 bytes, but real identities (EnOS:
 * `{productKey},{deviceKey},{secureMode},{lifetime}`) are far shorter; a longer one is refused
 * before it costs a key lookup.
 */
export const MAX_PSK_IDENTITY = 128;
export const MAX_COOKIE_LENGTH = 255;
export const VERIFY_DATA_LENGTH = 12;
