/**
 * Per-device MQTT sessions against Mosquitto 2 with password authentication:
 * the test starts its own mosquitto on a free port with a generated password file and an
 * ACL that lets each device use only its own topics. Two devices log in with their own
 * credentials (template login: username `{dk}&{pk}`, password `{secret}`), a third with a
 * wrong secret is refused. Lifetimes run on an injected clock (no 30 s of real waiting).
 */
import { UNREACHED_DEADLINE_MS, clockReading } from '../../helpers/clock.js';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import type { DeviceKey, Principal } from '../../../src/bridge/types.js';
import {
  DeviceSessionManager,
  type DeviceSessionOptions,
} from '../../../src/bridge/mqtt/per-device.js';
import { MqttBackendError } from '../../../src/bridge/mqtt/errors.js';
import {
  enosReply,
  killBrokers,
  Mosquitto,
  platform,
  subscriber,
  until,
  type Received,
} from '../bridge/brokers.js';

const PK = 'pk1';
const SECRETS: Record<string, string> = { devA: 'secret-A', devB: 'secret-B', devC: 'secret-C' };
/** What the proxy's secret chain says; devC's is not what the broker has. */
const KNOWN: Record<string, string> = { devA: 'secret-A', devB: 'secret-B', devC: 'wrong-C' };
const PLATFORM = { username: 'platform', password: 'platform-pw' };

const post = (dk: string): string => `/sys/${PK}/${dk}/thing/measurepoint/post`;
const service = (dk: string, name: string): string => `/sys/${PK}/${dk}/thing/service/${name}`;

