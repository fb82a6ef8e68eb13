/**
 * DtlsServer without sockets: datagrams go in through handleDatagram, whatever the server
 * sends is captured. The client side is driven by hand with the codecs and the key schedule.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';

import {
  AlertDescription,
  CipherSuite,
  ContentType,
  DTLS_1_0,
  DTLS_1_2,
  ExtensionType,
  HandshakeType,
} from '../../../src/dtls/constants.js';
import {
  clientHelloBody,
  clientKeyExchangeBody,
  handshakeMessage,
  helloVerifyRequestBody,
  parseHelloVerifyRequest,
  parseServerHello,
  readFragments,
  type HandshakeFragment,
} from '../../../src/dtls/handshake.js';
import { deriveSessionKeys, type SessionKeys } from '../../../src/dtls/keys.js';
import { verifyData } from '../../../src/dtls/prf.js';
import {
  helloVerifyRequestRecord,
  plainRecord,
  readRecord,
  type DtlsRecord,
} from '../../../src/dtls/record.js';
import { DtlsServer, type DtlsServerOptions } from '../../../src/dtls/server.js';
import { peerKey } from '../../../src/dtls/association-table.js';
import { DROP_REASONS, type CloseReason, type HandshakeFailure } from '../../../src/dtls/types.js';
import type { DtlsAssociation } from '../../../src/dtls/association.js';
import { ManualClock } from '../../../src/time/clock.js';
import { loadCapture } from '../../helpers/vectors.js';
import { DTLS_SERVER_DEFAULTS } from '../../helpers/component-defaults.js';
import { countMapLookups } from '../../helpers/map-lookups.js';

const SEED = 0x5e4e;
const PSK = Buffer.from('X9LStOPeYT3UZu5w');
const IDENTITY = 'Client_identity';
const ADDR = '198.51.100.7';
const EMPTY = Buffer.alloc(0);
const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest();

interface Sent {
  readonly data: Buffer;
  readonly port: number;
  readonly address: string;
}

interface Harness {
  readonly server: DtlsServer<string>;
  /** The server's clock: time moves only when a test advances it. */
  readonly clock: ManualClock;
  readonly sent: Sent[];
  readonly data: Buffer[];
  readonly established: DtlsAssociation<string>[];
  readonly closed: CloseReason[];
  readonly failures: HandshakeFailure[];
  readonly internalErrors: unknown[];
  /** Wraps the harness's own send (the copy of each datagram the server sends), if set. */
  readonly hooks: { aroundSend?: (send: () => void) => void };
}

type ExtraOptions = Partial<Omit<DtlsServerOptions<string>, 'send' | 'handler'>>;

function harness(opts: ExtraOptions = {}): Harness {
  const h: Omit<Harness, 'server'> = {
    clock: new ManualClock(1_000_000),
    sent: [],
    data: [],
    established: [],
    closed: [],
    failures: [],
    internalErrors: [],
    hooks: {},
  };
  const server = new DtlsServer<string>({
    ...DTLS_SERVER_DEFAULTS,
    clock: h.clock,
    ...opts,
    send: (data, port, address) => {
      const copy = (): void => void h.sent.push({ data: Buffer.from(data), port, address });
      if (h.hooks.aroundSend === undefined) copy();
      else h.hooks.aroundSend(copy);
    },
    handler: {
      resolvePsk: (identity) =>
        identity.toString() === IDENTITY
          ? { ok: true, psk: PSK, principal: 'device-1' }
          : { ok: false, alert: 'unknown_psk_identity', reason: 'unknown-device' },
      onData: (_assoc, d) => h.data.push(Buffer.from(d)),
      onEstablished: (a) => h.established.push(a),
      onClosed: (_a, reason) => h.closed.push(reason),
      onHandshakeFailed: (f) => h.failures.push(f),
      onInternalError: (e) => h.internalErrors.push(e),
    },
  });
  return { ...h, server };
}

/** Runs `f` with a fresh server and always closes it (timers). */
function withServer(f: (h: Harness) => void, opts: ExtraOptions = {}): void {
  const h = harness(opts);
  try {
    f(h);
  } finally {
    h.server.close();
  }
}

function records(d: Buffer): DtlsRecord[] {
  const out: DtlsRecord[] = [];
  let off = 0;
  while (off < d.length) {
    const rec = readRecord(d, off);
    assert.ok(rec !== undefined, `record at ${off}`);
    out.push(rec);
    off += rec.raw.length;
  }
  return out;
}

function only<T>(xs: readonly T[]): T {
  assert.equal(xs.length, 1);
  return xs[0]!;
}

function chDatagram(body: Buffer, recordSeq: number, messageSeq: number, version = DTLS_1_2) {
  return plainRecord(
    ContentType.handshake,
    version,
    0,
    recordSeq,
    handshakeMessage(HandshakeType.clientHello, messageSeq, body),
  );
}

function withRecordSeq(record: Buffer, seq: number): Buffer {
  const out = Buffer.from(record);
  out.writeUIntBE(seq, 5, 6);
  return out;
}

/** The cookie of a HelloVerifyRequest datagram, checking its shape on the way. */
function hvrCookie(d: Buffer, expectedRecordSeq: number): Buffer {
  const rec = only(records(d));
  assert.equal(rec.type, ContentType.handshake);
  assert.equal(rec.version, DTLS_1_0);
  assert.equal(rec.epoch, 0);
  assert.equal(rec.seq, expectedRecordSeq);
  const f = only(readFragments(rec.body));
  assert.equal(f.msgType, HandshakeType.helloVerifyRequest);
  assert.equal(f.messageSeq, 0);
  assert.equal(f.fragment.length, f.length);
  const hvr = parseHelloVerifyRequest(f.fragment);
  assert.equal(hvr.version, DTLS_1_0);
  return hvr.cookie;
}

function totalDrops(server: DtlsServer<unknown>): number {
  return DROP_REASONS.reduce((n, r) => n + server.stats.drops[r], 0);
}

const nodeCapture = loadCapture('alcalzone_node_dtls_client_psk_ccm8_no_ems');
const osslCapture = loadCapture('openssl3_dtls12_psk_ccm8_ems');
const NODE_CH1 = nodeCapture.datagrams[0]!.data;
const OSSL_CH1 = osslCapture.datagrams[0]!.data;
const NODE_CH2 = nodeCapture.datagrams[2]!.data;

