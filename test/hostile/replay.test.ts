/**
 * Replayed records. A record the good client sent, sent again (same bytes),
 * is dropped as a replay and the CoAP layer answers it only once; reordering inside the
 * 64-record window is fine; anything older than the window is refused; a captured Finished
 * replayed after the handshake does nothing; a captured ClientHello with its cookie replayed
 * from another port earns only a HelloVerifyRequest.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ContentType } from '../../src/dtls/constants.js';
import {
  GoodClient,
  ManualHandshake,
  OTHER_IDENTITY,
  OTHER_PSK,
  SocketPool,
  dropDelta,
  hvrCookie,
  pump,
  snapshot,
  startGateway,
  waitFor,
  type HostileServer,
} from '../helpers/hostile.js';
import type { Gateway } from '../../src/gateway/index.js';

describe('hostile: replayed records', () => {
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

  const send = async (d: Buffer): Promise<void> => {
    const n = srv.stats.datagramsIn;
    good.client.sendRaw(d);
    await waitFor(() => srv.stats.datagramsIn > n, 2_000, 'server to read');
  };
  const answersTo = (id: number): number => good.received.filter((m) => good.matches(id, m)).length;

  test('the same record twice: the second is a replay, CoAP answers once', async () => {
    const id = 0x4000;
    const rec = good.client.sealRecord(ContentType.applicationData, good.payload(id));
    assert.ok(rec !== undefined);
    const requests = srv.gateway.coap.stats.requests;
    const s0 = snapshot(srv.stats);
    const first = good.waitMessage((m) => good.matches(id, m), 3_000, 'first answer');
    await send(rec);
    await first;
    await send(rec);
    await send(Buffer.from(rec));
    // a later request on the same flow is answered after anything the replays caused
    await good.ask();
    assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { replay: 2 });
    assert.equal(answersTo(id), 1);
    assert.equal(srv.gateway.coap.stats.requests, requests + 2, 'the replays are no requests');
  });

  test('reordered inside the window: all accepted once; every replay dropped', async () => {
    const ids = [0x4100, 0x4101, 0x4102, 0x4103];
    const recs = ids.map((id) => {
      const r = good.client.sealRecord(ContentType.applicationData, good.payload(id));
      assert.ok(r !== undefined);
      return r;
    });
    const order = [3, 0, 2, 1];
    const s0 = snapshot(srv.stats);
    for (const i of order) await send(recs[i]!);
    for (const i of order) await send(recs[i]!);
    // the whole batch once more, in one datagram
    await send(Buffer.concat(recs));
    await waitFor(() => ids.every((id) => answersTo(id) >= 1), 3_000, 'four answers');
    await good.ask(); // answered after any wrong extra answer to the batch
    assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { replay: 8 });
    for (const id of ids) assert.equal(answersTo(id), 1, `answers to ${id}`);
  });

  test('a record older than the 64-record window is refused even if it was never seen', async () => {
    const oldId = 0x4200;
    const old = good.client.sealRecord(ContentType.applicationData, good.payload(oldId));
    assert.ok(old !== undefined);
    // 64 newer records pass first
    const newer: Buffer[] = [];
    for (let i = 0; i < 64; i++) {
      const r = good.client.sealRecord(ContentType.applicationData, good.payload(0x4300 + i));
      assert.ok(r !== undefined);
      newer.push(r);
    }
    for (let i = 0; i < newer.length; i += 8) await send(Buffer.concat(newer.slice(i, i + 8)));
    await waitFor(() => answersTo(0x4300 + 63) === 1, 3_000, 'answers to the newer records');
    const s0 = snapshot(srv.stats);
    await send(old);
    // answered after any answer the old record would have had
    const { attempts } = await good.ask();
    assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { replay: 1 });
    assert.equal(answersTo(oldId), 0);
    assert.equal(attempts, 1);
  });

  test('a captured client Finished replayed after the handshake is a replay, not a trigger', async () => {
    const m = await ManualHandshake.open(srv.port, OTHER_IDENTITY, OTHER_PSK);
    try {
      await m.establish();
      const finished = m.sent.at(-1);
      assert.ok(finished !== undefined);
      const s0 = snapshot(srv.stats);
      const retransmissions = srv.stats.retransmissions;
      m.drain();
      m.send(finished);
      m.send(finished);
      await waitFor(() => srv.stats.datagramsIn - s0.datagramsIn >= 2, 2_000, 'read');
      // the association works; its answer comes after anything the replays caused
      m.sendData(good.payload(0x4400));
      const answer = await m.nextData(2_000);
      assert.ok(answer.length > 0);
      const d = dropDelta(s0.drops, snapshot(srv.stats).drops);
      // the datagram is CCS (epoch 0: unexpected for an association) + Finished (epoch 1, replay)
      assert.deepEqual(d, { replay: 2, 'unexpected-record': 2 });
      assert.equal(srv.stats.retransmissions, retransmissions);
    } finally {
      await m.close();
    }
  });

  test('a ClientHello with a cookie, replayed from another port, gets only a HelloVerifyRequest', async () => {
    const m = await ManualHandshake.open(srv.port, OTHER_IDENTITY, OTHER_PSK);
    const pool = await SocketPool.open(4);
    try {
      await m.hello();
      const ch2 = m.sent[1];
      assert.ok(ch2 !== undefined);
      const s0 = snapshot(srv.stats);
      const handshakes = srv.dtls.handshakeCount;
      await pump(srv, srv.port, pool, [
        [0, ch2],
        [1, ch2],
        [2, ch2],
        [3, ch2],
      ]);
      await waitFor(() => pool.received.length === 4, 2_000, 'four answers');
      const s1 = snapshot(srv.stats);
      assert.equal(s1.helloVerifySent - s0.helloVerifySent, 4);
      assert.equal(s1.handshakesStarted, s0.handshakesStarted);
      assert.equal(srv.dtls.handshakeCount, handshakes);
      for (const r of pool.received) assert.ok(hvrCookie(r.data) !== undefined);
    } finally {
      await pool.close();
      await m.close();
    }
  });
});
