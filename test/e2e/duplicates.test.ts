/**
 * A CON request sent again with the same message ID over one DTLS
 * association (a device retransmitting) is forwarded to MQTT once; every copy is answered
 * with the same response. Shared Redis 6379 and Mosquitto 1883.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { decode, encode } from '../../src/coap/codec.js';
import { ACK, CON, Code, ContentFormat, formatCode } from '../../src/coap/constants.js';
import type { CoapDtlsClient } from '../../src/tools/coap-client.js';
import {
  E2eRegistry,
  MISSING_TOOLS,
  SHARED_MQTT_URL,
  SHARED_REDIS_URL,
  cliSafeSecret,
  coapPath,
  connectDevice,
  eventually,
  measurepoint,
  measurepointTopic,
  startE2eGateway,
  startPlatform,
  startRecorder,
  uid,
  type E2eGateway,
  type PlatformStandIn,
  type Recorder,
} from '../helpers/e2e.js';
import { coapRequest } from '../helpers/gateway.js';

describe('e2e: a duplicate CON is forwarded once', { skip: MISSING_TOOLS }, () => {
  const pk = uid('dupPK');
  const dk = uid('dupDK');
  const secret = cliSafeSecret('dup');
  const redisPrefix = uid('e2e-dup-');
  const topic = measurepointTopic(pk, dk);
  let registry: E2eRegistry;
  let gw: E2eGateway;
  let recorder: Recorder;
  let platform: PlatformStandIn;
  let redis: Redis;
  let device: CoapDtlsClient | undefined;

  before(async () => {
    registry = await E2eRegistry.start();
    registry.addDevice(pk, dk, secret);
    gw = await startE2eGateway({
      mqttUrl: SHARED_MQTT_URL,
      redisUrl: SHARED_REDIS_URL,
      redisPrefix,
      registryUrl: registry.url,
      registryToken: registry.token,
      // always piggybacked, so every copy is answered with the full response (with the
      // default 500 ms a slow machine may send an empty ACK first; duplicates then get that)
      ackTimeoutMs: -1,
    });
    recorder = await startRecorder(SHARED_MQTT_URL, topic);
    // a platform that takes its time, so the second copy arrives while the first is handled
    platform = await startPlatform(SHARED_MQTT_URL, topic, { delayMs: 200 });
    redis = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: 1 });
  });

  after(async () => {
    await device?.close();
    await platform?.close();
    await recorder?.close();
    await gw?.close();
    await registry?.close();
    if (redis !== undefined) {
      const keys = await redis.keys(`${redisPrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    }
  });

  it('one CON sent four times (a copy while in progress): one publish, identical answers', async () => {
    const d = await connectDevice(gw.port, { pk, dk, secret });
    device = d;
    const answers: Buffer[] = [];
    d.dtls.on('message', (data) => answers.push(Buffer.from(data)));
    const messageId = 0x4d2e;
    const datagram = coapRequest({
      code: Code.POST,
      path: coapPath(topic),
      messageId,
      token: Buffer.from('e2ed0001', 'hex'),
      payload: Buffer.from(measurepoint('dup-1')),
      contentFormat: ContentFormat.JSON,
    });
    const dupsBefore = gw.gateway.coap.stats.duplicates;

    d.dtls.send(datagram);
    d.dtls.send(datagram); // while the first is being handled (publish + reply)
    await eventually(() => answers.length >= 1, 'the first answer', 10_000);
    d.dtls.send(datagram); // after it was answered
    await eventually(() => answers.length >= 2, 'the answer to the third copy', 10_000);
    d.dtls.send(datagram);
    await eventually(() => answers.length >= 3, 'the answer to the fourth copy', 10_000);
    // a new message ID with the same body is a new request (the device's next message); on
    // the same flow its answer and its publish come after anything extra the copies caused
    const next = await d.request({
      method: 'POST',
      path: coapPath(topic),
      payload: Buffer.from(measurepoint('dup-1')),
      timeoutMs: 10_000,
    });
    assert.equal(formatCode(next.code), formatCode(Code.CHANGED));

    const first = decode(answers[0] ?? Buffer.alloc(0));
    assert.equal(first.type, ACK);
    assert.equal(first.messageId, messageId);
    assert.equal(first.token.toString('hex'), 'e2ed0001');
    assert.equal(formatCode(first.code), formatCode(Code.CHANGED), first.payload.toString());
    assert.deepEqual(JSON.parse(first.payload.toString()), {
      id: 'dup-1',
      code: 200,
      data: { by: 'e2e-platform' },
    });
    // the copy that came while the first was in progress is dropped (its answer is the
    // first's); the later copies get the cached response
    // three answers to the copies, then the one to the next request
    assert.equal(answers.length, 4, `${answers.length} answers`);
    const copies = answers.slice(0, 3);
    for (const a of copies) assert.deepEqual(a, answers[0], 'every answer is the same datagram');
    assert.notEqual(decode(answers[0] ?? Buffer.alloc(0)).type, CON);
    assert.notEqual(decode(answers[3] ?? Buffer.alloc(0)).messageId, messageId);

    assert.equal(gw.gateway.coap.stats.duplicates - dupsBefore, 3, 'three duplicates counted');
    // the next request was answered after its PUBACK: the copies published nothing
    assert.equal(gw.gateway.mqtt?.stats().publishes.ok, 2, 'one publish each');
    await eventually(() => recorder.messages.length >= 2, 'the new request on MQTT');
    assert.equal(recorder.messages.length, 2, 'the subscriber saw the request exactly once');
    assert.equal(recorder.messages[0]?.payload.toString(), measurepoint('dup-1'));
    assert.equal(platform.messages.length, 2);
  });

  it('with separate responses (ackTimeoutMs 0): copies get the empty ACK, one publish', async () => {
    const sep = await startE2eGateway({
      mqttUrl: SHARED_MQTT_URL,
      redisUrl: SHARED_REDIS_URL,
      redisPrefix,
      registryUrl: registry.url,
      registryToken: registry.token,
      ackTimeoutMs: 0,
    });
    try {
      const d = await connectDevice(sep.port, { pk, dk, secret });
      try {
        const got: Buffer[] = [];
        d.dtls.on('message', (data) => {
          const b = Buffer.from(data);
          got.push(b);
          const m = decode(b);
          // acknowledge the separate CON response, as a device does
          if (m.type === CON) d.dtls.send(emptyAck(m.messageId));
        });
        const messageId = 0x1e2e;
        const datagram = coapRequest({
          code: Code.POST,
          path: coapPath(topic),
          messageId,
          token: Buffer.from('e2ed0002', 'hex'),
          payload: Buffer.from(measurepoint('dup-sep')),
          contentFormat: ContentFormat.JSON,
        });
        const before = recorder.messages.length;
        d.dtls.send(datagram);
        d.dtls.send(datagram);
        const isResponse = (b: Buffer): boolean => decode(b).type === CON;
        await eventually(() => got.some(isResponse), 'the separate response', 10_000);
        d.dtls.send(datagram);
        await eventually(() => got.length >= 4, 'the answers to the copies', 10_000);
        // the device's next request, on the same flow: its answers and its publish come after
        // anything extra the copies caused
        const next = await d.request({
          method: 'POST',
          path: coapPath(topic),
          payload: Buffer.from(measurepoint('dup-sep-next')),
          timeoutMs: 10_000,
        });
        assert.equal(next.separate, true);

        const ours = got.filter((b) => {
          const m = decode(b);
          return m.messageId === messageId || m.token.toString('hex') === 'e2ed0002';
        });
        const decoded = ours.map((b) => decode(b));
        const responses = decoded.filter((m) => m.type === CON);
        const acks = ours.filter((b) => decode(b).type === ACK);
        assert.equal(responses.length, 1, 'one separate response (acknowledged at once)');
        assert.equal(formatCode(responses[0]?.code ?? 0), formatCode(Code.CHANGED));
        assert.equal(responses[0]?.token.toString('hex'), 'e2ed0002');
        assert.equal(JSON.parse(responses[0]?.payload.toString() ?? '').id, 'dup-sep');
        assert.equal(acks.length, 3, 'the request and both copies got an empty ACK');
        for (const a of acks) {
          assert.deepEqual(a, acks[0], 'identical empty ACKs');
          assert.equal(decode(a).code, Code.EMPTY);
          assert.equal(decode(a).messageId, messageId);
        }
        const bodies = (): string[] =>
          recorder.messages.slice(before).map((m) => m.payload.toString());
        await eventually(
          () => bodies().includes(measurepoint('dup-sep-next')),
          'the next request published',
        );
        assert.deepEqual(
          bodies(),
          [measurepoint('dup-sep'), measurepoint('dup-sep-next')],
          'published exactly once',
        );
        assert.deepEqual(sep.errorLines(), []);
      } finally {
        await d.close();
      }
    } finally {
      await sep.close();
    }
  });

  it('the gateway logged no errors', () => {
    for (const g of [gw]) assert.deepEqual(g.errorLines(), []);
  });
});

function emptyAck(messageId: number): Buffer {
  return encode({
    type: ACK,
    code: Code.EMPTY,
    messageId,
    token: Buffer.alloc(0),
    options: [],
    payload: Buffer.alloc(0),
  });
}
