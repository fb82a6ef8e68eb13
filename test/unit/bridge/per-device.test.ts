/**
 * Per-device MQTT sessions: the pure parts (templates, EnOS login fields, topic filters, the
 * connect token bucket) and the session manager against an in-process aedes broker (MQTT
 * 3.1.1, so `auto` falls back from 5) whose `authenticate` hook records what mqtt.js sent.
 * The clock is injected: lifetimes, the refusal memory and the rate limit need no waiting.
 */
import { ManualClock } from '../../../src/time/clock.js';
import { after, describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import type { EventEmitter } from 'node:events';
import { syncBuiltinESMExports } from 'node:module';
import net, { createServer, Socket, type Server } from 'node:net';
import { Aedes, type AuthenticateError } from 'aedes';
import { enosMqttLogin } from '../../../src/enos/index.js';
import type { DeviceKey, DeviceMessageBackend, Principal } from '../../../src/bridge/types.js';
import {
  DeviceSessionManager,
  probeTarget,
  type DeviceSessionOptions,
} from '../../../src/bridge/mqtt/per-device.js';
import {
  checkCommandTopics,
  checkLoginTemplates,
  commandFilters,
  deviceLogin,
  fillTemplate,
  isLoginRefusal,
  isValidFilter,
  PerDeviceConfigError,
  topicMatches,
} from '../../../src/bridge/mqtt/per-device-login.js';
import { BrokerProbe } from '../../../src/bridge/mqtt/per-device-probe.js';
import { TokenBucket } from '../../../src/bridge/mqtt/per-device-rate.js';
import { DeviceUnauthorizedError, MqttBackendError } from '../../../src/bridge/mqtt/errors.js';
import { ErrorWithReasonCode } from 'mqtt';
import { settlesAt, UNREACHED_DEADLINE_MS } from '../../helpers/clock.js';
import { PER_DEVICE_DEFAULTS } from '../../helpers/component-defaults.js';

const PK = 'prod1';
const T0 = 1_548_753_362_502;

function principal(dk: string, sessionId = 'dtls-1', lifetime = 30, pk = PK): Principal {
  return { productKey: pk, deviceKey: dk, secureMode: 2, lifetime, assetId: undefined, sessionId };
}

function tick(ms = 0): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick(5);
  }
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<Error> {
  try {
    await p;
  } catch (e: unknown) {
    assert.ok(e instanceof MqttBackendError, `an MqttBackendError, got ${String(e)}`);
    assert.equal(e.code, code);
    return e;
  }
  assert.fail(`expected ${code}`);
}

describe('per-device login templates', () => {
  it('fills {pk}, {dk} and {secret}; leaves other text alone', () => {
    const v = { pk: 'p', dk: 'd', secret: 's3' };
    assert.equal(fillTemplate('{dk}&{pk}', v), 'd&p');
    assert.equal(fillTemplate('{pk}.{dk}.{pk}', v), 'p.d.p');
    assert.equal(fillTemplate('x{secret}y', v), 'xs3y');
    assert.equal(fillTemplate('{secret}', { pk: 'p', dk: 'd' }), '{secret}');
    assert.equal(fillTemplate('plain', v), 'plain');
  });

  it('refuses unknown placeholders, and {secret} outside the password', () => {
    assert.doesNotThrow(() =>
      checkLoginTemplates({ clientId: '{pk}.{dk}', username: '{dk}&{pk}', password: '{secret}' }),
    );
    for (const t of [
      { clientId: '{pk}.{dk}', username: '{secret}', password: '{secret}' },
      { clientId: '{secret}', username: '{dk}', password: '{secret}' },
      { clientId: '{pk}', username: '{device}', password: '{secret}' },
      { clientId: '{pk}', username: '{dk}', password: '{token}' },
    ]) {
      assert.throws(
        () => checkLoginTemplates(t),
        (e: unknown) => e instanceof PerDeviceConfigError && e.code === 'PER_DEVICE_BAD_TEMPLATE',
      );
    }
  });

  it('template login: the three templates filled in', () => {
    const login = deviceLogin(
      'template',
      { clientId: 'edge-{pk}-{dk}', username: '{dk}&{pk}', password: 'pw:{secret}' },
      { productKey: 'p1', deviceKey: 'd1' },
      'sekret',
      T0,
    );
    assert.deepEqual(login, { clientId: 'edge-p1-d1', username: 'd1&p1', password: 'pw:sekret' });
  });

  it('enos login: clientId {dk}|securemode=2,signmethod=sha256,timestamp={ms}|, username {dk}&{pk}', () => {
    const t = { clientId: 'unused', username: 'unused', password: 'unused' };
    const login = deviceLogin(
      'enos',
      t,
      { productKey: '654321', deviceKey: 'test' },
      'abcdefg',
      T0,
    );
    assert.equal(login.clientId, `test|securemode=2,signmethod=sha256,timestamp=${T0}|`);
    assert.equal(login.username, 'test&654321');
    // the spec vector signs clientId base 123456; with the default base (the dk) it is:
    assert.equal(
      login.password,
      enosMqttLogin({
        productKey: '654321',
        deviceKey: 'test',
        secret: 'abcdefg',
        secureMode: 2,
        timestamp: T0,
      }).password,
    );
    assert.match(login.password, /^[0-9A-F]{64}$/);
  });
});

