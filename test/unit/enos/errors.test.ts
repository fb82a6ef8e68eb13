import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EnosError, MAX_ECHO, safeEcho } from '../../../src/enos/index.js';

void describe('EnosError', () => {
  void it('has a stable code, a name and a constant message', () => {
    const e = new EnosError('ENOS_IDENTITY_MODE');
    assert.ok(e instanceof Error);
    assert.equal(e.name, 'EnosError');
    assert.equal(e.code, 'ENOS_IDENTITY_MODE');
    assert.equal(e.message, 'PSK identity secureMode must be 2 or 3');
    assert.equal(
      new EnosError('ENOS_TOPIC', 'deviceKey').message,
      'cannot build an EnOS topic: deviceKey',
    );
  });
});

void describe('safeEcho', () => {
  void it('quotes, escapes control characters and caps the length', () => {
    assert.equal(safeEcho('abc'), '"abc"');
    assert.equal(safeEcho('a\u0000b\nc\u007f\u0085"\\'), '"a\\x00b\\x0ac\\x7f\\x85\\x22\\x5c"');
    assert.equal(safeEcho('\ud800x'), '"\\ud800x"');
    assert.equal(safeEcho('ü😀'), '"ü😀"');
    const long = safeEcho('y'.repeat(1000));
    assert.equal(long, `"${'y'.repeat(MAX_ECHO)}"…`);
  });
});
