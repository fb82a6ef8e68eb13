/**
 * The MQTT connection primitive's parts the owners share (`src/bridge/mqtt/connection.ts`):
 * the protocol level choice, and a per-device publish's PUBACK deadline and in-flight cap,
 * which run on the manager's clock (a `TimerQueue`), against an aedes broker that holds a
 * publish without acknowledging it.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext, createServer as createTlsServer } from 'node:tls';
import { promisify } from 'node:util';
import { Aedes, type AedesOptions } from 'aedes';
import { connect } from 'mqtt';
import {
  brokerTarget,
  CLOSE_GUARD_MS,
  MqttConnection,
  ProtocolChoice,
} from '../../../src/bridge/mqtt/connection.js';
import { MqttBackendError } from '../../../src/bridge/mqtt/errors.js';
import { DeviceSessionManager } from '../../../src/bridge/mqtt/per-device.js';
import { PublishCounters } from '../../../src/bridge/mqtt/stats.js';
import type { Principal } from '../../../src/bridge/types.js';
import { ManualClock } from '../../../src/time/clock.js';
import { settlesAt, UNREACHED_DEADLINE_MS } from '../../helpers/clock.js';
import { PER_DEVICE_DEFAULTS } from '../../helpers/component-defaults.js';

const execFileAsync = promisify(execFile);

/** mqtt-packet's table of every two-byte number, which a plain mqtt.js client fills on its first write. */
const mqttPacketNumbers = (() => {
  const require = createRequire(import.meta.url);
  const numbers = require('mqtt-packet/numbers.js') as { cache: Record<number, Buffer> };
  const { writeToStream } = require('mqtt-packet') as {
    writeToStream: { cacheNumbers: boolean };
  };
  return {
    /** How many numbers the table holds. */
    generated: (): number => Object.keys(numbers.cache).length,
    /** As when mqtt-packet is loaded: no table yet, filled by the first packet written. */
    reset(): void {
      for (const k of Object.keys(numbers.cache)) delete numbers.cache[Number(k)];
      writeToStream.cacheNumbers = true;
    },
  };
})();
describe('ProtocolChoice', () => {
  it('auto: a refused 5 switches to 3.1.1 once, for every connection after it', () => {
    const logs: string[] = [];
    const c = new ProtocolChoice('auto', () => logs.push('fallback'));
    assert.equal(c.level, 5);
    assert.equal(c.refused(5), true, 'retry at once with 3.1.1');
    assert.equal(c.level, 4);
    // another connection that was already trying 5 when the first was refused
    assert.equal(c.refused(5), true);
    assert.equal(c.fallbacks, 1);
    assert.deepEqual(logs, ['fallback']);
    assert.equal(c.refused(4), false, '3.1.1 refused too: nothing left to try');
  });

  it('a configured level is never changed', () => {
    const five = new ProtocolChoice('5', () => assert.fail('no fallback'));
    assert.equal(five.refused(5), false);
    assert.equal(five.level, 5);
    const four = new ProtocolChoice('3.1.1', () => assert.fail('no fallback'));
    assert.equal(four.level, 4);
    assert.equal(four.refused(4), false);
    assert.equal(four.fallbacks + five.fallbacks, 0);
  });
});

describe('PublishCounters', () => {
  it('counts acknowledgements with their latency and failures by reason', () => {
    const c = new PublishCounters(['a', 'b'] as const, (e) => (e === 'x' ? 'a' : 'b'));
    c.acked(3);
    c.failure('x');
    c.failure('y');
    c.failure('y');
    assert.equal(c.ok, 1);
    assert.deepEqual(c.failed, { a: 1, b: 2 });
    assert.equal(c.latency.snapshot().count, 1);
    assert.equal(c.latency.snapshot().sumMs, 3);
  });
});

/** aedes behind TLS (or TCP) on `host`:0; `names`: the SNI server names clients sent. */
async function aedesOn(
  host: string,
  tls: { key: string; cert: string } | undefined,
  options?: AedesOptions,
): Promise<{ port: number; names: string[]; close(): Promise<void> }> {
  const aedes = await Aedes.createBroker(options);
  (aedes as EventEmitter).on('error', () => undefined);
  const names: string[] = [];
  const sockets = new Set<Socket>();
  const handle = (socket: Socket): void => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    aedes.handle(socket);
  };
  const server: Server =
    tls === undefined
      ? createServer(handle)
      : createTlsServer(
          {
            ...tls,
            SNICallback: (name, cb) => {
              names.push(name);
              cb(null, createSecureContext(tls));
            },
          },
          handle,
        );
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    names,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/**
 * aedes on 127.0.0.1:0 that takes publishes on `hold/...` and never acknowledges them;
 * `firstHeld` settles when the first such publish has reached it.
 */
