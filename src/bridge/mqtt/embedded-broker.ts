/**
 * The embedded MQTT broker of `--embedded-broker <port>`: aedes 1.x on a plain TCP listener,
 * in memory, anonymous, for trying coap-edge without a broker. aedes speaks MQTT 3.1.1 only
 * (it refuses a version 5 CONNECT with CONNACK 0x01), so a bridge in `auto` mode falls back
 * to 3.1.1 against it.
 */
import { CoapEdgeError } from '../../errors/index.js';
import type { EventEmitter } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';

export type EmbeddedBrokerErrorCode = 'EMBEDDED_BROKER_PORT_IN_USE' | 'EMBEDDED_BROKER_LISTEN';

export class EmbeddedBrokerError extends CoapEdgeError {
  readonly code: EmbeddedBrokerErrorCode;

  /** `cause` is the system error (`EADDRINUSE`, `EACCES`, ...). */
  constructor(code: EmbeddedBrokerErrorCode, message: string, cause?: Error) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'EmbeddedBrokerError';
    this.code = code;
  }
}

export interface EmbeddedBrokerOptions {
  /** TCP port; 0 picks a free one. */
  readonly port: number;
  /** Listen address. Default `127.0.0.1` (the broker is anonymous: widen it on purpose). */
  readonly host?: string;
}

export interface EmbeddedBroker {
  /** The bound port (the chosen one when 0 was asked for). */
  readonly port: number;
  readonly host: string;
  /** Stops listening, disconnects every client, frees the port. */
  close(): Promise<void>;
}

/**
 * Starts aedes on `host:port`.
 * @throws EmbeddedBrokerError `EMBEDDED_BROKER_PORT_IN_USE` when the port is taken,
 *   `EMBEDDED_BROKER_LISTEN` for any other listen failure (e.g. EACCES, EADDRNOTAVAIL).
 */
export async function startEmbeddedBroker(opts: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
  const host = opts.host ?? '127.0.0.1';
  const aedes = await Aedes.createBroker();
  // Persistence errors of the in-memory store must not crash the proxy.
  const emitter: EventEmitter = aedes;
  emitter.on('error', () => undefined);
  const sockets = new Set<Socket>();
  // noDelay: aedes writes each packet separately; with Nagle on, a PUBACK or a forwarded
  // reply waits for the peer's delayed ACK (tens of ms on loopback) before it leaves.
  const server: Server = createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    aedes.handle(socket);
  });

  const closeBroker = (): Promise<void> =>
    new Promise<void>((resolve) => {
      aedes.close(() => resolve());
    });

  try {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen(opts.port, host, () => {
        server.off('error', onError);
        resolve();
      });
    });
  } catch (e: unknown) {
    await closeBroker();
    const err = e instanceof Error ? e : new Error(String(e));
    const sys = (err as NodeJS.ErrnoException).code;
    if (sys === 'EADDRINUSE') {
      throw new EmbeddedBrokerError(
        'EMBEDDED_BROKER_PORT_IN_USE',
        `embedded MQTT broker: port ${opts.port} on ${host} is already in use (EADDRINUSE); choose another --embedded-broker port or stop the process holding it`,
        err,
      );
    }
    throw new EmbeddedBrokerError(
      'EMBEDDED_BROKER_LISTEN',
      `embedded MQTT broker: cannot listen on ${host}:${opts.port} (${sys ?? err.message})`,
      err,
    );
  }
  // A later socket error (e.g. a client resetting) must not crash the process.
  server.on('error', () => undefined);

  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : opts.port;
  let closing: Promise<void> | undefined;
  return {
    port,
    host,
    close(): Promise<void> {
      closing ??= (async () => {
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        await closeBroker();
        for (const s of sockets) s.destroy();
        await serverClosed;
      })();
      return closing;
    },
  };
}
