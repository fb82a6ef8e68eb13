/**
 * The registry answers 500, or hangs. A new device's handshake fails
 * quickly (at once on 500, after `registryTimeoutMs` when it hangs) with a fatal alert the
 * device sees; the failure is counted in `gateway.secrets.stats` and not cached; a device
 * already cached keeps working meanwhile, also while a lookup hangs. After five failures in a
 * row the circuit breaker answers without asking the registry, and lets a probe through after
 * its cool-down. The gateway's clock is stepped over the cool-down (no 5 s sleep). Shared
 * Redis 6379 and Mosquitto 1883.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { Code, formatCode } from '../../src/coap/constants.js';
import { AlertDescription } from '../../src/dtls/constants.js';
import { DtlsError } from '../../src/dtls/errors.js';
import type { CoapDtlsClient } from '../../src/tools/coap-client.js';
import {
  E2eRegistry,
  MISSING_TOOLS,
  SHARED_MQTT_URL,
  SHARED_REDIS_URL,
  cliSafeSecret,
  coapPath,
  connectDevice,
  measurepoint,
  measurepointTopic,
  startE2eGateway,
  startPlatform,
  timed,
  uid,
  type E2eGateway,
  type PlatformStandIn,
} from '../helpers/e2e.js';
import { steppedClock } from '../helpers/clock.js';

const REGISTRY_TIMEOUT_MS = 1_000;
/** Margin on top of the registry timeout for a refused handshake (CI noise). */
const MARGIN_MS = 2_500;
/** The registry client's circuit breaker (src/auth/registry-client.ts defaults). */
const BREAKER_THRESHOLD = 5;
const BREAKER_COOLDOWN_MS = 5_000;
/** Lifetime of a record in the in-process cache (`secretCacheTtlSeconds` default). */
const CACHE_TTL_MS = 300_000;

