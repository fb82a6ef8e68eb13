/**
 * `openssl s_client -dtls1_2` against our DtlsServer (an echo handler on a real UDP socket):
 * CCM_8, CBC-SHA256 with Encrypt-then-MAC, CBC-SHA256 without it. The handshake must
 * complete, application data must come back unchanged, Extended Master Secret must be in use
 * (OpenSSL offers it), and stdin EOF (s_client sends close_notify) must close the association
 * with `peer-close-notify`.
 *
 * Encrypt-then-MAC is not exposed on the association, so it is read off the wire: the
 * ClientHello the server received and the ServerHello it sent are captured at the socket.
 * The handshake and the echo could not succeed if the two sides disagreed about it.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  CipherSuite,
  ContentType,
  ExtensionType,
  HandshakeType,
} from '../../src/dtls/constants.js';
import { parseClientHello, parseServerHello, readFragments } from '../../src/dtls/handshake.js';
import { readRecord } from '../../src/dtls/record.js';
import { DtlsServer } from '../../src/dtls/server.js';
import type { DtlsAssociation } from '../../src/dtls/association.js';
import type { CloseReason, HandshakeFailure } from '../../src/dtls/types.js';
import { UdpEndpoint } from '../../src/transport/udp.js';
import { killAll, startSClient, waitUntil, type OpensslCipher } from '../helpers/processes.js';
import { DTLS_SERVER_DEFAULTS } from '../helpers/component-defaults.js';

const IDENTITY = 'demoPK01,device001,2,3600';
const PSK = Buffer.from('b069dae6f34d621ccd26097c78ecab48', 'hex');

/** Handshake message bodies of `msgType` in the epoch-0 records of these datagrams. */
function handshakeBodies(datagrams: readonly Buffer[], msgType: number): Buffer[] {
  const out: Buffer[] = [];
  for (const d of datagrams) {
    let off = 0;
    for (let rec = readRecord(d, off); rec !== undefined; rec = readRecord(d, off)) {
      off += rec.raw.length;
      if (rec.epoch !== 0 || rec.type !== ContentType.handshake) continue;
      for (const f of readFragments(rec.body)) {
        if (f.msgType === msgType && f.fragmentOffset === 0 && f.fragment.length === f.length) {
          out.push(f.fragment);
        }
      }
    }
  }
  return out;
}

interface EchoServer {
  readonly port: number;
  readonly server: DtlsServer<string>;
  readonly established: Promise<DtlsAssociation<string>>;
  readonly closed: Promise<CloseReason>;
  readonly inbound: Buffer[];
  readonly outbound: Buffer[];
  readonly failures: HandshakeFailure[];
  readonly errors: unknown[];
  close(): Promise<void>;
}

async function echoServer(): Promise<EchoServer> {
  const ep = await UdpEndpoint.bind({ bind: '127.0.0.1', port: 0 });
  const inbound: Buffer[] = [];
  const outbound: Buffer[] = [];
  const failures: HandshakeFailure[] = [];
  const errors: unknown[] = [];
  let onEstablished!: (a: DtlsAssociation<string>) => void;
  let onClosed!: (r: CloseReason) => void;
  const established = new Promise<DtlsAssociation<string>>((r) => (onEstablished = r));
  const closed = new Promise<CloseReason>((r) => (onClosed = r));
  const server = new DtlsServer<string>({
    ...DTLS_SERVER_DEFAULTS,
    send: (data, port, address) => {
      outbound.push(Buffer.from(data));
      ep.send(data, port, address);
    },
    handler: {
      resolvePsk: (id) =>
        id.toString('utf8') === IDENTITY
          ? { ok: true, psk: PSK, principal: 'device001' }
          : { ok: false, alert: 'unknown_psk_identity', reason: 'unknown-device' },
      onData: (a, d) => {
        a.send(d);
      },
      onEstablished: (a) => onEstablished(a),
      onClosed: (_a, reason) => onClosed(reason),
      onHandshakeFailed: (f) => failures.push(f),
      onInternalError: (err) => errors.push(err),
    },
  });
  ep.onDatagram((msg, address, port) => {
    inbound.push(Buffer.from(msg));
    server.handleDatagram(msg, address, port);
  });
  return {
    port: ep.port,
    server,
    established,
    closed,
    inbound,
    outbound,
    failures,
    errors,
    close: async () => {
      server.close();
      await ep.close();
    },
  };
}

