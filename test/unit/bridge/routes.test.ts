/** Routing rules: pattern compile and match, templates, config errors naming the route. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { routeSchema, type RouteConfig } from '../../../src/config/settings.js';
import {
  compileRoutes,
  CompiledHttpRoute,
  CompiledMqttRoute,
  RouteConfigError,
  type CompiledRoute,
} from '../../../src/bridge/routes.js';

/** Routes as they come out of the config loader (zod defaults applied). */
const cfg = (...raw: unknown[]): RouteConfig[] => raw.map((r) => routeSchema.parse(r));

const dev = { productKey: 'pk1', deviceKey: 'dk1' };
const other = { productKey: 'pk2', deviceKey: 'dk2' };
const T = (pk: string, dk: string, tail: string) => `/sys/${pk}/${dk}/${tail}`;

function label(r: CompiledRoute | undefined): string | undefined {
  return r?.label;
}

function configError(routes: unknown[], env: Record<string, string> = {}): RouteConfigError {
  try {
    compileRoutes(cfg(...routes), { env });
  } catch (err) {
    assert.ok(err instanceof RouteConfigError, `not a RouteConfigError: ${String(err)}`);
    assert.equal(err.code, 'ROUTE_CONFIG_INVALID');
    return err;
  }
  assert.fail('expected a RouteConfigError');
}

describe('route patterns', () => {
  const table = compileRoutes(
    cfg(
      { name: 'own-post', match: '/sys/{pk}/{dk}/thing/measurepoint/post', backend: 'mqtt' },
      { name: 'events', match: '/sys/{pk}/+/thing/event/+/post', backend: 'mqtt' },
      { name: 'raw', match: '/sys/+/+/thing/model/#', backend: 'mqtt' },
      { name: 'exact', match: '/sys/pk9/dk9/thing/tag/query', backend: 'mqtt' },
      { name: 'ota', match: '/sys/{pk}/{dk}/ota/#', backend: 'mqtt' },
      { name: 'catch-session', match: '/ext/session/#', backend: 'mqtt' },
    ),
  );

  const cases: [string, { productKey: string; deviceKey: string }, string | undefined][] = [
    [T('pk1', 'dk1', 'thing/measurepoint/post'), dev, 'own-post'],
    // {pk}/{dk} must equal the requesting device's keys
    [T('pk2', 'dk2', 'thing/measurepoint/post'), dev, undefined],
    [T('pk1', 'dk2', 'thing/measurepoint/post'), dev, undefined],
    [T('pk1', 'dk1', 'thing/measurepoint/post'), other, undefined],
    // `+` takes exactly one level; {pk} and + mixed
    [T('pk1', 'anything', 'thing/event/alarm/post'), dev, 'events'],
    [T('pk2', 'dk1', 'thing/event/alarm/post'), dev, undefined],
    [T('pk1', 'dk1', 'thing/event/a/b/post'), dev, undefined],
    // `#` takes the rest, also nothing (MQTT: the parent level)
    [T('pk1', 'dk1', 'thing/model/up_raw'), dev, 'raw'],
    [T('pkX', 'dkX', 'thing/model/up_raw_reply'), dev, 'raw'],
    [T('pk1', 'dk1', 'thing/model'), dev, 'raw'],
    [T('pk1', 'dk1', 'thing/modelx'), dev, undefined],
    [T('pk1', 'dk1', 'ota/device/inform'), dev, 'ota'],
    [T('pk1', 'dk1', 'ota/device/a/b/c'), dev, 'ota'],
    // literal levels
    [T('pk9', 'dk9', 'thing/tag/query'), dev, 'exact'],
    [T('pk9', 'dk9', 'thing/tag/update'), dev, undefined],
    ['/ext/session/pk1/dk1/combine/login', dev, 'catch-session'],
    // no match → default mapping
    [T('pk1', 'dk1', 'thing/measurepoint/post/batch'), dev, undefined],
    [T('pk1', 'dk1', 'thing/measurepoint'), dev, undefined],
    ['sys/pk1/dk1/thing/measurepoint/post', dev, undefined],
    ['', dev, undefined],
  ];
  for (const [topic, device, expected] of cases) {
    it(`${topic || '(empty)'} as ${device.productKey}/${device.deviceKey} → ${expected ?? 'default'}`, () => {
      assert.equal(label(table.match(topic, device)), expected);
    });
  }

  it('first match wins, in list order', () => {
    const t = compileRoutes(
      cfg(
        { name: 'a', match: '/sys/+/+/thing/measurepoint/post', backend: 'mqtt' },
        { name: 'b', match: '/sys/{pk}/{dk}/thing/measurepoint/post', backend: 'mqtt' },
        { name: 'c', match: '#', backend: 'mqtt' },
      ),
    );
    assert.equal(label(t.match(T('pk1', 'dk1', 'thing/measurepoint/post'), dev)), 'a');
    assert.equal(label(t.match(T('pk1', 'dk1', 'thing/log/post'), dev)), 'c');
    assert.equal(label(t.match('/anything/at/all', dev)), 'c', "'#' alone matches everything");
    const u = compileRoutes(
      cfg(
        { name: 'all', match: '/#', backend: 'mqtt' },
        { name: 'never', match: '/sys/#', backend: 'mqtt' },
      ),
    );
    assert.equal(label(u.match(T('pk1', 'dk1', 'thing/log/post'), dev)), 'all');
  });

  it('an empty table matches nothing; routes keep their index and label', () => {
    const empty = compileRoutes([]);
    assert.equal(empty.empty, true);
    assert.equal(empty.hasHttp, false);
    assert.equal(empty.match(T('pk1', 'dk1', 'thing/log/post'), dev), undefined);
    const t = compileRoutes(
      cfg(
        { match: '/sys/#', backend: 'mqtt' },
        { name: 'h', match: '/ext/#', backend: 'http', url: 'http://h/' },
      ),
    );
    assert.equal(t.hasHttp, true);
    assert.equal(t.routes[0]?.label, 'routes[0]');
    assert.equal(t.routes[0]?.index, 0);
    assert.equal(t.routes[1]?.label, 'h');
    assert.equal(t.routes[1]?.index, 1);
    assert.ok(t.routes[0] instanceof CompiledMqttRoute);
    assert.ok(t.routes[1] instanceof CompiledHttpRoute);
  });

  // What matching costs is measured in bench/, not budgeted here: a time limit in a unit test
  // fails on a loaded machine and proves nothing on a fast one (docs/testing.md).
  it('a topic only the last of 20 routes takes reaches it, the same route every time', () => {
    const routes = Array.from({ length: 19 }, (_, i) => ({
      match: `/sys/{pk}/{dk}/thing/event/e${i}/post`,
      backend: 'mqtt',
    }));
    const t = compileRoutes(cfg(...routes, { name: 'last', match: '/sys/+/+/#', backend: 'mqtt' }));
    const topic = T('pk1', 'dk1', 'thing/measurepoint/post');
    for (let i = 0; i < 1_000; i++) assert.equal(t.match(topic, dev), t.routes[19]);
    assert.equal(t.match(T('pk1', 'dk1', 'thing/event/e7/post'), dev), t.routes[7]);
  });
});

