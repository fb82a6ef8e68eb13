/**
 * UDP socket endpoint: binds, hands every datagram to one handler, sends. Errors on send
 * (e.g. ICMP unreachable reported as ECONNREFUSED on some platforms) are counted, never
 * thrown into the datagram path.
 *
 * Per send, Node 20's `Socket.prototype.send` (lib/dgram.js) calls the socket's `lookup` with
 * the destination, even an IP literal, and sends from the lookup's callback. The default,
 * `dns.lookup`, validates its arguments and answers a literal through `process.nextTick`:
 * ~0.3 µs a send against ~0.04 µs for `literalLookup` below, which answers a literal at once
 * (bench/history/levers.md, "UDP send and receive"). Every destination here is a datagram's source
 * address, always a literal.
 *
 * The completion callback stays: without one, lib/dgram.js `doSend` drops a synchronous send
 * error (`if (err && callback)`) and the native side reports an asynchronous one to no one,
 * so `sendErrors` could not count them; it costs one `process.nextTick` a send.
 *
 * Receiving is Node's: libuv asks for a 64 KiB buffer per datagram and UDPWrap::OnRecv
 * (src/udp_wrap.cc) reallocates it to the datagram's length; no dgram option changes that
 * (`recvBufferSize` is the kernel's SO_RCVBUF).
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { lookup as dnsLookup, type LookupOneOptions } from 'node:dns';
import { isIP, isIPv6 } from 'node:net';

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string, family: number) => void;

/**
 * The socket's `lookup`: an IP literal answers synchronously; a name (only a `bind` setting
 * can be one) goes to `dns.lookup` as before.
 */
export function literalLookup(
  hostname: string,
  options: LookupOneOptions | number,
  callback: LookupCallback,
): void {
  const family = isIP(hostname);
  if (family !== 0) {
    callback(null, hostname, family);
    return;
  }
  const opts: LookupOneOptions = typeof options === 'number' ? { family: options } : options;
  dnsLookup(hostname, opts, callback);
}

export type DatagramHandler = (msg: Buffer, address: string, port: number) => void;

export interface UdpEndpointOptions {
  readonly bind: string;
  readonly port: number;
  /** Kernel receive buffer in bytes (SO_RCVBUF); unset leaves the system default. */
  readonly recvBufferSize?: number;
  readonly sendBufferSize?: number;
}

/**
 * The latest datagram's address object (made by node's C++ side), held until the next: with
 * none alive a full GC frees the maps these objects take and deoptimizes the datagram handler
 * compiled against them (NATIVE_BUFFER_MAP_HOLDER in src/dtls/record-cipher.ts says why).
 */
const latest: { source: RemoteInfo | undefined } = { source: undefined };

export class UdpEndpoint {
  private readonly socket: Socket;
  private handler: DatagramHandler = () => undefined;
  sendErrors = 0;
  private readonly onSendDone = (err: Error | null): void => {
    if (err !== null) this.sendErrors++;
  };

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('message', (msg, rinfo) => {
      latest.source = rinfo;
      this.handler(msg, rinfo.address, rinfo.port);
    });
    socket.on('error', () => {
      this.sendErrors++;
    });
  }

  /** Binds the socket; rejects with the system error (e.g. EADDRINUSE) when it cannot. */
  static async bind(opts: UdpEndpointOptions): Promise<UdpEndpoint> {
    const socket = createSocket({
      type: isIPv6(opts.bind) ? 'udp6' : 'udp4',
      reuseAddr: false,
      lookup: literalLookup,
    });
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
