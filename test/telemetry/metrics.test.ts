/**
 * Metrics: a Gateway with its admin server (`httpPort: 0`), a Mosquitto and a
 * redis-server of the test's own (so they can be stopped), an HTTP route and a devices file.
 * A scripted scenario moves the counters, checked scrape by scrape on `/metrics`:
 * success (handshake, MQTT and HTTP uplinks), a wrong key, malformed, replayed and forged
 * records, a malformed CoAP message, the broker going away (5.03, backend down, not ready)
 * and Redis going away. Every scrape passes `promtool check metrics`.
 *
 * The shared-association series (docs/operations.md, "Shared associations") are checked
 * against a metrics registry bound to synthetic stats: each counter of `SharedStats` gets its
 * own value and must come out under its own name and label, and nothing else.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sendDatagram } from '../helpers/processes.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { AuthStats } from '../../src/auth/stats.js';
import { CoapStats } from '../../src/coap/stats.js';
import { ContentType } from '../../src/dtls/constants.js';
import { DtlsStats } from '../../src/dtls/types.js';
import { derivePsk } from '../../src/enos/psk.js';
import { createMetrics } from '../../src/telemetry/metrics.js';
import { CoapDtlsClient } from '../../src/tools/coap-client.js';
import {
  eventually,
  measurepointTopic,
  startE2eGateway,
  uid,
  type E2eGateway,
} from '../helpers/e2e.js';
import {
  HttpStandIn,
  codeOf,
  connectAs,
  postJson,
  writeDevicesFile,
  type DeviceSpec,
} from '../helpers/e2e-pods.js';
import { RedisServer } from '../integration/auth/helpers.js';
import { HAVE_MOSQUITTO, Mosquitto, enosReply, platform } from '../integration/bridge/brokers.js';
import { Exposition, HAVE_PROMTOOL, httpGet, promtool } from './prom.js';

/** Label values of the shared-association families (fixed sets). */
const SHARED_LABELS = {
  via: ['cid', 'address'],
  result: ['found', 'missing', 'negative', 'limited', 'unproven', 'fenced', 'error'],
  kind: ['tx', 'rx', 'lower'],
} as const;

/** The shared-association counter families and their one label (undefined: none). */
const SHARED_FAMILIES = new Map<string, keyof typeof SHARED_LABELS | undefined>([
  ['coap_edge_dtls_adoptions_total', 'via'],
  ['coap_edge_dtls_association_lookups_total', 'result'],
  ['coap_edge_dtls_sequence_leases_total', 'kind'],
  ['coap_edge_dtls_sequence_leases_lost_total', undefined],
  ['coap_edge_dtls_sequence_lease_errors_total', undefined],
  ['coap_edge_dtls_records_held_for_lease_total', undefined],
  ['coap_edge_dtls_records_dropped_for_lease_total', undefined],
  ['coap_edge_dtls_associations_stored_total', undefined],
  ['coap_edge_dtls_association_store_errors_total', undefined],
  ['coap_edge_dtls_associations_offloaded_total', undefined],
]);

describe('telemetry: command intake series', () => {
  it('every outcome comes out under its own label with its own value; absent without an intake', async () => {
    const base = {
      dtls: { stats: new DtlsStats(), associationCount: 0, handshakeCount: 0 },
      coap: new CoapStats(),
      auth: new AuthStats(),
      udpSendErrors: () => 0,
      plainDatagrams: () => 0,
      ready: () => true,
    };
    const without = createMetrics();
    without.bind({ ...base, requests: without.requests });
    const none = Exposition.parse(await without.registry.metrics());
    assert.equal(none.has('coap_edge_command_intake_total', { outcome: 'lost' }), false);
    const metrics = createMetrics();
    metrics.bind({
      ...base,
      requests: metrics.requests,
      commandIntake: () => ({
        state: 'subscribed',
        protocolVersion: 5,
        received: 100,
        enqueued: 3,
        refusedFull: 5,
        ignored: { notCommand: 7, retained: 11, foreign: 13 },
        tooLarge: 17,
        storeErrors: 19,
        storeRetries: 23,
        subscribeFailures: 0,
        connectionUps: 1,
        connectionDowns: 0,
        reconnects: 0,
        protocolFallbacks: 0,
      }),
    });
    const now = Exposition.parse(await metrics.registry.metrics());
    const expected: Record<string, number> = {
      enqueued: 3,
      refused_full: 5,
      not_command: 7,
      retained: 11,
      foreign: 13,
      too_large: 17,
      lost: 19,
      retry: 23,
    };
    for (const [outcome, value] of Object.entries(expected)) {
      assert.equal(now.sum('coap_edge_command_intake_total', { outcome }), value, outcome);
    }
  });
});