describe('templates', () => {
  it('an MQTT route renders its topic template, or keeps the device topic', () => {
    const t = compileRoutes(
      cfg(
        {
          match: '/sys/{pk}/{dk}/thing/measurepoint/post',
          backend: 'mqtt',
          topic: 'tele/{pk}/{dk}',
        },
        { match: '/sys/#', backend: 'mqtt', topic: 'mirror{topic}' },
        { match: '/ext/#', backend: 'mqtt' },
      ),
    );
    const [a, b, c] = t.routes;
    assert.ok(a instanceof CompiledMqttRoute && b instanceof CompiledMqttRoute);
    assert.ok(c instanceof CompiledMqttRoute);
    const topic = T('pk1', 'dk1', 'thing/measurepoint/post');
    assert.equal(a.renderTopic(topic, dev), 'tele/pk1/dk1');
    assert.equal(b.renderTopic(topic, dev), `mirror${topic}`);
    assert.equal(
      c.renderTopic('/ext/session/pk1/dk1/combine/login', dev),
      '/ext/session/pk1/dk1/combine/login',
    );
  });

  it('an HTTP route renders URL, path and headers; {topic} is encoded per level with / kept', () => {
    const t = compileRoutes(
      cfg({
        name: 'h',
        match: '/sys/#',
        backend: 'http',
        method: 'PUT',
        url: 'https://Api.Example.com:8443/v1/{pk}/devices/{dk}/msg{topic}?src=coap&dk={dk}',
        headers: { 'X-Tenant': 'tenant-{pk}', 'X-Where': '{topic} ({dk})' },
        timeoutMs: 1234,
      }),
    );
    const r = t.routes[0];
    assert.ok(r instanceof CompiledHttpRoute);
    assert.equal(r.method, 'PUT');
    assert.equal(r.origin, 'https://api.example.com:8443');
    assert.equal(r.timeoutMs, 1234);
    const topic = T('pk1', 'dk1', 'thing/event/a b%c?#/post');
    const device = { productKey: 'p k', deviceKey: 'd/k%?' };
    assert.equal(
      r.renderPath(topic, device),
      '/v1/p%20k/devices/d%2Fk%25%3F/msg/sys/pk1/dk1/thing/event/a%20b%25c%3F%23/post?src=coap&dk=d%2Fk%25%3F',
    );
    assert.equal(
      r.renderUrl(T('pk1', 'dk1', 'thing/log/post'), dev),
      'https://api.example.com:8443/v1/pk1/devices/dk1/msg/sys/pk1/dk1/thing/log/post?src=coap&dk=dk1',
    );
    assert.deepEqual(r.renderHeaders(T('pk1', 'dk1', 'thing/log/post'), dev), {
      'x-tenant': 'tenant-pk1',
      'x-where': '/sys/pk1/dk1/thing/log/post (dk1)',
    });
    // header values: non-ASCII and % percent-encoded, reversible with decodeURIComponent
    const h = r.renderHeaders('/sys/p/d/x', { productKey: 'pä%', deviceKey: 'd' });
    assert.equal(h['x-tenant'], 'tenant-p%C3%A4%25');
    assert.equal(decodeURIComponent(h['x-tenant'] ?? ''), 'tenant-pä%');
  });

  it('URL paths are made absolute; the topic may follow the host directly', () => {
    const t = compileRoutes(
      cfg(
        { match: '/a/#', backend: 'http', url: 'http://h:8080' },
        { match: '/b/#', backend: 'http', url: 'http://h:8080{topic}' },
        { match: '/c/#', backend: 'http', url: 'http://h:8080?d={dk}' },
        { match: '/d/#', backend: 'http', url: 'http://h/in/' },
      ),
    );
    const paths = t.routes.map((r) =>
      r instanceof CompiledHttpRoute ? r.renderPath('/sys/p/d/x', dev) : '',
    );
    assert.deepEqual(paths, ['/', '/sys/p/d/x', '/?d=dk1', '/in/']);
    assert.deepEqual(
      t.routes.map((r) => (r instanceof CompiledHttpRoute ? r.origin : '')),
      ['http://h:8080', 'http://h:8080', 'http://h:8080', 'http://h'],
    );
  });
});

