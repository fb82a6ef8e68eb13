/**
 * What a device may do, through the whole chain (DTLS, CoAP, router,
 * MQTT). A secureMode 3 session may only activate (4.03 for telemetry); device A may not use
 * device B's topics (4.03); a body that is not EnOS JSON on a JSON topic is 4.00; unknown
 * paths 4.04; GET on an uplink 4.05; none of these reaches the broker. Raw
 * `thing/model/up_raw` bytes pass through untouched both ways. Shared Redis 6379 and
 * Mosquitto 1883.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { Code, ContentFormat, OptionNumber, formatCode } from '../../src/coap/constants.js';
import { decodeUint } from '../../src/coap/options.js';
import type { CoapDtlsClient, CoapResponse } from '../../src/tools/coap-client.js';
import {
  E2eRegistry,
  MISSING_TOOLS,
  SHARED_MQTT_URL,
  SHARED_REDIS_URL,
  activationPath,
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
  upRawTopic,
  type E2eGateway,
  type PlatformStandIn,
  type Recorder,
} from '../helpers/e2e.js';

/** Bytes that are neither UTF-8 nor JSON, with a NUL and a 0xFF. */
const RAW_UP = Buffer.from([0x00, 0xff, 0xfe, 0x7b, 0x22, 0x0a, 0xc3, 0x28, 0x80, 0x00, 0x01]);

/** The stand-in's raw answer: the request bytes reversed, after a 0x00 0xA5 marker. */
function rawReply(req: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x00, 0xa5]), Buffer.from(req).reverse()]);
}

function contentFormatOf(r: CoapResponse): number | undefined {
  const v = r.options.find((o) => o.number === OptionNumber.CONTENT_FORMAT)?.value;
  return v === undefined ? undefined : decodeUint(v);
}

function assertCode(r: CoapResponse, code: number, what: string): void {
  assert.equal(
    formatCode(r.code),
    formatCode(code),
    `${what}: ${formatCode(r.code)} ${r.payload.toString()}`,
  );
}

