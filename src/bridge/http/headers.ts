/**
 * What an HTTP route sends besides the payload, and how content types map to CoAP content
 * formats and back. Pure functions and constants; no I/O.
 *
 * Headers of every HTTP route request (names are case-insensitive; sent in lower case):
 *
 * | Header                  | Value                                                             |
 * | ----------------------- | ----------------------------------------------------------------- |
 * | `X-Device-Product-Key`  | the device's productKey ({@link encodeHeaderValue})               |
 * | `X-Device-Key`          | the device's deviceKey ({@link encodeHeaderValue})                |
 * | `X-Device-Asset-Id`     | the device's assetId, when the session knows it                   |
 * | `X-Device-Topic`        | the device's MQTT topic, e.g. `/sys/pk/dk/thing/measurepoint/post` |
 * | `X-Coap-Content-Format` | the CoAP Content-Format number the device sent, when it sent one  |
 * | `Content-Type`          | from the CoAP Content-Format ({@link contentTypeFor})             |
 * | `traceparent`           | W3C Trace Context of the request, when there is one               |
 * | `tracestate`            | W3C Trace Context vendor state, when there is one                 |
 *
 * plus the route's own `headers` (rendered templates) and, with `auth`, `Authorization`
 * (bearer) or the signature header and `X-Timestamp` (hmac; see `./auth.ts`).
 */

export const HEADER_PRODUCT_KEY = 'x-device-product-key';
export const HEADER_DEVICE_KEY = 'x-device-key';
export const HEADER_ASSET_ID = 'x-device-asset-id';
export const HEADER_TOPIC = 'x-device-topic';
export const HEADER_CONTENT_FORMAT = 'x-coap-content-format';
export const HEADER_CONTENT_TYPE = 'content-type';
export const HEADER_TRACEPARENT = 'traceparent';
export const HEADER_TRACESTATE = 'tracestate';
export const HEADER_AUTHORIZATION = 'authorization';
export const HEADER_TIMESTAMP = 'x-timestamp';

/**
 * Header names a route's `headers` may not set: hop-by-hop and framing headers (undici and
 * the connection pool own them) and the device headers above (a route cannot forge them).
 * `Content-Type` may be overridden by a route. With `auth`, its headers are reserved too.
 */
export const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'upgrade',
  'te',
  'trailer',
  'expect',
  HEADER_PRODUCT_KEY,
  HEADER_DEVICE_KEY,
  HEADER_ASSET_ID,
  HEADER_TOPIC,
  HEADER_CONTENT_FORMAT,
  HEADER_TRACEPARENT,
  HEADER_TRACESTATE,
]);

/** An RFC 9110 field name (token). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export function isValidHeaderName(name: string): boolean {
  return TOKEN.test(name);
}

/** Printable ASCII except `%` stays; everything else is percent-encoded. */
const HEADER_SAFE = /^[\x21-\x24\x26-\x7e]*$/;

/**
 * A device value (productKey, deviceKey, topic) as an HTTP header value: every byte of its
 * UTF-8 form that is not printable ASCII (0x21-0x7E), and `%` itself, becomes `%XX`.
 * Keys of ordinary devices are ASCII, so the value is usually unchanged; a receiver gets the
 * exact value back with `decodeURIComponent`.
 */
export function encodeHeaderValue(value: string): string {
  if (HEADER_SAFE.test(value)) return value;
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    out +=
      byte >= 0x21 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * One URL path segment or query value: everything outside the RFC 3986 unreserved set
 * (`A-Z a-z 0-9 - . _ ~`) is percent-encoded as UTF-8.
 */
export function encodeUrlSegment(segment: string): string {
  return encodeURIComponent(segment).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** An MQTT topic in a URL: each level encoded with {@link encodeUrlSegment}, `/` kept. */
export function encodeUrlTopic(topic: string): string {
  return topic.split('/').map(encodeUrlSegment).join('/');
}

/** W3C Trace Context `traceparent` (version 00 form; other versions share its prefix). */
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[\x21-\x7e]*)?$/;

/** True when `value` is a well-formed `traceparent` that is safe to forward. */
export function isValidTraceparent(value: string): boolean {
  return value.length <= 256 && TRACEPARENT.test(value) && !value.startsWith('ff');
}

/** True when `value` may be forwarded as `tracestate` (printable ASCII, at most 512 chars). */
export function isValidTracestate(value: string): boolean {
  return value.length > 0 && value.length <= 512 && /^[\x20-\x7e]+$/.test(value);
}

/** CoAP Content-Format numbers this module knows (RFC 7252 §12.3 and the IANA registry). */
const CONTENT_TYPES: ReadonlyMap<number, string> = new Map([
  [0, 'text/plain; charset=utf-8'],
  [40, 'application/link-format'],
  [41, 'application/xml'],
  [42, 'application/octet-stream'],
  [47, 'application/exi'],
  [50, 'application/json'],
  [60, 'application/cbor'],
  [110, 'application/senml+json'],
  [112, 'application/senml+cbor'],
]);

const CONTENT_FORMATS: ReadonlyMap<string, number> = new Map(
  [...CONTENT_TYPES].map(([format, type]) => [mediaType(type), format]),
);

const OCTET_STREAM = 'application/octet-stream';

/**
 * The `Content-Type` for a CoAP Content-Format: 0 → `text/plain; charset=utf-8`,
 * 42 → `application/octet-stream`, 50 → `application/json`, 60 → `application/cbor`
 * (also 40, 41, 47, 110, 112); none or an unknown number → `application/octet-stream`
 * (the number still travels in `X-Coap-Content-Format`).
 */
export function contentTypeFor(contentFormat: number | undefined): string {
  if (contentFormat === undefined) return OCTET_STREAM;
  return CONTENT_TYPES.get(contentFormat) ?? OCTET_STREAM;
}

/** `type/subtype` of a Content-Type, lower case, without parameters. */
function mediaType(contentType: string): string {
  const semi = contentType.indexOf(';');
  return (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

/**
 * The CoAP Content-Format for a response's `Content-Type`: the known types of
 * {@link contentTypeFor} (parameters ignored, so any `text/plain` is 0), other `+json` types
 * → 50, other `+cbor` types → 60, other `text/*` → 0, anything else → 42. Undefined when
 * there is no Content-Type.
 */
export function contentFormatFor(contentType: string | undefined): number | undefined {
  if (contentType === undefined || contentType.trim() === '') return undefined;
  const type = mediaType(contentType);
  const known = CONTENT_FORMATS.get(type);
  if (known !== undefined) return known;
  if (type.endsWith('+json')) return 50;
  if (type.endsWith('+cbor')) return 60;
  if (type.startsWith('text/')) return 0;
  return 42;
}