describe('command topic filters', () => {
  it('fills the templates per device and puts the prefix before them', () => {
    const d: DeviceKey = { productKey: 'p', deviceKey: 'd' };
    assert.deepEqual(
      commandFilters(['/sys/{pk}/{dk}/thing/service/#', '/sys/{pk}/{dk}/rrpc/request/+'], d, 'pre'),
      ['pre/sys/p/d/thing/service/#', 'pre/sys/p/d/rrpc/request/+'],
    );
  });

  it('matches MQTT filters level by level', () => {
    const f = '/sys/p/d/thing/service/#';
    assert.equal(topicMatches(f, '/sys/p/d/thing/service/reboot'), true);
    assert.equal(topicMatches(f, '/sys/p/d/thing/service'), true, '# includes the parent');
    assert.equal(topicMatches(f, '/sys/p/d2/thing/service/reboot'), false);
    assert.equal(topicMatches('/sys/p/d/rrpc/request/+', '/sys/p/d/rrpc/request/7'), true);
    assert.equal(topicMatches('/sys/p/d/rrpc/request/+', '/sys/p/d/rrpc/request/7/x'), false);
    assert.equal(topicMatches('/sys/p/d/rrpc/request/+', '/sys/p/d/rrpc/request'), false);
    assert.equal(topicMatches('a/b', 'a/b'), true);
    assert.equal(topicMatches('a/b', 'a/b/c'), false);
    assert.equal(topicMatches('#', '$SYS/x'), false);
  });

  it('validates filter templates', () => {
    assert.equal(isValidFilter('a/+/#'), true);
    assert.equal(isValidFilter('a/b#'), false);
    assert.equal(isValidFilter('a/#/b'), false);
    assert.equal(isValidFilter('a/x+'), false);
    assert.equal(isValidFilter(''), false);
    assert.doesNotThrow(() => checkCommandTopics(['/sys/{pk}/{dk}/thing/service/#']));
    assert.throws(() => checkCommandTopics(['/sys/{pk}/{dk}/x#']), PerDeviceConfigError);
    assert.throws(() => checkCommandTopics(['/sys/{productKey}/x']), PerDeviceConfigError);
    assert.throws(() => checkCommandTopics([]), PerDeviceConfigError);
  });

  it('tells login refusals from other CONNACK errors', () => {
    for (const c of [4, 5, 0x86, 0x87]) {
      assert.equal(isLoginRefusal(new ErrorWithReasonCode('refused', c)), true, String(c));
    }
    for (const c of [1, 2, 3, 0x84, 0x88, 0x89]) {
      assert.equal(isLoginRefusal(new ErrorWithReasonCode('refused', c)), false, String(c));
    }
    assert.equal(isLoginRefusal(new Error('ECONNREFUSED')), false);
    assert.equal(isLoginRefusal(undefined), false);
  });

  it('reads the probe target of the broker URL', () => {
    assert.deepEqual(probeTarget('mqtt://u:p@broker:1884'), { host: 'broker', port: 1884 });
    assert.deepEqual(probeTarget('mqtts://broker'), { host: 'broker', port: 8883 });
    assert.deepEqual(probeTarget('mqtt://[::1]'), { host: '::1', port: 1883 });
    assert.equal(probeTarget('nonsense'), undefined);
  });

  it("gives up the probe's TCP connect after connectTimeoutMs, on the probe's clock", async () => {
    const clock = new ManualClock();
    const probe = new BrokerProbe({
      url: 'mqtt://broker.invalid:1883',
      urlForLogs: 'mqtt://broker.invalid:1883',
      connectTimeoutMs: 2000,
      clock,
      warn: () => undefined,
    });
    // a connect that neither succeeds nor fails: a socket that was never told to connect
    const hanging = new Socket();
    const createConnection = mock.method(net, 'createConnection', () => hanging);
    syncBuiltinESMExports();
    let probing: Promise<void>;
    try {
      probing = probe.probe();
    } finally {
      createConnection.mock.restore();
      syncBuiltinESMExports();
    }
    assert.equal(createConnection.mock.callCount(), 1);
    assert.equal(
      clock.pendingKeptAlive,
      1,
      'the connect timeout holds the process open, as before',
    );
    assert.equal(probe.state(0), 'connecting', 'nothing known yet');
    await settlesAt(clock, 2000, probing, "the probe's connect");
    assert.equal(probe.state(0), 'down', 'unreachable after the timeout');
    assert.equal(hanging.destroyed, true, 'the socket destroyed');
    assert.equal(clock.pending, 0);
  });
});

