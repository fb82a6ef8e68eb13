/**
 * Alerts. An alert in the clear (epoch 0) cannot be authenticated, so a
 * forged fatal alert or close_notify for an established association changes nothing; forged
 * epoch-1 alerts fail authentication. A genuine (sealed) close_notify or fatal alert ends the
 * association, and a replay of it afterwards finds nobody.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { CipherSuite, ContentType, DTLS_1_2, HandshakeType } from '../../src/dtls/constants.js';
import { clientHelloBody, handshakeMessage } from '../../src/dtls/handshake.js';
import { plainRecord } from '../../src/dtls/record.js';
import {
  GoodClient,
  OTHER_IDENTITY,
  OTHER_PSK,
  Rng,
  SocketPool,
  dropDelta,
  pump,
  snapshot,
  startGateway,
  waitFor,
  type HostileServer,
} from '../helpers/hostile.js';
import type { Gateway } from '../../src/gateway/index.js';

const FATAL = 2;
const WARNING = 1;

describe('hostile: alerts', () => {
  let srv: HostileServer & { readonly gateway: Gateway };
  let good: GoodClient;

  before(async () => {
    srv = await startGateway();
    good = await GoodClient.connect(srv.port);
    await good.ask();
  });

  after(async () => {
    await good?.close();
    await srv?.close();
  });

  const sendAs = async (c: GoodClient, d: Buffer): Promise<void> => {
    const n = srv.stats.datagramsIn;
    c.client.sendRaw(d);
    await waitFor(() => srv.stats.datagramsIn > n, 2_000, 'server to read');
  };

  test('alerts in the clear from the peer address do not tear the association down', async () => {
    const s0 = snapshot(srv.stats);
    const alerts = [
      [FATAL, 40], // handshake_failure
      [FATAL, 20], // bad_record_mac
      [FATAL, 10], // unexpected_message
      [WARNING, 0], // close_notify
      [FATAL, 0],
    ];
    let seq = 100;
    for (const a of alerts) {
      await sendAs(good, plainRecord(ContentType.alert, DTLS_1_2, 0, seq++, Buffer.from(a)));
    }
    // the same, all in one datagram
    await sendAs(
      good,
      Buffer.concat(
        alerts.map((a) => plainRecord(ContentType.alert, DTLS_1_2, 0, seq++, Buffer.from(a))),
      ),
    );
    const s1 = snapshot(srv.stats);
    assert.equal(s1.recordsIn - s0.recordsIn, 2 * alerts.length);
    assert.deepEqual(dropDelta(s0.closed, s1.closed), {});
    assert.equal(srv.dtls.associationCount, 1);
    assert.equal((await good.ask()).attempts, 1);
  });

  test('alerts in the clear from another port are unknown-peer drops', async () => {
    const pool = await SocketPool.open(1);
    try {
      const s0 = snapshot(srv.stats);
      await pump(srv, srv.port, pool, [
        [0, plainRecord(ContentType.alert, DTLS_1_2, 0, 1, Buffer.from([FATAL, 40]))],
        [0, plainRecord(ContentType.alert, DTLS_1_2, 1, 1, Buffer.from([FATAL, 40]))],
      ]);
      assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { 'unknown-peer': 2 });
      assert.equal(srv.dtls.associationCount, 1);
    } finally {
      await pool.close();
    }
  });

  test('forged epoch-1 alerts fail authentication and change nothing', async () => {
    const rng = new Rng(7);
    const sealed = good.client.sealRecord(ContentType.alert, Buffer.from([FATAL, 40]));
    assert.ok(sealed !== undefined);
    const flipped = Buffer.from(sealed);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 0x10;
    const random = Buffer.concat([sealed.subarray(0, 13), rng.bytes(sealed.length - 13)]);
    random.writeUIntBE(2 ** 48 - 1, 5, 6);
    const s0 = snapshot(srv.stats);
    await sendAs(good, flipped);
    await sendAs(good, random);
    assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { 'bad-mac': 2 });
    assert.deepEqual(dropDelta(s0.closed, snapshot(srv.stats).closed), {});
    assert.equal(srv.dtls.associationCount, 1);
    assert.equal((await good.ask()).attempts, 1);
  });

  test('a sealed warning alert and a renegotiation ClientHello keep the association', async () => {
    const s0 = snapshot(srv.stats);
    const warn = good.client.sealRecord(ContentType.alert, Buffer.from([WARNING, 100]));
    const hello = good.client.sealRecord(
      ContentType.handshake,
      handshakeMessage(
        HandshakeType.clientHello,
        4,
        clientHelloBody({
          random: Buffer.alloc(32, 9),
          cookie: Buffer.alloc(0),
          cipherSuites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
          extensions: undefined,
        }),
      ),
    );
    assert.ok(warn !== undefined && hello !== undefined);
    const out = srv.stats.datagramsOut;
    await sendAs(good, warn);
    await sendAs(good, hello);
    const s1 = snapshot(srv.stats);
    assert.deepEqual(dropDelta(s0.drops, s1.drops), {});
    assert.deepEqual(dropDelta(s0.closed, s1.closed), {});
    assert.equal(srv.stats.datagramsOut - out, 1, 'one no_renegotiation warning');
    assert.equal(s1.handshakesStarted, s0.handshakesStarted);
    assert.equal(srv.dtls.associationCount, 1);
    assert.equal((await good.ask()).attempts, 1);
  });

  test('a genuine fatal alert ends the association; its replay finds nobody', async () => {
    const other = await GoodClient.connect(srv.port, { identity: OTHER_IDENTITY, psk: OTHER_PSK });
    try {
      assert.equal(srv.dtls.associationCount, 2);
      const fatal = other.client.sealRecord(ContentType.alert, Buffer.from([FATAL, 40]));
      assert.ok(fatal !== undefined);
      const s0 = snapshot(srv.stats);
      await sendAs(other, fatal);
      assert.deepEqual(dropDelta(s0.closed, snapshot(srv.stats).closed), {
        'peer-fatal-alert': 1,
      });
      assert.equal(srv.dtls.associationCount, 1);
      const s1 = snapshot(srv.stats);
      await sendAs(other, fatal);
      assert.deepEqual(dropDelta(s1.drops, snapshot(srv.stats).drops), { 'unknown-peer': 1 });
    } finally {
      await other.close();
    }
    assert.equal((await good.ask()).attempts, 1);
  });

  test('a genuine close_notify ends the association; a new client connects afterwards', async () => {
    const s0 = snapshot(srv.stats);
    await good.close();
    await waitFor(() => srv.dtls.associationCount === 0, 2_000, 'association to close');
    assert.deepEqual(dropDelta(s0.closed, snapshot(srv.stats).closed), { 'peer-close-notify': 1 });
    good = await GoodClient.connect(srv.port);
    assert.equal((await good.ask()).attempts, 1);
    assert.equal(srv.dtls.associationCount, 1);
    assert.deepEqual(srv.internalErrors, []);
  });
});
