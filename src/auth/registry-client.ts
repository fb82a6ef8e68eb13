/**
 * The upstream device registry over HTTP (docs/registry-api.md): one undici `Pool` with
 * keep-alive, a deadline per request, responses validated with zod, and a circuit breaker.
 * undici is required by the constructor: a gateway without a registry never loads it (110
 * files, start-up CPU; docs/testing.md, "Suite time").
 *
 * Every failure is a {@link SecretSourceError}; its message names the request kind and the
 * status or error code, never a response body, a header or a secret.
 */
import { createRequire } from 'node:module';
import type * as Undici from 'undici';
import type { Pool } from 'undici';
import { z } from 'zod';
import { systemClock, type Clock } from '../time/clock.js';
import { CircuitBreaker } from './circuit-breaker.js';
import type { DeviceRecord, ProductRecord } from './devices-file.js';
import { assetIdSchema, deviceRecord, productRecord, secretSchema } from './records.js';
import { SecretSourceError } from './source.js';
import type { AuthStats } from './stats.js';

/** Largest response body read, in bytes; a larger one is a bad response. */
const MAX_REGISTRY_BODY = 16 * 1024;

const productBody = z.object({ productSecret: secretSchema, dynamicRegistration: z.boolean() });
const deviceBody = z.object({ deviceSecret: secretSchema, assetId: assetIdSchema.nullish() });
const activationBody = z.object({ deviceSecret: secretSchema, assetId: assetIdSchema });

export interface RegistryClientOptions {
  /** Base URL, `http(s)://host[:port][/base/path]`. */
  readonly url: string;
  /** Sent as `Authorization: Bearer <token>` when set. */
  readonly token?: string | undefined;
  /** Deadline of one request (connect, headers and body) in ms. */
  readonly timeoutMs: number;
  /** Most connections kept to the registry. @default 32 */
  readonly connections?: number | undefined;
  /** Consecutive failures that open the circuit breaker; 0 disables it. @default 5 */
  readonly breakerThreshold?: number | undefined;
  /** How long an open breaker refuses requests, in ms. @default 5000 */
  readonly breakerCooldownMs?: number | undefined;
  readonly stats: AuthStats;
  /**
   * Time (the breaker's cool-down) and the request deadline's timer (which holds the process
   * open, as a request does).
   * @default systemClock
   */
  readonly clock?: Clock | undefined;
}

/** What `POST …/activate` said. */
export type RegistryActivation =
  | { readonly kind: 'activated'; readonly deviceSecret: string; readonly assetId: string }
  | { readonly kind: 'unknown-product' }
  | { readonly kind: 'dynamic-registration-disabled' }
  /** 409: activated before; the secret is read with `GET /devices/{pk}/{dk}`. */
  | { readonly kind: 'already-activated' };

/** What the chain and the activator use of the registry (tests may pass a fake). */
export type Registry = Pick<RegistryClient, 'product' | 'device' | 'activate'>;

type Kind = 'product' | 'device' | 'activate';

interface Answer {
  readonly status: number;
  readonly body: unknown;
}

export class RegistryClient {
  readonly #pool: Pool;
  readonly #basePath: string;
  readonly #headers: Record<string, string>;
  readonly #timeoutMs: number;
  readonly #breaker: CircuitBreaker;
  readonly #stats: AuthStats;
  readonly #clock: Clock;

