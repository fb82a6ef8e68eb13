/**
 * The embedded secret source: a JSON file with product and device secrets (the embedded
 * default; docs/design.md, "Decisions, and why": secrets).
 *
 * ```json
 * {
 *   "products": [{ "productKey": "..", "productSecret": "..", "dynamicRegistration": true }],
 *   "devices":  [{ "productKey": "..", "deviceKey": "..", "deviceSecret": "..", "assetId": ".." }]
 * }
 * ```
 *
 * Rules: both lists are optional (default empty); unknown fields are errors (a misspelt
 * `dynamicRegistration` must not silently turn into `false`); `dynamicRegistration` defaults to
 * false; `assetId` is optional but not empty; productKey and deviceKey obey the PSK identity key
 * rules (`validateKey` in src/enos/identity.ts) so every entry can be named by an identity; the
 * secrets are non-empty, well-formed strings; a productKey appears at most once in `products`,
 * a productKey/deviceKey pair at most once in `devices`.
 *
 * Every problem is a {@link DevicesFileError} whose message names the file and the field path
 * (`devices[3].deviceSecret: expected a non-empty string`); secret values and file contents
 * never appear in messages.
 */

import { CoapEdgeError } from '../errors/index.js';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { safeEcho, validateKey, type KeyRejectReason } from '../enos/index.js';

export interface ProductRecord {
  readonly productKey: string;
  readonly productSecret: string;
  /** Whether devices of this product may activate with secureMode 3 (docs/protocol.md). */
  readonly dynamicRegistration: boolean;
}

export interface DeviceRecord {
  readonly productKey: string;
  readonly deviceKey: string;
  readonly deviceSecret: string;
  readonly assetId: string | undefined;
}

/** The devices file cannot be read or is invalid. The message names the file and field. */
export class DevicesFileError extends CoapEdgeError {
  readonly code = 'DEVICES_FILE_INVALID';

  /**
   * @param message the first problem, prefixed with the file name.
   * @param file the file name (or the name given to `fromObject`).
   * @param field the field path of the first problem, e.g. `devices[3].deviceSecret`.
   * @param problems every problem found, each `path: what`, without the file name.
   */
  constructor(
    message: string,
    readonly file: string,
    readonly field: string | undefined,
    readonly problems: readonly string[] = [],
  ) {
    super(message);
    this.name = 'DevicesFileError';
  }
}

const NON_EMPTY = 'expected a non-empty string';

const keyProblems: { readonly [R in KeyRejectReason]: string } = {
  'empty-key': NON_EMPTY,
  'too-long': 'longer than 128 bytes',
  'bad-character':
    'contains a character not allowed in a PSK identity key (control character, white space, ",", "/", "+" or "#")',
  'not-utf8': 'is not well-formed Unicode text',
};

const loneSurrogate = /\p{Cs}/u;

const keyString = z.string().superRefine((value, ctx) => {
  const problem = validateKey(value);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: keyProblems[problem] });
});

/** A secret: the value is never put into an issue message. */
const secretString = z.string().superRefine((value, ctx) => {
  if (value.length === 0) ctx.addIssue({ code: 'custom', message: NON_EMPTY });
  else if (loneSurrogate.test(value)) {
    ctx.addIssue({ code: 'custom', message: 'is not well-formed Unicode text' });
  }
});

const nonEmptyString = z.string().superRefine((value, ctx) => {
  if (value.length === 0) ctx.addIssue({ code: 'custom', message: NON_EMPTY });
});

const productSchema = z.strictObject({
  productKey: keyString,
  productSecret: secretString,
  dynamicRegistration: z.boolean().optional(),
});

const deviceSchema = z.strictObject({
  productKey: keyString,
  deviceKey: keyString,
  deviceSecret: secretString,
  assetId: nonEmptyString.optional(),
});

const fileSchema = z.strictObject({
  products: z.array(productSchema).optional(),
  devices: z.array(deviceSchema).optional(),
});

const identifier = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** `devices[3].deviceSecret` from `['devices', 3, 'deviceSecret']`. */
function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else if (typeof part === 'string' && identifier.test(part)) {
      out += out === '' ? part : `.${part}`;
    } else out += `[${safeEcho(String(part))}]`;
  }
  return out;
}

const expectedText: Readonly<Record<string, string>> = {
  string: NON_EMPTY,
  boolean: 'expected true or false',
  array: 'expected an array',
  object: 'expected an object',
};

/** Our own wording for each issue; zod's default messages are never used. */
function describeIssue(issue: z.core.$ZodIssue): { path: string; what: string } {
  const path = formatPath(issue.path);
  switch (issue.code) {
    case 'invalid_type':
      return { path, what: expectedText[issue.expected] ?? `expected ${issue.expected}` };
    case 'unrecognized_keys': {
      const key = issue.keys[0] ?? '';
      const where = formatPath([...issue.path, key]);
      const more = issue.keys.length > 1 ? ` (and ${issue.keys.length - 1} more)` : '';
      return { path: where, what: `unknown field${more}` };
    }
    case 'custom':
      return { path, what: issue.message };
    default:
      return { path, what: 'invalid value' };
  }
}

