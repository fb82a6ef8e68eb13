/**
 * docs/integration.md against the code: every block marked `<!-- check:NAME -->` is rebuilt with
 * the real functions (presence JSON, the presence webhook and an HTTP route request sent to an
 * in-process HTTP server, the HTTP status and MQTT outcome tables, the command filters and
 * options) and compared with the document, byte for byte where the code is deterministic.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { commandFilters } from '../../../src/bridge/commands/intake.js';
import { commandOptions } from '../../../src/bridge/commands/options.js';
import { HttpBackend } from '../../../src/bridge/http/backend.js';
import { mapHttpStatus } from '../../../src/bridge/http/status.js';
import {
  BackendRejectedError,
  DeviceSuspectedError,
  DeviceUnauthorizedError,
  MqttBackendError,
  ReplyTimeoutError,
  type MqttBackendErrorCode,
} from '../../../src/bridge/mqtt/errors.js';
import {
  presenceEventJson,
  presencePublisher,
  renderPresenceTopic,
  type PresenceEvent,
  type PresenceReason,
  type PresenceStatus,
} from '../../../src/bridge/presence/index.js';
import { Router } from '../../../src/bridge/router.js';
import { compileRoutes, type RouteConfig } from '../../../src/bridge/routes.js';
import type { BridgeResponse, Principal } from '../../../src/bridge/types.js';
import { OptionNumber, formatCode } from '../../../src/coap/constants.js';
import { decodeUint } from '../../../src/coap/options.js';
import { routeSchema, settings } from '../../../src/config/settings.js';
import { toCoapReply } from '../../../src/gateway/translation/coap-adapter.js';
import { REPO_ROOT } from '../../helpers/processes.js';
import { TTD_DEFAULTS } from '../../helpers/component-defaults.js';
import { ManualClock } from '../../../src/time/clock.js';

const DOC = readFileSync(join(REPO_ROOT, 'docs', 'integration.md'), 'utf8');

/** The text after `<!-- check:NAME -->`: the fenced block's body, or the table's lines. */
function marked(name: string): string {
  const marker = `<!-- check:${name} -->\n`;
  const at = DOC.indexOf(marker);
  assert.ok(at >= 0, `docs/integration.md has no ${marker.trim()}`);
  assert.equal(DOC.indexOf(marker, at + 1), -1, `${marker.trim()} appears twice`);
  const rest = DOC.slice(at + marker.length);
  if (rest.startsWith('```')) {
    const start = rest.indexOf('\n') + 1;
    const end = rest.indexOf('\n```', start);
    assert.ok(end > start, `${name}: unclosed code block`);
    return rest.slice(start, end);
  }
  const blank = rest.indexOf('\n\n');
  return blank < 0 ? rest : rest.slice(0, blank);
}

/** Data rows of a Markdown table: cells, trimmed; header and separator dropped. */
function tableRows(table: string): string[][] {
  return table
    .split('\n')
    .slice(2)
    .map((line) =>
      line
        .split('|')
        .slice(1, -1)
        .map((c) => c.trim()),
    );
}

interface HttpExample {
  readonly method: string;
  readonly target: string;
  /** Name/value pairs in order, names lower case. */
  readonly headers: (readonly [string, string])[];
  readonly body: string;
}

function parseHttpExample(text: string): HttpExample {
  const split = text.indexOf('\n\n');
  assert.ok(split > 0, 'an HTTP example has a header block and a body');
  const [requestLine = '', ...lines] = text.slice(0, split).split('\n');
  const [method = '', target = '', version] = requestLine.split(' ');
  assert.equal(version, 'HTTP/1.1');
  const headers = lines.map((l): readonly [string, string] => {
    const colon = l.indexOf(': ');
    assert.ok(colon > 0, `header line ${l}`);
    return [l.slice(0, colon).toLowerCase(), l.slice(colon + 2)];
  });
  return { method, target, headers, body: text.slice(split + 2) };
}

function header(ex: HttpExample, name: string): string {
  const h = ex.headers.find(([n]) => n === name);
  assert.ok(h !== undefined, `the example has no ${name} header`);
  return h[1];
}

interface Captured {
  readonly method: string;
  readonly url: string;
  readonly headers: (readonly [string, string])[];
  readonly body: string;
}

/** An HTTP server that records each request and answers 200 with a JSON body. */
function recorder(): { server: Server; requests: Captured[] } {
  const requests: Captured[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const headers: (readonly [string, string])[] = [];
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
        headers.push([(req.rawHeaders[i] ?? '').toLowerCase(), req.rawHeaders[i + 1] ?? '']);
      }
      requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      res.setHeader('content-type', 'application/json');
      res.end('{"id":"1","code":200,"data":null}');
    });
  });
  return { server, requests };
}

