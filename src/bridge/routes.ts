/**
 * Routing rules (`routes` setting): which backend a device request goes to, chosen by the
 * device's EnOS MQTT topic. The list is compiled once at start-up ({@link compileRoutes});
 * {@link RouteTable.match} then runs per request without building any regex or template.
 *
 * ## Patterns (`match`)
 * An MQTT topic filter over the device's topic, which keeps its leading slash
 * (`/sys/{pk}/{dk}/thing/measurepoint/post`). It starts with `/` (or is `#` alone) and its
 * levels are:
 * - a literal level, matched exactly (it must be a valid EnOS key: non-empty, no white space,
 *   control characters, `,`, `+`, `#`);
 * - `{pk}` / `{dk}`: one level that must equal the requesting device's productKey / deviceKey;
 * - `+`: any one level;
 * - `#`: the last level only; any number of levels, none included (MQTT semantics: `/sys/#`
 *   matches `/sys` too).
 *
 * Routes are tried in order; the first match wins. No match means the default EnOS mapping:
 * MQTT, same topic.
 *
 * ## Templates (`topic`, `url`, header values)
 * Text with the placeholders `{pk}`, `{dk}` and `{topic}` (the device's MQTT topic) and no
 * other `{` or `}`. How values are inserted:
 * - MQTT `topic`: as they are (a rendered topic has no `+`, `#` or NUL: keys cannot hold them
 *   and the template's literal text is checked);
 * - `url`: `{pk}`/`{dk}` percent-encoded as one path segment, `{topic}` encoded per level with
 *   `/` kept; the scheme, host and port must be literal (one connection pool per origin). A
 *   rendered path must not hold a `.` or `..` segment (the device's topic levels and keys may
 *   be `.` or `..`, which the encoding leaves alone as unreserved characters, and which a
 *   server or proxy resolves per RFC 3986 §5.2.4, leaving the route's path); such a request is
 *   not sent and answers 4.00. A `/` cannot come from a device value (keys and levels never
 *   hold one) and `%` is encoded as `%25`, so `%2F` and `%2e` reach the backend as `%252F` and
 *   `%252e`, never as a separator or a dot;
 * - header values: percent-encoded outside printable ASCII (`./http/headers.ts`).
 *
 * ## Errors
 * Every problem is a {@link RouteConfigError} naming the route and the field:
 * `routes[2] ("telemetry"): url: unknown placeholder {foo}`. Secrets (auth environment
 * variables) are read here, once, and never appear in a message.
 */
import { CoapEdgeError } from '../errors/index.js';
import { safeEcho, validateKey } from '../enos/index.js';
import { BackendAuth } from './http/auth.js';
import {
  HEADER_TIMESTAMP,
  RESERVED_HEADERS,
  encodeHeaderValue,
  encodeUrlSegment,
  encodeUrlTopic,
  isValidHeaderName,
} from './http/headers.js';
import type { DeviceKey } from './types.js';

/**
 * One route as the configuration gives it (validated there: the settings schema's route
 * entries are assignable to this). Declared here so the bridge does not depend on the
 * configuration layer.
 */
export type RouteConfig =
  | {
      readonly name?: string | undefined;
      /** MQTT topic pattern: literal levels, `{pk}`, `{dk}`, `+` and a final `#`. */
      readonly match: string;
      readonly backend: 'mqtt';
      /** Topic template (`{pk}`, `{dk}`, `{topic}`); default: the device's own topic. */
      readonly topic?: string | undefined;
    }
  | {
      readonly name?: string | undefined;
      readonly match: string;
      readonly backend: 'http';
      readonly method: 'POST' | 'PUT';
      /** URL template (`{pk}`, `{dk}`, `{topic}`). */
      readonly url: string;
      readonly headers: Readonly<Record<string, string>>;
      readonly auth?:
        | { readonly type: 'bearer'; readonly tokenEnv: string }
        | { readonly type: 'hmac'; readonly secretEnv: string; readonly header: string }
        | undefined;
      /** Request timeout in ms (default: the HTTP backend's). */
      readonly timeoutMs?: number | undefined;
    };

