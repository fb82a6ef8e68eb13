/**
 * Attacks on the bridge layer by an
 * authenticated device, each against the whole gateway on loopback with real backends.
 *
 * 1. Topics a broker calls malformed (non-characters, invalid UTF-8 in Uri-Path) must not
 *    reach the shared bridge connection to Mosquitto (which disconnects on them).
 * 2. A publish that makes the broker drop a shared connection (an aedes broker that cuts the
 *    client on a marked payload) is not tried again on the next pooled connection: the device
 *    is suspected, counted, and answered 5.03 with Max-Age; other devices keep publishing.
 * 3. One device cannot hold more than `maxTtdWaitersPerDevice` ttd long-polls; one more gets
 *    4.29 with Max-Age and is not forwarded; another device still gets its long-poll.
 * 4. `.`/`..` topic levels cannot move an HTTP route's request out of its path: a real HTTP
 *    server records every path it receives.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { Aedes } from 'aedes';
import { connect, type MqttClient } from 'mqtt';

import { type Gateway } from '../../src/gateway/index.js';
import { decode, encode, type CoapMessage } from '../../src/coap/codec.js';
import { ACK, CON, Code, OptionNumber } from '../../src/coap/constants.js';
import { decodeUint, getOption } from '../../src/coap/options.js';
import type { MqttBridgeBackend } from '../../src/bridge/mqtt/index.js';
import {
  GoodClient,
  OTHER_IDENTITY,
  OTHER_PSK,
  sleep,
  startGateway as startHostileGateway,
  waitFor,
} from '../helpers/hostile.js';

const PK = 'demoPK01';

/** The hostile gateway (example devices file, loopback) with more settings. */
async function startGateway(overrides: Record<string, unknown>): Promise<Gateway> {
  // the helper passes every key on to the settings
  return (await startHostileGateway(overrides)).gateway;
}

/** A gateway in bridge mode (demo platform answering) and both example devices connected. */
interface BridgeRig {
  readonly gw: Gateway;
  readonly mqtt: MqttBridgeBackend;
  /** device001 */
  readonly one: GoodClient;
  /** device002 */
  readonly two: GoodClient;
  close(): Promise<void>;
}

async function bridgeRig(overrides: Record<string, unknown>): Promise<BridgeRig> {
  const gw = await startGateway({ mqttMode: 'bridge', demoPlatform: true, ...overrides });
  const mqtt = gw.mqtt;
  assert.ok(mqtt !== undefined);
  const up = (): boolean => mqtt.stats().connections.up === mqtt.stats().connections.total;
  await waitFor(up, 10_000, 'the bridge pool is up');
  const one = await GoodClient.connect(gw.dtlsPort);
  const two = await GoodClient.connect(gw.dtlsPort, { identity: OTHER_IDENTITY, psk: OTHER_PSK });
  return {
    gw,
    mqtt,
    one,
    two,
    close: async () => {
      await one.close();
      await two.close();
      await gw.close();
    },
  };
}

let nextId = 0x2000;

interface Ask {
  readonly path: readonly (string | Buffer)[];
  readonly method?: number;
  readonly query?: readonly string[];
  readonly payload?: string;
}

function request(a: Ask, id: number): Buffer {
  const options: { number: number; value: Buffer }[] = a.path.map((p) => ({
    number: OptionNumber.URI_PATH,
    value: Buffer.isBuffer(p) ? p : Buffer.from(p, 'utf8'),
  }));
  for (const q of a.query ?? []) {
    options.push({ number: OptionNumber.URI_QUERY, value: Buffer.from(q) });
  }
  return encode({
    type: CON,
    code: a.method ?? Code.POST,
    messageId: id & 0xffff,
    token: Buffer.from([0x5a, id >>> 8, id & 0xff]),
    options,
    payload: Buffer.from(a.payload ?? '{"id":"1","params":{}}'),
  });
}

function isAnswerTo(id: number, m: Buffer, emptyAck: boolean): boolean {
  let msg: CoapMessage;
  try {
    msg = decode(m);
  } catch {
    return false;
  }
  if (emptyAck && msg.type === ACK && msg.code === 0) return msg.messageId === (id & 0xffff);
  return msg.code !== 0 && msg.token.equals(Buffer.from([0x5a, id >>> 8, id & 0xff]));
}

/**
 * Sends one CON request and resolves with the first answer carrying a code (piggybacked or
 * separate; an empty ACK is skipped unless `emptyAck`, then it counts as the answer).
 */