describe('DtlsServer: HelloVerifyRequest before any state', () => {
  test('the HelloVerifyRequest is written into one buffer, the bytes of record and message', () => {
    for (const seq of [0, 1, 0x1234, 2 ** 32 + 5, 2 ** 48 - 1]) {
      for (const cookie of [EMPTY, Buffer.alloc(16, 0xc5), Buffer.alloc(255, 7)]) {
        const expected = plainRecord(
          ContentType.handshake,
          DTLS_1_0,
          0,
          seq,
          handshakeMessage(
            HandshakeType.helloVerifyRequest,
            0,
            helloVerifyRequestBody(DTLS_1_0, cookie),
          ),
        );
        assert.equal(
          helloVerifyRequestRecord(seq, cookie).toString('hex'),
          expected.toString('hex'),
        );
      }
    }
    // a cookie-less ClientHello costs the cookie's HMAC input and the answer: two buffers
    // (four before: the body, the message and the record of the answer were one each)
    withServer((h) => {
      const statics = Buffer as unknown as { allocUnsafe: (n: number) => Buffer };
      const original = statics.allocUnsafe;
      let allocations = 0;
      statics.allocUnsafe = (n: number) => {
        allocations++;
        return original(n);
      };
      try {
        h.server.handleDatagram(NODE_CH1, ADDR, 40000);
      } finally {
        statics.allocUnsafe = original;
      }
      assert.equal(hvrCookie(only(h.sent).data, 0).length, 16);
      assert.equal(allocations, 2);
    });
  });

  test('a datagram packed with ClientHellos gets one HelloVerifyRequest, not one per hello', () => {
    withServer((h) => {
      const packed = Buffer.concat(
        Array.from({ length: 20 }, (_, i) => withRecordSeq(NODE_CH1, i)),
      );
      h.server.handleDatagram(packed, ADDR, 40002);
      assert.equal(h.sent.length, 1);
      assert.equal(h.server.stats.helloVerifySent, 1);
      assert.equal(h.server.stats.drops['unexpected-record'], 19);
      assert.equal(h.server.handshakeCount, 0);
    });
  });

  test('a cookie-less ClientHello gets an HVR with the same record seq, version FEFF', () => {
    withServer((h) => {
      h.server.handleDatagram(NODE_CH1, ADDR, 40000);
      const reply = only(h.sent);
      assert.equal(reply.address, ADDR);
      assert.equal(reply.port, 40000);
      assert.equal(hvrCookie(reply.data, 0).length, 16);
      // the same with a non-zero record sequence number
      h.server.handleDatagram(withRecordSeq(NODE_CH1, 0x123456789a), ADDR, 40000);
      hvrCookie(h.sent[1]!.data, 0x123456789a);
      // OpenSSL's ClientHello in a DTLS 1.0 record
      h.server.handleDatagram(OSSL_CH1, ADDR, 40001);
      hvrCookie(h.sent[2]!.data, 0);
      assert.equal(h.server.associationCount, 0);
      assert.equal(h.server.handshakeCount, 0);
      assert.equal(h.server.stats.helloVerifySent, 3);
      assert.equal(h.server.stats.handshakesStarted, 0);
      assert.equal(totalDrops(h.server), 0);
    });
  });

  test('the same ClientHello from the same peer gets the same cookie', () => {
    withServer((h) => {
      h.server.handleDatagram(NODE_CH1, ADDR, 40000);
      h.server.handleDatagram(NODE_CH1, ADDR, 40000);
      h.server.handleDatagram(NODE_CH1, ADDR, 40002);
      const [a, b, c] = h.sent.map((s) => hvrCookie(s.data, 0));
      assert.ok(a!.equals(b!));
      assert.ok(!a!.equals(c!));
    });
  });

  test('a ClientHello with a foreign cookie gets a fresh HVR, no state', () => {
    withServer((h) => {
      // node-dtls-client's ClientHello2 carries the cookie of another server
      h.server.handleDatagram(NODE_CH2, ADDR, 40000);
      hvrCookie(only(h.sent).data, 1);
      assert.equal(h.server.handshakeCount, 0);
    });
  });

  test('10 000 ClientHellos from distinct ports leave no handshake state', () => {
    withServer((h) => {
      for (let i = 0; i < 10_000; i++) h.server.handleDatagram(NODE_CH1, ADDR, 1024 + i);
      assert.equal(h.sent.length, 10_000);
      assert.equal(h.server.handshakeCount, 0);
      assert.equal(h.server.associationCount, 0);
      assert.equal(h.server.stats.helloVerifySent, 10_000);
      assert.equal(h.internalErrors.length, 0);
    });
  });
});

interface ClientProfile {
  readonly name: string;
  readonly suites: readonly number[];
  readonly extensions: readonly (readonly [number, Buffer])[] | undefined;
  readonly suite: number;
  readonly ems: boolean;
  readonly etm: boolean;
}

const PROFILES: readonly ClientProfile[] = [
  {
    name: 'node-dtls-client style (no extensions), CCM_8',
    suites: [0xc0a8, 0x00ae],
    extensions: undefined,
    suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
    ems: false,
    etm: false,
  },
  {
    name: 'OpenSSL style CCM_8 + EMS (ETM offered, not echoed)',
    suites: [0xc0a8, 0x00ff],
    extensions: [
      [ExtensionType.encryptThenMac, EMPTY],
      [ExtensionType.extendedMasterSecret, EMPTY],
    ],
    suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
    ems: true,
    etm: false,
  },
  {
    name: 'CBC-SHA256 + EMS + ETM',
    suites: [0x00ae],
    extensions: [
      [ExtensionType.renegotiationInfo, Buffer.from([0])],
      [ExtensionType.encryptThenMac, EMPTY],
      [ExtensionType.extendedMasterSecret, EMPTY],
    ],
    suite: CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
    ems: true,
    etm: true,
  },
  {
    name: 'CBC-SHA256 + EMS, MAC-then-encrypt',
    suites: [0x00ae, 0x00ff],
    extensions: [[ExtensionType.extendedMasterSecret, EMPTY]],
    suite: CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
    ems: true,
    etm: false,
  },
];

interface AfterHello {
  readonly random: Buffer;
  readonly ch2: Buffer;
  /** The server's flight 4 datagram. */
  readonly flight: Buffer;
}

/** ClientHello, HVR, ClientHello with cookie; returns the server's flight 4. */
function hello(
  h: Harness,
  p: ClientProfile,
  port: number,
  random: Buffer,
  address = ADDR,
): AfterHello {
  const ch1 = clientHelloBody({
    random,
    cookie: EMPTY,
    cipherSuites: p.suites,
    extensions: p.extensions,
  });
  const before = h.sent.length;
  const handshakes = h.server.handshakeCount;
  h.server.handleDatagram(chDatagram(ch1, 0, 0), address, port);
  assert.equal(h.sent.length, before + 1);
  const cookie = hvrCookie(h.sent[before]!.data, 0);
  // no state for a ClientHello without a cookie
  assert.equal(h.server.handshakeCount, handshakes);
  const ch2 = clientHelloBody({ random, cookie, cipherSuites: p.suites, extensions: p.extensions });
  h.server.handleDatagram(chDatagram(ch2, 1, 1), address, port);
  assert.equal(h.sent.length, before + 2);
  return { random, ch2, flight: h.sent[before + 1]!.data };
}

function serverMessages(flight: Buffer): { rec: DtlsRecord; f: HandshakeFragment }[] {
  return records(flight).map((rec) => {
    assert.equal(rec.type, ContentType.handshake);
    assert.equal(rec.epoch, 0);
    return { rec, f: only(readFragments(rec.body)) };
  });
}

/** Flight 5 (CKE, CCS, Finished in one datagram) and the keys the client derived. */
function clientFinish(
  p: ClientProfile,
  a: AfterHello,
  psk: Buffer,
  identity = IDENTITY,
): { datagram: Buffer; keys: SessionKeys; transcript: Buffer; finished: Buffer } {
  const msgs = serverMessages(a.flight);
  const shMsg = msgs[0]!.f;
  const sh = parseServerHello(shMsg.fragment);
  const cke = handshakeMessage(
    HandshakeType.clientKeyExchange,
    2,
    clientKeyExchangeBody(Buffer.from(identity)),
  );
  const transcript = Buffer.concat([
    handshakeMessage(HandshakeType.clientHello, 1, a.ch2),
    ...msgs.map(({ f }) => handshakeMessage(f.msgType, f.messageSeq, f.fragment)),
    cke,
  ]);
  const keys = deriveSessionKeys({
    suite: sh.cipherSuite,
    psk,
    clientRandom: a.random,
    serverRandom: sh.random,
    sessionHash: p.ems ? sha256(transcript) : undefined,
    encryptThenMac: p.etm,
  });
  const finished = handshakeMessage(
    HandshakeType.finished,
    3,
    verifyData(keys.master, 'client finished', sha256(transcript)),
  );
  const datagram = Buffer.concat([
    plainRecord(ContentType.handshake, DTLS_1_2, 0, 2, cke),
    plainRecord(ContentType.changeCipherSpec, DTLS_1_2, 0, 3, Buffer.from([1])),
    keys.clientWrite.seal(ContentType.handshake, 1, 0, finished),
  ]);
  return { datagram, keys, transcript, finished };
}

/**
 * Moves the server's clock to each of its next timers until the handshake with `port` is over
 * (the verdict timer, two retransmission intervals after a record that did not authenticate).
 */
function settled(h: Harness, port: number): void {
  for (let i = 0; i < 100 && h.server.handshaking(ADDR, port); i++) {
    const next = h.clock.nextIn;
    assert.ok(next !== undefined, 'no timer pending');
    h.clock.advance(next);
  }
  assert.equal(h.server.handshaking(ADDR, port), false, 'handshake still in progress');
}

