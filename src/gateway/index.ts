/**
 * The composition root: builds every layer from the configuration and wires them
 * together. Nothing else imports across layers.
 */
import { DevicesFile } from '../auth/devices-file.js';
import { PskResolver, type PskLookup } from '../auth/psk-resolver.js';
import type { SecretSource } from '../auth/source.js';
import { Router } from '../bridge/router.js';
import type { Principal } from '../bridge/types.js';
import { CoapEndpoint, type CoapPeer, type CoapReply, type CoapRequest } from '../coap/endpoint.js';
import type { Config } from '../config/load.js';
import { CipherSuite } from '../dtls/constants.js';
import { DtlsServer, type DtlsServerHandler } from '../dtls/server.js';
import type { PskResolution } from '../dtls/types.js';
import type { Logger } from '../telemetry/log.js';
import { LogLimiter } from '../telemetry/log.js';
import { UdpEndpoint } from '../transport/udp.js';
import { toBridgeRequest, toCoapReply } from './coap-adapter.js';

/** A start-up problem the operator must fix (port taken, file invalid); exit code 2. */
export class StartupError extends Error {
  readonly code = 'STARTUP_FAILED';
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}

const EMPTY_SOURCE: SecretSource = {
  device: () => undefined,
  product: () => undefined,
};

async function bindOrExplain(what: string, bind: string, port: number): Promise<UdpEndpoint> {
  try {
    return await UdpEndpoint.bind({ bind, port });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    const hint =
      code === 'EADDRINUSE'
        ? ' (port already in use)'
        : code === 'EACCES'
          ? ' (permission denied)'
          : '';
    throw new StartupError(`cannot bind ${what} on ${bind}:${port}: ${code}${hint}`);
  }
}

export class Gateway {
  private constructor(
    private readonly log: Logger,
    readonly dtls: DtlsServer<Principal>,
    readonly coap: CoapEndpoint<Principal | undefined>,
    private readonly dtlsSocket: UdpEndpoint,
    private readonly coapSocket: UdpEndpoint | undefined,
  ) {}

  get dtlsPort(): number {
    return this.dtlsSocket.port;
  }

  get coapPort(): number | undefined {
    return this.coapSocket?.port;
  }

  static async start(config: Config, log: Logger): Promise<Gateway> {
    const devices = config.devices !== undefined ? DevicesFile.load(config.devices) : undefined;
    if (devices !== undefined) {
      log.info(
        { file: config.devices, products: devices.productCount, devices: devices.deviceCount },
        'devices file loaded',
      );
    }
    const resolver = new PskResolver(devices ?? EMPTY_SOURCE);
    const router = new Router({
      backend: undefined,
      activation: undefined,
      unavailableMaxAge: config.maxUnavailableRetry,
    });
    const limiter = new LogLimiter();

    const handleRequest = (
      req: CoapRequest<Principal | undefined>,
    ): CoapReply | Promise<CoapReply> => {
      const res = router.handle(toBridgeRequest(req));
      return res instanceof Promise ? res.then(toCoapReply) : toCoapReply(res);
    };
    const coap = new CoapEndpoint<Principal | undefined>({
      handler: handleRequest,
      ackTimeoutMs: config.ackTimeout,
      maxPayload: config.maxPayload,
      blockSize: config.blockSize,
      onError: (err) => log.error({ err }, 'request handler failed'),
    });

    const dtlsSocket = await bindOrExplain('DTLS', config.bind, config.dtlsPort);
    let coapSocket: UdpEndpoint | undefined;
    try {
      coapSocket =
        config.coapPort !== undefined
          ? await bindOrExplain('plain CoAP', config.bind, config.coapPort)
          : undefined;
    } catch (err) {
      await dtlsSocket.close();
      throw err;
    }

    const handler: DtlsServerHandler<Principal> = {
      resolvePsk: (identity) => {
        const r = resolver.resolve(identity);
        return r instanceof Promise ? r.then(toPskResolution) : toPskResolution(r);
      },
      onData: (assoc, data) => coap.receive(assoc, data),
      onEstablished: (a) =>
        log.info(
          {
            peer: `${a.address}:${a.port}`,
            identity: a.identity,
            suite: a.cipherSuite,
            ems: a.extendedMasterSecret,
            etm: a.encryptThenMac,
          },
          'association established',
        ),
      onClosed: (a, reason) => {
        coap.peerClosed(a.key);
        log.debug(
          { peer: `${a.address}:${a.port}`, identity: a.identity, reason },
          'association closed',
        );
      },
      onHandshakeFailed: (f) => {
        const suppressed = limiter.admit(`handshake-failed:${f.reason}`);
        if (suppressed === undefined) return;
        log.warn(
          {
            peer: `${f.address}:${f.port}`,
            identity: f.identity,
            reason: f.reason,
            detail: f.detail,
            alert: f.alert,
            ...(suppressed > 0 ? { suppressed } : {}),
          },
          'association refused',
        );
      },
      onInternalError: (err) => log.error({ err }, 'datagram processing failed'),
    };
    const dtls = new DtlsServer<Principal>({
      send: dtlsSocket.send,
      handler,
      cipherSuites: config.cipherSuites.map((s) => CipherSuite[s]),
      maxAssociations: config.maxAssociations,
      maxHandshakes: config.maxHandshakes,
      idleTimeoutMs: config.idleTimeout * 1000,
      handshakeTimeoutMs: config.handshakeTimeout * 1000,
      retransmitTimeoutMs: config.retransmitTimeout,
      cookieLifetimeMs: config.cookieLifetime * 1000,
    });
    dtlsSocket.onDatagram((msg, address, port) => dtls.handleDatagram(msg, address, port));

    if (coapSocket !== undefined) {
      const plain = coapSocket;
      plain.onDatagram((msg, address, port) => {
        const peer: CoapPeer<undefined> = {
          key: `${address}|${port}`,
          principal: undefined,
          send: (d) => {
            plain.send(d, port, address);
            return true;
          },
        };
        coap.receive(peer, msg);
      });
    }
    log.info(
      {
        dtls: `${config.bind}:${dtlsSocket.port}`,
        coap: coapSocket !== undefined ? `${config.bind}:${coapSocket.port}` : 'off',
      },
      'coap-edge listening',
    );
    return new Gateway(log, dtls, coap, dtlsSocket, coapSocket);
  }

  /** Sends close_notify to every established peer and closes the sockets. */
  async close(): Promise<void> {
    const n = this.dtls.associationCount;
    this.dtls.close();
    this.coap.close();
    // give the close_notify datagrams a moment to leave before the socket closes
    await new Promise((r) => setImmediate(r));
    await Promise.all([this.dtlsSocket.close(), this.coapSocket?.close()]);
    this.log.info({ closedAssociations: n }, 'coap-edge stopped');
  }
}

function toPskResolution(r: PskLookup): PskResolution<Principal> {
  if (r.ok) return { ok: true, psk: r.psk, principal: { ...r.identity, assetId: r.assetId } };
  return {
    ok: false,
    alert:
      r.kind === 'unknown'
        ? 'unknown_psk_identity'
        : r.kind === 'forbidden'
          ? 'handshake_failure'
          : 'internal_error',
    reason: r.reason,
  };
}
