/** The HTTP backend of HTTP routes: pooled undici calls, status mapping, auth. */
export { HttpBackend, type HttpBackendOptions, type HttpCallRequest } from './backend.js';
export { BackendAuth, hmacSignature } from './auth.js';
export { contentFormatFor, contentTypeFor } from './headers.js';
export {
  mapHttpStatus,
  retryAfterSeconds,
  type HttpOutcome,
  type StatusMapping,
} from './status.js';
export { type HttpBackendStats, type OutcomeCounts } from './stats.js';