describe('e2e: registry failing or hanging', { skip: MISSING_TOOLS }, () => {
  const pk = uid('rgPK');
  const redisPrefix = uid('e2e-rg-');
  const secrets = new Map<string, string>();
  let registry: E2eRegistry;
  let gw: E2eGateway;
  let platform: PlatformStandIn;
  let redis: Redis;
  const devices: CoapDtlsClient[] = [];
  /** The gateway's clock: the breaker's cool-down passes when the test steps it. */
  const clock = steppedClock();

  function secretOf(dk: string): string {
    let s = secrets.get(dk);
    if (s === undefined) {
      s = cliSafeSecret(dk);
      secrets.set(dk, s);
      registry.addDevice(pk, dk, s);
    }
    return s;
  }

  before(async () => {
    registry = await E2eRegistry.start();
    gw = await startE2eGateway(
      {
        mqttUrl: SHARED_MQTT_URL,
        redisUrl: SHARED_REDIS_URL,
        redisPrefix,
        registryUrl: registry.url,
        registryToken: registry.token,
        registryTimeoutMs: REGISTRY_TIMEOUT_MS,
      },
      { clock },
    );
    platform = await startPlatform(SHARED_MQTT_URL, `/sys/${pk}/+/thing/measurepoint/post`);
    redis = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: 1 });
  });

  after(async () => {
    await Promise.all(devices.map((d) => d.close()));
    await platform?.close();
    await gw?.close();
    await registry?.close();
    if (redis !== undefined) {
      const keys = await redis.keys(`${redisPrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    }
  });

  async function connectAndPost(dk: string, id: string): Promise<number> {
    const h = await timed(() => connectDevice(gw.port, { pk, dk, secret: secretOf(dk) }));
    assert.ok(h.value !== undefined, `${dk}: handshake failed: ${String(h.error)}`);
    devices.push(h.value);
    assert.ok(h.ms < 3_000, `${dk}: handshake took ${h.ms.toFixed(0)} ms`);
    const r = await h.value.request({
      method: 'POST',
      path: coapPath(measurepointTopic(pk, dk)),
      payload: Buffer.from(measurepoint(id)),
      timeoutMs: 10_000,
    });
    assert.equal(formatCode(r.code), formatCode(Code.CHANGED), `${dk} ${id}`);
    return h.ms;
  }

  /** A handshake the gateway must refuse with internal_error; returns how long it took. */
  async function refused(dk: string): Promise<number> {
    const h = await timed(() =>
      connectDevice(gw.port, { pk, dk, secret: secretOf(dk), handshakeTimeoutMs: 10_000 }),
    );
    if (h.value !== undefined) {
      devices.push(h.value);
      assert.fail(`${dk}: the handshake should have failed`);
    }
    assert.ok(h.error instanceof DtlsError, String(h.error));
    assert.equal(h.error.code, 'DTLS_ALERT_RECEIVED', h.error.message);
    assert.equal(h.error.alert, AlertDescription.internalError, h.error.message);
    assert.ok(
      h.ms < REGISTRY_TIMEOUT_MS + MARGIN_MS,
      `${dk}: refused after ${h.ms.toFixed(0)} ms (registry timeout ${REGISTRY_TIMEOUT_MS})`,
    );
    return h.ms;
  }

  const stats = () => gw.gateway.secrets.stats;

  it('500: a new device is refused at once, counted, not cached; a cached one works', async (t) => {
    await connectAndPost('cached', 'c-1');
    registry.mode = 'error';
    const failures = stats().registryFailures;
    const ms = await refused('e1');
    assert.equal(stats().registryFailures, failures + 1, 'one registry failure counted');
    assert.equal(stats().lookups.registry.error >= 1, true);
    assert.equal(registry.count('GET', `/devices/${pk}/e1`), 1);
    await connectAndPost('cached', 'c-2');
    assert.equal(registry.count('GET', `/devices/${pk}/cached`), 1, 'cached: no registry call');
    // the error was not cached: with the registry back, the device gets in
    registry.mode = 'ok';
    await connectAndPost('e1', 'e1-1');
    t.diagnostic(`refused after ${ms.toFixed(0)} ms with the registry answering 500`);
  });

  it('hang: refused after the registry timeout; a cached device is not held up', async (t) => {
    registry.mode = 'hang';
    const failures = stats().registryFailures;
    const timeouts = stats().lookups.registry.timeout;
    const pending = refused('h1');
    // while h1's lookup hangs, the cached device connects and posts
    const cachedMs = await connectAndPost('cached', 'c-3');
    const ms = await pending;
    assert.ok(ms >= REGISTRY_TIMEOUT_MS - 50, `refused after ${ms.toFixed(0)} ms`);
    assert.equal(stats().registryFailures, failures + 1);
    assert.equal(stats().lookups.registry.timeout, timeouts + 1, 'counted as a timeout');
    registry.mode = 'ok';
    await connectAndPost('h1', 'h1-1');
    t.diagnostic(
      `hanging registry: refused after ${ms.toFixed(0)} ms (timeout ${REGISTRY_TIMEOUT_MS}); ` +
        `cached device's handshake meanwhile ${cachedMs.toFixed(0)} ms`,
    );
  });

  it('the circuit breaker opens after 5 failures and lets a probe through later', async (t) => {
    registry.mode = 'error';
    for (let i = 1; i <= BREAKER_THRESHOLD; i++) await refused(`b${i}`);
    assert.ok(stats().registryCircuitOpened >= 1, 'the breaker opened');
    const opened = clock.now();
    const calls = registry.calls.length;
    const rejected = stats().registryRejected;
    await refused('b6');
    assert.equal(registry.calls.length, calls, 'nothing was sent while the breaker is open');
    assert.equal(stats().registryRejected, rejected + 1);
    await connectAndPost('cached', 'c-4');

    registry.mode = 'ok';
    // still open until the cool-down is over, the registry answering or not
    clock.step(Math.max(0, BREAKER_COOLDOWN_MS - 1_000 - (clock.now() - opened)));
    await refused('b6');
    assert.equal(registry.calls.length, calls, 'nothing was sent before the cool-down ended');
    assert.equal(stats().registryRejected, rejected + 2);
    clock.step(Math.max(0, BREAKER_COOLDOWN_MS + 200 - (clock.now() - opened)));
    await connectAndPost('b6', 'b6-1');
    assert.equal(registry.count('GET', `/devices/${pk}/b6`), 1, 'the probe went out');
    t.diagnostic(`registry failures counted: ${stats().registryFailures}`);
  });

  it('the in-process cache expires on the gateway clock: then Redis answers, not the registry', async () => {
    registry.mode = 'ok';
    const lookups = () => ({ ...stats().lookups.memory, redis: stats().lookups.redis.hit });
    const before = lookups();
    await connectAndPost('cached', 'c-5');
    const fresh = lookups();
    assert.ok(fresh.hit > before.hit, 'cached: read from the in-process cache');
    assert.equal(fresh.redis, before.redis, 'cached: Redis not asked');
    clock.step(CACHE_TTL_MS + 1_000);
    await connectAndPost('cached', 'c-6');
    const expired = lookups();
    assert.ok(expired.miss > fresh.miss, 'cached: expired from the in-process cache');
    assert.ok(expired.redis > fresh.redis, 'cached: read from Redis');
    assert.equal(registry.count('GET', `/devices/${pk}/cached`), 1, 'cached: no registry call');
  });

  it('the gateway logged no errors', () => {
    for (const g of [gw]) assert.deepEqual(g.errorLines(), []);
  });
});
