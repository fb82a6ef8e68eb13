/**
 * The demo platform stand-in (`demoPlatform: true`): what it answers, and how it meets the
 * devices' messages. On the embedded broker it runs inside the broker's process with no MQTT
 * connection of its own (two TCP hops less per request); on any other broker it connects as
 * an MQTT client.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startEmbeddedBroker } from '../../../src/bridge/mqtt/index.js';
import { CipherSuite } from '../../../src/dtls/constants.js';
import { derivePsk } from '../../../src/enos/psk.js';
import { CoapDtlsClient } from '../../../src/tools/coap-client.js';
import { standInReply } from '../../../src/tools/platform-standin.js';
import { DEMO, MEASUREPOINT_POST, startGateway, type TestGateway } from '../../helpers/gateway.js';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** device001 posts a measurepoint; the answer's code and body. */
async function post(gw: TestGateway): Promise<{ code: string; body: string }> {
  const c = await CoapDtlsClient.connect({
    host: '127.0.0.1',
    port: gw.port,
    identity: DEMO.device001.identity,
    psk: derivePsk(DEMO.device001.secret),
    cipherSuites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
    handshakeTimeoutMs: 10_000,
  });
  try {
    const r = await c.request({
      method: 'POST',
      path: MEASUREPOINT_POST('demoPK01', 'device001'),
      payload: Buffer.from('{"id":"42","version":"1.0","params":{}}'),
      timeoutMs: 10_000,
    });
    return {
      code: `${r.code >> 5}.${String(r.code & 31).padStart(2, '0')}`,
      body: String(r.payload),
    };
  } finally {
    await c.close();
  }
}

describe('demo platform stand-in', () => {
  it('answers uplinks that expect a reply, and nothing else', () => {
    const up = '/sys/pk/dk/thing/measurepoint/post';
    const r = standInReply(`p${up}`, Buffer.from('{"id":"7"}'), 'p');
    assert.equal(r?.topic, `p${up}_reply`);
    assert.equal(r?.payload.toString(), '{"id":"7","code":200,"data":null}');
    // raw uplink: an empty raw reply
    const raw = standInReply('/sys/pk/dk/thing/model/up_raw', Buffer.from([1, 2]), '');
    assert.equal(raw?.topic, '/sys/pk/dk/thing/model/up_raw_reply');
    assert.equal(raw?.payload.length, 0);
    // its own reply, another prefix, a body without JSON: no answer
    assert.equal(standInReply(`${up}_reply`, Buffer.from('{"id":"7"}'), ''), undefined);
    assert.equal(standInReply(up, Buffer.from('{"id":"7"}'), 'p'), undefined);
    assert.equal(standInReply(up, Buffer.from('not json'), ''), undefined);
  });

  it('on the embedded broker: answers without a connection of its own', async () => {
    const gw = await startGateway({ overrides: { embeddedBroker: 0, demoPlatform: true } });
    cleanups.push(() => gw.close());
    const broker = gw.gateway.embeddedBroker;
    assert.ok(broker !== undefined);
    // started: the pool is connected, a first request is not answered 5.03
    assert.equal(gw.gateway.mqtt?.state(), 'connected');
    assert.deepEqual(await post(gw), { code: '2.04', body: '{"id":"42","code":200,"data":null}' });
    // the bridge pool and the command intake; before, the demo platform was one more
    const ids = broker.clientIds();
    assert.ok(ids.length > 0);
    assert.deepEqual(
      ids.filter((id) => id.startsWith('coap-edge-demo-platform-')),
      [],
      ids.join(' '),
    );
  });

  it('on any other broker: connects as an MQTT client and answers', async () => {
    const other = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => other.close());
    const gw = await startGateway({
      overrides: { mqttUrl: `mqtt://127.0.0.1:${other.port}`, demoPlatform: true },
    });
    cleanups.push(() => gw.close());
    assert.deepEqual(await post(gw), { code: '2.04', body: '{"id":"42","code":200,"data":null}' });
    assert.equal(
      other.clientIds().filter((id) => id.startsWith('coap-edge-demo-platform-')).length,
      1,
    );
  });
});