describe('TokenBucket', () => {
  it('gives a burst, then reserves within the wait bound, then refuses', () => {
    let t = 0;
    const b = new TokenBucket(2, 2, () => t);
    assert.equal(b.reserve(0), 0);
    assert.equal(b.reserve(0), 0);
    assert.equal(b.reserve(100), undefined, 'next token in 500 ms');
    assert.equal(b.reserve(500), 500, 'reserved: wait 500 ms');
    assert.equal(b.reserve(500), undefined, 'the one after is 1000 ms away');
    assert.equal(b.reserve(1000), 1000);
    t += 1000;
    assert.ok(Math.abs(b.available() - 0) < 1e-9, 'reservations were paid by the refill');
    t += 10_000;
    assert.equal(b.available(), 2, 'capped at the burst');
    assert.throws(() => new TokenBucket(0), RangeError);
  });
});

// --- the manager against aedes -------------------------------------------------------------

interface Login {
  readonly clientId: string;
  readonly username: string | undefined;
  readonly password: string | undefined;
}

interface TestBroker {
  readonly port: number;
  readonly logins: Login[];
  /** Publishes by clients: which client id published on which topic. */
  readonly published: { clientId: string; topic: string }[];
  readonly connected: Set<string>;
  publish(topic: string, payload: string): Promise<void>;
  close(): Promise<void>;
}

