/**
 * End to end: device presence across two gateways ("pods": two `Gateway` instances of this
 * process, each with its own sockets and its own Redis and MQTT connections) sharing Redis (a
 * unique prefix), with events POSTed to a webhook (an in-process HTTP server). Lifetimes are
 * shortened with the gateway's test-only option `presenceLifetimeScale: 0.1` (a device
 * announcing 30 s counts as 3 s; no setting can turn it on) and the pods sweep every second.
 *
 * - A device (lifetime 30) posts through pod A, then through pod B (a new handshake), then
 *   goes quiet: exactly one `online` (first-request) and one `offline` (lifetime-lapsed) in
 *   total from both pods; closing its sessions afterwards publishes nothing more.
 * - A device posts and closes its session (close_notify): one `online`, one `offline`
 *   (close-notify), and no second offline when its lifetime would have lapsed.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { CoapDtlsClient } from '../../src/tools/coap-client.js';
import {
  MISSING_TOOLS,
  SHARED_MQTT_URL,
  SHARED_REDIS_URL,
  cliSafeSecret,
  eventually,
  measurepoint,
  measurepointTopic,
  sleep,
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
  describeAnswer,
  postJson,
  writeDevicesFile,
  type DeviceSpec,
} from '../helpers/e2e-pods.js';

const LIFETIME_S = 30;
const SCALE = 0.1;
/** The lifetime as presence counts it in this test. */
const EFFECTIVE_MS = LIFETIME_S * 1000 * SCALE;
const SWEEP_S = 1;

interface Event {
  productKey: string;
  deviceKey: string;
  status: 'online' | 'offline';
  reason: string;
  time: string;
  lifetime: number;
  sessionId?: string;
  seq: number;
}

