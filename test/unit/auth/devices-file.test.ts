import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DevicesFile, DevicesFileError } from '../../../src/auth/devices-file.js';

const SECRET = 'S3CRET-must-not-leak';
const secrets = [SECRET, 'P-S3CRET-must-not-leak'];

function validObject() {
  return {
    products: [
      { productKey: 'prodA', productSecret: secrets[1], dynamicRegistration: true },
      { productKey: 'prodB', productSecret: 'pb-secret' },
    ],
    devices: [
      { productKey: 'prodA', deviceKey: 'dev1', deviceSecret: SECRET, assetId: 'asset-1' },
      { productKey: 'prodA', deviceKey: 'dev2', deviceSecret: 'd2-secret' },
      { productKey: 'prodB', deviceKey: 'dev1', deviceSecret: 'd3-secret' },
      { productKey: 'prodC', deviceKey: '861234567890123', deviceSecret: 'd4-secret' },
    ],
  };
}

/** Asserts the error is a DevicesFileError with this message and no secret anywhere in it. */
function assertFails(
  fn: () => unknown,
  message: string | RegExp,
  field?: string,
): DevicesFileError {
  let caught: unknown;
  try {
    fn();
  } catch (e: unknown) {
    caught = e;
  }
  assert.ok(caught instanceof DevicesFileError, 'expected a DevicesFileError');
  assert.equal(caught.code, 'DEVICES_FILE_INVALID');
  assert.equal(caught.name, 'DevicesFileError');
  const everything = [caught.message, ...caught.problems, String(caught.stack)].join('\n');
  for (const s of secrets) assert.ok(!everything.includes(s), 'a secret appears in the error');
  if (typeof message === 'string') assert.equal(caught.message, message);
  else assert.match(caught.message, message);
  if (field !== undefined) assert.equal(caught.field, field);
  return caught;
}

function withPatch(patch: (o: ReturnType<typeof validObject>) => void): unknown {
  const o = validObject();
  patch(o);
  return o;
}

let dir = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'coap-edge-devices-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function file(name: string, content: string | Buffer): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

void describe('DevicesFile: valid', () => {
  void it('loads a file and looks up products and devices', () => {
    const df = DevicesFile.load(file('ok.json', JSON.stringify(validObject(), null, 2)));
    assert.equal(df.productCount, 2);
    assert.equal(df.deviceCount, 4);
    assert.deepEqual(df.product('prodA'), {
      productKey: 'prodA',
      productSecret: secrets[1],
      dynamicRegistration: true,
    });
    assert.equal(df.product('prodB')?.dynamicRegistration, false, 'defaults to false');
    assert.equal(df.product('prodC'), undefined);
    assert.deepEqual(df.device('prodA', 'dev1'), {
      productKey: 'prodA',
      deviceKey: 'dev1',
      deviceSecret: SECRET,
      assetId: 'asset-1',
    });
    assert.equal(df.device('prodA', 'dev2')?.assetId, undefined);
    assert.equal(
      df.device('prodB', 'dev1')?.deviceSecret,
      'd3-secret',
      'same deviceKey, other product',
    );
    assert.equal(df.device('prodC', '861234567890123')?.deviceSecret, 'd4-secret');
    assert.equal(df.device('prodB', 'dev2'), undefined);
    assert.equal(df.device('prodA\u0000dev1', ''), undefined);
    assert.equal(df.device('prodA', 'dev1\u0000'), undefined);
    assert.ok(Object.isFrozen(df.device('prodA', 'dev1')));
  });

  void it('accepts a leading byte order mark, empty lists and missing lists', () => {
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"devices":[]}')]);
    assert.equal(DevicesFile.load(file('bom.json', bom)).deviceCount, 0);
    assert.equal(DevicesFile.fromObject({}).productCount, 0);
    assert.equal(DevicesFile.fromObject({ products: [] }).deviceCount, 0);
  });

  void it('accepts unicode keys', () => {
    const df = DevicesFile.fromObject({
      devices: [{ productKey: 'Produkt-ü', deviceKey: 'Gerät-😀', deviceSecret: 'x' }],
    });
    assert.equal(df.device('Produkt-ü', 'Gerät-😀')?.deviceSecret, 'x');
  });
});

