/**
 * The DTLS layer's diagnostics channels (src/dtls/events.ts), with our DtlsClient over
 * loopback sockets: a dropped record is published on `coap-edge:dtls.drop` with its reason,
 * a handshake's end on `coap-edge:dtls.handshake` (established with its suite, failed with
 * its reason); each message names the server it happened in (two servers run here); and
 * nothing is published (no message built) while nobody subscribes.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { createSocket, type Socket } from 'node:dgram';

import { DtlsClient } from '../../../src/dtls/client.js';
import {
  DTLS_DROP_CHANNEL,
  DTLS_HANDSHAKE_CHANNEL,
  dtlsDropChannel,
  type DtlsDropEvent,
  type DtlsHandshakeEvent,
} from '../../../src/dtls/events.js';
import { DtlsServer } from '../../../src/dtls/server.js';
import { ManualClock } from '../../../src/time/clock.js';
import { DTLS_SERVER_DEFAULTS } from '../../helpers/component-defaults.js';
import { eventually } from '../../helpers/e2e.js';

const PSK = Buffer.from('0123456789abcdef');
const IDENTITY = 'demoPK01,device001,2,3600';

interface Rig {
  readonly server: DtlsServer<string>;
  readonly port: number;
  close(): Promise<void>;
}

async function udp(): Promise<Socket> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

async function rig(clock?: ManualClock): Promise<Rig> {
  const socket = await udp();
  const server = new DtlsServer<string>({
    ...DTLS_SERVER_DEFAULTS,
    ...(clock === undefined ? {} : { clock }),
    send: (data, port, address) => socket.send(data, port, address),
    handler: {
      resolvePsk: (identity) =>
        identity.toString() === IDENTITY
          ? { ok: true, psk: PSK, principal: 'device001' }
          : { ok: false, alert: 'unknown_psk_identity', reason: 'unknown-device' },
      onData: () => undefined,
    },
  });
  socket.on('message', (msg, rinfo) => server.handleDatagram(msg, rinfo.address, rinfo.port));
  return {
    server,
    port: socket.address().port,
    close: async () => {
      server.close();
      await new Promise<void>((done) => socket.close(() => done()));
    },
  };
}

async function sendRaw(port: number, data: Buffer): Promise<void> {
  const s = await udp();
  try {
    await new Promise<void>((r) => s.send(data, port, '127.0.0.1', () => r()));
  } finally {
    s.close();
  }
}

describe('dtls events (diagnostics_channel)', () => {
  let a: Rig;
  let b: Rig;
  // b's timers (the wrong-key verdict among them) run when the test advances this clock
  const bClock = new ManualClock();
  const drops: DtlsDropEvent[] = [];
  const handshakes: DtlsHandshakeEvent[] = [];
  const onDrop = (m: unknown): void => void drops.push(m as DtlsDropEvent);
  const onHandshake = (m: unknown): void => void handshakes.push(m as DtlsHandshakeEvent);

  before(async () => {
    a = await rig();
    b = await rig(bClock);
  });

  after(async () => {
    await a?.close();
    await b?.close();
  });

  it('a malformed datagram is published as a drop of its server, with the reason counted', async () => {
    subscribe(DTLS_DROP_CHANNEL, onDrop);
    try {
      drops.length = 0;
      await sendRaw(b.port, Buffer.from('garbage'));
      await eventually(() => drops.length > 0, 'the drop');
    } finally {
      unsubscribe(DTLS_DROP_CHANNEL, onDrop);
    }
    assert.equal(drops.length, 1);
    assert.equal(drops[0]?.reason, 'malformed-record');
    assert.equal(drops[0]?.source, b.server.stats, 'the server that dropped it');
    assert.notEqual(drops[0]?.source, a.server.stats);
    assert.equal(b.server.stats.drops['malformed-record'], 1);
  });

  it('a completed handshake is published as established, with its suite', async () => {
    subscribe(DTLS_HANDSHAKE_CHANNEL, onHandshake);
    let client: DtlsClient | undefined;
    let suite = '';
    try {
      handshakes.length = 0;
      client = await DtlsClient.connect({
        host: '127.0.0.1',
        port: a.port,
        identity: IDENTITY,
        psk: PSK,
      });
      suite = client.cipherSuite;
      await eventually(() => handshakes.length > 0, 'the handshake event');
    } finally {
      unsubscribe(DTLS_HANDSHAKE_CHANNEL, onHandshake);
      await client?.close();
    }
    assert.equal(handshakes.length, 1);
    const e = handshakes[0]!;
    assert.equal(e.outcome, 'established');
    assert.equal(e.source, a.server.stats);
    assert.equal(e.suite, suite);
    assert.match(e.suite, /^TLS_PSK_WITH_AES_128_/);
  });

  it('a refused key is published as a failed handshake with its reason', async () => {
    subscribe(DTLS_HANDSHAKE_CHANNEL, onHandshake);
    try {
      handshakes.length = 0;
      const refused = assert.rejects(
        DtlsClient.connect({
          host: '127.0.0.1',
          port: b.port,
          identity: 'demoPK01,nobody,2,3600',
          psk: PSK,
          handshakeTimeoutMs: 5_000,
        }),
      );
      // an unknown identity goes on as a wrong key (RFC 4279 §2): the client's Finished fails
      // to authenticate, and the verdict waits two retransmission intervals for a genuine one
      await eventually(() => (b.server.stats.drops['bad-mac'] ?? 0) > 0, "the client's Finished");
      assert.equal(handshakes.length, 0, 'no verdict before two retransmission intervals');
      bClock.advance(2 * DTLS_SERVER_DEFAULTS.retransmitTimeoutMs);
      await refused;
      await eventually(() => handshakes.length > 0, 'the handshake event');
    } finally {
      unsubscribe(DTLS_HANDSHAKE_CHANNEL, onHandshake);
    }
    assert.equal(handshakes.length, 1);
    const e = handshakes[0]!;
    assert.equal(e.outcome, 'failed');
    assert.equal(e.source, b.server.stats);
    assert.equal(e.outcome === 'failed' ? e.reason : undefined, 'psk-rejected');
    assert.equal(b.server.stats.handshakesFailed['psk-rejected'], 1);
  });

  it('nothing is published (no message built) while nobody subscribes', async () => {
    let published = 0;
    const original = dtlsDropChannel.publish.bind(dtlsDropChannel);
    dtlsDropChannel.publish = (m: unknown) => {
      published++;
      original(m);
    };
    try {
      assert.equal(dtlsDropChannel.hasSubscribers, false);
      const before = a.server.stats.drops['malformed-record'];
      for (let i = 0; i < 3; i++) await sendRaw(a.port, Buffer.from([0xff, 0x00]));
      await eventually(
        () => a.server.stats.drops['malformed-record'] === before + 3,
        'three drops',
      );
      assert.equal(published, 0);
      // the count does count: with a subscriber the same drop is published
      subscribe(DTLS_DROP_CHANNEL, onDrop);
      try {
        await sendRaw(a.port, Buffer.from([0xff, 0x00]));
        await eventually(() => published === 1, 'the published drop');
      } finally {
        unsubscribe(DTLS_DROP_CHANNEL, onDrop);
      }
    } finally {
      delete (dtlsDropChannel as { publish?: unknown }).publish;
    }
  });
});
