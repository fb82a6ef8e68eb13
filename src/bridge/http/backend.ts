/**
 * The HTTP backend: POSTs/PUTs a device's payload to an HTTP route's URL and turns the answer
 * into a bridge response (`./status.ts`).
 *
 * - One undici `Pool` per origin, keep-alive, at most `connections` sockets each.
 * - A deadline per call (the route's `timeout`, else `timeoutMs`) over connect, headers and
 *   body; reaching it answers 5.04.
 * - A global cap on calls in flight (`maxConcurrency`): beyond it a call answers 5.03 at once
 *   (counted as `overloaded`), nothing queues.
 * - A 2xx body is returned whole (the CoAP layer sends long ones block-wise), up to
 *   `maxResponseBody` bytes; a longer one answers 5.02. Bodies of other statuses are discarded.
 *
 * `call` never throws: every failure is an answer. Headers sent: `./headers.ts`; auth:
 * `./auth.ts`. undici is required by the constructor: a gateway without HTTP routes (no
 * backend) never loads it (110 files, start-up CPU; docs/testing.md, "Suite time").
 */
import { createRequire } from 'node:module';
import {
  SpanKind,
  endWithError,
  isTraced,
  startChild,
  traceparentOf,
} from '../../telemetry/trace.js';
import type * as Undici from 'undici';
import type { Pool } from 'undici';
import { systemClock, type Clock } from '../../time/clock.js';
import type { CompiledHttpRoute } from '../routes.js';
import type { BridgeResponse, DeviceKey } from '../types.js';
import {
  HEADER_ASSET_ID,
  HEADER_CONTENT_FORMAT,
  HEADER_CONTENT_TYPE,
  HEADER_DEVICE_KEY,
  HEADER_PRODUCT_KEY,
  HEADER_TOPIC,
  HEADER_TRACEPARENT,
  HEADER_TRACESTATE,
  contentFormatFor,
  contentTypeFor,
  encodeHeaderValue,
  isValidTraceparent,
  isValidTracestate,
} from './headers.js';
import { HttpStatsRecorder, type HttpBackendStats } from './stats.js';
import { mapHttpStatus, type HttpOutcome } from './status.js';

/** Default cap on a response body read from a backend, in bytes. */
const DEFAULT_MAX_RESPONSE_BODY = 64 * 1024;
/** Default cap on a Max-Age taken from `Retry-After`, in seconds. */
const DEFAULT_MAX_RETRY_AFTER = 300;

export interface HttpBackendOptions {
  /** Default deadline of one call in ms (`httpTimeoutMs`); a route's `timeout` wins. */
  readonly timeoutMs: number;
  /** Keep-alive connections per origin (`httpConnections`). */
  readonly connections: number;
  /** Calls in flight at once across all routes (`httpMaxConcurrency`). */
  readonly maxConcurrency: number;
  /** Max-Age (s) with 5.03 when the backend gives no Retry-After (`maxUnavailableRetrySeconds`). */
  readonly unavailableMaxAge: number;
  /** Cap on a Max-Age taken from Retry-After, in s. @default 300 */
  readonly maxRetryAfter?: number | undefined;
  /** Largest response body read, in bytes; longer answers 5.02. @default 65536 */
  readonly maxResponseBody?: number | undefined;
  /** How long an idle connection is kept, in ms (a shorter server hint wins). @default 10000 */
  readonly keepAliveTimeoutMs?: number | undefined;
  /**
   * Time: its wall time for `X-Timestamp` and Retry-After dates, its monotonic time for
   * latencies, its timer for each call's deadline (undici's own header and body timeouts
   * stay on Node's timers). @default the system clock
   */
  readonly clock?: Clock | undefined;
}

/** One device request for an HTTP route. */
export interface HttpCallRequest {
  /** The device (a `Principal` fits); `assetId` is sent when known. */
  readonly device: DeviceKey & { readonly assetId?: string | undefined };
  /** The device's MQTT topic, leading slash kept. */
  readonly topic: string;
  readonly payload: Buffer;
  /** The CoAP Content-Format of the payload, if the device gave one. */
  readonly contentFormat: number | undefined;
  /** W3C `traceparent` of the request's span; forwarded when well-formed. */
  readonly traceparent?: string | undefined;
  /** W3C `tracestate`; forwarded when well-formed. */
  readonly tracestate?: string | undefined;
}

const CHANGED: BridgeResponse = { status: 'changed' };
const GATEWAY_TIMEOUT: BridgeResponse = { status: 'gateway-timeout' };
const BAD_GATEWAY: BridgeResponse = { status: 'bad-gateway' };
const BAD_REQUEST: BridgeResponse = { status: 'bad-request' };

