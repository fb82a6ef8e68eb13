/**
 * Activation is one-shot. The product secret is shared by every unit of a
 * product, so a secureMode 3 session is an attacker as soon as one unit leaks it. Such a
 * session gets a device's secret only for a device that was never activated and never
 * connected with its own secret; everything else is 4.03 (4.04 for a device nobody knows),
 * on every gateway sharing the Redis, after a restart, and however many sessions race for
 * the same device. The one exception is the device's own retransmission of the same CoAP
 * request (same message ID, same DTLS session): it gets the original answer from the
 * exchange cache, so a lost answer does not brick the device.
 *
 * Gateways on loopback: devices file only (in-process store), devices file + shared Redis
 * (127.0.0.1:6379, own prefix, two instances and a restart), and a stand-in registry + Redis.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

import { encode, decode } from '../../src/coap/codec.js';
import { CON, Code, OptionNumber, formatCode } from '../../src/coap/constants.js';
import { derivePsk } from '../../src/enos/psk.js';
import type { CoapDtlsClient, CoapResponse } from '../../src/tools/coap-client.js';
import type { Gateway } from '../../src/gateway/index.js';
import {
  E2eRegistry,
  SHARED_REDIS_URL,
  activationPath,
  cliSafeSecret,
  connectDevice,
  eventually,
  uid,
} from '../helpers/e2e.js';
import {
  GoodClient,
  startGateway,
  type GatewayOptions,
  type HostileServer,
} from '../helpers/hostile.js';

type Server = HostileServer & { readonly gateway: Gateway };

const PK = 'actPK01';
const PRODUCT_SECRET = 'act-product-secret';
/** Devices the file lists; each test uses its own. */
const LISTED = ['dev01', 'dev02', 'dev03', 'dev04', 'dev05', 'dev06', 'dev07', 'dev08'] as const;
const secretOf = (dk: string): string => `act-device-secret-${dk}`;

/** A devices file with one product that allows dynamic activation and the LISTED devices. */
function writeDevicesFile(dir: string): string {
  const path = join(dir, 'devices.json');
  writeFileSync(
    path,
    JSON.stringify({
      products: [{ productKey: PK, productSecret: PRODUCT_SECRET, dynamicRegistration: true }],
      devices: LISTED.map((dk) => ({
        productKey: PK,
        deviceKey: dk,
        deviceSecret: secretOf(dk),
        assetId: `asset-${dk}`,
      })),
    }),
  );
  return path;
}

/** A secureMode 3 session (product secret). */
function productSession(port: number, dk: string, pk = PK, secret = PRODUCT_SECRET) {
  return connectDevice(port, { pk, dk, mode: 3, secret });
}

function activate(d: CoapDtlsClient, dk: string, pk = PK): Promise<CoapResponse> {
  return d.request({ method: 'GET', path: activationPath(pk, dk), timeoutMs: 15_000 });
}

/** `params.deviceSecret` of a 2.05 activation answer; fails on any other answer. */
function grantedSecret(r: CoapResponse, why: string): string {
  assert.equal(formatCode(r.code), '2.05', `${why}: ${r.payload.toString()}`);
  const body = JSON.parse(r.payload.toString('utf8')) as { params?: { deviceSecret?: unknown } };
  const secret = body.params?.deviceSecret;
  assert.ok(typeof secret === 'string' && secret.length > 0, `${why}: no deviceSecret`);
  return secret;
}

/** The answer is `code` and carries no secret at all. */
function assertRefused(r: CoapResponse, code: number, why: string, secret?: string): void {
  const text = r.payload.toString('utf8');
  assert.equal(formatCode(r.code), formatCode(code), `${why}: ${text}`);
  assert.doesNotMatch(text, /deviceSecret/, why);
  if (secret !== undefined) assert.ok(!r.payload.includes(secret), `${why}: secret leaked`);
}

/** Opens a session, asks once, closes. */
async function activateOnce(port: number, dk: string, pk = PK, secret = PRODUCT_SECRET) {
  const d = await productSession(port, dk, pk, secret);
  try {
    return await activate(d, dk, pk);
  } finally {
    await d.close();
  }
}

/** A secureMode 2 handshake with the device's own secret completes. */
async function connectsWith(port: number, pk: string, dk: string, secret: string): Promise<void> {
  const d = await connectDevice(port, { pk, dk, mode: 2, secret });
  await d.close();
}

/**
 * One secureMode 3 session per gateway (one live association per identity and gateway: a
 * second session of the same identity would retire the first), each asking for the same
 * device's secret `perSession` times at once (separate CoAP requests, not retransmissions):
 * exactly one request gets it, every other one gets 4.03 without it.
 */
async function race(ports: readonly number[], dk: string, perSession = 4): Promise<void> {
  const sessions = await Promise.all(ports.map((port) => productSession(port, dk)));
  try {
    const answers = await Promise.all(
      sessions.flatMap((s) => Array.from({ length: perSession }, () => activate(s, dk))),
    );
    const codes = answers.map((r) => formatCode(r.code)).join(' ');
    assert.equal(answers.filter((r) => r.code === Code.CONTENT).length, 1, codes);
    for (const r of answers) {
      if (r.code !== Code.CONTENT) assertRefused(r, Code.FORBIDDEN, 'a racing request');
    }
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
  }
}

