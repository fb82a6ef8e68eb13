/**
 * Authentication of coap-edge to an HTTP route's backend (route `auth`). The secret is read
 * once at start-up (see `compileRoutes`) and kept in a private field: it is never logged,
 * serialized (`toJSON`), shown by `util.inspect` or put into an error message.
 *
 * ## `bearer`
 * `Authorization: Bearer <token>`, the token being the value of the environment variable
 * named by `tokenEnv`.
 *
 * ## `hmac`
 * Two headers on every request:
 * - `X-Timestamp: <ms>`: milliseconds since the Unix epoch as a decimal integer, e.g.
 *   `1700000000000`.
 * - `<header>: sha256=<hex>` (header `X-Signature` unless the route says otherwise), where
 *   `<hex>` is the lower-case hex HMAC-SHA256, keyed with the UTF-8 bytes of the secret (the
 *   value of the environment variable named by `secretEnv`), of the bytes
 *
 *   ```
 *   <METHOD> LF <request-target> LF <X-Timestamp value> LF <body>
 *   ```
 *
 *   - `<METHOD>`: `POST` or `PUT`, upper case;
 *   - `<request-target>`: the path and query exactly as sent on the request line (what a
 *     Node server sees as `req.url`), e.g. `/ingest/sys/pk/dk/thing/measurepoint/post?x=1`;
 *   - `<X-Timestamp value>`: the header's value as sent;
 *   - `LF` is one 0x0A byte; `<body>` the raw request body bytes (possibly empty), nothing
 *     after it.
 *
 * A platform verifies it by computing the same HMAC over what it received, comparing in
 * constant time, and refusing timestamps too far from its own clock (replay window).
 */
import { createHmac } from 'node:crypto';
import { HEADER_AUTHORIZATION, HEADER_TIMESTAMP } from './headers.js';

/**
 * `sha256=<hex HMAC-SHA256(secret, METHOD \n requestTarget \n timestamp \n body)>`: the value
 * of the signature header (module comment).
 */
export function hmacSignature(
  secret: string | Buffer,
  method: string,
  requestTarget: string,
  timestamp: string,
  body: Buffer,
): string {
  const mac = createHmac('sha256', secret);
  mac.update(`${method}\n${requestTarget}\n${timestamp}\n`, 'utf8');
  mac.update(body);
  return `sha256=${mac.digest('hex')}`;
}

/** How a route authenticates to its backend; the secret stays inside. */
export class BackendAuth {
  readonly type: 'bearer' | 'hmac';
  /** Lower-case name of the header carrying the token or signature. */
  readonly header: string;
  readonly #secret: string;
  readonly #bearer: string | undefined;

  private constructor(type: 'bearer' | 'hmac', header: string, secret: string) {
    this.type = type;
    this.header = header;
    this.#secret = secret;
    this.#bearer = type === 'bearer' ? `Bearer ${secret}` : undefined;
  }

  /** `Authorization: Bearer <token>`. */
  static bearer(token: string): BackendAuth {
    return new BackendAuth('bearer', HEADER_AUTHORIZATION, token);
  }

  /** HMAC-SHA256 signature in `header` plus `X-Timestamp` (module comment). */
  static hmac(secret: string, header: string): BackendAuth {
    return new BackendAuth('hmac', header.toLowerCase(), secret);
  }

  /** The header names this auth sets (lower case). */
  get headerNames(): readonly string[] {
    return this.type === 'bearer' ? [this.header] : [this.header, HEADER_TIMESTAMP];
  }

  /** Adds the auth headers for one request to `headers` (lower-case names). */
  apply(
    headers: Record<string, string>,
    method: string,
    requestTarget: string,
    body: Buffer,
    nowMs: number,
  ): void {
    if (this.#bearer !== undefined) {
      headers[this.header] = this.#bearer;
      return;
    }
    const timestamp = String(Math.floor(nowMs));
    headers[HEADER_TIMESTAMP] = timestamp;
    headers[this.header] = hmacSignature(this.#secret, method, requestTarget, timestamp, body);
  }

  /** What logs and config dumps may show: the kind and the header, never the secret. */
  toJSON(): { type: 'bearer' | 'hmac'; header: string } {
    return { type: this.type, header: this.header };
  }
}