describe('e2e: presence with two gateways sharing Redis', { skip: MISSING_TOOLS }, () => {
  const pk = uid('prPK');
  const quiet: DeviceSpec = { pk, dk: uid('prQuiet'), secret: cliSafeSecret('prq') };
  const closing: DeviceSpec = { pk, dk: uid('prClose'), secret: cliSafeSecret('prc') };
  const redisPrefix = uid('e2e-pres-');
  let dir: string;
  let webhook: HttpStandIn;
  let podA: E2eGateway;
  let podB: E2eGateway;
  let platform: PlatformStandIn;
  let redis: Redis;
  const clients: CoapDtlsClient[] = [];

  const events = (d: DeviceSpec): Event[] =>
    (webhook.jsonBodies() as Event[]).filter((e) => e.deviceKey === d.dk && e.productKey === d.pk);
  const show = (d: DeviceSpec): string => JSON.stringify(events(d), null, 1);

  /**
   * Until both pods have finished `n` more presence sweeps (n = 2: a whole sweep started from
   * now on each) and then have nothing in flight (store calls, webhook deliveries).
   */
  async function sweptAndSettled(n: number): Promise<void> {
    const pods = [podA, podB];
    const target = pods.map((p) => p.gateway.presence.sweepsCompleted + n);
    await eventually(
      () => pods.every((p, i) => p.gateway.presence.sweepsCompleted >= (target[i] ?? 0)),
      `${n} more sweeps on both pods`,
      n * SWEEP_S * 1000 + 10_000,
    );
    await Promise.all(pods.map((p) => p.gateway.presence.settled()));
  }

  async function connect(pod: E2eGateway, d: DeviceSpec): Promise<CoapDtlsClient> {
    try {
      const c = await connectAs(pod.port, d, LIFETIME_S);
      clients.push(c);
      return c;
    } catch (err) {
      const tail = pod.logText().split('\n').slice(-40).join('\n');
      throw new Error(`${String(err)}\n--- the gateway's log (last 40 lines)\n${tail}`, {
        cause: err,
      });
    }
  }

  async function post(c: CoapDtlsClient, d: DeviceSpec, id: string): Promise<void> {
    const res = await postJson(c, measurepointTopic(d.pk, d.dk), measurepoint(id));
    assert.equal(codeOf(res), '2.04', describeAnswer(res));
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-e2e-pres-'));
    redis = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: 1 });
    webhook = await HttpStandIn.start();
    webhook.answer = () => ({ status: 200 });
    const config = {
      devices: writeDevicesFile(dir, [quiet, closing]),
      redisUrl: SHARED_REDIS_URL,
      redisPrefix,
      mqttUrl: SHARED_MQTT_URL,
      commandShareGroup: uid('e2epres'),
      presenceWebhook: `${webhook.origin}/presence`,
      presenceSweepIntervalSeconds: SWEEP_S,
      publishTimeoutMs: 3_000,
      replyTimeoutMs: 3_000,
    };
    const testing = { presenceLifetimeScale: SCALE };
    [podA, podB] = await Promise.all([
      startE2eGateway(config, testing),
      startE2eGateway(config, testing),
    ]);
    platform = await startPlatform(SHARED_MQTT_URL, `/sys/${pk}/+/thing/measurepoint/post`);
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([podA?.close(), podB?.close()]);
    await platform?.close();
    await webhook?.close();
    if (redis !== undefined) {
      const keys = await redis.keys(`${redisPrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    }
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  // The two devices are independent (each test reads only its own device's events) and
  // each mostly waits for a lifetime and sweeps to pass: they run side by side.
  describe('two devices side by side', { concurrency: true }, () => {
    it('posts via pod A, then via pod B, then quiet: one online and one offline (lifetime-lapsed) in total', async () => {
      // both handshakes first, so the two posts follow each other closely
      const a = await connect(podA, quiet);
      const b = await connect(podB, quiet);
      await post(a, quiet, 'q-1');
      const tB = Date.now();
      await post(b, quiet, 'q-2');
      await eventually(
        () => events(quiet).some((e) => e.status === 'offline'),
        'the offline event',
        EFFECTIVE_MS + 10_000,
      );
      // a whole sweep of both pods after it: nothing else comes
      await sweptAndSettled(2);
      const ev = events(quiet);
      assert.equal(ev.length, 2, show(quiet));
      const [online, offline] = ev;
      assert.ok(online !== undefined && offline !== undefined);
      assert.equal(online.status, 'online', show(quiet));
      assert.equal(online.reason, 'first-request');
      assert.equal(online.lifetime, LIFETIME_S);
      assert.equal(offline.status, 'offline', show(quiet));
      assert.equal(offline.reason, 'lifetime-lapsed');
      assert.equal(offline.lifetime, LIFETIME_S);
      assert.ok(offline.seq > online.seq);
      // the deadline is pod B's request + the (scaled) lifetime: pod B's request counted
      assert.ok(
        Date.parse(offline.time) >= tB + EFFECTIVE_MS - 50,
        `offline at ${offline.time}, pod B's request at ${new Date(tB).toISOString()}`,
      );
      assert.notEqual(offline.sessionId, online.sessionId, 'the session of pod B ended it');
      const delivery = webhook.requests.find((r) => r.body.toString('utf8').includes(quiet.dk));
      assert.equal(delivery?.method, 'POST');
      assert.equal(delivery?.url, '/presence');
      assert.equal(delivery?.headers['x-coap-edge-event'], 'presence');
      assert.equal(delivery?.headers['content-type'], 'application/json');

      // close_notify after the device went offline: no event
      const closes = (p: E2eGateway): number =>
        p.gateway.presence.stats().sessionCloses['close-notify'];
      const [closedA, closedB] = [closes(podA), closes(podB)];
      await a.close();
      await b.close();
      await eventually(
        () => closes(podA) > closedA && closes(podB) > closedB,
        'both pods handled the close_notify',
        10_000,
      );
      await Promise.all([podA, podB].map((p) => p.gateway.presence.settled()));
      assert.equal(events(quiet).length, 2, show(quiet));
    });

    it('close_notify: one online, one offline (close-notify), nothing when the lifetime would have lapsed', async () => {
      const c = await connect(podA, closing);
      await post(c, closing, 'c-1');
      const tPost = Date.now();
      await eventually(() => events(closing).length >= 1, 'the online event', 10_000);
      await c.close();
      await eventually(
        () => events(closing).some((e) => e.status === 'offline'),
        'the offline event',
        10_000,
      );
      // past the (scaled) lifetime (a wall-time deadline: the store's), then a whole sweep of
      // both pods: no lifetime-lapsed offline follows
      const waitMs = tPost + EFFECTIVE_MS - Date.now();
      if (waitMs > 0) await sleep(waitMs);
      await sweptAndSettled(2);
      const ev = events(closing);
      assert.deepEqual(
        ev.map((e) => [e.status, e.reason]),
        [
          ['online', 'first-request'],
          ['offline', 'close-notify'],
        ],
        show(closing),
      );
      assert.equal(ev[0]?.sessionId, ev[1]?.sessionId, 'the same DTLS session');
      assert.ok((ev[1]?.seq ?? 0) > (ev[0]?.seq ?? 0));
    });
  });

  it('neither pod logged an error', () => {
    assert.deepEqual(podA.errorLines(), [], 'pod A');
    assert.deepEqual(podB.errorLines(), [], 'pod B');
  });
});