void describe('DevicesFile.load: file problems', () => {
  void it('names a missing file and the errno code', () => {
    const p = join(dir, 'missing.json');
    assertFails(() => DevicesFile.load(p), `${p}: cannot read file (ENOENT)`);
  });

  void it('names a directory', () => {
    assertFails(() => DevicesFile.load(dir), `${dir}: cannot read file (EISDIR)`);
  });

  void it('says "not valid JSON" with a position, never quoting the file', () => {
    const p = file(
      'bad.json',
      `{\n  "devices": [\n    {"deviceSecret": "${SECRET}" "x": 1}\n  ]\n}\n`,
    );
    assertFails(() => DevicesFile.load(p), `${p}: not valid JSON (line 3, column 45)`);
    const q = file('bad2.json', `{"devices": [{"deviceSecret": "${SECRET}`);
    // The position V8 reports for an unterminated string differs between versions.
    const e = assertFails(() => DevicesFile.load(q), /: not valid JSON( \(line 1, column \d+\))?$/);
    assert.ok(e.message.startsWith(`${q}: `));
    assert.equal(e.field, undefined);
    const r = file('bad3.json', `${SECRET}`);
    // V8 says `Unexpected token 'S', "S3CRET-mus"... is not valid JSON` here: file text.
    assertFails(() => DevicesFile.load(r), /: not valid JSON( \(line 1, column 1\))?$/);
  });

  void it('says "not valid UTF-8"', () => {
    const p = file('latin1.json', Buffer.from('{"devices":[{"deviceKey":"\xe4"}]}', 'latin1'));
    assertFails(() => DevicesFile.load(p), `${p}: not valid UTF-8`);
  });

  void it('reports field problems with the file name', () => {
    const o = withPatch((x) => {
      delete (x.devices[3] as Partial<(typeof x.devices)[3]>).deviceSecret;
    });
    const p = file('field.json', JSON.stringify(o));
    assertFails(
      () => DevicesFile.load(p),
      `${p}: devices[3].deviceSecret: expected a non-empty string`,
      'devices[3].deviceSecret',
    );
  });
});

