/**
 * A handshake in progress and a finished one against what a stranger (or the network) can
 * put in front of them, over real sockets with a hand-driven client:
 * - a forged epoch-1 record (anyone who knows the device's address and port can send one)
 *   is dropped silently and the genuine Finished still completes the handshake
 *   (RFC 6347 §4.1.2.7), where it used to end the handshake with bad_record_mac;
 * - a late copy of the cookie-bearing ClientHello that made an association starts no second
 *   handshake (the unit tests in test/unit/dtls/server-unit.test.ts show the client's resent
 *   last flight answered by the association after such a copy).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Gateway } from '../../src/gateway/index.js';
import { ContentType, DTLS_1_2 } from '../../src/dtls/constants.js';
import { plainRecord } from '../../src/dtls/record.js';
import { CHANGE_CIPHER_SPEC } from '../../src/dtls/keys.js';
import {
  ManualRig,
  waitFor,
  type HostileServer,
  type ManualHandshake,
} from '../helpers/hostile.js';

describe('hostile: integrity of handshakes in progress and finished', () => {
  let rig: ManualRig;
  let srv: HostileServer & { readonly gateway: Gateway };

  before(async () => {
    rig = await ManualRig.start();
    srv = rig.srv;
  });

  after(async () => {
    await rig?.close();
  });

  const client = (): Promise<ManualHandshake> => rig.client();

  /** Sends raw bytes from the client's address and waits until the server read them. */
  const inject = (m: ManualHandshake, datagram: Buffer): Promise<void> =>
    rig.delivered(() => m.send(datagram));

  const served = (m: ManualHandshake): Promise<void> => rig.served(m, 0x5100);

  test('a forged epoch-1 record between the CKE and the real Finished is dropped silently', async () => {
    const m = await client();
    await m.hello();
    m.sendCke();
    const badMac = srv.stats.drops['bad-mac'];
    const failed = { ...srv.stats.handshakesFailed };
    // what a spoofer sends from the device's address: a CCS and a "Finished" of random bytes
    await inject(
      m,
      Buffer.concat([
        plainRecord(ContentType.changeCipherSpec, DTLS_1_2, 0, 90, CHANGE_CIPHER_SPEC),
        plainRecord(ContentType.handshake, DTLS_1_2, 1, 0, randomBytes(40)),
      ]),
    );
    await waitFor(() => srv.stats.drops['bad-mac'] > badMac, 2_000, 'the forgery dropped');
    // the genuine CCS + Finished: finish() throws on any alert or a bad server Finished
    await m.finish();
    assert.deepEqual(m.plainAlerts(), [], 'no alert was sent');
    assert.deepEqual(srv.stats.handshakesFailed, failed, 'no handshake failed');
    await served(m);
  });

  test('a late copy of the ClientHello that made the association starts no handshake', async () => {
    const m = await client();
    await m.establish();
    // sent: [ClientHello, ClientHello with cookie, ClientKeyExchange, CCS + Finished]
    const helloWithCookie = m.sent[1];
    assert.ok(helloWithCookie !== undefined);
    const started = srv.stats.handshakesStarted;
    const dups = srv.stats.drops['duplicate-client-hello'];
    m.drain();
    await inject(m, helloWithCookie);
    await waitFor(
      () => srv.stats.drops['duplicate-client-hello'] > dups,
      2_000,
      'the copy recognised',
    );
    assert.equal(srv.stats.handshakesStarted, started, 'no second handshake');
    assert.equal(srv.dtls.handshakeCount, 0, 'nothing half-open for this peer');
    assert.deepEqual(m.plainAlerts(), []);
    await served(m);
  });
});
