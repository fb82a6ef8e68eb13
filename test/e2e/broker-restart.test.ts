/**
 * The broker restarts in the middle of a stream. A device posts
 * measurepoints with ids 1..200 over one DTLS association, one at a time, retrying a message
 * (new CoAP message ID, same JSON id) after a short wait when it gets 5.03 (Max-Age says
 * 1 s; the test waits less) or 5.04; meanwhile the broker (a Mosquitto of this test's own,
 * with persistence) is stopped with SIGTERM and started again on the same port.
 *
 * At least once (docs/design.md): a 2.04 is only sent after the broker's PUBACK (and here the
 * platform's reply), so every message the device got 2.04 for must reach a subscriber. The
 * subscriber and the platform stand-in have persistent sessions (clean session false, fixed
 * client ids, QoS 1) on a broker that persists its state on shutdown, so what the broker
 * accepted before the restart is delivered after it; they reconnect by themselves.
 * Duplicates at the subscriber are allowed (a retried message may have arrived before).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Code, OptionNumber, formatCode } from '../../src/coap/constants.js';
import { decodeUint } from '../../src/coap/options.js';
import type { CoapDtlsClient, CoapResponse } from '../../src/tools/coap-client.js';
import {
  E2eRegistry,
  MISSING_TOOLS,
  SHARED_REDIS_URL,
  cliSafeSecret,
  coapPath,
  connectDevice,
  eventually,
  measurepoint,
  measurepointTopic,
  sleep,
  startE2eGateway,
  startPlatform,
  startRecorder,
  uid,
  type E2eGateway,
  type PlatformStandIn,
  type Recorder,
} from '../helpers/e2e.js';
import { Mosquitto, killBrokers } from '../integration/bridge/brokers.js';

const MESSAGES = 200;
/** The broker is stopped right after this id got its 2.04 (the loop goes on meanwhile). */
const STOP_AFTER_ID = 70;
/**
 * How long the broker stays down: longer than the reply timeout, so the message in flight when
 * it stops (published, its reply lost: 5.04) is followed by retries while it is still away
 * (5.03).
 */
const DOWN_MS = 2_000;
const REPLY_TIMEOUT_MS = 1_000;
/** The device's wait before a retry after 5.03 (a real device waits Max-Age). */
const RETRY_WAIT_MS = 100;
/** Attempts per message before the test gives up on it. */
const MAX_ATTEMPTS = 100;

function maxAgeOf(r: CoapResponse): number | undefined {
  const v = r.options.find((o) => o.number === OptionNumber.MAX_AGE)?.value;
  return v === undefined ? undefined : decodeUint(v);
}

function jsonId(payload: Buffer): string | undefined {
  try {
    const id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
    return typeof id === 'string' ? id : undefined;
  } catch {
    return undefined;
  }
}