describe('DtlsServer: handshakes driven by hand', () => {
  test('a ClientHello with a valid cookie creates exactly one handshake', () => {
    withServer((h) => {
      const a = hello(h, PROFILES[0]!, 41000, Buffer.alloc(32, 0x42));
      assert.equal(h.server.handshakeCount, 1);
      assert.equal(h.server.associationCount, 0);
      assert.equal(h.server.stats.handshakesStarted, 1);
      // flight 4: ServerHello (record seq 1, message_seq 1), ServerHelloDone (2, 2)
      const msgs = serverMessages(a.flight);
      assert.deepEqual(
        msgs.map(({ rec, f }) => [rec.version, rec.seq, f.msgType, f.messageSeq]),
        [
          [DTLS_1_2, 1, HandshakeType.serverHello, 1],
          [DTLS_1_2, 2, HandshakeType.serverHelloDone, 2],
        ],
      );
      // the same ClientHello again: the flight is resent, no second handshake
      const ch2 = chDatagram(a.ch2, 1, 1);
      h.server.handleDatagram(ch2, ADDR, 41000);
      assert.equal(h.server.handshakeCount, 1);
      assert.equal(h.server.stats.handshakesStarted, 1);
      assert.equal(h.server.stats.retransmissions, 1);
      const again = serverMessages(h.sent.at(-1)!.data);
      assert.deepEqual(
        again.map(({ rec, f }) => [rec.seq, f.messageSeq]),
        [
          [3, 1],
          [4, 2],
        ],
      );
      // the cookie is bound to the port: from elsewhere the same hello gets an HVR
      h.server.handleDatagram(ch2, ADDR, 41001);
      hvrCookie(h.sent.at(-1)!.data, 1);
      assert.equal(h.server.handshakeCount, 1);
    });
  });

  for (const p of PROFILES) {
    test(`full handshake, data both ways, close_notify: ${p.name}`, () => {
      withServer((h) => {
        const port = 42000;
        const a = hello(h, p, port, Buffer.alloc(32, 0x17));
        const sh = parseServerHello(serverMessages(a.flight)[0]!.f.fragment);
        assert.equal(sh.cipherSuite, p.suite);
        assert.equal(sh.extensions.has(ExtensionType.extendedMasterSecret), p.ems);
        assert.equal(sh.extensions.has(ExtensionType.encryptThenMac), p.etm);
        assert.equal(
          sh.extensions.has(ExtensionType.renegotiationInfo),
          p.suites.includes(0x00ff) ||
            (p.extensions ?? []).some(([t]) => t === ExtensionType.renegotiationInfo),
        );

        const fin = clientFinish(p, a, PSK);
        const before = h.sent.length;
        h.server.handleDatagram(fin.datagram, ADDR, port);
        assert.deepEqual(h.failures, []);
        assert.equal(h.sent.length, before + 1);
        assert.equal(h.server.handshakeCount, 0);
        assert.equal(h.server.associationCount, 1);
        const assoc = only(h.established);
        assert.equal(assoc.identity, IDENTITY);
        assert.equal(assoc.principal, 'device-1');
        assert.equal(assoc.extendedMasterSecret, p.ems);

        // flight 6: CCS (epoch 0, seq 3) and the server Finished (epoch 1, seq 0)
        const [ccs, finRec, ...rest] = records(h.sent[before]!.data);
        assert.equal(rest.length, 0);
        assert.deepEqual([ccs?.type, ccs?.epoch, ccs?.seq, [...ccs!.body]], [20, 0, 3, [1]]);
        assert.deepEqual([finRec?.type, finRec?.epoch, finRec?.seq], [22, 1, 0]);
        const serverFin = fin.keys.serverWrite.open(22, DTLS_1_2, 1, 0, finRec!.body);
        assert.ok(serverFin !== undefined);
        const expected = handshakeMessage(
          HandshakeType.finished,
          3,
          verifyData(
            fin.keys.master,
            'server finished',
            sha256(Buffer.concat([fin.transcript, fin.finished])),
          ),
        );
        assert.equal(serverFin.toString('hex'), expected.toString('hex'));

        // application data in both directions
        h.server.handleDatagram(
          fin.keys.clientWrite.seal(23, 1, 1, Buffer.from('ping')),
          ADDR,
          port,
        );
        assert.deepEqual(
          h.data.map((d) => d.toString()),
          ['ping'],
        );
        assert.ok(assoc.send(Buffer.from('pong')));
        const pong = only(records(h.sent.at(-1)!.data));
        assert.equal(pong.seq, 1);
        assert.equal(fin.keys.serverWrite.open(23, DTLS_1_2, 1, 1, pong.body)?.toString(), 'pong');
        // a replayed record is dropped
        h.server.handleDatagram(
          fin.keys.clientWrite.seal(23, 1, 1, Buffer.from('ping')),
          ADDR,
          port,
        );
        assert.equal(h.data.length, 1);
        assert.equal(h.server.stats.drops.replay, 1);

        // close_notify is answered with close_notify and the association is gone
        h.server.handleDatagram(
          fin.keys.clientWrite.seal(21, 1, 2, Buffer.from([1, 0])),
          ADDR,
          port,
        );
        const bye = only(records(h.sent.at(-1)!.data));
        assert.equal(
          fin.keys.serverWrite.open(21, DTLS_1_2, 1, bye.seq, bye.body)?.toString('hex'),
          '0100',
        );
        assert.equal(h.server.associationCount, 0);
        assert.deepEqual(h.closed, ['peer-close-notify']);
        assert.deepEqual(h.internalErrors, []);
      });
    });
  }

  test('flight 5 reordered (Finished, CCS, CKE) in separate datagrams still completes', () => {
    withServer((h) => {
      const p = PROFILES[2]!;
      const a = hello(h, p, 42100, Buffer.alloc(32, 0x21));
      const fin = clientFinish(p, a, PSK);
      const [cke, ccs, finished] = records(fin.datagram);
      for (const r of [finished!, ccs!, cke!]) h.server.handleDatagram(r.raw, ADDR, 42100);
      assert.deepEqual(h.failures, []);
      assert.equal(h.server.associationCount, 1);
      assert.equal(h.server.handshakeCount, 0);
    });
  });

  test('a retransmitted client Finished makes the server resend CCS + Finished', () => {
    withServer((h) => {
      const p = PROFILES[0]!;
      const port = 42200;
      const a = hello(h, p, port, Buffer.alloc(32, 0x22));
      const fin = clientFinish(p, a, PSK);
      h.server.handleDatagram(fin.datagram, ADDR, port);
      const first = records(h.sent.at(-1)!.data);
      const firstFin = fin.keys.serverWrite.open(22, DTLS_1_2, 1, 0, first[1]!.body)!;
      // the client lost flight 6 and repeats flight 5 with new record sequence numbers
      const again = Buffer.concat([
        plainRecord(22, DTLS_1_2, 0, 4, records(fin.datagram)[0]!.body),
        plainRecord(20, DTLS_1_2, 0, 5, Buffer.from([1])),
        fin.keys.clientWrite.seal(22, 1, 1, fin.finished),
      ]);
      const before = h.sent.length;
      h.server.handleDatagram(again, ADDR, port);
      assert.equal(h.sent.length, before + 1);
      const [ccs, finRec] = records(h.sent.at(-1)!.data);
      assert.deepEqual([ccs?.type, ccs?.epoch, ccs?.seq], [20, 0, 4]);
      assert.deepEqual([finRec?.type, finRec?.epoch, finRec?.seq], [22, 1, 1]);
      const resent = fin.keys.serverWrite.open(22, DTLS_1_2, 1, 1, finRec!.body);
      assert.equal(resent?.toString('hex'), firstFin.toString('hex'));
      assert.equal(h.server.stats.retransmissions, 1);
      assert.equal(h.server.associationCount, 1);
      // after application data from the client the flight is no longer resent
      h.server.handleDatagram(fin.keys.clientWrite.seal(23, 1, 2, Buffer.from('x')), ADDR, port);
      const count = h.sent.length;
      h.server.handleDatagram(fin.keys.clientWrite.seal(22, 1, 3, fin.finished), ADDR, port);
      assert.equal(h.sent.length, count);
    });
  });

  const refusals = [
    {
      name: 'a wrong PSK',
      port: 43000,
      psk: Buffer.from('not-the-right-key'),
      identity: IDENTITY,
      reason: 'bad-record-mac',
      detail: undefined,
      detailed: AlertDescription.badRecordMac,
    },
    {
      name: 'an unknown identity',
      port: 43001,
      psk: PSK,
      identity: 'somebody-else',
      reason: 'psk-rejected',
      detail: 'unknown-device',
      detailed: AlertDescription.unknownPskIdentity,
    },
  ] as const;

  for (const c of refusals) {
    test(`${c.name}: decrypt_error after the Finished, the real reason in the failure`, () => {
      const h = harness({ retransmitTimeoutMs: 20 });
      try {
        const p = PROFILES[1]!;
        const a = hello(h, p, c.port, Buffer.alloc(32, 0x33));
        const fin = clientFinish(p, a, c.psk, c.identity);
        const before = h.sent.length;
        h.server.handleDatagram(fin.datagram, ADDR, c.port);
        // nothing at once: the Finished that does not authenticate might be a forgery
        assert.equal(h.sent.length, before);
        assert.equal(h.server.handshakeCount, 1);
        const failedAt = h.clock.now();
        settled(h, c.port);
        // the verdict timer: two retransmission intervals (2 × 20 ms) after the bad record
        assert.equal(h.clock.now() - failedAt, 40);
        assert.equal(h.server.associationCount, 0);
        const f = only(h.failures);
        assert.equal(f.reason, c.reason);
        assert.equal(f.detail, c.detail);
        assert.equal(f.identity, c.identity);
        assert.equal(f.alert, 'decrypt_error');
        const alert = only(records(only(h.sent.slice(before)).data));
        assert.deepEqual(
          [alert.type, alert.epoch, [...alert.body]],
          [21, 0, [2, AlertDescription.decryptError]],
        );
      } finally {
        h.server.close();
      }
    });
  }

  test('detailedPskAlerts: unknown_psk_identity at once, bad_record_mac for a wrong key', () => {
    const h = harness({ retransmitTimeoutMs: 20, detailedPskAlerts: true });
    try {
      const p = PROFILES[0]!;
      for (const c of refusals) {
        const a = hello(h, p, c.port, Buffer.alloc(32, 0x34));
        h.server.handleDatagram(clientFinish(p, a, c.psk, c.identity).datagram, ADDR, c.port);
        settled(h, c.port);
        const alert = only(records(h.sent.at(-1)!.data));
        assert.deepEqual([...alert.body], [2, c.detailed]);
      }
      assert.deepEqual(
        h.failures.map((f) => [f.reason, f.detail]),
        refusals.map((c) => [c.reason, c.detail]),
      );
    } finally {
      h.server.close();
    }
  });

  test('a cookie is not valid for a different address whose text extends the first', () => {
    withServer((h) => {
      const r = Buffer.alloc(32, 0x11);
      r[31] = 1;
      // X from the attacker's own address: client_version FD00, no session id
      const x = clientHelloBody({
        random: r,
        cookie: EMPTY,
        cipherSuites: [0xc0a8],
        extensions: undefined,
      });
      x.writeUInt16BE(0xfd00, 0);
      h.server.handleDatagram(chDatagram(x, 0, 0), '10.0.0.11', 0x12fe);
      const cookie = hvrCookie(only(h.sent).data, 0);
      // Y, spoofed: version FEFD, random 00‖r[0..30], session_id [00]; hashes like X
      const y = Buffer.concat([
        Buffer.from([0xfe, 0xfd, 0x00]),
        r.subarray(0, 31),
        Buffer.from([1, 0, cookie.length]),
        cookie,
        Buffer.from('0002c0a80100', 'hex'),
      ]);
      h.server.handleDatagram(chDatagram(y, 1, 1), '10.0.0.1', 0x3112);
      assert.equal(h.server.handshakeCount, 0);
      assert.equal(h.server.stats.handshakesStarted, 0);
    });
  });
});

