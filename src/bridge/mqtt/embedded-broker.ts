/**
 * The embedded MQTT broker of `--embedded-broker <port>`: aedes 1.x on a plain TCP listener,
 * in memory, anonymous, for trying coap-edge without a broker. aedes speaks MQTT 3.1.1 only
 * (it refuses a version 5 CONNECT with CONNACK 0x01), so a bridge in `auto` mode falls back
 * to 3.1.1 against it. Code in the same process (the demo platform) may use it without a
 * connection ({@link EmbeddedBroker.local}).
 */
import { CoapEdgeError } from '../../errors/index.js';
import type { EventEmitter } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes, type AedesPublishPacket } from 'aedes';

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

/**
 * The broker as seen from its own process, without a TCP connection: what is published here
 * reaches the broker's clients as any publish does, and a subscriber here is called for
 * every matching publish (its own ones included).
 */
export interface LocalBrokerClient {
  /** Calls `onMessage` for every message on a topic matching `filter` (MQTT wildcards). */
  subscribe(filter: string, onMessage: (topic: string, payload: Buffer) => void): Promise<void>;
  /** Publishes with QoS 1 (a subscriber receives it at the QoS it subscribed with). */
  publish(topic: string, payload: Buffer): void;
  /** Removes this client's subscriptions. */
  close(): Promise<void>;
}

export interface EmbeddedBroker {
  /** The bound port (the chosen one when 0 was asked for). */
  readonly port: number;
  readonly host: string;
  /** Client ids of the MQTT clients connected now. */
  clientIds(): string[];
  /** A client for code in this process; each call returns a new one. */
  local(): LocalBrokerClient;
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
  const clientIds = new Set<string>();
  aedes.on('clientReady', (c) => clientIds.add(c.id));
  aedes.on('clientDisconnect', (c) => clientIds.delete(c.id));
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
    clientIds: () => [...clientIds],
    local: () => localClient(aedes),
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

type DeliverFunc = (packet: AedesPublishPacket, callback: () => void) => void;

function localClient(aedes: Aedes): LocalBrokerClient {
  const subscribed: [string, DeliverFunc][] = [];
  return {
    subscribe(filter, onMessage): Promise<void> {
      const deliver: DeliverFunc = (packet, callback) => {
        callback();
        onMessage(
          packet.topic,
          Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
        );
      };
      subscribed.push([filter, deliver]);
      return new Promise<void>((resolve) => aedes.subscribe(filter, deliver, resolve));
    },
    publish(topic, payload): void {
      aedes.publish(
        { cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false },
        () => undefined,
      );
    },
    async close(): Promise<void> {
      const all = subscribed.splice(0);
      await Promise.all(
        all.map(
          ([filter, deliver]) =>
            new Promise<void>((resolve) => aedes.unsubscribe(filter, deliver, resolve)),
        ),
      );
    },
  };
}
