/**
 * End to end: an HTTP route. A device's measurepoint goes to a real in-process HTTP
 * server (route `/sys/{pk}/{dk}/thing/measurepoint/post` → `POST /ingest/{pk}/{dk}` with the
 * device headers, a route header and a bearer token read from the environment); the HTTP
 * status and body become the CoAP answer (2.04 with the body, 4.00, 4.04, 4.29, 5.03 with
 * Max-Age from Retry-After, 5.04, and 5.04 when the server does not answer within the route
 * timeout); a 5 KiB answer reaches the device block-wise (our client and coap-client-openssl);
 * a topic no route matches still goes to MQTT (shared Mosquitto 1883, a platform stand-in).
 * A route with an unknown placeholder stops `coap-edge serve` with exit code 2 naming it (in
 * process: the error the binary prints as `coap-edge: <message>`, test/cli/cli.test.ts runs the
 * binary's own refusals).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ContentFormat, OptionNumber } from '../../src/coap/constants.js';
import { decodeBlock } from '../../src/coap/options.js';
import { derivePsk } from '../../src/enos/psk.js';
import type { CoapDtlsClient } from '../../src/tools/coap-client.js';
import {
  MISSING_TOOLS,
  SHARED_MQTT_URL,
  cliSafeSecret,
  coapPath,
  jsonLines,
  measurepoint,
  measurepointTopic,
  startE2eGateway,
  startPlatform,
  uid,
  type E2eGateway,
  type PlatformStandIn,
} from '../helpers/e2e.js';
import {
  HttpStandIn,
  codeOf,
  connectAs,
  contentFormatOf,
  describeAnswer,
  explainWith,
  maxAgeOf,
  optionOf,
  postJson,
  writeDevicesFile,
  startPod,
  writeYamlConfig,
  type DeviceSpec,
  type Pod,
} from '../helpers/e2e-pods.js';
import { CLI_FAIL } from '../../src/cli.js';
import { cliInProcess, describeResult } from '../helpers/cli-in-process.js';
import { killAll, runCoapClient } from '../helpers/processes.js';

const ROUTE_TIMEOUT_MS = 1_500;

/** 5 KiB of position-dependent printable text (so a lost or repeated block shows). */
function bigBody(n: number): string {
  let s = '';
  for (let i = 0; s.length < n; i++) s += `blk-${i};`;
  return s.slice(0, n);
}

