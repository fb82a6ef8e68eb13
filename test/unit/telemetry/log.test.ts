import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger } from '../../../src/telemetry/log.js';

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
