/**
 * The options of the DTLS server and the CoAP endpoint that settings define, from the
 * configuration: the one place where setting names and units meet the components' (seconds
 * become ms). The composition root builds the components with them; tests that build a
 * component themselves use them with the default configuration, so no value is repeated.
 */
import type { Config } from '../config/load.js';
import { CipherSuite } from '../dtls/constants.js';

/** `DtlsServer`: suites, table bounds, timers. */
export function dtlsServerSettings(config: Config) {
  return {
    cipherSuites: config.cipherSuites.map((s) => CipherSuite[s]),
    maxAssociations: config.maxAssociations,
    maxHandshakes: config.maxHandshakes,
    maxHandshakesPerAddress: config.maxHandshakesPerAddress,
    maxHandshakesPerPrefix: config.maxHandshakesPerPrefix,
    stalledHandshakeTimeoutMs: config.stalledHandshakeTimeoutSeconds * 1000,
    idleTimeoutMs: config.idleTimeoutSeconds * 1000,
    handshakeTimeoutMs: config.handshakeTimeoutSeconds * 1000,
    retransmitTimeoutMs: config.retransmitTimeoutMs,
    cookieLifetimeMs: config.cookieLifetimeSeconds * 1000,
    cidLength: config.cidLength,
  } as const;
}

/** `CoapEndpoint`: the ACK timeout, payload and Block1 bounds. */
export function coapEndpointSettings(config: Config) {
  return {
    ackTimeoutMs: config.ackTimeoutMs,
    maxPayload: config.maxPayload,
    blockSize: config.blockSize,
    maxUploadsPerPeer: config.maxUploadsPerPeer,
    maxUploads: config.maxUploads,
    maxUploadBytes: config.maxUploadBytes,
  } as const;
}