void describe('DevicesFile.fromObject: field problems', () => {
  const N = 'deploy/examples/devices.json';
  const cases: [string, unknown, string, string | undefined][] = [
    [
      'top level is an array',
      [],
      `${N}: expected a JSON object with "products" and "devices"`,
      undefined,
    ],
    [
      'top level is null',
      null,
      `${N}: expected a JSON object with "products" and "devices"`,
      undefined,
    ],
    [
      'devices is not an array',
      { devices: { productKey: 'a' } },
      `${N}: devices: expected an array`,
      'devices',
    ],
    [
      'missing deviceSecret',
      withPatch((x) => {
        delete (x.devices[3] as Partial<(typeof x.devices)[3]>).deviceSecret;
      }),
      `${N}: devices[3].deviceSecret: expected a non-empty string`,
      'devices[3].deviceSecret',
    ],
    [
      'empty deviceSecret',
      withPatch((x) => {
        x.devices[1]!.deviceSecret = '';
      }),
      `${N}: devices[1].deviceSecret: expected a non-empty string`,
      'devices[1].deviceSecret',
    ],
    [
      'numeric deviceSecret',
      withPatch((x) => {
        (x.devices[0] as Record<string, unknown>).deviceSecret = 12345;
      }),
      `${N}: devices[0].deviceSecret: expected a non-empty string`,
      'devices[0].deviceSecret',
    ],
    [
      'deviceSecret with a lone surrogate',
      withPatch((x) => {
        x.devices[0]!.deviceSecret = `${SECRET}\ud800`;
      }),
      `${N}: devices[0].deviceSecret: is not well-formed Unicode text`,
      'devices[0].deviceSecret',
    ],
    [
      'missing productSecret',
      withPatch((x) => {
        delete (x.products[1] as Partial<(typeof x.products)[1]>).productSecret;
      }),
      `${N}: products[1].productSecret: expected a non-empty string`,
      'products[1].productSecret',
    ],
    [
      'productKey with a comma',
      withPatch((x) => {
        x.products[0]!.productKey = 'a,b';
      }),
      `${N}: products[0].productKey: contains a character not allowed in a PSK identity key (control character, white space, ",", "/", "+" or "#")`,
      'products[0].productKey',
    ],
    [
      'deviceKey with an MQTT wildcard',
      withPatch((x) => {
        x.devices[2]!.deviceKey = '#';
      }),
      `${N}: devices[2].deviceKey: contains a character not allowed in a PSK identity key (control character, white space, ",", "/", "+" or "#")`,
      'devices[2].deviceKey',
    ],
    [
      'deviceKey with a trailing space',
      withPatch((x) => {
        x.devices[2]!.deviceKey = 'dev1 ';
      }),
      `${N}: devices[2].deviceKey: contains a character not allowed in a PSK identity key (control character, white space, ",", "/", "+" or "#")`,
      'devices[2].deviceKey',
    ],
    [
      'empty deviceKey',
      withPatch((x) => {
        x.devices[2]!.deviceKey = '';
      }),
      `${N}: devices[2].deviceKey: expected a non-empty string`,
      'devices[2].deviceKey',
    ],
    [
      'over-long productKey',
      withPatch((x) => {
        x.devices[2]!.productKey = 'p'.repeat(129);
      }),
      `${N}: devices[2].productKey: longer than 128 bytes`,
      'devices[2].productKey',
    ],
    [
      'empty assetId',
      withPatch((x) => {
        x.devices[0]!.assetId = '';
      }),
      `${N}: devices[0].assetId: expected a non-empty string`,
      'devices[0].assetId',
    ],
    [
      'dynamicRegistration not a boolean',
      withPatch((x) => {
        (x.products[0] as Record<string, unknown>).dynamicRegistration = 'yes';
      }),
      `${N}: products[0].dynamicRegistration: expected true or false`,
      'products[0].dynamicRegistration',
    ],
    [
      'misspelt field',
      withPatch((x) => {
        (x.products[1] as Record<string, unknown>).dynamicRegistraton = true;
      }),
      `${N}: products[1].dynamicRegistraton: unknown field`,
      'products[1].dynamicRegistraton',
    ],
    [
      'unknown top-level field',
      { devices: [], secrets: [] },
      `${N}: secrets: unknown field`,
      'secrets',
    ],
    [
      'odd field name is escaped',
      withPatch((x) => {
        (x.devices[0] as Record<string, unknown>)['a\u0000b'] = 1;
      }),
      `${N}: devices[0]["a\\x00b"]: unknown field`,
      'devices[0]["a\\x00b"]',
    ],
    [
      'duplicate product',
      withPatch((x) => {
        x.products.push({ productKey: 'prodA', productSecret: SECRET, dynamicRegistration: false });
      }),
      `${N}: products[2].productKey: duplicate of products[0]`,
      'products[2].productKey',
    ],
    [
      'duplicate device',
      withPatch((x) => {
        x.devices.push({ productKey: 'prodA', deviceKey: 'dev2', deviceSecret: SECRET });
      }),
      `${N}: devices[4]: duplicate of devices[1] (same productKey and deviceKey)`,
      'devices[4]',
    ],
  ];
  for (const [name, obj, message, field] of cases) {
    void it(name, () => {
      assertFails(() => DevicesFile.fromObject(obj, N), message, field);
    });
  }

  void it('counts further problems and lists them all', () => {
    const o = withPatch((x) => {
      x.devices[0]!.deviceSecret = '';
      x.devices[1]!.deviceKey = 'a b';
      x.products[0]!.productSecret = '';
    });
    const e = assertFails(
      () => DevicesFile.fromObject(o, N),
      `${N}: products[0].productSecret: expected a non-empty string (and 2 more problems)`,
    );
    assert.deepEqual(e.problems, [
      'products[0].productSecret: expected a non-empty string',
      'devices[0].deviceSecret: expected a non-empty string',
      'devices[1].deviceKey: contains a character not allowed in a PSK identity key (control character, white space, ",", "/", "+" or "#")',
    ]);
  });

  void it('names the source "devices file" by default', () => {
    assertFails(
      () => DevicesFile.fromObject(7),
      'devices file: expected a JSON object with "products" and "devices"',
    );
  });
});