async function ask(c: GoodClient, a: Ask, ms = 10_000, emptyAck = false): Promise<CoapMessage> {
  const id = nextId++;
  const answer = c.waitMessage((m) => isAnswerTo(id, m, emptyAck), ms, `answer to ${id}`);
  c.client.send(request(a, id));
  return decode(await answer);
}

function code(m: CoapMessage): string {
  return `${m.code >> 5}.${String(m.code & 0x1f).padStart(2, '0')}`;
}

function maxAge(m: CoapMessage): number | undefined {
  const v = getOption(m, OptionNumber.MAX_AGE);
  return v === undefined ? undefined : decodeUint(v);
}

function sysPath(dk: string, ...tail: (string | Buffer)[]): (string | Buffer)[] {
  return ['topic', 'sys', PK, dk, ...tail];
}

// ---------------------------------------------------------------------------------------------

describe('hostile: topics a broker calls malformed never reach the shared connection', () => {
  const prefix = `h9b${randomBytes(4).toString('hex')}`;
  let rig: BridgeRig;
  let device: GoodClient;
  let spy: MqttClient;
  const seen: string[] = [];

  before(async () => {
    rig = await bridgeRig({ mqttUrl: 'mqtt://127.0.0.1:1883', mqttTopicPrefix: prefix });
    device = rig.one;
    spy = connect('mqtt://127.0.0.1:1883', { protocolVersion: 4 });
    spy.on('message', (t) => seen.push(t));
    await spy.subscribeAsync(`${prefix}/#`, { qos: 0 });
  });
  after(async () => {
    await spy?.endAsync();
    await rig?.close();
  });

  test('non-characters in a topic level are refused, the bridge stays up', async () => {
    const mqtt = rig.mqtt;
    const ok = await ask(device, { path: sysPath('device001', 'thing', 'measurepoint', 'post') });
    assert.equal(code(ok), '2.04', 'a good uplink is answered by the demo platform');
    const downs = mqtt.stats().connectionDowns;
    for (const bad of ['\uFFFF', '\uFFFE', 'a\uFDD0', '\uFDEF', '\u{1FFFE}', '\u{10FFFF}']) {
      const res = await ask(device, { path: sysPath('device001', 'thing', 'event', bad, 'post') });
      assert.equal(code(res), '4.04', `level ${JSON.stringify(bad)} refused as an unknown topic`);
    }
    const after = await ask(device, {
      path: sysPath('device001', 'thing', 'measurepoint', 'post'),
    });
    assert.equal(code(after), '2.04', 'the good uplink still goes through');
    assert.equal(mqtt.stats().connectionDowns, downs, 'Mosquitto never dropped the bridge');
    assert.equal(mqtt.stats().publishes.failed['connection-lost'], 0);
  });

  test('invalid UTF-8 in Uri-Path answers 4.00 and is not rewritten to U+FFFD', async () => {
    const mqtt = rig.mqtt;
    const downs = mqtt.stats().connectionDowns;
    const cases: [string, Buffer][] = [
      ['stray byte FF', Buffer.from([0x61, 0xff])],
      ['lone continuation byte', Buffer.from([0x80])],
      ['overlong /', Buffer.from([0xc0, 0xaf])],
      ['overlong 3-byte', Buffer.from([0xe0, 0x80, 0xaf])],
      ['UTF-16 surrogate', Buffer.from([0xed, 0xa0, 0x80])],
      ['truncated sequence', Buffer.from([0xe2, 0x82])],
      ['above U+10FFFF', Buffer.from([0xf4, 0x90, 0x80, 0x80])],
    ];
    for (const [name, bytes] of cases) {
      const res = await ask(device, {
        path: sysPath('device001', 'thing', 'event', bytes, 'post'),
      });
      assert.equal(code(res), '4.00', name);
    }
    // also in the device key level itself
    const dk = Buffer.concat([Buffer.from('device001'), Buffer.from([0xff])]);
    assert.equal(
      code(await ask(device, { path: ['topic', 'sys', PK, dk, 'thing', 'measurepoint', 'post'] })),
      '4.00',
    );
    const good = await ask(device, { path: sysPath('device001', 'thing', 'measurepoint', 'post') });
    assert.equal(code(good), '2.04');
    await waitFor(() => seen.length > 0, 5_000, 'the spy sees the good uplink');
    assert.deepEqual(
      seen.filter((t) => t.includes('\uFFFD')),
      [],
      'no topic with a replacement character reached the broker',
    );
    assert.equal(mqtt.stats().connectionDowns, downs);
  });
});

// ---------------------------------------------------------------------------------------------

