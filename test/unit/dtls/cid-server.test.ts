/**
 * DtlsServer with RFC 9146 Connection IDs, over loopback sockets: our DtlsClient offers a CID,
 * moves to a new socket (a NAT rebinding), and an attacker socket sends copies of the client's
 * records (captured, replayed, reordered, corrupted) from another port. The server echoes
 * application data, so what reaches which socket shows where it sends.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';

import { DtlsClient } from '../../../src/dtls/client.js';
import { CipherSuite, ContentType } from '../../../src/dtls/constants.js';
import { ManualClock } from '../../../src/time/clock.js';
import { DtlsServer, type DtlsServerOptions } from '../../../src/dtls/server.js';
import type { DtlsAssociation } from '../../../src/dtls/association.js';
import type { PeerAddress } from '../../../src/dtls/types.js';
import { DTLS_SERVER_DEFAULTS } from '../../helpers/component-defaults.js';

const PSK = Buffer.from('0123456789abcdef');
const IDENTITY = 'demoPK01,device001,2,3600';
/** A second device (same key), for the NAT port reuse test. */
const IDENTITY2 = 'demoPK01,device002,2,3600';

interface Unknown {
  readonly from: PeerAddress;
  readonly reason: string;
  readonly suppressed: number;
}

interface Rig {
  readonly server: DtlsServer<string>;
  readonly port: number;
  readonly unknown: Unknown[];
  /** Echo each datagram back, or (when set) send this many bytes per datagram received. */
  reply: number | undefined;
  /** The server's clock (its timers fire only when a test advances it). */
  readonly clock: ManualClock;
  close(): Promise<void>;
}

async function udp(): Promise<Socket> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

