/**
 * The error base (`src/errors`) and its catalogue, docs/errors.md: every error class extends
 * `CoapEdgeError`, every code in src/ is documented (and no documented code is gone), the CoAP
 * reactions the doc states are the ones the errors carry, and the brand works across copies
 * of the module.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { REPO_ROOT } from '../../helpers/processes.js';
import { CoapEdgeError, isCoapEdgeError } from '../../../src/errors/index.js';
import type * as Errors from '../../../src/errors/index.js';
import {
  BackendRejectedError,
  BackendUnavailableError,
  DeviceSuspectedError,
  DeviceUnauthorizedError,
  MqttBackendError,
  ReplyTimeoutError,
  type MqttBackendErrorCode,
} from '../../../src/bridge/mqtt/errors.js';
import { CommandError, type CommandErrorCode } from '../../../src/bridge/commands/errors.js';
import { DtlsError } from '../../../src/dtls/errors.js';
import { CoapFormatError } from '../../../src/coap/errors.js';
import { PresenceError } from '../../../src/bridge/presence/types.js';
import { ConfigError } from '../../../src/config/load.js';

const SRC = join(REPO_ROOT, 'src');
const DOC = readFileSync(join(REPO_ROOT, 'docs', 'errors.md'), 'utf8');

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

const files = sourceFiles(SRC).map((p) => ({
  path: relative(REPO_ROOT, p),
  text: readFileSync(p, 'utf8'),
}));

/** A class deriving from an error: `class X extends FooError` / `extends CoapEdgeError`. */
const ERROR_CLASS = /\bclass\s+\w+\s+extends\s+(\w*Error)\b/g;
/** A quoted SCREAMING_SNAKE literal with at least one underscore. */
const CODE_LITERAL = /'([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)'/g;

/** Codes of src/: the SCREAMING_SNAKE literals of every file that defines an error class. */
function codesInSource(): Map<string, string> {
  const codes = new Map<string, string>();
  for (const f of files) {
    if (f.path.startsWith(join('src', 'errors'))) continue;
    if ([...f.text.matchAll(ERROR_CLASS)].length === 0) continue;
    for (const m of f.text.matchAll(CODE_LITERAL)) codes.set(m[1]!, f.path);
  }
  return codes;
}

/** Table rows of docs/errors.md by code: the cells after the code. */
function docRows(): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const line of DOC.split('\n')) {
    const m = /^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|(.*)\|\s*$/.exec(line);
    if (m === null) continue;
    assert.ok(!rows.has(m[1]!), `${m[1]} is listed twice in docs/errors.md`);
    rows.set(
      m[1]!,
      m[2]!.split('|').map((c) => c.trim()),
    );
  }
  return rows;
}