async function holdingBroker(): Promise<{
  port: number;
  held: string[];
  firstHeld: Promise<void>;
  close(): Promise<void>;
}> {
  const held: string[] = [];
  let reached = (): void => undefined;
  const firstHeld = new Promise<void>((resolve) => (reached = resolve));
  const broker = await aedesOn('127.0.0.1', undefined, {
    authorizePublish: (_client, packet, done) => {
      if (packet.topic.includes('/hold/')) {
        held.push(packet.topic);
        reached();
      } else done(null);
    },
  });
  return { ...broker, held, firstHeld };
}

describe('per-device publish deadline and in-flight cap', () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('no PUBACK: BACKEND_PUBACK_TIMEOUT when the clock passes publishTimeoutMs; a full device is refused', async () => {
    // mqtt-packet's number table and its switch are process-wide: a plain mqtt.js client of a
    // file run before this one in the same process (scripts/test-groups.mjs) may have filled
    // it. Back to mqtt-packet's own state at load, so that only this test's connections count.
    mqttPacketNumbers.reset();
    const broker = await holdingBroker();
    cleanups.push(() => broker.close());
    const clock = new ManualClock();
    const m = new DeviceSessionManager({
      ...PER_DEVICE_DEFAULTS,
      url: `mqtt://127.0.0.1:${broker.port}`,
      auth: 'template',
      protocol: '3.1.1',
      maxSessions: 10,
      connectRatePerSecond: 10,
      commandTopics: ['/sys/{pk}/{dk}/thing/service/#'],
      publishTimeoutMs: 3000,
      replyTimeoutMs: 3000,
      connectTimeoutMs: 2000,
      maxInflightPerDevice: 1,
      secretOf: () => Promise.resolve('secret'),
      onCommand: () => undefined,
      clock,
    });
    cleanups.push(() => m.close());
    const device: Principal = {
      productKey: 'pkDeadline',
      deviceKey: 'dk1',
      secureMode: 2,
      lifetime: 3600,
      assetId: undefined,
      sessionId: 's1',
    };
    await m.publish(device, '/sys/pkDeadline/dk1/thing/ok', Buffer.from('1'));
    assert.equal(m.stats().publishes.ok, 1);

    const held = m.publish(device, '/sys/pkDeadline/dk1/hold/a', Buffer.from('2'));
    const outcome = held.then(
      () => 'resolved',
      (e: unknown) => (e instanceof MqttBackendError ? e.code : String(e)),
    );
    await broker.firstHeld;
    assert.equal(broker.held.length, 1, 'the broker holds the publish');

    // the device's one in-flight slot is taken: refused at once, nothing sent
    await assert.rejects(
      m.publish(device, '/sys/pkDeadline/dk1/hold/b', Buffer.from('3')),
      (e: unknown) => e instanceof MqttBackendError && e.code === 'BACKEND_OVERLOADED',
    );
    assert.equal(m.stats().publishes.failed.overloaded, 1);

    clock.advance(2999);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(m.stats().publishes.failed['puback-timeout'], 0, 'not before its deadline');
    clock.advance(1);
    await new Promise((resolve) => setImmediate(resolve));
    const s = m.stats();
    assert.equal(s.publishes.failed['puback-timeout'], 1, 'failed at its deadline');
    assert.equal(await outcome, 'BACKEND_PUBACK_TIMEOUT');
    assert.equal(s.publishes.ok, 1);
    assert.equal(s.pubackLatency.count, 1);

    // docs/design.md, "Memory at idle": the connections write without mqtt-packet's table
    // of every two-byte number (65 536 Buffers kept for the process's life), and the
    // publish above still carried its topic length and packet id.
    assert.equal(mqttPacketNumbers.generated(), 0, 'no number table generated');
  });
});