describe('e2e: broker restarted mid-stream', { skip: MISSING_TOOLS }, () => {
  const pk = uid('brPK');
  const dk = uid('brDK');
  const secret = cliSafeSecret('br');
  const redisPrefix = uid('e2e-br-');
  const topic = measurepointTopic(pk, dk);
  // the broker runs as user mosquitto when started as root: let it write its database here
  const persistDir = mkdtempSync(join(tmpdir(), 'coap-edge-e2e-mosq-db-'));
  chmodSync(persistDir, 0o777);
  let mosq: Mosquitto;
  let registry: E2eRegistry;
  let gw: E2eGateway;
  let recorder: Recorder;
  let platform: PlatformStandIn;
  let device: CoapDtlsClient | undefined;
  let redis: Redis;

  before(async () => {
    mosq = await Mosquitto.start({
      config: `allow_anonymous true\nset_tcp_nodelay true\npersistence true\npersistence_location ${persistDir}/`,
    });
    const url = `mqtt://127.0.0.1:${mosq.port}`;
    registry = await E2eRegistry.start();
    registry.addDevice(pk, dk, secret);
    gw = await startE2eGateway({
      mqttUrl: url,
      redisUrl: SHARED_REDIS_URL,
      redisPrefix,
      registryUrl: registry.url,
      registryToken: registry.token,
      publishTimeoutMs: 2_000,
      replyTimeoutMs: REPLY_TIMEOUT_MS,
      maxUnavailableRetrySeconds: 1,
    });
    const durable = (name: string) => ({
      clientId: uid(`e2e-${name}-`),
      clean: false,
      protocolVersion: 4 as const,
      reconnectPeriod: 200,
    });
    recorder = await startRecorder(url, topic, durable('sub'));
    platform = await startPlatform(url, topic, { client: durable('platform') });
    redis = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: 1 });
  });

  after(async () => {
    await device?.close();
    await platform?.close();
    await recorder?.close();
    await gw?.close();
    await registry?.close();
    await killBrokers();
    rmSync(persistDir, { recursive: true, force: true });
    if (redis !== undefined) {
      const keys = await redis.keys(`${redisPrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    }
  });

  it(`ids 1..${MESSAGES}: every 2.04 delivered, every id delivered`, async (t) => {
    const d = await connectDevice(gw.port, { pk, dk, secret });
    device = d;
    const acked = new Set<number>();
    const counts = { attempts: 0, unavailable: 0, gatewayTimeout: 0, retries: 0 };
    let restart: Promise<void> | undefined;
    let ackedWhenStopped = -1;
    let ackedWhenRestarted = -1;
    const startedAt = Date.now();

    for (let id = 1; id <= MESSAGES; id++) {
      for (let attempt = 1; ; attempt++) {
        assert.ok(attempt <= MAX_ATTEMPTS, `id ${id}: no 2.04 after ${MAX_ATTEMPTS} attempts`);
        counts.attempts++;
        if (attempt > 1) counts.retries++;
        const r = await d.request({
          method: 'POST',
          path: coapPath(topic),
          payload: Buffer.from(measurepoint(id)),
          timeoutMs: 20_000,
        });
        if (r.code === Code.CHANGED) {
          assert.equal(jsonId(r.payload), String(id), `the reply to id ${id}`);
          acked.add(id);
          break;
        }
        if (r.code === Code.SERVICE_UNAVAILABLE) {
          counts.unavailable++;
          assert.equal(maxAgeOf(r), 1, '5.03 carries Max-Age = maxUnavailableRetrySeconds');
          await sleep(RETRY_WAIT_MS);
          continue;
        }
        if (r.code === Code.GATEWAY_TIMEOUT) {
          // published, but the reply was lost with the broker: the device tries again
          counts.gatewayTimeout++;
          continue;
        }
        assert.fail(`id ${id}: unexpected ${formatCode(r.code)} ${r.payload.toString()}`);
      }
      if (id === STOP_AFTER_ID) {
        restart = (async () => {
          await mosq.stop('SIGTERM');
          ackedWhenStopped = acked.size;
          await sleep(DOWN_MS);
          await mosq.restart();
          ackedWhenRestarted = acked.size;
        })();
      }
    }
    const sentFor = Date.now() - startedAt;
    await restart;
    assert.ok(
      ackedWhenStopped >= STOP_AFTER_ID && ackedWhenStopped < MESSAGES,
      `the broker stopped mid-stream (after ${ackedWhenStopped} 2.04s)`,
    );

    const seenIds = (): Set<number> =>
      new Set(recorder.messages.map((m) => Number(jsonId(m.payload))));
    await eventually(
      () => seenIds().size >= MESSAGES,
      `the subscriber to see all ${MESSAGES} ids (has ${seenIds().size})`,
      20_000,
    );
    const seen = seenIds();
    const missingAcked = [...acked].filter((id) => !seen.has(id));
    assert.deepEqual(missingAcked, [], 'a 2.04 was sent for a message the subscriber never got');
    for (let id = 1; id <= MESSAGES; id++) assert.ok(seen.has(id), `id ${id} delivered`);
    assert.ok(
      recorder.messages.every((m) => m.topic === topic && seen.has(Number(jsonId(m.payload)))),
      'nothing else on the topic',
    );
    assert.equal(acked.size, MESSAGES);
    assert.ok(counts.unavailable >= 1, 'the device got 5.03 while the broker was away');

    const mqttStats = gw.gateway.mqtt?.stats();
    assert.ok((mqttStats?.connectionDowns ?? 0) >= 1, 'the bridge saw the broker go away');
    assert.equal(mqttStats?.state, 'connected');
    const duplicates = recorder.messages.length - seen.size;
    const platformDuplicates = platform.messages.length - seen.size;
    t.diagnostic(
      `${MESSAGES} ids in ${sentFor} ms; broker stopped after ${ackedWhenStopped} 2.04s, ` +
        `back after ${ackedWhenRestarted}; CoAP requests ${counts.attempts}, ` +
        `retries ${counts.retries} (5.03: ${counts.unavailable}, 5.04: ${counts.gatewayTimeout}); ` +
        `subscriber messages ${recorder.messages.length}, duplicates ${duplicates}; ` +
        `platform requests ${platform.messages.length} (duplicates ${platformDuplicates}), ` +
        `replies ${platform.replies()}; bridge publishes ok ${mqttStats?.publishes.ok}, ` +
        `failed ${JSON.stringify(mqttStats?.publishes.failed)}, connection downs ` +
        `${mqttStats?.connectionDowns}, reconnects ${mqttStats?.reconnects}, ` +
        `replies timed out ${mqttStats?.replies.timedOut}`,
    );
  });

  it('the gateway logged no errors', () => {
    for (const g of [gw]) assert.deepEqual(g.errorLines(), []);
  });
});
