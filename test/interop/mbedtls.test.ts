/**
 * mbedTLS devices against coap-edge: the C client in test/fixtures/mbedtls-device/ built
 * against Debian 12's mbedTLS 2.28 (the system's libmbedtls-dev) and against Debian 13's 3.6
 * (unpacked by scripts/fetch-mbedtls36.sh, which .ci/run calls), which has RFC 9146 Connection
 * ID. The gateway runs with the embedded broker and the demo platform, so a measurepoint POST
 * is answered 2.04 with the platform's reply. Missing cc, libmbedtls-dev or the 3.6 folder
 * fails these tests (with what to install), it does not skip them.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ContentFormat } from '../../src/coap/constants.js';
import { ExtensionType } from '../../src/dtls/constants.js';
import { derivePsk } from '../../src/enos/psk.js';
import {
  DEMO,
  MEASUREPOINT_PAYLOAD,
  MEASUREPOINT_POST,
  secretForms,
  startGateway,
  type TestGateway,
} from '../helpers/gateway.js';
import {
  buildDevice,
  runDevice,
  startHelloTap,
  type DeviceResult,
  type DeviceRun,
  type MbedtlsVersion,
} from '../helpers/mbedtls.js';
import { killAll } from '../helpers/processes.js';

const KEY1 = derivePsk(DEMO.device001.secret);

const SUITES = [
  { name: 'TLS_PSK_WITH_AES_128_CCM_8', suite: 'ccm8', noEtm: false, etm: false },
  { name: 'TLS_PSK_WITH_AES_128_CBC_SHA256', suite: 'cbc', noEtm: false, etm: true },
  { name: 'TLS_PSK_WITH_AES_128_CBC_SHA256', suite: 'cbc', noEtm: true, etm: false },
] as const;

/** device001 posting a measurepoint on its own topic `count` times (2 unless told). */
function uplink(
  version: MbedtlsVersion,
  port: number,
  extra: Partial<DeviceRun> = {},
): Promise<DeviceResult> {
  return runDevice(version, {
    port,
    identity: DEMO.device001.identity,
    psk: KEY1,
    path: MEASUREPOINT_POST('demoPK01', 'device001'),
    payload: MEASUREPOINT_PAYLOAD,
    contentFormat: ContentFormat.JSON,
    count: 2,
    ...extra,
  });
}

/** Exit 0 and `n` answers 2.04 carrying the demo platform's success reply to id "1". */
function assertAnswered(r: DeviceResult, n: number): void {
  assert.equal(r.timedOut, false, `timed out\n${r.describe}`);
  assert.equal(r.code, 0, `exit code\n${r.describe}`);
  assert.match(r.stdout, /^handshake ok DTLSv1\.2 /m, r.describe);
  assert.equal(r.answers.length, n, r.describe);
  for (const a of r.answers) {
    assert.equal(a.code, '2.04', r.describe);
    assert.deepEqual(JSON.parse(a.payload), { id: '1', code: 200, data: null }, r.describe);
  }
}

/** The gateway's "association established" line for the device's source port. */
function establishedLine(gw: TestGateway, r: DeviceResult): Record<string, unknown> {
  assert.ok(r.localPort !== undefined, r.describe);
  const line = gw
    .logLines()
    .find((l) => l.msg === 'association established' && l.peer === `127.0.0.1:${r.localPort}`);
  assert.ok(line !== undefined, `no "association established" for ${r.localPort}`);
  return line;
}