/** The label of a route in messages and stats: `routes[2] ("telemetry")` or `routes[2]`. */
function describeRoute(index: number, name: string | undefined): string {
  return name === undefined ? `routes[${index}]` : `routes[${index}] (${safeEcho(name)})`;
}

/** A route in the configuration cannot be used; start-up stops (exit code 2). */
export class RouteConfigError extends CoapEdgeError {
  readonly code = 'ROUTE_CONFIG_INVALID';

  /**
   * @param index position in the `routes` list
   * @param routeName the route's `name`, when it has one
   * @param field the offending field, e.g. `url`, `match`, `headers.X-Api`, `auth.tokenEnv`
   * @param problem what is wrong (never a secret)
   */
  constructor(
    readonly index: number,
    readonly routeName: string | undefined,
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${describeRoute(index, routeName)}: ${field}: ${problem}`);
    this.name = 'RouteConfigError';
  }
}

// --- templates ---------------------------------------------------------------------------

/** Placeholder ids in compiled templates. */
const PK = 0;
const DK = 1;
const TOPIC = 2;
type Placeholder = typeof PK | typeof DK | typeof TOPIC;
type Part = string | Placeholder;

const PLACEHOLDERS: ReadonlyMap<string, Placeholder> = new Map([
  ['pk', PK],
  ['dk', DK],
  ['topic', TOPIC],
]);

/** A problem found while compiling one field; turned into a RouteConfigError by the caller. */
class FieldProblem extends CoapEdgeError {
  readonly code = 'ROUTE_FIELD_INVALID';
}

function placeholderName(name: string): string {
  return /^[A-Za-z0-9_.-]{0,40}$/.test(name) ? `{${name}}` : safeEcho(`{${name}}`);
}

/** Splits a template into literal text and placeholders. */
function parseTemplate(template: string): Part[] {
  const parts: Part[] = [];
  let pos = 0;
  while (pos < template.length) {
    const open = template.indexOf('{', pos);
    const close = template.indexOf('}', pos);
    if (close >= 0 && (open < 0 || close < open)) throw new FieldProblem("unmatched '}'");
    if (open < 0) {
      parts.push(template.slice(pos));
      break;
    }
    if (open > pos) parts.push(template.slice(pos, open));
    const end = template.indexOf('}', open + 1);
    const nextOpen = template.indexOf('{', open + 1);
    if (end < 0 || (nextOpen >= 0 && nextOpen < end)) throw new FieldProblem("unclosed '{'");
    const name = template.slice(open + 1, end);
    const p = PLACEHOLDERS.get(name);
    if (p === undefined) throw new FieldProblem(`unknown placeholder ${placeholderName(name)}`);
    parts.push(p);
    pos = end + 1;
  }
  return parts;
}

type Encoder = (value: string) => string;
const asIs: Encoder = (v) => v;

/** A compiled template: literal parts and placeholders, each with its encoder. */
class Template {
  constructor(
    private readonly parts: readonly Part[],
    private readonly encodeKey: Encoder,
    private readonly encodeTopic: Encoder,
  ) {}

  render(topic: string, device: DeviceKey): string {
    let out = '';
    for (const p of this.parts) {
      if (typeof p === 'string') out += p;
      else if (p === PK) out += this.encodeKey(device.productKey);
      else if (p === DK) out += this.encodeKey(device.deviceKey);
      else out += this.encodeTopic(topic);
    }
    return out;
  }

  /** Literal text only (no placeholders). */
  get literal(): string | undefined {
    return this.parts.every((p) => typeof p === 'string') ? this.parts.join('') : undefined;
  }
}

// --- patterns ----------------------------------------------------------------------------

const LIT = 0;
const LEVEL_PK = 1;
const LEVEL_DK = 2;
const PLUS = 3;

/** A compiled topic filter: one kind and one literal per level before an optional `#`. */
class Pattern {
  private constructor(
    private readonly kinds: Uint8Array,
    private readonly literals: readonly string[],
    /** Ends in `#`. */
    private readonly multi: boolean,
  ) {}

  static compile(match: string): Pattern {
    if (match !== '#' && !match.startsWith('/')) {
      throw new FieldProblem(
        "must start with '/' (EnOS topics keep their leading slash) or be '#'",
      );
    }
    const levels = match.split('/');
    const kinds: number[] = [];
    const literals: string[] = [];
    let multi = false;
    for (let i = 0; i < levels.length; i++) {
      const level = levels[i] ?? '';
      if (level === '#') {
        if (i !== levels.length - 1) throw new FieldProblem("'#' must be the last level");
        multi = true;
        break;
      }
      let kind = LIT;
      if (level === '+') kind = PLUS;
      else if (level === '{pk}') kind = LEVEL_PK;
      else if (level === '{dk}') kind = LEVEL_DK;
      else if (i === 0) {
        // the empty level before the leading slash
      } else if (level.includes('#')) {
        throw new FieldProblem(`'#' must be a whole level (in ${safeEcho(level)})`);
      } else if (level.includes('+')) {
        throw new FieldProblem(`'+' must be a whole level (in ${safeEcho(level)})`);
      } else if (level.includes('{') || level.includes('}')) {
        const inner = /\{([^{}]*)\}/.exec(level)?.[1];
        if (inner !== undefined && inner !== 'pk' && inner !== 'dk') {
          throw new FieldProblem(
            `unknown placeholder ${placeholderName(inner)} (match takes {pk}, {dk}, + and #)`,
          );
        }
        throw new FieldProblem(`placeholders must be whole levels (in ${safeEcho(level)})`);
      } else if (level === '') {
        throw new FieldProblem('empty level');
      } else if (validateKey(level) !== undefined) {
        throw new FieldProblem(`level ${safeEcho(level)} can never match a device topic`);
      }
      kinds.push(kind);
      literals.push(kind === LIT ? level : '');
    }
    return new Pattern(Uint8Array.from(kinds), literals, multi);
  }

  /** `levels`: the topic split at `/`. */
  matches(levels: readonly string[], device: DeviceKey): boolean {
    const n = this.kinds.length;
    if (this.multi ? levels.length < n : levels.length !== n) return false;
    for (let i = 0; i < n; i++) {
      const level = levels[i];
      switch (this.kinds[i]) {
        case LIT:
          if (level !== this.literals[i]) return false;
          break;
        case LEVEL_PK:
          if (level !== device.productKey) return false;
          break;
        case LEVEL_DK:
          if (level !== device.deviceKey) return false;
          break;
        default: // PLUS
          break;
      }
    }
    return true;
  }
}

// --- compiled routes ---------------------------------------------------------------------

interface RouteBase {
  /** Position in the `routes` list. */
  readonly index: number;
  readonly name: string | undefined;
  /** `name`, else `routes[<index>]`: the route's key in stats and logs. */
  readonly label: string;
  /** The `match` pattern as configured. */
  readonly match: string;
}

/** A route to an MQTT topic. */
export class CompiledMqttRoute implements RouteBase {
  readonly backend = 'mqtt' as const;
  readonly label: string;

  /** @internal built by {@link compileRoutes} */
  constructor(
    readonly index: number,
    readonly name: string | undefined,
    readonly match: string,
    private readonly topicTemplate: Template | undefined,
  ) {
    this.label = name ?? `routes[${index}]`;
  }

  /** The MQTT topic to publish to: the route's `topic` template, else the device's topic. */
  renderTopic(topic: string, device: DeviceKey): string {
    return this.topicTemplate === undefined ? topic : this.topicTemplate.render(topic, device);
  }
}

/** A route to an HTTP endpoint. */
export class CompiledHttpRoute implements RouteBase {
  readonly backend = 'http' as const;
  readonly label: string;

  /** @internal built by {@link compileRoutes} */
  constructor(
    readonly index: number,
    readonly name: string | undefined,
    readonly match: string,
    readonly method: 'POST' | 'PUT',
    /** `scheme://host[:port]`: the connection pool's key. */
    readonly origin: string,
    private readonly pathTemplate: Template,
    private readonly headerTemplates: readonly (readonly [string, Template])[],
    /** Route timeout in ms; undefined: the backend's default (`httpTimeoutMs`). */
    readonly timeoutMs: number | undefined,
    readonly auth: BackendAuth | undefined,
  ) {
    this.label = name ?? `routes[${index}]`;
  }

  /**
   * The request target (path and query) for a device request, e.g. `/in/sys/pk/dk/x?a=1`;
   * undefined when the device's values would put a dot segment into the path.
   */
  renderPath(topic: string, device: DeviceKey): string | undefined {
    const path = this.pathTemplate.render(topic, device);
    return hasDotSegment(path) ? undefined : path;
  }

  /** The full URL for a device request; undefined as for {@link renderPath}. */
  renderUrl(topic: string, device: DeviceKey): string | undefined {
    const path = this.renderPath(topic, device);
    return path === undefined ? undefined : this.origin + path;
  }

  /** The route's own headers, rendered; names in lower case. */
  renderHeaders(topic: string, device: DeviceKey): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [name, t] of this.headerTemplates) out[name] = t.render(topic, device);
    return out;
  }
}

