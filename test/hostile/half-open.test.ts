/**
 * Strangers filling the half-open handshake table. Attacker sockets do the
 * cookie round trip, send ClientHello2 and go silent. One host (or one /24) may only hold its
 * own share of the table, and once the table is under pressure a handshake whose client never
 * answered is given up after stalledHandshakeTimeoutSeconds. A legitimate device on another loopback
 * address (127.0.0.2: Linux loopback answers all of 127/8) keeps completing fresh handshakes
 * while the flood holds its slots; its success rate is measured.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { DtlsClient } from '../../src/dtls/client.js';
import {
  GOOD_IDENTITY,
  GOOD_PSK,
  Rng,
  SocketPool,
  clientHelloRecord,
  cookieHellos,
  hvrCookie,
  pump,
  settledHeapUsed,
  startGateway,
  waitFor,
  withTimeout,
  type GatewayOptions,
  type HostileServer,
} from '../helpers/hostile.js';
import type { Gateway } from '../../src/gateway/index.js';

const EXTENSIONS: readonly (readonly [number, Buffer])[] = [
  [0xff01, Buffer.from([0])],
  [23, Buffer.alloc(0)],
];

/** Every socket of the pool completes the cookie exchange, sends ClientHello2, then stalls. */
async function stall(srv: HostileServer, pool: SocketPool, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const n = pool.sockets.length;
  const randoms = Array.from({ length: n }, () => rng.bytes(32));
  pool.received.length = 0;
  await pump(
    srv,
    srv.port,
    pool,
    randoms.map((r, i) => [i, clientHelloRecord({ random: r, extensions: EXTENSIONS })] as const),
  );
  await waitFor(() => pool.received.length >= n, 5_000, 'one HVR per socket');
  const cookies = new Map<number, Buffer>();
  for (const { socket, data } of pool.received) {
    const c = hvrCookie(data);
    if (c !== undefined) cookies.set(socket, c);
  }
  assert.equal(cookies.size, n);
  pool.received.length = 0;
  pool.keepReceived = false;
  await pump(srv, srv.port, pool, cookieHellos(randoms, cookies, EXTENSIONS), { burst: 50 });
}

/** A legitimate device from 127.0.0.2: `tries` fresh handshakes, each with a deadline. */
async function legitimate(
  port: number,
  tries: number,
  handshakeTimeoutMs: number,
): Promise<{ ok: number; ms: number[] }> {
  let ok = 0;
  const ms: number[] = [];
  for (let i = 0; i < tries; i++) {
    const t0 = Date.now();
    try {
      const c = await withTimeout(
        DtlsClient.connect({
          host: '127.0.0.1',
          port,
          bindAddress: '127.0.0.2',
          identity: GOOD_IDENTITY,
          psk: GOOD_PSK,
          handshakeTimeoutMs,
          retransmitTimeoutMs: 200,
        }),
        handshakeTimeoutMs + 2_000,
        'legitimate handshake',
      );
      ms.push(Date.now() - t0);
      ok++;
      await c.close();
    } catch {
      // counted as a failure
    }
  }
  return { ok, ms };
}