describe('telemetry: shared-association series from DtlsStats.shared', () => {
  it('every counter of SharedStats comes out under its own name and label, with its own value', async () => {
    const metrics = createMetrics();
    const dtls = new DtlsStats();
    const sh = dtls.shared;
    // a distinct value per counter: a series reading the wrong field shows the wrong number
    sh.adoptions.cid = 3;
    sh.adoptions.address = 5;
    sh.lookups.found = 7;
    sh.lookups.missing = 11;
    sh.lookups.negative = 13;
    sh.lookups.limited = 17;
    sh.lookups.error = 19;
    sh.lookups.unproven = 67;
    sh.lookups.fenced = 71;
    sh.leases.tx = 23;
    sh.leases.rx = 29;
    sh.leases.lower = 31;
    sh.leasesLost = 37;
    sh.leaseErrors = 41;
    sh.heldForLease = 43;
    sh.droppedForLease = 47;
    sh.stored = 53;
    sh.storeErrors = 59;
    sh.offloaded = 61;
    metrics.bind({
      dtls: { stats: dtls, associationCount: 0, handshakeCount: 0 },
      coap: new CoapStats(),
      requests: metrics.requests,
      auth: new AuthStats(),
      udpSendErrors: () => 0,
      plainDatagrams: () => 0,
      ready: () => true,
    });
    metrics.adoptionDuration.observe(4);
    metrics.adoptionDuration.observe(300);
    const text = await metrics.registry.metrics();
    const now = Exposition.parse(text);
    const expected: Record<string, Record<string, number>> = {
      coap_edge_dtls_adoptions_total: { cid: 3, address: 5 },
      coap_edge_dtls_association_lookups_total: {
        found: 7,
        missing: 11,
        negative: 13,
        limited: 17,
        unproven: 67,
        fenced: 71,
        error: 19,
      },
      coap_edge_dtls_sequence_leases_total: { tx: 23, rx: 29, lower: 31 },
      coap_edge_dtls_sequence_leases_lost_total: { '': 37 },
      coap_edge_dtls_sequence_lease_errors_total: { '': 41 },
      coap_edge_dtls_records_held_for_lease_total: { '': 43 },
      coap_edge_dtls_records_dropped_for_lease_total: { '': 47 },
      coap_edge_dtls_associations_stored_total: { '': 53 },
      coap_edge_dtls_association_store_errors_total: { '': 59 },
      coap_edge_dtls_associations_offloaded_total: { '': 61 },
    };
    assert.deepEqual(Object.keys(expected).sort(), [...SHARED_FAMILIES.keys()].sort());
    for (const [name, byValue] of Object.entries(expected)) {
      assert.equal(now.families.get(name)?.type, 'counter', `${name} is a counter`);
      const label = SHARED_FAMILIES.get(name);
      const samples = now.select(name);
      // exactly the fixed label set: one sample per value, no other label
      const seen = samples.map((s) => {
        assert.deepEqual(Object.keys(s.labels), label === undefined ? [] : [label], name);
        return label === undefined ? '' : (s.labels[label] ?? '?');
      });
      assert.deepEqual(seen.sort(), Object.keys(byValue).sort(), `${name} label values`);
      if (label !== undefined) {
        assert.deepEqual(
          [...seen].sort(),
          [...SHARED_LABELS[label]].sort(),
          `${name}{${label}} is the documented set`,
        );
      }
      for (const [v, n] of Object.entries(byValue)) {
        const labels = label === undefined ? {} : { [label]: v };
        assert.equal(now.sum(name, labels), n, `${name} ${JSON.stringify(labels)}`);
      }
    }
    // the adoption histogram: observed in ms, exposed in seconds, buckets like the handshake duration
    const h = 'coap_edge_dtls_adoption_duration_seconds';
    assert.equal(now.families.get(h)?.type, 'histogram');
    assert.equal(now.sum(`${h}_count`), 2);
    assert.ok(Math.abs(now.sum(`${h}_sum`) - 0.304) < 1e-9, `${h}_sum ${now.sum(`${h}_sum`)}`);
    assert.equal(now.sum(`${h}_bucket`, { le: '0.0025' }), 0);
    assert.equal(now.sum(`${h}_bucket`, { le: '0.005' }), 1);
    assert.equal(now.sum(`${h}_bucket`, { le: '0.25' }), 1);
    assert.equal(now.sum(`${h}_bucket`, { le: '0.5' }), 2);
    assert.equal(now.sum(`${h}_bucket`, { le: '+Inf' }), 2);
    if (HAVE_PROMTOOL) {
      const check = await promtool(['check', 'metrics'], text);
      assert.equal(check.code, 0, `promtool check metrics:\n${check.stdout}${check.stderr}`);
    }
  });
});

