/**
 * Loads the configuration: embedded defaults, then the YAML file given with `--config`,
 * then `COAP_EDGE_*` environment variables, then command-line flags; each later source wins.
 * Every value is validated by the zod schema derived from `settings.ts`.
 */
import { CoapEdgeError } from '../errors/index.js';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';
import { type z } from 'zod';
import {
  renamedSettings,
  settings,
  type RenamedSetting,
  type RouteConfig,
  type SettingName,
  type Settings,
  type SettingKind,
} from './settings.js';

/**
 * yaml (a CommonJS package of 72 files, ~65 ms of CPU to load) is required only where YAML is
 * read or written: a configuration given by flags and variables never loads it
 * (docs/testing.md, "Suite time").
 */
function yaml(): typeof Yaml {
  return createRequire(import.meta.url)('yaml') as typeof Yaml;
}

function parseYaml(text: string): unknown {
  return yaml().parse(text);
}

/** YAML text of `value` (`--print-config`). */
export function toYaml(value: unknown): string {
  return yaml().stringify(value);
}

/** The validated configuration: a setting without a default may be `undefined`. */
export type Config = {
  readonly [K in SettingName]: Settings[K]['default'] extends undefined
    ? z.output<Settings[K]['schema']> | undefined
    : z.output<Settings[K]['schema']>;
};

