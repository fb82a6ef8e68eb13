import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger, prettyLine, resolveLogFormat } from '../../../src/telemetry/log.js';

test('log lines carry only their own fields (nothing left over from earlier lines)', () => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  const log = createLogger('info', sink);
  log.info({ a: 1 }, 'one');
  log.info({ b: 2 }, 'two');
  log.info({ deviceSecret: 'never-printed' }, 'three');
  assert.equal(lines.length, 3);
  assert.equal(lines[1]?.a, undefined);
  assert.equal(lines[1]?.b, 2);
  assert.equal(lines[2]?.b, undefined);
  assert.equal(lines[2]?.deviceSecret, '<redacted>');
});

test('logFormat auto: pretty on a terminal, JSON otherwise; explicit formats win', () => {
  assert.equal(resolveLogFormat('auto', true), 'pretty');
  assert.equal(resolveLogFormat('auto', false), 'json');
  assert.equal(resolveLogFormat('json', true), 'json');
  assert.equal(resolveLogFormat('pretty', false), 'pretty');
});

test('pretty lines: time, level, message, key=value fields; secrets still redacted', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const log = createLogger('info', sink, 'pretty');
  log.info({ dtls: '0.0.0.0:5684', coap: 'off' }, 'coap-edge listening');
  log.warn({ identity: 'pk,dk,2,3600', deviceSecret: 'never-printed', n: 3 }, 'two words');
  log.error({ err: new Error('boom') }, 'failed');
  assert.equal(lines.length, 3);
  assert.match(
    lines[0]!,
    /^\d\d:\d\d:\d\d\.\d{3} INFO {2}coap-edge listening dtls=0\.0\.0\.0:5684 coap=off\n$/,
  );
  assert.match(
    lines[1]!,
    / WARN {2}two words identity=pk,dk,2,3600 deviceSecret=<redacted> n=3\n$/,
  );
  assert.doesNotMatch(lines.join(''), /never-printed/);
  assert.match(lines[2]!, / ERROR failed err="Error: boom"\n$/);
  for (const l of lines) assert.doesNotMatch(l, /^\{/, 'not JSON');
});

test('prettyLine: colours the level when asked; text that is not a JSON object passes through', () => {
  const line = prettyLine('{"level":"error","time":"2026-12-06T09:00:00.000Z","msg":"x"}\n', true);
  assert.equal(line, '09:00:00.000 \x1b[31mERROR\x1b[0m x\n');
  assert.equal(prettyLine('plain text', false), 'plain text\n');
  assert.equal(prettyLine('[1,2]\n', false), '[1,2]\n');
});