export type CompiledRoute = CompiledMqttRoute | CompiledHttpRoute;

/** The compiled `routes` list. */
export class RouteTable {
  /** @internal built by {@link compileRoutes} */
  constructor(
    readonly routes: readonly CompiledRoute[],
    private readonly patterns: readonly Pattern[],
  ) {}

  /** True when no route is configured (every topic takes the default EnOS mapping). */
  get empty(): boolean {
    return this.routes.length === 0;
  }

  /** True when some route goes to HTTP (the gateway needs an HTTP backend). */
  get hasHttp(): boolean {
    return this.routes.some((r) => r.backend === 'http');
  }

  /**
   * The first route whose pattern matches the device's MQTT topic (leading slash kept), or
   * undefined: the default EnOS mapping (MQTT, same topic).
   */
  match(topic: string, device: DeviceKey): CompiledRoute | undefined {
    if (this.patterns.length === 0) return undefined;
    const levels = topic.split('/');
    for (let i = 0; i < this.patterns.length; i++) {
      if (this.patterns[i]?.matches(levels, device) === true) return this.routes[i];
    }
    return undefined;
  }
}

// --- compiling ---------------------------------------------------------------------------

export interface CompileRoutesOptions {
  /** Where auth secrets are read from; default `process.env`. Read once, here. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/**
 * A `.` or `..` segment in the path part (before `?`): RFC 3986 §5.2.4 removes or resolves it,
 * and the WHATWG URL parser also reads `%2e` as a dot there.
 */
const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|\?|$)/i;