describe('e2e: HTTP route with a real HTTP server', { skip: MISSING_TOOLS }, () => {
  const dev: DeviceSpec = {
    pk: uid('h4PK'),
    dk: uid('h4DK'),
    secret: cliSafeSecret('h4'),
    assetId: uid('asset-'),
  };
  const topic = measurepointTopic(dev.pk, dev.dk);
  const tokenEnv = `E2E4_HTTP_TOKEN_${randomBytes(4).toString('hex').toUpperCase()}`;
  const token = `tok-${randomBytes(12).toString('hex')}`;
  let dir: string;
  let http: HttpStandIn;
  let gw: E2eGateway;
  let device: CoapDtlsClient;
  let platform: PlatformStandIn;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-e2e-http-'));
    http = await HttpStandIn.start();
    // compileRoutes reads the token from process.env once, at Gateway.start
    process.env[tokenEnv] = token;
    gw = await startE2eGateway({
      devices: writeDevicesFile(dir, [dev]),
      mqttUrl: SHARED_MQTT_URL,
      commandShareGroup: uid('e2ehttp'),
      blockSize: 1024,
      routes: [
        {
          name: 'ingest',
          match: '/sys/{pk}/{dk}/thing/measurepoint/post',
          backend: 'http',
          url: `${http.origin}/ingest/{pk}/{dk}`,
          headers: { 'X-Tenant': 'tenant-{pk}' },
          auth: { type: 'bearer', tokenEnv },
          timeoutMs: ROUTE_TIMEOUT_MS,
        },
      ],
    });
    platform = await startPlatform(SHARED_MQTT_URL, `/sys/${dev.pk}/+/thing/event/+/post`);
    device = await connectAs(gw.port, dev);
  });

  after(async () => {
    await killAll();
    await device?.close();
    await platform?.close();
    await gw?.close();
    await http?.close();
    delete process.env[tokenEnv];
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('the server gets body, device headers, route header and bearer; 200 with a body → 2.04 with it', async () => {
    const answer = JSON.stringify({ ok: true, stored: 'h-1' });
    http.answer = () => ({
      status: 200,
      headers: { 'content-type': 'application/json' },
      body: answer,
    });
    const before = http.requests.length;
    const body = measurepoint('h-1', 20.5);
    const res = await postJson(device, topic, body);
    assert.equal(codeOf(res), '2.04', describeAnswer(res));
    assert.equal(res.payload.toString('utf8'), answer);
    assert.equal(contentFormatOf(res), ContentFormat.JSON);

    assert.equal(http.requests.length, before + 1, 'one HTTP request');
    const req = http.requests.at(-1);
    assert.ok(req !== undefined);
    assert.equal(req.method, 'POST');
    assert.equal(req.url, `/ingest/${dev.pk}/${dev.dk}`);
    assert.equal(req.body.toString('utf8'), body);
    const h = req.headers;
    assert.equal(h['x-device-product-key'], dev.pk);
    assert.equal(h['x-device-key'], dev.dk);
    assert.equal(h['x-device-asset-id'], dev.assetId);
    assert.equal(h['x-device-topic'], topic);
    assert.equal(h['content-type'], 'application/json');
    assert.equal(h['x-coap-content-format'], String(ContentFormat.JSON));
    assert.equal(h.authorization, `Bearer ${token}`);
    assert.equal(h['x-tenant'], `tenant-${dev.pk}`);
    if (h.traceparent !== undefined) {
      assert.match(String(h.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/);
    }
    assert.ok(!gw.logText().includes(token), 'the bearer token is not logged');
  });

  it('HTTP status → CoAP code: 400 4.00, 404 4.04, 429 4.29, 503+Retry-After 5.03 Max-Age, 504 5.04', async () => {
    const cases: {
      status: number;
      headers?: Record<string, string>;
      code: string;
      maxAge?: number;
    }[] = [
      { status: 400, code: '4.00' },
      { status: 404, code: '4.04' },
      { status: 429, code: '4.29' },
      { status: 429, headers: { 'retry-after': '7' }, code: '4.29', maxAge: 7 },
      { status: 503, headers: { 'retry-after': '9' }, code: '5.03', maxAge: 9 },
      { status: 504, code: '5.04' },
    ];
    for (const [i, c] of cases.entries()) {
      http.answer = () => ({
        status: c.status,
        headers: { 'content-type': 'application/json', ...c.headers },
        body: JSON.stringify({ error: `status ${c.status}` }),
      });
      const before = http.requests.length;
      const res = await postJson(device, topic, measurepoint(`h-status-${i}`));
      const what = `HTTP ${c.status} ${JSON.stringify(c.headers ?? {})}: ${describeAnswer(res)}`;
      assert.equal(http.requests.length, before + 1, what);
      assert.equal(codeOf(res), c.code, what);
      assert.equal(maxAgeOf(res), c.maxAge, what);
      assert.equal(res.payload.length, 0, `the error body is not forwarded: ${what}`);
    }
  });

  it('the server does not answer: 5.04 after the route timeout', async () => {
    http.answer = () => 'hang';
    const before = http.requests.length;
    const t0 = performance.now();
    const res = await postJson(device, topic, measurepoint('h-hang'), { timeoutMs: 20_000 });
    const ms = performance.now() - t0;
    assert.equal(codeOf(res), '5.04', describeAnswer(res));
    assert.equal(http.requests.length, before + 1);
    assert.ok(ms >= ROUTE_TIMEOUT_MS - 100, `not before the route timeout (${Math.round(ms)} ms)`);
    assert.ok(
      ms < ROUTE_TIMEOUT_MS + 3_000,
      `within the route timeout + 3 s (${Math.round(ms)} ms)`,
    );
    assert.equal(res.separate, true, 'answered as a separate response after an empty ACK');
  });

  it('a 5 KiB answer reaches the device whole, block-wise (one HTTP call)', async () => {
    const big = bigBody(5 * 1024);
    http.answer = () => ({ status: 200, headers: { 'content-type': 'text/plain' }, body: big });
    const before = http.requests.length;
    const res = await postJson(device, topic, measurepoint('h-big'));
    assert.equal(codeOf(res), '2.04', describeAnswer(res));
    assert.equal(res.payload.length, big.length);
    assert.equal(res.payload.toString('utf8'), big);
    const block2 = optionOf(res, OptionNumber.BLOCK2);
    assert.ok(block2 !== undefined, 'the last answer carried Block2');
    const last = decodeBlock(block2);
    assert.equal(last?.more, false);
    assert.equal(last?.num, 4, 'five blocks of 1024 bytes');
    assert.equal(http.requests.length, before + 1, 'the later blocks come from the cache');
  });

  it('coap-client-openssl: posts through the route and prints the whole 5 KiB answer', async () => {
    const big = bigBody(5 * 1024);
    http.answer = () => ({ status: 200, headers: { 'content-type': 'text/plain' }, body: big });
    const before = http.requests.length;
    const body = measurepoint('h-libcoap', 19);
    const r = await runCoapClient('coap-client-openssl', {
      port: gw.port,
      identity: `${dev.pk},${dev.dk},2,3600`,
      psk: derivePsk(dev.secret),
      method: 'post',
      path: coapPath(topic),
      payload: body,
      contentFormat: ContentFormat.JSON,
    });
    const out = `--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
    assert.equal(r.timedOut, false, out);
    assert.doesNotMatch(r.stderr, /^[45]\.\d\d$/m, out);
    assert.equal(r.stdout.replace(/\r?\n$/, ''), big, out);
    assert.equal(http.requests.length, before + 1, out);
    const req = http.requests.at(-1);
    assert.equal(req?.body.toString('utf8'), body);
    assert.equal(req?.headers.authorization, `Bearer ${token}`);
    assert.equal(req?.headers['x-device-key'], dev.dk);
  });

  it('coap-client-openssl: a small JSON answer is printed as it came', async () => {
    const answer = JSON.stringify({ ok: true, by: 'http-backend' });
    http.answer = () => ({
      status: 201,
      headers: { 'content-type': 'application/json' },
      body: answer,
    });
    const r = await runCoapClient('coap-client-openssl', {
      port: gw.port,
      identity: `${dev.pk},${dev.dk},2,3600`,
      psk: derivePsk(dev.secret),
      method: 'post',
      path: coapPath(topic),
      payload: measurepoint('h-libcoap-2'),
      contentFormat: ContentFormat.JSON,
    });
    const out = `--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
    assert.deepEqual(jsonLines(r.stdout), [{ ok: true, by: 'http-backend' }], out);
  });

  it('a topic no route matches goes to MQTT (EnOS mapping), not to the HTTP server', async () => {
    // the libcoap runs above used this device's identity: one live association per identity
    // retired the first one, so connect again
    await device.close();
    device = await connectAs(gw.port, dev);
    const before = http.requests.length;
    const eventTopic = `/sys/${dev.pk}/${dev.dk}/thing/event/alarm/post`;
    const body = JSON.stringify({
      id: 'h-mqtt-1',
      version: '1.0',
      method: 'thing.event.alarm.post',
      params: { value: { level: 2 } },
    });
    const res = await postJson(device, eventTopic, body);
    assert.equal(codeOf(res), '2.04', describeAnswer(res));
    assert.deepEqual(JSON.parse(res.payload.toString('utf8')), {
      id: 'h-mqtt-1',
      code: 200,
      data: { by: 'e2e-platform' },
    });
    const seen = platform.messages.filter((m) => m.topic === eventTopic);
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.payload.toString('utf8'), body);
    assert.equal(http.requests.length, before, 'no HTTP request');
  });

  it('the gateway logged no errors', () => {
    assert.deepEqual(gw.errorLines(), []);
  });
});

