/**
 * The device's record size limit (RFC 8449 record_size_limit, RFC 6066 max_fragment_length):
 * the ClientHello rules, the ServerHello answer, the limit on every record we send (handshake
 * flights included), the association's `maxPlaintext`, the shared snapshot, and a 3 KB CoAP
 * response to a 512-byte device, over loopback with our own client.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';

import { DtlsClient, type DtlsClientOptions } from '../../../src/dtls/client.js';
import {
  AlertDescription,
  CipherSuite,
  ContentType,
  ExtensionType,
  MAX_PLAINTEXT,
} from '../../../src/dtls/constants.js';
import { DtlsServer } from '../../../src/dtls/server.js';
import { recordLimits } from '../../../src/dtls/server-handshake.js';
import {
  openSnapshot,
  sealSnapshot,
  type AssociationSnapshot,
} from '../../../src/dtls/snapshot.js';
import { readRecord } from '../../../src/dtls/record.js';
import type { DtlsAssociation } from '../../../src/dtls/association.js';
import { CoapEndpoint } from '../../../src/coap/endpoint.js';
import { decode, encode } from '../../../src/coap/codec.js';
import { CON, Code, OptionNumber } from '../../../src/coap/constants.js';
import { decodeBlock, encodeBlock, getOption } from '../../../src/coap/options.js';
import { COAP_ENDPOINT_DEFAULTS, DTLS_SERVER_DEFAULTS } from '../../helpers/component-defaults.js';

const PSK = Buffer.from('0123456789abcdef');
const IDENTITY = 'demoPK01,rsl001,2,3600';
const BODY = Buffer.from(Array.from({ length: 3072 }, (_, i) => i % 251));

function exts(entries: [number, number[]][]): { extensions: ReadonlyMap<number, Buffer> } {
  return { extensions: new Map(entries.map(([t, v]) => [t, Buffer.from(v)])) };
}

describe('record size limit: ClientHello extension rules', () => {
  it('neither offered: 2^14, nothing answered', () => {
    assert.deepEqual(recordLimits(exts([])), { limit: MAX_PLAINTEXT, answer: undefined });
  });

  it('record_size_limit: the peer’s value is kept, ours (2^14) is answered', () => {
    const r = recordLimits(exts([[ExtensionType.recordSizeLimit, [0x02, 0x00]]]));
    assert.deepEqual(r, {
      limit: 512,
      answer: [ExtensionType.recordSizeLimit, Buffer.from([0x40, 0x00])],
    });
    assert.deepEqual(recordLimits(exts([[ExtensionType.recordSizeLimit, [0, 64]]])), {
      limit: 64,
      answer: [ExtensionType.recordSizeLimit, Buffer.from([0x40, 0x00])],
    });
    // above 2^14 means no limit in DTLS 1.2
    const big = recordLimits(exts([[ExtensionType.recordSizeLimit, [0xff, 0xff]]]));
    assert.ok('limit' in big);
    assert.equal(big.limit, MAX_PLAINTEXT);
  });

  it('record_size_limit below 64 is illegal_parameter; a wrong length decode_error', () => {
    assert.deepEqual(recordLimits(exts([[ExtensionType.recordSizeLimit, [0, 63]]])), {
      refused: 'record_size_limit',
      alert: AlertDescription.illegalParameter,
    });
    assert.deepEqual(recordLimits(exts([[ExtensionType.recordSizeLimit, [2]]])), {
      refused: 'record_size_limit',
      alert: AlertDescription.decodeError,
    });
  });

  it('max_fragment_length 1..4 is 2^9..2^12 and echoed; 0, 5 and 255 are illegal_parameter', () => {
    for (const [code, limit] of [
      [1, 512],
      [2, 1024],
      [3, 2048],
      [4, 4096],
    ] as const) {
      assert.deepEqual(recordLimits(exts([[ExtensionType.maxFragmentLength, [code]]])), {
        limit,
        answer: [ExtensionType.maxFragmentLength, Buffer.from([code])],
      });
    }
    for (const bad of [0, 5, 255]) {
      assert.deepEqual(recordLimits(exts([[ExtensionType.maxFragmentLength, [bad]]])), {
        refused: 'max_fragment_length',
        alert: AlertDescription.illegalParameter,
      });
    }
    assert.deepEqual(recordLimits(exts([[ExtensionType.maxFragmentLength, [1, 1]]])), {
      refused: 'max_fragment_length',
      alert: AlertDescription.decodeError,
    });
  });

  it('both offered: record_size_limit wins, max_fragment_length is neither applied nor echoed', () => {
    const r = recordLimits(
      exts([
        [ExtensionType.maxFragmentLength, [1]],
        [ExtensionType.recordSizeLimit, [0x08, 0x00]],
      ]),
    );
    assert.deepEqual(r, {
      limit: 2048,
      answer: [ExtensionType.recordSizeLimit, Buffer.from([0x40, 0x00])],
    });
    // an illegal max_fragment_length beside a valid record_size_limit is ignored with it
    const r2 = recordLimits(
      exts([
        [ExtensionType.maxFragmentLength, [9]],
        [ExtensionType.recordSizeLimit, [0x02, 0x00]],
      ]),
    );
    assert.ok('limit' in r2);
    assert.equal(r2.limit, 512);
  });
});

describe('record size limit: shared snapshot', () => {
  const keys = { encKey: randomBytes(16), salt: randomBytes(4), macKey: Buffer.alloc(0) };
  const base: AssociationSnapshot = {
    suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
    encryptThenMac: false,
    extendedMasterSecret: true,
    epoch: 1,
    client: keys,
    server: keys,
    connectionId: undefined,
    peerConnectionId: undefined,
    address: '127.0.0.1',
    port: 5000,
    identity: IDENTITY,
    principal: 'p',
    establishedAt: 1,
    handshakeDurationMs: 2,
    clientRandom: randomBytes(32),
  };
  const key = randomBytes(32);

  it('carries the limit; a snapshot without it reads as 2^14', () => {
    const withLimit = openSnapshot(
      sealSnapshot({ ...base, peerRecordLimit: 512 }, key, 'a:x'),
      key,
      'a:x',
    );
    assert.equal(withLimit?.peerRecordLimit, 512);
    const without = openSnapshot(sealSnapshot(base, key, 'a:x'), key, 'a:x');
    assert.equal(without?.peerRecordLimit, MAX_PLAINTEXT);
  });
});

interface Rig {
  readonly server: DtlsServer<string>;
  readonly coap: CoapEndpoint<string>;
  readonly port: number;
  /** Every datagram the server sent, by destination port. */
  readonly out: Map<number, Buffer[]>;
  close(): Promise<void>;
}