describe('DtlsServer: limits, draining, replacement, cookie lifetime', () => {
  const p = PROFILES[0]!;

  function ch2With(h: Harness, port: number, random: Buffer): Buffer {
    const ch1 = clientHelloBody({
      random,
      cookie: EMPTY,
      cipherSuites: p.suites,
      extensions: undefined,
    });
    h.server.handleDatagram(chDatagram(ch1, 0, 0), ADDR, port);
    const cookie = hvrCookie(h.sent.at(-1)!.data, 0);
    return chDatagram(
      clientHelloBody({ random, cookie, cipherSuites: p.suites, extensions: undefined }),
      1,
      1,
    );
  }

  test('maxHandshakes bounds concurrent handshakes (handshake-limit)', () => {
    withServer(
      (h) => {
        hello(h, p, 46000, Buffer.alloc(32, 1));
        hello(h, p, 46001, Buffer.alloc(32, 2));
        const third = ch2With(h, 46002, Buffer.alloc(32, 3));
        const sent = h.sent.length;
        h.server.handleDatagram(third, ADDR, 46002);
        assert.equal(h.sent.length, sent);
        assert.equal(h.server.handshakeCount, 2);
        assert.equal(h.server.stats.drops['handshake-limit'], 1);
      },
      { maxHandshakes: 2 },
    );
  });

  test('stopAccepting: new ClientHellos are dropped (not-accepting), no HVR', () => {
    withServer((h) => {
      h.server.stopAccepting();
      h.server.handleDatagram(NODE_CH1, ADDR, 46100);
      assert.equal(h.sent.length, 0);
      assert.equal(h.server.stats.drops['not-accepting'], 1);
    });
  });

  test('a new verified ClientHello from the same peer replaces its handshake', () => {
    withServer((h) => {
      hello(h, p, 46200, Buffer.alloc(32, 1));
      hello(h, p, 46200, Buffer.alloc(32, 2));
      assert.equal(h.server.handshakeCount, 1);
      assert.equal(h.server.stats.handshakesStarted, 2);
      assert.deepEqual(
        h.failures.map((f) => f.reason),
        ['replaced'],
      );
    });
  });

  test('a cookie made before one rotation is accepted, after two it is not', () => {
    withServer(
      (h) => {
        const ch2 = ch2With(h, 46300, Buffer.alloc(32, 9));
        h.clock.advance(10_000); // one rotation
        const ch2b = ch2With(h, 46301, Buffer.alloc(32, 9));
        h.clock.advance(10_000); // a second rotation: the first cookie is gone, the second still good
        const sent = h.sent.length;
        h.server.handleDatagram(ch2, ADDR, 46300);
        hvrCookie(h.sent[sent]!.data, 1);
        assert.equal(h.server.handshakeCount, 0);
        h.server.handleDatagram(ch2b, ADDR, 46301);
        assert.equal(h.server.handshakeCount, 1);
      },
      { cookieLifetimeMs: 10_000 },
    );
  });
});

describe('DtlsServer: a peer that handshakes again', () => {
  test('the old association keeps working through the new cookie exchange and handshake', () => {
    withServer((h) => {
      const p = PROFILES[0]!;
      const port = 47000;
      const first = clientFinish(p, hello(h, p, port, Buffer.alloc(32, 1)), PSK);
      h.server.handleDatagram(first.datagram, ADDR, port);
      assert.equal(h.server.associationCount, 1);
      const oldAssoc = only(h.established);
      let seq = 1;
      const oldData = (text: string): Buffer =>
        first.keys.clientWrite.seal(ContentType.applicationData, 1, seq++, Buffer.from(text));

      // the peer (same address and port) starts over: ClientHello, HVR, ClientHello + cookie
      const second = hello(h, p, port, Buffer.alloc(32, 2));
      assert.equal(h.server.handshakeCount, 1);
      assert.equal(h.server.associationCount, 1);
      // the old association still carries data while the new handshake runs
      h.server.handleDatagram(oldData('during'), ADDR, port);
      assert.deepEqual(
        h.data.map((d) => d.toString()),
        ['during'],
      );
      assert.equal(oldAssoc.open, true);
      // the new Finished replaces it
      h.server.handleDatagram(clientFinish(p, second, PSK).datagram, ADDR, port);
      assert.equal(h.server.associationCount, 1);
      assert.equal(h.established.length, 2);
      assert.equal(oldAssoc.open, false);
      assert.deepEqual(h.closed, ['replaced']);
      // and records of the old keys are dropped from now on
      h.server.handleDatagram(oldData('after'), ADDR, port);
      assert.equal(h.data.length, 1);
      assert.equal(h.server.stats.drops['bad-mac'], 1);
    });
  });

  test('a new handshake that fails leaves the old association in place', () => {
    const h = harness({ retransmitTimeoutMs: 20 });
    try {
      const p = PROFILES[0]!;
      const port = 47100;
      h.server.handleDatagram(
        clientFinish(p, hello(h, p, port, Buffer.alloc(32, 1)), PSK).datagram,
        ADDR,
        port,
      );
      hello(h, p, port, Buffer.alloc(32, 2));
      // a wrong key on the new handshake: it fails, the association stays
      const bad = clientFinish(p, hello(h, p, port, Buffer.alloc(32, 3)), Buffer.alloc(16, 7));
      h.server.handleDatagram(bad.datagram, ADDR, port);
      settled(h, port);
      assert.equal(h.server.handshakeCount, 0);
      assert.equal(h.server.associationCount, 1);
      assert.deepEqual(h.closed, []);
    } finally {
      h.server.close();
    }
  });
});

