/**
 * Real peers for the secret chain's integration tests: a redis-server child process on a
 * free port (so a test may stop and restart it without disturbing anyone), and an
 * in-process HTTP registry (docs/registry-api.md) that counts requests and can be told to
 * answer 500, garbage, or nothing at all. Every wait has a deadline.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { connect, createServer as createNetServer } from 'node:net';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { createSecretStack, type SecretStackOptions } from '../../../src/auth/stack.js';
import { REDIS_COMMAND_TIMEOUT_MS } from '../../helpers/component-defaults.js';

export async function freePort(): Promise<number> {
  const srv = createNetServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  srv.close();
  await once(srv, 'close');
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return addr.port;
}

export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.on('error', () => done(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => done(d.toString().startsWith('+PONG')));
  });
}

/** A redis-server of our own. */
export class RedisServer {
  #child: ChildProcess | undefined;

  private constructor(readonly port: number) {}

  static async start(): Promise<RedisServer> {
    const r = new RedisServer(await freePort());
    await r.restart();
    return r;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Starts (again) on the same port and waits until it answers PING. */
  async restart(): Promise<void> {
    const child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    );
    this.#child = child;
    child.on('error', () => {});
    await waitFor(() => ping(this.port), `redis-server on port ${this.port}`);
  }

  /** Kills the server (SIGKILL, like a crash) and waits until it is gone. */
  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }

  /** A separate client for checking keys. */
  client(): Redis {
    return new Redis(this.url, { lazyConnect: false, maxRetriesPerRequest: 1 });
  }
}

export type Reply =
  { readonly status: number; readonly body?: unknown; readonly raw?: string } | 'hang';

interface Seen {
  readonly method: string;
  readonly path: string;
  readonly authorization: string | undefined;
}

/** The HTTP registry of docs/registry-api.md, in process. */
export class FakeRegistry {
  readonly requests: Seen[] = [];
  readonly products = new Map<string, { productSecret: string; dynamicRegistration: boolean }>();
  readonly devices = new Map<string, { deviceSecret: string; assetId?: string }>();
  /** Answers instead of the data above, keyed by decoded path (`/devices/pk/dk`). */
  readonly overrides = new Map<string, Reply>();
  /** When true, activations happen but their answer never comes (once, then resets). */
  hangNextActivation = false;
  #hanging = new Set<IncomingMessage>();

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static readonly BASE = '/api/v1';

  static async start(): Promise<FakeRegistry> {
    const self: { reg?: FakeRegistry } = {};
    const server = createHttpServer((req, res) => {
      const reg = self.reg;
      if (reg === undefined) return;
      const reply = reg.handle(req);
      if (reply === 'hang') {
        reg.#hanging.add(req);
        return;
      }
      const text = reply.raw ?? (reply.body === undefined ? '' : JSON.stringify(reply.body));
      res.writeHead(reply.status, { 'content-type': 'application/json' });
      res.end(text);
    });
    server.keepAliveTimeout = 60_000;
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('no port');
    const reg = new FakeRegistry(server, `http://127.0.0.1:${addr.port}${FakeRegistry.BASE}/`);
    self.reg = reg;
    return reg;
  }

  /** Requests whose decoded path (without the base) and method match. */
  count(path: string, method = 'GET'): number {
    return this.requests.filter((r) => r.path === path && r.method === method).length;
  }

  private handle(req: IncomingMessage): Reply {
    const raw = (req.url ?? '').split('?')[0] ?? '';
    const method = req.method ?? 'GET';
    const parts = raw.startsWith(`${FakeRegistry.BASE}/`)
      ? raw
          .slice(FakeRegistry.BASE.length + 1)
          .split('/')
          .map(decodeURIComponent)
      : [];
    const path = `/${parts.join('/')}`;
    this.requests.push({ method, path, authorization: req.headers.authorization });
    const override = this.overrides.get(path);
    if (override !== undefined) return override;
    const [kind, pk = '', dk = '', action] = parts;
    if (method === 'GET' && kind === 'products' && parts.length === 2) {
      const p = this.products.get(pk);
      return p === undefined ? { status: 404 } : { status: 200, body: p };
    }
    if (method === 'GET' && kind === 'devices' && parts.length === 3) {
      const d = this.devices.get(`${pk}/${dk}`);
      return d === undefined ? { status: 404 } : { status: 200, body: d };
    }
    if (method === 'POST' && kind === 'devices' && action === 'activate' && parts.length === 4) {
      const p = this.products.get(pk);
      if (p === undefined) return { status: 404 };
      if (!p.dynamicRegistration) return { status: 403 };
      if (this.devices.has(`${pk}/${dk}`)) return { status: 409 };
      const d = { deviceSecret: randomBytes(12).toString('base64url'), assetId: `A-${dk}` };
      this.devices.set(`${pk}/${dk}`, d);
      if (this.hangNextActivation) {
        this.hangNextActivation = false;
        return 'hang';
      }
      return { status: 200, body: d };
    }
    return { status: 400 };
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    this.server.close();
    await once(this.server, 'close');
  }
}

export function prefix(): string {
  return `t-${randomBytes(4).toString('hex')}`;
}

/** Stack options for tests: short timeouts, fast reconnects. */
export function stackOptions(o: Partial<SecretStackOptions> & { redisPrefix: string }) {
  return {
    registryTimeoutMs: 1_000,
    cacheSize: 1_000,
    cacheTtlMs: 60_000,
    redisTtlMs: 60_000,
    negativeTtlMs: 5_000,
    redisMaxBackoffMs: 200,
    ...o,
    redisCommandTimeoutMs: o.redisCommandTimeoutMs ?? REDIS_COMMAND_TIMEOUT_MS,
  } satisfies SecretStackOptions;
}

/** A stack, waiting until its Redis (if any) is connected. */
export async function startStack(o: SecretStackOptions) {
  const stack = createSecretStack(o);
  if (o.redisUrl !== undefined) {
    try {
      await waitFor(() => stack.redisState() === 'connected', 'Redis connected');
    } catch (err) {
      await stack.close();
      throw err;
    }
  }
  return stack;
}

/** Runs `fn`, measuring how long it takes to settle. */
export async function timed<T>(
  fn: () => T | Promise<T>,
): Promise<{ ms: number; value?: T; error?: unknown }> {
  const t0 = performance.now();
  try {
    const value = await fn();
    return { ms: performance.now() - t0, value };
  } catch (error: unknown) {
    return { ms: performance.now() - t0, error };
  }
}