async function rig(cidLength: number): Promise<Rig> {
  const socket: Socket = createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  const out = new Map<number, Buffer[]>();
  const coap = new CoapEndpoint<string>({
    ...COAP_ENDPOINT_DEFAULTS,
    handler: (req) =>
      getOption(req.message, OptionNumber.URI_PATH)?.toString() === 'big'
        ? { code: Code.CONTENT, payload: BODY }
        : { code: Code.CONTENT, payload: Buffer.from('small') },
  });
  const server = new DtlsServer<string>({
    ...DTLS_SERVER_DEFAULTS,
    cidLength,
    send: (data, port, address) => {
      let list = out.get(port);
      if (list === undefined) out.set(port, (list = []));
      list.push(Buffer.from(data));
      socket.send(data, port, address);
    },
    handler: {
      resolvePsk: (identity) =>
        identity.toString() === IDENTITY
          ? { ok: true, psk: PSK, principal: 'rsl001' }
          : { ok: false, alert: 'unknown_psk_identity', reason: 'unknown-device' },
      onData: (assoc: DtlsAssociation<string>, data) => coap.receive(assoc, data),
      onClosed: (assoc) => coap.peerClosed(assoc.key),
    },
  });
  socket.on('message', (msg, rinfo) => server.handleDatagram(msg, rinfo.address, rinfo.port));
  return {
    server,
    coap,
    port: socket.address().port,
    out,
    close: async () => {
      server.close();
      coap.close();
      await new Promise<void>((done) => socket.close(() => done()));
    },
  };
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function records(datagrams: readonly Buffer[], cidLength: number) {
  const recs = [];
  for (const d of datagrams) {
    let off = 0;
    while (off < d.length) {
      const rec = readRecord(d, off, cidLength);
      assert.ok(rec !== undefined, 'well-formed record');
      recs.push(rec);
      off += rec.raw.length;
    }
  }
  return recs;
}

function association(r: Rig, c: DtlsClient): DtlsAssociation<string> {
  const a = [...r.server.listAssociations()].find((x) => x.port === c.localPort);
  assert.ok(a !== undefined);
  return a;
}

/** GETs /big block by block; returns the body and every record plaintext received. */
async function fetchBig(c: DtlsClient): Promise<{ body: Buffer; plaintexts: Buffer[] }> {
  const plaintexts: Buffer[] = [];
  c.on('message', (m) => plaintexts.push(m));
  const parts: Buffer[] = [];
  for (let num = 0, szx = 6, mid = 1; ; mid++) {
    const before = plaintexts.length;
    c.send(
      encode({
        type: CON,
        code: Code.GET,
        messageId: mid,
        token: Buffer.from([1, 2, 3, 4]),
        options: [
          { number: OptionNumber.URI_PATH, value: Buffer.from('big') },
          { number: OptionNumber.BLOCK2, value: encodeBlock({ num, more: false, szx }) },
        ],
        payload: Buffer.alloc(0),
      }),
    );
    await until(`block ${num}`, () => plaintexts.length > before);
    const m = decode(plaintexts[plaintexts.length - 1]!);
    assert.equal(m.code, Code.CONTENT);
    parts.push(m.payload);
    const raw = getOption(m, OptionNumber.BLOCK2);
    const b2 = raw !== undefined ? decodeBlock(raw) : undefined;
    if (b2 === undefined || !b2.more) break;
    num = b2.num + 1;
    szx = b2.szx;
    assert.ok(mid < 100, 'ends');
  }
  return { body: Buffer.concat(parts), plaintexts };
}

describe('record size limit: over loopback with our client', () => {
  let r: Rig;
  let rc: Rig;
  before(async () => {
    r = await rig(0);
    rc = await rig(8);
  });
  after(async () => {
    await r.close();
    await rc.close();
  });

  const connect = (port: number, extra: Partial<DtlsClientOptions>) =>
    DtlsClient.connect({ host: '127.0.0.1', port, identity: IDENTITY, psk: PSK, ...extra });

  for (const [name, extra, limit, answered] of [
    ['record_size_limit 512', { recordSizeLimit: 512 }, 512, ExtensionType.recordSizeLimit],
    ['max_fragment_length 1 (512)', { maxFragmentLength: 1 }, 512, ExtensionType.maxFragmentLength],
    [
      'both: record_size_limit 1024 wins over max_fragment_length 1',
      { recordSizeLimit: 1024, maxFragmentLength: 1 },
      1024,
      ExtensionType.recordSizeLimit,
    ],
  ] as const) {
    it(`${name}: answered in the ServerHello, every record of the handshake and of a 3 KB response fits`, async () => {
      const c = await connect(r.port, extra);
      try {
        const sh = c.serverHelloExtensions;
        assert.ok(sh !== undefined);
        assert.equal(sh.has(answered), true);
        if (answered === ExtensionType.recordSizeLimit) {
          assert.deepEqual(sh.get(ExtensionType.recordSizeLimit), Buffer.from([0x40, 0x00]));
          assert.equal(sh.has(ExtensionType.maxFragmentLength), false, 'not echoed beside it');
        } else {
          assert.deepEqual(sh.get(ExtensionType.maxFragmentLength), Buffer.from([1]));
        }
        const a = association(r, c);
        assert.equal(a.maxPlaintext, limit);
        const handshake = records(r.out.get(c.localPort) ?? [], 0);
        assert.ok(handshake.length >= 3, 'the flights were captured');
        // epoch-1 bodies include the AEAD overhead: stricter than the plaintext rule
        for (const rec of handshake)
          assert.ok(rec.body.length <= limit, `record ${rec.body.length}`);

        const tooLarge = r.server.stats.recordTooLarge;
        const { body, plaintexts } = await fetchBig(c);
        assert.deepEqual(body, BODY);
        assert.ok(plaintexts.length > 3, 'in blocks');
        for (const p of plaintexts) assert.ok(p.length <= limit, `plaintext ${p.length}`);
        assert.equal(r.server.stats.recordTooLarge, tooLarge);
      } finally {
        await c.close();
      }
    });
  }

  it('no extension: 2^14, the response in the configured 1024-byte blocks', async () => {
    const c = await connect(r.port, {});
    try {
      assert.equal(c.serverHelloExtensions?.has(ExtensionType.recordSizeLimit), false);
      assert.equal(c.serverHelloExtensions?.has(ExtensionType.maxFragmentLength), false);
      assert.equal(association(r, c).maxPlaintext, MAX_PLAINTEXT);
      const { body, plaintexts } = await fetchBig(c);
      assert.deepEqual(body, BODY);
      assert.equal(plaintexts.length, 3);
    } finally {
      await c.close();
    }
  });

  it('send: a plaintext over the limit is not sent, not split, and counted', async () => {
    const c = await connect(r.port, { recordSizeLimit: 512 });
    try {
      const got: Buffer[] = [];
      c.on('message', (m) => got.push(m));
      const a = association(r, c);
      const before = r.server.stats.recordTooLarge;
      assert.equal(a.send(Buffer.alloc(513, 1)), false);
      assert.equal(r.server.stats.recordTooLarge, before + 1);
      assert.equal(a.send(Buffer.alloc(512, 2)), true);
      await until('the 512-byte record', () => got.length === 1);
      assert.equal(got[0]?.length, 512);
      assert.equal(got.length, 1, 'the refused one never arrived');
    } finally {
      await c.close();
    }
  });

  it('illegal values end the handshake with illegal_parameter', async () => {
    for (const extra of [{ recordSizeLimit: 63 }, { maxFragmentLength: 5 as 1 }]) {
      await assert.rejects(connect(r.port, { ...extra, handshakeTimeoutMs: 5_000 }), (err: Error) =>
        /illegal_parameter/.test(err.message),
      );
    }
  });

  it('with a CID our records carry the inner content type: one byte less', async () => {
    const c = await connect(rc.port, {
      recordSizeLimit: 512,
      connectionId: Buffer.from('0a0b', 'hex'),
    });
    try {
      const a = association(rc, c);
      assert.equal(a.maxPlaintext, 511);
      const { body, plaintexts } = await fetchBig(c);
      assert.deepEqual(body, BODY);
      for (const p of plaintexts) assert.ok(p.length + 1 <= 512);
      assert.equal(a.send(Buffer.alloc(512)), false);
      const recs = records(rc.out.get(c.localPort) ?? [], 2).filter(
        (x) => x.type === ContentType.tls12Cid,
      );
      assert.ok(recs.length > 0, 'CID records went out');
      // tls12_cid bodies: 8-byte nonce, the inner plaintext (content + type byte), 8-byte tag
      for (const x of recs) assert.ok(x.body.length - 16 <= 512, `record ${x.body.length}`);
    } finally {
      await c.close();
    }
  });
});