/** The request as the example shows it, `host` aside (the test server's differs). */
function assertSameRequest(got: Captured, doc: HttpExample): void {
  assert.equal(got.method, doc.method);
  assert.equal(got.url, doc.target);
  const withoutHost = (h: (readonly [string, string])[]) => h.filter(([n]) => n !== 'host');
  assert.deepEqual(withoutHost(got.headers), withoutHost(doc.headers));
  assert.ok(doc.headers.some(([n]) => n === 'host'));
  assert.equal(got.body, doc.body);
}

describe('docs/integration.md: presence events', () => {
  const online = marked('presence-online');
  const offline = marked('presence-offline');

  it('the examples are exactly what presenceEventJson makes of them', () => {
    for (const [text, status] of [
      [online, 'online'],
      [offline, 'offline'],
    ] as const) {
      const ev = JSON.parse(text) as PresenceEvent;
      assert.equal(ev.status, status);
      assert.equal(presenceEventJson(ev), text);
    }
  });

  it('the field table lists every field the code emits', () => {
    const fields = Object.keys(JSON.parse(presenceEventJson(JSON.parse(online) as PresenceEvent)));
    assert.ok(fields.includes('sessionId') && fields.includes('seq'));
    for (const f of fields) assert.ok(DOC.includes(`| \`${f}\` |`), `field ${f} not in the table`);
  });

  it('every status and reason has its row in the "when" table', () => {
    // a new reason fails compilation here until it is documented
    const reasons: Record<PresenceReason, PresenceStatus> = {
      'first-request': 'online',
      'lifetime-lapsed': 'offline',
      'close-notify': 'offline',
      evicted: 'offline',
    };
    for (const [reason, status] of Object.entries(reasons)) {
      assert.ok(DOC.includes(`| \`${status}\` | \`${reason}\` |`), `${status}/${reason}`);
    }
  });

  it('the topic example is what the template renders', () => {
    const ev = JSON.parse(online) as PresenceEvent;
    const topic = renderPresenceTopic('/presence/{pk}/{dk}', ev);
    assert.ok(
      DOC.replace(/\s+/g, ' ').includes(
        `\`presenceTopic: /presence/{pk}/{dk}\` gives \`${topic}\``,
      ),
      `the rendered topic ${topic} is not in the document`,
    );
  });

  describe('the webhook', () => {
    const { server, requests } = recorder();
    before(() => new Promise<void>((r) => server.listen(0, '127.0.0.1', r)));
    after(() => new Promise<void>((r) => server.close(() => r())));

    it('sends the request of the example', async () => {
      const doc = parseHttpExample(marked('presence-webhook'));
      const port = (server.address() as { port: number }).port;
      const publisher = presencePublisher({
        webhookUrl: `http://127.0.0.1:${port}${doc.target}`,
      });
      try {
        await publisher.publish(JSON.parse(doc.body) as PresenceEvent);
      } finally {
        await publisher.close();
      }
      assert.equal(requests.length, 1);
      assertSameRequest(requests[0]!, doc);
      assert.equal(doc.body, online, 'the webhook body is the online example');
      assert.equal(
        header(doc, 'x-coap-edge-seq'),
        String((JSON.parse(online) as PresenceEvent).seq),
      );
    });
  });
});