/** An aedes broker that cuts the connection of any client publishing a payload with POISON. */
async function poisonBroker(): Promise<{
  port: number;
  cuts: () => number;
  close(): Promise<void>;
}> {
  let cuts = 0;
  const aedes = await Aedes.createBroker({
    authorizePublish: (client, packet, cb) => {
      if (client !== null && packet.payload.toString().includes('POISON')) {
        cuts++;
        client.conn.destroy();
        return;
      }
      cb(null);
    },
  });
  const server: NetServer = createNetServer((s) => aedes.handle(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  return {
    port,
    cuts: () => cuts,
    close: async () => {
      await new Promise<void>((r) => aedes.close(() => r()));
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('hostile: a publish that gets a shared connection dropped is not retried on the next', () => {
  let broker: Awaited<ReturnType<typeof poisonBroker>>;
  let rig: BridgeRig;
  let attacker: GoodClient;
  let victim: GoodClient;

  before(async () => {
    broker = await poisonBroker();
    rig = await bridgeRig({
      mqttUrl: `mqtt://127.0.0.1:${broker.port}`,
      mqttProtocol: '3.1.1',
      mqttPoolSize: 2,
    });
    attacker = rig.one;
    victim = rig.two;
  });
  after(async () => {
    await rig?.close();
    await broker?.close();
  });

  test('the device is suspected at its second drop and answered 5.03 with Max-Age', async () => {
    const mqtt = rig.mqtt;
    const poison: Ask = {
      path: sysPath('device001', 'thing', 'measurepoint', 'post'),
      payload: '{"id":"1","params":{"x":"POISON"}}',
    };
    // A 3.1.1 broker drops without saying why (as it does when it restarts): the first drop
    // only strikes the devices in flight; being in flight at a second one suspends.
    const first = await ask(attacker, poison);
    assert.equal(code(first), '5.03', 'the publish on the dropped connection failed');
    assert.equal(broker.cuts(), 1);
    assert.equal(mqtt.stats().suspects.strikes, 1, 'its device is struck (counted)');
    const second = await ask(attacker, poison);
    assert.equal(code(second), '5.03');
    assert.equal(broker.cuts(), 2, 'the second attempt reached the broker once more');
    assert.equal(mqtt.stats().suspects.strikes, 2);

    // The device retries at once (as a poison loop would), several times.
    for (let i = 0; i < 5; i++) {
      const again = await ask(attacker, poison);
      assert.equal(code(again), '5.03');
      const age = maxAge(again);
      assert.ok(age !== undefined && age >= 1 && age <= 10, `Max-Age ${age} = time left`);
    }
    assert.equal(broker.cuts(), 2, 'the retries never reached the broker');
    assert.equal(mqtt.stats().suspects.refused, 5);
    assert.equal(mqtt.stats().connectionDowns, 2, 'no further pooled connection was dropped');

    // Other devices keep publishing meanwhile (once the dropped connections are back).
    await waitFor(
      () => mqtt.stats().connections.up === 2,
      10_000,
      'the dropped connections reconnect',
    );
    for (let i = 0; i < 5; i++) {
      const res = await ask(victim, {
        path: sysPath('device002', 'thing', 'measurepoint', 'post'),
      });
      assert.equal(code(res), '2.04', 'the other device is served');
    }
  });

  test('measured: the other device during a poison loop', async () => {
    const cutsBefore = broker.cuts();
    let stop = false;
    let attacks = 0;
    const loop = (async () => {
      while (!stop) {
        await ask(attacker, {
          path: sysPath('device001', 'thing', 'measurepoint', 'post'),
          payload: '{"id":"2","params":{"x":"POISON"}}',
        }).catch(() => undefined);
        attacks++;
        await sleep(20);
      }
    })();
    let ok = 0;
    let total = 0;
    const until = Date.now() + 3_000;
    while (Date.now() < until) {
      total++;
      const res = await ask(victim, {
        path: sysPath('device002', 'thing', 'measurepoint', 'post'),
      }).catch(() => undefined);
      if (res !== undefined && code(res) === '2.04') ok++;
    }
    stop = true;
    await loop;
    const cuts = broker.cuts() - cutsBefore;
    console.log(
      `# poison loop: ${attacks} attacker requests, ${cuts} broker drops; ` +
        `other device ${ok}/${total} answered 2.04`,
    );
    assert.equal(cuts, 0, 'the suspended device caused no drop');
    assert.equal(ok, total, 'every request of the other device succeeded');
  });
});

// ---------------------------------------------------------------------------------------------

describe('hostile: one device cannot take the ttd long-poll pool', () => {
  let rig: BridgeRig;
  let hog: GoodClient;
  let other: GoodClient;

  before(async () => {
    rig = await bridgeRig({
      mqttUrl: 'mqtt://127.0.0.1:1883',
      mqttTopicPrefix: `h9b${randomBytes(4).toString('hex')}`,
      maxTtdWaitersPerDevice: 2,
      maxTtdSeconds: 30,
    });
    hog = rig.one;
    other = rig.two;
  });
  after(async () => rig?.close());

  test('a third long-poll of one device gets 4.29 with Max-Age; another device still waits', async () => {
    const mqtt = rig.mqtt;
    const poll = (dk: string): Ask => ({
      path: sysPath(dk, 'thing', 'measurepoint', 'post'),
      query: ['ttd=30'],
    });
    // the first two are held open: the device sees an empty ACK (separate response later)
    for (let i = 0; i < 2; i++) {
      const held = await ask(hog, poll('device001'), 10_000, true);
      assert.equal(held.type, ACK);
      assert.equal(code(held), '0.00', `long-poll ${i + 1} is held`);
    }
    const published = mqtt.stats().publishes.ok;
    const refused = await ask(hog, poll('device001'), 10_000, true);
    assert.equal(code(refused), '4.29', 'one more is refused with a clear answer');
    assert.ok((maxAge(refused) ?? 0) >= 1, 'with a Max-Age retry hint');
    assert.equal(mqtt.stats().publishes.ok, published, 'the refused request was not forwarded');
    // a request without ttd is not affected
    const plain = await ask(hog, { path: sysPath('device001', 'thing', 'measurepoint', 'post') });
    assert.equal(code(plain), '2.04');
    // another device still gets its long-poll
    const theirs = await ask(other, poll('device002'), 10_000, true);
    assert.equal(code(theirs), '0.00', "the other device's long-poll is held");
  });
});

// ---------------------------------------------------------------------------------------------

describe('hostile: {topic} in an HTTP route URL cannot leave the route path', () => {
  let http: HttpServer;
  let gw: Gateway;
  let device: GoodClient;
  const paths: string[] = [];

  before(async () => {
    http = createHttpServer((req, res) => {
      paths.push(req.url ?? '');
      req.resume();
      req.on('end', () => res.writeHead(200).end());
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    const addr = http.address();
    const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
    gw = await startGateway({
      routes: [
        {
          match: '/sys/{pk}/{dk}/#',
          backend: 'http',
          url: `http://127.0.0.1:${port}/in{topic}`,
        },
      ],
    });
    device = await GoodClient.connect(gw.dtlsPort);
  });
  after(async () => {
    await device?.close();
    await gw?.close();
    await new Promise<void>((r) => http.close(() => r()));
  });

  test('. and .. levels are refused with 4.00 and never sent; %2F stays inside', async () => {
    const own = `/in/sys/${PK}/device001/`;
    const good = await ask(device, { path: sysPath('device001', 'thing', 'measurepoint', 'post') });
    assert.equal(code(good), '2.04');
    const dotted: (string | Buffer)[][] = [
      sysPath('device001', 'thing', 'event', '..', 'post'),
      sysPath('device001', 'thing', 'event', '.', 'post'),
      sysPath('device001', 'rrpc', 'response', '..'),
      sysPath('device001', 'thing', 'service', '.._reply'),
    ];
    for (const p of dotted.slice(0, 3)) {
      const res = await ask(device, { path: p });
      assert.equal(code(res), '4.00', `${p.join('/')} refused`);
    }
    // `.._reply` is the reply to service `..`; its URL has no dot segment: allowed
    const reply = await ask(device, { path: dotted[3] ?? [] });
    assert.equal(code(reply), '2.04');
    for (const level of ['%2F', '%2f..', '%2e%2e', 'a\\b']) {
      const res = await ask(device, {
        path: sysPath('device001', 'thing', 'event', level, 'post'),
      });
      assert.equal(code(res), '2.04', `${level} is an ordinary level`);
    }
    assert.ok(paths.length >= 6);
    for (const p of paths) {
      const resolved = new URL(p, 'http://backend').pathname;
      assert.ok(resolved.startsWith(own), `${p} resolves to ${resolved}, inside ${own}`);
      assert.ok(!/(^|\/)\.{1,2}(\/|$)/.test(p), `${p} has no dot segment`);
      assert.ok(!/%2f/i.test(p.replace(/%25/g, '')), `${p} has no encoded slash`);
    }
  });
});