/** The tests both mbedTLS versions pass the same way. */
function commonTests(version: MbedtlsVersion, gw: () => TestGateway): void {
  for (const s of SUITES) {
    const what = `${s.name}${s.suite === 'cbc' ? (s.noEtm ? ' without ETM' : ' with ETM') : ''}`;
    it(`${what}: handshake, two measurepoint POSTs answered 2.04`, async () => {
      const r = await uplink(version, gw().port, { suite: s.suite, noEtm: s.noEtm });
      assertAnswered(r, 2);
      assert.match(
        r.stdout,
        new RegExp(`^handshake ok DTLSv1\\.2 ${s.name.replaceAll('_', '-')}$`, 'm'),
      );
      const line = establishedLine(gw(), r);
      assert.equal(line.suite, s.name);
      assert.equal(line.etm, s.etm, 'encrypt-then-MAC as the device asked');
      assert.equal(line.ems, true);
    });
  }

  it('max_fragment_length 512 requested: the handshake completes and the POST is answered', async () => {
    const r = await uplink(version, gw().port, { mfl: 512, count: 1 });
    assertAnswered(r, 1);
  });

  it('a wrong PSK fails the handshake: the gateway sends bad_record_mac, the device exits 2', async () => {
    const failed = gw().gateway.dtls.stats.handshakesFailed['bad-record-mac'];
    const r = await uplink(version, gw().port, { psk: Buffer.alloc(16, 0x5a) });
    assert.equal(r.timedOut, false, r.describe);
    assert.equal(r.code, 2, r.describe);
    // MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE: the gateway's alert, not a timeout
    assert.match(r.stderr, /^error: handshake failed: -0x7780 /m, r.describe);
    assert.doesNotMatch(r.stdout, /handshake ok/, r.describe);
    assert.equal(r.answers.length, 0);
    assert.equal(gw().gateway.dtls.stats.handshakesFailed['bad-record-mac'], failed + 1);
  });
}

/**
 * The device moves its session to a new source port after one request (a carrier NAT
 * rebinding). Without a Connection ID the gateway knows the session only by address and port,
 * so the records from the new port belong to no association: each is dropped as
 * `unknown-peer` and the second request is never answered (the device exits 3 after its CoAP
 * retransmissions).
 */
async function rebindUnanswered(
  version: MbedtlsVersion,
  gw: TestGateway,
  cid: boolean,
): Promise<void> {
  const dropped = gw.gateway.dtls.stats.drops['unknown-peer'];
  const r = await uplink(version, gw.port, {
    count: 2,
    rebindAfter: 1,
    cid,
    ackTimeoutMs: 300,
    maxRetransmit: 2,
  });
  assert.equal(r.timedOut, false, r.describe);
  const rebind = /^rebind local port (\d+) -> (\d+)$/m.exec(r.stdout);
  assert.ok(rebind !== null, r.describe);
  assert.notEqual(rebind[1], rebind[2], 'a new source port');
  assert.equal(r.answers.length, 1, r.describe);
  assert.equal(r.answers[0]?.code, '2.04', r.describe);
  assert.equal(r.code, 3, r.describe);
  const m =
    /^error: no answer to request 2 of 2 \(mid 0x[0-9a-f]{4}\) after (\d+) transmissions$/m.exec(
      r.stderr,
    );
  assert.ok(m !== null, r.describe);
  assert.equal(Number(m[1]), 3, 'the first transmission and MAX_RETRANSMIT = 2 retransmissions');
  // every transmission from the new port reached the gateway and was dropped there
  assert.equal(gw.gateway.dtls.stats.drops['unknown-peer'] - dropped, Number(m[1]));
}

/**
 * A describe block for one mbedTLS: the device built and a gateway started first, the common
 * tests, then `specific`'s, then a check that the log holds no secret.
 */
function describeVersion(
  version: MbedtlsVersion,
  title: string,
  specific: (gw: () => TestGateway) => void,
): void {
  describe(title, () => {
    let gw: TestGateway | undefined;
    const current = (): TestGateway => {
      assert.ok(gw !== undefined, 'the gateway started');
      return gw;
    };
    before(async () => {
      await buildDevice(version);
      gw = await startGateway({ overrides: { embeddedBroker: 0, demoPlatform: true } });
    });
    after(async () => {
      await killAll();
      await gw?.close();
    });

    commonTests(version, current);
    specific(current);

    it('no secret in the gateway log', () => {
      const text = current().logText();
      assert.ok(text.includes('association established'));
      for (const s of secretForms()) assert.ok(!text.includes(s), 'a secret is in the log');
    });
  });
}