  constructor(o: RegistryClientOptions) {
    const url = new URL(o.url);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new TypeError('registry URL must be http: or https:');
    }
    this.#basePath = url.pathname.replace(/\/+$/, '');
    this.#timeoutMs = o.timeoutMs;
    this.#stats = o.stats;
    const clock = (this.#clock = o.clock ?? systemClock);
    this.#headers = { accept: 'application/json' };
    if (o.token !== undefined) this.#headers.authorization = `Bearer ${o.token}`;
    const options: Pool.Options = {
      connections: o.connections ?? 32,
      connectTimeout: o.timeoutMs,
      headersTimeout: o.timeoutMs,
      bodyTimeout: o.timeoutMs,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 120_000,
      pipelining: 1,
    };
    const { Pool: PoolClass } = createRequire(import.meta.url)('undici') as typeof Undici;
    this.#pool = new PoolClass(url.origin, options);
    this.#breaker = new CircuitBreaker({
      threshold: o.breakerThreshold ?? 5,
      cooldownMs: o.breakerCooldownMs ?? 5_000,
      now: () => clock.now(),
      onOpen: () => this.#stats.registryCircuitOpened++,
    });
  }

  /** The circuit breaker's state (for health checks and tests). */
  get breakerState(): 'closed' | 'open' | 'half-open' {
    return this.#breaker.state;
  }

  /** `GET /products/{pk}`: the product, or `undefined` on 404. */
  async product(productKey: string): Promise<ProductRecord | undefined> {
    const a = await this.#call('product', 'GET', `/products/${enc(productKey)}`);
    if (a.status === 404) return undefined;
    const body = parseBody('product', productBody, a.body);
    return productRecord(productKey, body.productSecret, body.dynamicRegistration);
  }

  /** `GET /devices/{pk}/{dk}`: the device, or `undefined` on 404. */
  async device(productKey: string, deviceKey: string): Promise<DeviceRecord | undefined> {
    const a = await this.#call('device', 'GET', `/devices/${enc(productKey)}/${enc(deviceKey)}`);
    if (a.status === 404) return undefined;
    const body = parseBody('device', deviceBody, a.body);
    return deviceRecord(productKey, deviceKey, body.deviceSecret, body.assetId ?? undefined);
  }

  /** `POST /devices/{pk}/{dk}/activate`. Never retried: upstream activation is one-shot. */
  async activate(productKey: string, deviceKey: string): Promise<RegistryActivation> {
    const path = `/devices/${enc(productKey)}/${enc(deviceKey)}/activate`;
    const a = await this.#call('activate', 'POST', path);
    switch (a.status) {
      case 404:
        return { kind: 'unknown-product' };
      case 403:
        return { kind: 'dynamic-registration-disabled' };
      case 409:
        return { kind: 'already-activated' };
      default: {
        const body = parseBody('activate', activationBody, a.body);
        return { kind: 'activated', deviceSecret: body.deviceSecret, assetId: body.assetId };
      }
    }
  }

  /** Closes idle connections and waits for requests in flight (each bounded by the timeout). */
  async close(): Promise<void> {
    await this.#pool.close();
  }

  /**
   * One request under the breaker and the deadline. Resolves with 2xx (parsed JSON body) or
   * with an "expected" status for this kind (404; 403 and 409 for activate, body discarded).
   */
  async #call(kind: Kind, method: 'GET' | 'POST', path: string): Promise<Answer> {
    if (!this.#breaker.allow()) {
      this.#stats.registryRejected++;
      throw new SecretSourceError('SOURCE_CIRCUIT_OPEN', `registry ${kind}: circuit open`);
    }
    try {
      const a = await this.#request(kind, method, path);
      this.#breaker.success();
      return a;
    } catch (err: unknown) {
      this.#breaker.failure();
      this.#stats.registryFailures++;
      throw err;
    }
  }

  async #request(kind: Kind, method: 'GET' | 'POST', path: string): Promise<Answer> {
    const abort = new AbortController();
    let timedOut = false;
    const timer = this.#clock.setTimeout(
      () => {
        timedOut = true;
        abort.abort();
      },
      this.#timeoutMs,
      true,
    );
    try {
      const res = await this.#pool.request({
        method,
        path: this.#basePath + path,
        headers: this.#headers,
        signal: abort.signal,
      });
      const status = res.statusCode;
      const expected =
        status === 404 || (kind === 'activate' && (status === 403 || status === 409));
      if (expected || status < 200 || status > 299) {
        await res.body.dump({ limit: MAX_REGISTRY_BODY }).catch(() => {});
        if (expected) return { status, body: undefined };
        throw new SecretSourceError('SOURCE_UNAVAILABLE', `registry ${kind}: status ${status}`);
      }
      const text = await readCapped(kind, res.body);
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        throw new SecretSourceError('SOURCE_BAD_RESPONSE', `registry ${kind}: body is not JSON`);
      }
      return { status, body };
    } catch (err: unknown) {
      if (timedOut) {
        throw new SecretSourceError(
          'SOURCE_TIMEOUT',
          `registry ${kind}: no answer within ${this.#timeoutMs} ms`,
        );
      }
      if (err instanceof SecretSourceError) throw err;
      throw new SecretSourceError('SOURCE_UNAVAILABLE', `registry ${kind}: ${errorCode(err)}`);
    } finally {
      this.#clock.clearTimeout(timer);
    }
  }
}

/** A path segment: every character outside the unreserved set is percent-encoded. */
function enc(segment: string): string {
  return encodeURIComponent(segment).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

async function readCapped(kind: Kind, body: AsyncIterable<unknown>): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    size += buf.length;
    if (size > MAX_REGISTRY_BODY) {
      throw new SecretSourceError('SOURCE_BAD_RESPONSE', `registry ${kind}: body too large`);
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks, size).toString('utf8');
}

function parseBody<T>(kind: Kind, schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    // zod issues may quote values: name only the first field
    const field = parsed.error.issues[0]?.path.map(String).join('.') ?? '';
    throw new SecretSourceError(
      'SOURCE_BAD_RESPONSE',
      `registry ${kind}: unexpected body${field === '' ? '' : ` (field ${field})`}`,
    );
  }
  return parsed.data;
}

/** The error's `code` (e.g. `ECONNREFUSED`, `UND_ERR_SOCKET`) or its class name. */
function errorCode(err: unknown): string {
  if (typeof err === 'object' && err !== null) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && /^[A-Z0-9_]{1,40}$/.test(code)) return code;
    const name = (err as { name?: unknown }).name;
    if (typeof name === 'string' && /^[A-Za-z]{1,40}$/.test(name)) return name;
  }
  return 'error';
}