describe('route config errors name the route and the field', () => {
  const cases: [string, unknown[], string][] = [
    [
      'unknown placeholder in url',
      [{ name: 'telemetry', match: '/sys/#', backend: 'http', url: 'http://h/{foo}' }],
      'routes[0] ("telemetry"): url: unknown placeholder {foo}',
    ],
    [
      "'#' not last",
      [{ match: '/sys/#/post', backend: 'mqtt' }],
      "routes[0]: match: '#' must be the last level",
    ],
    [
      "'#' inside a level",
      [{ match: '/sys/a#', backend: 'mqtt' }],
      `routes[0]: match: '#' must be a whole level (in "a#")`,
    ],
    [
      "'+' inside a level",
      [{ match: '/sys/a+/x', backend: 'mqtt' }],
      `routes[0]: match: '+' must be a whole level (in "a+")`,
    ],
    [
      'no leading slash',
      [{ match: 'sys/+/+/x', backend: 'mqtt' }],
      "routes[0]: match: must start with '/' (EnOS topics keep their leading slash) or be '#'",
    ],
    ['empty level', [{ match: '/sys//x', backend: 'mqtt' }], 'routes[0]: match: empty level'],
    ['trailing slash', [{ match: '/sys/', backend: 'mqtt' }], 'routes[0]: match: empty level'],
    [
      '{topic} in match',
      [{ match: '/sys/{topic}', backend: 'mqtt' }],
      'routes[0]: match: unknown placeholder {topic} (match takes {pk}, {dk}, + and #)',
    ],
    [
      'partial placeholder level',
      [{ match: '/sys/x{pk}/y', backend: 'mqtt' }],
      'routes[0]: match: placeholders must be whole levels (in "x{pk}")',
    ],
    [
      'literal that never matches',
      [{ match: '/sys/a b', backend: 'mqtt' }],
      'routes[0]: match: level "a b" can never match a device topic',
    ],
    [
      'bad url',
      [
        { match: '/a', backend: 'mqtt' },
        { name: 'x', match: '/b', backend: 'http', url: 'ftp://h/x' },
      ],
      'routes[1] ("x"): url: not an http(s) URL',
    ],
    [
      'url that is not a URL',
      [
        { match: '/a', backend: 'mqtt' },
        { match: '/b', backend: 'http', url: 'not a url' },
      ],
      'routes[1]: url: not an http(s) URL',
    ],
    [
      'placeholder in host',
      [{ match: '/b', backend: 'http', url: 'http://{pk}.example.com/x' }],
      'routes[0]: url: placeholders must not be in the scheme, host or port',
    ],
    [
      'placeholder as the whole url',
      [{ match: '/b', backend: 'http', url: '{topic}' }],
      'routes[0]: url: placeholders must not be in the scheme, host or port',
    ],
    [
      'placeholder right after the host',
      [{ match: '/b', backend: 'http', url: 'http://host{dk}/x' }],
      'routes[0]: url: placeholders must not be in the scheme, host or port',
    ],
    [
      'credentials in url',
      [{ match: '/b', backend: 'http', url: 'http://u:p@h/x' }],
      'routes[0]: url: must not hold credentials (use auth)',
    ],
    [
      'fragment',
      [{ match: '/b', backend: 'http', url: 'http://h/x#frag' }],
      'routes[0]: url: must not have a fragment (#)',
    ],
    [
      'space in url',
      [{ match: '/b', backend: 'http', url: 'http://h/a b/{dk}' }],
      'routes[0]: url: has characters not allowed in a URL (percent-encode them)',
    ],
    [
      'unclosed brace',
      [{ match: '/b', backend: 'http', url: 'http://h/{dk' }],
      "routes[0]: url: unclosed '{'",
    ],
    [
      'stray closing brace',
      [{ match: '/b', backend: 'mqtt', topic: 'a}b' }],
      "routes[0]: topic: unmatched '}'",
    ],
    [
      'wildcard in mqtt topic template',
      [{ name: 'm', match: '/b', backend: 'mqtt', topic: 'a/+/{dk}' }],
      'routes[0] ("m"): topic: must not contain +, # or NUL (an MQTT topic to publish to)',
    ],
    [
      'unknown placeholder in mqtt topic',
      [{ match: '/b', backend: 'mqtt', topic: 'a/{secret}' }],
      'routes[0]: topic: unknown placeholder {secret}',
    ],
    [
      'unknown placeholder in header',
      [{ match: '/b', backend: 'http', url: 'http://h/', headers: { 'X-A': '{pk}-{oops}' } }],
      'routes[0]: headers.X-A: unknown placeholder {oops}',
    ],
    [
      'reserved header',
      [{ match: '/b', backend: 'http', url: 'http://h/', headers: { 'X-Device-Key': 'forged' } }],
      'routes[0]: headers.X-Device-Key: X-Device-Key is set by coap-edge itself',
    ],
    [
      'framing header',
      [{ match: '/b', backend: 'http', url: 'http://h/', headers: { 'Content-Length': '1' } }],
      'routes[0]: headers.Content-Length: Content-Length is set by coap-edge itself',
    ],
    [
      'bad header name',
      [{ match: '/b', backend: 'http', url: 'http://h/', headers: { 'X A': 'v' } }],
      'routes[0]: headers."X A": not a valid header name',
    ],
    [
      'header given twice',
      [{ match: '/b', backend: 'http', url: 'http://h/', headers: { 'X-A': '1', 'x-a': '2' } }],
      'routes[0]: headers.x-a: given twice (also as X-A)',
    ],
    [
      'control character in header value',
      [{ match: '/b', backend: 'http', url: 'http://h/', headers: { 'X-A': 'a\r\nb' } }],
      'routes[0]: headers.X-A: has characters not allowed in a header value',
    ],
    [
      'auth header set by route headers',
      [
        {
          match: '/b',
          backend: 'http',
          url: 'http://h/',
          headers: { Authorization: 'Basic x' },
          auth: { type: 'bearer', tokenEnv: 'TOKEN' },
        },
      ],
      "routes[0]: headers.Authorization: Authorization is set by the route's auth",
    ],
    [
      'hmac timestamp header set by route headers',
      [
        {
          match: '/b',
          backend: 'http',
          url: 'http://h/',
          headers: { 'X-Timestamp': '1' },
          auth: { type: 'hmac', secretEnv: 'SECRET' },
        },
      ],
      "routes[0]: headers.X-Timestamp: X-Timestamp is set by the route's auth",
    ],
    [
      'hmac header reserved',
      [
        {
          match: '/b',
          backend: 'http',
          url: 'http://h/',
          auth: { type: 'hmac', secretEnv: 'SECRET', header: 'X-Device-Topic' },
        },
      ],
      'routes[0]: auth.header: X-Device-Topic is set by coap-edge itself',
    ],
    [
      'bearer env missing',
      [
        { match: '/a', backend: 'mqtt' },
        { match: '/b', backend: 'mqtt' },
        { match: '/c', backend: 'mqtt' },
        {
          match: '/d',
          backend: 'http',
          url: 'http://h/',
          auth: { type: 'bearer', tokenEnv: 'API_TOKEN' },
        },
      ],
      'routes[3]: auth.tokenEnv: environment variable API_TOKEN is not set',
    ],
    [
      'hmac env missing',
      [
        {
          name: 'signed',
          match: '/d',
          backend: 'http',
          url: 'http://h/',
          auth: { type: 'hmac', secretEnv: 'NOPE' },
        },
      ],
      'routes[0] ("signed"): auth.secretEnv: environment variable NOPE is not set',
    ],
    [
      'duplicate name',
      [
        { name: 'dup', match: '/a', backend: 'mqtt' },
        { name: 'dup', match: '/b', backend: 'mqtt' },
      ],
      'routes[1] ("dup"): name: duplicate route name (also routes[0])',
    ],
  ];
  for (const [what, routes, message] of cases) {
    it(what, () => {
      const err = configError(routes, { TOKEN: 't', SECRET: 's' });
      assert.equal(err.message, message);
      assert.ok(err.field.length > 0);
      assert.ok(message.startsWith(`routes[${err.index}]`));
    });
  }

  it('carries index, name and field', () => {
    const err = configError([
      { match: '/a', backend: 'mqtt' },
      { name: 'telemetry', match: '/b', backend: 'http', url: 'http://h/{foo}' },
    ]);
    assert.equal(err.index, 1);
    assert.equal(err.routeName, 'telemetry');
    assert.equal(err.field, 'url');
    assert.equal(err.name, 'RouteConfigError');
  });

  it('an unknown backend (config not from the schema) is named', () => {
    try {
      compileRoutes([{ match: '/a', backend: 'amqp' } as unknown as RouteConfig]);
      assert.fail('expected an error');
    } catch (err) {
      assert.ok(err instanceof RouteConfigError);
      assert.equal(err.message, 'routes[0]: backend: unknown backend "amqp" (mqtt or http)');
    }
  });
});