describe("the connection's own deadlines, on its owner's clock", () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('no SUBACK: BACKEND_SUBSCRIBE_FAILED at the timeout; close() waits at most its guard for mqtt.js', async () => {
    // aedes takes the SUBSCRIBE and never answers it
    let reached = (): void => undefined;
    const subscribeHeld = new Promise<void>((resolve) => (reached = resolve));
    const broker = await aedesOn('127.0.0.1', undefined, {
      authorizeSubscribe: () => reached(),
    });
    cleanups.push(() => broker.close());
    const clock = new ManualClock();
    let conn: MqttConnection | undefined;
    const up = new Promise<MqttConnection>((resolve, reject) => {
      conn = new MqttConnection(
        0,
        {
          url: `mqtt://127.0.0.1:${broker.port}`,
          username: undefined,
          password: undefined,
          clientId: 'deadline-test',
          keepaliveSec: 30,
          connectTimeoutMs: 5000,
          reconnect: false,
          maxInflight: 1,
          clock,
        },
        {
          protocolLevel: () => 4,
          onVersionRefused: () => false,
          onAttempt: () => undefined,
          onMessage: () => undefined,
          onUp: (c) => resolve(c),
          onDown: (_c, _wasUp, err) => reject(err ?? new Error('down')),
        },
      );
      conn.start();
    });
    const c = await up;
    cleanups.push(() => c.close());

    const code = (p: Promise<void>): Promise<string> =>
      p.then(
        () => 'resolved',
        (e: unknown) => (e instanceof MqttBackendError ? e.code : String(e)),
      );
    const timedOut = code(c.subscribe('held/a', 5000));
    await subscribeHeld;
    assert.equal(clock.pendingKeptAlive, 1, 'the SUBACK wait holds the process open, as before');
    assert.equal(
      await settlesAt(clock, 5000, timedOut, 'the SUBACK wait'),
      'BACKEND_SUBSCRIBE_FAILED',
    );
    assert.equal(c.isUp, true, 'the connection itself stays up');

    // mqtt.js's end() waits for the SUBACK still owed (not a publish: no forced close)
    const lost = code(c.subscribe('held/b', UNREACHED_DEADLINE_MS));
    const closing = c.close();
    assert.equal(clock.pendingKeptAlive, 2, 'the close guard holds the process open, as before');
    await settlesAt(clock, CLOSE_GUARD_MS, closing, 'close()');
    assert.equal(await lost, 'BACKEND_CONNECTION_LOST', 'the socket destroyed at the guard');
    assert.equal(clock.pending, 0, 'every timer of the connection cleared');
  });
});

describe('brokerTarget: what the connection builds its own stream for', () => {
  it('mqtt:// and mqtts:// with mqtt.js defaults: port 1883/8883 (also for port 0), localhost, IPv6 without brackets, lower case', () => {
    assert.deepEqual(brokerTarget('mqtt://broker'), { tls: false, host: 'broker', port: 1883 });
    assert.deepEqual(brokerTarget('mqtts://Broker.Example:0'), {
      tls: true,
      host: 'broker.example',
      port: 8883,
    });
    assert.deepEqual(brokerTarget('mqtt://[::1]:1884/x'), { tls: false, host: '::1', port: 1884 });
    assert.deepEqual(brokerTarget('mqtts://10.0.0.1'), { tls: true, host: '10.0.0.1', port: 8883 });
    assert.deepEqual(brokerTarget('mqtt://'), { tls: false, host: 'localhost', port: 1883 });
  });

  it('what mqtt.js reads from the URL, another scheme or an unparsable URL stays with mqtt.connect', () => {
    for (const url of [
      'mqtt://user:pass@broker',
      'mqtt://user@broker',
      'mqtts://broker?clientId=fixed',
      'ws://broker/mqtt',
      'tcp://broker',
      'mqtt://bücher.example',
      'not a url',
    ]) {
      assert.equal(brokerTarget(url), undefined, url);
    }
  });
});

/** A self-signed certificate for `localhost` only (DNS name, no IP address), made by openssl. */
function localhostCertificate(dir: string): { key: string; cert: string; certFile: string } {
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost',
      '-days',
      '2',
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { stdio: 'ignore' },
  );
  return { key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8'), certFile };
}

/**
 * Connects once to each URL (MQTT 3.1.1, no reconnect): `up`, or the code (else the message)
 * of the error the connection went down with.
 */