describe('DtlsServer: records and hellos an attacker can inject into a handshake', () => {
  /** An epoch-1 handshake record that cannot authenticate (random body). */
  const forged = (seq: number, len = 40): Buffer => {
    const body = Buffer.alloc(len, 0xa5);
    body.writeUInt32BE(seq, 0);
    return Buffer.concat([Buffer.from([22, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, seq, 0, len]), body]);
  };

  test('forged epoch-1 records between CCS and Finished are dropped silently; the Finished completes', () => {
    withServer((h) => {
      const p = PROFILES[1]!;
      const port = 47500;
      const fin = clientFinish(p, hello(h, p, port, Buffer.alloc(32, 0x51)), PSK);
      const [cke, ccs, finished] = records(fin.datagram);
      const before = h.sent.length;
      h.server.handleDatagram(Buffer.concat([cke!.raw, ccs!.raw]), ADDR, port);
      // one with the Finished's own sequence number, one with a later one, one with a flipped tag
      const flipped = Buffer.from(finished!.raw);
      flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 1;
      for (const d of [forged(0), forged(7), flipped]) h.server.handleDatagram(d, ADDR, port);
      assert.equal(h.sent.length, before, 'no alert');
      assert.equal(h.server.handshakeCount, 1);
      assert.equal(h.server.stats.drops['bad-mac'], 3);
      h.server.handleDatagram(finished!.raw, ADDR, port);
      assert.equal(h.server.associationCount, 1);
      assert.deepEqual(h.failures, []);
    });
  });

  test('forged records held before the keys cannot crowd out or pre-empt the real Finished', () => {
    withServer((h) => {
      const p = PROFILES[0]!;
      const port = 47501;
      const fin = clientFinish(p, hello(h, p, port, Buffer.alloc(32, 0x52)), PSK);
      // twelve forgeries while the server has no keys yet: held (the buffer holds eight)
      for (let i = 0; i < 12; i++) h.server.handleDatagram(forged(i), ADDR, port);
      h.server.handleDatagram(fin.datagram, ADDR, port);
      assert.equal(h.server.associationCount, 1);
      assert.deepEqual(h.failures, []);
      assert.ok(h.server.stats.drops['bad-mac'] >= 1);
    });
  });

  test('a late copy of the ClientHello that made the association starts nothing', () => {
    withServer((h) => {
      const p = PROFILES[0]!;
      const port = 47502;
      const a = hello(h, p, port, Buffer.alloc(32, 0x53));
      const fin = clientFinish(p, a, PSK);
      h.server.handleDatagram(fin.datagram, ADDR, port);
      assert.equal(h.server.associationCount, 1);
      const finFlight = h.sent.length;
      // the copy: same random, same valid cookie, later record sequence number
      h.server.handleDatagram(chDatagram(a.ch2, 9, 1), ADDR, port);
      assert.equal(h.sent.length, finFlight, 'no ServerHello flight');
      assert.equal(h.server.handshakeCount, 0);
      assert.equal(h.server.stats.handshakesStarted, 1);
      assert.equal(h.server.stats.drops['duplicate-client-hello'], 1);
      // the server's Finished was lost: the client's repeated flight 5 gets it again
      const again = Buffer.concat([
        plainRecord(22, DTLS_1_2, 0, 10, records(fin.datagram)[0]!.body),
        plainRecord(20, DTLS_1_2, 0, 11, Buffer.from([1])),
        fin.keys.clientWrite.seal(22, 1, 1, fin.finished),
      ]);
      h.server.handleDatagram(again, ADDR, port);
      assert.equal(h.sent.length, finFlight + 1);
      const [ccs, finRec] = records(h.sent.at(-1)!.data);
      assert.deepEqual([ccs?.type, finRec?.type, finRec?.epoch], [20, 22, 1]);
      assert.equal(h.server.associationCount, 1);
      assert.deepEqual(h.failures, []);
      assert.deepEqual(h.closed, []);

      // a copy arriving while a genuine new handshake runs does not replace that one either
      const next = hello(h, p, port, Buffer.alloc(32, 0x54));
      h.server.handleDatagram(chDatagram(a.ch2, 12, 1), ADDR, port);
      assert.equal(h.server.handshakeCount, 1);
      h.server.handleDatagram(clientFinish(p, next, PSK).datagram, ADDR, port);
      assert.equal(h.established.length, 2);
      assert.deepEqual(h.failures, []);
    });
  });
});

/** Timers short enough to walk through a millisecond at a time. */
const SHORT_TIMERS: ExtraOptions = {
  retransmitTimeoutMs: 40,
  maxRetransmitTimeoutMs: 1_000,
  handshakeTimeoutMs: 700,
};

describe('DtlsServer: flight retransmission on its timer', () => {
  test('flight 4 is sent again with doubling intervals, new record numbers, the same message_seq, until the handshake times out', () => {
    const h = harness(SHORT_TIMERS);
    try {
      const t0 = h.clock.now();
      const first = hello(h, PROFILES[0]!, 48000, Buffer.alloc(32, 5));
      const firstSeqs = serverMessages(first.flight).map(({ rec }) => rec.seq);
      const sentBefore = h.sent.length;
      const times: number[] = [];
      // the clock moves a millisecond at a time: each flight is seen at the time it went out;
      // the handshake's deadline ends the retransmissions
      while (h.failures.length === 0 && h.clock.now() - t0 < 5_000) {
        h.clock.advance(1);
        while (times.length < h.sent.length - sentBefore) times.push(h.clock.now() - t0);
      }
      assert.equal(h.clock.now() - t0, 700, 'the handshake deadline');
      const resent = h.sent.slice(sentBefore);
      // 40, 80, 160, 320 ms after the first: four retransmissions inside 700 ms, then the deadline
      assert.ok(resent.length >= 3 && resent.length <= 4, `${resent.length} retransmissions`);
      assert.deepEqual(times, [40, 120, 280, 600]);
      for (let i = 1; i < times.length - 1; i++) {
        const gap = (times[i + 1] ?? 0) - (times[i] ?? 0);
        const prev = (times[i] ?? 0) - (times[i - 1] ?? 0);
        assert.ok(gap > prev * 1.4, `intervals grow: ${times.join(', ')}`);
      }
      let lastSeq = Math.max(...firstSeqs);
      for (const d of resent) {
        const msgs = serverMessages(d.data);
        assert.deepEqual(
          msgs.map(({ f }) => f.messageSeq),
          [1, 2],
        );
        for (const { rec } of msgs) {
          assert.ok(rec.seq > lastSeq, 'fresh record sequence numbers');
          lastSeq = rec.seq;
        }
      }
      assert.equal(h.server.stats.retransmissions, resent.length);
      assert.equal(h.server.handshakeCount, 0);
      assert.deepEqual(
        h.failures.map((f) => f.reason),
        ['timeout'],
      );
    } finally {
      h.server.close();
    }
  });
});

