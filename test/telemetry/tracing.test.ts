/**
 * Tracing end to end: this process sets up the OpenTelemetry SDK with
 * `setupTracing` (sample ratio 1) exporting over real OTLP/HTTP to an in-process receiver
 * (test/helpers/otlp.ts), and runs an in-process Gateway with the shared Mosquitto
 * (127.0.0.1:1883, MQTT 5) and an HTTP route to an in-process server. A device (our DTLS
 * client) does a handshake, posts a measurepoint (answered by an MQTT 5 platform stand-in)
 * and an event (HTTP route). Checked: the span tree and attributes, `traceparent` in the MQTT
 * 5 user properties and in the HTTP request, a reply carrying the platform's trace context,
 * drops as span events within a span budget, trace ids in log lines, and that no span carries
 * a secret, a key or a payload.
 *
 * Tracing is global per process: only the telemetry/ files turn it on, each putting
 * OpenTelemetry's globals back to none when it ends (test/helpers/otel-globals.ts), for the
 * next file of its process; the rest of the suite runs untraced.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { ProxyTracerProvider, trace as otelTrace } from '@opentelemetry/api';
import { encode } from '../../src/coap/codec.js';
import { CON, Code, OptionNumber } from '../../src/coap/constants.js';
import { derivePsk } from '../../src/enos/psk.js';
import type { TracingHandle } from '../../src/telemetry/setup.js';
import { setupTestTracing } from '../helpers/tracing.js';
import type { CoapDtlsClient } from '../../src/tools/coap-client.js';
import {
  E2eRegistry,
  SHARED_MQTT_PORT,
  SHARED_MQTT_URL,
  eventually,
  measurepointTopic,
  sleep,
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
import { subscriber, type Received } from '../integration/bridge/brokers.js';
import {
  OtlpKind,
  OtlpReceiver,
  OtlpStatus,
  attrText,
  childrenOf,
  describeSpans,
  exposedTexts,
  keyLookups,
  onlyChild,
  parseTraceparent,
  type OtlpSpan,
} from '../helpers/otlp.js';
import { resetOpenTelemetryGlobals } from '../helpers/otel-globals.js';

const DATAGRAM = 'coap-edge.datagram';

/** A random sampled W3C traceparent, as a platform would send it. */
function platformTraceparent(): { tp: string; traceId: string; spanId: string } {
  const traceId = randomBytes(16).toString('hex');
  const spanId = randomBytes(8).toString('hex');
  return { tp: `00-${traceId}-${spanId}-01`, traceId, spanId };
}

let receiver: OtlpReceiver;
let tracing: TracingHandle | undefined;

/**
 * Exports every span ended so far and waits for the receiver's answer: the batch processor
 * of the global provider (setupTracing registers it) is flushed instead of waiting for its
 * next export cycle.
 */
async function flushSpans(): Promise<void> {
  const global = otelTrace.getTracerProvider();
  const provider: object = global instanceof ProxyTracerProvider ? global.getDelegate() : global;
  assert.ok('forceFlush' in provider && typeof provider.forceFlush === 'function');
  await (provider.forceFlush as () => Promise<void>).call(provider);
}

/**
 * Waits until `pred` holds for the spans received; flushes first, so spans that have ended
 * arrive now rather than at the next export cycle (5 s).
 */
async function exported(
  pred: (spans: readonly OtlpSpan[]) => boolean,
  what: string,
): Promise<void> {
  await flushSpans();
  await receiver.waitFor(pred, what);
}

/** The spans received so far. */
const receiverSpans = (): readonly OtlpSpan[] => receiver.spans;

// one SDK for the whole file (it is global to the process), exporting to our receiver
before(async () => {
  receiver = await OtlpReceiver.start();
  tracing = setupTestTracing({
    endpoint: receiver.url,
    // the resource's service.name and service.version are asserted below
    serviceName: 'coap-edge-test',
    serviceVersion: '0.0.0-test',
    env: { POD_NAME: 'coap-edge-test-0', POD_NAMESPACE: 'telemetry' },
  });
  assert.ok(tracing !== undefined, 'setupTracing with an endpoint turns tracing on');
});