/** aedes on 127.0.0.1:0; `refuse(username)` gives a CONNACK return code to refuse with. */
async function startBroker(
  refuse: (username: string | undefined) => 4 | 5 | undefined = () => undefined,
): Promise<TestBroker> {
  const logins: Login[] = [];
  const published: { clientId: string; topic: string }[] = [];
  const connected = new Set<string>();
  const aedes = await Aedes.createBroker({
    authenticate: (client, username, password, done) => {
      logins.push({ clientId: client.id, username, password: password?.toString('utf8') });
      const code = refuse(username);
      if (code === undefined) done(null, true);
      else {
        const err: AuthenticateError = Object.assign(new Error('refused'), { returnCode: code });
        done(err, null);
      }
    },
  });
  (aedes as EventEmitter).on('error', () => undefined);
  aedes.on('clientReady', (c) => connected.add(c.id));
  aedes.on('clientDisconnect', (c) => connected.delete(c.id));
  aedes.on('publish', (packet, client) => {
    if (client !== null) published.push({ clientId: client.id, topic: packet.topic });
  });
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    aedes.handle(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    port,
    logins,
    published,
    connected,
    publish: (topic, payload) =>
      new Promise<void>((resolve, reject) =>
        aedes.publish(
          {
            cmd: 'publish',
            topic,
            payload: Buffer.from(payload),
            qos: 1,
            retain: false,
            dup: false,
          },
          (err) => (err === undefined || err === null ? resolve() : reject(err)),
        ),
      ),
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

const managers: DeviceSessionManager[] = [];
const brokers: TestBroker[] = [];
after(async () => {
  await Promise.all(managers.map((m) => m.close()));
  await Promise.all(brokers.map((b) => b.close()));
});

interface Harness {
  readonly broker: TestBroker;
  readonly m: DeviceSessionManager;
  readonly commands: { device: DeviceKey; topic: string; payload: string }[];
  readonly secretCalls: string[];
  /** The manager's clock: its timers fire only when a test moves it. */
  readonly manual: ManualClock;
  /** Its wall time; setting it moves the clock (firing what falls due). */
  clock: number;
}

async function harness(
  opts: Partial<DeviceSessionOptions> = {},
  refuse?: (username: string | undefined) => 4 | 5 | undefined,
): Promise<Harness> {
  const broker = await startBroker(refuse);
  brokers.push(broker);
  const manual = new ManualClock(0, T0);
  const h: Harness = {
    broker,
    m: undefined as unknown as DeviceSessionManager,
    commands: [],
    secretCalls: [],
    manual,
    get clock(): number {
      return manual.wallNow();
    },
    set clock(wall: number) {
      manual.advance(wall - manual.wallNow());
    },
  };
  const m = new DeviceSessionManager({
    ...PER_DEVICE_DEFAULTS,
    url: `mqtt://127.0.0.1:${broker.port}`,
    auth: 'template',
    maxSessions: 100,
    connectRatePerSecond: 100,
    commandTopics: ['/sys/{pk}/{dk}/thing/service/#', '/sys/{pk}/{dk}/thing/model/down_raw'],
    publishTimeoutMs: 2000,
    replyTimeoutMs: 2000,
    connectTimeoutMs: 2000,
    secretOf: async (d) => {
      h.secretCalls.push(d.deviceKey);
      await tick(5);
      return `secret-of-${d.deviceKey}`;
    },
    onCommand: (device, topic, payload) => {
      h.commands.push({ device, topic, payload: payload.toString('utf8') });
    },
    clock: manual,
    // the tests sweep themselves (sweep()); moving the clock must not sweep on its own
    sweepIntervalMs: 3_600_000,
    ...opts,
  });
  managers.push(m);
  (h as { m: DeviceSessionManager }).m = m;
  return h;
}

const post = (dk: string): string => `/sys/${PK}/${dk}/thing/measurepoint/post`;

describe('DeviceSessionManager (aedes)', () => {
  it('logs in with the template credentials; falls back to 3.1.1 once for all', async () => {
    const h = await harness({
      clientIdTemplate: 'edge.{pk}.{dk}',
      passwordTemplate: 'pw-{secret}',
    });
    await h.m.publish(principal('d1'), post('d1'), Buffer.from('{}'));
    await h.m.publish(principal('d2'), post('d2'), Buffer.from('{}'));
    const ok = h.broker.logins.filter((l) => l.clientId === 'edge.prod1.d1');
    assert.deepEqual(ok.at(-1), {
      clientId: 'edge.prod1.d1',
      username: 'd1&prod1',
      password: 'pw-secret-of-d1',
    });
    assert.deepEqual(
      h.broker.published.map((p) => p.clientId + ' ' + p.topic),
      [`edge.prod1.d1 ${post('d1')}`, `edge.prod1.d2 ${post('d2')}`],
      'each device publishes from its own connection',
    );
    const s = h.m.stats();
    assert.equal(s.protocolVersion, 4);
    assert.equal(s.protocolFallbacks, 1);
    assert.equal(s.connects.ok, 2);
    assert.equal(s.connects.attempts, 3, 'one v5 attempt refused, then 3.1.1 for both');
    assert.equal(s.sessions.open, 2);
    assert.equal(s.publishes.ok, 2);
    assert.equal(s.state, 'connected');
    assert.doesNotMatch(JSON.stringify(s), /secret-of/);
  });

  it('EnOS login: signed clientId, username {dk}&{pk}, password from the device secret', async () => {
    const h = await harness({ auth: 'enos', protocol: '3.1.1' });
    await h.m.publish(
      principal('test', 'x', 30, '654321'),
      '/sys/654321/test/thing/measurepoint/post',
      Buffer.from('{}'),
    );
    const login = h.broker.logins.at(-1);
    assert.equal(login?.clientId, `test|securemode=2,signmethod=sha256,timestamp=${T0}|`);
    assert.equal(login?.username, 'test&654321');
    assert.equal(
      login?.password,
      enosMqttLogin({
        productKey: '654321',
        deviceKey: 'test',
        secret: 'secret-of-test',
        secureMode: 2,
        timestamp: T0,
      }).password,
    );
  });

  it('concurrent first requests of a device share one connect (single flight)', async () => {
    const h = await harness({ protocol: '3.1.1' });
    const p = principal('sf');
    await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        h.m.publish(
          i % 2 === 0 ? p : { ...p, sessionId: 'dtls-2' },
          post('sf'),
          Buffer.from(String(i)),
        ),
      ),
    );
    assert.deepEqual(h.secretCalls, ['sf']);
    assert.equal(h.broker.logins.length, 1);
    const s = h.m.stats();
    assert.equal(s.connects.attempts, 1);
    assert.equal(s.sessions.opened, 1);
    assert.equal(s.publishes.ok, 8);
    // a new DTLS session of the device reuses the connection
    await h.m.publish({ ...p, sessionId: 'dtls-3' }, post('sf'), Buffer.from('again'));
    assert.equal(h.m.stats().connects.attempts, 1);
    assert.ok(h.m.stats().sessions.reusedByNewDtlsSession >= 1);
  });

  it('max sessions: a further device gets BACKEND_OVERLOADED until one closes', async () => {
    const h = await harness({ protocol: '3.1.1', maxSessions: 2 });
    await h.m.publish(principal('m1'), post('m1'), Buffer.from('1'));
    await h.m.publish(principal('m2'), post('m2'), Buffer.from('2'));
    await rejectsWith(
      h.m.publish(principal('m3'), post('m3'), Buffer.from('3')),
      'BACKEND_OVERLOADED',
    );
    // devices with a session still work
    await h.m.publish(principal('m1'), post('m1'), Buffer.from('1b'));
    let s = h.m.stats();
    assert.equal(s.connects.refused['max-sessions'], 1);
    assert.equal(s.publishes.failed.overloaded, 1);
    assert.equal(s.sessions.open, 2);
    await h.m.closeDevice({ productKey: PK, deviceKey: 'm1' });
    await h.m.publish(principal('m3'), post('m3'), Buffer.from('3'));
    s = h.m.stats();
    assert.equal(s.sessions.closed.evicted, 1);
    assert.equal(s.sessions.open, 2);
    await until(() => !h.broker.connected.has('prod1.m1'), 2000, 'm1 disconnected');
  });

  it('connect rate limit: bounded wait for a slot, else BACKEND_OVERLOADED', async () => {
    const h = await harness({ protocol: '3.1.1', connectRatePerSecond: 2, connectWaitMs: 100 });
    await h.m.publish(principal('r1'), post('r1'), Buffer.from('1'));
    await h.m.publish(principal('r2'), post('r2'), Buffer.from('2'));
    // a wait for a slot would be a timer on the manual clock (and never end, the clock
    // standing still): refused at once means no timer was armed
    const timers = h.manual.pending;
    await rejectsWith(
      h.m.publish(principal('r3'), post('r3'), Buffer.from('3')),
      'BACKEND_OVERLOADED',
    );
    assert.equal(h.manual.pending, timers, 'refused at once, without waiting');
    assert.equal(h.m.stats().connects.refused['rate-limited'], 1);
    assert.equal(h.broker.logins.length, 2);
    // 450 ms later (injected clock) the next token is 50 ms away: within the wait bound
    h.clock += 450;
    let done = false;
    const waiting = h.m.publish(principal('r3'), post('r3'), Buffer.from('3')).then(() => {
      done = true;
    });
    // the wait is a timer of the manual clock: armed, then not due 1 ms before the slot
    await until(() => h.manual.pending === timers + 1, 2000, 'the wait for a slot');
    h.clock += 49;
    await new Promise((r) => setImmediate(r));
    assert.equal(h.manual.pending, timers + 1, 'still waiting at 49 ms');
    assert.ok(!done && h.broker.logins.length === 2, 'waited for its slot');
    h.clock += 1;
    await waiting;
    assert.equal(h.broker.logins.length, 3);
    // requests of devices with a session are not rate limited
    await h.m.publish(principal('r1'), post('r1'), Buffer.from('1b'));
  });

  it('closes a session when its lifetime lapses without traffic; every request refreshes it', async () => {
    const h = await harness({ protocol: '3.1.1' });
    const p = principal('life', 'dtls-1', 30);
    await h.m.publish(p, post('life'), Buffer.from('1'));
    assert.ok(h.broker.connected.has('prod1.life'));
    h.clock += 29_000;
    assert.equal(h.m.sweep(), 0);
    await h.m.publish(p, post('life'), Buffer.from('2')); // refresh
    h.clock += 29_000;
    assert.equal(h.m.sweep(), 0);
    h.m.touch(p); // refresh without a publish
    h.clock += 29_999;
    assert.equal(h.m.sweep(), 0);
    h.clock += 1;
    assert.equal(h.m.sweep(), 1);
    assert.equal(h.m.isOpen(p), false);
    assert.equal(h.m.stats().sessions.closed.lifetime, 1);
    await until(() => !h.broker.connected.has('prod1.life'), 2000, 'broker sees the disconnect');
    // the next request opens a new session
    await h.m.publish(p, post('life'), Buffer.from('3'));
    assert.equal(h.m.stats().sessions.opened, 2);
  });

  it('a refused login is BACKEND_DEVICE_UNAUTHORIZED, remembered, not retried meanwhile', async () => {
    const h = await harness({ protocol: '3.1.1', refusalMemoryMs: 30_000 }, (u) =>
      u === 'bad&prod1' ? 5 : undefined,
    );
    const e = await rejectsWith(
      h.m.publish(principal('bad'), post('bad'), Buffer.from('1')),
      'BACKEND_DEVICE_UNAUTHORIZED',
    );
    assert.ok(e instanceof DeviceUnauthorizedError);
    assert.equal(e.remembered, false);
    assert.doesNotMatch(e.message, /secret-of/);
    for (let i = 0; i < 5; i++) {
      const again = await rejectsWith(
        h.m.publish(principal('bad'), post('bad'), Buffer.from('1')),
        'BACKEND_DEVICE_UNAUTHORIZED',
      );
      assert.equal((again as DeviceUnauthorizedError).remembered, true);
    }
    assert.equal(h.broker.logins.length, 1, 'one CONNECT only');
    let s = h.m.stats();
    assert.equal(s.connects.failed.unauthorized, 1);
    assert.equal(s.connects.refused['remembered-unauthorized'], 5);
    assert.equal(s.publishes.failed.unauthorized, 6);
    assert.equal(s.connects.rememberedRefusals, 1);
    assert.equal(s.sessions.open, 0);
    assert.equal(s.sessions.connecting, 0);
    // others are not affected
    await h.m.publish(principal('good'), post('good'), Buffer.from('1'));
    // after the memory, one new attempt
    h.clock += 30_000;
    await rejectsWith(
      h.m.publish(principal('bad'), post('bad'), Buffer.from('1')),
      'BACKEND_DEVICE_UNAUTHORIZED',
    );
    s = h.m.stats();
    assert.equal(s.connects.failed.unauthorized, 2);
    assert.doesNotMatch(JSON.stringify(s), /secret-of/);
  });

  it('no device secret: BACKEND_DEVICE_UNAUTHORIZED; lookup failure: BACKEND_UNAVAILABLE', async () => {
    const h = await harness({
      protocol: '3.1.1',
      secretOf: (d) =>
        d.deviceKey === 'boom'
          ? Promise.reject(new Error('registry down'))
          : Promise.resolve(undefined),
    });
    await rejectsWith(
      h.m.publish(principal('nobody'), post('nobody'), Buffer.from('1')),
      'BACKEND_DEVICE_UNAUTHORIZED',
    );
    await rejectsWith(
      h.m.publish(principal('boom'), post('boom'), Buffer.from('1')),
      'BACKEND_UNAVAILABLE',
    );
    const s = h.m.stats();
    assert.equal(s.connects.failed['no-secret'], 1);
    assert.equal(s.connects.failed['secret-error'], 1);
    assert.equal(s.connects.attempts, 0);
    assert.equal(s.sessions.connecting, 0);
  });

  it('hands commands on the device topics to onCommand (prefix stripped), ignores echoes', async () => {
    const h = await harness({ protocol: '3.1.1', topicPrefix: 'tenant' });
    await h.m.publish(principal('c1'), post('c1'), Buffer.from('1'));
    await h.m.publish(principal('c2'), post('c2'), Buffer.from('1'));
    assert.equal(h.broker.published[0]?.topic, `tenant${post('c1')}`);
    await h.broker.publish(`tenant/sys/${PK}/c1/thing/service/reboot`, '{"id":"9"}');
    await h.broker.publish(`tenant/sys/${PK}/c2/thing/model/down_raw`, 'raw');
    // the device's own reply comes back on its `#` filter: not a command
    await h.m.publish(
      principal('c1'),
      `/sys/${PK}/c1/thing/service/reboot_reply`,
      Buffer.from('{}'),
    );
    await h.broker.publish(`/sys/${PK}/c1/thing/service/unprefixed`, 'x');
    // a barrier instead of a pause: c1's connection gets this command after the unprefixed
    // message (one broker, one subscriber connection: delivered in order), so once it is
    // here, a wrongly handed-over unprefixed message would be here too
    await h.broker.publish(`tenant/sys/${PK}/c1/thing/service/barrier`, 'b');
    await until(
      () =>
        h.commands.some((c) => c.payload === 'b') &&
        h.commands.some((c) => c.device.deviceKey === 'c2') &&
        h.m.stats().replies.unmatched >= 1,
      2000,
      'commands',
    );
    // in order per device connection (the two connections' order is the broker's)
    const of = (dk: string): string[][] =>
      h.commands.filter((c) => c.device.deviceKey === dk).map((c) => [c.topic, c.payload]);
    assert.deepEqual(of('c1'), [
      [`/sys/${PK}/c1/thing/service/reboot`, '{"id":"9"}'],
      [`/sys/${PK}/c1/thing/service/barrier`, 'b'],
    ]);
    assert.deepEqual(of('c2'), [[`/sys/${PK}/c2/thing/model/down_raw`, 'raw']]);
    assert.equal(h.commands.length, 3);
    assert.equal(h.m.stats().commands.received, 3);
  });

  it('request: reply on the device connection; onCommand failures are counted', async () => {
    const h = await harness({
      protocol: '3.1.1',
      onCommand: () => Promise.reject(new Error('store down')),
    });
    const p = principal('q1');
    const pending = h.m.request(
      p,
      post('q1'),
      Buffer.from('{"id":"5"}'),
      `${post('q1')}_reply`,
      '5',
    );
    await until(() => h.broker.published.length === 1, 2000, 'the request');
    await h.broker.publish(`${post('q1')}_reply`, '{"id":"4","code":200}');
    await h.broker.publish(`${post('q1')}_reply`, '{"id":"5","code":200}');
    assert.equal((await pending).toString(), '{"id":"5","code":200}');
    const late = h.m.request(p, post('q1'), Buffer.from('{"id":"6"}'), `${post('q1')}_reply`, '6', {
      replyTimeoutMs: 50,
    });
    await until(() => h.broker.published.length === 2, 2000, 'the second request');
    // its PUBACK: the reply deadline counts from there
    await until(() => h.m.stats().publishes.inflight === 0, 2000, 'the PUBACK');
    h.clock += 50;
    await rejectsWith(late, 'BACKEND_REPLY_TIMEOUT');
    await h.broker.publish(`/sys/${PK}/q1/thing/service/x`, '{}');
    await until(() => h.m.stats().commands.failed === 1, 2000, 'failed command');
    const s = h.m.stats();
    assert.equal(s.replies.matched, 1);
    assert.equal(s.replies.timedOut, 1);
    assert.ok(s.replies.unmatched >= 1);
  });

  it('reply deadlines wait in the deadline queue: no host timer per request', async () => {
    const h = await harness({ protocol: '3.1.1' });
    const p = principal('q2');
    await h.m.publish(p, post('q2'), Buffer.from('{}')); // the session is up
    const timersBefore = h.manual.pending;
    const pending = [1, 2, 3, 4, 5].map((i) =>
      h.m.request(p, post('q2'), Buffer.from(`{"id":"${i}"}`), `${post('q2')}_reply`, `${i}`, {
        replyTimeoutMs: 1000,
      }),
    );
    await until(() => h.broker.published.length === 6, 2000, 'the requests');
    // their PUBACKs: the reply deadlines are set
    await until(() => h.m.stats().publishes.inflight === 0, 2000, 'the PUBACKs');
    assert.ok(
      h.manual.pending <= timersBefore + 1,
      `host timers ${timersBefore} before, ${h.manual.pending} with five replies awaited`,
    );
    h.clock += 999; // due deadlines fire inside the clock's advance
    assert.equal(h.m.stats().replies.timedOut, 0);
    h.clock += 1;
    for (const r of pending) await rejectsWith(r, 'BACKEND_REPLY_TIMEOUT');
    assert.equal(h.m.stats().replies.timedOut, 5);
  });

  it('closeDevice while opening fails the waiting requests and leaves nothing behind', async () => {
    let release: (v: string) => void = () => undefined;
    const h = await harness({
      protocol: '3.1.1',
      secretOf: () => new Promise<string>((r) => (release = r)),
    });
    const p = principal('ab');
    const pending = h.m.publish(p, post('ab'), Buffer.from('1'));
    await until(() => h.m.stats().sessions.connecting === 1, 2000, 'connecting');
    await h.m.closeDevice(p);
    release('late');
    await rejectsWith(pending, 'BACKEND_UNAVAILABLE');
    const s = h.m.stats();
    assert.equal(s.sessions.connecting, 0);
    assert.equal(s.connects.failed.aborted, 1);
    assert.equal(s.connects.attempts, 0);
  });

  it('broker unreachable: BACKEND_UNAVAILABLE at once, state down; close() fails with BACKEND_CLOSED', async () => {
    // failing at all shows it did not wait for the connect timeout
    const h = await harness({
      protocol: '3.1.1',
      probeIntervalMs: 50,
      connectTimeoutMs: UNREACHED_DEADLINE_MS,
    });
    const port = h.broker.port;
    await h.broker.close();
    brokers.splice(brokers.indexOf(h.broker), 1);
    await rejectsWith(
      h.m.publish(principal('u1'), post('u1'), Buffer.from('1')),
      'BACKEND_UNAVAILABLE',
    );
    assert.equal(h.m.stats().connects.failed.unreachable, 1);
    assert.equal(h.m.state(), 'down');
    h.m.start();
    assert.equal(await settlesAt(h.manual, 100, h.m.waitConnected(100), 'waitConnected'), false);
    assert.ok(port > 0);
    await h.m.close();
    assert.equal(h.m.state(), 'down');
    await rejectsWith(h.m.publish(principal('u1'), post('u1'), Buffer.from('1')), 'BACKEND_CLOSED');
  });

  it('close() ends all sessions (shutdown)', async () => {
    const h = await harness({ protocol: '3.1.1' });
    h.m.start();
    assert.equal(await h.m.waitConnected(2000), true, 'probe finds the broker');
    await h.m.publish(principal('z1'), post('z1'), Buffer.from('1'));
    await h.m.publish(principal('z2'), post('z2'), Buffer.from('1'));
    await h.m.close();
    const s = h.m.stats();
    assert.equal(s.sessions.closed.shutdown, 2);
    assert.equal(s.sessions.open, 0);
    await until(() => h.broker.connected.size === 0, 2000, 'all disconnected');
  });

  it('forDevice: the bridge MessageBackend shape, bound to one device', async () => {
    const h = await harness({ protocol: '3.1.1' });
    // the manager itself is the router's DeviceMessageBackend (checked by the compiler)
    const perDevice: DeviceMessageBackend = h.m;
    assert.equal(typeof perDevice.publish, 'function');
    const backend = h.m.forDevice(principal('fd'));
    await backend.publish(post('fd'), Buffer.from('{}'));
    const pending = backend.request(
      post('fd'),
      Buffer.from('{"id":"1"}'),
      `${post('fd')}_reply`,
      '1',
    );
    await until(() => h.broker.published.length === 2, 2000, 'the request');
    await h.broker.publish(`${post('fd')}_reply`, '{"id":"1","code":200}');
    assert.equal((await pending).toString(), '{"id":"1","code":200}');
    assert.deepEqual(
      h.broker.published.map((p) => p.clientId),
      ['prod1.fd', 'prod1.fd'],
    );
  });

  it('refuses bad templates and bad topics', async () => {
    assert.throws(
      () =>
        new DeviceSessionManager({
          ...PER_DEVICE_DEFAULTS,
          url: 'mqtt://127.0.0.1:1',
          auth: 'template',
          usernameTemplate: '{secret}',
          maxSessions: 1,
          connectRatePerSecond: 1,
          commandTopics: ['/x'],
          secretOf: () => Promise.resolve('s'),
          onCommand: () => undefined,
        }),
      PerDeviceConfigError,
    );
    const h = await harness({ protocol: '3.1.1' });
    await rejectsWith(
      h.m.publish(principal('t'), '/sys/+/x', Buffer.from('1')),
      'BACKEND_BAD_TOPIC',
    );
    assert.equal(h.broker.logins.length, 0);
  });
});
