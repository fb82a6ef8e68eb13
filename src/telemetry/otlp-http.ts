/**
 * The OTLP/HTTP transport of the protobuf exporter (otlp-proto.ts) when the body is not
 * compressed: one `http.request` ended with the body, answered and retried as the SDK's
 * transport does (otlp-exporter-base's `http-transport-utils` and `retrying-transport`: the
 * same status classes, `Retry-After`, network errors, timeout, five retries with the same
 * back-off and jitter, within the export's deadline).
 *
 * Why not the SDK's: it sends every body through a new `stream.Readable` piped into the
 * request. At one trace an export (a pod at 1 % and a few datagrams a second), that pipe's
 * listeners, `nextTick`s and stream reads are the largest part of the export's own work, cold
 * code; without them an export of one trace took ~0.2 M fewer instructions under callgrind
 * (bench/history/2026-12-08-trace-cost.md, which also says what the end-to-end runs could and
 * could not resolve). Ending the request with the body
 * sends the same bytes with a `Content-Length` instead of chunked encoding. With gzip the
 * SDK's transport is kept (its compression stream).
 */
import {
  request as httpRequest,
  type Agent,
  type ClientRequest,
  type IncomingMessage,
} from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { diag } from '@opentelemetry/api';
import {
  OTLPExporterError,
  type ExportResponse,
  type IExporterTransport,
} from '@opentelemetry/otlp-exporter-base';

/** What the transport takes of the SDK's resolved http configuration. */
export interface OtlpPostTarget {
  readonly url: string;
  readonly headers: () => Promise<Record<string, string>>;
  readonly agentFactory: (protocol: string) => Agent | Promise<Agent>;
  readonly userAgent?: string | undefined;
}

/** The SDK transport's `User-Agent` (its package's version, which the package does not export). */
function defaultUserAgent(): string {
  const require = createRequire(import.meta.url);
  const base = dirname(require.resolve('@opentelemetry/otlp-exporter-base'));
  const { VERSION } = require(join(base, 'version.js')) as { VERSION: string };
  return `OTel-OTLP-Exporter-JavaScript/${VERSION}`;
}

const RETRYABLE_NETWORK_ERRORS = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ENETUNREACH',
  'EHOSTUNREACH',
]);

function retryableStatus(code: number): boolean {
  return code === 429 || code === 502 || code === 503 || code === 504;
}

/** `Retry-After` in ms, as the SDK reads it (-1 for a non-positive number of seconds). */
function retryAfterMs(value: string | undefined): number | undefined {
  if (value == null) return undefined;
  const seconds = Number.parseInt(value, 10);
  if (Number.isInteger(seconds)) return seconds > 0 ? seconds * 1000 : -1;
  const delay = new Date(value).getTime() - Date.now();
  return delay >= 0 ? delay : 0;
}

function answer(res: IncomingMessage, chunks: Buffer[]): ExportResponse {
  const status = res.statusCode;
  if (status !== undefined && status !== 0 && status < 299)
    return { status: 'success', data: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks) };
  if (status !== undefined && status !== 0 && retryableStatus(status)) {
    const header = res.headers['retry-after'];
    return { status: 'retryable', retryInMillis: retryAfterMs(header) };
  }
  return {
    status: 'failure',
    error: new OTLPExporterError(res.statusMessage, status, Buffer.concat(chunks).toString()),
  };
}

/** One POST of `data`; resolves with the first outcome (an answer, a timeout or an error). */
function post(
  send: typeof httpRequest,
  options: object,
  data: Uint8Array,
  timeoutMillis: number,
  done: (r: ExportResponse) => void,
): void {
  const req: ClientRequest = send(options, (res) => {
    const chunks: Buffer[] = [];
    res.on('data', (chunk: Buffer) => chunks.push(chunk));
    res.on('end', () => done(answer(res, chunks)));
  });
  req.setTimeout(timeoutMillis, () => {
    req.destroy();
    done({ status: 'retryable', error: new Error('Request timed out') });
  });
  req.on('error', (error: NodeJS.ErrnoException) => {
    const retryable = typeof error.code === 'string' && RETRYABLE_NETWORK_ERRORS.has(error.code);
    done(retryable ? { status: 'retryable', error } : { status: 'failure', error });
  });
  req.end(data);
}

/** POSTs of uncompressed bodies to one OTLP/HTTP URL. */
class PostTransport implements IExporterTransport {
  private readonly request: typeof httpRequest;
  private readonly protocol: string;
  private readonly hostname: string;
  private readonly port: string;
  private readonly path: string;
  private readonly userAgent: string;
  private agent: Promise<Agent> | undefined;

  constructor(private readonly target: OtlpPostTarget) {
    const url = new URL(target.url);
    this.protocol = url.protocol;
    this.request = url.protocol === 'http:' ? httpRequest : httpsRequest;
    this.hostname = url.hostname;
    this.port = url.port;
    this.path = url.pathname;
    const base = defaultUserAgent();
    this.userAgent = target.userAgent ? `${target.userAgent} ${base}` : base;
  }

  async once(data: Uint8Array, timeoutMillis: number): Promise<ExportResponse> {
    this.agent ??= Promise.resolve(this.target.agentFactory(this.protocol));
    const agent = await this.agent;
    const headers = await this.target.headers();
    headers['User-Agent'] = this.userAgent;
    const options = {
      hostname: this.hostname,
      port: this.port,
      path: this.path,
      method: 'POST',
      headers,
      agent,
    };
    return new Promise((resolve) => post(this.request, options, data, timeoutMillis, resolve));
  }

  async sendAfter(data: Uint8Array, timeoutMillis: number, ms: number): Promise<ExportResponse> {
    await new Promise((r) => setTimeout(r, ms));
    return this.once(data, timeoutMillis);
  }

  /** The SDK's `RetryingTransport.send` over {@link once}. */
  async send(data: Uint8Array, timeoutMillis: number): Promise<ExportResponse> {
    let attempts = MAX_ATTEMPTS;
    let nextBackoff = INITIAL_BACKOFF;
    const deadline = Date.now() + timeoutMillis;
    let result = await this.once(data, timeoutMillis);
    while (result.status === 'retryable' && attempts > 0) {
      attempts--;
      const jitter = Math.random() * (2 * JITTER) - JITTER;
      const backoff = Math.max(Math.min(nextBackoff * (1 + jitter), MAX_BACKOFF), 0);
      nextBackoff = nextBackoff * BACKOFF_MULTIPLIER;
      const retryInMillis = result.retryInMillis ?? backoff;
      const remaining = deadline - Date.now();
      if (retryInMillis > remaining) {
        diag.info(
          `Export retry time ${Math.round(retryInMillis)}ms exceeds remaining timeout ${Math.round(remaining)}ms, not retrying further.`,
        );
        return result;
      }
      result = await this.sendAfter(data, remaining, retryInMillis);
    }
    if (result.status === 'retryable')
      diag.info(`Export failed after maximum retry attempts (${MAX_ATTEMPTS}).`);
    else if (result.status === 'failure')
      diag.info(`Export failed with non-retryable error: ${String(result.error)}`);
    return result;
  }

  shutdown(): void {
    // nothing to close, as the SDK's http transport
  }
}

const MAX_ATTEMPTS = 5;
const INITIAL_BACKOFF = 1000;
const MAX_BACKOFF = 5000;
const BACKOFF_MULTIPLIER = 1.5;
const JITTER = 0.2;

/** The transport for uncompressed OTLP/HTTP bodies to `target`. */
export function createPostTransport(target: OtlpPostTarget): IExporterTransport {
  return new PostTransport(target);
}