describe('e2e: authorization through the whole chain', { skip: MISSING_TOOLS }, () => {
  const pk = uid('azPK');
  const dkA = uid('devA');
  const dkB = uid('devB');
  const secretA = cliSafeSecret('A');
  const productSecret = cliSafeSecret('P');
  const redisPrefix = uid('e2e-az-');
  let registry: E2eRegistry;
  let gw: E2eGateway;
  let recorder: Recorder;
  let platform: PlatformStandIn;
  let redis: Redis;
  const devices: CoapDtlsClient[] = [];

  before(async () => {
    registry = await E2eRegistry.start();
    registry.addProduct(pk, productSecret, true);
    registry.addDevice(pk, dkA, secretA);
    registry.addDevice(pk, dkB, cliSafeSecret('B'));
    gw = await startE2eGateway({
      mqttUrl: SHARED_MQTT_URL,
      redisUrl: SHARED_REDIS_URL,
      redisPrefix,
      registryUrl: registry.url,
      registryToken: registry.token,
    });
    recorder = await startRecorder(SHARED_MQTT_URL, `/sys/${pk}/#`);
    platform = await startPlatform(
      SHARED_MQTT_URL,
      [measurepointTopic(pk, dkA), upRawTopic(pk, dkA)],
      { reply: (topic, payload) => (topic.endsWith('/up_raw') ? rawReply(payload) : undefined) },
    );
    redis = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: 1 });
  });

  after(async () => {
    await Promise.all(devices.map((d) => d.close()));
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

  async function device(o: { dk: string; mode?: 2 | 3; secret: string }): Promise<CoapDtlsClient> {
    const d = await connectDevice(gw.port, { pk, ...o });
    devices.push(d);
    return d;
  }

  const post = (d: CoapDtlsClient, path: string, payload: Buffer | string, cf = 50) =>
    d.request({
      method: 'POST',
      path,
      payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
      contentFormat: cf,
      timeoutMs: 10_000,
    });

  it('a secureMode 3 session may activate, and nothing else (4.03)', async () => {
    const dk = uid('m3');
    const d = await device({ dk, mode: 3, secret: productSecret });
    const telemetry = await post(d, coapPath(measurepointTopic(pk, dk)), measurepoint('m3-1'));
    assertCode(telemetry, Code.FORBIDDEN, 'telemetry on a secureMode 3 session');
    const raw = await post(d, coapPath(upRawTopic(pk, dk)), RAW_UP, ContentFormat.OCTET_STREAM);
    assertCode(raw, Code.FORBIDDEN, 'raw uplink on a secureMode 3 session');
    // the same session may activate (and the device may then do its telemetry in mode 2)
    const act = await d.request({ method: 'GET', path: activationPath(pk, dk), timeoutMs: 10_000 });
    assertCode(act, Code.CONTENT, 'activation on the secureMode 3 session');
  });

  it("device A posting on device B's topic gets 4.03", async () => {
    const a = await device({ dk: dkA, secret: secretA });
    const r = await post(a, coapPath(measurepointTopic(pk, dkB)), measurepoint('a-as-b'));
    assertCode(r, Code.FORBIDDEN, "A on B's measurepoint topic");
    const other = await post(
      a,
      coapPath(measurepointTopic(uid('otherPK'), dkA)),
      measurepoint('x'),
    );
    assertCode(other, Code.FORBIDDEN, "A on another product's topic");
    const raw = await post(a, coapPath(upRawTopic(pk, dkB)), RAW_UP, ContentFormat.OCTET_STREAM);
    assertCode(raw, Code.FORBIDDEN, "A on B's raw topic");
  });

  it('a body that is not an EnOS JSON request on a JSON topic gets 4.00', async () => {
    const a = await device({ dk: dkA, secret: secretA });
    const path = coapPath(measurepointTopic(pk, dkA));
    for (const body of [
      '{"id":"1","version":',
      'not json at all',
      '[1,2,3]',
      '{"version":"1.0"}',
    ]) {
      assertCode(await post(a, path, body), Code.BAD_REQUEST, `body ${body}`);
    }
    assertCode(await post(a, path, RAW_UP), Code.BAD_REQUEST, 'binary body');
  });

  it('unknown paths get 4.04, GET on an uplink topic 4.05', async () => {
    const a = await device({ dk: dkA, secret: secretA });
    for (const path of [
      '/nothing',
      `/topic/sys/${pk}/${dkA}/thing/no/such/topic`,
      `/topic/sys/${pk}/${dkA}/thing/measurepoint/post_reply`,
      `/sys/${pk}/${dkA}/thing/measurepoint/post`,
    ]) {
      const r = await a.request({ method: 'POST', path, payload: Buffer.from(measurepoint(1)) });
      assertCode(r, Code.NOT_FOUND, path);
    }
    const get = await a.request({ method: 'GET', path: coapPath(measurepointTopic(pk, dkA)) });
    assertCode(get, Code.METHOD_NOT_ALLOWED, 'GET on the measurepoint topic');
    const getRaw = await a.request({ method: 'GET', path: coapPath(upRawTopic(pk, dkA)) });
    assertCode(getRaw, Code.METHOD_NOT_ALLOWED, 'GET on up_raw');
  });

  it('raw up_raw bytes pass through untouched; the raw up_raw_reply comes back', async () => {
    const a = await device({ dk: dkA, secret: secretA });
    const r = await post(a, coapPath(upRawTopic(pk, dkA)), RAW_UP, ContentFormat.OCTET_STREAM);
    assertCode(r, Code.CHANGED, 'raw uplink');
    assert.deepEqual(r.payload, rawReply(RAW_UP), 'the device got the raw reply bytes');
    assert.equal(contentFormatOf(r), ContentFormat.OCTET_STREAM);

    const topic = upRawTopic(pk, dkA);
    await eventually(
      () => recorder.messages.some((m) => m.topic === `${topic}_reply`),
      'the subscriber to see the raw reply',
    );
    const up = recorder.messages.filter((m) => m.topic === topic);
    assert.equal(up.length, 1);
    assert.deepEqual(up[0]?.payload, RAW_UP, 'the subscriber saw the identical bytes');
    assert.equal(platform.replies(), 1);
  });

  it('nothing refused above reached the broker', () => {
    // the refused requests came before the raw exchange, whose uplink the subscriber has
    // seen: on the gateway's one MQTT connection a stray publish would have come before it
    const topics = recorder.messages.map((m) => m.topic);
    assert.deepEqual(topics, [upRawTopic(pk, dkA), `${upRawTopic(pk, dkA)}_reply`]);
  });

  it('the gateway logged no errors', () => {
    for (const g of [gw]) assert.deepEqual(g.errorLines(), []);
  });
});