describe(
  'e2e: with tracing on, the HTTP route request carries a W3C traceparent',
  {
    skip: MISSING_TOOLS,
  },
  () => {
    const dev: DeviceSpec = { pk: uid('htPK'), dk: uid('htDK'), secret: cliSafeSecret('ht') };
    const tokenEnv = 'E2E4_TRACE_TOKEN';
    const token = `tok-${randomBytes(12).toString('hex')}`;
    let dir: string;
    let http: HttpStandIn;
    let collector: HttpStandIn;
    let pod: Pod;
    let device: CoapDtlsClient | undefined;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'coap-edge-e2e-trace-'));
      http = await HttpStandIn.start();
      collector = await HttpStandIn.start();
      collector.answer = () => ({ status: 200 });
      // a separate process: the trace SDK is set up once per process (src/cli.ts)
      pod = await startPod(
        dir,
        'traced',
        {
          devices: writeDevicesFile(dir, [dev]),
          otlpEndpoint: `${collector.origin}/v1/traces`,
          traceSampleRatio: 1,
          routes: [
            {
              match: '/sys/{pk}/{dk}/thing/measurepoint/post',
              backend: 'http',
              url: `${http.origin}/ingest/{pk}/{dk}`,
              auth: { type: 'bearer', tokenEnv },
            },
          ],
        },
        { env: { [tokenEnv]: token } },
      );
    });

    after(async () => {
      await device?.close();
      await pod?.stop();
      await killAll();
      await http?.close();
      await collector?.close();
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    });

    it('traceparent (sampled) next to the device headers and the bearer', async () => {
      http.answer = () => ({ status: 204 });
      device = await explainWith([pod], connectAs(pod.port, dev));
      const res = await postJson(device, measurepointTopic(dev.pk, dev.dk), measurepoint('t-1'));
      assert.equal(codeOf(res), '2.04', describeAnswer(res));
      const req = http.requests.at(-1);
      assert.ok(req !== undefined, 'the HTTP server got the request');
      assert.equal(req.headers['x-device-key'], dev.dk);
      assert.equal(req.headers.authorization, `Bearer ${token}`);
      assert.match(
        String(req.headers.traceparent),
        /^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-01$/,
        JSON.stringify(req.headers),
      );
    });
  },
);