after(async () => {
  await tracing?.shutdown();
  await receiver?.close();
});

describe('telemetry: spans of a device over OTLP/HTTP', () => {
  const dev: DeviceSpec = { pk: uid('trPK'), dk: uid('trDK'), secret: `tr-${uid('sec')}` };
  const mpTopic = measurepointTopic(dev.pk, dev.dk);
  const eventTopic = `/sys/${dev.pk}/${dev.dk}/thing/event/alarm/post`;
  /** Markers inside the payloads: none may show up in a span. */
  const mpMarker = uid('mpmarker');
  const replyMarker = uid('replymarker');
  const httpMarker = uid('httpmarker');
  const answerMarker = uid('answermarker');
  const platformTrace = platformTraceparent();
  let dir: string;
  let http: HttpStandIn;
  let gw: E2eGateway;
  let platform: { client: MqttClient; messages: Received[] };
  let device: CoapDtlsClient;
  let udp: Socket | undefined;
  /** Bodies sent, for the payload scan. */
  const bodies: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-tel-trace-'));
    http = await HttpStandIn.start();
    http.answer = () => ({
      status: 200,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ok: true, marker: answerMarker }),
    });
    gw = await startE2eGateway(
      {
        devices: writeDevicesFile(dir, [dev]),
        mqttUrl: SHARED_MQTT_URL,
        mqttProtocol: '5',
        commandShareGroup: uid('tel'),
        routes: [
          {
            name: 'events',
            match: '/sys/{pk}/{dk}/thing/event/+/post',
            backend: 'http',
            url: `${http.origin}/events/{pk}/{dk}`,
          },
        ],
      },
      {},
      tracing?.tracing,
    );
    // the platform: MQTT 5, answers every measurepoint on `_reply`; a request whose id starts
    // with `tp-` is answered with the platform's own trace context as a user property
    platform = await subscriber(SHARED_MQTT_PORT, `/sys/${dev.pk}/+/thing/measurepoint/post`);
    platform.client.on('message', (topic, payload) => {
      const id = (JSON.parse(payload.toString('utf8')) as { id: string }).id;
      const body = JSON.stringify({ id, code: 200, data: { marker: replyMarker } });
      platform.client.publish(`${topic}_reply`, body, {
        qos: 1,
        ...(id.startsWith('tp-')
          ? { properties: { userProperties: { traceparent: platformTrace.tp } } }
          : {}),
      });
    });
    device = await connectAs(gw.port, dev);
  });

  after(async () => {
    udp?.close();
    await device?.close();
    await platform?.client.endAsync(true).catch(() => undefined);
    await gw?.close();
    await http?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const spans = receiverSpans;

  /**
   * The trace of a device request, found by its trace id (told by the `traceparent` a backend
   * saw), once `done` holds for it: its root (the datagram span) and its coap.exchange.
   */
  async function requestTrace(
    traceId: string,
    done: (trace: readonly OtlpSpan[]) => boolean,
    what: string,
  ): Promise<{ root: OtlpSpan; exchange: OtlpSpan; trace: OtlpSpan[] }> {
    const trace = (): OtlpSpan[] => spans().filter((s) => s.traceId === traceId);
    await exported(
      () =>
        trace().some((s) => s.parentSpanId === undefined) &&
        trace().some((s) => s.name === 'coap.exchange') &&
        done(trace()),
      what,
    );
    const t = trace();
    const roots = t.filter((s) => s.parentSpanId === undefined);
    const exchanges = t.filter((s) => s.name === 'coap.exchange');
    assert.equal(roots.length, 1, `one root: ${describeSpans(t)}`);
    assert.equal(exchanges.length, 1, `one coap.exchange: ${describeSpans(t)}`);
    return { root: roots[0]!, exchange: exchanges[0]!, trace: t };
  }

  /** The MQTT message the platform got with this body (bounded wait). */
  async function platformGot(body: string): Promise<Received> {
    const find = (): Received | undefined =>
      platform.messages.find((m) => m.payload.toString('utf8') === body);
    await eventually(() => find() !== undefined, `the platform to get ${body}`);
    return find()!;
  }

  /** The trace id and parent span id of the `traceparent` user property of a message. */
  function mqttTraceparent(m: Received): { traceId: string; parentId: string; sampled: boolean } {
    const value = m.userProperties?.traceparent;
    assert.equal(typeof value, 'string', `user properties: ${JSON.stringify(m.userProperties)}`);
    const tp = parseTraceparent(value as string);
    assert.ok(tp !== undefined, `malformed traceparent ${String(value)}`);
    return tp;
  }

  it('handshake datagrams: a root span each, dtls.handshake children, key lookup events, trace ids in the log', async () => {
    // the device handshake happened in before(); its datagrams come from the device's port,
    // which the first datagram span with this device's key tells
    const body = measurepointBody('hs-1');
    const post = await postJson(device, mpTopic, body);
    assert.equal(codeOf(post), '2.04');
    const { root } = await requestTrace(
      mqttTraceparent(await platformGot(body)).traceId,
      () => true,
      'the hs-1 trace',
    );
    const peerPort = root.attributes['network.peer.port'];
    assert.equal(typeof peerPort, 'number');
    await exported(
      (all) =>
        all.some(
          (s) =>
            s.name === 'dtls.handshake' && s.attributes['dtls.handshake.outcome'] === 'established',
        ),
      'the handshake span that established the association',
    );
    const roots = spans().filter(
      (s) =>
        s.name === DATAGRAM &&
        s.parentSpanId === undefined &&
        s.attributes['network.peer.port'] === peerPort &&
        childrenOf(spans(), s).some((c) => c.name === 'dtls.handshake'),
    );
    assert.ok(roots.length >= 2, `handshake datagrams traced: ${describeSpans(roots)}`);
    for (const r of roots) {
      assert.equal(r.kind, OtlpKind.SERVER);
      assert.equal(r.attributes['network.transport'], 'udp');
      assert.equal(r.attributes['network.peer.address'], '127.0.0.1');
      assert.equal(r.attributes['server.port'], gw.port);
      assert.equal(typeof r.attributes['coap_edge.datagram.size'], 'number');
      // no association yet: the device key is not known when the datagram span starts
      assert.equal(r.attributes['coap_edge.device_key'], undefined);
    }
    const handshakeSpans = roots.flatMap((r) =>
      childrenOf(spans(), r).filter((c) => c.name === 'dtls.handshake'),
    );
    const outcomes = handshakeSpans.map((s) => attrText(s.attributes['dtls.handshake.outcome']));
    assert.ok(outcomes.includes('hello_verify'), `outcomes: ${outcomes.join(', ')}`);
    assert.ok(outcomes.includes('established'), `outcomes: ${outcomes.join(', ')}`);
    for (const s of handshakeSpans) {
      assert.equal(typeof s.attributes['dtls.epoch'], 'number');
      assert.equal(typeof s.attributes['dtls.content_type'], 'number');
    }
    // the key lookup (here the devices file) shows as events with layer and outcome on the
    // handshake step that needed the key (or on an auth.psk_lookup span under it)
    const lookupSpans = handshakeSpans.flatMap((s) => [s, ...childrenOf(spans(), s)]);
    const pairs = keyLookups(lookupSpans);
    assert.ok(pairs.length > 0, `key_lookup events on ${describeSpans(lookupSpans)}`);
    assert.ok(pairs.includes('file:hit'), `lookups: ${pairs.join(', ')}`);
    // the "association established" line carries the trace and span of that handshake step
    const established = handshakeSpans.find(
      (s) => s.attributes['dtls.handshake.outcome'] === 'established',
    );
    assert.ok(established !== undefined);
    const line = gw
      .logText()
      .split('\n')
      .filter((l) => l.includes('"association established"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.identity === `${dev.pk},${dev.dk},2,3600`);
    assert.ok(line !== undefined, gw.logText());
    assert.equal(line.trace_id, established.traceId);
    assert.equal(line.span_id, established.spanId);
  });

  it('measurepoint post: datagram → dtls.decrypt + coap.exchange → mqtt.publish + mqtt.reply_wait, traceparent in the MQTT 5 user properties', async () => {
    const body = measurepointBody('mp-1');
    const res = await postJson(device, mpTopic, body);
    assert.equal(codeOf(res), '2.04');
    assert.ok(res.payload.toString('utf8').includes(replyMarker));
    // the platform got the trace context of the publish span as an MQTT 5 user property
    const tp = mqttTraceparent(await platformGot(body));
    const { root, exchange, trace } = await requestTrace(
      tp.traceId,
      (t) =>
        t.some((s) => s.name === 'mqtt.reply_wait') && t.some((s) => s.name === 'mqtt.publish'),
      'the mp-1 trace',
    );
    const msg = [
      `trace: ${describeSpans(trace)}`,
      `all: ${describeSpans(spans().slice(-30))}`,
    ].join('\n');

    // root: the datagram, with the peer, our port and the device (association known)
    assert.equal(root.name, DATAGRAM, msg);
    assert.equal(root.kind, OtlpKind.SERVER);
    assert.equal(root.attributes['network.transport'], 'udp');
    assert.equal(root.attributes['network.peer.address'], '127.0.0.1');
    assert.equal(typeof root.attributes['network.peer.port'], 'number');
    assert.equal(root.attributes['server.port'], gw.port);
    assert.equal(root.attributes['coap_edge.device_key'], dev.dk);
    assert.equal(root.attributes['coap_edge.product_key'], dev.pk);
    assert.equal(root.resource['service.name'], 'coap-edge-test');
    assert.equal(root.resource['service.version'], '0.0.0-test');
    assert.equal(root.resource['k8s.pod.name'], 'coap-edge-test-0');
    assert.equal(root.resource['k8s.namespace.name'], 'telemetry');
    assert.equal(root.scope, 'coap-edge');

    // children of the datagram: the record decryption and the CoAP exchange
    const decrypt = onlyChild(trace, root, 'dtls.decrypt');
    assert.equal(decrypt.attributes['dtls.epoch'], 1);
    assert.equal(typeof decrypt.attributes['dtls.record.sequence'], 'number');
    assert.notEqual(decrypt.status.code, OtlpStatus.ERROR);
    assert.equal(exchange.parentSpanId, root.spanId, msg);
    assert.equal(exchange.kind, OtlpKind.SERVER);
    const a = exchange.attributes;
    assert.equal(a['coap.type'], 'CON');
    assert.equal(a['coap.method'], 'POST');
    assert.equal(typeof a['coap.message_id'], 'number');
    assert.ok(Number(a['coap.message_id']) >= 0 && Number(a['coap.message_id']) <= 0xffff);
    assert.equal(a['coap.token_length'], 4);
    assert.equal(a['coap.duplicate'], false);
    assert.equal(a['coap.request.body.size'], Buffer.byteLength(body));
    assert.equal(a['coap.response_code'], '2.04');
    assert.equal(a['coap_edge.topic_class'], 'uplink');
    assert.equal(a['coap_edge.device_key'], dev.dk);
    assert.equal(a['coap_edge.product_key'], dev.pk);
    assert.notEqual(exchange.status.code, OtlpStatus.ERROR);

    // children of the exchange: the publish (QoS 1, to the PUBACK) and the reply wait
    const publish = onlyChild(trace, exchange, 'mqtt.publish');
    assert.equal(publish.kind, OtlpKind.PRODUCER);
    assert.equal(publish.attributes['messaging.system'], 'mqtt');
    assert.equal(publish.attributes['messaging.destination.name'], mpTopic);
    assert.equal(publish.attributes['messaging.operation.type'], 'send');
    assert.equal(publish.attributes['messaging.mqtt.qos'], 1);
    assert.equal(publish.attributes['messaging.message.body.size'], Buffer.byteLength(body));
    const wait = onlyChild(trace, exchange, 'mqtt.reply_wait');
    assert.equal(wait.attributes['messaging.system'], 'mqtt');
    assert.equal(wait.attributes['messaging.destination.name'], `${mpTopic}_reply`);
    assert.equal(wait.attributes['messaging.operation.type'], 'receive');
    assert.notEqual(wait.status.code, OtlpStatus.ERROR);
    // (start times have millisecond resolution: the SDK takes them from Date.now())
    const ms = 1_000_000n;
    assert.ok(wait.startNs + 2n * ms >= publish.endNs, 'the wait starts after the PUBACK');
    assert.ok(exchange.endNs + 2n * ms >= wait.endNs, 'the exchange ends with the answer');

    // the traceparent names the publish span, in the device request's trace
    assert.equal(tp.parentId, publish.spanId);
    assert.equal(tp.sampled, true);

    // this reply had no trace context: nothing in another trace links to this wait
    assert.ok(
      !spans().some((s) => s.links.some((l) => l.spanId === wait.spanId)),
      'no mqtt.reply span for a reply without traceparent',
    );
  });

  it('a duplicate CON request gets its own coap.exchange span with coap.duplicate true (answer resent from the cache)', async () => {
    // a request the router refuses at once (another device's topic: 4.03), sent twice with
    // one message ID in two DTLS records, as a device whose ACK was lost retransmits it
    const messageId = randomBytes(2).readUInt16BE(0);
    const datagram = encode({
      type: CON,
      code: Code.POST,
      messageId,
      token: randomBytes(4),
      options: ['topic', 'sys', uid('otherPK'), 'dk', 'thing', 'measurepoint', 'post'].map(
        (seg) => ({ number: OptionNumber.URI_PATH, value: Buffer.from(seg) }),
      ),
      payload: Buffer.from('{}'),
    });
    const answers: Buffer[] = [];
    const onMessage = (data: Buffer): void => {
      answers.push(data);
    };
    device.dtls.on('message', onMessage);
    try {
      device.dtls.send(datagram);
      await eventually(() => answers.length >= 1, 'the answer to the request');
      device.dtls.send(datagram);
      await eventually(() => answers.length >= 2, 'the cached answer to the duplicate');
    } finally {
      device.dtls.off('message', onMessage);
    }
    assert.ok(answers[1]!.equals(answers[0]!), 'the duplicate gets the same answer bytes');
    const exchanges = (): OtlpSpan[] =>
      spans().filter(
        (s) => s.name === 'coap.exchange' && s.attributes['coap.message_id'] === messageId,
      );
    await exported(() => exchanges().length >= 2, 'both exchange spans');
    const [first, dup] = [
      exchanges().filter((s) => s.attributes['coap.duplicate'] === false),
      exchanges().filter((s) => s.attributes['coap.duplicate'] === true),
    ];
    const msg = describeSpans(exchanges());
    assert.equal(first.length, 1, msg);
    assert.equal(dup.length, 1, msg);
    assert.equal(first[0]!.attributes['coap.response_code'], '4.03', msg);
    const d = dup[0]!;
    assert.equal(d.attributes['coap.duplicate.resent'], true);
    assert.equal(d.attributes['coap.type'], 'CON');
    assert.equal(d.attributes['coap.method'], 'POST');
    assert.equal(d.attributes['coap_edge.device_key'], dev.dk);
    assert.notEqual(d.traceId, first[0]!.traceId, 'each datagram is its own trace');
    const root = spans().find((s) => s.spanId === d.parentSpanId);
    assert.equal(root?.name, DATAGRAM, msg);
  });

  it("a reply carrying the platform's traceparent continues the platform's trace (mqtt.reply linked to mqtt.reply_wait)", async () => {
    const body = measurepointBody('tp-1');
    const res = await postJson(device, mpTopic, body);
    assert.equal(codeOf(res), '2.04');
    const { trace, exchange } = await requestTrace(
      mqttTraceparent(await platformGot(body)).traceId,
      (t) => t.some((s) => s.name === 'mqtt.reply_wait'),
      'the tp-1 trace',
    );
    const wait = onlyChild(trace, exchange, 'mqtt.reply_wait');
    await exported(
      (all) => all.some((s) => s.name === 'mqtt.reply' && s.traceId === platformTrace.traceId),
      "the mqtt.reply span in the platform's trace",
    );
    const reply = spans().find(
      (s) => s.name === 'mqtt.reply' && s.traceId === platformTrace.traceId,
    );
    assert.ok(reply !== undefined);
    assert.equal(reply.parentSpanId, platformTrace.spanId);
    assert.equal(reply.kind, OtlpKind.CONSUMER);
    assert.equal(reply.attributes['messaging.system'], 'mqtt');
    assert.equal(reply.attributes['messaging.destination.name'], `${mpTopic}_reply`);
    assert.deepEqual(
      reply.links.map((l) => [l.traceId, l.spanId]),
      [[wait.traceId, wait.spanId]],
    );
  });

  it("a command sent with the platform's traceparent continues that trace when it is delivered (command.deliver)", async () => {
    const commandTrace = platformTraceparent();
    const commandTopic = `/sys/${dev.pk}/${dev.dk}/thing/service/reboot`;
    await platform.client.publishAsync(
      commandTopic,
      JSON.stringify({
        id: 'cmd-tr-1',
        version: '1.0',
        method: 'thing.service.reboot',
        params: {},
      }),
      { qos: 1, properties: { userProperties: { traceparent: commandTrace.tp } } },
    );
    // the next answer that carries the command (the intake may take a moment to queue it)
    let delivered = false;
    for (let i = 0; i < 40 && !delivered; i++) {
      const res = await postJson(device, mpTopic, measurepointBody(`cmd-${i}`));
      delivered = res.options.some((o) => o.number === 2100);
      if (!delivered) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(delivered, 'the command rode on an answer (option 2100)');
    await exported(
      (all) => all.some((s) => s.name === 'command.deliver' && s.traceId === commandTrace.traceId),
      "the command.deliver span in the platform's trace",
    );
    const deliver = spans().find(
      (s) => s.name === 'command.deliver' && s.traceId === commandTrace.traceId,
    );
    assert.ok(deliver !== undefined);
    assert.equal(deliver.parentSpanId, commandTrace.spanId);
    assert.equal(deliver.kind, OtlpKind.CONSUMER);
    assert.equal(deliver.attributes['messaging.destination.name'], commandTopic);
    // linked to the coap.exchange of the request whose answer carried it
    assert.equal(deliver.links.length, 1);
    const linkedId = deliver.links[0]?.spanId;
    await exported((all) => all.some((s) => s.spanId === linkedId), 'the linked exchange span');
    assert.equal(spans().find((s) => s.spanId === linkedId)?.name, 'coap.exchange');
    // acknowledge it so later tests see no command
    const ack = await postJson(
      device,
      `${commandTopic}_reply`,
      JSON.stringify({ id: 'cmd-tr-1', code: 200, data: {} }),
    );
    assert.equal(codeOf(ack), '2.04');
  });

  it('HTTP route: http.request under coap.exchange, traceparent header naming it', async () => {
    const before = http.requests.length;
    const body = JSON.stringify({
      id: 'ev-1',
      version: '1.0',
      method: 'thing.event.alarm.post',
      params: { value: { level: 3, note: httpMarker } },
    });
    bodies.push(body);
    const res = await postJson(device, eventTopic, body);
    assert.equal(codeOf(res), '2.04');
    const got = http.requests.slice(before);
    assert.equal(got.length, 1);
    const req = got[0]!;
    assert.equal(req.url, `/events/${dev.pk}/${dev.dk}`);
    const header = req.headers.traceparent;
    assert.equal(typeof header, 'string', JSON.stringify(req.headers));
    const tp = parseTraceparent(header as string);
    assert.ok(tp !== undefined, `malformed traceparent ${String(header)}`);
    const { root, exchange, trace } = await requestTrace(
      tp.traceId,
      (t) => t.some((s) => s.name === 'http.request'),
      'the ev-1 trace',
    );
    assert.equal(root.name, DATAGRAM);
    assert.equal(root.attributes['coap_edge.device_key'], dev.dk);
    assert.equal(exchange.attributes['coap.response_code'], '2.04');
    const call = onlyChild(trace, exchange, 'http.request');
    assert.equal(tp.parentId, call.spanId, 'the server continues from the client span');
    assert.equal(tp.sampled, true);
    assert.equal(call.kind, OtlpKind.CLIENT);
    assert.equal(call.attributes['http.request.method'], 'POST');
    assert.equal(call.attributes['http.response.status_code'], 200);
    assert.equal(call.attributes['server.address'], http.origin);
    assert.equal(call.attributes['coap_edge.route'], 'events');
    assert.notEqual(call.status.code, OtlpStatus.ERROR);
    assert.ok(!trace.some((s) => s.name === 'mqtt.publish'), 'the HTTP route does not publish');
  });

  it('a malformed datagram is a span event (dtls.dropped) on its datagram span; a flood gets a bounded number of spans', async () => {
    udp = createSocket('udp4');
    await new Promise<void>((resolve) => udp!.bind(0, '127.0.0.1', resolve));
    const port = udp.address().port;
    // one garbage datagram: not a DTLS record
    const sent = (buf: Buffer): Promise<void> =>
      new Promise((resolve, reject) =>
        udp!.send(buf, gw.port, '127.0.0.1', (err) => (err ? reject(err) : resolve())),
      );
    const malformed = (): number => gw.gateway.dtls.stats.drops['malformed-record'];
    const malformedBefore = malformed();
    await sent(Buffer.from('definitely not DTLS'));
    await eventually(() => malformed() > malformedBefore, 'the garbage datagram to be read');
    await exported(
      (all) => all.some((s) => s.name === DATAGRAM && s.attributes['network.peer.port'] === port),
      'the span of the garbage datagram',
    );
    const [one] = spans().filter(
      (s) => s.name === DATAGRAM && s.attributes['network.peer.port'] === port,
    );
    assert.ok(one !== undefined);
    assert.deepEqual(
      one.events.map((e) => [e.name, e.attributes['dtls.drop_reason']]),
      [['dtls.dropped', 'malformed-record']],
    );
    assert.deepEqual(childrenOf(spans(), one), []);
    // a flood from another unknown peer: spans within the anonymous budget (20 per second),
    // the rest only counted
    const flood = createSocket('udp4');
    try {
      await new Promise<void>((resolve) => flood.bind(0, '127.0.0.1', resolve));
      const floodPort = flood.address().port;
      const drops = (): number => gw.gateway.dtls.stats.drops['malformed-record'];
      const dropsBefore = drops();
      const started = Date.now();
      // in bursts of 20, so the kernel's receive buffer does not overflow
      for (let i = 0; i < 300; i++) {
        flood.send(Buffer.from([0xff, i & 0xff, 0, 1]), gw.port, '127.0.0.1');
        if (i % 20 === 19) await sleep(2);
      }
      await eventually(() => drops() >= dropsBefore + 300, 'the flood to be counted');
      const seconds = Math.ceil((Date.now() - started) / 1000) + 1;
      const count = (): number =>
        spans().filter(
          (s) => s.name === DATAGRAM && s.attributes['network.peer.port'] === floodPort,
        ).length;
      // every span of the flood has ended (the drops are counted): export them all now
      await flushSpans();
      assert.ok(count() > 0, 'spans of the flood');
      assert.ok(
        count() <= 20 * seconds,
        `${count()} spans for 300 garbage datagrams in ${seconds} s`,
      );
      for (const s of spans().filter((x) => x.attributes['network.peer.port'] === floodPort)) {
        assert.equal(s.name, DATAGRAM);
        assert.deepEqual(
          s.events.map((e) => e.attributes['dtls.drop_reason']),
          ['malformed-record'],
        );
      }
    } finally {
      flood.close();
    }
  });

  it('no span carries the device secret, its PSK, a payload or an answer body', async () => {
    // make sure everything ended and was exported
    await exported((all) => all.some((s) => s.name === 'http.request'), 'all spans exported');
    const psk = derivePsk(dev.secret);
    const forbidden = [
      dev.secret,
      psk.toString('hex'),
      psk.toString('hex').toUpperCase(),
      psk.toString('base64'),
      mpMarker,
      replyMarker,
      httpMarker,
      answerMarker,
      ...bodies,
    ];
    const all = spans();
    assert.ok(all.length > 10, `${all.length} spans`);
    for (const s of all) {
      for (const text of exposedTexts(s)) {
        for (const f of forbidden) {
          assert.ok(
            !text.includes(f),
            `span ${s.name} exposes ${JSON.stringify(f)} in ${JSON.stringify(text)}`,
          );
        }
      }
    }
    // and the exporter spoke OTLP/HTTP in protobuf (the specification's default protocol),
    // nothing was refused
    assert.deepEqual(receiver.rejected, []);
    assert.ok(receiver.requests.length > 0);
    for (const r of receiver.requests) {
      assert.equal(r.path, '/v1/traces');
      assert.match(r.contentType ?? '', /^application\/x-protobuf/);
    }
  });

  function measurepointBody(id: string): string {
    const body = JSON.stringify({
      id,
      version: '1.0',
      method: 'thing.measurepoint.post',
      params: { measurepoints: { t: 21.5, note: mpMarker } },
    });
    bodies.push(body);
    return body;
  }
});

describe('telemetry: a key lookup that waits (registry)', () => {
  const dev: DeviceSpec = { pk: uid('trrPK'), dk: uid('trrDK'), secret: `trr-${uid('sec')}` };
  let registry: E2eRegistry;
  let gw: E2eGateway;
  let device: CoapDtlsClient | undefined;

  before(async () => {
    // tracing is on already (the describe above set it up for this process)
    registry = await E2eRegistry.start();
    registry.addDevice(dev.pk, dev.dk, dev.secret);
    gw = await startE2eGateway(
      { registryUrl: registry.url, registryToken: registry.token },
      {},
      tracing?.tracing,
    );
  });

  after(async () => {
    await device?.close();
    await gw?.close();
    await registry?.close();
  });

  it('the layers of an asynchronous lookup (memory miss, registry hit) show on an open span of the handshake', async () => {
    device = await connectAs(gw.port, dev);
    const res = await postJson(device, measurepointTopic(dev.pk, dev.dk), '{"id":"1"}');
    // no broker configured here: 5.03, the request only proves the association
    assert.equal(codeOf(res), '5.03');
    // the handshake datagram that carried the identity: its spans and their events
    await flushSpans();
    const roots = receiverSpans().filter(
      (s) => s.name === DATAGRAM && s.attributes['server.port'] === gw.port,
    );
    const pairs = keyLookups(
      roots.flatMap((r) => receiverSpans().filter((s) => s.traceId === r.traceId)),
    );
    assert.ok(pairs.includes('memory:miss'), `lookups: ${pairs.join(', ')}`);
    assert.ok(pairs.includes('registry:hit'), `lookups: ${pairs.join(', ')}`);
  });
});

// the next file of a shared process registers its own (scripts/test-groups.mjs)
after(resetOpenTelemetryGlobals);
