import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { CipherSuite, ContentType, DTLS_1_2 } from '../../../src/dtls/constants.js';
import { encodeFlight, type FlightEntry } from '../../../src/dtls/flight.js';
import { EpochState } from '../../../src/dtls/keys.js';
import { createRecordCipher, splitKeyBlock } from '../../../src/dtls/record-cipher.js';
import { plainRecord, readRecord } from '../../../src/dtls/record.js';

const SUITE = CipherSuite.TLS_PSK_WITH_AES_128_CCM_8;

function epoch1(): EpochState {
  const { client, server } = splitKeyBlock(SUITE, Buffer.alloc(40, 0x5a));
  return new EpochState(
    1,
    createRecordCipher(SUITE, client, false),
    createRecordCipher(SUITE, server, false),
  );
}

const entry = (type: number, epoch: 0 | 1, fill: number, n: number): FlightEntry => ({
  type,
  epoch,
  payload: Buffer.alloc(n, fill),
});

/** The flight as separate records, concatenated: what every transmission must equal. */
function expected(entries: readonly FlightEntry[], seq0: number, writer: EpochState): Buffer {
  let seq = seq0;
  return Buffer.concat(
    entries.map((e) =>
      e.epoch === 0
        ? plainRecord(e.type, DTLS_1_2, 0, seq++, e.payload)
        : (writer.seal(e.type, e.payload) ?? assert.fail('no sequence number')),
    ),
  );
}

describe('encodeFlight', () => {
  const flights: [string, FlightEntry[]][] = [
    ['one plain record', [entry(ContentType.handshake, 0, 1, 50)]],
    ['one protected record', [entry(ContentType.handshake, 1, 2, 24)]],
    [
      'ServerHello + ServerHelloDone',
      [entry(ContentType.handshake, 0, 3, 70), entry(ContentType.handshake, 0, 4, 12)],
    ],
    [
      'ChangeCipherSpec + Finished',
      [entry(ContentType.changeCipherSpec, 0, 1, 1), entry(ContentType.handshake, 1, 5, 24)],
    ],
    [
      'protected, plain, protected',
      [
        entry(ContentType.handshake, 1, 6, 30),
        entry(ContentType.alert, 0, 7, 2),
        entry(ContentType.handshake, 1, 8, 40),
      ],
    ],
    ['no records', []],
  ];
  for (const [name, entries] of flights) {
    test(`${name}: one datagram, byte for byte the records in order; each transmission takes new sequence numbers`, () => {
      const mine = epoch1();
      const reference = epoch1();
      const epoch0 = { seq: 7 };
      for (let round = 0; round < 2; round++) {
        const seq0 = epoch0.seq;
        const d = encodeFlight(entries, epoch0, mine);
        assert.ok(d !== undefined);
        assert.deepEqual(d, expected(entries, seq0, reference), `transmission ${round + 1}`);
        const plain = entries.filter((e) => e.epoch === 0).length;
        assert.equal(epoch0.seq, seq0 + plain);
        // every record reads back whole, in order
        let off = 0;
        for (const e of entries) {
          const rec = readRecord(d, off);
          assert.ok(rec !== undefined);
          assert.equal(rec.type, e.type);
          assert.equal(rec.epoch, e.epoch);
          off += rec.length;
        }
        assert.equal(off, d.length);
      }
    });
  }

  test('a protected record with no epoch-1 state: no datagram', () => {
    const epoch0 = { seq: 0 };
    const flight = [
      entry(ContentType.changeCipherSpec, 0, 1, 1),
      entry(ContentType.handshake, 1, 5, 24),
    ];
    assert.equal(encodeFlight(flight, epoch0, undefined), undefined);
  });
});