function gateway(o: GatewayOptions): Promise<Server> {
  return startGateway(o);
}

async function redisConnected(srv: Server): Promise<void> {
  await eventually(
    () => srv.gateway.secrets.redisState() === 'connected',
    'the gateway connects to Redis',
    10_000,
  );
}

describe('hostile: one-shot activation, devices file only (in-process store)', () => {
  let dir: string;
  let srv: Server;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-act-'));
    srv = await gateway({ devices: writeDevicesFile(dir) });
  });

  after(async () => {
    await srv?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('an activated device: the same session asking again and a new session get 4.03', async () => {
    const dk = 'dev01';
    const first = await productSession(srv.port, dk);
    try {
      assert.equal(grantedSecret(await activate(first, dk), 'first activation'), secretOf(dk));
      const again = await activate(first, dk);
      assertRefused(again, Code.FORBIDDEN, 'a new request on the same session', secretOf(dk));
    } finally {
      await first.close();
    }
    for (let i = 0; i < 3; i++) {
      const r = await activateOnce(srv.port, dk);
      assertRefused(r, Code.FORBIDDEN, `new session ${i}`, secretOf(dk));
    }
    // the device itself is fine: it connects with the secret it got
    await connectsWith(srv.port, PK, dk, secretOf(dk));
  });

  test('a device that has connected in secureMode 2 cannot be activated', async () => {
    const dk = 'dev02';
    const own = await GoodClient.connect(srv.port, {
      identity: `${PK},${dk},2,3600`,
      psk: derivePsk(secretOf(dk)),
    });
    try {
      await own.ask();
    } finally {
      await own.close();
    }
    assertRefused(await activateOnce(srv.port, dk), Code.FORBIDDEN, 'activation', secretOf(dk));
  });

  test('a retransmitted activation request gets the original answer; a new request 4.03', async () => {
    const dk = 'dev03';
    const c = await GoodClient.connect(srv.port, {
      identity: `${PK},${dk},3,3600`,
      psk: derivePsk(PRODUCT_SECRET),
    });
    try {
      const request = (messageId: number, token: Buffer): Buffer =>
        encode({
          type: CON,
          code: Code.GET,
          messageId,
          token,
          options: activationPath(PK, dk)
            .split('/')
            .filter((p) => p !== '')
            .map((p) => ({ number: OptionNumber.URI_PATH, value: Buffer.from(p) })),
          payload: Buffer.alloc(0),
        });
      const answerTo = (messageId: number) => (m: Buffer) => {
        try {
          return decode(m).messageId === messageId;
        } catch {
          return false;
        }
      };
      const con = request(0x2a2a, Buffer.from('tok1'));
      const firstP = c.waitMessage(answerTo(0x2a2a), 10_000, 'the answer');
      c.client.send(con);
      const first = await firstP;
      assert.equal(grantedSecret(decodeResponse(first), 'the original answer'), secretOf(dk));
      // the answer was "lost": the device sends the same CON again, twice
      for (let i = 0; i < 2; i++) {
        const dupP = c.waitMessage(answerTo(0x2a2a), 10_000, `answer to retransmission ${i}`);
        c.client.send(con);
        assert.deepEqual(await dupP, first, `retransmission ${i}: the same bytes`);
      }
      // a new request (new message ID) is a new activation attempt
      const nextP = c.waitMessage(answerTo(0x2a2b), 10_000, 'answer to a new request');
      c.client.send(request(0x2a2b, Buffer.from('tok2')));
      assertRefused(decodeResponse(await nextP), Code.FORBIDDEN, 'new message ID', secretOf(dk));
    } finally {
      await c.close();
    }
  });

  test('a deviceKey the devices file does not list is refused, and no secret is made up', async () => {
    for (const dk of ['unlisted1', 'unlisted1', 'unlisted2']) {
      assertRefused(await activateOnce(srv.port, dk), Code.NOT_FOUND, `activation of ${dk}`);
    }
  });

  test('sessions racing for one device: its secret goes out once', async () => {
    await race([srv.port], 'dev04', 8);
  });
});