const SKIP = !HAVE_PROMTOOL
  ? 'promtool not installed (Debian package prometheus)'
  : !HAVE_MOSQUITTO
    ? 'mosquitto not installed'
    : false;

describe('telemetry: /metrics across a scripted scenario', { skip: SKIP }, () => {
  const dev: DeviceSpec = { pk: uid('mtPK'), dk: uid('mtDK'), secret: `mt-${uid('s')}` };
  const mpTopic = measurepointTopic(dev.pk, dev.dk);
  const eventTopic = `/sys/${dev.pk}/${dev.dk}/thing/event/alarm/post`;
  let dir: string;
  let broker: Mosquitto;
  let redis: RedisServer;
  let http: HttpStandIn;
  let gw: E2eGateway;
  let platformClient: MqttClient;
  let device: CoapDtlsClient;
  let adminPort: number;
  /** The scrape before the current step. */
  let previous: Exposition;

  async function scrape(): Promise<Exposition> {
    const res = await httpGet(adminPort, '/metrics');
    assert.equal(res.status, 200);
    assert.match(res.contentType, /^text\/plain; version=0\.0\.4/);
    return Exposition.parse(res.body);
  }

  /** Scrapes, checks with promtool, and returns it with what moved since the last step. */
  async function step(): Promise<{
    now: Exposition;
    delta: (n: string, l?: Record<string, string>) => number;
  }> {
    const now = await scrape();
    const check = await promtool(['check', 'metrics'], now.text);
    assert.equal(check.code, 0, `promtool check metrics:\n${check.stdout}${check.stderr}`);
    const before = previous;
    previous = now;
    return { now, delta: (n, l = {}) => now.sum(n, l) - before.sum(n, l) };
  }

  /** Waits until a new failed handshake shows on /metrics, then takes the step. */
  async function stepAfterFailedHandshake(): ReturnType<typeof step> {
    await eventually(
      async () =>
        (await scrape()).sum('coap_edge_dtls_handshakes_failed_total') >
        previous.sum('coap_edge_dtls_handshakes_failed_total'),
      'the failed handshake to be counted',
    );
    return step();
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-tel-metrics-'));
    broker = await Mosquitto.start();
    redis = await RedisServer.start();
    http = await HttpStandIn.start();
    http.answer = () => ({ status: 200, body: '{"ok":true}' });
    gw = await startE2eGateway({
      devices: writeDevicesFile(dir, [dev]),
      mqttUrl: `mqtt://127.0.0.1:${broker.port}`,
      redisUrl: redis.url,
      redisPrefix: uid('tel-metrics-'),
      httpPort: 0,
      httpBind: '127.0.0.1',
      routes: [
        {
          name: 'events',
          match: '/sys/{pk}/{dk}/thing/event/+/post',
          backend: 'http',
          url: `${http.origin}/events`,
        },
      ],
    });
    assert.ok(gw.gateway.httpPort !== undefined, 'the admin server runs');
    adminPort = gw.gateway.httpPort;
    platformClient = await platform(
      broker.port,
      `/sys/${dev.pk}/+/thing/measurepoint/post`,
      (_t, p) => enosReply(p),
    );
    previous = await scrape();
  });

  after(async () => {
    await device?.close().catch(() => undefined);
    await platformClient?.endAsync(true).catch(() => undefined);
    await gw?.close();
    await http?.close();
    await broker?.dispose();
    await redis?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('before any traffic: every family is declared, ready, backends and Redis up, /healthz and /readyz 200', async () => {
    const { now } = await step();
    for (const name of [
      'coap_edge_ready',
      'coap_edge_datagrams_received_total',
      'coap_edge_dtls_records_dropped_total',
      'coap_edge_dtls_handshakes_completed_total',
      'coap_edge_dtls_handshake_duration_seconds',
      'coap_edge_coap_requests_total',
      'coap_edge_coap_request_duration_seconds',
      'coap_edge_backend_requests_total',
      'coap_edge_backend_request_duration_seconds',
      'coap_edge_backend_up',
      'coap_edge_redis_up',
      'coap_edge_devices_online',
      ...SHARED_FAMILIES.keys(),
    ]) {
      assert.ok(now.families.has(name), `${name} declared`);
    }
    // sharing is off here (no associationKey): every shared series is there, at 0
    for (const [name, label] of SHARED_FAMILIES) {
      const values = label === undefined ? [undefined] : SHARED_LABELS[label];
      for (const v of values) {
        const labels = label === undefined || v === undefined ? {} : { [label]: v };
        assert.ok(now.has(name, labels), `${name} ${JSON.stringify(labels)}`);
        assert.equal(now.sum(name, labels), 0, `${name} ${JSON.stringify(labels)}`);
      }
    }
    assert.equal(now.sum('coap_edge_dtls_adoption_duration_seconds_count'), 0);
    assert.equal(now.sum('coap_edge_ready'), 1);
    assert.equal(now.sum('coap_edge_backend_up', { backend: 'mqtt' }), 1);
    for (const client of ['secrets', 'commands', 'presence']) {
      assert.equal(now.sum('coap_edge_redis_up', { client }), 1, `redis_up{client="${client}"}`);
    }
    assert.equal(now.sum('coap_edge_dtls_associations'), 0);
    // no device key (or any other unbounded value) as a label anywhere
    for (const s of now.samples) {
      for (const v of Object.values(s.labels)) {
        assert.ok(
          !v.includes(dev.dk) && !v.includes(dev.pk),
          `${s.name} ${JSON.stringify(s.labels)}`,
        );
      }
    }
    assert.equal((await httpGet(adminPort, '/healthz')).status, 200);
    const ready = await httpGet(adminPort, '/readyz');
    assert.equal(ready.status, 200, ready.body);
    assert.deepEqual(JSON.parse(ready.body), { ready: true, failing: [] });
  });

  it('success: a handshake, a measurepoint over MQTT and an event over HTTP', async () => {
    device = await connectAs(gw.port, dev);
    const mp = await postJson(device, mpTopic, JSON.stringify({ id: 'm1', params: {} }));
    assert.equal(codeOf(mp), '2.04');
    const ev = await postJson(device, eventTopic, JSON.stringify({ id: 'e1', params: {} }));
    assert.equal(codeOf(ev), '2.04');
    await eventually(
      async () => (await scrape()).sum('coap_edge_devices_online') >= 1,
      'the device to be online',
    );
    const { now, delta } = await step();
    assert.ok(delta('coap_edge_datagrams_received_total', { transport: 'dtls' }) >= 5);
    assert.ok(delta('coap_edge_datagrams_sent_total') >= 4);
    assert.ok(delta('coap_edge_dtls_records_received_total') >= 5);
    assert.equal(delta('coap_edge_dtls_hello_verify_requests_total'), 1);
    assert.equal(delta('coap_edge_dtls_handshakes_started_total'), 1);
    assert.equal(
      delta('coap_edge_dtls_handshakes_completed_total', {
        cipher_suite: 'TLS_PSK_WITH_AES_128_CCM_8',
      }),
      1,
    );
    assert.equal(delta('coap_edge_dtls_handshakes_failed_total'), 0);
    assert.equal(delta('coap_edge_dtls_handshake_duration_seconds_count'), 1);
    assert.equal(now.sum('coap_edge_dtls_associations'), 1);
    assert.equal(now.sum('coap_edge_dtls_handshakes_in_progress'), 0);
    assert.equal(delta('coap_edge_key_lookups_total', { layer: 'file', outcome: 'hit' }), 1);
    const ok = { method: 'POST', topic_class: 'uplink', code: '2.04' };
    assert.equal(delta('coap_edge_coap_requests_total', ok), 2);
    assert.equal(delta('coap_edge_coap_request_duration_seconds_count', { method: 'POST' }), 2);
    assert.equal(
      delta('coap_edge_coap_request_duration_seconds_bucket', { method: 'POST', le: '+Inf' }),
      2,
    );
    assert.equal(delta('coap_edge_backend_requests_total', { backend: 'mqtt', outcome: 'ok' }), 1);
    assert.equal(delta('coap_edge_backend_requests_total', { backend: 'http', outcome: '2xx' }), 1);
    assert.equal(delta('coap_edge_mqtt_replies_total', { outcome: 'matched' }), 1);
    assert.equal(
      delta('coap_edge_presence_transitions_total', { status: 'online', reason: 'first_request' }),
      1,
    );
    assert.equal(now.sum('coap_edge_devices_online'), 1);
    assert.equal(delta('coap_edge_dtls_records_dropped_total'), 0);
  });

  it('success: the backend latency histogram has samples for mqtt and http', async () => {
    const now = await scrape();
    for (const backend of ['mqtt', 'http']) {
      assert.ok(
        now.sum('coap_edge_backend_request_duration_seconds_count', { backend }) >= 1,
        `coap_edge_backend_request_duration_seconds_count{backend="${backend}"}`,
      );
      assert.ok(
        now.has('coap_edge_backend_request_duration_seconds_bucket', { backend, le: '+Inf' }),
      );
    }
  });

  it('bad key: a wrong secret fails the handshake with reason bad_record_mac', async () => {
    await assert.rejects(
      connectAs(gw.port, { ...dev, secret: 'not-the-secret' }),
      'the handshake with a wrong PSK fails',
    );
    const { now, delta } = await stepAfterFailedHandshake();
    assert.equal(delta('coap_edge_dtls_handshakes_failed_total', { reason: 'bad_record_mac' }), 1);
    // the failure came after our ServerHello: counted under the suite it announced
    assert.equal(
      delta('coap_edge_dtls_handshakes_failed_total', {
        reason: 'bad_record_mac',
        cipher_suite: 'TLS_PSK_WITH_AES_128_CCM_8',
      }),
      1,
    );
    assert.equal(delta('coap_edge_dtls_handshakes_failed_total'), 1);
    assert.equal(delta('coap_edge_dtls_handshakes_completed_total'), 0);
    assert.equal(delta('coap_edge_dtls_handshakes_started_total'), 1);
    assert.equal(now.sum('coap_edge_dtls_associations'), 1, 'the good device stays');
  });

  it('no shared cipher suite: the failure is counted with cipher_suite "none" (before any ServerHello)', async () => {
    await assert.rejects(
      CoapDtlsClient.connect({
        host: '127.0.0.1',
        port: gw.port,
        identity: `${dev.pk},${dev.dk},2,3600`,
        psk: derivePsk(dev.secret),
        // TLS_PSK_WITH_AES_128_GCM_SHA256: a PSK suite coap-edge does not offer
        cipherSuites: [0x00a8],
        handshakeTimeoutMs: 10_000,
        retransmitTimeoutMs: 500,
      }),
      'a handshake without a common suite fails',
    );
    const { now, delta } = await stepAfterFailedHandshake();
    assert.equal(
      delta('coap_edge_dtls_handshakes_failed_total', {
        reason: 'no_shared_cipher',
        cipher_suite: 'none',
      }),
      1,
    );
    assert.equal(delta('coap_edge_dtls_handshakes_failed_total'), 1);
    for (const s of now.select('coap_edge_dtls_handshakes_failed_total')) {
      assert.ok(
        s.labels.cipher_suite === 'none' || s.labels.cipher_suite?.startsWith('TLS_PSK_'),
        `cipher_suite label on ${JSON.stringify(s.labels)}`,
      );
    }
  });

  it('malformed datagram, replayed and forged records, a malformed CoAP message: dropped by reason', async () => {
    await sendDatagram(gw.port, Buffer.from('not a DTLS record'));
    // a CoAP ping (empty CON) sealed once and sent twice: the second is a replay
    const ping = Buffer.from([0x40, 0x00, 0x12, 0x34]);
    const sealed = device.dtls.sealRecord(ContentType.applicationData, ping);
    assert.ok(sealed !== undefined);
    device.dtls.sendRaw(sealed);
    device.dtls.sendRaw(sealed);
    // a forged record: the last byte of the MAC (CCM_8 tag) flipped, on a fresh sequence
    const forged = device.dtls.sealRecord(ContentType.applicationData, ping);
    assert.ok(forged !== undefined);
    forged[forged.length - 1]! ^= 0xff;
    device.dtls.sendRaw(forged);
    // a one-byte CoAP message inside a valid record
    device.dtls.send(Buffer.from([0x40]));
    const drops = (): Promise<number> =>
      scrape().then((s) => s.sum('coap_edge_dtls_records_dropped_total'));
    const before = previous.sum('coap_edge_dtls_records_dropped_total');
    await eventually(async () => (await drops()) >= before + 3, 'the drops to be counted');
    const { delta } = await step();
    assert.equal(delta('coap_edge_dtls_records_dropped_total', { reason: 'malformed_record' }), 1);
    assert.equal(delta('coap_edge_dtls_records_dropped_total', { reason: 'replay' }), 1);
    assert.equal(delta('coap_edge_dtls_records_dropped_total', { reason: 'bad_mac' }), 1);
    assert.equal(delta('coap_edge_coap_messages_dropped_total', { reason: 'malformed' }), 1);
    assert.equal(delta('coap_edge_coap_exchange_events_total', { event: 'ping' }), 1);
    // the association survives all of it
    const mp = await postJson(device, mpTopic, JSON.stringify({ id: 'm2', params: {} }));
    assert.equal(codeOf(mp), '2.04');
    await step();
  });

  it('backend down: the broker stops → backend_up 0, 5.03 counted, /readyz 503 naming mqtt', async () => {
    await broker.stop();
    await eventually(
      async () => (await scrape()).sum('coap_edge_backend_up', { backend: 'mqtt' }) === 0,
      'coap_edge_backend_up{backend="mqtt"} 0',
    );
    const res = await postJson(device, mpTopic, JSON.stringify({ id: 'm3', params: {} }));
    assert.equal(codeOf(res), '5.03');
    const { now, delta } = await step();
    assert.equal(now.sum('coap_edge_backend_up', { backend: 'mqtt' }), 0);
    assert.equal(
      delta('coap_edge_coap_requests_total', {
        method: 'POST',
        topic_class: 'uplink',
        code: '5.03',
      }),
      1,
    );
    assert.equal(delta('coap_edge_coap_requests_total', { code: '2.04' }), 0);
    assert.equal(
      delta('coap_edge_backend_requests_total', { backend: 'mqtt', outcome: 'unavailable' }),
      1,
    );
    assert.equal(delta('coap_edge_backend_requests_total', { backend: 'mqtt', outcome: 'ok' }), 0);
    assert.equal(now.sum('coap_edge_ready'), 0);
    const ready = await httpGet(adminPort, '/readyz');
    assert.equal(ready.status, 503);
    const body = JSON.parse(ready.body) as { ready: boolean; failing: string[] };
    assert.equal(body.ready, false);
    assert.ok(body.failing.includes('mqtt'), ready.body);
    assert.equal((await httpGet(adminPort, '/healthz')).status, 200, 'still alive');
    // the HTTP route does not depend on the broker
    const ev = await postJson(device, eventTopic, JSON.stringify({ id: 'e2', params: {} }));
    assert.equal(codeOf(ev), '2.04');
  });

  it('Redis down: redis_up 0 for its clients, /readyz names redis', async () => {
    await redis.stop();
    await eventually(
      async () => (await scrape()).sum('coap_edge_redis_up', { client: 'secrets' }) === 0,
      'coap_edge_redis_up{client="secrets"} 0',
    );
    const { now } = await step();
    assert.equal(now.sum('coap_edge_redis_up', { client: 'secrets' }), 0);
    const ready = JSON.parse((await httpGet(adminPort, '/readyz')).body) as { failing: string[] };
    assert.ok(ready.failing.includes('redis'), JSON.stringify(ready));
  });

  it('Redis down: coap_edge_devices_online is absent, not 0, while the presence store cannot count', async () => {
    const now = await scrape();
    assert.equal(now.has('coap_edge_devices_online'), false, 'unknown, so no sample');
  });
});