describe('DtlsServer: the handshakes share one host timer', () => {
  test('three handshakes in progress hold one host timer between them, and each flight is still sent again on its own schedule', () => {
    withServer((h) => {
      const idle = h.clock.pending; // the association sweep
      const t0 = h.clock.now();
      const ports = [48200, 48201, 48202];
      const sentAt: number[] = [];
      for (const [i, port] of ports.entries()) {
        hello(h, PROFILES[0]!, port, Buffer.alloc(32, 7 + i));
        sentAt.push(h.clock.now() - t0);
        assert.equal(h.clock.pending, idle + 1, `host timers with ${i + 1} handshakes`);
        h.clock.advance(10);
      }
      // each flight again 40 ms after it first went out, to its own port
      const resent: [number, number][] = [];
      const before = h.sent.length;
      while (h.clock.now() - t0 < 65) {
        h.clock.advance(1);
        for (const d of h.sent.slice(before + resent.length))
          resent.push([d.port, h.clock.now() - t0]);
      }
      assert.deepEqual(sentAt, [0, 10, 20]);
      assert.deepEqual(resent, [
        [48200, 40],
        [48201, 50],
        [48202, 60],
      ]);
      assert.equal(h.clock.pending, idle + 1);
      // all three time out at their deadline (700 ms); nothing holds a host timer for them after
      h.clock.advance(1_000);
      assert.deepEqual(
        h.failures.map((f) => f.reason),
        ['timeout', 'timeout', 'timeout'],
      );
      assert.equal(h.server.handshakeCount, 0);
      assert.ok(h.clock.pending <= idle + 1, 'at most the lingering host timer');
    }, SHORT_TIMERS);
  });
});

describe('DtlsServer: after the client answered', () => {
  test('flight 4 is not sent again once the ClientKeyExchange is in, and the deadline still ends the handshake', () => {
    withServer((h) => {
      const t0 = h.clock.now();
      const p = PROFILES[0]!;
      const answered = hello(h, p, 48100, Buffer.alloc(32, 6));
      h.clock.advance(10);
      const [cke] = records(clientFinish(p, answered, PSK).datagram);
      h.server.handleDatagram(cke!.raw, ADDR, 48100); // no CCS, no Finished: it waits for them
      const sentBefore = h.sent.length;
      while (h.failures.length === 0 && h.clock.now() - t0 < 5_000) h.clock.advance(1);
      assert.equal(h.clock.now() - t0, 700, 'the handshake deadline');
      assert.equal(h.sent.length, sentBefore, 'nothing sent after the ClientKeyExchange');
      assert.equal(h.server.stats.retransmissions, 0);
      assert.deepEqual(
        h.failures.map((f) => [f.reason, f.detail]),
        [['timeout', 'wait-finished']],
      );
    }, SHORT_TIMERS);
  });
});

describe('DtlsServer: stalled handshakes under pressure', () => {
  test('once the table is half full, a handshake whose client never answered is given up after stalledHandshakeTimeoutMs, not a millisecond before', () => {
    withServer(
      (h) => {
        const p = PROFILES[0]!;
        hello(h, p, 49000, Buffer.alloc(32, 1)); // never answers
        const answered = hello(h, p, 49001, Buffer.alloc(32, 2));
        const [cke] = records(clientFinish(p, answered, PSK).datagram);
        h.server.handleDatagram(cke!.raw, ADDR, 49001); // answered: not stalled any more
        h.clock.advance(4_999);
        hello(h, p, 49002, Buffer.alloc(32, 3));
        assert.equal(h.server.handshakeCount, 3, 'nothing given up before the timeout');
        assert.equal(h.failures.length, 0);
        h.clock.advance(1);
        hello(h, p, 49003, Buffer.alloc(32, 4));
        assert.deepEqual(
          h.failures.map((f) => [f.reason, f.port]),
          [['stalled', 49000]],
        );
        assert.equal(h.server.handshakeCount, 3);
        assert.equal(h.server.handshaking(ADDR, 49001), true);
      },
      { maxHandshakes: 4, stalledHandshakeTimeoutMs: 5_000, handshakeTimeoutMs: 60_000 },
    );
  });
});

describe('DtlsServer: idle associations are evicted', () => {
  test('after idleTimeout without traffic the association gets close_notify and is gone', () => {
    const h = harness({ idleTimeoutMs: 60_000, sweepIntervalMs: 20 });
    try {
      const p = PROFILES[0]!;
      h.server.handleDatagram(
        clientFinish(p, hello(h, p, 47200, Buffer.alloc(32, 1)), PSK).datagram,
        ADDR,
        47200,
      );
      assert.equal(h.server.associationCount, 1);
      // a sweep runs (every 20 ms) and finds the association active
      h.clock.advance(20);
      assert.equal(h.server.associationCount, 1, 'not idle yet');
      h.clock.advance(59_970);
      assert.equal(h.server.associationCount, 1, 'not idle yet');
      const sent = h.sent.length;
      // the first sweep past the idle timeout ends it
      h.clock.advance(40);
      assert.equal(h.server.associationCount, 0);
      assert.deepEqual(h.closed, ['idle']);
      assert.equal(h.server.stats.closed.idle, 1);
      // the peer was told: one encrypted alert record
      const alert = only(records(only(h.sent.slice(sent)).data));
      assert.equal(alert.type, ContentType.alert);
      assert.equal(alert.epoch, 1);
    } finally {
      h.server.close();
    }
  });
});

describe('DtlsServer: the idle sweep works in bounded batches', () => {
  test('a pass checks at most sweepBatch associations per turn, the rest 1 ms later', () => {
    const h = harness({ idleTimeoutMs: 60_000, sweepIntervalMs: 1_000, sweepBatch: 2 });
    try {
      const p = PROFILES[0]!;
      // last activity between two sweeps: a pass finds all five idle or none
      h.clock.advance(500);
      for (let i = 0; i < 5; i++) {
        const port = 47300 + i;
        h.server.handleDatagram(
          clientFinish(p, hello(h, p, port, Buffer.alloc(32, i + 1)), PSK).datagram,
          ADDR,
          port,
        );
      }
      assert.equal(h.server.associationCount, 5);
      // sweeps every second; the first pass that finds them idle starts at +61 000
      h.clock.advance(60_500);
      assert.equal(h.server.associationCount, 3, 'one batch of two in that turn');
      h.clock.advance(1);
      assert.equal(h.server.associationCount, 1, 'the next batch 1 ms later');
      h.clock.advance(1);
      assert.equal(h.server.associationCount, 0);
      assert.deepEqual(h.closed, ['idle', 'idle', 'idle', 'idle', 'idle']);
      // the pass is over: the interval starts the next one, nothing else is pending
      h.clock.advance(2_000);
      assert.equal(h.server.stats.closed.idle, 5);
    } finally {
      h.server.close();
    }
    assert.equal(h.clock.pending, 0, 'close() clears the sweep timers');
  });
});