describeVersion('2.28', 'mbedTLS 2.28 (Debian 12 libmbedtls-dev) device', (gw) => {
  it('--cid is refused: this build has no RFC 9146 Connection ID', async () => {
    const r = await uplink('2.28', gw().port, { cid: true });
    assert.equal(r.code, 1, r.describe);
    assert.match(r.stderr, /--cid needs mbedTLS >= 3\.3/);
  });

  it('CURRENT BEHAVIOUR: after a source-port change the next request goes unanswered', async () => {
    // without CID this stays so: a new address is a new peer (RFC 6347 §4.2.8)
    await rebindUnanswered('2.28', gw(), false);
  });
});

describeVersion('3.6', 'mbedTLS 3.6 (Debian 13, scripts/fetch-mbedtls36.sh) device', (gw) => {
  for (const s of SUITES) {
    const what = `${s.name}${s.suite === 'cbc' ? (s.noEtm ? ' without ETM' : ' with ETM') : ''}`;

    it(`${what}: CID offered (extension 54) is negotiated, the gateway hands out an 8-byte CID`, async () => {
      const tap = await startHelloTap(gw().port);
      try {
        const byCid = gw().gateway.dtls.stats.demux.cid;
        const r = await uplink('3.6', tap.port, { cid: true, count: 2, ...s });
        assertAnswered(r, 2);
        const own = /^CID offered own=([0-9a-f]{8})$/m.exec(r.stdout)?.[1];
        assert.ok(own !== undefined, r.describe);
        // what went over the wire: RFC 9146 §3, opaque cid<0..2^8-1> in every hello
        assert.ok(tap.clientHellos.length >= 1, 'the tap saw the ClientHello');
        for (const ext of tap.clientHellos) {
          assert.deepEqual(ext.get(ExtensionType.connectionId), Buffer.from(`04${own}`, 'hex'));
        }
        assert.equal(tap.serverHellos.length, 1, 'the tap saw the ServerHello');
        const given = tap.serverHellos[0]?.get(ExtensionType.connectionId);
        assert.ok(given !== undefined && given.length === 9 && given[0] === 8, 'an 8-byte CID');
        const peer = given.subarray(1).toString('hex');
        // mbedTLS itself says both CIDs are in use (its own and the one we gave it)
        assert.match(r.stdout, new RegExp(`^CID negotiated own=${own} peer=${peer}$`, 'm'));
        // both requests came as CID records (the Finished went to the handshake)
        assert.ok(gw().gateway.dtls.stats.demux.cid - byCid >= 2, 'records matched by CID');
        assert.match(
          r.stdout,
          new RegExp(`^handshake ok DTLSv1\\.2 ${s.name.replaceAll('_', '-')}$`, 'm'),
        );
      } finally {
        await tap.close();
      }
    });

    it(`${what}: CID negotiated, then a source-port change: the device keeps its association, no new handshake`, async () => {
      const stats = gw().gateway.dtls.stats;
      const before = {
        completed: stats.handshakesCompleted,
        started: stats.handshakesStarted,
        moved: stats.peerAddressUpdates,
        unknown: stats.drops['unknown-peer'] + stats.drops['unknown-cid'],
      };
      const r = await uplink('3.6', gw().port, {
        count: 3,
        rebindAfter: 1,
        cid: true,
        ackTimeoutMs: 300,
        maxRetransmit: 2,
        ...s,
      });
      assertAnswered(r, 3);
      const rebind = /^rebind local port (\d+) -> (\d+)$/m.exec(r.stdout);
      assert.ok(rebind !== null, r.describe);
      assert.notEqual(rebind[1], rebind[2], 'a new source port');
      assert.match(r.stdout, /^CID negotiated /m, r.describe);
      assert.equal(stats.handshakesStarted - before.started, 1, 'one handshake, before the move');
      assert.equal(stats.handshakesCompleted - before.completed, 1);
      assert.equal(stats.peerAddressUpdates - before.moved, 1, 'the association moved once');
      assert.equal(stats.drops['unknown-peer'] + stats.drops['unknown-cid'], before.unknown);
      // nothing of it is left at the old port
      assert.equal(gw().gateway.dtls.principalOf('127.0.0.1', Number(rebind[1])), undefined);
    });
  }
});