function device(dk: string, sessionId = 'dtls-1', lifetime = 30): Principal {
  return { productKey: PK, deviceKey: dk, secureMode: 2, lifetime, assetId: undefined, sessionId };
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  try {
    await p;
  } catch (e: unknown) {
    assert.ok(e instanceof MqttBackendError, `an MqttBackendError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return;
  }
  assert.fail(`expected ${code}`);
}

/** Password file (mosquitto_passwd) and ACL for the devices and the platform. */
function writeAuthFiles(dir: string): { passwd: string; acl: string } {
  const passwd = join(dir, 'passwd');
  const users: [string, string][] = [
    [PLATFORM.username, PLATFORM.password],
    ...Object.entries(SECRETS).map(([dk, s]): [string, string] => [`${dk}&${PK}`, s]),
  ];
  users.forEach(([user, pass], i) => {
    const args = i === 0 ? ['-b', '-c', passwd, user, pass] : ['-b', passwd, user, pass];
    const r = spawnSync('mosquitto_passwd', args, { encoding: 'utf8', timeout: 5000 });
    assert.equal(r.status, 0, `mosquitto_passwd: ${r.stderr}`);
  });
  const acl = join(dir, 'acl');
  const lines = [`user ${PLATFORM.username}`, 'topic readwrite #', ''];
  for (const dk of Object.keys(SECRETS)) {
    lines.push(`user ${dk}&${PK}`, `topic readwrite /sys/${PK}/${dk}/#`, '');
  }
  writeFileSync(acl, lines.join('\n'));
  // Mosquitto started as root drops to the `mosquitto` user before it reads these files.
  chmodSync(dir, 0o755);
  chmodSync(passwd, 0o644);
  chmodSync(acl, 0o644);
  return { passwd, acl };
}

describe('per-device MQTT sessions against Mosquitto with password auth', () => {
  let broker: Mosquitto;
  let dir: string;
  const managers: DeviceSessionManager[] = [];
  const clients: MqttClient[] = [];
  let offset = 0;
  const commands: { device: DeviceKey; topic: string; payload: string }[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-perdev-'));
    const { passwd, acl } = writeAuthFiles(dir);
    broker = await Mosquitto.start({
      config: ['allow_anonymous false', `password_file ${passwd}`, `acl_file ${acl}`].join('\n'),
    });
  });

  after(async () => {
    await Promise.all(managers.map((m) => m.close()));
    for (const c of clients) c.end(true);
    await killBrokers();
    rmSync(dir, { recursive: true, force: true });
  });

  function manager(opts: Partial<DeviceSessionOptions> = {}): DeviceSessionManager {
    const m = new DeviceSessionManager({
      url: `mqtt://127.0.0.1:${broker.port}`,
      auth: 'template',
      clientIdTemplate: '{pk}.{dk}',
      usernameTemplate: '{dk}&{pk}',
      passwordTemplate: '{secret}',
      protocol: 'auto',
      maxSessions: 10,
      connectRatePerSecond: 50,
      commandTopics: ['/sys/{pk}/{dk}/thing/service/#', '/sys/{pk}/{dk}/thing/model/down_raw'],
      publishTimeoutMs: 2000,
      replyTimeoutMs: 2000,
      connectTimeoutMs: 2000,
      sweepIntervalMs: 20,
      probeIntervalMs: 50,
      secretOf: (d) => Promise.resolve(KNOWN[d.deviceKey]),
      onCommand: (d, topic, payload) => {
        commands.push({ device: d, topic, payload: payload.toString('utf8') });
      },
      clock: clockReading(() => Date.now() + offset),
      ...opts,
    });
    managers.push(m);
    return m;
  }

  async function platformSubscriber(filter: string): Promise<Received[]> {
    const { client, messages } = await subscriber(broker.port, filter, PLATFORM);
    clients.push(client);
    return messages;
  }

  it('two devices log in with their own credentials and publish from their own connections', async () => {
    const m = manager();
    m.start();
    const seen = await platformSubscriber(`/sys/${PK}/+/thing/measurepoint/post`);
    await m.publish(device('devA'), post('devA'), Buffer.from('{"id":"a1"}'));
    await m.publish(device('devB'), post('devB'), Buffer.from('{"id":"b1"}'));
    await until(() => seen.length === 2, 2000, 'both publishes at the platform');
    assert.deepEqual(
      seen.map((r) => [r.topic, r.payload.toString()]),
      [
        [post('devA'), '{"id":"a1"}'],
        [post('devB'), '{"id":"b1"}'],
      ],
    );
    // the broker saw each device log in under its own name (p5: MQTT 5)
    assert.match(broker.log, /as pk1\.devA \(p5, c1, k60, u'devA&pk1'\)/);
    assert.match(broker.log, /as pk1\.devB \(p5, c1, k60, u'devB&pk1'\)/);
    // the ACL lets devA's login publish only on devA's topics: the publish goes out on
    // devA's own connection, so it is refused (MQTT 5 PUBACK 0x87) and never delivered
    let refused = false;
    try {
      await m.publish(device('devA'), post('devB'), Buffer.from('{"id":"forged"}'));
    } catch (e: unknown) {
      refused = e instanceof MqttBackendError && e.code === 'BACKEND_PUBLISH_REJECTED';
    }
    // a later publish on devA's connection reaches the platform after the forged one would have
    await m.publish(device('devA'), post('devA'), Buffer.from('{"id":"a2"}'));
    await until(() => seen.length >= 3, 2000, 'the later publish at the platform');
    assert.equal(refused, true, 'MQTT 5 PUBACK 0x87 not authorized');
    assert.deepEqual(
      seen.slice(2).map((r) => [r.topic, r.payload.toString()]),
      [[post('devA'), '{"id":"a2"}']],
      'nothing from devA on devB topics',
    );
    const s = m.stats();
    assert.equal(s.sessions.open, 2);
    assert.equal(s.protocolVersion, 5);
    assert.equal(s.connects.attempts, 2);
    assert.equal(s.publishes.ok, 3 + (refused ? 0 : 1));
    assert.equal(s.publishes.failed.rejected, refused ? 1 : 0);
    assert.equal(m.state(), 'connected');
    assert.doesNotMatch(JSON.stringify(s), /secret-[ABC]/);
    await m.close();
  });

  it('a device with a wrong secret is refused: BACKEND_DEVICE_UNAUTHORIZED, counted, not retried', async () => {
    const m = manager();
    const logStart = broker.log.length;
    for (let i = 0; i < 5; i++) {
      await rejectsWith(
        m.publish(device('devC'), post('devC'), Buffer.from('{}')),
        'BACKEND_DEVICE_UNAUTHORIZED',
      );
    }
    // a device without a secret is refused the same way, without a CONNECT
    const unknown = device('devX');
    await rejectsWith(
      m.request(unknown, post('devX'), Buffer.from('{}'), `${post('devX')}_reply`, '1'),
      'BACKEND_DEVICE_UNAUTHORIZED',
    );
    const s = m.stats();
    assert.equal(s.connects.attempts, 1);
    assert.equal(s.connects.failed.unauthorized, 1);
    assert.equal(s.connects.failed['no-secret'], 1);
    assert.equal(s.connects.refused['remembered-unauthorized'], 4);
    assert.equal(s.publishes.failed.unauthorized, 6);
    assert.equal(s.sessions.open, 0);
    // devA still works next to it; the broker logs its login after any refused one
    await m.publish(device('devA'), post('devA'), Buffer.from('{}'));
    await until(() => broker.log.includes('as pk1.devA', logStart), 2000, "devA's login logged");
    const refusals = (broker.log.slice(logStart).match(/not authorised/g) ?? []).length;
    assert.equal(refusals, 1, 'one refused CONNECT (devC); devX has no secret, no CONNECT');
    assert.doesNotMatch(broker.log, /secret-[ABC]|wrong-C/);
    await m.close();
  });

  it('commands on a device command topic reach onCommand for that device only', async () => {
    const m = manager();
    await m.publish(device('devA'), post('devA'), Buffer.from('{}'));
    await m.publish(device('devB'), post('devB'), Buffer.from('{}'));
    commands.length = 0;
    const { client } = await subscriber(broker.port, '/none', PLATFORM);
    clients.push(client);
    await client.publishAsync(service('devA', 'reboot'), '{"id":"c1","method":"reboot"}', {
      qos: 1,
    });
    await client.publishAsync(`/sys/${PK}/devB/thing/model/down_raw`, Buffer.from([1, 2, 3]), {
      qos: 1,
    });
    await until(() => commands.length >= 2, 2000, 'two commands');
    // a later command to each device comes after any wrong extra copy on that device's session
    for (const dk of ['devA', 'devB']) {
      await client.publishAsync(service(dk, 'sync'), '{}', { qos: 1 });
    }
    const synced = (): boolean =>
      ['devA', 'devB'].every((dk) => commands.some((c) => c.topic === service(dk, 'sync')));
    await until(synced, 2000, 'the later commands');
    assert.deepEqual(
      commands.filter((c) => !c.topic.endsWith('/sync')).map((c) => [c.device.deviceKey, c.topic]),
      [
        ['devA', service('devA', 'reboot')],
        ['devB', `/sys/${PK}/devB/thing/model/down_raw`],
      ],
    );
    assert.equal(commands.length, 4);
    assert.equal(commands[0]?.payload, '{"id":"c1","method":"reboot"}');
    assert.equal(m.stats().commands.received, 4);
    commands.length = 0;
    await m.close();
  });

  it('request: the reply reaches the device session that asked', async () => {
    const m = manager();
    const p = await platform(
      broker.port,
      `/sys/${PK}/+/thing/measurepoint/post`,
      (_t, payload) => enosReply(payload),
      undefined,
      PLATFORM,
    );
    clients.push(p);
    const reply = await m.request(
      device('devB'),
      post('devB'),
      Buffer.from('{"id":"42","params":{}}'),
      `${post('devB')}_reply`,
      '42',
    );
    assert.deepEqual(JSON.parse(reply.toString()), { id: '42', code: 200, data: {} });
    assert.equal(m.stats().replies.matched, 1);
    await m.close();
  });

  it('the session closes when the lifetime lapses without traffic (injected clock)', async () => {
    const m = manager();
    offset = 0;
    const a = device('devA', 'dtls-7', 30);
    await m.publish(a, post('devA'), Buffer.from('{}'));
    const disconnects = (): number =>
      (broker.log.match(/Client pk1\.devA disconnected\./g) ?? []).length;
    const before = disconnects();
    offset += 20_000;
    await m.publish({ ...a, sessionId: 'dtls-8' }, post('devA'), Buffer.from('{}')); // refreshes
    offset += 20_000;
    m.sweep(); // the sweep the timer would run
    assert.equal(m.isOpen(a), true, '40 s after the first, 20 s after the last request');
    offset += 11_000;
    await until(() => !m.isOpen(a), 2000, 'lifetime close');
    await until(() => disconnects() === before + 1, 2000, 'mosquitto sees the DISCONNECT');
    const s = m.stats();
    assert.equal(s.sessions.closed.lifetime, 1);
    assert.equal(s.sessions.reusedByNewDtlsSession, 1);
    assert.equal(s.connects.attempts, 1);
    // no session, no command delivery
    commands.length = 0;
    const { client } = await subscriber(broker.port, '/none', PLATFORM);
    clients.push(client);
    await client.publishAsync(service('devA', 'late'), '{}', { qos: 1 });
    // the broker routes the platform's publishes in order: a command to a device with a
    // session, published after, arrives after the late one would have
    await m.publish(device('devB'), post('devB'), Buffer.from('{}'));
    await client.publishAsync(service('devB', 'sync'), '{}', { qos: 1 });
    await until(() => commands.length > 0, 2000, 'the command to devB');
    assert.deepEqual(
      commands.map((c) => c.topic),
      [service('devB', 'sync')],
    );
    offset = 0;
    await m.close();
  });

  it('broker stopped: requests fail fast with BACKEND_UNAVAILABLE; back after a restart', async () => {
    // failing at all shows it fails fast, without waiting for a deadline
    const never = UNREACHED_DEADLINE_MS;
    const m = manager({ publishTimeoutMs: never, replyTimeoutMs: never, connectTimeoutMs: never });
    m.start();
    await m.publish(device('devA'), post('devA'), Buffer.from('{}'));
    await broker.stop();
    await until(() => !m.isOpen(device('devA')), 2000, 'session lost');
    await rejectsWith(
      m.publish(device('devA'), post('devA'), Buffer.from('{}')),
      'BACKEND_UNAVAILABLE',
    );
    await rejectsWith(
      m.publish(device('devB'), post('devB'), Buffer.from('{}')),
      'BACKEND_UNAVAILABLE',
    );
    await until(() => m.state() === 'down', 2000, 'state down');
    const s = m.stats();
    assert.equal(s.sessions.closed.error, 1);
    assert.equal(s.connects.failed.unreachable, 2);
    assert.equal(s.publishes.failed.unavailable, 2);
    await broker.restart();
    await until(() => m.state() === 'connected', 2000, 'probe sees the broker');
    await m.publish(device('devA'), post('devA'), Buffer.from('{}'));
    assert.equal(m.stats().sessions.opened, 2);
    await m.close();
  });

  it('close() ends all sessions', async () => {
    const m = manager();
    await m.publish(device('devA'), post('devA'), Buffer.from('{}'));
    await m.publish(device('devB'), post('devB'), Buffer.from('{}'));
    const count = (dk: string): number =>
      (broker.log.match(new RegExp(`Client pk1\\.${dk} disconnected\\.`, 'g')) ?? []).length;
    const a0 = count('devA');
    const b0 = count('devB');
    await m.close();
    assert.equal(m.stats().sessions.closed.shutdown, 2);
    assert.equal(m.stats().sessions.open, 0);
    await until(() => count('devA') === a0 + 1 && count('devB') === b0 + 1, 2000, 'DISCONNECTs');
    await rejectsWith(m.publish(device('devA'), post('devA'), Buffer.from('{}')), 'BACKEND_CLOSED');
  });
});