describe('docs/integration.md: HTTP routes', () => {
  const { server, requests } = recorder();
  before(() => new Promise<void>((r) => server.listen(0, '127.0.0.1', r)));
  after(() => new Promise<void>((r) => server.close(() => r())));

  it('the configuration example is valid, and its request is the example request', async () => {
    const yaml = parseYaml(marked('http-route-config')) as { routes: unknown[] };
    const port = (server.address() as { port: number }).port;
    const routes: RouteConfig[] = yaml.routes.map((r) => {
      const route = routeSchema.parse(r);
      return route.backend === 'http'
        ? {
            ...route,
            url: route.url.replace('https://api.example.com', `http://127.0.0.1:${port}`),
          }
        : route;
    });
    const secret = /`HMAC_SECRET=([^`]+)`/.exec(DOC)?.[1];
    assert.ok(secret !== undefined, 'the document names the example secret');
    const table = compileRoutes(routes, { env: { HMAC_SECRET: secret } });

    const doc = parseHttpExample(marked('http-route-request'));
    const timestamp = header(doc, 'x-timestamp');
    const device = {
      productKey: header(doc, 'x-device-product-key'),
      deviceKey: header(doc, 'x-device-key'),
      assetId: header(doc, 'x-device-asset-id'),
    };
    const topic = header(doc, 'x-device-topic');
    const route = table.match(topic, device);
    assert.ok(route?.backend === 'http');
    const backend = new HttpBackend({
      timeoutMs: 5_000,
      connections: 1,
      maxConcurrency: 4,
      unavailableMaxAge: 30,
      clock: new ManualClock(0, Number(timestamp)),
    });
    let res: BridgeResponse;
    try {
      res = await backend.call(route, {
        device,
        topic,
        payload: Buffer.from(doc.body),
        contentFormat: Number(header(doc, 'x-coap-content-format')),
      });
    } finally {
      await backend.close();
    }
    assert.equal(res.status, 'changed');
    assert.equal(requests.length, 1);
    const got = requests[0]!;
    assertSameRequest(got, doc);

    // the signature as the document defines it, computed here independently
    const mac = createHmac('sha256', secret)
      .update(`${doc.method}\n${doc.target}\n${timestamp}\n${doc.body}`)
      .digest('hex');
    assert.equal(header(doc, 'x-signature'), `sha256=${mac}`);

    // every header coap-edge sets has its row in the header table
    for (const [name] of got.headers) {
      if (['host', 'connection', 'content-length', 'x-tenant'].includes(name)) continue;
      const row = new RegExp(`^\\| \`${name}\``, 'im');
      assert.ok(row.test(DOC), `header ${name} has no row in the header table`);
    }
    assert.ok(/^\| `traceparent` \|/m.test(DOC));
  });

  it('the status table is what mapHttpStatus and the CoAP adapter answer', () => {
    const o = { unavailableMaxAge: 30, maxRetryAfter: 300, nowMs: 0 };
    const coapOf = (status: number, retryAfter?: string) => {
      const m = mapHttpStatus(status, retryAfter, o);
      return {
        code: formatCode(toCoapReply({ status: m.status }).code),
        maxAge: m.maxAge,
      };
    };
    const listed = new Map<number, string>();
    for (const [statuses = '', coap = '', maxAge = ''] of tableRows(marked('http-status'))) {
      const numbers = statuses.match(/\b[1-5]\d\d\b/g) ?? [];
      assert.ok(numbers.length > 0, `row ${statuses}`);
      for (const n of numbers) {
        const got = coapOf(Number(n));
        assert.equal(got.code, coap, `HTTP ${n}`);
        listed.set(Number(n), coap);
        if (maxAge.includes('maxUnavailableRetrySeconds'))
          assert.equal(got.maxAge, 30, `HTTP ${n}`);
        if (maxAge.includes('Retry-After')) assert.equal(coapOf(Number(n), '7').maxAge, 7);
        if (maxAge === '') assert.equal(got.maxAge, undefined, `HTTP ${n}`);
      }
    }
    // a status answered other than its class's default must have its own row
    const classDefault = (n: number) =>
      n >= 200 && n < 300 ? '2.04' : n >= 400 && n < 500 ? '4.00' : n >= 500 ? '5.03' : '5.02';
    for (let n = 100; n < 600; n++) {
      const code = coapOf(n).code;
      if (code !== classDefault(n)) assert.equal(listed.get(n), code, `HTTP ${n} needs a row`);
    }
  });
});

