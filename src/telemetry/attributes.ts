/**
 * Span attribute names: OpenTelemetry semantic conventions where they exist (`network.*`,
 * `server.*`, `messaging.*`, `http.*`), `coap.*`/`dtls.*`/`coap_edge.*` for the rest. Never
 * secrets, keys or payloads.
 */
export const DEVICE_KEY = 'coap_edge.device_key';
export const PRODUCT_KEY = 'coap_edge.product_key';
export const SECURE_MODE = 'coap_edge.secure_mode';
