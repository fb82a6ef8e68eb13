/**
 * Admin HTTP server: `/metrics` (Prometheus text format), `/healthz` (the process is alive:
 * always 200 while it runs), `/readyz` (200 when it should get traffic: UDP sockets bound,
 * configured Redis and backends reachable, not draining; 503 with the failing checks
 * otherwise). Nothing else is served.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface ReadinessCheck {
  readonly name: string;
  ok(): boolean;
}

export interface AdminServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startAdminServer(o: {
  bind: string;
  port: number;
  registry: Registry;
  checks: () => readonly ReadinessCheck[];
}): Promise<AdminServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/readyz') {
      const failing = o
        .checks()
        .filter((c) => !c.ok())
        .map((c) => c.name);
      const body = JSON.stringify({ ready: failing.length === 0, failing });
      res
        .writeHead(failing.length === 0 ? 200 : 503, { 'content-type': 'application/json' })
        .end(`${body}\n`);
      return;
    }
    if (path === '/metrics') {
      o.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': o.registry.contentType }).end(text);
        },
        () => {
          res.writeHead(500).end();
        },
      );
      return;
    }
    res.writeHead(404).end();
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.bind, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr !== null ? addr.port : o.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