async function rig(opts: Partial<DtlsServerOptions<string>> = {}): Promise<Rig> {
  const socket = await udp();
  const unknown: Unknown[] = [];
  const r: Rig = {
    server: undefined as unknown as DtlsServer<string>,
    port: socket.address().port,
    unknown,
    reply: undefined,
    clock: new ManualClock(0, 1_000_000),
    close: async () => {
      r.server.close();
      await new Promise<void>((done) => socket.close(() => done()));
    },
  };
  const server = new DtlsServer<string>({
    ...DTLS_SERVER_DEFAULTS,
    ...opts,
    clock: r.clock,
    send: (data, port, address) => socket.send(data, port, address),
    handler: {
      resolvePsk: (identity) =>
        identity.toString() === IDENTITY || identity.toString() === IDENTITY2
          ? { ok: true, psk: PSK, principal: identity.toString().split(',')[1] ?? '' }
          : { ok: false, alert: 'unknown_psk_identity', reason: 'unknown-device' },
      onData: (assoc: DtlsAssociation<string>, data) => {
        if (r.reply === undefined) assoc.send(Buffer.concat([Buffer.from('echo:'), data]));
        else for (let i = 0; i < 10; i++) assoc.send(Buffer.alloc(r.reply, 0x61));
      },
      onUnknownRecord: (from, reason, suppressed) => unknown.push({ from, reason, suppressed }),
    },
  });
  (r as { server: DtlsServer<string> }).server = server;
  socket.on('message', (msg, rinfo) => server.handleDatagram(msg, rinfo.address, rinfo.port));
  return r;
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Collects decrypted messages from the client. */
function inbox(c: DtlsClient): string[] {
  const got: string[] = [];
  c.on('message', (m) => got.push(m.toString()));
  return got;
}

function connect(port: number, extra: Partial<Parameters<typeof DtlsClient.connect>[0]> = {}) {
  return DtlsClient.connect({
    host: '127.0.0.1',
    port,
    identity: IDENTITY,
    psk: PSK,
    connectionId: Buffer.from('0a0b0c0d', 'hex'),
    ...extra,
  });
}

function only<T>(it: IterableIterator<T>): T {
  const all = [...it];
  assert.equal(all.length, 1, 'one association');
  const [a] = all;
  assert.ok(a !== undefined);
  return a;
}

describe('DtlsServer: Connection ID negotiation', () => {
  let r: Rig;
  before(async () => {
    r = await rig();
  });
  after(() => r.close());

  for (const suite of [
    CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
    CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
  ]) {
    it(`suite 0x${suite.toString(16)}: a client offering a CID gets an 8-byte one, records both ways carry CIDs`, async () => {
      const byCid = r.server.stats.demux.cid;
      const c = await connect(r.port, { cipherSuites: [suite] });
      try {
        const ids = c.connectionIds;
        assert.ok(ids !== undefined, 'negotiated');
        assert.equal(ids.peer.length, 8);
        const a = [...r.server.listAssociations()].find((x) => x.port === c.localPort);
        assert.deepEqual(a?.connectionId, ids.peer);
        const got = inbox(c);
        c.send(Buffer.from('hello'));
        await until('the echo', () => got.length === 1);
        assert.deepEqual(got, ['echo:hello']);
        assert.ok(r.server.stats.demux.cid - byCid >= 1, 'matched by CID');
      } finally {
        await c.close();
      }
    });
  }

  it('a client asking for a zero-length CID still gets one of ours; our records to it stay plain', async () => {
    const c = await connect(r.port, { connectionId: Buffer.alloc(0) });
    try {
      assert.equal(c.connectionIds?.peer.length, 8);
      assert.equal(c.connectionIds?.own.length, 0);
      const got = inbox(c);
      c.send(Buffer.from('x'));
      await until('the echo', () => got.length === 1);
    } finally {
      await c.close();
    }
  });

  it('cidLength 0: the extension is not answered and records are matched by address', async () => {
    const plain = await rig({ cidLength: 0 });
    const c = await connect(plain.port);
    try {
      assert.equal(c.connectionIds, undefined);
      const got = inbox(c);
      c.send(Buffer.from('x'));
      await until('the echo', () => got.length === 1);
      assert.equal(plain.server.stats.demux.address, 1);
      assert.equal(plain.server.stats.demux.cid, 0);
    } finally {
      await c.close();
      await plain.close();
    }
  });
});

describe('DtlsServer: peer address update by CID (RFC 9146 §6)', () => {
  let r: Rig;
  let attacker: Socket;
  const attackerGot: Buffer[] = [];
  before(async () => {
    r = await rig();
    attacker = await udp();
    attacker.on('message', (m) => attackerGot.push(m));
  });
  after(async () => {
    await new Promise<void>((done) => attacker.close(() => done()));
    await r.close();
  });

  const fromAttacker = (rec: Buffer): void => {
    attacker.send(rec, r.port, '127.0.0.1');
  };

  it('a NAT rebinding: the next record from the new port moves the association, the answer goes there, the old port is forgotten', async () => {
    const c = await connect(r.port);
    try {
      const got = inbox(c);
      const oldPort = c.localPort;
      c.send(Buffer.from('one'));
      await until('first echo', () => got.length === 1);
      const completed = r.server.stats.handshakesCompleted;
      await c.rebind();
      assert.notEqual(c.localPort, oldPort);
      c.send(Buffer.from('two'));
      await until('second echo', () => got.length === 2);
      assert.deepEqual(got, ['echo:one', 'echo:two']);
      assert.equal(r.server.stats.handshakesCompleted, completed, 'no new handshake');
      assert.equal(r.server.stats.peerAddressUpdates, 1);
      assert.equal(r.server.principalOf('127.0.0.1', oldPort), undefined, 'old key removed');
      assert.equal(r.server.principalOf('127.0.0.1', c.localPort), 'device001');
      const a = only(r.server.listAssociations());
      assert.equal(a.port, c.localPort);
    } finally {
      await c.close();
    }
  });

  it('a device that suspends holds no socket, sends nothing, and resumes on a new port without a handshake', async () => {
    const c = await connect(r.port);
    try {
      const got = inbox(c);
      let closed = false;
      c.on('close', () => (closed = true));
      c.send(Buffer.from('before'));
      await until('echo before', () => got.length === 1);
      const completed = r.server.stats.handshakesCompleted;
      const oldPort = c.localPort;
      c.suspend();
      assert.equal(closed, false, 'the association is kept');
      assert.equal(c.established, true);
      assert.throws(() => c.localPort, 'the socket is closed');
      assert.throws(() => c.send(Buffer.from('asleep')));
      await c.resume();
      assert.notEqual(c.localPort, oldPort);
      c.send(Buffer.from('after'));
      await until('echo after', () => got.length === 2);
      assert.deepEqual(got, ['echo:before', 'echo:after']);
      assert.equal(r.server.stats.handshakesCompleted, completed, 'no new handshake');
    } finally {
      await c.close();
    }
  });

  it('a record that authenticates but is not newer (reordered) is delivered, the address stays', async () => {
    const c = await connect(r.port);
    try {
      const got = inbox(c);
      const older = c.sealRecord(ContentType.applicationData, Buffer.from('older'));
      const newer = c.sealRecord(ContentType.applicationData, Buffer.from('newer'));
      assert.ok(older !== undefined && newer !== undefined);
      c.sendRaw(newer);
      await until('echo of newer', () => got.length === 1);
      const moved = r.server.stats.peerAddressUpdates;
      attackerGot.length = 0;
      fromAttacker(older);
      await until('echo of older', () => got.length === 2);
      assert.deepEqual(got, ['echo:newer', 'echo:older'], 'both answered, at the client');
      assert.equal(r.server.stats.peerAddressUpdates, moved, 'no update');
      assert.equal(attackerGot.length, 0, 'nothing went to the other port');
      const a = [...r.server.listAssociations()].find((x) => x.port === c.localPort);
      assert.ok(a !== undefined, 'still at the client port');
    } finally {
      await c.close();
    }
  });

  it('a replayed record from another port is dropped as a replay, no update', async () => {
    const c = await connect(r.port);
    try {
      const got = inbox(c);
      const rec = c.sealRecord(ContentType.applicationData, Buffer.from('once'));
      assert.ok(rec !== undefined);
      c.sendRaw(rec);
      await until('echo', () => got.length === 1);
      const replays = r.server.stats.drops.replay;
      const moved = r.server.stats.peerAddressUpdates;
      attackerGot.length = 0;
      fromAttacker(rec);
      await until('the replay dropped', () => r.server.stats.drops.replay === replays + 1);
      assert.equal(r.server.stats.peerAddressUpdates, moved);
      assert.equal(got.length, 1);
      assert.equal(attackerGot.length, 0);
    } finally {
      await c.close();
    }
  });

  it('a newer record with a bad MAC from another port is dropped silently, no update', async () => {
    const c = await connect(r.port);
    try {
      const got = inbox(c);
      const rec = c.sealRecord(ContentType.applicationData, Buffer.from('tampered'));
      assert.ok(rec !== undefined);
      const bad = Buffer.from(rec);
      bad[bad.length - 1] = (bad[bad.length - 1] ?? 0) ^ 0x01;
      const badMacs = r.server.stats.drops['bad-mac'];
      const moved = r.server.stats.peerAddressUpdates;
      attackerGot.length = 0;
      fromAttacker(bad);
      await until('bad MAC counted', () => r.server.stats.drops['bad-mac'] === badMacs + 1);
      assert.equal(r.server.stats.peerAddressUpdates, moved);
      assert.equal(attackerGot.length, 0, 'no alert, nothing');
      // the genuine record (same sequence number) still works from the client's port
      c.sendRaw(rec);
      await until('echo', () => got.length === 1);
      assert.deepEqual(got, ['echo:tampered']);
    } finally {
      await c.close();
    }
  });

  it('an unvalidated new address gets at most 3x the bytes received from it (RFC 9853)', async () => {
    const c = await connect(r.port);
    r.reply = 30; // ten 30-byte records per datagram in: over 3x a small request
    try {
      // an on-path attacker sends the client's newest record from its own port
      const rec = c.sealRecord(ContentType.applicationData, Buffer.from('small'));
      assert.ok(rec !== undefined);
      attackerGot.length = 0;
      const limited = r.server.stats.amplificationLimited;
      fromAttacker(rec);
      // each of the ten answers is either sent (and arrives) or held back: wait for all ten
      await until(
        'every answer sent or held back',
        () => attackerGot.length + r.server.stats.amplificationLimited - limited === 10,
      );
      const bytes = attackerGot.reduce((n, m) => n + m.length, 0);
      assert.ok(bytes > 0, 'the first answer goes to the new address');
      assert.ok(bytes <= 3 * rec.length, `${bytes} bytes out for ${rec.length} in`);
      assert.equal(
        r.server.stats.amplificationLimited - limited,
        10 - attackerGot.length,
        'the rest held back',
      );
    } finally {
      r.reply = undefined;
      await c.close();
    }
  });

  it('after a move the device validates the address by talking on after our answer', async () => {
    const c = await connect(r.port);
    try {
      const got = inbox(c);
      await c.rebind();
      c.send(Buffer.from('a'));
      await until('echo a', () => got.length === 1);
      r.reply = 400;
      const limited = r.server.stats.amplificationLimited;
      c.send(Buffer.from('b'));
      await until('ten answers to b', () => got.length === 11);
      assert.equal(r.server.stats.amplificationLimited, limited, 'validated: no limit');
    } finally {
      r.reply = undefined;
      await c.close();
    }
  });

  it('a move onto an address that holds another association releases that one (its NAT mapping is gone)', async () => {
    const a = await connect(r.port);
    const b = await connect(r.port);
    try {
      const replaced = r.server.stats.closed.replaced;
      const got = inbox(a);
      const rec = a.sealRecord(ContentType.applicationData, Buffer.from('via b'));
      assert.ok(rec !== undefined);
      b.sendRaw(rec); // A's record from B's address and port
      await until('b released', () => r.server.stats.closed.replaced === replaced + 1);
      assert.equal(r.server.principalOf('127.0.0.1', a.localPort), undefined);
      const moved = [...r.server.listAssociations()].find((x) => x.port === b.localPort);
      assert.ok(moved !== undefined);
      assert.equal(moved.key.startsWith(`127.0.0.1|${a.localPort}#`), true, "it is A's");
      assert.equal(got.length, 0, 'the echo went to the new address, not to A');
    } finally {
      const unknown = r.server.stats.drops['unknown-cid'];
      await a.close();
      await b.close();
      // B's close_notify carries the CID of its released association
      await until('B close_notify dropped', () => r.server.stats.drops['unknown-cid'] > unknown);
    }
  });

  it('records with an unknown CID are dropped and counted; the handler hears of them at most once a second', async () => {
    const c = await connect(r.port);
    try {
      const rec = c.sealRecord(ContentType.applicationData, Buffer.from('x'));
      assert.ok(rec !== undefined);
      const forged = Buffer.from(rec);
      forged[11] = (forged[11] ?? 0) ^ 0xff; // first CID byte
      r.clock.advance(1_000); // past any report an earlier test caused
      const before = r.server.stats.drops['unknown-cid'];
      const reports = r.unknown.length;
      for (let i = 0; i < 5; i++) fromAttacker(forged);
      await until('five drops', () => r.server.stats.drops['unknown-cid'] === before + 5);
      assert.equal(r.unknown.length - reports, 1, 'one report');
      assert.equal(r.unknown.at(-1)?.reason, 'unknown-cid');
      r.clock.advance(1_000);
      fromAttacker(forged);
      await until('sixth drop', () => r.server.stats.drops['unknown-cid'] === before + 6);
      assert.equal(r.unknown.length - reports, 2);
      assert.equal(r.unknown.at(-1)?.suppressed, 4);
    } finally {
      await c.close();
    }
  });
});

describe('DtlsClient under a network that duplicates datagrams', () => {
  it('a repeated HelloVerifyRequest does not start a second ClientHello; the handshake completes', async () => {
    const r = await rig();
    const front = createSocket('udp4');
    await new Promise<void>((done) => front.bind(0, '127.0.0.1', done));
    const back = createSocket('udp4');
    await new Promise<void>((done) => back.bind(0, '127.0.0.1', done));
    let client: { port: number } | undefined;
    let hellos = 0;
    front.on('message', (m, rinfo) => {
      client = { port: rinfo.port };
      if (m[0] === ContentType.handshake && m[13] === 1) hellos++;
      back.send(m, r.port, '127.0.0.1');
    });
    // every datagram from the server arrives twice
    back.on('message', (m) => {
      if (client === undefined) return;
      front.send(m, client.port, '127.0.0.1');
      front.send(m, client.port, '127.0.0.1');
    });
    try {
      const c = await DtlsClient.connect({
        host: '127.0.0.1',
        port: front.address().port,
        identity: IDENTITY,
        psk: PSK,
      });
      const got = inbox(c);
      c.send(Buffer.from('dup'));
      await until('the echo', () => got.length >= 1);
      assert.equal(got[0], 'echo:dup');
      assert.equal(hellos, 2, 'one ClientHello without and one with the cookie');
      assert.equal(r.server.stats.handshakesStarted, 1);
      await c.close();
    } finally {
      front.close();
      back.close();
      await r.close();
    }
  });
});

describe('DtlsServer: NAT port reuse', () => {
  it("a new device handshaking from a CID association's last address parks that association; its device comes back from elsewhere without a handshake", async () => {
    const r = await rig();
    // a NAT: each device gets an external port (back socket); `reuse` hands the next new
    // device the external port another device had
    const front = createSocket('udp4');
    await new Promise<void>((done) => front.bind(0, '127.0.0.1', done));
    const backs: Socket[] = [];
    const byDevice = new Map<number, Socket>();
    const lastDevice = new Map<Socket, number>();
    const bound = new Set<Socket>();
    let reuse: Socket | undefined;
    front.on('message', (m, rinfo) => {
      let back = byDevice.get(rinfo.port);
      if (back === undefined) {
        if (reuse !== undefined) back = reuse;
        else {
          back = createSocket('udp4');
          const b = back;
          back.on('listening', () => bound.add(b));
          back.bind(0, '127.0.0.1');
          back.on('message', (answer) => {
            const to = lastDevice.get(b);
            if (to !== undefined) front.send(answer, to, '127.0.0.1');
          });
          backs.push(back);
        }
        reuse = undefined;
        byDevice.set(rinfo.port, back);
      }
      lastDevice.set(back, rinfo.port);
      const b = back;
      if (bound.has(b)) b.send(m, r.port, '127.0.0.1');
      else b.once('listening', () => b.send(m, r.port, '127.0.0.1'));
    });
    const via = { host: '127.0.0.1', port: front.address().port, psk: PSK };
    const clients: DtlsClient[] = [];
    try {
      const a = await DtlsClient.connect({
        ...via,
        identity: IDENTITY,
        connectionId: Buffer.alloc(0),
      });
      clients.push(a);
      const gotA = inbox(a);
      a.send(Buffer.from('a1'));
      await until('A answered', () => gotA.length === 1);
      const aPort = a.localPort;
      a.suspend(); // A sleeps; its NAT port goes to the next device
      reuse = byDevice.get(aPort);
      r.server.stats.handshakesStarted = 0;
      const b = await DtlsClient.connect({ ...via, identity: IDENTITY2 });
      clients.push(b);
      const gotB = inbox(b);
      b.send(Buffer.from('b1'));
      await until('B answered', () => gotB.length === 1);
      assert.equal(r.server.stats.parked, 1, "A's association parked, not ended");
      await a.resume(); // a new NAT port
      a.send(Buffer.from('a2'));
      await until('A answered again', () => gotA.length === 2);
      assert.deepEqual(gotA, ['echo:a1', 'echo:a2']);
      assert.equal(r.server.stats.handshakesStarted, 1, 'only B handshook');
      b.send(Buffer.from('b2'));
      await until('B still answered', () => gotB.length === 2);
    } finally {
      for (const c of clients) await c.close().catch(() => undefined);
      front.close();
      for (const s of backs) s.close();
      await r.close();
    }
  });
});
