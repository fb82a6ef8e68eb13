/**
 * The npm `node-dtls-client` (AlCalzone, v1.1.1) against an in-process gateway, with
 * TLS_PSK_WITH_AES_128_CCM_8 and with TLS_PSK_WITH_AES_128_CBC_SHA256. It sends no
 * extensions at all, so the association runs without Extended Master Secret (and the CBC
 * suite MAC-then-encrypt). It sends CoAP requests and must get the CoAP answers.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import type { dtls as NodeDtls } from 'node-dtls-client';
import { Code, ContentFormat } from '../../src/coap/constants.js';
import { loadConfig } from '../../src/config/load.js';
import { derivePsk } from '../../src/enos/psk.js';
import {
  DEMO,
  MEASUREPOINT_PAYLOAD,
  MEASUREPOINT_POST,
  coapRequest,
  coapResponse,
  secretForms,
  startGateway,
} from '../helpers/gateway.js';
import { waitUntil } from '../helpers/processes.js';

const { dtls } = createRequire(import.meta.url)('node-dtls-client') as {
  dtls: typeof NodeDtls;
};

type Suite = 'TLS_PSK_WITH_AES_128_CCM_8' | 'TLS_PSK_WITH_AES_128_CBC_SHA256';

/** Connects; resolves on `connected`, rejects on `error` or `close` before it. */
function connect(
  port: number,
  identity: string,
  psk: Buffer,
  suite: Suite,
): Promise<NodeDtls.Socket> {
  // node-dtls-client turns the PSK string into bytes with Buffer.from(psk, 'ascii'), which
  // (when encoding) is latin1: one byte per char code, so every byte value survives.
  const pskText = psk.toString('latin1');
  assert.ok(Buffer.from(pskText, 'ascii').equals(psk));
  return new Promise((resolve, reject) => {
    const socket = dtls.createSocket({
      type: 'udp4',
      address: '127.0.0.1',
      port,
      psk: { [identity]: pskText },
      timeout: 5_000,
      ciphers: [suite],
    });
    socket.once('connected', () => resolve(socket));
    socket.once('error', (err: Error) => reject(err));
    socket.once('close', () => reject(new Error('closed before the handshake completed')));
  });
}

function request(socket: NodeDtls.Socket, datagram: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no CoAP answer within 5 s')), 5_000);
    socket.once('message', (msg: Buffer) => {
      clearTimeout(timer);
      resolve(msg);
    });
    socket.send(datagram);
  });
}

describe('node-dtls-client against an in-process gateway', { concurrency: true }, () => {
  const maxAge = loadConfig().maxUnavailableRetrySeconds;

  for (const suite of ['TLS_PSK_WITH_AES_128_CCM_8', 'TLS_PSK_WITH_AES_128_CBC_SHA256'] as const) {
    it(`${suite}: CoAP requests get their answers; EMS off; close_notify closes`, async (t) => {
      const gw = await startGateway();
      t.after(() => gw.close());
      const socket = await connect(
        gw.port,
        DEMO.device001.identity,
        derivePsk(DEMO.device001.secret),
        suite,
      );
      let closed = false;
      t.after(() => {
        if (!closed) socket.close();
      });

      const [assoc] = [...gw.gateway.dtls.listAssociations()];
      assert.ok(assoc !== undefined);
      assert.equal(gw.gateway.dtls.associationCount, 1);
      assert.equal(assoc.identity, DEMO.device001.identity);
      assert.equal(assoc.cipherSuite, suite);
      assert.equal(assoc.extendedMasterSecret, false, 'node-dtls-client sends no extensions');

      const uplink = coapResponse(
        await request(
          socket,
          coapRequest({
            code: Code.POST,
            path: MEASUREPOINT_POST('demoPK01', 'device001'),
            messageId: 0x4711,
            token: Buffer.from([1, 2, 3, 4]),
            payload: Buffer.from(MEASUREPOINT_PAYLOAD),
            contentFormat: ContentFormat.JSON,
          }),
        ),
      );
      assert.equal(uplink.code, Code.SERVICE_UNAVAILABLE);
      assert.equal(uplink.type, 2, 'piggybacked ACK');
      assert.equal(uplink.messageId, 0x4711);
      assert.deepEqual(uplink.token, Buffer.from([1, 2, 3, 4]));
      assert.equal(uplink.maxAge, maxAge, 'Max-Age tells the device when to retry');

      const missing = coapResponse(
        await request(
          socket,
          coapRequest({
            code: Code.GET,
            path: '/nothing',
            messageId: 0x4712,
            token: Buffer.from('x'),
          }),
        ),
      );
      assert.equal(missing.code, Code.NOT_FOUND);
      assert.equal(missing.messageId, 0x4712);

      const other = coapResponse(
        await request(
          socket,
          coapRequest({
            code: Code.POST,
            path: MEASUREPOINT_POST('demoPK01', 'device002'),
            messageId: 0x4713,
            token: Buffer.alloc(0),
            payload: Buffer.from(MEASUREPOINT_PAYLOAD),
          }),
        ),
      );
      assert.equal(other.code, Code.FORBIDDEN);

      await new Promise<void>((resolve) => socket.close(() => resolve()));
      closed = true;
      await waitUntil(() => gw.gateway.dtls.associationCount === 0, 'the association is closed');
      assert.equal(gw.gateway.dtls.stats.closed['peer-close-notify'], 1);
      const established = gw.logLines().filter((l) => l.msg === 'association established');
      assert.equal(established.length, 1);
      assert.equal(established[0]?.ems, false);
      assert.equal(established[0]?.suite, suite);
      const text = gw.logText();
      for (const s of secretForms()) assert.ok(!text.includes(s), 'a secret is in the log');
    });
  }
});