/** A configuration problem: names the source (file, variable or flag) and the field. Exit code 2. */
export class ConfigError extends CoapEdgeError {
  readonly code = 'CONFIG_INVALID';
  constructor(
    message: string,
    readonly source: string,
    readonly field: string | undefined,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

const names = Object.keys(settings) as SettingName[];
const formerNames = Object.keys(renamedSettings) as RenamedSetting[];

function isRenamed(key: string): key is RenamedSetting {
  return Object.hasOwn(renamedSettings, key);
}

export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

export function envName(key: string): string {
  return `COAP_EDGE_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** Turns a value given as text into the type its setting expects (zod validates it afterwards). */
function fromText(kind: SettingKind, text: string): unknown {
  switch (kind) {
    case 'integer':
    case 'number': {
      // keep non-numeric text as text, so the error says what was given
      const n = Number(text);
      return text.trim() === '' || Number.isNaN(n) ? text : n;
    }
    case 'boolean': {
      const t = text.trim().toLowerCase();
      if (t === 'true' || t === '1' || t === 'yes' || t === 'on') return true;
      if (t === 'false' || t === '0' || t === 'no' || t === 'off') return false;
      return text;
    }
    case 'list':
      return text
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
    case 'yaml':
      try {
        return parseYaml(text);
      } catch {
        return text;
      }
    case 'string':
      return text;
  }
}

function describeIssue(issue: z.core.$ZodIssue): string {
  return issue.message;
}

function validate(key: SettingName, value: unknown, source: string): unknown {
  const result = settings[key].schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue && issue.path.length > 0 ? `${key}.${issue.path.join('.')}` : key;
    throw new ConfigError(
      `${source}: invalid value for "${where}": ${issue ? describeIssue(issue) : 'invalid'}`,
      source,
      where,
    );
  }
  return result.data;
}

export interface LoadOptions {
  /** Path of a YAML file (the `--config` flag). */
  readonly file?: string | undefined;
  /** Environment (defaults to none; the CLI passes `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Values from command-line flags, keyed by setting name (or a former name), as text. */
  readonly flags?: Readonly<Partial<Record<SettingName | RenamedSetting, string | boolean>>>;
  /** Values set programmatically (tests, embedded use); applied last, not coerced from text. */
  readonly overrides?: Readonly<Partial<Record<SettingName, unknown>>>;
  /**
   * Told once for every setting given under its former name (see `renamedSettings`), with a
   * line naming the new one; the CLI logs it as a warning when it starts.
   */
  readonly onDeprecated?: (message: string) => void;
}

/**
 * The setting a key names, when `key` is a former name: the new name, after telling
 * `onDeprecated`. Both names in one source are refused: which one was meant is not clear.
 */
function currentName(
  former: RenamedSetting,
  given: (name: string) => boolean,
  describe: (name: string) => string,
  source: string,
  onDeprecated: ((message: string) => void) | undefined,
): SettingName {
  const name = renamedSettings[former];
  if (given(name)) {
    throw new ConfigError(
      `${source}: both ${describe(former)} and ${describe(name)} are set; keep only ${describe(name)}`,
      source,
      name,
    );
  }
  onDeprecated?.(`${source}: ${describe(former)} is deprecated, use ${describe(name)} (same unit)`);
  return name;
}

function readYaml(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError(`${file}: cannot read config file (${reason})`, file, undefined);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    const line = (err as { linePos?: { line: number }[] }).linePos?.[0]?.line;
    throw new ConfigError(
      `${file}: not valid YAML${line !== undefined ? ` (line ${line})` : ''}`,
      file,
      undefined,
    );
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new ConfigError(
      `${file}: the config file must be a YAML mapping of settings`,
      file,
      undefined,
    );
  }
  return doc as Record<string, unknown>;
}

export function loadConfig(opts: LoadOptions = {}): Config {
  const out: Record<string, unknown> = {};
  for (const key of names) out[key] = settings[key].default;

  if (opts.file !== undefined) {
    const doc = readYaml(opts.file);
    const file = opts.file;
    for (const [key, value] of Object.entries(doc)) {
      let name: SettingName;
      if (isRenamed(key)) {
        name = currentName(
          key,
          (k) => k in doc,
          (k) => `"${k}"`,
          file,
          opts.onDeprecated,
        );
      } else if (key in settings) {
        name = key as SettingName;
      } else {
        throw new ConfigError(`${file}: unknown setting "${key}"`, file, key);
      }
      out[name] = validate(name, value, file);
    }
  }
  const env = opts.env ?? {};
  for (const key of names) {
    const s = settings[key];
    if (s.yamlOnly === true) continue;
    const text = env[envName(key)];
    if (text === undefined || text === '') continue;
    out[key] = validate(key, fromText(s.kind, text), `environment variable ${envName(key)}`);
  }
  const isSet = (name: string): boolean => (env[name] ?? '') !== '';
  for (const former of formerNames) {
    const text = env[envName(former)];
    if (text === undefined || text === '') continue;
    const key = currentName(
      former,
      (k) => isSet(envName(k)),
      envName,
      'environment',
      opts.onDeprecated,
    );
    out[key] = validate(
      key,
      fromText(settings[key].kind, text),
      `environment variable ${envName(former)}`,
    );
  }
  const flags = opts.flags ?? {};
  for (const [key, value] of Object.entries(flags)) {
    if (value === undefined) continue;
    const k = isRenamed(key)
      ? currentName(
          key,
          (n) => flags[n as SettingName] !== undefined,
          (n) => `--${flagName(n)}`,
          'command line',
          opts.onDeprecated,
        )
      : (key as SettingName);
    const s = settings[k];
    const v = typeof value === 'boolean' ? value : fromText(s.kind, value);
    out[k] = validate(k, v, `flag --${flagName(key)}`);
  }
  for (const [key, value] of Object.entries(opts.overrides ?? {})) {
    out[key] = validate(key as SettingName, value, 'override');
  }
  out.routes = routeTimeoutsInMs(out.routes as readonly RouteConfig[], opts.onDeprecated);
  return Object.freeze(out) as Config;
}

/**
 * Routes with the former `timeout` field get it as `timeoutMs` (same unit), with one warning
 * each; the others are returned as they are.
 */
function routeTimeoutsInMs(
  routes: readonly RouteConfig[],
  onDeprecated: ((message: string) => void) | undefined,
): RouteConfig[] {
  return routes.map((r, i) => {
    if (r.backend !== 'http' || r.timeout === undefined) return r;
    onDeprecated?.(`routes[${i}]: "timeout" is deprecated, use "timeoutMs" (same unit)`);
    const { timeout, ...rest } = r;
    return { ...rest, timeoutMs: timeout };
  });
}

/** The configuration as YAML-ready data with secrets replaced, for `--print-config` and logs. */
export function redactedConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of names) {
    const value = config[key];
    if (value === undefined) continue;
    out[key] = settings[key].secret === true ? '<redacted>' : value;
  }
  return out;
}
