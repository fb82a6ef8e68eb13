/**
 * ClientHello floods from many source ports. Without cookies the server
 * keeps no state at all and answers each hello with one HelloVerifyRequest no larger than the
 * hello. With valid cookies (every attacker socket does the round trip, sends ClientHello2 and
 * stops there) the handshake table fills up to maxHandshakes and not one entry further; the
 * half-open handshakes expire after handshakeTimeoutSeconds. The good client is served throughout,
 * and a new client gets in as soon as slots free up.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ContentType, HandshakeType } from '../../src/dtls/constants.js';
import { COOKIE_LENGTH } from '../../src/dtls/cookie.js';
import { readFragments } from '../../src/dtls/handshake.js';
import {
  GoodClient,
  OTHER_IDENTITY,
  OTHER_PSK,
  Rng,
  SocketPool,
  clientHelloRecord,
  cookieHellos,
  dropDelta,
  hvrCookie,
  keepAsking,
  pump,
  records,
  snapshot,
  startGateway,
  waitFor,
  withTimeout,
  type HostileServer,
} from '../helpers/hostile.js';
import type { Gateway } from '../../src/gateway/index.js';

const SOCKETS = 200;
const HELLOS_PER_SOCKET = 50;
const MAX_HANDSHAKES = 50;
const EXTENSIONS: readonly (readonly [number, Buffer])[] = [
  [0xff01, Buffer.from([0])],
  [23, Buffer.alloc(0)],
];

/** Whether a datagram carries a ServerHello. */
function hasServerHello(d: Buffer): boolean {
  return records(d).some(
    (r) =>
      r.type === ContentType.handshake &&
      r.epoch === 0 &&
      readFragments(r.body).some((f) => f.msgType === HandshakeType.serverHello),
  );
}