describe('docs/integration.md: MQTT outcomes', () => {
  const principal: Principal = {
    productKey: 'demoPK01',
    deviceKey: 'device001',
    secureMode: 2,
    lifetime: 3600,
    assetId: undefined,
    sessionId: 'session-1',
  };

  async function answerTo(err: Error): Promise<BridgeResponse> {
    const fail = () => Promise.reject(err);
    const router = new Router({
      ...TTD_DEFAULTS,
      mqtt: { publish: fail, request: fail },
      http: undefined,
      routes: undefined,
      activation: undefined,
      commands: undefined,
      presence: undefined,
      unavailableMaxAge: 30,
      maxInlineCommand: 256,
      maxTtd: 60,
    });
    return router.handle({
      principal,
      method: 'POST',
      path: ['topic', 'sys', 'demoPK01', 'device001', 'thing', 'measurepoint', 'post'],
      query: [],
      payload: Buffer.from('{"id":"1","version":"1.0","params":{}}'),
      contentFormat: 50,
    });
  }

  it('each backend error is answered as the table says', async () => {
    // a new error code fails compilation here until it is documented
    const codes: Record<MqttBackendErrorCode, true> = {
      BACKEND_UNAVAILABLE: true,
      BACKEND_CONNECTION_LOST: true,
      BACKEND_PUBACK_TIMEOUT: true,
      BACKEND_OVERLOADED: true,
      BACKEND_SUBSCRIBE_FAILED: true,
      BACKEND_CLOSED: true,
      BACKEND_PUBLISH_REJECTED: true,
      BACKEND_REPLY_TIMEOUT: true,
      BACKEND_BAD_TOPIC: true,
      BACKEND_DEVICE_UNAUTHORIZED: true,
      BACKEND_DEVICE_SUSPECTED: true,
    };
    const seen = new Set<string>();
    for (const [outcome = '', cell = '', coap = '', maxAge = ''] of tableRows(
      marked('mqtt-outcomes'),
    )) {
      const code = /`(BACKEND_[A-Z_]+)`/.exec(cell)?.[1] as MqttBackendErrorCode | undefined;
      if (code === undefined) continue;
      assert.ok(code in codes, `${code} is not an MQTT backend error code`);
      seen.add(code);
      const err =
        code === 'BACKEND_PUBLISH_REJECTED'
          ? new BackendRejectedError(outcome.includes('0x97') ? 0x97 : 0x87)
          : code === 'BACKEND_REPLY_TIMEOUT'
            ? new ReplyTimeoutError('/x_reply', 1)
            : code === 'BACKEND_DEVICE_SUSPECTED'
              ? new DeviceSuspectedError(17)
              : code === 'BACKEND_DEVICE_UNAUTHORIZED'
                ? new DeviceUnauthorizedError('refused', false)
                : new MqttBackendError(code);
      const reply = toCoapReply(await answerTo(err));
      assert.equal(formatCode(reply.code), coap, outcome);
      const maxAgeOption = reply.options?.find((op) => op.number === OptionNumber.MAX_AGE);
      const got = maxAgeOption === undefined ? undefined : decodeUint(maxAgeOption.value);
      const want = maxAge.includes('maxUnavailableRetrySeconds')
        ? 30
        : maxAge.includes('seconds left')
          ? 17
          : undefined;
      assert.equal(got, want, `Max-Age of ${outcome}`);
    }
    assert.deepEqual([...seen].sort(), Object.keys(codes).sort());
  });
});

describe('docs/integration.md: commands', () => {
  it('the listed filters are the default commandTopics as subscribed', () => {
    const lines = marked('command-filters').split('\n');
    const topics: readonly string[] | undefined = settings.commandTopics.default;
    assert.ok(topics !== undefined);
    const shareGroup = settings.commandShareGroup.default;
    assert.deepEqual(lines, commandFilters(topics, { shareGroup }));
  });

  it('the option example is what a response with a waiting command carries', () => {
    const text = marked('command-options');
    const line = (prefix: string) => {
      const l = text.split('\n').find((x) => x.startsWith(prefix));
      assert.ok(l !== undefined, `no ${prefix} line`);
      return l.slice(prefix.length);
    };
    const option2100 = line('2100: ');
    assert.ok(option2100.startsWith('/topic/'));
    const reply = toCoapReply({
      status: 'changed',
      payload: Buffer.from(line('payload: ')),
      contentFormat: 50,
      command: commandOptions(
        {
          id: 'q1',
          topic: option2100.slice('/topic'.length),
          payload: Buffer.from(line('2102: ')),
          messageId: '7',
          enqueuedAt: 0,
        },
        settings.maxInlineCommand.default,
      ),
    });
    const rendered = [
      formatCode(reply.code),
      ...(reply.options ?? []).map((op) =>
        op.number === OptionNumber.CONTENT_FORMAT
          ? `Content-Format (${op.number}): ${decodeUint(op.value)}`
          : `${op.number}: ${op.value.toString('utf8')}`,
      ),
      `payload: ${reply.payload?.toString('utf8') ?? ''}`,
    ];
    assert.deepEqual(rendered, text.split('\n'));
    assert.equal(OptionNumber.COMMAND_TOPIC, 2100);
    assert.equal(OptionNumber.COMMAND_PAYLOAD, 2102);
  });
});

describe('docs/integration.md: defaults it quotes', () => {
  it('"`setting` (N)" is the setting\'s default', () => {
    const all = settings as Record<string, { default: unknown }>;
    let checked = 0;
    for (const m of DOC.matchAll(/`(\w+)` \((\d+)\)/g)) {
      const s = all[m[1] ?? ''];
      if (s === undefined) continue;
      checked++;
      assert.equal(s.default, Number(m[2]), `${m[1]}: the document says ${m[2]}`);
    }
    assert.ok(checked >= 5, `only ${checked} defaults found`);
  });
});