describe('hostile: one-shot activation shared through Redis (two gateways, a restart)', () => {
  const redisPrefix = uid('hostile-act-');
  let dir: string;
  let devices: string;
  let redis: Redis;
  const servers: Server[] = [];

  async function start(): Promise<Server> {
    const s = await gateway({ devices, redisUrl: SHARED_REDIS_URL, redisPrefix });
    servers.push(s);
    await redisConnected(s);
    return s;
  }

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-act-'));
    devices = writeDevicesFile(dir);
    redis = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: 1 });
  });

  after(async () => {
    for (const s of servers) await s.close();
    const keys = await redis.keys(`${redisPrefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    rmSync(dir, { recursive: true, force: true });
  });

  test('activated on one gateway: refused on a second one and after a restart', async () => {
    const dk = 'dev05';
    const a = await start();
    const b = await start();
    assert.equal(grantedSecret(await activateOnce(a.port, dk), 'on A'), secretOf(dk));
    const key = `${redisPrefix}:activation:{${PK}/${dk}}`;
    assert.equal(await redis.ttl(key), -1, 'the activated state does not expire');
    assertRefused(await activateOnce(b.port, dk), Code.FORBIDDEN, 'on B', secretOf(dk));

    await a.close();
    const a2 = await start();
    assertRefused(await activateOnce(a2.port, dk), Code.FORBIDDEN, 'on A restarted', secretOf(dk));
    await connectsWith(a2.port, PK, dk, secretOf(dk));
  });

  test('connected in secureMode 2 on one gateway: refused on the other, and after a restart', async () => {
    const dk = 'dev06';
    const a = await start();
    const b = await start();
    await connectsWith(a.port, PK, dk, secretOf(dk));
    const key = `${redisPrefix}:activation:{${PK}/${dk}}`;
    await eventually(async () => (await redis.exists(key)) === 1, 'the device marked in Redis');
    assert.equal(await redis.ttl(key), -1, 'the mark does not expire');
    assertRefused(await activateOnce(b.port, dk), Code.FORBIDDEN, 'on B', secretOf(dk));
    await b.close();
    const b2 = await start();
    assertRefused(await activateOnce(b2.port, dk), Code.FORBIDDEN, 'on B restarted', secretOf(dk));
  });

  test('sessions on two gateways racing for one device: its secret goes out once', async () => {
    const a = await start();
    const b = await start();
    await race([a.port, b.port], 'dev07');
  });
});

describe('hostile: one-shot activation with a registry', () => {
  const redisPrefix = uid('hostile-actreg-');
  const pk = uid('regPK');
  const productSecret = cliSafeSecret('prod');
  let registry: E2eRegistry;
  let srv: Server;
  let redis: Redis;

  before(async () => {
    registry = await E2eRegistry.start();
    registry.addProduct(pk, productSecret, true);
    redis = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: 1 });
    srv = await gateway({
      redisUrl: SHARED_REDIS_URL,
      redisPrefix,
      registryUrl: registry.url,
      registryToken: registry.token,
    });
    await redisConnected(srv);
  });

  after(async () => {
    await srv?.close();
    await registry?.close();
    if (redis !== undefined) {
      const keys = await redis.keys(`${redisPrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    }
  });

  test('activated through the registry: a new session gets 4.03', async () => {
    const dk = uid('d');
    const secret = grantedSecret(await activateOnce(srv.port, dk, pk, productSecret), 'first');
    assert.equal(registry.devices.get(`${pk}/${dk}`)?.deviceSecret, secret);
    for (let i = 0; i < 2; i++) {
      const r = await activateOnce(srv.port, dk, pk, productSecret);
      assertRefused(r, Code.FORBIDDEN, `new session ${i}`, secret);
    }
    assert.equal(registry.count('GET', `/devices/${pk}/${dk}`), 0, 'secret never read back');
    await connectsWith(srv.port, pk, dk, secret);
  });

  test('registry 409 is final: 4.03, and the registry never sees a GET for the device', async () => {
    const dk = uid('d');
    const secret = cliSafeSecret('dev');
    registry.addDevice(pk, dk, secret);
    for (let i = 0; i < 2; i++) {
      const r = await activateOnce(srv.port, dk, pk, productSecret);
      assertRefused(r, Code.FORBIDDEN, `attempt ${i}`, secret);
    }
    assert.ok(registry.count('POST', `/devices/${pk}/${dk}/activate`) >= 1, 'asked to activate');
    assert.equal(registry.count('GET', `/devices/${pk}/${dk}`), 0, 'no GET fallback');
  });

  test('a registry device that has connected in secureMode 2 cannot be activated', async () => {
    const dk = uid('d');
    const secret = cliSafeSecret('dev');
    registry.addDevice(pk, dk, secret);
    await connectsWith(srv.port, pk, dk, secret);
    const key = `${redisPrefix}:activation:{${pk}/${dk}}`;
    await eventually(async () => (await redis.exists(key)) === 1, 'the device marked in Redis');
    const r = await activateOnce(srv.port, dk, pk, productSecret);
    assertRefused(r, Code.FORBIDDEN, 'activation after secureMode 2', secret);
    assert.equal(
      registry.count('POST', `/devices/${pk}/${dk}/activate`),
      0,
      'refused by the mark, before asking the registry',
    );
  });
});

/** A CoAP message as the parts a CoapResponse has (for the assertion helpers). */
function decodeResponse(m: Buffer): CoapResponse {
  const msg = decode(m);
  return {
    code: msg.code,
    payload: msg.payload,
    options: msg.options,
    separate: false,
    retransmissions: 0,
  };
}