const cases: {
  name: string;
  cipher: OpensslCipher;
  noEtm: boolean;
  suite: string;
  clientOffersEtm: boolean;
  serverSendsEtm: boolean;
}[] = [
  {
    name: 'PSK-AES128-CCM8',
    cipher: 'PSK-AES128-CCM8',
    noEtm: false,
    suite: 'TLS_PSK_WITH_AES_128_CCM_8',
    clientOffersEtm: true,
    // RFC 7366 §3: no encrypt_then_mac response with an AEAD suite
    serverSendsEtm: false,
  },
  {
    name: 'PSK-AES128-CBC-SHA256 (Encrypt-then-MAC)',
    cipher: 'PSK-AES128-CBC-SHA256',
    noEtm: false,
    suite: 'TLS_PSK_WITH_AES_128_CBC_SHA256',
    clientOffersEtm: true,
    serverSendsEtm: true,
  },
  {
    name: 'PSK-AES128-CBC-SHA256 -no_etm (MAC-then-encrypt)',
    cipher: 'PSK-AES128-CBC-SHA256',
    noEtm: true,
    suite: 'TLS_PSK_WITH_AES_128_CBC_SHA256',
    clientOffersEtm: false,
    serverSendsEtm: false,
  },
];

describe('openssl s_client -dtls1_2 against DtlsServer (echo)', { concurrency: true }, () => {
  after(killAll);

  for (const c of cases) {
    it(`${c.name}: handshake, echo, close_notify`, async (t) => {
      const es = await echoServer();
      t.after(() => es.close());
      const client = startSClient({
        port: es.port,
        identity: IDENTITY,
        psk: PSK,
        cipher: c.cipher,
        noEtm: c.noEtm,
      });
      t.after(() => client.kill());

      const assoc = await Promise.race([
        es.established,
        client.done.then(() => {
          throw new Error(`s_client ended before the handshake completed\n${client.describe()}`);
        }),
      ]);
      assert.equal(assoc.identity, IDENTITY);
      assert.equal(assoc.cipherSuite, c.suite);
      assert.equal(assoc.extendedMasterSecret, true, 'OpenSSL offers EMS; it must be used');

      const line = `hello coap-edge over ${c.name}\n`;
      client.write(line);
      await client.waitFor(/hello coap-edge over [^\n]*\n/, { stream: 'stdout' });

      const [chBody] = handshakeBodies(es.inbound, HandshakeType.clientHello).slice(-1);
      const [shBody] = handshakeBodies(es.outbound, HandshakeType.serverHello);
      assert.ok(chBody !== undefined && shBody !== undefined, 'hellos captured');
      const ch = parseClientHello(chBody);
      const sh = parseServerHello(shBody);
      assert.equal(sh.cipherSuite, CipherSuite[c.suite as keyof typeof CipherSuite]);
      assert.equal(ch.extensions.has(ExtensionType.extendedMasterSecret), true);
      assert.equal(sh.extensions.has(ExtensionType.extendedMasterSecret), true);
      assert.equal(ch.extensions.has(ExtensionType.encryptThenMac), c.clientOffersEtm);
      assert.equal(
        sh.extensions.has(ExtensionType.encryptThenMac),
        c.serverSendsEtm,
        'Encrypt-then-MAC in the ServerHello',
      );
      // secure renegotiation (RFC 5746): OpenSSL signals it, the server must answer it
      assert.equal(sh.extensions.has(ExtensionType.renegotiationInfo), true);

      client.end(); // stdin EOF: s_client sends close_notify and exits
      assert.equal(await es.closed, 'peer-close-notify');
      const r = await client.done;
      assert.equal(r.timedOut, false, client.describe());
      assert.equal(r.code, 0, client.describe());
      assert.equal(r.stdout, line, 'exactly the line written comes back');
      await waitUntil(() => es.server.associationCount === 0, 'the association is gone');
      assert.equal(es.server.handshakeCount, 0);
      assert.deepEqual(es.failures, []);
      assert.deepEqual(es.errors, []);
      assert.equal(es.server.stats.closed['peer-close-notify'], 1);
    });
  }
});
