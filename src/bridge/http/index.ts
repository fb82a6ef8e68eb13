/** The HTTP backend of HTTP routes: pooled undici calls, status mapping, auth. */
export {
  HttpBackend,
  DEFAULT_MAX_RESPONSE_BODY,
  DEFAULT_MAX_RETRY_AFTER,
  type HttpBackendOptions,
  type HttpCallRequest,
} from './backend.js';
export { BackendAuth, hmacSignature } from './auth.js';
export {
  HEADER_ASSET_ID,
  HEADER_AUTHORIZATION,
  HEADER_CONTENT_FORMAT,
  HEADER_CONTENT_TYPE,
  HEADER_DEVICE_KEY,
  HEADER_PRODUCT_KEY,
  HEADER_TIMESTAMP,
  HEADER_TOPIC,
  HEADER_TRACEPARENT,
  HEADER_TRACESTATE,
  DEFAULT_SIGNATURE_HEADER,
  contentFormatFor,
  contentTypeFor,
} from './headers.js';
export {
  mapHttpStatus,
  retryAfterSeconds,
  HTTP_OUTCOMES,
  type HttpOutcome,
  type StatusMapping,
} from './status.js';
export { HTTP_LATENCY_BOUNDS_MS, type HttpBackendStats, type OutcomeCounts } from './stats.js';