/** undici / socket error codes meaning "the backend could not be reached or went away". */
const CONNECT_CODES: ReadonlySet<string> = new Set([
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_DESTROYED',
]);
const TIMEOUT_CODES: ReadonlySet<string> = new Set([
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

interface Result {
  readonly response: BridgeResponse;
  readonly outcome: HttpOutcome;
  /** The HTTP status, when an answer came. */
  readonly status?: number;
}

function firstHeader(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function errorCode(err: unknown): string {
  if (typeof err === 'object' && err !== null) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return '';
}

export class HttpBackend {
  readonly #pools = new Map<string, Pool>();
  readonly #stats = new HttpStatsRecorder();
  readonly #timeoutMs: number;
  readonly #connections: number;
  readonly #maxConcurrency: number;
  readonly #unavailableMaxAge: number;
  readonly #maxRetryAfter: number;
  readonly #maxBody: number;
  readonly #keepAliveMs: number;
  readonly #clock: Clock;
  readonly #unavailable: BridgeResponse;
  #closed = false;
  readonly #PoolClass: typeof Pool;

  constructor(o: HttpBackendOptions) {
    this.#PoolClass = (createRequire(import.meta.url)('undici') as typeof Undici).Pool;
    this.#timeoutMs = o.timeoutMs;
    this.#connections = o.connections;
    this.#maxConcurrency = o.maxConcurrency;
    this.#unavailableMaxAge = o.unavailableMaxAge;
    this.#maxRetryAfter = o.maxRetryAfter ?? DEFAULT_MAX_RETRY_AFTER;
    this.#maxBody = o.maxResponseBody ?? DEFAULT_MAX_RESPONSE_BODY;
    this.#keepAliveMs = o.keepAliveTimeoutMs ?? 10_000;
    this.#clock = o.clock ?? systemClock;
    this.#unavailable = { status: 'unavailable', maxAge: o.unavailableMaxAge };
  }

  /** Counters (a snapshot). */
  stats(): HttpBackendStats {
    return this.#stats.snapshot(this.#pools.size);
  }

  /** Calls in flight now. */
  get inflight(): number {
    return this.#stats.inflight;
  }

  /**
   * Sends the device's payload to the route's URL and answers with the mapped outcome
   * (`./status.ts`); never throws.
   */
  async call(route: CompiledHttpRoute, req: HttpCallRequest): Promise<BridgeResponse> {
    const stats = this.#stats;
    if (this.#closed) {
      stats.count(route.label, 'connect-error');
      return this.#unavailable;
    }
    if (stats.inflight >= this.#maxConcurrency) {
      stats.count(route.label, 'overloaded');
      return this.#unavailable;
    }
    const path = route.renderPath(req.topic, req.device);
    if (path === undefined) {
      // a `.`/`..` level or key would lead out of the route's path: not sent (routes.ts)
      stats.count(route.label, 'bad-path');
      return BAD_REQUEST;
    }
    stats.inflight++;
    const started = this.#clock.now();
    // attributes are built only for a call that will be recorded
    const span = !isTraced()
      ? undefined
      : startChild(
          'http.request',
          {
            'http.request.method': route.method,
            'server.address': route.origin,
            'coap_edge.route': route.label,
          },
          SpanKind.CLIENT,
        );
    // the platform continues the trace from our client span
    const traced = span !== undefined ? { ...req, traceparent: traceparentOf(span) } : req;
    let result: Result;
    try {
      result = await this.#send(route, traced, path);
    } catch {
      // #send answers every failure itself; this is a last guard against a bug
      result = { response: BAD_GATEWAY, outcome: 'bad-response' };
    } finally {
      stats.inflight--;
    }
    stats.observe(this.#clock.now() - started);
    stats.count(route.label, result.outcome);
    if (span !== undefined) {
      if (result.status !== undefined)
        span.setAttribute('http.response.status_code', result.status);
      if (result.outcome === '2xx' || result.outcome === '4xx') span.end();
      else endWithError(span, result.outcome);
    }
    return result.response;
  }

  /**
   * Closes every pool at once, aborting calls still in flight (they answer 5.03): the
   * gateway calls this after its drain already gave requests their time.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
  }

  #pool(origin: string): Pool {
    let pool = this.#pools.get(origin);
    if (pool === undefined) {
      pool = new this.#PoolClass(origin, {
        connections: this.#connections,
        pipelining: 1,
        connectTimeout: this.#timeoutMs,
        keepAliveTimeout: this.#keepAliveMs,
        keepAliveMaxTimeout: Math.max(this.#keepAliveMs, 60_000),
      });
      this.#pools.set(origin, pool);
    }
    return pool;
  }

  #headers(route: CompiledHttpRoute, req: HttpCallRequest, path: string): Record<string, string> {
    const d = req.device;
    const headers: Record<string, string> = {
      'user-agent': 'coap-edge',
      [HEADER_CONTENT_TYPE]: contentTypeFor(req.contentFormat),
      ...route.renderHeaders(req.topic, d),
    };
    headers[HEADER_PRODUCT_KEY] = encodeHeaderValue(d.productKey);
    headers[HEADER_DEVICE_KEY] = encodeHeaderValue(d.deviceKey);
    if (d.assetId !== undefined && d.assetId !== '') {
      headers[HEADER_ASSET_ID] = encodeHeaderValue(d.assetId);
    }
    headers[HEADER_TOPIC] = encodeHeaderValue(req.topic);
    if (req.contentFormat !== undefined) headers[HEADER_CONTENT_FORMAT] = String(req.contentFormat);
    if (req.traceparent !== undefined) {
      if (isValidTraceparent(req.traceparent)) {
        headers[HEADER_TRACEPARENT] = req.traceparent;
        if (req.tracestate !== undefined) {
          if (isValidTracestate(req.tracestate)) headers[HEADER_TRACESTATE] = req.tracestate;
          else this.#stats.traceContextDropped++;
        }
      } else {
        this.#stats.traceContextDropped++;
      }
    }
    route.auth?.apply(headers, route.method, path, req.payload, this.#clock.wallNow());
    return headers;
  }

  async #send(route: CompiledHttpRoute, req: HttpCallRequest, path: string): Promise<Result> {
    const timeoutMs = route.timeoutMs ?? this.#timeoutMs;
    const headers = this.#headers(route, req, path);
    const abort = new AbortController();
    let timedOut = false;
    const timer = this.#clock.setTimeout(
      () => {
        timedOut = true;
        abort.abort();
      },
      timeoutMs,
      true,
    );
    try {
      // a call after close(): no pool is opened again once close() destroyed them
      if (this.#closed) return { response: this.#unavailable, outcome: 'connect-error' };
      const res = await this.#pool(route.origin).request({
        method: route.method,
        path,
        headers,
        body: req.payload,
        signal: abort.signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      const mapped = mapHttpStatus(res.statusCode, firstHeader(res.headers['retry-after']), {
        unavailableMaxAge: this.#unavailableMaxAge,
        maxRetryAfter: this.#maxRetryAfter,
        nowMs: this.#clock.wallNow(),
      });
      if (mapped.outcome !== '2xx') {
        // drain (so the connection can be reused) up to the cap; the body is not forwarded
        await res.body.dump({ limit: this.#maxBody }).catch(() => {});
        const response: BridgeResponse =
          mapped.maxAge === undefined
            ? { status: mapped.status }
            : { status: mapped.status, maxAge: mapped.maxAge };
        return { response, outcome: mapped.outcome, status: res.statusCode };
      }
      const declared = Number(firstHeader(res.headers['content-length']) ?? '0');
      if (declared > this.#maxBody) {
        res.body.destroy();
        return { response: BAD_GATEWAY, outcome: 'bad-response' };
      }
      const body = await readCapped(res.body, this.#maxBody);
      if (body === undefined) {
        res.body.destroy();
        return { response: BAD_GATEWAY, outcome: 'bad-response' };
      }
      if (body.length === 0) return { response: CHANGED, outcome: '2xx', status: res.statusCode };
      const contentFormat = contentFormatFor(firstHeader(res.headers['content-type']));
      return {
        response:
          contentFormat === undefined
            ? { status: 'changed', payload: body }
            : { status: 'changed', payload: body, contentFormat },
        outcome: '2xx',
        status: res.statusCode,
      };
    } catch (err: unknown) {
      if (timedOut) return { response: GATEWAY_TIMEOUT, outcome: 'timeout' };
      const code = errorCode(err);
      if (TIMEOUT_CODES.has(code)) return { response: GATEWAY_TIMEOUT, outcome: 'timeout' };
      if (CONNECT_CODES.has(code) || /^E[A-Z_]+$/.test(code)) {
        return { response: this.#unavailable, outcome: 'connect-error' };
      }
      return { response: BAD_GATEWAY, outcome: 'bad-response' };
    } finally {
      this.#clock.clearTimeout(timer);
    }
  }
}

/** The whole body, or undefined once it exceeds `limit` bytes. */
async function readCapped(
  body: AsyncIterable<unknown>,
  limit: number,
): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    size += buf.length;
    if (size > limit) return undefined;
    chunks.push(buf);
  }
  return Buffer.concat(chunks, size);
}
