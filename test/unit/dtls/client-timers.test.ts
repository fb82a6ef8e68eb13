/**
 * DtlsClient's timers on an injected clock: a server that never answers sees the ClientHello
 * again with doubling intervals (RFC 6347 §4.2.4.1) until the handshake deadline rejects
 * `connect`. The server is a bare UDP socket that only counts; time moves by hand.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';

import { DtlsClient } from '../../../src/dtls/client.js';
import { ManualClock } from '../../../src/time/clock.js';

/** Polls `cond` (real I/O has to arrive); fails naming `what` after 5 s. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe('DtlsClient: retransmission and deadline on the injected clock', () => {
  test('the ClientHello goes again after 1 s and 2 s more; connect rejects at the handshake deadline, then nothing is sent', async () => {
    const silent = createSocket('udp4');
    const clock = new ManualClock(0);
    const hellos: number[] = [];
    silent.on('message', (msg) => {
      if (msg[0] === 22) hellos.push(clock.now()); // a handshake record
    });
    await new Promise<void>((r) => silent.bind(0, '127.0.0.1', r));
    try {
      const result: { failure?: unknown } = {};
      const connecting = DtlsClient.connect({
        host: '127.0.0.1',
        port: silent.address().port,
        identity: 'id',
        psk: Buffer.from('key'),
        retransmitTimeoutMs: 1_000,
        handshakeTimeoutMs: 5_000,
        clock,
      }).then(
        () => assert.fail('connected to a silent server'),
        (e: unknown) => {
          result.failure = e;
        },
      );
      await until(() => hellos.length === 1, 'the first ClientHello');
      // [ms to advance, ClientHellos the server has seen by then]
      const steps = [
        [999, 1],
        [1, 2],
        [1_999, 2],
        [1, 3],
        [1_999, 3],
      ] as const;
      for (const [ms, seen] of steps) {
        clock.advance(ms);
        if (seen > hellos.length) await until(() => hellos.length === seen, `hello ${seen}`);
        await new Promise((r) => setImmediate(r));
        assert.equal(hellos.length, seen, `after ${clock.now()} ms`);
      }
      assert.deepEqual(hellos, [0, 1_000, 3_000]);
      assert.equal(result.failure, undefined, 'still connecting at 4999 ms');
      clock.advance(1);
      await until(() => result.failure !== undefined, 'the handshake deadline');
      await connecting;
      const failure = result.failure as unknown as { code?: unknown } | undefined;
      assert.equal(failure?.code, 'DTLS_HANDSHAKE_TIMEOUT');
      // the client gave up: its retransmission timer is gone
      assert.equal(clock.pending, 0);
      clock.advance(60_000);
      await new Promise((r) => setImmediate(r));
      assert.equal(hellos.length, 3);
    } finally {
      // past any deadline: a client still connecting after a failed assertion closes its socket
      clock.advance(3_600_000);
      silent.close();
    }
  });
});
