/**
 * One credential cannot evict other devices. The product secret of
 * demoPK01 (secureMode 3, activation only) names a new identity with every deviceKey, so one
 * leaked secret could open any number of associations; with the table full they used to push
 * established devices out (least recently active first). Now secureMode 3 sessions are
 * restricted: evicted first, capped per product, and refused rather than admitted at the cost
 * of an active device. A device identity holds one association: a newer handshake of the same
 * identity retires the older one once its Finished verifies, on whatever address.
 */
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { decode } from '../../src/coap/codec.js';
import {
  GOOD_IDENTITY,
  GOOD_PSK,
  GoodClient,
  ManualHandshake,
  OTHER_IDENTITY,
  OTHER_PSK,
  PRODUCT_PSK,
  activationIdentity,
  activationRequest,
  coapRequest,
  keepAsking,
  snapshot,
  startGateway,
  waitFor,
  type GatewayOptions,
  type HostileServer,
} from '../helpers/hostile.js';
import type { Gateway } from '../../src/gateway/index.js';

type Server = HostileServer & { readonly gateway: Gateway };

/** Opens `n` secureMode 3 sessions of demoPK01 one after the other; each asks to activate. */
async function activationFlood(
  srv: Server,
  n: number,
  opened: ManualHandshake[],
  prefix: string,
): Promise<{ established: number; refused: number; maxTable: number }> {
  let established = 0;
  let refused = 0;
  let maxTable = 0;
  for (let i = 0; i < n; i++) {
    const dk = `${prefix}${i}`;
    const m = await ManualHandshake.open(srv.port, activationIdentity(dk), PRODUCT_PSK);
    opened.push(m);
    try {
      await m.establish(5_000);
      established++;
      m.sendData(activationRequest(i + 1, dk));
    } catch {
      refused++;
    }
    maxTable = Math.max(maxTable, srv.dtls.associationCount);
  }
  return { established, refused, maxTable };
}

