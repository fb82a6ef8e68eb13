/**
 * Garbage. Random datagrams, truncated headers, lying length fields,
 * zero-length records, wrong versions, epoch-1 records from strangers, application data in
 * the clear. Every one is dropped and counted; nothing escapes into onInternalError; the good
 * client keeps its answers throughout and a new client can connect afterwards.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ContentType, DTLS_1_2, MAX_RECORD_BODY } from '../../src/dtls/constants.js';
import { plainRecord, readRecord } from '../../src/dtls/record.js';
import {
  GoodClient,
  OTHER_IDENTITY,
  OTHER_PSK,
  Rng,
  SocketPool,
  clientHelloRecord,
  dropDelta,
  keepAsking,
  pump,
  snapshot,
  startGateway,
  waitFor,
  type HostileServer,
} from '../helpers/hostile.js';
import type { Gateway } from '../../src/gateway/index.js';

describe('hostile: garbage datagrams', () => {
  let srv: HostileServer & { readonly gateway: Gateway };
  let good: GoodClient;
  let pool: SocketPool;

  before(async () => {
    srv = await startGateway({ maxHandshakes: 50 });
    good = await GoodClient.connect(srv.port);
    pool = await SocketPool.open(32);
    await good.ask();
  });

  after(async () => {
    await good?.close();
    await pool?.close();
    await srv?.close();
  });

  /** The good client's own address, as the server sees it. */
  const sendAsGood = async (d: Buffer): Promise<void> => {
    const before = srv.stats.datagramsIn;
    good.client.sendRaw(d);
    await waitFor(() => srv.stats.datagramsIn > before, 2_000, 'server to read the datagram');
  };

  test('5000 random datagrams of 0..1500 bytes from 32 ports, while the good client asks', async () => {
    const rng = new Rng(0xc0ffee);
    const datagrams: [number, Buffer][] = [];
    for (let i = 0; i < 5000; i++) datagrams.push([i % 32, rng.bytes(rng.int(1501))]);
    const unreadable = datagrams.filter(([, d]) => d.length > 0 && readRecord(d, 0) === undefined);
    const empty = datagrams.filter(([, d]) => d.length === 0).length;

    const s0 = snapshot(srv.stats);
    const asking = keepAsking(good);
    let sent: number;
    try {
      // small bursts: up to 1500 bytes each, and the kernel buffer (SO_RCVBUF) is ~200 KB
      sent = await pump(srv, srv.port, pool, datagrams, { burst: 16 });
    } finally {
      await asking.stop().catch(() => undefined);
    }
    const answers = await asking.stop();
    // the good client's datagrams count in datagramsIn too: wait for the last garbage
    const expected = s0.drops['malformed-record'] + unreadable.length + empty;
    await waitFor(() => srv.stats.drops['malformed-record'] >= expected, 3_000, 'all garbage read');
    const s1 = snapshot(srv.stats);
    const d = dropDelta(s0.drops, s1.drops);

    assert.equal(sent, 5000);
    assert.ok(s1.datagramsIn - s0.datagramsIn >= 5000);
    // every empty datagram, and every datagram whose first record does not parse, is exactly
    // one malformed-record drop
    assert.ok(
      (d['malformed-record'] ?? 0) >= unreadable.length + empty,
      `malformed ${d['malformed-record']} < ${unreadable.length} + ${empty}`,
    );
    assert.ok(unreadable.length > 4900, `${unreadable.length} unreadable of 5000`);
    assert.ok(empty > 0, 'the seed yields some empty datagrams');
    assert.equal(s1.helloVerifySent - s0.helloVerifySent, 0);
    assert.equal(s1.handshakesStarted - s0.handshakesStarted, 0);
    assert.equal(srv.dtls.handshakeCount, 0);
    assert.equal(srv.dtls.associationCount, 1);
    assert.deepEqual(srv.internalErrors, []);
    assert.ok(answers >= 1, 'the good client got answers during the flood');
    assert.ok((await good.ask()).attempts >= 1);
  });

  test('truncated record headers (1..12 bytes), from a stranger and from the good peer', async () => {
    const rec = good.client.sealRecord(ContentType.applicationData, Buffer.from('x'));
    assert.ok(rec !== undefined);
    const s0 = snapshot(srv.stats);
    for (let n = 1; n < 13; n++) {
      await pump(srv, srv.port, pool, [[0, rec.subarray(0, n)]]);
      await sendAsGood(rec.subarray(0, n));
    }
    const d = dropDelta(s0.drops, snapshot(srv.stats).drops);
    assert.deepEqual(d, { 'malformed-record': 24 });
    assert.equal(srv.dtls.associationCount, 1);
    await good.ask();
  });

  test('length fields past the datagram end or above the RFC maximum', async () => {
    const rec = good.client.sealRecord(ContentType.applicationData, Buffer.from('y'));
    assert.ok(rec !== undefined);
    const lying = (len: number, bodyBytes = rec.length - 13): Buffer => {
      const b = Buffer.alloc(13 + bodyBytes);
      rec.copy(b, 0, 0, Math.min(rec.length, b.length));
      b.writeUInt16BE(len, 11);
      return b;
    };
    const s0 = snapshot(srv.stats);
    const cases = [
      lying(rec.length - 13 + 1), // one byte short
      lying(0xffff),
      lying(MAX_RECORD_BODY + 1, MAX_RECORD_BODY + 1), // present, but over 2^14 + 2048
    ];
    for (const c of cases) {
      await pump(srv, srv.port, pool, [[1, c]]);
      await sendAsGood(c);
    }
    assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { 'malformed-record': 6 });

    // a genuine record followed by a truncated one: the first is served, the tail dropped
    const id = 0x7001;
    const genuine = good.client.sealRecord(ContentType.applicationData, good.payload(id));
    assert.ok(genuine !== undefined);
    const answered = good.waitMessage((m) => good.matches(id, m), 3_000, 'answer to record 1');
    const s1 = snapshot(srv.stats);
    await sendAsGood(Buffer.concat([genuine, rec.subarray(0, 20)]));
    await answered;
    assert.deepEqual(dropDelta(s1.drops, snapshot(srv.stats).drops), { 'malformed-record': 1 });
    assert.equal(srv.dtls.associationCount, 1);
  });

  test('zero-length records: 100 per datagram from a stranger, and in epoch 1 from the peer', async () => {
    const zero = (type: number, epoch: number, seq: number): Buffer =>
      plainRecord(type, DTLS_1_2, epoch, seq, Buffer.alloc(0));
    const many: Buffer[] = [];
    for (let i = 0; i < 100; i++) many.push(zero([20, 21, 22, 23][i % 4] ?? 23, i % 2, i));
    const s0 = snapshot(srv.stats);
    await pump(srv, srv.port, pool, [[2, Buffer.concat(many)]]);
    assert.equal(snapshot(srv.stats).recordsIn - s0.recordsIn, 100);
    assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { 'unknown-peer': 100 });

    // from the established peer: an epoch-1 record without body cannot authenticate
    const s1 = snapshot(srv.stats);
    for (const type of [21, 22, 23]) await sendAsGood(zero(type, 1, 1_000_000 + type));
    assert.deepEqual(dropDelta(s1.drops, snapshot(srv.stats).drops), { 'bad-mac': 3 });
    assert.equal(srv.dtls.associationCount, 1);
    await good.ask();
  });

  test('wrong version bytes are malformed; a ClientHello in TLS 1.2 framing gets no answer', async () => {
    const ch = clientHelloRecord({ random: Buffer.alloc(32, 7) });
    const s0 = snapshot(srv.stats);
    const versions = [0x0303, 0x0000, 0xffff, 0x0100, 0xfdfd];
    for (const v of versions) {
      const b = Buffer.from(ch);
      b.writeUInt16BE(v, 1);
      await pump(srv, srv.port, pool, [[3, b]]);
    }
    const s1 = snapshot(srv.stats);
    assert.deepEqual(dropDelta(s0.drops, s1.drops), { 'malformed-record': versions.length });
    assert.equal(s1.helloVerifySent, s0.helloVerifySent);
  });

  test('epoch-1 records from unknown addresses', async () => {
    const rng = new Rng(11);
    const s0 = snapshot(srv.stats);
    const datagrams: [number, Buffer][] = [];
    for (let i = 0; i < 500; i++) {
      const type = [20, 21, 22, 23][i % 4] ?? 23;
      const epoch = 1 + rng.int(0xffff);
      datagrams.push([
        i % 32,
        plainRecord(type, DTLS_1_2, epoch, rng.int(2 ** 40), rng.bytes(rng.int(200))),
      ]);
    }
    await pump(srv, srv.port, pool, datagrams);
    assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { 'unknown-peer': 500 });
    assert.equal(pool.received.length, 0, 'nothing is answered');
  });

  test('application data in epoch 0: dropped from strangers, never reaches CoAP from the peer', async () => {
    const id = 0x7100;
    const cleartext = plainRecord(ContentType.applicationData, DTLS_1_2, 0, 5, good.payload(id));
    const s0 = snapshot(srv.stats);
    await pump(srv, srv.port, pool, [[4, cleartext]]);
    assert.deepEqual(dropDelta(s0.drops, snapshot(srv.stats).drops), { 'unknown-peer': 1 });

    const requests = srv.gateway.coap.stats.requests;
    const answered = good.waitMessage((m) => good.matches(id, m), 400, 'no answer expected');
    await sendAsGood(cleartext);
    await assert.rejects(answered, /timed out/);
    assert.equal(srv.gateway.coap.stats.requests, requests, 'CoAP saw no request');
    assert.equal(srv.stats.applicationRecordsIn, s0.applicationRecordsIn);
    assert.equal(srv.dtls.associationCount, 1);
  });

  test('ClientHello-shaped fuzz: each datagram gets exactly one outcome, no handshake, no crash', async () => {
    const rng = new Rng(0x5eed);
    const base = clientHelloRecord({
      random: Buffer.alloc(32, 1),
      extensions: [
        [0xff01, Buffer.from([0])],
        [23, Buffer.alloc(0)],
        [22, Buffer.alloc(0)],
      ],
    });
    const datagrams: [number, Buffer][] = [];
    for (let i = 0; i < 3000; i++) {
      let b = Buffer.from(base);
      const kind = i % 3;
      if (kind === 0) {
        // flip 1-4 bytes after the record header
        for (let k = 0, n = 1 + rng.int(4); k < n; k++) {
          const at = 13 + rng.int(b.length - 13);
          b[at] = rng.int(256);
        }
      } else if (kind === 1) {
        // truncate the handshake, keep the record length consistent
        const len = 13 + rng.int(b.length - 13);
        b = Buffer.from(b.subarray(0, len));
        b.writeUInt16BE(len - 13, 11);
      } else {
        // random tail after a genuine handshake header
        const tail = rng.bytes(rng.int(300));
        b = Buffer.concat([b.subarray(0, 25 + rng.int(40)), tail]);
        b.writeUInt16BE(b.length - 13, 11);
      }
      datagrams.push([i % 32, b]);
    }
    const s0 = snapshot(srv.stats);
    pool.received.length = 0;
    await pump(srv, srv.port, pool, datagrams);
    const s1 = snapshot(srv.stats);
    const d = dropDelta(s0.drops, s1.drops);
    const hvr = s1.helloVerifySent - s0.helloVerifySent;
    const outcomes = hvr + Object.values(d).reduce((a, b) => a + b, 0);
    assert.equal(outcomes, 3000, `outcomes ${JSON.stringify({ hvr, ...d })}`);
    assert.ok((d['malformed-handshake'] ?? 0) > 500);
    assert.equal(s1.handshakesStarted, s0.handshakesStarted);
    assert.equal(srv.dtls.handshakeCount, 0);
    assert.deepEqual(srv.internalErrors, []);
    // the server counts every datagram it sends, as it sends it: only the HelloVerifyRequests
    assert.equal(
      s1.datagramsOut - s0.datagramsOut,
      hvr,
      'the server sent only HelloVerifyRequests',
    );
    await waitFor(() => pool.received.length >= hvr, 2_000, 'HelloVerifyRequests');
    assert.equal(pool.received.length, hvr, 'nothing but HelloVerifyRequests comes back');
  });

  test('afterwards: the good client is still served and a new client connects', async () => {
    await good.ask();
    const other = await GoodClient.connect(srv.port, { identity: OTHER_IDENTITY, psk: OTHER_PSK });
    try {
      assert.equal(srv.dtls.associationCount, 2);
      assert.deepEqual(srv.internalErrors, []);
    } finally {
      await other.close();
    }
  });
});