describe('route auth secrets', () => {
  const SECRET = 'sup3r-s3cret-VALUE';

  it('are read once from the environment and never shown', () => {
    const env: Record<string, string> = { TOKEN: SECRET, HKEY: SECRET };
    const t = compileRoutes(
      cfg(
        {
          name: 'b',
          match: '/a',
          backend: 'http',
          url: 'http://h/',
          auth: { type: 'bearer', tokenEnv: 'TOKEN' },
        },
        {
          name: 'h',
          match: '/b',
          backend: 'http',
          url: 'http://h/',
          auth: { type: 'hmac', secretEnv: 'HKEY' },
        },
      ),
      { env },
    );
    env.TOKEN = 'changed';
    const [b, h] = t.routes;
    assert.ok(b instanceof CompiledHttpRoute && h instanceof CompiledHttpRoute);
    const headers: Record<string, string> = {};
    b.auth?.apply(headers, 'POST', '/', Buffer.alloc(0), 0);
    assert.equal(headers.authorization, `Bearer ${SECRET}`, 'read at start-up, not per call');
    assert.equal(h.auth?.type, 'hmac');
    assert.equal(h.auth?.header, 'x-signature');
    for (const shown of [JSON.stringify(t.routes), inspect(t, { depth: 20, showHidden: true })]) {
      assert.ok(!shown.includes(SECRET), shown);
    }
  });

  it('a token unusable in a header is refused without echoing it', () => {
    const err = configError(
      [{ match: '/a', backend: 'http', url: 'http://h/', auth: { type: 'bearer', tokenEnv: 'T' } }],
      { T: `${SECRET}\r\nX-Evil: 1` },
    );
    assert.equal(
      err.message,
      'routes[0]: auth.tokenEnv: environment variable T holds characters not allowed in a header',
    );
    assert.ok(!err.message.includes(SECRET));
    assert.ok(!inspect(err).includes(SECRET));
  });
});