const ATTEMPTS = `
const { MqttConnection } = await import(process.env.CONNECTION_MODULE);
const attempt = (url) =>
  new Promise((resolve) => {
    const options = { url, username: undefined, password: undefined, clientId: 'stream-test',
      keepaliveSec: 30, connectTimeoutMs: 5000, reconnect: false, maxInflight: 1 };
    const conn = new MqttConnection(0, options, {
      protocolLevel: () => 4,
      onVersionRefused: () => false,
      onAttempt: () => undefined,
      onMessage: () => undefined,
      onUp: () => void conn.close().then(() => resolve('up')),
      onDown: (_c, _wasUp, err) => void conn.close().then(() => resolve(err?.code ?? err?.message)),
    });
    conn.start();
  });
const out = [];
for (const url of JSON.parse(process.env.URLS)) out.push(await attempt(url));
process.stdout.write(JSON.stringify(out));
`;

/** {@link ATTEMPTS}'s attempt in this process. */
function attemptHere(url: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const conn: MqttConnection = new MqttConnection(
      0,
      {
        url,
        username: undefined,
        password: undefined,
        clientId: 'stream-test',
        keepaliveSec: 30,
        connectTimeoutMs: 5000,
        reconnect: false,
        maxInflight: 1,
      },
      {
        protocolLevel: () => 4,
        onVersionRefused: () => false,
        onAttempt: () => undefined,
        onMessage: () => undefined,
        onUp: () => void conn.close().then(() => resolve('up')),
        onDown: (_c, _wasUp, err) =>
          void conn.close().then(() => {
            const code = (err as { code?: unknown } | undefined)?.code;
            resolve(typeof code === 'string' ? code : err?.message);
          }),
      },
    );
    conn.start();
  });
}

describe('the connection stream: TCP and TLS as mqtt.js builds them', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });
  const dir = mkdtempSync(join(tmpdir(), 'coap-edge-mqtt-stream-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const certificate = localhostCertificate(dir);

  /** {@link ATTEMPTS} in a child that trusts the certificate (`NODE_EXTRA_CA_CERTS`). */
  async function trustingAttempts(urls: readonly string[]): Promise<string[]> {
    const { stdout } = await execFileAsync(
      process.execPath,
      ['--input-type=module', '-e', ATTEMPTS],
      {
        env: {
          ...process.env,
          CONNECTION_MODULE: new URL('../../../src/bridge/mqtt/connection.js', import.meta.url)
            .href,
          URLS: JSON.stringify(urls),
          NODE_EXTRA_CA_CERTS: certificate.certFile,
        },
      },
    );
    return JSON.parse(stdout) as string[];
  }

  it('mqtts:// with a trusted certificate comes up, with the host name as SNI; the name must match the certificate', async () => {
    const broker = await aedesOn('127.0.0.1', certificate);
    cleanups.push(() => broker.close());
    const out = await trustingAttempts([
      `mqtts://localhost:${broker.port}`,
      `mqtts://127.0.0.1:${broker.port}`,
    ]);
    assert.deepEqual(out, ['up', 'ERR_TLS_CERT_ALTNAME_INVALID']);
    assert.deepEqual(broker.names, ['localhost'], 'SNI for the name, none for the IP address');
  });

  it('mqtts:// still verifies: an untrusted certificate is the error the connection goes down with, as with mqtt.connect', async () => {
    const broker = await aedesOn('127.0.0.1', certificate);
    cleanups.push(() => broker.close());
    const url = `mqtts://localhost:${broker.port}`;
    const ours = await attemptHere(url);
    const theirs = await new Promise<string | undefined>((resolve) => {
      const client = connect(url, { reconnectPeriod: 0, protocolVersion: 4 });
      client.once('error', (err: Error & { code?: unknown }) => {
        client.end(true);
        resolve(typeof err.code === 'string' ? err.code : err.message);
      });
    });
    assert.equal(theirs, 'DEPTH_ZERO_SELF_SIGNED_CERT');
    assert.equal(ours, theirs);
  });

  it('mqtt:// to an IPv6 literal in brackets and to a name come up', async (t) => {
    const v4 = await aedesOn('127.0.0.1', undefined);
    cleanups.push(() => v4.close());
    const urls = [`mqtt://localhost:${v4.port}`];
    const v6 = await aedesOn('::1', undefined).catch(() => undefined);
    if (v6 === undefined) t.diagnostic('no ::1 here: IPv6 not tried');
    else {
      cleanups.push(() => v6.close());
      urls.push(`mqtt://[::1]:${v6.port}`);
    }
    for (const url of urls) assert.equal(await attemptHere(url), 'up', url);
  });
});
