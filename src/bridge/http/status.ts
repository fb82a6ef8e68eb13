/**
 * HTTP status → bridge outcome (the gateway turns it into a CoAP code, docs/protocol.md). Pure.
 *
 * | HTTP                          | Bridge status                 | CoAP | Max-Age               |
 * | ----------------------------- | ----------------------------- | ---- | --------------------- |
 * | 2xx                           | `changed` (with the body)     | 2.04 |                       |
 * | 400, other 4xx                | `bad-request`                 | 4.00 |                       |
 * | 401                           | `unauthorized`                | 4.01 |                       |
 * | 403                           | `forbidden`                   | 4.03 |                       |
 * | 404                           | `not-found`                   | 4.04 |                       |
 * | 405                           | `method-not-allowed`          | 4.05 |                       |
 * | 413                           | `too-large`                   | 4.13 |                       |
 * | 415                           | `unsupported-content-format`  | 4.15 |                       |
 * | 429                           | `too-many-requests`           | 4.29 | Retry-After, if given |
 * | 5xx except 504                | `unavailable`                 | 5.03 | Retry-After or default|
 * | 504                           | `gateway-timeout`             | 5.04 |                       |
 * | 1xx, 3xx, anything else       | `bad-gateway`                 | 5.02 |                       |
 *
 * A device request is always POST/PUT, so success is 2.04 Changed, never 2.05.
 * Retry-After (delta-seconds or an HTTP-date) is capped at `maxRetryAfter`.
 */
import type { BridgeStatus } from '../types.js';

/** Outcome classes counted per route. */
export type HttpOutcome =
  | '2xx'
  | '4xx'
  | '5xx'
  | 'timeout'
  | 'connect-error'
  | 'overloaded'
  /** 1xx/3xx or otherwise unusable status, body over the read cap, broken response. */
  | 'bad-response'
  /** Not sent: the device's values would put a `.` or `..` segment into the URL path (4.00). */
  | 'bad-path';

export const HTTP_OUTCOMES: readonly HttpOutcome[] = [
  '2xx',
  '4xx',
  '5xx',
  'timeout',
  'connect-error',
  'overloaded',
  'bad-response',
  'bad-path',
];

export interface StatusMapping {
  readonly status: BridgeStatus;
  readonly outcome: HttpOutcome;
  readonly maxAge?: number;
}

export interface StatusMappingOptions {
  /** Max-Age (s) with 5.03 when the backend gave no Retry-After. */
  readonly unavailableMaxAge: number;
  /** Largest Max-Age (s) taken from Retry-After. */
  readonly maxRetryAfter: number;
  /** Now in ms since the epoch (for an HTTP-date Retry-After). */
  readonly nowMs: number;
}

const CLIENT_ERRORS: ReadonlyMap<number, BridgeStatus> = new Map<number, BridgeStatus>([
  [400, 'bad-request'],
  [401, 'unauthorized'],
  [403, 'forbidden'],
  [404, 'not-found'],
  [405, 'method-not-allowed'],
  [413, 'too-large'],
  [415, 'unsupported-content-format'],
  [429, 'too-many-requests'],
]);

/**
 * Seconds to wait from a `Retry-After` value (delta-seconds or HTTP-date), capped at `max`;
 * undefined when absent or unreadable.
 */
export function retryAfterSeconds(
  value: string | undefined,
  max: number,
  nowMs: number,
): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d{1,10}$/.test(v)) return Math.min(Number(v), max);
  if (!/^[A-Za-z]{3}, /.test(v)) return undefined;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.min(Math.max(0, Math.ceil((at - nowMs) / 1000)), max);
}

/** The bridge outcome of an HTTP status (module table). */
export function mapHttpStatus(
  status: number,
  retryAfter: string | undefined,
  o: StatusMappingOptions,
): StatusMapping {
  if (status >= 200 && status <= 299) return { status: 'changed', outcome: '2xx' };
  if (status >= 400 && status <= 499) {
    const mapped = CLIENT_ERRORS.get(status) ?? 'bad-request';
    if (status === 429) {
      const maxAge = retryAfterSeconds(retryAfter, o.maxRetryAfter, o.nowMs);
      if (maxAge !== undefined) return { status: mapped, outcome: '4xx', maxAge };
    }
    return { status: mapped, outcome: '4xx' };
  }
  if (status >= 500 && status <= 599) {
    if (status === 504) return { status: 'gateway-timeout', outcome: '5xx' };
    const maxAge = retryAfterSeconds(retryAfter, o.maxRetryAfter, o.nowMs) ?? o.unavailableMaxAge;
    return { status: 'unavailable', outcome: '5xx', maxAge };
  }
  return { status: 'bad-gateway', outcome: 'bad-response' };
}
