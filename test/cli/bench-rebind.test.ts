/**
 * The load generator's NAT rebinding mode against a whole gateway (embedded broker, demo
 * platform): devices that negotiated a Connection ID move to a new source port mid-run and
 * are answered on the first request after each move, with no new handshake; devices without
 * a CID lose their association on the move.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { runLoad, type LoadDevice } from '../../src/tools/load.js';
import { DEMO, startGateway, type TestGateway } from '../helpers/gateway.js';

const DEVICES: LoadDevice[] = [DEMO.device001, DEMO.device002].map((d) => {
  const [productKey = '', deviceKey = ''] = d.identity.split(',');
  return { productKey, deviceKey, secret: d.secret };
});

describe('coap-edge bench --cid --rebind-every', () => {
  let gw: TestGateway | undefined;
  const current = (): TestGateway => {
    assert.ok(gw !== undefined, 'the gateway started');
    return gw;
  };
  before(async () => {
    gw = await startGateway({ overrides: { embeddedBroker: 0, demoPlatform: true } });
  });
  after(async () => {
    await gw?.close();
  });

  it('with CID: every first request after a move is answered at once, one handshake per device', async () => {
    const stats = current().gateway.dtls.stats;
    const started = stats.handshakesStarted;
    const r = await runLoad({
      host: '127.0.0.1',
      port: current().port,
      devices: DEVICES,
      durationMs: 2_500,
      ratePerDevice: 4,
      suite: 'ccm8',
      cid: true,
      rebindEveryMs: 800,
      requestTimeoutMs: 10_000,
    });
    assert.equal(r.connected, 2);
    assert.equal(r.failed, 0);
    assert.ok(r.rebinding !== undefined);
    assert.ok(r.rebinding.rebinds >= 2, JSON.stringify(r));
    assert.equal(r.rebinding.failed, 0);
    // no CoAP retransmission needed: the gateway answered at the new port straight away
    assert.equal(r.rebinding.answeredFirstTry, r.rebinding.rebinds, JSON.stringify(r));
    assert.equal(stats.handshakesStarted - started, 2, 'only the two initial handshakes');
    assert.ok(stats.peerAddressUpdates >= r.rebinding.rebinds);
  });

  it('--rebind-share: only that share of the devices moves', async () => {
    const stats = current().gateway.dtls.stats;
    const moved = stats.peerAddressUpdates;
    const r = await runLoad({
      host: '127.0.0.1',
      port: current().port,
      devices: DEVICES,
      durationMs: 2_000,
      ratePerDevice: 4,
      suite: 'ccm8',
      cid: true,
      rebindEveryMs: 600,
      rebindShare: 0.5,
      requestTimeoutMs: 10_000,
    });
    assert.ok(r.rebinding !== undefined);
    // one device of two moves, about every 600 ms of the 2 s: between 1 and 3 moves
    assert.ok(r.rebinding.rebinds >= 1 && r.rebinding.rebinds <= 3, JSON.stringify(r));
    assert.equal(r.rebinding.answeredFirstTry, r.rebinding.rebinds, JSON.stringify(r));
    assert.equal(stats.peerAddressUpdates - moved, r.rebinding.rebinds);
  });

  it('without CID: the first request after a move goes unanswered', async () => {
    const r = await runLoad({
      host: '127.0.0.1',
      port: current().port,
      devices: DEVICES.slice(0, 1),
      durationMs: 1_000,
      ratePerDevice: 4,
      suite: 'ccm8',
      rebindEveryMs: 500,
      requestTimeoutMs: 1_500,
    });
    assert.ok(r.rebinding !== undefined);
    assert.ok(r.rebinding.rebinds >= 1, JSON.stringify(r));
    assert.equal(r.rebinding.answeredFirstTry, 0, JSON.stringify(r));
    assert.equal(r.rebinding.failed, r.rebinding.rebinds);
  });
});
