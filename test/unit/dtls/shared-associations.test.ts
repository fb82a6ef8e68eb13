/**
 * Two DtlsServers ("pods") sharing associations through one MemoryAssociationStore, behind a
 * UDP relay that plays the load balancer (it forwards each client flow from its own back
 * socket, like a Service's DNAT, and can switch the flows to the other pod). Our DtlsClient is
 * the device; the servers echo application data, so an answer shows which pod served it.
 */
import { afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';

import { DtlsClient } from '../../../src/dtls/client.js';
import { CipherSuite } from '../../../src/dtls/constants.js';
import { ManualClock, type Clock } from '../../../src/time/clock.js';
import { clockReading } from '../../helpers/clock.js';
import { DtlsServer, type DtlsServerOptions } from '../../../src/dtls/server.js';
import { MemoryAssociationStore } from '../../../src/dtls/shared.js';
import { sealSnapshot, openSnapshot } from '../../../src/dtls/snapshot.js';
import { Relay } from '../../helpers/udp-relay.js';
import { DTLS_SERVER_DEFAULTS } from '../../helpers/component-defaults.js';

const PSK = Buffer.from('0123456789abcdef');
const IDENTITY = 'demoPK01,device001,2,3600';
const KEY = randomBytes(32);

async function udp(): Promise<Socket> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Pod {
  readonly name: string;
  readonly server: DtlsServer<string>;
  readonly port: number;
  /** Application data each pod received, in order. */
  readonly got: string[];
  adopted: number;
  readonly shareErrors: string[];
  /** A crashed pod hears nothing and sends nothing. */
  dead: boolean;
  close(): Promise<void>;
}

async function pod(
  name: string,
  store: MemoryAssociationStore,
  opts: Partial<DtlsServerOptions<string>> & { quietMs?: number; rxLease?: number } = {},
): Promise<Pod> {
  const socket = await udp();
  const p: Pod = {
    name,
    server: undefined as unknown as DtlsServer<string>,
    port: socket.address().port,
    got: [],
    adopted: 0,
    shareErrors: [],
    dead: false,
    close: async () => {
      p.server.close();
      await new Promise<void>((done) => socket.close(() => done()));
    },
  };
  const server = new DtlsServer<string>({
    ...DTLS_SERVER_DEFAULTS,
    ...opts,
    send: (data, port, address) => {
      if (!p.dead) socket.send(data, port, address);
    },
    shared: {
      // a crashed pod's store calls never happen (no heartbeat, no lease, no lowering)
      store: new Proxy(store, {
        get(target, prop, receiver) {
          const v: unknown = Reflect.get(target, prop, receiver);
          if (typeof v !== 'function') return v;
          return (...args: unknown[]): unknown =>
            p.dead ? new Promise(() => undefined) : Reflect.apply(v, target, args);
        },
      }),
      key: KEY,
      quietMs: opts.quietMs ?? 200,
      ...(opts.rxLease !== undefined ? { rxLease: opts.rxLease } : {}),
      principal: {
        encode: (x) => x,
        decode: (v) => (typeof v === 'string' ? v : undefined),
      },
    },
    handler: {
      resolvePsk: (identity) =>
        identity.toString() === IDENTITY
          ? { ok: true, psk: PSK, principal: 'device001' }
          : { ok: false, alert: 'unknown_psk_identity', reason: 'unknown-device' },
      onData: (assoc, data) => {
        p.got.push(data.toString());
        assoc.send(Buffer.from(`${name}:${data.toString()}`));
      },
      onAdopted: () => {
        p.adopted++;
      },
      onShareError: (op) => {
        p.shareErrors.push(op);
      },
    },
  });
  (p as { server: DtlsServer<string> }).server = server;
  socket.on('message', (msg, rinfo) => {
    if (!p.dead) server.handleDatagram(msg, rinfo.address, rinfo.port);
  });
  return p;
}

function inbox(c: DtlsClient): string[] {
  const got: string[] = [];
  c.on('message', (m) => got.push(m.toString()));
  return got;
}

async function ask(c: DtlsClient, got: string[], text: string): Promise<string> {
  const n = got.length;
  c.send(Buffer.from(text));
  await until(`an answer to ${text}`, () => got.length > n);
  return got[n] ?? '';
}

for (const withCid of [true, false]) {
  describe(`Shared associations ${withCid ? 'with a CID' : 'by address (no CID)'}`, () => {
    let store: MemoryAssociationStore;
    let a: Pod;
    let b: Pod;
    let lb: Relay;
    let client: DtlsClient | undefined;

    before(() => {
      store = new MemoryAssociationStore();
    });
    afterEach(async () => {
      await client?.close();
      client = undefined;
      await lb.close();
      await a.close();
      await b.close();
    });

    async function setUp(
      o: {
        quietMs?: number;
        rxLease?: number;
        suite?: number;
        crashes?: boolean;
        clock?: Clock;
        idleTimeoutMs?: number;
        recordSizeLimit?: number;
        admission?: DtlsServerOptions<string>['admission'];
      } = {},
    ) {
      // a pod that is to crash never lowers a fence (a dead pod does nothing)
      a = await pod('A', store, o.crashes === true ? { ...o, quietMs: 3_600_000 } : o);
      b = await pod('B', store, o);
      lb = await Relay.start(a.port);
      client = await DtlsClient.connect({
        host: '127.0.0.1',
        port: lb.port,
        identity: IDENTITY,
        psk: PSK,
        ...(o.suite !== undefined ? { cipherSuites: [o.suite] } : {}),
        ...(o.recordSizeLimit !== undefined ? { recordSizeLimit: o.recordSizeLimit } : {}),
        ...(withCid ? { connectionId: Buffer.alloc(0) } : {}),
      });
      const got = inbox(client);
      await until('stored', () => a.server.stats.shared.stored === 1);
      return { c: client, got };
    }

    for (const suite of [
      CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
      CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
    ]) {
      it(`suite 0x${suite.toString(16)}: the other pod continues the association with no handshake; steady state asks the store nothing per record`, async () => {
        // the pods' time is stepped, not read: the device's rate (and so how many records a
        // raise covers) and its quiet spells are what the test says, whatever the machine's speed
        let clock = 1_000_000;
        const { c, got } = await setUp({ suite, clock: clockReading(() => clock) });
        assert.equal(await ask(c, got, 'one'), 'A:one');
        lb.target = b.port;
        const two = ask(c, got, 'two');
        clock += 1_000; // B adopts once A, quiet, has lowered its fence
        assert.equal(await two, 'B:two');
        assert.equal(b.adopted, 1);
        assert.equal(b.server.stats.handshakesStarted, 0, 'no handshake on B');
        assert.equal(b.server.stats.shared.adoptions[withCid ? 'cid' : 'address'], 1);
        const calls = { ...store.calls };
        for (let i = 0; i < 50; i++) {
          clock += 10; // 100 records a second
          assert.equal(await ask(c, got, `m${i}`), `B:m${i}`);
        }
        // a busy device: a raise covers about a second of its records, a write block 256
        const made =
          store.calls.setRxFence - calls.setRxFence + store.calls.leaseTx - calls.leaseTx;
        assert.ok(made <= 5, `${made} store calls for 50 exchanges`);
        assert.equal(store.calls.adopt, calls.adopt);
        assert.equal(store.calls.peek, calls.peek);
      });
    }

    it('the device’s record size limit travels with it: the adopting pod honours it', async () => {
      const { c, got } = await setUp({ recordSizeLimit: 512 });
      assert.equal(await ask(c, got, 'one'), 'A:one');
      lb.target = b.port;
      assert.equal(await ask(c, got, 'two'), 'B:two');
      const [adopted] = [...b.server.listAssociations()];
      assert.equal(adopted?.maxPlaintext, 512);
      assert.equal(adopted.send(Buffer.alloc(513)), false);
      assert.equal(b.server.stats.recordTooLarge, 1);
    });

    it('sends past the leased block: the next block comes from the store, nonces never repeat', async () => {
      const { c, got } = await setUp({ rxLease: 8 });
      lb.target = b.port;
      for (let i = 0; i < 300; i++) {
        const n = got.length;
        c.send(Buffer.from(`x${i}`));
        await until('answer', () => got.length > n);
      }
      assert.equal(got.at(-1), 'B:x299');
      assert.ok(b.server.stats.shared.leases.tx >= 1, 'a write block was leased');
      assert.ok(
        b.server.stats.shared.leases.rx >= 300 / 8,
        'fence raised along (at most 8 a time)',
      );
    });

    it('a pod crash: records captured before it are replayed to the other pod and none is accepted; the device goes on', async () => {
      const { c, got } = await setUp({ rxLease: 8, crashes: true });
      for (let i = 0; i < 5; i++) await ask(c, got, `before${i}`);
      const captured = lb.captured.slice();
      a.dead = true; // SIGKILL: no hand-over, no fence lowered
      lb.target = b.port;
      for (const d of captured) lb.inject(d);
      await until('the replays handled', () => b.server.stats.datagramsIn >= captured.length);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(b.got, [], 'no replayed record reached the layer above');
      // fresh records within A's last lease are refused too (A may have accepted them); the
      // device gets through after at most rxLease records
      let lost = 0;
      for (;;) {
        const n = got.length;
        c.send(Buffer.from(`after${lost}`));
        const answered = await new Promise<boolean>((r) => {
          const t = setInterval(() => {
            if (got.length > n) {
              clearInterval(t);
              r(true);
            }
          }, 5);
          setTimeout(() => {
            clearInterval(t);
            r(got.length > n);
          }, 300);
        });
        if (answered) break;
        lost++;
        // refused until A's heartbeat expires (1.5 s) or a record passes A's lease
        assert.ok(lost <= 20, 'through once the holder is known dead');
      }
      assert.equal(got.at(-1), `B:after${lost}`);
      assert.equal(b.server.stats.handshakesStarted, 0);
    });

    it("rxLease 0: a busy device's every record waits for its own raise; after a crash mid-burst replays are refused, and the first fresh record is answered even behind more replays than a lookup holds", async () => {
      const { c, got } = await setUp({ rxLease: 0, crashes: true });
      for (let i = 0; i < 20; i++) await ask(c, got, `busy${i}`);
      const raises = a.server.stats.shared.leases.rx;
      assert.ok(raises >= 20, `a raise per record (${raises})`);
      const captured = lb.captured.slice();
      a.dead = true; // SIGKILL: no hand-over, no fence lowered
      lb.target = b.port;
      for (const d of captured) lb.inject(d);
      await until('the replays handled', () => b.server.stats.datagramsIn >= captured.length);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(b.got, [], 'no replayed record reached the layer above');
      // more replays than a lookup holds (8) came first: the fresh record still gets through
      assert.ok(captured.length > 8, `${captured.length} replays`);
      assert.equal(await ask(c, got, 'after'), 'B:after');
      assert.deepEqual(b.got, ['after']);
      assert.equal(b.server.stats.handshakesStarted, 0);
    });

    it('the identity index lives as long as its association: the holder restarts its expiry every half TTL while it is used', async () => {
      let clock = 1_000_000;
      const { c, got } = await setUp({
        clock: clockReading(() => clock),
        idleTimeoutMs: 10_000,
        // one live association per device: the identity index names it
        admission: (_identity, principal) => ({ key: principal, restricted: false }),
      });
      assert.equal(await ask(c, got, 'one'), 'A:one');
      assert.equal(store.calls.touchIdentity, 0, 'create wrote the index with its TTL');
      clock += 6_000; // past half the TTL: the next lease restarts the index's expiry
      for (let i = 0; i < 4; i++) assert.equal(await ask(c, got, `a${i}`), `A:a${i}`);
      await until('index touched', () => store.calls.touchIdentity === 1);
      const raises = store.calls.setRxFence;
      for (let i = 0; i < 12; i++) {
        clock += 300; // 3.6 s in all: within half the TTL of the touch
        assert.equal(await ask(c, got, `b${i}`), `A:b${i}`);
      }
      assert.ok(store.calls.setRxFence > raises, 'leases went on');
      assert.equal(store.calls.touchIdentity, 1, 'once per half TTL, not per lease');
      // an adopter touches it at its first lease
      lb.target = b.port;
      for (let i = 0; i < 4; i++) {
        clock += 1_000;
        assert.equal(await ask(c, got, `c${i}`), `B:c${i}`);
      }
      await until('adopter touched the index', () => store.calls.touchIdentity === 2);
    });

    it('a device slower than a record a second has its fence exactly above each record: after a crash its next record is answered', async () => {
      let clock = 1_000_000;
      const { c, got } = await setUp({ crashes: true, clock: clockReading(() => clock) });
      for (let i = 0; i < 3; i++) {
        clock += 2_000;
        await ask(c, got, `slow${i}`);
      }
      await until('the last raise stored', () => store.calls.setRxFence >= 3);
      a.dead = true;
      lb.target = b.port;
      clock += 2_000;
      assert.equal(await ask(c, got, 'next'), 'B:next');
      assert.deepEqual(b.got, ['next']);
    });

    it("the quiet fence comes down on the server's clock: an hour of quiet passes in no time", async () => {
      const hour = 3_600_000;
      const manual = new ManualClock(0, Date.now());
      const { c, got } = await setUp({ quietMs: hour, clock: manual, idleTimeoutMs: 100 * hour });
      assert.equal(await ask(c, got, 'one'), 'A:one');
      manual.advance(hour / 2); // a lowering pass runs: the association is not quiet yet
      assert.equal(a.server.stats.shared.leases.lower, 0);
      // the pass runs every half hour of the server's time (before, on host timers every half
      // hour of real time: this wait timed out). At most ten hours: far from the idle sweep's
      // 100, whose offloading would lower the fence on its own
      let steps = 0;
      await until('fence lowered', () => {
        if (steps++ < 20) manual.advance(hour / 2);
        return a.server.stats.shared.leases.lower >= 1;
      });
      lb.target = b.port;
      assert.equal(await ask(c, got, 'two'), 'B:two');
      assert.equal(b.adopted, 1);
    });

    it("drain waits for the store at most its time limit, on the server's clock", async () => {
      const hour = 3_600_000;
      const manual = new ManualClock(0, Date.now());
      const { c, got } = await setUp({ quietMs: hour, clock: manual, idleTimeoutMs: 100 * hour });
      assert.equal(await ask(c, got, 'one'), 'A:one');
      a.dead = true; // its store calls never answer
      let handed: number | undefined;
      void a.server.handOver(hour).then((n) => {
        handed = n;
      });
      await new Promise((r) => setImmediate(r));
      assert.equal(handed, undefined);
      manual.advance(hour); // before this change, an hour of real time
      await until('the hand-over given up', () => handed !== undefined);
      assert.equal(handed, 0);
    });

    it('a quiet association was handed over exactly: after a crash, the first fresh record is answered and replays are not', async () => {
      const { c, got } = await setUp({ quietMs: 100, crashes: false });
      for (let i = 0; i < 3; i++) await ask(c, got, `before${i}`);
      const captured = lb.captured.slice();
      await until('fence lowered', () => a.server.stats.shared.leases.lower >= 1);
      a.dead = true;
      lb.target = b.port;
      for (const d of captured) lb.inject(d);
      await until('replays handled', () => b.server.stats.datagramsIn >= captured.length);
      assert.deepEqual(b.got, []);
      assert.equal(await ask(c, got, 'fresh'), 'B:fresh');
      assert.deepEqual(b.got, ['fresh']);
    });

    it('drain: hand-over lowers the fences and sends no close_notify; the device goes on at the other pod from its next record', async () => {
      const { c, got } = await setUp();
      await ask(c, got, 'one');
      let closed = false;
      c.on('close', () => {
        closed = true;
      });
      assert.equal(await a.server.handOver(1000), 1);
      a.server.close();
      lb.target = b.port;
      assert.equal(await ask(c, got, 'two'), 'B:two');
      assert.equal(closed, false, 'no close_notify reached the device');
      assert.equal(a.server.stats.closed.offloaded, 1);
    });

    it('a forged record for a stored association moves nothing (authenticated before adoption)', async () => {
      const { c, got } = await setUp();
      await ask(c, got, 'one');
      const last = lb.captured.at(-1);
      assert.ok(last !== undefined);
      const forged = Buffer.from(last);
      forged.writeUInt8(forged.readUInt8(forged.length - 1) ^ 0xff, forged.length - 1);
      lb.target = b.port;
      lb.inject(forged);
      await until('looked up', () => b.server.stats.shared.lookups.unproven === 1);
      assert.equal(b.adopted, 0);
      lb.target = a.port;
      assert.equal(await ask(c, got, 'two'), 'A:two', 'A still holds it');
    });
  });
}

/** A store whose operations can be slowed down or refused, for the failure paths. */
class FaultyStore extends MemoryAssociationStore {
  fenceDelayMs = 0;
  refuseCreate = false;
  refuseFence = false;

  override async setRxFence(h: string, o: string, fence: number, ttl: number): Promise<boolean> {
    if (this.fenceDelayMs > 0) await new Promise((r) => setTimeout(r, this.fenceDelayMs));
    if (this.refuseFence) throw new Error('store down');
    return super.setRxFence(h, o, fence, ttl);
  }

  override create(...a: Parameters<MemoryAssociationStore['create']>): Promise<void> {
    if (this.refuseCreate) return Promise.reject(new Error('store down'));
    return super.create(...a);
  }
}

describe('Shared associations: store faults', () => {
  it('a drain during a fence raise waits for it, then hands the exact fence over', async () => {
    const store = new FaultyStore();
    const a = await pod('A', store, { quietMs: 3_600_000 });
    const b = await pod('B', store);
    const lb = await Relay.start(a.port);
    const c = await DtlsClient.connect({
      host: '127.0.0.1',
      port: lb.port,
      identity: IDENTITY,
      psk: PSK,
      connectionId: Buffer.alloc(0),
    });
    try {
      const got = inbox(c);
      await until('stored', () => a.server.stats.shared.stored === 1);
      store.fenceDelayMs = 200;
      c.send(Buffer.from('one')); // seq 1 … past the first lease: a slow raise starts
      c.send(Buffer.from('two'));
      c.send(Buffer.from('three'));
      await until('a raise in flight', () => a.server.stats.shared.leases.rx >= 1);
      assert.equal(await a.server.handOver(2_000), 1);
      store.fenceDelayMs = 0;
      a.server.close();
      lb.target = b.port;
      assert.equal(await ask(c, got, 'four'), 'B:four', 'answered at once: the fence is exact');
    } finally {
      await c.close();
      await lb.close();
      await a.close();
      await b.close();
    }
  });

  it('a store that fails for a while: records past the fence wait, and the device is answered once it is back, however many came meanwhile', async () => {
    const store = new FaultyStore();
    const a = await pod('A', store, { quietMs: 3_600_000 });
    const c = await DtlsClient.connect({
      host: '127.0.0.1',
      port: a.port,
      identity: IDENTITY,
      psk: PSK,
      connectionId: Buffer.alloc(0),
    });
    try {
      const got = inbox(c);
      await until('stored', () => a.server.stats.shared.stored === 1);
      store.refuseFence = true;
      for (let i = 0; i < 12; i++) c.send(Buffer.from(`during${i}`)); // more than are held
      await until('raises failing', () => a.server.stats.shared.leaseErrors >= 2);
      assert.ok(got.length < 12, 'not all answered while the store is down');
      store.refuseFence = false;
      // the device retransmits: a newer record brings the association back (the waiting
      // records are delivered first)
      c.send(Buffer.from('after'));
      await until('the newest answered', () => got.includes('A:after'));
      assert.ok(a.server.stats.shared.droppedForLease >= 1, 'the oldest waiting records went');
    } finally {
      await c.close();
      await a.close();
    }
  });

  it('a store that refuses the association: it stays with this pod alone and works; the failure is reported', async () => {
    const store = new FaultyStore();
    store.refuseCreate = true;
    const a = await pod('A', store);
    const c = await DtlsClient.connect({
      host: '127.0.0.1',
      port: a.port,
      identity: IDENTITY,
      psk: PSK,
    });
    try {
      const got = inbox(c);
      await until('reported', () => a.shareErrors.length === 1);
      assert.deepEqual(a.shareErrors, ['create']);
      for (let i = 0; i < 20; i++) assert.equal(await ask(c, got, `m${i}`), `A:m${i}`);
      assert.equal(a.server.stats.shared.storeErrors, 1);
      assert.equal(store.size, 0);
    } finally {
      await c.close();
      await a.close();
    }
  });
});

describe('Shared associations: snapshot sealing', () => {
  it('opens only with its key and under its handle', () => {
    const s = {
      suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
      encryptThenMac: false,
      extendedMasterSecret: true,
      epoch: 1,
      client: { encKey: randomBytes(16), salt: randomBytes(4), macKey: Buffer.alloc(0) },
      server: { encKey: randomBytes(16), salt: randomBytes(4), macKey: Buffer.alloc(0) },
      connectionId: randomBytes(8),
      peerConnectionId: Buffer.alloc(0),
      address: '10.0.0.1',
      port: 5684,
      identity: IDENTITY,
      principal: { pk: 'p' },
      establishedAt: 1,
      handshakeDurationMs: 2,
      clientRandom: randomBytes(32),
      peerRecordLimit: 512,
    };
    const blob = sealSnapshot(s, KEY, 'c:01');
    assert.equal(blob.includes(s.client.encKey), false, 'keys are not in the clear');
    assert.deepEqual(openSnapshot(blob, KEY, 'c:01'), s);
    assert.equal(openSnapshot(blob, randomBytes(32), 'c:01'), undefined, 'another key');
    assert.equal(openSnapshot(blob, KEY, 'c:02'), undefined, 'another handle');
    const bad = Buffer.from(blob);
    bad.writeUInt8(bad.readUInt8(bad.length - 1) ^ 1, bad.length - 1);
    assert.equal(openSnapshot(bad, KEY, 'c:01'), undefined, 'damaged');
  });
});
