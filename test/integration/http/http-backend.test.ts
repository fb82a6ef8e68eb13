/**
 * The HTTP backend against a real in-process `node:http` server: headers and body, bearer and
 * HMAC auth (verified by the server), status mapping, timeouts, connection refused, the
 * concurrency cap, keep-alive, large bodies and the read cap.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { routeSchema } from '../../../src/config/settings.js';
import { CompiledHttpRoute, compileRoutes } from '../../../src/bridge/routes.js';
import { HttpBackend, type HttpBackendOptions } from '../../../src/bridge/http/index.js';
import type { BridgeResponse } from '../../../src/bridge/types.js';
import { ManualClock } from '../../../src/time/clock.js';
import { freePort, TestServer, waitFor, type Received } from './server.js';

const TOKEN = 'tok-\u0041bc123';
const SECRET = 'hmac-secret-\u00e4-value';
const env = { EDGE_TOKEN: TOKEN, EDGE_HMAC: SECRET };

const device = { productKey: 'pk1', deviceKey: 'dk1', assetId: 'asset-9' };
const TOPIC = '/sys/pk1/dk1/thing/measurepoint/post';
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const JSON_BODY = Buffer.from('{"id":"1","version":"1.0","method":"x","params":{"t":21.5}}');

function bytes(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

function hmacOk(r: Received): boolean {
  const ts = r.headers['x-timestamp'];
  const sig = r.headers['x-signature'];
  if (typeof ts !== 'string' || typeof sig !== 'string') return false;
  if (!/^\d+$/.test(ts) || Math.abs(Date.now() - Number(ts)) > 10_000) return false;
  const mac = createHmac('sha256', Buffer.from(SECRET, 'utf8'));
  mac.update(Buffer.from(`${r.method}\n${r.url}\n${ts}\n`, 'utf8'));
  mac.update(r.body);
  const expected = Buffer.from(`sha256=${mac.digest('hex')}`);
  const given = Buffer.from(sig);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

const held: ServerResponse[] = [];

function handle(r: Received, res: ServerResponse): void {
  const u = new URL(r.url, 'http://x');
  const p = u.pathname;
  if (p.startsWith('/echo')) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"id":"1","code":200,"data":{}}');
  } else if (p.startsWith('/status/')) {
    const code = Number(p.split('/')[2]);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    const ra = u.searchParams.get('retryAfter');
    if (ra !== null) headers['retry-after'] = ra;
    res.writeHead(code, headers);
    res.end(code === 204 ? undefined : `{"status":${code}}`);
  } else if (p === '/hang') {
    // never answers
  } else if (p === '/hold') {
    held.push(res);
  } else if (p.startsWith('/bytes/')) {
    const body = bytes(Number(p.split('/')[2]));
    const type = u.searchParams.get('type') ?? 'application/octet-stream';
    if (u.searchParams.has('chunked')) {
      res.writeHead(200, { 'content-type': type });
      for (let i = 0; i < body.length; i += 4096) res.write(body.subarray(i, i + 4096));
      res.end();
    } else {
      res.writeHead(200, { 'content-type': type, 'content-length': String(body.length) });
      res.end(body);
    }
  } else if (p === '/slow-body') {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
    res.write('{"a":');
  } else if (p === '/bearer') {
    res.writeHead(r.headers.authorization === `Bearer ${TOKEN}` ? 204 : 401);
    res.end();
  } else if (p.startsWith('/hmac')) {
    res.writeHead(hmacOk(r) ? 204 : 401);
    res.end();
  } else {
    res.writeHead(404);
    res.end();
  }
}

function route(over: Record<string, unknown>): CompiledHttpRoute {
  const t = compileRoutes([routeSchema.parse({ match: '#', backend: 'http', ...over })], { env });
  const r = t.routes[0];
  assert.ok(r instanceof CompiledHttpRoute);
  return r;
}

const defaults: HttpBackendOptions = {
  timeoutMs: 2_000,
  connections: 4,
  maxConcurrency: 64,
  unavailableMaxAge: 30,
};

async function withBackend<T>(
  o: Partial<HttpBackendOptions>,
  f: (b: HttpBackend) => Promise<T>,
): Promise<T> {
  const b = new HttpBackend({ ...defaults, ...o });
  try {
    return await f(b);
  } finally {
    await b.close();
  }
}

const call = (
  b: HttpBackend,
  r: CompiledHttpRoute,
  extra: Partial<{
    payload: Buffer;
    contentFormat: number | undefined;
    traceparent: string;
    topic: string;
  }> = {},
) =>
  b.call(r, {
    device,
    topic: extra.topic ?? TOPIC,
    payload: extra.payload ?? JSON_BODY,
    contentFormat: 'contentFormat' in extra ? extra.contentFormat : 50,
    ...(extra.traceparent !== undefined ? { traceparent: extra.traceparent } : {}),
  });

describe('HTTP backend against a real HTTP server', () => {
  let server: TestServer;
  let backend: HttpBackend;

  before(async () => {
    server = await TestServer.start(handle);
    backend = new HttpBackend(defaults);
  });

  after(async () => {
    for (const r of held) r.destroy();
    await backend.close();
    await server.close();
  });

  it('sends the payload with device headers, content type, traceparent and route headers', async () => {
    const r = route({
      name: 'telemetry',
      url: `${server.base}/echo/{pk}{topic}?dk={dk}`,
      headers: { 'X-Tenant': 't-{pk}', 'X-Route-Topic': '{topic}' },
    });
    const res = await call(backend, r, { traceparent: TRACEPARENT });
    assert.equal(res.status, 'changed');
    assert.equal(res.payload?.toString(), '{"id":"1","code":200,"data":{}}');
    assert.equal(res.contentFormat, 50);
    const got = server.received.at(-1);
    assert.ok(got);
    assert.equal(got.method, 'POST');
    assert.equal(got.url, `/echo/pk1${TOPIC}?dk=dk1`);
    assert.deepEqual(got.body, JSON_BODY);
    assert.equal(got.headers['x-device-product-key'], 'pk1');
    assert.equal(got.headers['x-device-key'], 'dk1');
    assert.equal(got.headers['x-device-asset-id'], 'asset-9');
    assert.equal(got.headers['x-device-topic'], TOPIC);
    assert.equal(got.headers['content-type'], 'application/json');
    assert.equal(got.headers['x-coap-content-format'], '50');
    assert.equal(got.headers.traceparent, TRACEPARENT);
    assert.equal(got.headers['x-tenant'], 't-pk1');
    assert.equal(got.headers['x-route-topic'], TOPIC);
    assert.equal(got.headers['content-length'], String(JSON_BODY.length));
  });

  it('PUT routes, binary payloads intact, no content format → octet-stream, bad traceparent dropped', async () => {
    const r = route({ url: `${server.base}/echo`, method: 'PUT' });
    const payload = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const before = backend.stats().traceContextDropped;
    const res = await call(backend, r, {
      payload,
      contentFormat: undefined,
      traceparent: 'x\r\ny',
    });
    assert.equal(res.status, 'changed');
    const got = server.received.at(-1);
    assert.ok(got);
    assert.equal(got.method, 'PUT');
    assert.deepEqual(got.body, payload);
    assert.equal(got.headers['content-type'], 'application/octet-stream');
    assert.equal(got.headers['x-coap-content-format'], undefined);
    assert.equal(got.headers.traceparent, undefined);
    assert.equal(backend.stats().traceContextDropped, before + 1);
    const text = await call(backend, r, { payload: Buffer.from('hi'), contentFormat: 0 });
    assert.equal(text.status, 'changed');
    assert.equal(server.received.at(-1)?.headers['content-type'], 'text/plain; charset=utf-8');
    await call(backend, r, { payload: Buffer.from([0xa0]), contentFormat: 60 });
    assert.equal(server.received.at(-1)?.headers['content-type'], 'application/cbor');
  });

  it('bearer auth: Authorization: Bearer <token from the environment>', async () => {
    const r = route({
      url: `${server.base}/bearer`,
      auth: { type: 'bearer', tokenEnv: 'EDGE_TOKEN' },
    });
    assert.deepEqual(await call(backend, r), { status: 'changed' });
    const none = route({ url: `${server.base}/bearer` });
    assert.deepEqual(await call(backend, none), { status: 'unauthorized' });
  });

  it('hmac auth: the server verifies X-Signature over method, target, X-Timestamp and body', async () => {
    const r = route({
      url: `${server.base}/hmac/{dk}{topic}?a=1&b={pk}`,
      auth: { type: 'hmac', secretEnv: 'EDGE_HMAC' },
    });
    assert.deepEqual(await call(backend, r), { status: 'changed' });
    assert.deepEqual(await call(backend, r, { payload: Buffer.alloc(0) }), { status: 'changed' });
    assert.deepEqual(await call(backend, r, { payload: bytes(3000) }), { status: 'changed' });
    const got = server.received.at(-1);
    assert.ok(got);
    assert.match(String(got.headers['x-signature']), /^sha256=[0-9a-f]{64}$/);
    assert.ok(!JSON.stringify(got.headers).includes(SECRET));
    // a custom header name
    const custom = route({
      url: `${server.base}/hmac`,
      auth: { type: 'hmac', secretEnv: 'EDGE_HMAC', header: 'X-Edge-Sig' },
    });
    assert.deepEqual(
      await call(backend, custom),
      { status: 'unauthorized' },
      'server expects X-Signature',
    );
    assert.match(String(server.received.at(-1)?.headers['x-edge-sig']), /^sha256=/);
  });

  it('maps HTTP statuses to CoAP outcomes', async () => {
    const cases: [string, BridgeResponse][] = [
      ['200', { status: 'changed', payload: Buffer.from('{"status":200}'), contentFormat: 50 }],
      ['204', { status: 'changed' }],
      ['400', { status: 'bad-request' }],
      ['401', { status: 'unauthorized' }],
      ['403', { status: 'forbidden' }],
      ['404', { status: 'not-found' }],
      ['405', { status: 'method-not-allowed' }],
      ['413', { status: 'too-large' }],
      ['415', { status: 'unsupported-content-format' }],
      ['429', { status: 'too-many-requests' }],
      ['429?retryAfter=9', { status: 'too-many-requests', maxAge: 9 }],
      ['500', { status: 'unavailable', maxAge: 30 }],
      ['502', { status: 'unavailable', maxAge: 30 }],
      ['503', { status: 'unavailable', maxAge: 30 }],
      ['503?retryAfter=17', { status: 'unavailable', maxAge: 17 }],
      ['503?retryAfter=100000', { status: 'unavailable', maxAge: 300 }],
      ['504', { status: 'gateway-timeout' }],
      ['302', { status: 'bad-gateway' }],
    ];
    for (const [path, expected] of cases) {
      const r = route({ url: `${server.base}/status/${path}` });
      assert.deepEqual(await call(backend, r), expected, path);
    }
  });

  /**
   * Calls `r` (a route to `path`) on `b`, whose clock is `clock`: once the server has the
   * request, nothing is answered 1 ms before `ms`, and 5.04 at `ms`.
   */
  async function timesOutAt(
    b: HttpBackend,
    clock: ManualClock,
    r: CompiledHttpRoute,
    path: string,
    ms: number,
  ): Promise<void> {
    const seen = (): number => server.received.filter((q) => q.url === path).length;
    const before = seen();
    let answer: unknown;
    void call(b, r).then((res) => (answer = res));
    await waitFor(() => seen() > before);
    clock.advance(ms - 1);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(answer, undefined, `${path}: nothing before the deadline`);
    clock.advance(1);
    await waitFor(() => answer !== undefined);
    assert.deepEqual(answer, { status: 'gateway-timeout' }, path);
  }

  it('a server that never answers → 5.04 at the route timeout', async () => {
    // the route's 60 s, not the backend's 120 s; undici's own timeouts (the route's 60 s, on
    // real timers) never come close
    const clock = new ManualClock();
    await withBackend({ timeoutMs: 120_000, clock }, async (b) => {
      const r = route({ url: `${server.base}/hang`, timeoutMs: 60_000 });
      await timesOutAt(b, clock, r, '/hang', 60_000);
      assert.equal(b.stats().calls.timeout, 1);
    });
  });

  it('the default timeout (httpTimeoutMs) applies without a route timeout, a body that stalls times out too; the deadline is ours, on the injected clock: 5.04 when it passes, not a millisecond before', async () => {
    // undici's own header and body timeouts (the same 60 s, on real timers) never come close
    const clock = new ManualClock();
    await withBackend({ timeoutMs: 60_000, clock }, async (b) => {
      for (const path of ['/hang', '/slow-body']) {
        await timesOutAt(b, clock, route({ url: `${server.base}${path}` }), path, 60_000);
      }
      assert.equal(b.stats().calls.timeout, 2);
    });
  });

  it('connection refused → 5.03 with Max-Age', async () => {
    const port = await freePort();
    await withBackend({}, async (b) => {
      const r = route({ name: 'down', url: `http://127.0.0.1:${port}/x` });
      assert.deepEqual(await call(b, r), { status: 'unavailable', maxAge: 30 });
      assert.equal(b.stats().byRoute.down?.['connect-error'], 1);
    });
  });

  it('beyond the concurrency cap → 5.03 at once, counted; the calls in flight finish', async () => {
    await withBackend({ maxConcurrency: 2 }, async (b) => {
      const r = route({ name: 'held', url: `${server.base}/hold` });
      held.length = 0;
      const first = call(b, r);
      const second = call(b, r);
      assert.equal(b.inflight, 2);
      await waitFor(() => held.length === 2);
      assert.deepEqual(await call(b, r), { status: 'unavailable', maxAge: 30 });
      // the two held calls are released only below: a third that waited for a slot would
      // never have been answered
      assert.equal(held.length, 2, 'answered without waiting for a slot');
      assert.equal(b.inflight, 2);
      assert.equal(b.stats().calls.overloaded, 1);
      assert.equal(b.stats().byRoute.held?.overloaded, 1);
      for (const res of held.splice(0)) {
        res.writeHead(201);
        res.end();
      }
      assert.deepEqual(await Promise.all([first, second]), [
        { status: 'changed' },
        { status: 'changed' },
      ]);
      assert.equal(b.inflight, 0);
      const s = b.stats();
      assert.equal(s.calls['2xx'], 2);
      assert.equal(s.latency.count, 2);
      assert.equal(s.inflight, 0);
    });
  });

  it('keeps connections alive: 100 calls over at most `connections` sockets', async () => {
    const own = await TestServer.start(handle);
    try {
      await withBackend({ connections: 2 }, async (b) => {
        const r = route({ url: `${own.base}/echo` });
        const burst = await Promise.all(Array.from({ length: 50 }, () => call(b, r)));
        assert.ok(burst.every((x) => x.status === 'changed'));
        for (let i = 0; i < 50; i++) assert.equal((await call(b, r)).status, 'changed');
        assert.equal(own.received.length, 100);
        assert.ok(own.connections >= 1 && own.connections <= 2, `${own.connections} connections`);
        assert.equal(b.stats().pools, 1);
      });
    } finally {
      await own.close();
    }
  });

  it('a 5 KiB answer comes back intact (the CoAP layer sends it block-wise)', async () => {
    const r = route({ url: `${server.base}/bytes/5120` });
    const res = await call(backend, r);
    assert.equal(res.status, 'changed');
    assert.equal(res.contentFormat, 42);
    assert.deepEqual(res.payload, bytes(5120));
    const chunked = await call(
      backend,
      route({ url: `${server.base}/bytes/20000?chunked&type=application/json` }),
    );
    assert.equal(chunked.contentFormat, 50);
    assert.deepEqual(chunked.payload, bytes(20000));
  });

  it('an answer over the read cap → 5.02, with or without Content-Length; the backend stays usable', async () => {
    await withBackend({ maxResponseBody: 64 * 1024 }, async (b) => {
      const exact = await call(b, route({ url: `${server.base}/bytes/65536` }));
      assert.equal(exact.payload?.length, 65536);
      assert.deepEqual(await call(b, route({ url: `${server.base}/bytes/65537` })), {
        status: 'bad-gateway',
      });
      assert.deepEqual(await call(b, route({ url: `${server.base}/bytes/100000?chunked` })), {
        status: 'bad-gateway',
      });
      assert.equal(b.stats().calls['bad-response'], 2);
      assert.equal((await call(b, route({ url: `${server.base}/echo` }))).status, 'changed');
    });
  });

  it('counts outcomes per route; after close() calls answer 5.03', async () => {
    await withBackend({}, async (b) => {
      const ok = route({ name: 'ok', url: `${server.base}/echo` });
      const bad = route({ url: `${server.base}/status/404` });
      await call(b, ok);
      await call(b, ok);
      await call(b, bad);
      await call(b, route({ url: `${server.base}/status/500` }));
      const s = b.stats();
      assert.equal(s.byRoute.ok?.['2xx'], 2);
      assert.equal(s.byRoute['routes[0]']?.['4xx'], 1);
      assert.equal(s.byRoute['routes[0]']?.['5xx'], 1);
      assert.equal(s.calls['2xx'], 2);
      assert.equal(s.latency.count, 4);
      assert.ok(s.latency.sumMs > 0);
      await b.close();
      assert.deepEqual(await call(b, ok), { status: 'unavailable', maxAge: 30 });
      assert.equal(b.stats().pools, 0);
    });
  });

  it('a call made just before close() answers 5.03 and leaves no pool open', async () => {
    // the backend imports undici in the background (a gateway without HTTP routes never
    // loads it); a call waiting for it must not open a pool once close() destroyed them
    const b = new HttpBackend(defaults);
    const pending = call(b, route({ url: `${server.base}/echo` }));
    await b.close();
    assert.deepEqual(await pending, { status: 'unavailable', maxAge: 30 });
    assert.equal(b.stats().pools, 0);
    assert.equal(b.stats().byRoute['routes[0]']?.['connect-error'], 1);
  });
});