describe('DtlsServer: garbage never throws and is counted', () => {
  const validCh = NODE_CH1;

  function expectDrop(h: Harness, datagram: Buffer, reason: (typeof DROP_REASONS)[number]) {
    const before = h.server.stats.drops[reason];
    const sent = h.sent.length;
    h.server.handleDatagram(datagram, ADDR, 44000);
    assert.equal(
      h.server.stats.drops[reason],
      before + 1,
      `${reason}: ${datagram.toString('hex')}`,
    );
    assert.equal(h.sent.length, sent);
  }

  test('truncated headers, lengths past the end, non-DTLS versions → malformed-record', () => {
    withServer((h) => {
      for (let n = 1; n < 13; n++) expectDrop(h, validCh.subarray(0, n), 'malformed-record');
      // the length field points past the end of the datagram
      for (let n = 13; n < validCh.length; n++) {
        expectDrop(h, validCh.subarray(0, n), 'malformed-record');
      }
      const longer = Buffer.from(validCh);
      longer.writeUInt16BE(0xffff, 11);
      expectDrop(h, longer, 'malformed-record');
      for (const v of [0x0303, 0x0000, 0xffff, 0x0100]) {
        const b = Buffer.from(validCh);
        b.writeUInt16BE(v, 1);
        expectDrop(h, b, 'malformed-record');
      }
      assert.equal(h.server.handshakeCount, 0);
    });
  });

  test('malformed, fragmented and unexpected records are dropped with their reason', () => {
    withServer((h) => {
      // a ClientHello record with a broken body
      const broken = Buffer.from(validCh);
      broken[13 + 12 + 2 + 32] = 40; // session_id length > 32
      expectDrop(h, broken, 'malformed-handshake');
      expectDrop(
        h,
        plainRecord(22, DTLS_1_2, 0, 0, Buffer.from('01000010000000', 'hex')),
        'malformed-handshake',
      );
      // two ClientHellos in one record
      const body = readRecord(validCh, 0)!.body;
      expectDrop(
        h,
        plainRecord(22, DTLS_1_2, 0, 0, Buffer.concat([body, body])),
        'malformed-handshake',
      );
      // a ClientHello fragment
      const f = only(readFragments(body));
      const frag = Buffer.from(body.subarray(0, 12 + 10));
      frag.writeUIntBE(10, 9, 3);
      assert.equal(f.length, body.length - 12);
      expectDrop(h, plainRecord(22, DTLS_1_2, 0, 0, frag), 'fragmented-client-hello');
      // records of a peer that has no handshake and no association
      expectDrop(h, plainRecord(23, DTLS_1_2, 1, 0, Buffer.alloc(40)), 'unknown-peer');
      expectDrop(h, plainRecord(22, DTLS_1_2, 0, 5, Buffer.alloc(20)), 'unknown-peer');
      expectDrop(h, plainRecord(21, DTLS_1_2, 0, 5, Buffer.from([2, 40])), 'unknown-peer');
      expectDrop(h, plainRecord(20, DTLS_1_2, 0, 5, Buffer.from([1])), 'unknown-peer');
      expectDrop(h, plainRecord(22, DTLS_1_2, 0, 5, EMPTY), 'unknown-peer');
      assert.equal(h.server.handshakeCount, 0);
      assert.deepEqual(h.internalErrors, []);
    });
  });

  test('a valid record followed by a truncated one: the first is answered, the rest dropped', () => {
    withServer((h) => {
      h.server.handleDatagram(Buffer.concat([validCh, validCh.subarray(0, 20)]), ADDR, 44001);
      assert.equal(h.server.stats.helloVerifySent, 1);
      assert.equal(h.server.stats.drops['malformed-record'], 1);
    });
  });

  test('an empty datagram does not throw and creates nothing', () => {
    withServer((h) => {
      h.server.handleDatagram(EMPTY, ADDR, 44002);
      assert.equal(h.sent.length, 0);
      assert.equal(h.server.handshakeCount, 0);
      assert.deepEqual(h.internalErrors, []);
    });
  });

  test('fast-check: random datagrams never throw; each one is dropped or answered', () => {
    withServer((h) => {
      let port = 1;
      const datagram = fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 200 }).map((a) => Buffer.from(a)),
        // random bodies behind plausible DTLS headers
        fc
          .tuple(
            fc.constantFrom(20, 21, 22, 23, 25, 0, 255),
            fc.constantFrom(DTLS_1_2, DTLS_1_0, 0xfe00),
            fc.constantFrom(0, 1, 2, 0xffff),
            fc.uint8Array({ maxLength: 120 }),
          )
          .map(([t, v, e, b]) => plainRecord(t, v, e, 0, Buffer.from(b))),
        // handshake records with a mutated ClientHello
        fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(([pos, v]) => {
          const b = Buffer.from(validCh);
          b[13 + (pos % (b.length - 13))] = v;
          return b;
        }),
      );
      fc.assert(
        fc.property(datagram, (d) => {
          const before = totalDrops(h.server) + h.server.stats.helloVerifySent;
          h.server.handleDatagram(d, ADDR, port++);
          assert.ok(totalDrops(h.server) + h.server.stats.helloVerifySent > before);
          assert.equal(h.server.handshakeCount, 0);
        }),
        { numRuns: 2000, seed: SEED },
      );
      assert.deepEqual(h.internalErrors, []);
      assert.equal(h.server.associationCount, 0);
    });
  });

  test('garbage from a peer in the middle of a handshake never throws', () => {
    withServer((h) => {
      const p = PROFILES[0]!;
      const port = 45000;
      hello(h, p, port, Buffer.alloc(32, 0x55));
      fc.assert(
        fc.property(
          fc.constantFrom(20, 21, 22, 23),
          fc.constantFrom(0, 1, 2),
          fc.integer({ min: 0, max: 100 }),
          fc.uint8Array({ maxLength: 80 }),
          (type, epoch, seq, body) => {
            h.server.handleDatagram(
              plainRecord(type, DTLS_1_2, epoch, seq, Buffer.from(body)),
              ADDR,
              port,
            );
          },
        ),
        { numRuns: 500, seed: SEED },
      );
      assert.deepEqual(h.internalErrors, []);
      assert.ok(h.server.handshakeCount <= 1);
      assert.equal(h.server.associationCount, 0);
    });
  });
});

describe('DtlsServer: connection_id extension (RFC 9146 §3)', () => {
  const profile = (cid: Buffer): ClientProfile => ({
    name: 'CCM_8 with connection_id',
    suites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
    extensions: [[ExtensionType.connectionId, cid]],
    suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
    ems: false,
    etm: false,
  });
  const serverHelloOf = (flight: Buffer) => {
    const first = records(flight)[0];
    assert.ok(first !== undefined);
    return parseServerHello(only(readFragments(first.body)).fragment);
  };

  test('a well-formed offer is answered with a CID of cidLength bytes', () => {
    withServer(
      (h) => {
        const a = hello(h, profile(Buffer.from([2, 0xaa, 0xbb])), 43001, Buffer.alloc(32, 0x51));
        const ext = serverHelloOf(a.flight).extensions.get(ExtensionType.connectionId);
        assert.ok(ext !== undefined);
        assert.equal(ext.length, 7);
        assert.equal(ext[0], 6);
      },
      { cidLength: 6 },
    );
  });

  test('a length byte that disagrees with the extension ends the handshake with decode_error', () => {
    withServer((h) => {
      const a = hello(h, profile(Buffer.from([5, 0xaa])), 43002, Buffer.alloc(32, 0x52));
      const rec = only(records(a.flight));
      assert.equal(rec.type, ContentType.alert);
      assert.deepEqual(rec.body, Buffer.from([2, AlertDescription.decodeError]));
      assert.equal(h.failures.at(-1)?.detail, 'connection_id');
    });
  });

  test('with cidLength 0 the extension, even malformed, is ignored', () => {
    withServer(
      (h) => {
        const a = hello(h, profile(Buffer.from([5, 0xaa])), 43003, Buffer.alloc(32, 0x53));
        assert.equal(serverHelloOf(a.flight).extensions.has(ExtensionType.connectionId), false);
      },
      { cidLength: 0 },
    );
  });
});

describe('DtlsServer: the record path of an established peer', () => {
  test('carriedData: false while the peer only shook hands, true from its first application record', () => {
    withServer((h) => {
      const p = PROFILES[0]!;
      const a = clientFinish(p, hello(h, p, 47600, Buffer.alloc(32, 4)), PSK);
      h.server.handleDatagram(a.datagram, ADDR, 47600);
      const assoc = only(h.established);
      assert.equal(assoc.carriedData, false);
      // an alert is not data
      h.server.handleDatagram(
        a.keys.clientWrite.seal(ContentType.alert, 1, 1, Buffer.from([1, 100])),
        ADDR,
        47600,
      );
      assert.equal(assoc.carriedData, false);
      h.server.handleDatagram(
        a.keys.clientWrite.seal(ContentType.applicationData, 1, 2, Buffer.from('x')),
        ADDR,
        47600,
      );
      assert.equal(assoc.carriedData, true);
    });
  });

  test('finds the association by address and port: no handshake lookup, no key string looked up', () => {
    withServer((h) => {
      const p = PROFILES[0]!;
      // two peers on one port (one source port behind different addresses), one more port
      const other = '198.51.100.8';
      const a = clientFinish(p, hello(h, p, 47500, Buffer.alloc(32, 1)), PSK);
      h.server.handleDatagram(a.datagram, ADDR, 47500);
      const b = clientFinish(p, hello(h, p, 47500, Buffer.alloc(32, 2), other), PSK);
      h.server.handleDatagram(b.datagram, other, 47500);
      const c = clientFinish(p, hello(h, p, 47501, Buffer.alloc(32, 3)), PSK);
      h.server.handleDatagram(c.datagram, ADDR, 47501);
      assert.equal(h.server.associationCount, 3);
      assert.equal(h.server.handshakeCount, 0);
      const data = (keys: typeof a.keys, text: string): Buffer =>
        keys.clientWrite.seal(ContentType.applicationData, 1, 1, Buffer.from(text));
      const records = [data(a.keys, 'a'), data(b.keys, 'b'), data(c.keys, 'c')];
      const { keys } = countMapLookups(() => {
        h.server.handleDatagram(records[0]!, ADDR, 47500);
        h.server.handleDatagram(records[1]!, other, 47500);
        h.server.handleDatagram(records[2]!, ADDR, 47501);
      });
      assert.deepEqual(
        h.data.map((d) => d.toString()),
        ['a', 'b', 'c'],
      );
      // no handshake map asked and no peer key string made to find the association: the
      // activity mark (touch) is the one lookup by the association's own key, per record
      const peers = new Set([peerKey(ADDR, 47500), peerKey(other, 47500), peerKey(ADDR, 47501)]);
      const byPeerKey = keys.filter((k) => typeof k === 'string' && peers.has(k));
      assert.ok(byPeerKey.length <= 3, `${byPeerKey.length} lookups by peer key for 3 records`);
      // a record of a's keys from an address or port without an association is unknown
      h.server.handleDatagram(data(a.keys, 'x'), ADDR, 47502);
      h.server.handleDatagram(data(a.keys, 'y'), '198.51.100.9', 47500);
      assert.equal(h.server.stats.drops['unknown-peer'], 2);
      assert.equal(h.data.length, 3);
    });
  });
});