describe('error base and docs/errors.md', () => {
  it('every error class of src/ extends CoapEdgeError (only the base extends Error)', () => {
    const direct: string[] = [];
    for (const f of files) {
      for (const m of f.text.matchAll(ERROR_CLASS)) {
        if (m[1] === 'Error' && f.path !== join('src', 'errors', 'index.ts')) {
          direct.push(`${f.path}: ${m[0]}`);
        }
      }
    }
    assert.deepEqual(direct, []);
  });

  it('every code in src/ has a row in docs/errors.md, and every row a code in src/', () => {
    const codes = codesInSource();
    const rows = docRows();
    // the scan must see the codes of every layer (a broken regex would find nothing)
    for (const known of [
      'DTLS_DECODE_ERROR',
      'COAP_BAD_VERSION',
      'BACKEND_CLOSED',
      'STARTUP_FAILED',
    ]) {
      assert.ok(codes.has(known), `scan missed ${known}`);
    }
    const missing = [...codes].filter(([c]) => !rows.has(c)).map(([c, p]) => `${c} (${p})`);
    assert.deepEqual(missing, [], 'codes missing from docs/errors.md');
    const stale = [...rows.keys()].filter((c) => !codes.has(c));
    assert.deepEqual(stale, [], 'docs/errors.md lists codes that src/ no longer has');
  });

  it("the doc's CoAP reaction of every backend and command code is the one the error carries", () => {
    const rows = docRows();
    const reactionCell = (code: string): string => {
      const row = rows.get(code);
      assert.ok(row !== undefined, code);
      return row[3]!; // Class | Layer | Meaning | Reaction | Counted
    };
    const mqttCodes = [...codesInSource().keys()].filter((c) =>
      c.startsWith('BACKEND_'),
    ) as MqttBackendErrorCode[];
    assert.equal(mqttCodes.length, 11);
    for (const code of mqttCodes) {
      const err =
        code === 'BACKEND_DEVICE_SUSPECTED'
          ? new DeviceSuspectedError(5)
          : new MqttBackendError(code);
      assert.equal(err.code, code);
      const r = err.coap;
      const expected =
        r.maxAge === 'configured'
          ? `CoAP ${r.code}, Max-Age configured`
          : r.maxAge === undefined
            ? `CoAP ${r.code}`
            : `CoAP ${r.code}, Max-Age = `;
      const cell = reactionCell(code);
      assert.ok(cell.startsWith(expected), `${code}: "${cell}" should start "${expected}"`);
      if (r.maxAge === undefined) assert.ok(!cell.startsWith(`${expected},`), code);
    }
    for (const code of [
      'COMMANDS_UNAVAILABLE',
      'COMMANDS_TOO_MANY_WAITERS',
    ] as CommandErrorCode[]) {
      const r = new CommandError(code).coap;
      const cell = reactionCell(code);
      if (r === undefined) assert.ok(!cell.startsWith('CoAP'), `${code}: "${cell}"`);
      else assert.ok(cell.startsWith(`CoAP ${r.code}`), `${code}: "${cell}" vs ${r.code}`);
    }
  });

  it('the DTLS alert the doc names is the one the error carries', () => {
    const rows = docRows();
    for (const [code, row] of rows) {
      if (!code.startsWith('DTLS_')) continue;
      const alert = new DtlsError(code as DtlsError['code'], 'x').alert;
      const cell = row[3]!;
      if (alert === undefined) assert.ok(cell.startsWith('none'), `${code}: "${cell}"`);
      else assert.match(cell, new RegExp(`^alert \\w+ \\(${alert}\\)`), code);
    }
  });

  it('backend errors carry the answers the router gave before (5.03 Max-Age, 5.02, 5.04, 4.01)', () => {
    assert.deepEqual(new BackendUnavailableError('BACKEND_OVERLOADED').coap, {
      code: '5.03',
      maxAge: 'configured',
    });
    assert.deepEqual(new BackendRejectedError(0x87).coap, { code: '5.02' });
    assert.deepEqual(new BackendRejectedError(0x97).coap, { code: '5.03', maxAge: 'configured' });
    assert.deepEqual(new ReplyTimeoutError('/t_reply', 10).coap, { code: '5.04' });
    assert.deepEqual(new DeviceUnauthorizedError('refused', true).coap, { code: '4.01' });
    assert.deepEqual(new DeviceSuspectedError(0).coap, { code: '5.03', maxAge: 1 });
    assert.deepEqual(new DeviceSuspectedError(42).coap, { code: '5.03', maxAge: 42 });
    assert.equal(new PresenceError('PRESENCE_BAD_CONFIG', 'x').coap, undefined);
  });

  it('keeps codes, names, messages and instanceof of the classes it now derives', () => {
    const e = new ConfigError('bad port', 'file', 'port');
    assert.ok(e instanceof CoapEdgeError && e instanceof ConfigError && e instanceof Error);
    assert.equal(e.code, 'CONFIG_INVALID');
    assert.equal(e.name, 'ConfigError');
    assert.equal(e.message, 'bad port');
    assert.ok(!(e instanceof PresenceError));
    assert.ok(!(e instanceof DtlsError));
    const d = new DtlsError('DTLS_DECODE_ERROR', 'malformed x');
    assert.equal(d.alert, 50);
    assert.ok(isCoapEdgeError(d) && d instanceof DtlsError && !(d instanceof CoapFormatError));
    assert.ok(!isCoapEdgeError(new Error('plain')));
    assert.ok(!isCoapEdgeError(Object.assign(new Error('x'), { code: 'BACKEND_UNAVAILABLE' })));
    assert.ok(!(new Error('plain') instanceof CoapEdgeError));
    assert.ok(!isCoapEdgeError(null) && !isCoapEdgeError('DTLS_CLOSED'));
  });

  it('recognises errors of another copy of the module (brand, not identity)', async () => {
    // a query string makes a second, independent instance of the same module file
    const url = new URL('../../../src/errors/index.js?copy', import.meta.url).href;
    const copy = (await import(url)) as typeof Errors;
    assert.notEqual(copy.CoapEdgeError, CoapEdgeError);
    class Foreign extends copy.CoapEdgeError {
      readonly code = 'FOREIGN_TEST';
    }
    const f = new Foreign('from the other copy');
    assert.ok(isCoapEdgeError(f));
    assert.ok(f instanceof CoapEdgeError);
    assert.ok(copy.isCoapEdgeError(new PresenceError('PRESENCE_BAD_CONFIG', 'x')));
    assert.ok(new PresenceError('PRESENCE_BAD_CONFIG', 'x') instanceof copy.CoapEdgeError);
    assert.ok(!(f instanceof PresenceError));
  });
});
