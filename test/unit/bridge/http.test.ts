/** Pure parts of the HTTP backend: status mapping, Retry-After, content types, HMAC, headers. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import {
  BackendAuth,
  contentFormatFor,
  contentTypeFor,
  hmacSignature,
  mapHttpStatus,
  retryAfterSeconds,
} from '../../../src/bridge/http/index.js';
import {
  encodeHeaderValue,
  encodeUrlTopic,
  isValidTraceparent,
} from '../../../src/bridge/http/headers.js';

const NOW = Date.parse('2024-01-01T00:00:00Z');
const opts = { unavailableMaxAge: 30, maxRetryAfter: 300, nowMs: NOW };

describe('HTTP status mapping', () => {
  const table: [number, string | undefined, string, string, number | undefined][] = [
    [200, undefined, 'changed', '2xx', undefined],
    [201, undefined, 'changed', '2xx', undefined],
    [204, undefined, 'changed', '2xx', undefined],
    [299, undefined, 'changed', '2xx', undefined],
    [400, undefined, 'bad-request', '4xx', undefined],
    [401, undefined, 'unauthorized', '4xx', undefined],
    [403, undefined, 'forbidden', '4xx', undefined],
    [404, undefined, 'not-found', '4xx', undefined],
    [405, undefined, 'method-not-allowed', '4xx', undefined],
    [409, undefined, 'bad-request', '4xx', undefined],
    [413, undefined, 'too-large', '4xx', undefined],
    [415, undefined, 'unsupported-content-format', '4xx', undefined],
    [418, undefined, 'bad-request', '4xx', undefined],
    [422, undefined, 'bad-request', '4xx', undefined],
    [429, undefined, 'too-many-requests', '4xx', undefined],
    [429, '12', 'too-many-requests', '4xx', 12],
    [500, undefined, 'unavailable', '5xx', 30],
    [501, undefined, 'unavailable', '5xx', 30],
    [502, undefined, 'unavailable', '5xx', 30],
    [503, undefined, 'unavailable', '5xx', 30],
    [503, '7', 'unavailable', '5xx', 7],
    [503, '0', 'unavailable', '5xx', 0],
    [503, '86400', 'unavailable', '5xx', 300],
    [503, 'soon', 'unavailable', '5xx', 30],
    [503, 'Mon, 01 Jan 2024 00:01:00 GMT', 'unavailable', '5xx', 60],
    [504, '5', 'gateway-timeout', '5xx', undefined],
    [599, undefined, 'unavailable', '5xx', 30],
    [101, undefined, 'bad-gateway', 'bad-response', undefined],
    [301, undefined, 'bad-gateway', 'bad-response', undefined],
    [304, undefined, 'bad-gateway', 'bad-response', undefined],
    [600, undefined, 'bad-gateway', 'bad-response', undefined],
  ];
  for (const [code, retryAfter, status, outcome, maxAge] of table) {
    it(`${code}${retryAfter === undefined ? '' : ` Retry-After: ${retryAfter}`} → ${status}`, () => {
      const m = mapHttpStatus(code, retryAfter, opts);
      assert.equal(m.status, status);
      assert.equal(m.outcome, outcome);
      assert.equal(m.maxAge, maxAge);
    });
  }

  it('Retry-After: delta-seconds, HTTP-date (past → 0), garbage, cap', () => {
    assert.equal(retryAfterSeconds(undefined, 300, NOW), undefined);
    assert.equal(retryAfterSeconds(' 42 ', 300, NOW), 42);
    assert.equal(retryAfterSeconds('-1', 300, NOW), undefined);
    assert.equal(retryAfterSeconds('1.5', 300, NOW), undefined);
    assert.equal(retryAfterSeconds('Sun, 31 Dec 2023 23:00:00 GMT', 300, NOW), 0);
    assert.equal(retryAfterSeconds('Mon, 01 Jan 2024 00:00:10 GMT', 300, NOW), 10);
    assert.equal(retryAfterSeconds('Tue, 02 Jan 2024 00:00:00 GMT', 300, NOW), 300);
    assert.equal(retryAfterSeconds('99999999999', 300, NOW), undefined);
  });
});

describe('content types', () => {
  it('CoAP Content-Format → Content-Type', () => {
    assert.equal(contentTypeFor(50), 'application/json');
    assert.equal(contentTypeFor(42), 'application/octet-stream');
    assert.equal(contentTypeFor(0), 'text/plain; charset=utf-8');
    assert.equal(contentTypeFor(60), 'application/cbor');
    assert.equal(contentTypeFor(undefined), 'application/octet-stream');
    assert.equal(contentTypeFor(11542), 'application/octet-stream');
  });

  it('Content-Type → CoAP Content-Format', () => {
    const cases: [string | undefined, number | undefined][] = [
      ['application/json', 50],
      ['Application/JSON; charset=utf-8', 50],
      ['application/problem+json', 50],
      ['application/octet-stream', 42],
      ['text/plain', 0],
      ['text/plain;charset=UTF-8', 0],
      ['text/html', 0],
      ['application/cbor', 60],
      ['application/senml+cbor', 112],
      ['application/foo+cbor', 60],
      ['image/png', 42],
      [undefined, undefined],
      ['', undefined],
    ];
    for (const [type, format] of cases) assert.equal(contentFormatFor(type), format, type);
  });
});

describe('header values and trace context', () => {
  it('device values are percent-encoded outside printable ASCII, reversibly', () => {
    assert.equal(
      encodeHeaderValue('/sys/pk1/dk1/thing/measurepoint/post'),
      '/sys/pk1/dk1/thing/measurepoint/post',
    );
    assert.equal(encodeHeaderValue('a b%c\u00e4\r'), 'a%20b%25c%C3%A4%0D');
    for (const v of ['a b%c\u00e4', 'x:y@z', '%%', '\u{1F600}']) {
      assert.equal(decodeURIComponent(encodeHeaderValue(v)), v);
    }
  });

  it('URL topic encoding keeps slashes', () => {
    assert.equal(encodeUrlTopic('/sys/a b/c?d/e#f'), '/sys/a%20b/c%3Fd/e%23f');
  });

  it('traceparent is forwarded only when well-formed', () => {
    assert.ok(isValidTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'));
    assert.ok(
      !isValidTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y'),
    );
    assert.ok(!isValidTraceparent('ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'));
    assert.ok(!isValidTraceparent('00-XYZ'));
  });
});

describe('HMAC signature', () => {
  // independent vector: printf 'POST\n<target>\n<ts>\n<body>' | openssl dgst -sha256 -hmac s3cr3t
  const target = '/ingest/sys/pk/dk/thing/measurepoint/post?x=1';
  const body = Buffer.from('{"id":"1","params":{}}');
  const expected = 'sha256=8dbac66f071922978d5e80042a2ec1cff9a42e8504ea0adde5d99fcf431eaa58';

  it('matches the documented string-to-sign', () => {
    assert.equal(hmacSignature('s3cr3t', 'POST', target, '1700000000000', body), expected);
  });

  it('BackendAuth.hmac sets X-Timestamp and the signature header; never shows the secret', () => {
    const auth = BackendAuth.hmac('s3cr3t', 'X-Sig');
    const headers: Record<string, string> = {};
    auth.apply(headers, 'POST', target, body, 1700000000000.7);
    assert.deepEqual(headers, { 'x-timestamp': '1700000000000', 'x-sig': expected });
    assert.deepEqual(auth.headerNames, ['x-sig', 'x-timestamp']);
    assert.ok(!JSON.stringify(auth).includes('s3cr3t'));
    assert.ok(!inspect(auth, { showHidden: true }).includes('s3cr3t'));
  });

  it('BackendAuth.bearer sets Authorization', () => {
    const headers: Record<string, string> = {};
    BackendAuth.bearer('tok').apply(headers, 'PUT', '/', Buffer.alloc(0), 0);
    assert.deepEqual(headers, { authorization: 'Bearer tok' });
  });
});