/**
 * Calls `count(true)` while the server handles a datagram and `count(false)` around
 * everything else, the harness's own send included (it copies each datagram the server sends).
 */
function countInsideServer(h: Harness, count: (on: boolean) => void): void {
  const handle = h.server.handleDatagram.bind(h.server);
  h.server.handleDatagram = (d, address, port) => {
    count(true);
    try {
      handle(d, address, port);
    } finally {
      count(false);
    }
  };
  h.hooks.aroundSend = (send) => {
    count(false);
    try {
      send();
    } finally {
      count(true);
    }
  };
}

/**
 * A full handshake of profile `p` from `port`, then the client's close_notify, counted as
 * {@link countInsideServer} counts; returns what the client derived and sent.
 */
function countedHandshake(
  h: Harness,
  p: ClientProfile,
  port: number,
  count: (on: boolean) => void,
): ReturnType<typeof clientFinish> {
  countInsideServer(h, count);
  const a = hello(h, p, port, Buffer.alloc(32, port & 0xff));
  const fin = clientFinish(p, a, PSK);
  h.server.handleDatagram(fin.datagram, ADDR, port);
  const assoc = only(h.established);
  h.server.handleDatagram(
    fin.keys.clientWrite.seal(ContentType.alert, 1, 1, Buffer.from([1, 0])),
    ADDR,
    port,
  );
  assert.equal(assoc.open, false);
  assert.deepEqual(h.closed, ['peer-close-notify']);
  return fin;
}

describe('DtlsServer: a handshake does no crypto and makes no buffer beyond its needs', () => {
  // The transcript's running hash was copied for each of its two digests; the last one can
  // finish it instead (the floor program of bench/lib/handshake-floor.ts does one copy too).
  // verify_data (12 bytes of one PRF block) was copied out of the HMAC's digest into a new
  // buffer, twice per handshake.
  for (const p of [PROFILES[0]!, PROFILES[1]!]) {
    test(`one transcript copy, 20 pool buffers: ${p.name}`, () => {
      withServer((h) => {
        const hashProto = Object.getPrototypeOf(createHash('sha256')) as {
          copy: (...a: unknown[]) => unknown;
        };
        const statics = Buffer as unknown as { allocUnsafe: (n: number) => Buffer };
        const copy = hashProto.copy;
        const allocUnsafe = statics.allocUnsafe;
        let counting = false;
        let copies = 0;
        let buffers = 0;
        hashProto.copy = function (this: unknown, ...a: unknown[]) {
          if (counting) copies++;
          return copy.apply(this, a);
        };
        statics.allocUnsafe = (n: number) => {
          if (counting) buffers++;
          return allocUnsafe(n);
        };
        try {
          const fin = countedHandshake(h, p, 48200, (on) => {
            counting = on;
          });
          // the server's Finished verifies under the client's view of the transcript
          const finished = only(records(h.sent.at(-2)!.data).filter((r) => r.epoch === 1));
          const body = fin.keys.serverWrite.open(
            ContentType.handshake,
            DTLS_1_2,
            1,
            finished.seq,
            finished.body,
          );
          const transcript = Buffer.concat([fin.transcript, fin.finished]);
          assert.deepEqual(
            [...(body ?? EMPTY).subarray(12)],
            [...verifyData(fin.keys.master, 'server finished', sha256(transcript))],
          );
        } finally {
          hashProto.copy = copy;
          statics.allocUnsafe = allocUnsafe;
        }
        assert.deepEqual({ copies, buffers }, { copies: 1, buffers: 20 });
      });
    });
  }
});

describe('DtlsServer: a handshake reads and writes its fields by byte', () => {
  test('and never reads the global Buffer getter (the modules import it)', () => {
    // Node 20 defines the global `Buffer` as a getter on globalThis: every `Buffer.allocUnsafe`
    // of the handshake (messages, records, flights, the cookie, the PRF) called it
    withServer((h) => {
      const saved = Object.getOwnPropertyDescriptor(globalThis, 'Buffer');
      assert.ok(saved?.get !== undefined, 'the global Buffer is a getter in this Node');
      const value: unknown = Reflect.get(globalThis, 'Buffer');
      let counting = false;
      let calls = 0;
      Object.defineProperty(globalThis, 'Buffer', {
        configurable: true,
        enumerable: saved.enumerable,
        get() {
          if (counting) calls++;
          return value;
        },
      });
      countInsideServer(h, (on) => {
        counting = on;
      });
      try {
        const p = PROFILES[1]!;
        const a = hello(h, p, 48100, Buffer.alloc(32, 0x2a));
        const fin = clientFinish(p, a, PSK);
        h.server.handleDatagram(fin.datagram, ADDR, 48100);
        assert.equal(only(h.established).open, true);
        h.server.handleDatagram(
          fin.keys.clientWrite.seal(ContentType.alert, 1, 1, Buffer.from([1, 0])),
          ADDR,
          48100,
        );
        assert.deepEqual(h.closed, ['peer-close-notify']);
        assert.equal(h.sent.length, 4);
      } finally {
        Object.defineProperty(globalThis, 'Buffer', saved);
      }
      assert.equal(calls, 0);
    });
  });

  // Buffer's readUInt16BE/readUIntBE/writeUInt16BE/writeUIntBE check range and offset on
  // every call through Node's stack-hiding wrapper: the server side of one handshake made
  // dozens of them (ClientHello parsed twice, fragments, handshake message headers, the
  // cookie's port, the flights' record headers, the ServerHello, the premaster secret)
  const fields = ['readUInt16BE', 'readUIntBE', 'writeUInt16BE', 'writeUIntBE'] as const;

  for (const p of PROFILES) {
    test(`none from ClientHello to close_notify: ${p.name}`, () => {
      withServer((h) => {
        const calls: Record<string, number> = {};
        const proto = Buffer.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
        const originals = fields.map((name) => proto[name]!);
        let counting = false;
        fields.forEach((name, i) => {
          const original = originals[i]!;
          calls[name] = 0;
          proto[name] = function (this: Buffer, ...a: unknown[]) {
            if (counting) calls[name]!++;
            return original.apply(this, a);
          };
        });
        try {
          const fin = countedHandshake(h, p, 48000, (on) => {
            counting = on;
          });
          // the answering close_notify went out and opens under the server's keys
          const last = only(records(h.sent.at(-1)!.data));
          assert.deepEqual(
            [...(fin.keys.serverWrite.open(ContentType.alert, DTLS_1_2, 1, 1, last.body) ?? [])],
            [1, 0],
          );
        } finally {
          fields.forEach((name, i) => {
            proto[name] = originals[i]!;
          });
        }
        assert.deepEqual(calls, {
          readUInt16BE: 0,
          readUIntBE: 0,
          writeUInt16BE: 0,
          writeUIntBE: 0,
        });
      });
    });
  }
});