describe('hostile: one credential cannot evict other devices', () => {
  let srv: Server | undefined;
  const clients: GoodClient[] = [];
  const manual: ManualHandshake[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close().catch(() => undefined);
    for (const m of manual.splice(0)) await m.close();
    await srv?.close();
    srv = undefined;
  });

  /** A gateway with device001 (and device002 when n is 2) connected and answered once. */
  async function gatewayWith(
    n: 1 | 2,
    opts: GatewayOptions = {},
  ): Promise<{ s: Server; first: GoodClient; second: GoodClient | undefined }> {
    const s = await startGateway(opts);
    srv = s;
    const first = await GoodClient.connect(s.port);
    clients.push(first);
    await first.ask();
    if (n === 1) return { s, first, second: undefined };
    const second = await GoodClient.connect(s.port, { identity: OTHER_IDENTITY, psk: OTHER_PSK });
    clients.push(second);
    await second.ask();
    return { s, first, second };
  }

  test('40 secureMode 3 sessions on one product secret under maxAssociations 20: established devices keep their associations', async (t) => {
    // device001 talked once and went to sleep (an NB-IoT device in PSM); device002 keeps asking
    const { s, first: sleeper, second } = await gatewayWith(2, { maxAssociations: 20 });
    const busy = second!;
    const s0 = snapshot(s.stats);
    const evicted0 = { ...s.stats.evicted };

    const asking = keepAsking(busy);
    let flood: Awaited<ReturnType<typeof activationFlood>>;
    let answers: number;
    try {
      flood = await activationFlood(s, 40, manual, 'unit');
    } finally {
      answers = await asking.stop();
    }
    // the sleeping device wakes up and is answered on its old association, no new handshake
    const woke = await sleeper.ask();
    assert.ok(woke.answer.length > 0);
    assert.equal(s.stats.handshakesCompleted, s0.handshakesCompleted + flood.established);

    t.diagnostic(
      `attack: ${flood.established} secureMode 3 sessions established, ${flood.refused} refused; ` +
        `busy device: ${answers} of ${answers} requests answered during the attack; ` +
        `sleeping device answered after it; table peak ${flood.maxTable}/20`,
    );
    assert.equal(flood.established, 40, 'restricted sessions displace each other, not devices');
    assert.ok(answers > 0, 'the busy device was answered during the attack');
    assert.ok(flood.maxTable <= 20);
    assert.equal(s.stats.evicted.active - evicted0.active, 0);
    assert.equal(s.stats.evicted.idle - evicted0.idle, 0);
    // 2 devices + 18 sessions fill the table; each of the other 22 evicts the oldest session
    assert.equal(s.stats.evicted.restricted - evicted0.restricted, 22);
    assert.equal(s.stats.closed.evicted - s0.closed.evicted, 22);
    assert.equal(s.dtls.associationCount, 20);
  });

  test('a table full of active devices refuses a secureMode 3 session with internal_error before Finished', async () => {
    const { s, first: a, second } = await gatewayWith(2, { maxAssociations: 2 });
    const b = second!;
    const s0 = snapshot(s.stats);

    const m = await ManualHandshake.open(s.port, activationIdentity('unit-x'), PRODUCT_PSK);
    manual.push(m);
    // fatal (2) internal_error (80 = 0x50) in the clear, instead of the server's Finished
    await assert.rejects(m.establish(5_000), /server sent alert 0250/);

    await a.ask();
    await b.ask();
    assert.equal(s.dtls.associationCount, 2);
    assert.equal(
      s.stats.handshakesFailed['association-limit'] - s0.handshakesFailed['association-limit'],
      1,
    );
    assert.equal(s.stats.closed.evicted, s0.closed.evicted);
  });

  test('maxActivationSessions caps one product: its oldest session goes, with close_notify', async () => {
    const { s, first: good } = await gatewayWith(1, { maxActivationSessions: 4 });
    const flood = await activationFlood(s, 10, manual, 'cap');
    assert.equal(flood.established, 10);
    assert.equal(s.stats.evicted['group-cap'], 6);
    assert.equal(s.dtls.associationCount, 1 + 4);
    // the six oldest sessions were told: each got an encrypted alert after its Finished
    for (const m of manual.slice(0, 6)) {
      await waitFor(
        () => m.log.some((r) => r.type === 21 && r.epoch === 1),
        2_000,
        'close_notify for an evicted session',
      );
    }
    await good.ask();
  });

  test('a new handshake of the same identity from another port retires the older association once its Finished verifies', async () => {
    const { s, first } = await gatewayWith(1);
    const s0 = snapshot(s.stats);

    const second = await ManualHandshake.open(s.port, GOOD_IDENTITY, GOOD_PSK);
    manual.push(second);
    await second.hello();
    const read = s.stats.recordsIn;
    second.sendCke();
    await waitFor(() => s.stats.recordsIn > read, 2_000, 'the key exchange read');
    // until the new Finished the old association keeps working
    await first.ask();
    assert.equal(s.stats.closed.superseded, s0.closed.superseded);

    await second.finish();
    // the old association is gone: its records find nobody ...
    assert.equal(s.dtls.principalOf('127.0.0.1', first.localPort), undefined);
    const unknown = s.stats.drops['unknown-peer'];
    first.client.send(first.payload(0x99));
    await waitFor(() => s.stats.drops['unknown-peer'] > unknown, 2_000, 'old record dropped');
    // ... and the new one answers
    second.sendData(coapRequest(0x4242, Buffer.from([0x42, 0x42])));
    const answer = decode(await second.nextData(5_000));
    assert.equal(answer.messageId, 0x4242);
    assert.equal(s.dtls.associationCount, 1);
    assert.equal(s.stats.closed.superseded - s0.closed.superseded, 1);
  });

  test("a secureMode 3 session naming a device's own key does not retire that device", async () => {
    const { s, first: device } = await gatewayWith(1);
    const m = await ManualHandshake.open(s.port, activationIdentity('device001'), PRODUCT_PSK);
    manual.push(m);
    await m.establish();
    await device.ask();
    assert.equal(s.stats.closed.superseded, 0);
    assert.equal(s.dtls.associationCount, 2);
  });
});