describe('e2e: a bad route stops coap-edge serve (exit 2)', () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-e2e-route-'));
  });

  after(async () => {
    await killAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it('an unknown placeholder in the URL names the route and the field', async () => {
    const file = writeYamlConfig(dir, 'bad-placeholder', {
      bind: '127.0.0.1',
      dtlsPort: 0,
      routes: [
        { match: '/sys/{pk}/{dk}/thing/event/+/post', backend: 'mqtt' },
        {
          name: 'telemetry',
          match: '/sys/{pk}/{dk}/thing/measurepoint/post',
          backend: 'http',
          url: 'http://127.0.0.1:9/ingest/{pk}/{device}',
        },
      ],
    });
    const r = await cliInProcess(['serve', '--config', file]);
    const out = describeResult(r);
    assert.equal(r.code, 2, out);
    assert.equal(r.error?.code, CLI_FAIL, out);
    assert.match(
      r.error.message,
      /routes\[1\] \("telemetry"\): url: unknown placeholder \{device\}/,
      out,
    );
    assert.doesNotMatch(r.stdout, /coap-edge listening/, out);
  });

  it('an unknown backend names the route', async () => {
    const file = writeYamlConfig(dir, 'bad-backend', {
      bind: '127.0.0.1',
      dtlsPort: 0,
      routes: [{ match: '/sys/{pk}/{dk}/thing/measurepoint/post', backend: 'kafka' }],
    });
    const r = await cliInProcess(['serve', '--config', file]);
    const out = describeResult(r);
    assert.equal(r.code, 2, out);
    assert.equal(r.error?.code, CLI_FAIL, out);
    assert.match(r.error.message, /bad-backend\.yaml: invalid value for "routes\.0\.backend"/, out);
    assert.doesNotMatch(r.stdout, /coap-edge listening/, out);
  });
});
