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
import { ManualClock } from '../../../src/time/clock.js';

/** Lets promise callbacks run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/** Polls `cond` (real I/O has to arrive); fails naming `what` after 5 s. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

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
    // the attempt timeout is ours, on the clock; undici's own (the same 60 s) never comes close
    const clock = new ManualClock();
    const pub = presencePublisher({ webhookUrl: url, timeoutMs: 60_000, retryDelayMs: 10, clock });
    let outcome: unknown;
    const published = pub.publish(EV).then(
      () => (outcome = 'published'),
      (e: unknown) => (outcome = e),
    );
    await until(() => seen.length === 1, 'the first attempt');
    clock.advance(59_999);
    await settle();
    assert.equal(pub.stats().webhook.retried, 0, 'not before the timeout');
    clock.advance(1);
    await until(() => pub.stats().webhook.retried === 1, 'the timeout');
    clock.advance(9);
    await settle();
    assert.equal(seen.length, 1, 'the retry waits retryDelayMs');
    clock.advance(1);
    await until(() => seen.length === 2, 'the retry');
    clock.advance(60_000);
    await until(() => outcome !== undefined, 'the second timeout');
    await published;
    assert.match(String(outcome), /webhook: timeout/);
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
    const clock = new ManualClock();
    const pub = presencePublisher({
      topicTemplate: 'p/{dk}',
      timeoutMs: 50,
      retryDelayMs: 5,
      clock,
      mqttPublish: () => {
        calls++;
        return calls === 1
          ? Promise.reject(new Error('BACKEND_UNAVAILABLE'))
          : new Promise(() => {});
      },
    });
    let outcome: unknown;
    const published = pub.publish(EV).then(
      () => (outcome = 'published'),
      (e: unknown) => (outcome = e),
    );
    await settle();
    assert.equal(calls, 1);
    clock.advance(4);
    await settle();
    assert.equal(calls, 1, 'the retry waits retryDelayMs');
    clock.advance(1);
    await settle();
    assert.equal(calls, 2);
    clock.advance(49);
    await settle();
    assert.equal(outcome, undefined, 'not before the timeout');
    clock.advance(1);
    await until(() => outcome !== undefined, 'the timeout');
    await published;
    assert.match(String(outcome), /mqtt: timeout/);
    assert.equal(calls, 2);
    assert.deepEqual(pub.stats().mqtt, { ok: 0, failed: 1, retried: 1 });
  });
});
