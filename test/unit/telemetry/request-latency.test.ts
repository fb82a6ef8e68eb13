/**
 * The CoAP request latency histogram (`coap_edge_coap_request_duration_seconds`) is counted in
 * plain buckets by `RequestStats` and rendered at scrape time: these pin its exposition —
 * buckets in seconds with the same bounds, cumulative, `+Inf`, sum and count per method, no
 * series before a request — as prom-client's own histogram rendered it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RequestStats, createMetrics } from '../../../src/telemetry/metrics.js';

const NAME = 'coap_edge_coap_request_duration_seconds';

/** The histogram's sample lines, `name{labels} value`. */
async function lines(m: ReturnType<typeof createMetrics>): Promise<string[]> {
  const text = await m.registry.metrics();
  return text.split('\n').filter((l) => l.startsWith(NAME));
}

test('request latency: buckets, +Inf, sum and count per method, in seconds', async () => {
  const m = createMetrics();
  const text = await m.registry.metrics();
  assert.ok(text.includes(`# TYPE ${NAME} histogram`), 'declared before any request');
  assert.deepEqual(await lines(m), [], 'no series before a request');

  m.requests.record('GET', 'none', '4.04', 0.003);
  m.requests.record('GET', 'none', '4.04', 0.02);
  m.requests.record('GET', 'none', '2.05', 0.0025); // on a bound: counted in it
  m.requests.record('POST', 'uplink', '2.04', 45);
  const got = await lines(m);
  /** The value of the sample `name` whose labels are exactly `labels` (in any order). */
  const value = (name: string, labels: Record<string, string>): number => {
    const want = Object.entries(labels)
      .map(([k, v]) => `${k}="${v}"`)
      .sort()
      .join(',');
    const l = got.find((x) => {
      const m2 = /^(\w+)\{(.*)\} (\S+)$/.exec(x);
      return m2?.[1] === name && (m2[2] ?? '').split(',').sort().join(',') === want;
    });
    assert.ok(l !== undefined, `${name} ${want} present`);
    return Number(l.slice(l.lastIndexOf(' ') + 1));
  };
  const get = (le: string): number => value(`${NAME}_bucket`, { le, method: 'GET' });
  assert.equal(get('0.001'), 0);
  assert.equal(get('0.0025'), 1);
  assert.equal(get('0.005'), 2);
  assert.equal(get('0.01'), 2);
  assert.equal(get('0.025'), 3);
  assert.equal(get('30'), 3);
  assert.equal(get('+Inf'), 3);
  assert.equal(value(`${NAME}_count`, { method: 'GET' }), 3);
  assert.ok(Math.abs(value(`${NAME}_sum`, { method: 'GET' }) - 0.0255) < 1e-9);
  // above every bound: only in +Inf
  assert.equal(value(`${NAME}_bucket`, { le: '30', method: 'POST' }), 0);
  assert.equal(value(`${NAME}_bucket`, { le: '+Inf', method: 'POST' }), 1);
  assert.equal(value(`${NAME}_count`, { method: 'POST' }), 1);
  // 14 bounds + Inf + sum + count per method
  assert.equal(got.length, 2 * (14 + 3));
});

test('request counts: one entry per method, topic class and code, with its count', () => {
  const m = createMetrics();
  m.requests.record('POST', 'uplink', '2.04', 0.001);
  m.requests.record('POST', 'uplink', '2.04', 0.001);
  m.requests.record('POST', 'uplink', '5.04', 0.001);
  m.requests.record('POST', 'reply', '2.04', 0.001);
  m.requests.record('GET', 'uplink', '2.04', 0.001);
  m.requests.record('GET', 'none', '4.04', 0.001);
  const got = m.requests
    .entries()
    .map(([l, n]) => `${l.method} ${l.topic_class} ${l.code} ${n}`)
    .sort();
  assert.deepEqual(got, [
    'GET none 4.04 1',
    'GET uplink 2.04 1',
    'POST reply 2.04 1',
    'POST uplink 2.04 2',
    'POST uplink 5.04 1',
  ]);
});

test('request counts: a request with the labels of the one before looks nothing up', () => {
  const stats = new RequestStats([1, 10]);
  const saved = Object.getOwnPropertyDescriptor(Map.prototype, 'get')!;
  const mapGet = saved.value as (this: Map<unknown, unknown>, key: unknown) => unknown;
  let gets = 0;
  const counted = (run: () => void): number => {
    gets = 0;
    Map.prototype.get = function (this: Map<unknown, unknown>, key: unknown): unknown {
      gets++;
      return mapGet.call(this, key);
    };
    try {
      run();
    } finally {
      Object.defineProperty(Map.prototype, 'get', saved);
    }
    return gets;
  };
  // label strings built at run time, as the handler's code labels are: equal, not identical
  const code = (c: string): string => ['4', c].join('.');
  assert.equal(
    counted(() => stats.record('GET', 'none', code('04'), 0.001)),
    4,
    'first',
  );
  assert.equal(
    counted(() => stats.record('GET', 'none', code('04'), 0.02)),
    0,
    'repeated',
  );
  stats.record('POST', 'uplink', '2.04', 0.5);
  stats.record('GET', 'none', code('04'), 0.001);
  stats.record('GET', 'none', '2.05', 0.001);
  stats.record('GET', 'none', '2.05', 0.001);
  stats.record('GET', 'none', code('04'), 20);
  assert.deepEqual(
    stats.entries().map(([l, n]) => `${l.method} ${l.topic_class} ${l.code} ${n}`),
    ['GET none 4.04 4', 'GET none 2.05 2', 'POST uplink 2.04 1'],
  );
  const byMethod = new Map(stats.latencies());
  assert.equal(byMethod.get('GET')?.count, 6);
  assert.deepEqual(byMethod.get('GET')?.cumulative, [4, 4]);
  assert.equal(byMethod.get('POST')?.count, 1);
});
