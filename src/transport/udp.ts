/**
 * UDP socket endpoint: binds, hands every datagram to one handler, sends. Errors on send
 * (e.g. ICMP unreachable reported as ECONNREFUSED on some platforms) are counted, never
 * thrown into the datagram path.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';

export type DatagramHandler = (msg: Buffer, address: string, port: number) => void;

export interface UdpEndpointOptions {
  readonly bind: string;
  readonly port: number;
  /** Kernel receive buffer in bytes (SO_RCVBUF); unset leaves the system default. */
  readonly recvBufferSize?: number;
  readonly sendBufferSize?: number;
}

export class UdpEndpoint {
  private readonly socket: Socket;
  private handler: DatagramHandler = () => undefined;
  sendErrors = 0;
  private readonly onSendDone = (err: Error | null): void => {
    if (err !== null) this.sendErrors++;
  };

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('message', (msg, rinfo) => this.handler(msg, rinfo.address, rinfo.port));
    socket.on('error', () => {
      this.sendErrors++;
    });
  }

  /** Binds the socket; rejects with the system error (e.g. EADDRINUSE) when it cannot. */
  static async bind(opts: UdpEndpointOptions): Promise<UdpEndpoint> {
    const socket = createSocket({ type: isIPv6(opts.bind) ? 'udp6' : 'udp4', reuseAddr: false });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      socket.once('error', onError);
      socket.bind(opts.port, opts.bind, () => {
        socket.off('error', onError);
        resolve();
      });
    });
    if (opts.recvBufferSize !== undefined) socket.setRecvBufferSize(opts.recvBufferSize);
    if (opts.sendBufferSize !== undefined) socket.setSendBufferSize(opts.sendBufferSize);
    return new UdpEndpoint(socket);
  }

  onDatagram(handler: DatagramHandler): void {
    this.handler = handler;
  }

  readonly send = (data: Buffer, port: number, address: string): void => {
    this.socket.send(data, port, address, this.onSendDone);
  };

  get port(): number {
    return this.socket.address().port;
  }

  get address(): string {
    return this.socket.address().address;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      try {
        this.socket.close(() => resolve());
      } catch {
        resolve();
      }
    });
  }
}
