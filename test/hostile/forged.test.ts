/**
 * Forged records for an established association, for CCM_8 and CBC-SHA256
 * (MAC-then-encrypt and encrypt-then-MAC). A valid record is sealed by the good client and
 * then mutated: flipped bits, another type or version, a shorter body, another epoch, absurd
 * sequence numbers. None of them authenticates, none moves the replay window (OpenSSL
 * CVE-2016-2181), and the unmodified record is still accepted afterwards.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import type { Association } from '../../src/dtls/association.js';
import { CipherSuite, ContentType, DTLS_1_0 } from '../../src/dtls/constants.js';
import {
  GoodClient,
  Rng,
  dropDelta,
  snapshot,
  startGateway,
  waitFor,
  type HostileServer,
} from '../helpers/hostile.js';
import type { Gateway } from '../../src/gateway/index.js';

interface Variant {
  readonly name: string;
  readonly suite: number;
  readonly extensions: 'standard' | 'none';
  readonly serverSuite: string;
  readonly etm: boolean;
}

const VARIANTS: readonly Variant[] = [
  {
    name: 'CCM_8 with EMS',
    suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
    extensions: 'standard',
    serverSuite: 'TLS_PSK_WITH_AES_128_CCM_8',
    etm: false,
  },
  {
    name: 'CCM_8 without extensions',
    suite: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
    extensions: 'none',
    serverSuite: 'TLS_PSK_WITH_AES_128_CCM_8',
    etm: false,
  },
  {
    name: 'CBC-SHA256 encrypt-then-MAC',
    suite: CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
    extensions: 'standard',
    serverSuite: 'TLS_PSK_WITH_AES_128_CBC_SHA256',
    etm: true,
  },
  {
    name: 'CBC-SHA256 MAC-then-encrypt',
    suite: CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
    extensions: 'none',
    serverSuite: 'TLS_PSK_WITH_AES_128_CBC_SHA256',
    etm: false,
  },
];

const MAX_SEQ = 2 ** 48 - 1;

function withSeq(rec: Buffer, seq: number): Buffer {
  const b = Buffer.from(rec);
  b.writeUIntBE(seq, 5, 6);
  return b;
}

function withEpoch(rec: Buffer, epoch: number): Buffer {
  const b = Buffer.from(rec);
  b.writeUInt16BE(epoch, 3);
  return b;
}

function flip(rec: Buffer, at: number, mask = 0x01): Buffer {
  const b = Buffer.from(rec);
  b[at] = (b[at] ?? 0) ^ mask;
  return b;
}

describe('hostile: forged records for an established association', () => {
  let srv: HostileServer & { readonly gateway: Gateway };

  before(async () => {
    srv = await startGateway();
  });

  after(async () => {
    await srv?.close();
  });

  for (const v of VARIANTS) {
    test(`${v.name}: mutated records are dropped without moving the window`, async () => {
      const good = await GoodClient.connect(srv.port, {
        cipherSuites: [v.suite],
        extensions: v.extensions,
      });
      try {
        assert.equal(good.client.encryptThenMac, v.etm);
        const assoc = [...srv.dtls.listAssociations()].find((a) => a.port === good.localPort) as
          Association<unknown> | undefined;
        assert.ok(assoc !== undefined);
        assert.equal(assoc.cipherSuite, v.serverSuite);
        await good.ask();

        const send = async (d: Buffer): Promise<void> => {
          const n = srv.stats.datagramsIn;
          good.client.sendRaw(d);
          await waitFor(() => srv.stats.datagramsIn > n, 2_000, 'server to read');
        };

        const id = 0x2000;
        const rec = good.client.sealRecord(ContentType.applicationData, good.payload(id));
        assert.ok(rec !== undefined);
        const seq = rec.readUIntBE(5, 6);
        const highest = assoc.state.window.highest;
        assert.equal(highest, seq - 1);

        const badMac = [
          flip(rec, 13), // explicit nonce (CCM) / IV (CBC)
          flip(rec, 13 + Math.floor((rec.length - 13) / 2), 0x80),
          flip(rec, rec.length - 1), // tag / MAC / padding byte
          flip(rec, 0, ContentType.applicationData ^ ContentType.handshake), // type 22
          (() => {
            const b = Buffer.from(rec);
            b.writeUInt16BE(DTLS_1_0, 1);
            return b;
          })(),
          (() => {
            const b = Buffer.from(rec.subarray(0, rec.length - 1));
            b.writeUInt16BE(b.length - 13, 11);
            return b;
          })(),
          withSeq(rec, MAX_SEQ),
          withSeq(rec, 2 ** 47),
          withSeq(rec, seq + 1), // the good client's next sequence number
          withSeq(flip(rec, rec.length - 1), MAX_SEQ),
        ];
        const badEpoch = [withEpoch(rec, 2), withEpoch(rec, 0xffff)];
        const cleartext = withEpoch(rec, 0); // epoch 0 from the peer: ignored, counted as unexpected

        const s0 = snapshot(srv.stats);
        const requests0 = srv.gateway.coap.stats.requests;
        for (const f of [...badMac, ...badEpoch, cleartext]) await send(f);
        const s1 = snapshot(srv.stats);
        assert.deepEqual(dropDelta(s0.drops, s1.drops), {
          'bad-mac': badMac.length,
          'bad-epoch': badEpoch.length,
          'unexpected-record': 1,
        });
        assert.equal(s1.recordsIn - s0.recordsIn, badMac.length + badEpoch.length + 1);
        assert.equal(srv.gateway.coap.stats.requests, requests0, 'no forged record reached CoAP');
        assert.equal(assoc.state.window.highest, highest, 'the window did not move');
        assert.ok(assoc.open);

        // the genuine record, sent after its forgeries, is accepted and answered once
        const answer = good.waitMessage((m) => good.matches(id, m), 3_000, 'genuine record');
        await send(rec);
        await answer;
        assert.equal(assoc.state.window.highest, seq);
        // ...and the next normal record (seq + 1, forged before with a bad MAC) as well
        const r = await good.ask();
        assert.equal(r.attempts, 1);
        assert.equal(srv.gateway.coap.stats.requests, requests0 + 2);

        // a fully random body at the highest sequence number, then normal traffic again
        const rng = new Rng(v.suite + (v.etm ? 1 : 0) + (v.extensions === 'none' ? 2 : 0));
        const junk = Buffer.concat([rec.subarray(0, 13), rng.bytes(rec.length - 13)]);
        const s2 = snapshot(srv.stats);
        await send(withSeq(junk, MAX_SEQ));
        assert.deepEqual(dropDelta(s2.drops, snapshot(srv.stats).drops), { 'bad-mac': 1 });
        assert.equal((await good.ask()).attempts, 1);
        assert.ok(assoc.state.window.highest < 1000);
        assert.deepEqual(srv.internalErrors, []);
      } finally {
        await good.close();
      }
    });
  }

  test('many forgeries (2000 bit flips at every position) do not disturb the peer', async () => {
    const good = await GoodClient.connect(srv.port);
    try {
      const rng = new Rng(42);
      const s0 = snapshot(srv.stats);
      let sent = 0;
      for (let i = 0; i < 2000; i++) {
        const rec = good.client.sealRecord(ContentType.applicationData, good.payload(0x3000 + i));
        assert.ok(rec !== undefined);
        // anywhere after the record header, or in the header's seq field
        const at = i % 5 === 0 ? 5 + rng.int(6) : 13 + rng.int(rec.length - 13);
        good.client.sendRaw(flip(rec, at, 1 << rng.int(8)));
        sent++;
        if (i % 100 === 99) {
          await waitFor(() => srv.stats.datagramsIn - s0.datagramsIn >= sent, 3_000, 'read');
        }
      }
      await waitFor(() => srv.stats.datagramsIn - s0.datagramsIn >= sent, 3_000, 'read all');
      const d = dropDelta(s0.drops, snapshot(srv.stats).drops);
      // a flipped seq byte can also land below the window (replay) instead of failing the MAC
      assert.equal((d['bad-mac'] ?? 0) + (d.replay ?? 0), 2000, JSON.stringify(d));
      assert.equal(srv.stats.applicationRecordsIn, s0.applicationRecordsIn);
      assert.equal((await good.ask()).attempts, 1);
    } finally {
      await good.close();
    }
  });
});
