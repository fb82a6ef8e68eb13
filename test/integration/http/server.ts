/** An in-process HTTP platform stand-in for HTTP route tests (port 0, records what arrives). */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
}

export type Handler = (req: Received, res: ServerResponse) => void;

export class TestServer {
  readonly received: Received[] = [];
  /** TCP connections accepted so far. */
  connections = 0;
  /** Requests whose body arrived but that are not answered yet. */
  pending = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(handler: Handler): Promise<TestServer> {
    const ref: { self?: TestServer } = {};
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r: Received = {
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(chunks),
        };
        ref.self?.received.push(r);
        if (ref.self) ref.self.pending++;
        res.on('finish', () => {
          if (ref.self) ref.self.pending--;
        });
        handler(r, res);
      });
    });
    server.on('connection', () => {
      if (ref.self) ref.self.connections++;
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    ref.self = new TestServer(server, (server.address() as AddressInfo).port);
    return ref.self;
  }

  /** Stops listening and cuts every connection (hanging requests included). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }
}

/** A port nothing listens on (bound, then released). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export async function waitFor(cond: () => boolean, ms = 2_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
