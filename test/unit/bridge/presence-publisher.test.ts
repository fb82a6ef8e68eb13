/**
 * presencePublisher: topic templates, MQTT payloads, the webhook against an in-process HTTP
 * server (status handling, one retry, timeout, counted failures).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import {
  checkTopicTemplate,
  presenceEventJson,
  presencePublisher,
  renderPresenceTopic,
  type PresenceEvent,
} from '../../../src/bridge/presence/index.js';

const EV: PresenceEvent = {
  productKey: 'MuGsF6W4',
  deviceKey: '15bBZlRknc',
  status: 'online',
  reason: 'first-request',
  time: '2026-05-01T10:00:00.000Z',
  lifetime: 30,
  sessionId: 'sess-1',
  seq: 7,
};

const hasCode = (code: string) => (e: unknown) => (e as { code?: string }).code === code;

describe('presence event JSON and topics', () => {
  it('has a fixed shape', () => {
    assert.equal(
      presenceEventJson(EV),
      '{"productKey":"MuGsF6W4","deviceKey":"15bBZlRknc","status":"online","reason":"first-request","time":"2026-05-01T10:00:00.000Z","lifetime":30,"sessionId":"sess-1","seq":7}',
    );
    const noSession: PresenceEvent = { ...EV };
    delete (noSession as { sessionId?: string }).sessionId;
    assert.equal(JSON.parse(presenceEventJson(noSession)).sessionId, undefined);
  });

  it('renders {pk} {dk} {status}', () => {
    assert.equal(
      renderPresenceTopic('/presence/{pk}/{dk}/{status}', EV),
      '/presence/MuGsF6W4/15bBZlRknc/online',
    );
    assert.equal(renderPresenceTopic('fixed/topic', EV), 'fixed/topic');
  });

  it('refuses bad templates', () => {
    for (const t of ['', 'a/+/b', 'a/#', 'a/{pk', 'a/{x}', 'a/{dk}}', 'a\u0000b']) {
      assert.throws(() => checkTopicTemplate(t), hasCode('PRESENCE_BAD_CONFIG'), t);
    }
    assert.throws(
      () => presencePublisher({ topicTemplate: '/p/{pk}' }),
      hasCode('PRESENCE_BAD_CONFIG'),
    );
    assert.throws(
      () => presencePublisher({ webhookUrl: 'ftp://example.com/' }),
      hasCode('PRESENCE_BAD_CONFIG'),
    );
  });
});

describe('presencePublisher', () => {
  interface Seen {
    readonly method: string | undefined;
    readonly url: string | undefined;
    readonly headers: IncomingHttpHeaders;
    readonly body: string;
  }
  let server: Server;
  let url: string;
  const seen: Seen[] = [];
  /** Answers, one per request, then 204. 'hang' never answers. */
  let script: (number | 'hang')[] = [];

  before(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({
          method: req.method,
          url: req.url,
          headers: req.headers,
          body: Buffer.concat(chunks).toString(),
        });
        const next = script.shift() ?? 204;
        if (next === 'hang') return;
        res.writeHead(next).end('x');
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('no port');
    url = `http://127.0.0.1:${addr.port}/hooks/presence?x=1`;
  });

  after(async () => {
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
  });

  it('publishes to MQTT and the webhook', async () => {
    seen.length = 0;
    script = [];
    const mqtt: { topic: string; payload: string }[] = [];
    const pub = presencePublisher({
      topicTemplate: 'presence/{pk}/{dk}',
      mqttPublish: (topic, payload) => {
        mqtt.push({ topic, payload: payload.toString() });
        return Promise.resolve();
      },
      webhookUrl: url,
      webhookHeaders: { authorization: 'Bearer t0ken' },
    });
    await pub.publish(EV);
    assert.deepEqual(mqtt, [
      { topic: 'presence/MuGsF6W4/15bBZlRknc', payload: presenceEventJson(EV) },
    ]);
    assert.equal(seen.length, 1);
    const r = seen[0]!;
    assert.equal(r.method, 'POST');
    assert.equal(r.url, '/hooks/presence?x=1');
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(r.headers['x-coap-edge-seq'], '7');
    assert.equal(r.headers.authorization, 'Bearer t0ken');
    assert.deepEqual(JSON.parse(r.body), EV);
    assert.deepEqual(pub.stats(), {
      mqtt: { ok: 1, failed: 0, retried: 0 },
      webhook: { ok: 1, failed: 0, retried: 0 },
    });
    await pub.close();
  });

  it('retries a 5xx once', async () => {
    seen.length = 0;
    script = [503];
    const pub = presencePublisher({ webhookUrl: url, retryDelayMs: 10 });
    await pub.publish(EV);
    assert.equal(seen.length, 2);
    assert.deepEqual(pub.stats().webhook, { ok: 1, failed: 0, retried: 1 });
    await pub.close();
  });

  it('does not retry a 4xx; fails with a stable code', async () => {
    seen.length = 0;
    script = [400];
    const pub = presencePublisher({ webhookUrl: url, retryDelayMs: 10 });
    await assert.rejects(pub.publish(EV), hasCode('PRESENCE_PUBLISH_FAILED'));
    assert.equal(seen.length, 1);
    assert.deepEqual(pub.stats().webhook, { ok: 0, failed: 1, retried: 0 });
    await pub.close();
  });

  it('times out, retries once, counts the failure', async () => {
    seen.length = 0;
    script = ['hang', 'hang'];
    const pub = presencePublisher({ webhookUrl: url, timeoutMs: 200, retryDelayMs: 10 });
    const t0 = Date.now();
    await assert.rejects(pub.publish(EV), /webhook: timeout/);
    assert.ok(Date.now() - t0 < 2_000);
    // (under load an aborted attempt may not reach the server at all)
    assert.ok(seen.length >= 1 && seen.length <= 2);
    assert.deepEqual(pub.stats().webhook, { ok: 0, failed: 1, retried: 1 });
    await pub.close();
  });

  it('an unreachable webhook fails fast after one retry', async () => {
    const pub = presencePublisher({ webhookUrl: 'http://127.0.0.1:1/x', retryDelayMs: 10 });
    await assert.rejects(pub.publish(EV), hasCode('PRESENCE_PUBLISH_FAILED'));
    assert.deepEqual(pub.stats().webhook, { ok: 0, failed: 1, retried: 1 });
    await pub.close();
  });

  it('MQTT: retries once, a hung publish times out', async () => {
    let calls = 0;
    const pub = presencePublisher({
      topicTemplate: 'p/{dk}',
      timeoutMs: 50,
      retryDelayMs: 5,
      mqttPublish: () => {
        calls++;
        return calls === 1
          ? Promise.reject(new Error('BACKEND_UNAVAILABLE'))
          : new Promise(() => {});
      },
    });
    await assert.rejects(pub.publish(EV), /mqtt: timeout/);
    assert.equal(calls, 2);
    assert.deepEqual(pub.stats().mqtt, { ok: 0, failed: 1, retried: 1 });
  });
});
