/**
 * A device registry stand-in for trying coap-edge (the compose stack, demos): serves the
 * contract of docs/registry-api.md from a devices file. Never for production.
 *
 * - `GET /products/{pk}` → `{productSecret, dynamicRegistration}` or 404.
 * - `GET /devices/{pk}/{dk}` → `{deviceSecret, assetId}` (from the file, or from an activation
 *   made here) or 404.
 * - `POST /devices/{pk}/{dk}/activate` → 404 unknown product, 403 dynamic registration off,
 *   409 when the device already has a secret (listed in the file, or activated before: one-shot),
 *   else 200 with a new random secret and asset id, which `GET /devices/…` serves from then on.
 * - `GET /healthz` → 200, without authentication (container health checks).
 *
 * With a token, every other request needs `Authorization: Bearer <token>` (401 otherwise).
 * Activations live in memory only. Secrets and the token are never logged: a request's log
 * line is its method, path (product and device keys) and status; health checks are not logged.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import {
  GENERATED_ASSET_ID_LENGTH,
  GENERATED_SECRET_LENGTH,
  randomBase62,
} from '../auth/activation.js';
import type { DevicesFile } from '../auth/devices-file.js';

export interface RegistryStandInOptions {
  readonly devices: DevicesFile;
  /** TCP port; 0 picks a free one (see {@link RegistryStandIn.port}). */
  readonly port: number;
  /** Listen address (default `0.0.0.0`). */
  readonly bind?: string;
  /** Bearer token every registry request must carry; none: no authentication. */
  readonly token?: string | undefined;
  /** Most devices activated here; further activations get 503 (default 10 000). */
  readonly maxActivations?: number;
  /** One line per request (method, path, status); never secrets. */
  readonly log?: (line: string) => void;
}

export interface RegistryStandIn {
  readonly port: number;
  /** Devices activated since start. */
  activations(): number;
  close(): Promise<void>;
}

interface Activated {
  readonly deviceSecret: string;
  readonly assetId: string;
}

type Route =
  | { readonly kind: 'product'; readonly pk: string }
  | { readonly kind: 'device'; readonly pk: string; readonly dk: string }
  | { readonly kind: 'activate'; readonly pk: string; readonly dk: string };

/** The route of a path, `undefined` for none, `'bad'` for a malformed percent-encoding. */
function route(path: string): Route | undefined | 'bad' {
  const parts = path.split('/').slice(1);
  let seg: string[];
  try {
    seg = parts.map((p) => decodeURIComponent(p));
  } catch {
    return 'bad';
  }
  if (seg.some((s) => s.length === 0)) return undefined;
  const [kind, pk, dk, action] = seg;
  if (kind === 'products' && pk !== undefined && seg.length === 2) return { kind: 'product', pk };
  if (kind === 'devices' && pk !== undefined && dk !== undefined) {
    if (seg.length === 3) return { kind: 'device', pk, dk };
    if (seg.length === 4 && action === 'activate') return { kind: 'activate', pk, dk };
  }
  return undefined;
}

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

export async function startRegistryStandIn(o: RegistryStandInOptions): Promise<RegistryStandIn> {
  const activated = new Map<string, Activated>();
  const maxActivations = o.maxActivations ?? 10_000;
  const tokenDigest = o.token !== undefined ? digest(`Bearer ${o.token}`) : undefined;
  const log = o.log ?? ((): void => undefined);
  const key = (pk: string, dk: string): string => `${pk}\u0000${dk}`;

  const authorized = (req: IncomingMessage): boolean => {
    if (tokenDigest === undefined) return true;
    const given = req.headers.authorization;
    // comparing digests: equal lengths, and the time taken says nothing about the token
    return given !== undefined && timingSafeEqual(digest(given), tokenDigest);
  };

  const handle = (req: IncomingMessage, res: ServerResponse): number => {
    const send = (status: number, body: unknown, headers: Record<string, string> = {}): number => {
      res
        .writeHead(status, { 'content-type': 'application/json', ...headers })
        .end(`${JSON.stringify(body)}\n`);
      return status;
    };
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === '/healthz') {
      if (method !== 'GET' && method !== 'HEAD') {
        return send(405, { error: 'method not allowed' }, { allow: 'GET, HEAD' });
      }
      return send(200, { ok: true });
    }
    if (!authorized(req)) {
      return send(401, { error: 'bearer token required' }, { 'www-authenticate': 'Bearer' });
    }
    const r = route(path);
    if (r === 'bad') return send(400, { error: 'malformed path' });
    if (r === undefined) return send(404, { error: 'not found' });
    const allowed = r.kind === 'activate' ? 'POST' : 'GET';
    if (method !== allowed && !(allowed === 'GET' && method === 'HEAD')) {
      return send(405, { error: 'method not allowed' }, { allow: allowed });
    }
    const product = o.devices.product(r.pk);
    switch (r.kind) {
      case 'product':
        if (product === undefined) return send(404, { error: 'unknown product' });
        return send(200, {
          productSecret: product.productSecret,
          dynamicRegistration: product.dynamicRegistration,
        });
      case 'device': {
        const listed = o.devices.device(r.pk, r.dk);
        if (listed !== undefined) {
          return send(200, { deviceSecret: listed.deviceSecret, assetId: listed.assetId ?? null });
        }
        const made = activated.get(key(r.pk, r.dk));
        if (made === undefined) return send(404, { error: 'unknown device' });
        return send(200, { deviceSecret: made.deviceSecret, assetId: made.assetId });
      }
      case 'activate': {
        if (product === undefined) return send(404, { error: 'unknown product' });
        if (!product.dynamicRegistration) {
          return send(403, { error: 'dynamic registration disabled' });
        }
        const k = key(r.pk, r.dk);
        if (o.devices.device(r.pk, r.dk) !== undefined || activated.has(k)) {
          return send(409, { error: 'activated before' });
        }
        if (activated.size >= maxActivations) return send(503, { error: 'too many activations' });
        const made: Activated = {
          deviceSecret: randomBase62(GENERATED_SECRET_LENGTH),
          assetId: randomBase62(GENERATED_ASSET_ID_LENGTH),
        };
        activated.set(k, made);
        return send(200, made);
      }
    }
  };

  const server: Server = createServer((req, res) => {
    req.resume(); // bodies are not read (POST …/activate has none)
    let status: number;
    try {
      status = handle(req, res);
    } catch {
      status = 500;
      if (!res.headersSent) res.writeHead(500).end();
    }
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path !== '/healthz') log(`${req.method ?? '?'} ${path} ${status}`);
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.bind ?? '0.0.0.0', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr !== null ? addr.port : o.port,
    activations: () => activated.size,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