describe('hostile: half-open handshakes from one host or one network', () => {
  let srv: HostileServer & { readonly gateway: Gateway };
  const start = async (o: GatewayOptions = {}): Promise<void> => {
    srv = await startGateway(o);
  };

  after(async () => {
    await srv?.close();
  });

  test('default limits: 1000 stalled source ports of one host hold 100 slots; a device elsewhere is served', async (t) => {
    await start();
    const heap0 = await settledHeapUsed();
    const pool = await SocketPool.open(1000);
    try {
      await stall(srv, pool, 0x3a1);
      await waitFor(
        () => srv.stats.handshakesStarted + (srv.stats.drops['address-limit'] ?? 0) >= 1000,
        5_000,
        'every ClientHello2 read',
      );
      assert.equal(srv.dtls.handshakeCount, 100);
      assert.equal(srv.stats.drops['address-limit'], 900);
      const heap1 = await settledHeapUsed();
      const r = await legitimate(srv.port, 10, 3_000);
      t.diagnostic(
        `table ${srv.dtls.handshakeCount} half-open; heap +${Math.round((heap1 - heap0) / 1024)} KiB for the flood; legitimate device ${r.ok}/10 handshakes (${r.ms.join(', ')} ms)`,
      );
      assert.equal(r.ok, 10);
      assert.equal(srv.dtls.handshakeCount, 100);
      assert.deepEqual(srv.internalErrors, []);
    } finally {
      await pool.close();
      await srv.close();
    }
  });

  test('default limits: five hosts of one /24 hold at most 400 slots together', async () => {
    await start();
    const pools: SocketPool[] = [];
    try {
      for (let a = 1; a <= 5; a++) pools.push(await SocketPool.open(100, `127.0.1.${a}`));
      for (const [i, p] of pools.entries()) await stall(srv, p, 0x24 + i);
      await waitFor(
        () => srv.stats.handshakesStarted + (srv.stats.drops['prefix-limit'] ?? 0) >= 500,
        5_000,
        'every ClientHello2 read',
      );
      assert.equal(srv.dtls.handshakeCount, 400);
      assert.equal(srv.stats.drops['prefix-limit'], 100);
      assert.equal((await legitimate(srv.port, 3, 3_000)).ok, 3);
    } finally {
      for (const p of pools) await p.close();
      await srv.close();
    }
  });

  test('one host with more ports than the table (scaled: 500 slots, 1000 ports) does not lock others out', async (t) => {
    await start({ maxHandshakes: 500 });
    const pool = await SocketPool.open(1000);
    try {
      await stall(srv, pool, 0x500);
      await waitFor(
        () =>
          srv.stats.handshakesStarted +
            (srv.stats.drops['address-limit'] ?? 0) +
            srv.stats.drops['handshake-limit'] >=
          1000,
        5_000,
        'every ClientHello2 read',
      );
      const r = await legitimate(srv.port, 10, 3_000);
      t.diagnostic(
        `table ${srv.dtls.handshakeCount}/500; legitimate device ${r.ok}/10 handshakes (${r.ms.join(', ')} ms)`,
      );
      assert.equal(r.ok, 10);
      assert.ok(srv.dtls.handshakeCount <= 100 + 1);
    } finally {
      await pool.close();
      await srv.close();
    }
  });

  test('a full table (many networks): stalled handshakes give way after stalledHandshakeTimeoutSeconds', async (t) => {
    await start({ maxHandshakes: 200, stalledHandshakeTimeoutSeconds: 1 });
    const pools: SocketPool[] = [];
    try {
      for (let n = 1; n <= 3; n++) pools.push(await SocketPool.open(100, `127.1.${n}.1`));
      for (const [i, p] of pools.entries()) await stall(srv, p, 0xf0 + i);
      await waitFor(
        () => srv.stats.handshakesStarted + srv.stats.drops['handshake-limit'] >= 300,
        5_000,
        'every ClientHello2 read',
      );
      assert.equal(srv.dtls.handshakeCount, 200, 'the table is full');
      const r = await legitimate(srv.port, 5, 8_000);
      t.diagnostic(
        `legitimate device ${r.ok}/5 handshakes (${r.ms.join(', ')} ms); ${srv.stats.handshakesFailed.stalled} stalled handshakes given up`,
      );
      assert.equal(r.ok, 5);
      assert.ok(srv.stats.handshakesFailed.stalled >= 1);
      assert.ok(srv.dtls.handshakeCount <= 200);
    } finally {
      for (const p of pools) await p.close();
      await srv.close();
    }
  });
});

describe('hostile: long PSK identities', () => {
  let srv: HostileServer & { readonly gateway: Gateway };
  before(async () => {
    srv = await startGateway({ maxHandshakes: 4, stalledHandshakeTimeoutSeconds: 1 });
  });
  after(async () => {
    await srv?.close();
  });

  test('a CKE longer than 128 bytes of identity is refused at once, before any lookup', async () => {
    const c = DtlsClient.connect({
      host: '127.0.0.1',
      port: srv.port,
      identity: Buffer.alloc(200, 0x41),
      psk: GOOD_PSK,
      handshakeTimeoutMs: 3_000,
    });
    await assert.rejects(c, /decrypt_error/);
    assert.equal(srv.stats.handshakesFailed['psk-rejected'], 1);
    assert.equal(srv.stats.pskLookupsPending, 0);
    assert.equal(srv.dtls.handshakeCount, 0);
  });
});