describe('hostile: ClientHello floods from many source ports', () => {
  let srv: HostileServer & { readonly gateway: Gateway };
  let good: GoodClient;

  before(async () => {
    srv = await startGateway({ maxHandshakes: MAX_HANDSHAKES, handshakeTimeoutSeconds: 1 });
    good = await GoodClient.connect(srv.port);
    await good.ask();
  });

  after(async () => {
    await good?.close();
    await srv?.close();
  });

  test(`${SOCKETS} sockets x ${HELLOS_PER_SOCKET} cookie-less ClientHellos: HelloVerifyRequests only, no state`, async (t) => {
    const pool = await SocketPool.open(SOCKETS);
    let asking: { stop: () => Promise<number> } | undefined;
    try {
      const rng = new Rng(0xf100d);
      const hellos: [number, Buffer][] = [];
      for (let j = 0; j < HELLOS_PER_SOCKET; j++) {
        for (let i = 0; i < SOCKETS; i++) {
          hellos.push([
            i,
            clientHelloRecord({ random: rng.bytes(32), recordSeq: j, extensions: EXTENSIONS }),
          ]);
        }
      }
      const helloSize = hellos[0]![1].length;
      const s0 = snapshot(srv.stats);
      const associations = srv.dtls.associationCount;
      let maxHandshakes = 0;
      const ask = keepAsking(good);
      asking = ask;
      const started = Date.now();
      await pump(srv, srv.port, pool, hellos, {
        burst: 100,
        between: () => {
          maxHandshakes = Math.max(maxHandshakes, srv.dtls.handshakeCount);
        },
      });
      const floodMs = Date.now() - started;
      const answers = await ask.stop();
      const total = SOCKETS * HELLOS_PER_SOCKET;
      await waitFor(() => pool.received.length >= total, 5_000, 'all HelloVerifyRequests');
      const s1 = snapshot(srv.stats);

      assert.equal(s1.helloVerifySent - s0.helloVerifySent, total);
      assert.equal(s1.handshakesStarted, s0.handshakesStarted);
      assert.deepEqual(dropDelta(s0.drops, s1.drops), {});
      assert.equal(maxHandshakes, 0);
      assert.equal(srv.dtls.handshakeCount, 0);
      assert.equal(srv.dtls.associationCount, associations);
      t.diagnostic(
        `${total} hellos in ${floodMs} ms; good client answered ${answers} times meanwhile`,
      );
      assert.ok(answers >= 1, 'the good client was answered during the flood');

      // what came back: exactly one HelloVerifyRequest per hello, smaller than the hello,
      // carrying the hello's record sequence number (RFC 6347 §4.2.1)
      assert.equal(pool.received.length, total);
      const seqs = new Map<number, Set<number>>();
      for (const { socket, data } of pool.received) {
        assert.ok(data.length < helloSize, `HVR ${data.length} >= hello ${helloSize} bytes`);
        const cookie = hvrCookie(data);
        assert.equal(cookie?.length, COOKIE_LENGTH);
        const set = seqs.get(socket) ?? new Set<number>();
        set.add(records(data)[0]!.seq);
        seqs.set(socket, set);
      }
      assert.equal(seqs.size, SOCKETS);
      for (const s of seqs.values()) assert.equal(s.size, HELLOS_PER_SOCKET);
      assert.deepEqual(srv.internalErrors, []);
    } finally {
      await asking?.stop().catch(() => undefined);
      await pool.close();
    }
  });

  test(`${SOCKETS} sockets with valid cookies: the table stops at maxHandshakes (${MAX_HANDSHAKES}) and drains by timeout`, async (t) => {
    const pool = await SocketPool.open(SOCKETS);
    let late: GoodClient | undefined;
    let asking: { stop: () => Promise<number> } | undefined;
    let sampler: NodeJS.Timeout | undefined;
    try {
      const rng = new Rng(0xc00c1e);
      const randoms = Array.from({ length: SOCKETS }, () => rng.bytes(32));
      // round trip 1: cookie-less hellos, collect one cookie per socket
      await pump(
        srv,
        srv.port,
        pool,
        randoms.map(
          (r, i) => [i, clientHelloRecord({ random: r, extensions: EXTENSIONS })] as const,
        ),
      );
      await waitFor(() => pool.received.length >= SOCKETS, 3_000, 'one HVR per socket');
      const cookies = new Map<number, Buffer>();
      for (const { socket, data } of pool.received) {
        const c = hvrCookie(data);
        if (c !== undefined) cookies.set(socket, c);
      }
      assert.equal(cookies.size, SOCKETS);
      pool.received.length = 0;

      // round trip 2: ClientHello2 with the cookie, then silence
      const hello2 = cookieHellos(randoms, cookies, EXTENSIONS);
      const s0 = snapshot(srv.stats);
      let maxHandshakes = 0;
      sampler = setInterval(() => {
        maxHandshakes = Math.max(maxHandshakes, srv.dtls.handshakeCount);
      }, 1);
      const ask = keepAsking(good);
      asking = ask;
      await pump(srv, srv.port, pool, hello2, {
        burst: 20,
        between: () => {
          maxHandshakes = Math.max(maxHandshakes, srv.dtls.handshakeCount);
        },
      });
      // the good client's datagrams count in datagramsIn too: wait for the last hello
      await waitFor(
        () =>
          srv.stats.handshakesStarted -
            s0.handshakesStarted +
            srv.stats.drops['handshake-limit'] -
            s0.drops['handshake-limit'] >=
          SOCKETS,
        3_000,
        'every ClientHello2 read',
      );
      const s1 = snapshot(srv.stats);
      assert.equal(s1.handshakesStarted - s0.handshakesStarted, MAX_HANDSHAKES);
      assert.deepEqual(dropDelta(s0.drops, s1.drops), {
        'handshake-limit': SOCKETS - MAX_HANDSHAKES,
      });
      assert.equal(srv.dtls.handshakeCount, MAX_HANDSHAKES);

      // the admitted attackers repeat their ClientHello2: flight 4 again, no new handshake
      const admitted = new Set<number>();
      await waitFor(
        () => {
          for (const { socket, data } of pool.received)
            if (hasServerHello(data)) admitted.add(socket);
          return admitted.size >= MAX_HANDSHAKES;
        },
        3_000,
        'ServerHello flights',
      );
      assert.equal(admitted.size, MAX_HANDSHAKES);
      const retransmissions = srv.stats.retransmissions;
      await pump(
        srv,
        srv.port,
        pool,
        hello2.filter(([i]) => admitted.has(i)),
      );
      assert.equal(srv.stats.retransmissions - retransmissions, MAX_HANDSHAKES);
      assert.equal(srv.stats.handshakesStarted, s1.handshakesStarted);
      assert.equal(srv.dtls.handshakeCount, MAX_HANDSHAKES);

      // a new client now: refused while the table is full, admitted once slots free up
      const t0 = Date.now();
      const lateConnect = GoodClient.connect(srv.port, {
        identity: OTHER_IDENTITY,
        psk: OTHER_PSK,
        retransmitTimeoutMs: 200,
        handshakeTimeoutMs: 8_000,
      });
      late = await withTimeout(lateConnect, 10_000, 'late client');
      const waited = Date.now() - t0;
      assert.ok(
        srv.stats.drops['handshake-limit'] > s1.drops['handshake-limit'],
        'it was refused first',
      );
      assert.equal((await late.ask()).attempts, 1);

      await waitFor(
        () => srv.stats.handshakesFailed.timeout - s0.handshakesFailed.timeout >= MAX_HANDSHAKES,
        5_000,
        'half-open handshakes to time out',
      );
      clearInterval(sampler);
      const answers = await ask.stop();
      assert.equal(srv.dtls.handshakeCount, 0);
      assert.ok(maxHandshakes <= MAX_HANDSHAKES, `handshake table reached ${maxHandshakes}`);
      assert.equal(
        srv.stats.handshakesFailed.timeout - s0.handshakesFailed.timeout,
        MAX_HANDSHAKES,
      );
      t.diagnostic(
        `late client connected after ${waited} ms; table peak ${maxHandshakes}; good client answered ${answers} times`,
      );
      assert.ok(answers >= 1, 'the good client was answered during the flood');
      assert.equal((await good.ask()).attempts, 1);
      assert.ok(waited < 8_000, `late client waited ${waited} ms`);
      assert.deepEqual(srv.internalErrors, []);
    } finally {
      clearInterval(sampler);
      await asking?.stop().catch(() => undefined);
      await late?.close();
      await pool.close();
    }
  });
});