function hasDotSegment(target: string): boolean {
  const q = target.indexOf('?');
  return DOT_SEGMENT.test(q < 0 ? target : target.slice(0, q));
}

/** Characters allowed literally in a URL path and query (RFC 3986 pchar, `/`, `?`, `%XX`). */
const URL_LITERAL = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$/;
/** Characters allowed literally in a header value template: printable ASCII, space, tab. */
const HEADER_LITERAL = /^[\t\x20-\x7e]*$/;

const SAMPLES: readonly DeviceKey[] = [
  { productKey: 'pkA', deviceKey: 'dkA' },
  { productKey: 'pkB', deviceKey: 'dkB' },
];

function compileTopic(template: string): Template {
  const parts = parseTemplate(template);
  for (const p of parts) {
    if (typeof p === 'string' && (p.includes('+') || p.includes('#') || p.includes('\0'))) {
      throw new FieldProblem('must not contain +, # or NUL (an MQTT topic to publish to)');
    }
  }
  return new Template(parts, asIs, asIs);
}

function compileUrl(template: string): { origin: string; path: Template } {
  const parts = parseTemplate(template);
  const first = parts[0];
  if (typeof first !== 'string') {
    throw new FieldProblem('placeholders must not be in the scheme, host or port');
  }
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(first)?.[1]?.toLowerCase();
  if (scheme !== 'http' && scheme !== 'https') throw new FieldProblem('not an http(s) URL');
  const authority = /^[A-Za-z]+:\/\/[^/?#]*/.exec(first)?.[0] ?? '';
  const rest = first.slice(authority.length);
  const next = parts[1];
  if (rest === '' && (next === PK || next === DK)) {
    throw new FieldProblem('placeholders must not be in the scheme, host or port');
  }
  let url: URL;
  try {
    url = new URL(`${authority}/`);
  } catch {
    throw new FieldProblem('not an http(s) URL');
  }
  if (url.hostname === '') throw new FieldProblem('not an http(s) URL');
  if (url.username !== '' || url.password !== '') {
    throw new FieldProblem('must not hold credentials (use auth)');
  }
  const pathParts: Part[] = rest === '' ? parts.slice(1) : [rest, ...parts.slice(1)];
  for (const p of pathParts) {
    if (typeof p !== 'string') continue;
    if (p.includes('#')) throw new FieldProblem('must not have a fragment (#)');
    if (!URL_LITERAL.test(p)) {
      throw new FieldProblem('has characters not allowed in a URL (percent-encode them)');
    }
  }
  // `http://host{topic}` is fine (the topic starts with '/'); otherwise make the path absolute.
  const head = pathParts[0];
  if (head === undefined) pathParts.push('/');
  else if (typeof head === 'string') {
    if (!head.startsWith('/')) pathParts[0] = `/${head}`;
  } else if (head !== TOPIC) pathParts.unshift('/');
  const path = new Template(pathParts, encodeUrlSegment, encodeUrlTopic);
  for (const s of SAMPLES) {
    const target = path.render(`/sys/${s.productKey}/${s.deviceKey}/x`, s);
    if (!URL.canParse(url.origin + target)) throw new FieldProblem('not an http(s) URL');
    if (hasDotSegment(target)) throw new FieldProblem("must not have '.' or '..' path segments");
  }
  return { origin: url.origin, path };
}

function compileHeaderValue(template: string): Template {
  const parts = parseTemplate(template);
  for (const p of parts) {
    if (typeof p === 'string' && !HEADER_LITERAL.test(p)) {
      throw new FieldProblem('has characters not allowed in a header value');
    }
  }
  return new Template(parts, encodeHeaderValue, encodeHeaderValue);
}

/** A value usable in a header: visible ASCII (and inner spaces), no CR/LF/NUL. */
function headerSafeSecret(value: string): boolean {
  return /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(value);
}

type Env = Readonly<Record<string, string | undefined>>;

function readSecret(env: Env, variable: string, forHeader: boolean): string {
  const value = env[variable];
  if (value === undefined || value === '') {
    throw new FieldProblem(`environment variable ${safeEchoName(variable)} is not set`);
  }
  if (forHeader && !headerSafeSecret(value)) {
    throw new FieldProblem(
      `environment variable ${safeEchoName(variable)} holds characters not allowed in a header`,
    );
  }
  return value;
}

function safeEchoName(variable: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(variable) ? variable : safeEcho(variable);
}

function compileHttp(
  r: Extract<RouteConfig, { backend: 'http' }>,
  index: number,
  env: Env,
  fail: (field: string, problem: string) => never,
): CompiledHttpRoute {
  const at = <T>(field: string, f: () => T): T => {
    try {
      return f();
    } catch (err) {
      if (err instanceof FieldProblem) fail(field, err.message);
      throw err;
    }
  };
  if (r.method !== 'POST' && r.method !== 'PUT') fail('method', 'must be POST or PUT');
  if (r.timeoutMs !== undefined && (!Number.isInteger(r.timeoutMs) || r.timeoutMs < 1)) {
    fail('timeoutMs', 'must be a positive integer (ms)');
  }
  const { origin, path } = at('url', () => compileUrl(r.url));

  let auth: BackendAuth | undefined;
  if (r.auth?.type === 'bearer') {
    const tokenEnv = r.auth.tokenEnv;
    auth = BackendAuth.bearer(at('auth.tokenEnv', () => readSecret(env, tokenEnv, true)));
  } else if (r.auth?.type === 'hmac') {
    const a = r.auth;
    if (!isValidHeaderName(a.header)) fail('auth.header', 'not a valid header name');
    const lower = a.header.toLowerCase();
    if (RESERVED_HEADERS.has(lower) || lower === HEADER_TIMESTAMP || lower === 'content-type') {
      fail('auth.header', `${a.header} is set by coap-edge itself`);
    }
    const secret = at('auth.secretEnv', () => readSecret(env, a.secretEnv, false));
    auth = BackendAuth.hmac(secret, a.header);
  } else if (r.auth !== undefined) {
    fail('auth.type', 'must be bearer or hmac');
  }

  const authHeaders = new Set(auth?.headerNames ?? []);
  const seen = new Map<string, string>();
  const headers: (readonly [string, Template])[] = [];
  for (const [name, value] of Object.entries(r.headers)) {
    const field = `headers.${isValidHeaderName(name) ? name : safeEcho(name)}`;
    if (!isValidHeaderName(name)) fail(field, 'not a valid header name');
    const lower = name.toLowerCase();
    if (RESERVED_HEADERS.has(lower)) fail(field, `${name} is set by coap-edge itself`);
    if (authHeaders.has(lower)) fail(field, `${name} is set by the route's auth`);
    const dup = seen.get(lower);
    if (dup !== undefined) fail(field, `given twice (also as ${dup})`);
    seen.set(lower, name);
    headers.push([lower, at(field, () => compileHeaderValue(value))]);
  }
  return new CompiledHttpRoute(
    index,
    r.name,
    r.match,
    r.method,
    origin,
    path,
    headers,
    r.timeoutMs,
    auth,
  );
}

/**
 * Compiles the `routes` list.
 * @throws RouteConfigError for the first problem found (unknown backend, bad pattern, bad
 *   template, duplicate name, unset auth environment variable, ...).
 */
export function compileRoutes(
  configs: readonly RouteConfig[],
  options: CompileRoutesOptions = {},
): RouteTable {
  const env = options.env ?? process.env;
  const routes: CompiledRoute[] = [];
  const patterns: Pattern[] = [];
  const names = new Map<string, number>();
  configs.forEach((r, index) => {
    const name = r.name;
    const fail = (field: string, problem: string): never => {
      throw new RouteConfigError(index, name, field, problem);
    };
    if (name !== undefined) {
      if (name.trim() === '' || /\p{Cc}/u.test(name)) fail('name', 'must be visible text');
      const other = names.get(name);
      if (other !== undefined) fail('name', `duplicate route name (also routes[${other}])`);
      names.set(name, index);
    }
    if (typeof r.match !== 'string' || r.match === '') fail('match', 'missing');
    try {
      patterns.push(Pattern.compile(r.match));
    } catch (err) {
      if (err instanceof FieldProblem) fail('match', err.message);
      throw err;
    }
    const backend: unknown = (r as { backend?: unknown }).backend;
    if (r.backend === 'mqtt') {
      let template: Template | undefined;
      if (r.topic !== undefined) {
        try {
          template = compileTopic(r.topic);
        } catch (err) {
          if (err instanceof FieldProblem) fail('topic', err.message);
          throw err;
        }
      }
      routes.push(new CompiledMqttRoute(index, name, r.match, template));
    } else if (r.backend === 'http') {
      routes.push(compileHttp(r, index, env, fail));
    } else {
      fail(
        'backend',
        `unknown backend ${typeof backend === 'string' ? safeEcho(backend) : 'value'} (mqtt or http)`,
      );
    }
  });
  return new RouteTable(routes, patterns);
}
