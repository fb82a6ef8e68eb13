/**
 * Fragments. A fragmented ClientHello is never answered. After a valid
 * cookie exchange the ClientKeyExchange arrives as overlapping fragments, duplicates, zero-
 * length fragments, a fragment claiming 1 MB, a fragment past its message end, fragments
 * disagreeing on the length, and messages far ahead. Overlaps and duplicates complete the
 * handshake; the rest is dropped or fails the handshake. Messages buffered ahead stop at the
 * reassembly cap (8192 bytes; only the next expected message may go past it). The good client
 * is served throughout.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { CipherSuite, HandshakeType } from '../../src/dtls/constants.js';
import { clientHelloBody, handshakeMessage } from '../../src/dtls/handshake.js';
import {
  ManualRig,
  SocketPool,
  dropDelta,
  fragment,
  pump,
  snapshot,
  waitFor,
  type GoodClient,
  type HostileServer,
  type ManualHandshake,
} from '../helpers/hostile.js';
import type { Gateway } from '../../src/gateway/index.js';
import { plainRecord } from '../../src/dtls/record.js';

const CKE = HandshakeType.clientKeyExchange;
const DECODE_ERROR = 50;

describe('hostile: handshake fragments', () => {
  let rig: ManualRig;
  let srv: HostileServer & { readonly gateway: Gateway };
  let good: GoodClient;

  before(async () => {
    rig = await ManualRig.start();
    srv = rig.srv;
    good = rig.good;
  });

  after(async () => {
    await rig?.close();
  });

  /** A fresh hand-driven client past the cookie exchange: the server holds its handshake. */
  const afterCookie = async (): Promise<ManualHandshake> => {
    const m = await rig.client();
    await m.hello();
    return m;
  };

  /** Sends and waits until the server read it. */
  const deliver = (m: ManualHandshake, ...fragments: Buffer[]): Promise<void> =>
    rig.delivered(() => m.sendHandshakeRecord(...fragments));

  /** The hand-driven client works as an association: a CoAP request is answered. */
  const served = (m: ManualHandshake): Promise<void> => rig.served(m, 0x5000);

  test('a fragmented ClientHello is never answered', async () => {
    const pool = await SocketPool.open(1);
    try {
      const body = clientHelloBody({
        random: Buffer.alloc(32, 3),
        cookie: Buffer.alloc(0),
        cipherSuites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
        extensions: [[23, Buffer.alloc(0)]],
      });
      const L = body.length;
      const half = Math.floor(L / 2);
      const ch = (fr: Buffer, seq = 0): Buffer => plainRecord(22, 0xfefd, 0, seq, fr);
      const f1 = fragment({
        msgType: 1,
        length: L,
        messageSeq: 0,
        offset: 0,
        data: body.subarray(0, half),
      });
      const f2 = fragment({
        msgType: 1,
        length: L,
        messageSeq: 0,
        offset: half,
        data: body.subarray(half),
      });
      const s0 = snapshot(srv.stats);
      // fragmented across records
      await pump(srv, srv.port, pool, [
        [0, ch(f1, 0)],
        [0, ch(f2, 1)],
        // a whole body under a 1 MB and a 16 MB length claim
        [
          0,
          ch(fragment({ msgType: 1, length: 0x100000, messageSeq: 0, offset: 0, data: body }), 2),
        ],
        [
          0,
          ch(
            fragment({
              msgType: 1,
              length: 0xffffff,
              messageSeq: 0,
              offset: 0xffffff - L,
              data: body,
            }),
            3,
          ),
        ],
      ]);
      const s1 = snapshot(srv.stats);
      assert.deepEqual(dropDelta(s0.drops, s1.drops), { 'fragmented-client-hello': 4 });
      // both halves in one record; a fragment past its own length; a fragment_length longer
      // than the bytes present
      await pump(srv, srv.port, pool, [
        [0, ch(Buffer.concat([f1, f2]), 4)],
        [0, ch(fragment({ msgType: 1, length: L, messageSeq: 0, offset: 1, data: body }), 5)],
        [
          0,
          ch(
            fragment({
              msgType: 1,
              length: L,
              messageSeq: 0,
              offset: 0,
              data: body,
              fragmentLength: L + 1,
            }),
            6,
          ),
        ],
      ]);
      assert.deepEqual(dropDelta(s1.drops, snapshot(srv.stats).drops), {
        'malformed-handshake': 3,
      });
      // the same ClientHello whole, from the same socket: its HelloVerifyRequest comes after
      // any answer to the fragments
      await pump(srv, srv.port, pool, [[0, ch(handshakeMessage(1, 0, body), 7)]]);
      await waitFor(() => pool.received.length > 0, 2_000, 'the HelloVerifyRequest');
      const [hvr, ...extra] = pool.received;
      assert.deepEqual(extra, [], 'no HelloVerifyRequest for any of the fragments');
      assert.deepEqual([hvr?.data[0], hvr?.data[13]], [22, HandshakeType.helloVerifyRequest]);
      assert.equal(srv.stats.helloVerifySent, s0.helloVerifySent + 1);
      assert.equal(srv.dtls.handshakeCount, 0);
    } finally {
      await pool.close();
    }
  });

  test('overlapping ClientKeyExchange fragments complete the handshake', async () => {
    const m = await afterCookie();
    const cke = m.ckeBody();
    const L = cke.length;
    const part = (a: number, b: number): Buffer =>
      fragment({ msgType: CKE, length: L, messageSeq: 2, offset: a, data: cke.subarray(a, b) });
    const completed = srv.stats.handshakesCompleted;
    await deliver(m, part(0, 10));
    await deliver(m, part(5, 20));
    await deliver(m, part(15, L), part(3, 12)); // the last piece, plus an overlap in the same record
    await m.finish();
    assert.equal(srv.stats.handshakesCompleted, completed + 1);
    await served(m);
  });

  test('duplicate fragments and a duplicate whole message complete the handshake once', async () => {
    const m = await afterCookie();
    const cke = m.ckeBody();
    const L = cke.length;
    const part = (a: number, b: number): Buffer =>
      fragment({ msgType: CKE, length: L, messageSeq: 2, offset: a, data: cke.subarray(a, b) });
    const s0 = snapshot(srv.stats);
    await deliver(m, part(0, 8), part(0, 8));
    await deliver(m, part(0, 8));
    await deliver(m, part(8, L), part(8, L));
    // the whole message again, now behind the reassembler: ignored
    await deliver(m, handshakeMessage(CKE, 2, cke));
    await m.finish();
    const s1 = snapshot(srv.stats);
    assert.equal(s1.handshakesCompleted, s0.handshakesCompleted + 1);
    assert.deepEqual(dropDelta(s0.drops, s1.drops), {});
    await served(m);
  });

  test('zero-length fragments (CVE-2014-3507 shape) do not block the handshake', async () => {
    const m = await afterCookie();
    const cke = m.ckeBody();
    const L = cke.length;
    const empties: Buffer[] = [];
    for (let off = 0; off <= L; off++) {
      empties.push(
        fragment({ msgType: CKE, length: L, messageSeq: 2, offset: off, data: Buffer.alloc(0) }),
      );
    }
    // the reassembler counts such a message's length once, however many empty pieces
    // arrive (unit test "zero-length fragments ..." in test/unit/dtls/reassembly.test.ts)
    for (let i = 0; i < 20; i++) await deliver(m, ...empties);
    m.sendCke();
    await m.finish();
    await served(m);
  });

  test('a fragment claiming 1 MB (and 16 MB) is dropped; the real message still completes', async () => {
    const m = await afterCookie();
    const cke = m.ckeBody();
    const handshakes = srv.dtls.handshakeCount;
    const s0 = snapshot(srv.stats);
    await deliver(
      m,
      fragment({ msgType: CKE, length: 0x100000, messageSeq: 2, offset: 0, data: cke }),
    );
    await deliver(
      m,
      fragment({ msgType: CKE, length: 0xffffff, messageSeq: 2, offset: 0x10000, data: cke }),
    );
    await deliver(
      m,
      fragment({ msgType: CKE, length: 4097, messageSeq: 2, offset: 4097 - cke.length, data: cke }),
    );
    assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { 'malformed-handshake': 3 });
    assert.equal(srv.dtls.handshakeCount, handshakes, 'the handshake is still there');
    m.sendCke();
    await m.finish();
    await served(m);
  });

  test('message_seq far ahead is dropped; behind is ignored; the real message completes', async () => {
    const m = await afterCookie();
    const cke = m.ckeBody();
    const s0 = snapshot(srv.stats);
    for (const seq of [6, 100, 0xffff]) await deliver(m, handshakeMessage(CKE, seq, cke));
    for (const seq of [0, 1]) await deliver(m, handshakeMessage(CKE, seq, cke));
    assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { 'malformed-handshake': 3 });
    m.sendCke();
    await m.finish();
    await served(m);
  });

  test('messages buffered ahead stop at the 8192-byte cap; junk ahead fails the handshake', async () => {
    const m = await afterCookie();
    const s0 = snapshot(srv.stats);
    // seq 3, 4, 5 (inside the look-ahead of 4), each claiming 4096 bytes
    for (const seq of [3, 4, 5]) {
      await deliver(
        m,
        fragment({
          msgType: 20,
          length: 4096,
          messageSeq: seq,
          offset: 0,
          data: Buffer.alloc(100, 1),
        }),
      );
    }
    assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { 'malformed-handshake': 1 });
    // The expected ClientKeyExchange (seq 2) still gets in past the cap, but the junk at seq 3
    // (4096 bytes) then disagrees with the real Finished (12 bytes, seq 3): decode_error, and
    // the server forgets the handshake.
    const failed = srv.stats.handshakesFailed['protocol-error'];
    const handshakes = srv.dtls.handshakeCount;
    m.sendCke();
    await assert.rejects(m.finish(), /alert 0232/);
    assert.equal(srv.stats.handshakesFailed['protocol-error'], failed + 1);
    assert.equal(srv.stats.handshakesCompleted, s0.handshakesCompleted);
    assert.equal(srv.dtls.handshakeCount, handshakes - 1);
  });

  test('a fragment reaching past its message end fails the handshake with decode_error', async () => {
    const m = await afterCookie();
    const cke = m.ckeBody();
    const failed = srv.stats.handshakesFailed['protocol-error'];
    const handshakes = srv.dtls.handshakeCount;
    await deliver(
      m,
      fragment({
        msgType: CKE,
        length: cke.length,
        messageSeq: 2,
        offset: cke.length - 5,
        data: cke,
      }),
    );
    await waitFor(() => m.plainAlerts().length > 0, 2_000, 'alert');
    assert.deepEqual(m.plainAlerts(), [[2, DECODE_ERROR]]);
    assert.equal(srv.stats.handshakesFailed['protocol-error'], failed + 1);
    assert.equal(srv.dtls.handshakeCount, handshakes - 1);
  });

  test('fragments of one message disagreeing on its length fail the handshake', async () => {
    const m = await afterCookie();
    const cke = m.ckeBody();
    const L = cke.length;
    const failed = srv.stats.handshakesFailed['protocol-error'];
    const handshakes = srv.dtls.handshakeCount;
    await deliver(
      m,
      fragment({ msgType: CKE, length: L, messageSeq: 2, offset: 0, data: cke.subarray(0, 10) }),
    );
    await deliver(
      m,
      fragment({ msgType: CKE, length: L + 40, messageSeq: 2, offset: 10, data: cke.subarray(10) }),
    );
    await waitFor(() => m.plainAlerts().length > 0, 2_000, 'alert');
    assert.deepEqual(m.plainAlerts(), [[2, DECODE_ERROR]]);
    assert.equal(srv.stats.handshakesFailed['protocol-error'], failed + 1);
    assert.equal(srv.dtls.handshakeCount, handshakes - 1);
  });

  test('afterwards: the good client is served and a new client connects', async () => {
    assert.equal((await good.ask()).attempts, 1);
    const m = await rig.client();
    await m.establish();
    await served(m);
    assert.deepEqual(srv.internalErrors, []);
  });
});