function fail(name: string, problems: readonly { path: string; what: string }[]): never {
  const lines = problems.map((p) => (p.path === '' ? p.what : `${p.path}: ${p.what}`));
  const first = lines[0] ?? 'invalid';
  const more = lines.length > 1 ? ` (and ${lines.length - 1} more problems)` : '';
  throw new DevicesFileError(`${name}: ${first}${more}`, name, problems[0]?.path, lines);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** 1-based line and column of a character offset. */
function lineColumn(text: string, offset: number): string {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 0x0a) {
      line++;
      lineStart = i + 1;
    }
  }
  return `line ${line}, column ${offset - lineStart + 1}`;
}

/** Product and device secrets, looked up by key. Immutable once loaded. */
export class DevicesFile {
  readonly #products: ReadonlyMap<string, ProductRecord>;
  /** Keyed by `${productKey}\u0000${deviceKey}`; keys cannot contain U+0000. */
  readonly #devices: ReadonlyMap<string, DeviceRecord>;

  private constructor(
    products: ReadonlyMap<string, ProductRecord>,
    devices: ReadonlyMap<string, DeviceRecord>,
  ) {
    this.#products = products;
    this.#devices = devices;
  }

  /**
   * Reads and validates a devices file (UTF-8 JSON; a leading byte order mark is allowed).
   * @throws DevicesFileError `path: cannot read file (ENOENT)`, `path: not valid UTF-8`,
   *   `path: not valid JSON (line 3, column 7)`, or a field problem as in {@link fromObject}.
   */
  static load(path: string): DevicesFile {
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (err: unknown) {
      const code =
        err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : 'error';
      throw new DevicesFileError(`${path}: cannot read file (${code})`, path, undefined);
    }
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      throw new DevicesFileError(`${path}: not valid UTF-8`, path, undefined);
    }
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch (err: unknown) {
      // V8's message may quote the file's text (secrets!); keep only the position.
      const m = err instanceof Error ? /at position (\d+)/.exec(err.message) : null;
      const where = m?.[1] !== undefined ? ` (${lineColumn(text, Number(m[1]))})` : '';
      throw new DevicesFileError(`${path}: not valid JSON${where}`, path, undefined);
    }
    return DevicesFile.fromObject(obj, path);
  }

  /**
   * Validates an already parsed devices file.
   * @param name how messages name the source (default `devices file`).
   * @throws DevicesFileError naming the first problem's field path, with all problems in
   *   `problems`.
   */
  static fromObject(obj: unknown, name = 'devices file'): DevicesFile {
    const parsed = fileSchema.safeParse(obj);
    if (!parsed.success) {
      if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
        fail(name, [{ path: '', what: 'expected a JSON object with "products" and "devices"' }]);
      }
      fail(name, parsed.error.issues.map(describeIssue));
    }

    const problems: { path: string; what: string }[] = [];
    const products = new Map<string, ProductRecord>();
    const productIndex = new Map<string, number>();
    (parsed.data.products ?? []).forEach((p, i) => {
      const seen = productIndex.get(p.productKey);
      if (seen !== undefined) {
        problems.push({
          path: `products[${i}].productKey`,
          what: `duplicate of products[${seen}]`,
        });
        return;
      }
      productIndex.set(p.productKey, i);
      products.set(
        p.productKey,
        Object.freeze({
          productKey: p.productKey,
          productSecret: p.productSecret,
          dynamicRegistration: p.dynamicRegistration ?? false,
        }),
      );
    });

    const devices = new Map<string, DeviceRecord>();
    const deviceIndex = new Map<string, number>();
    (parsed.data.devices ?? []).forEach((d, i) => {
      const key = `${d.productKey}\u0000${d.deviceKey}`;
      const seen = deviceIndex.get(key);
      if (seen !== undefined) {
        problems.push({
          path: `devices[${i}]`,
          what: `duplicate of devices[${seen}] (same productKey and deviceKey)`,
        });
        return;
      }
      deviceIndex.set(key, i);
      devices.set(
        key,
        Object.freeze({
          productKey: d.productKey,
          deviceKey: d.deviceKey,
          deviceSecret: d.deviceSecret,
          assetId: d.assetId,
        }),
      );
    });
    if (problems.length > 0) fail(name, problems);

    return new DevicesFile(products, devices);
  }

  /** The product entry, or undefined when the file does not list the productKey. */
  product(productKey: string): ProductRecord | undefined {
    return this.#products.get(productKey);
  }

  /** The device entry, or undefined when the file does not list the pair. */
  device(productKey: string, deviceKey: string): DeviceRecord | undefined {
    return this.#devices.get(`${productKey}\u0000${deviceKey}`);
  }

  /** The first device the file lists (a demo device to suggest), or undefined when none. */
  firstDevice(): DeviceRecord | undefined {
    for (const d of this.#devices.values()) return d;
    return undefined;
  }

  get productCount(): number {
    return this.#products.size;
  }

  get deviceCount(): number {
    return this.#devices.size;
  }
}
