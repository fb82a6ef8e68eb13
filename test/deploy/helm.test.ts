/**
 * The Helm chart (helm/coap-edge), checked without Helm (none runs here):
 * - Chart.yaml fields; values.schema.json is valid draft-07 and accepts values.yaml and every
 *   examples/*.yaml (merged onto the defaults as Helm does), and rejects a table of bad values,
 *   each for the expected reason;
 * - the schema's `config` part equals what src/config/settings.ts allows (secrets and ports left
 *   out), every values file's `config` loads with the real config loader, and the checks the
 *   templates make with `fail` (grace period > drain timeout, ...) hold for every values file;
 * - templates: balanced `{{ }}` and blocks, YAML once the actions are taken out, the expected
 *   kind per file, every `.Values.x.y` a path the schema allows (and values.yaml has), every
 *   `include` defined and every helper used, every `.Files.Get` file present, every value used;
 * - README.md has a row per leaf of values.yaml with its default (the table is generated);
 * - files/ is the one source of the dashboard and alert rules (deploy/ holds no copies);
 * - NOTES.txt tells how to find the load balancer, connect a device and see metrics.
 *
 * `UPDATE_CHART=1 node scripts/run-tests.mjs deploy/helm` rewrites the generated parts (the
 * schema's `config` properties, the README table) instead of failing on them.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import {
  isMap,
  isPair,
  isScalar,
  parse as parseYaml,
  parseAllDocuments,
  parseDocument,
} from 'yaml';
import type { Node as YamlNode } from 'yaml';
import { z } from 'zod';
import { envName, loadConfig } from '../../src/config/load.js';
import {
  renamedSettings,
  settings,
  type RenamedSetting,
  type SettingName,
} from '../../src/config/settings.js';
import { REPO_ROOT } from '../helpers/processes.js';

const CHART = join(REPO_ROOT, 'helm', 'coap-edge');
const TEMPLATES = join(CHART, 'templates');
const UPDATE = process.env.UPDATE_CHART === '1';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function readText(...parts: string[]): string {
  return readFileSync(join(CHART, ...parts), 'utf8');
}

function readValues(file: string): JsonObject {
  const doc: unknown = parseYaml(readFileSync(file, 'utf8'));
  assert.ok(isObject(doc), `${file} is a YAML mapping`);
  return doc;
}

const defaults = readValues(join(CHART, 'values.yaml'));
const schema = JSON.parse(readText('values.schema.json')) as JsonObject;
const exampleFiles = readdirSync(join(CHART, 'examples'))
  .filter((f) => f.endsWith('.yaml'))
  .sort();

/** Helm's coalescing of user values onto the chart's: maps merge, anything else replaces, null deletes. */
function helmMerge(base: JsonObject, over: JsonObject): JsonObject {
  const out: JsonObject = structuredClone(base);
  for (const [key, value] of Object.entries(over)) {
    const current = out[key];
    if (value === null) delete out[key];
    else if (isObject(value) && isObject(current)) out[key] = helmMerge(current, value);
    else out[key] = structuredClone(value);
  }
  return out;
}

/** Every leaf of a values tree: scalars, lists and empty maps, as key paths. */
function leaves(value: Json, path: string[] = []): string[][] {
  if (isObject(value) && Object.keys(value).length > 0) {
    return Object.entries(value).flatMap(([k, v]) => leaves(v, [...path, k]));
  }
  return [path];
}

function dotted(path: readonly string[]): string {
  return path.map((s) => (/^[A-Za-z_][A-Za-z0-9_]*$/.test(s) ? s : `"${s}"`)).join('.');
}

function at(value: Json | undefined, path: readonly string[]): Json | undefined {
  let v = value;
  for (const seg of path) {
    if (!isObject(v)) return undefined;
    v = v[seg];
  }
  return v;
}

// --- the schema's config part, generated from the settings table ------------------------------

/** Settings the chart keeps out of `config`: secrets come from a Secret, ports from containerPorts. */
const CHART_OWNED: readonly SettingName[] = ['dtlsPort', 'httpPort'];
const configSettings = (Object.keys(settings) as SettingName[]).filter(
  (k) => settings[k].secret !== true && !CHART_OWNED.includes(k),
);

function stripSchema(v: unknown): Json {
  if (Array.isArray(v)) return v.map(stripSchema);
  if (isObject(v)) {
    const out: JsonObject = {};
    for (const [k, x] of Object.entries(v)) {
      if (k === '$schema') continue;
      if (k === 'maximum' && x === Number.MAX_SAFE_INTEGER) continue;
      out[k] = stripSchema(x);
    }
    return out;
  }
  return v as Json;
}

function expectedConfigProperties(): JsonObject {
  const out: JsonObject = {};
  const schemaOf = (key: SettingName): JsonObject =>
    stripSchema(
      z.toJSONSchema(settings[key].schema, {
        target: 'draft-7',
        io: 'input',
        unrepresentable: 'any',
      }),
    ) as JsonObject;
  for (const key of configSettings) {
    out[key] = { description: settings[key].doc, ...schemaOf(key) };
  }
  // values written before the settings said their unit keep working (coap-edge reads them)
  for (const former of Object.keys(renamedSettings) as RenamedSetting[]) {
    const key = renamedSettings[former];
    out[former] = { description: `Deprecated: former name of ${key}.`, ...schemaOf(key) };
  }
  return out;
}

async function writeFormatted(
  file: string,
  text: string,
  parser: 'json' | 'markdown',
): Promise<void> {
  const prettier = await import('prettier');
  const options = (await prettier.resolveConfig(file)) ?? {};
  writeFileSync(file, await prettier.format(text, { ...options, parser }));
}

// --- ajv -----------------------------------------------------------------------------------------

function compileSchema(): ValidateFunction {
  const ajv = new Ajv({ strict: true, allErrors: true });
  addFormats.default(ajv);
  return ajv.compile(schema);
}
const validate = compileSchema();

function errorsOf(values: JsonObject): ErrorObject[] {
  return validate(values) ? [] : [...(validate.errors ?? [])];
}

function describeErrors(errors: readonly ErrorObject[]): string {
  return errors.map((e) => `${e.instancePath || '/'} ${e.keyword}: ${e.message ?? ''}`).join('\n');
}

/**
 * What the templates check with `fail` (JSON Schema compares no two values), mirrored here so
 * that every values file is known to render; the templates carry the same rules (tested below).
 */
function renderFailures(values: JsonObject): string[] {
  const out: string[] = [];
  const config = isObject(values.config) ? values.config : {};
  const given = config.drainTimeout ?? config.drainTimeoutSeconds;
  const drain = typeof given === 'number' ? given : 20;
  const grace = Number(values.terminationGracePeriodSeconds);
  const preStop = Number(values.preStopSleepSeconds ?? 0);
  if (!(grace > drain + preStop)) out.push('terminationGracePeriodSeconds');
  const httpBind = typeof config.httpBind === 'string' ? config.httpBind : '0.0.0.0';
  if (httpBind.startsWith('127.') || httpBind === '::1' || httpBind === 'localhost')
    out.push('config.httpBind');
  const hpa = isObject(values.autoscaling) ? values.autoscaling : {};
  if (hpa.enabled === true) {
    if (Number(hpa.minReplicas) > Number(hpa.maxReplicas)) out.push('autoscaling.minReplicas');
    if (at(values, ['resources', 'requests', 'cpu']) === undefined)
      out.push('resources.requests.cpu');
  }
  return out;
}

/**
 * `config` as the ConfigMap renders it (the "coap-edge.config" helper): values that set the
 * former drainTimeout go without the chart's default drainTimeoutSeconds.
 */
function renderedConfig(values: JsonObject): JsonObject {
  const config = isObject(values.config) ? { ...values.config } : {};
  if ('drainTimeout' in config) delete config.drainTimeoutSeconds;
  return config;
}

/** Loads a values file's `config` with coap-edge's own loader (the zod schema of every setting). */
function loadChartConfig(
  values: JsonObject,
  onDeprecated?: (message: string) => void,
): ReturnType<typeof loadConfig> {
  const dir = mkdtempSync(join(tmpdir(), 'coap-edge-helm-'));
  try {
    const file = join(dir, 'config.yaml');
    writeFileSync(file, JSON.stringify(renderedConfig(values)));
    return loadConfig({ file, onDeprecated });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// --- templates -------------------------------------------------------------------------------

const templateFiles = readdirSync(TEMPLATES).sort();
const templates = new Map(templateFiles.map((f) => [f, readText('templates', f)]));

const COMMENT = /\{\{-?\s*\/\*[\s\S]*?\*\/\s*-?\}\}/g;
const ACTION = /\{\{-?([\s\S]*?)-?\}\}/g;

function withoutComments(text: string): string {
  return text.replace(COMMENT, '');
}

/** The actions of a template, trimmed of `-` markers and spaces. */
function actions(text: string): string[] {
  return [...withoutComments(text).matchAll(ACTION)].map((m) => (m[1] ?? '').trim());
}

/**
 * The YAML a template is made of, with its actions taken out: lines holding only actions
 * go, inline actions become a placeholder scalar. Branches of an if/else both stay.
 */
function skeleton(text: string): string {
  return withoutComments(text)
    .split('\n')
    .flatMap((line) => {
      if (!line.includes('{{')) return [line];
      if (line.replace(ACTION, '').trim() === '') return [];
      return [line.replace(ACTION, 'TPL')];
    })
    .join('\n');
}

/** The `.Values.a.b` paths a text refers to. */
function valuesRefs(text: string): string[][] {
  return [...withoutComments(text).matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)].map((m) =>
    (m[1] ?? '').slice(1).split('.'),
  );
}

function resolveRef(node: Json | undefined): Json | undefined {
  if (isObject(node) && typeof node.$ref === 'string') {
    const name = node.$ref.replace('#/definitions/', '');
    return at(schema, ['definitions', name]);
  }
  return node;
}

/** Whether the schema lets values hold `path` (a free-form object allows anything below it). */
function schemaAllows(path: readonly string[]): boolean {
  let node = resolveRef(schema);
  for (const seg of path) {
    if (!isObject(node)) return false;
    const props = node.properties;
    if (isObject(props) && props[seg] !== undefined) node = resolveRef(props[seg]);
    else if (isObject(node.additionalProperties)) node = resolveRef(node.additionalProperties);
    else if (node.type === 'object' && props === undefined && node.additionalProperties !== false)
      return true;
    else return false;
  }
  return true;
}

const EXPECTED_KINDS: Record<string, { apiVersion: string; kind: string }> = {
  'configmap.yaml': { apiVersion: 'v1', kind: 'ConfigMap' },
  'dashboard-configmap.yaml': { apiVersion: 'v1', kind: 'ConfigMap' },
  'deployment.yaml': { apiVersion: 'apps/v1', kind: 'Deployment' },
  'hpa.yaml': { apiVersion: 'autoscaling/v2', kind: 'HorizontalPodAutoscaler' },
  'networkpolicy.yaml': { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy' },
  'pdb.yaml': { apiVersion: 'policy/v1', kind: 'PodDisruptionBudget' },
  'prometheusrule.yaml': { apiVersion: 'monitoring.coreos.com/v1', kind: 'PrometheusRule' },
  'service-metrics.yaml': { apiVersion: 'v1', kind: 'Service' },
  'service.yaml': { apiVersion: 'v1', kind: 'Service' },
  'serviceaccount.yaml': { apiVersion: 'v1', kind: 'ServiceAccount' },
  'servicemonitor.yaml': { apiVersion: 'monitoring.coreos.com/v1', kind: 'ServiceMonitor' },
};

// --- README ------------------------------------------------------------------------------------

const TABLE_BEGIN =
  '<!-- values:begin (generated from the `# --` comments of values.yaml: UPDATE_CHART=1 node scripts/run-tests.mjs deploy/helm) -->';
const TABLE_END = '<!-- values:end -->';

/** The `# --` description of every key of values.yaml, by dotted path. */
function valueDescriptions(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const describe = (comment: string | null | undefined): string | undefined => {
    if (comment === null || comment === undefined) return undefined;
    const lines = comment.split('\n').map((l) => l.trim());
    const start = lines.findIndex((l) => l.startsWith('-- '));
    if (start < 0) return undefined;
    return lines
      .slice(start)
      .map((l, i) => (i === 0 ? l.slice(3) : l))
      .join(' ')
      .trim();
  };
  const walk = (node: unknown, path: string[]): void => {
    if (!isMap(node)) return;
    node.items.forEach((pair, i) => {
      if (!isPair(pair) || !isScalar(pair.key)) return;
      const key = String(pair.key.value);
      const keyNode = pair.key as YamlNode;
      const comment = keyNode.commentBefore ?? (i === 0 ? node.commentBefore : undefined);
      const text = describe(comment);
      if (text !== undefined) out.set(dotted([...path, key]), text);
      walk(pair.value, [...path, key]);
    });
  };
  walk(parseDocument(text).contents, []);
  return out;
}

function typeName(v: Json | undefined): string {
  if (Array.isArray(v)) return 'list';
  if (isObject(v)) return 'object';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  if (typeof v === 'boolean') return 'bool';
  return 'string';
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

function renderValuesTable(): string {
  const descriptions = valueDescriptions(readText('values.yaml'));
  const row = (path: string[], description: string): string => {
    const value = at(defaults, path);
    return `| \`${cell(dotted(path))}\` | ${typeName(value)} | \`${cell(JSON.stringify(value))}\` | ${cell(description)} |`;
  };
  const leafKeys = new Set(leaves(defaults).map(dotted));
  // pre-order: a documented map gets a row of its own before the rows of its leaves
  const paths = (value: Json, path: string[]): string[][] =>
    isObject(value) && Object.keys(value).length > 0
      ? [path, ...Object.entries(value).flatMap(([k, v]) => paths(v, [...path, k]))]
      : [path];
  const rows = paths(defaults, [])
    .slice(1)
    .flatMap((path) => {
      const key = dotted(path);
      const own = descriptions.get(key);
      if (!leafKeys.has(key)) return own !== undefined ? [row(path, own)] : [];
      let description = own;
      for (let n = path.length - 1; description === undefined && n > 0; n--) {
        if (descriptions.has(dotted(path.slice(0, n))))
          description = `See \`${dotted(path.slice(0, n))}\`.`;
      }
      assert.ok(
        description !== undefined,
        `values.yaml: ${key} (or a key above it) has a "# --" comment`,
      );
      return [row(path, description)];
    });
  return [
    TABLE_BEGIN,
    '',
    '| Key | Type | Default | Description |',
    '|---|---|---|---|',
    ...rows,
    '',
    TABLE_END,
  ].join('\n');
}

// ================================================================================================

describe('Chart.yaml', () => {
  const chart = parseYaml(readText('Chart.yaml')) as JsonObject;
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as JsonObject;

  it('is an apiVersion v2 application chart named coap-edge with semver versions', () => {
    assert.equal(chart.apiVersion, 'v2');
    assert.equal(chart.name, 'coap-edge');
    assert.equal(chart.type, 'application');
    assert.equal(typeof chart.version, 'string');
    assert.match(chart.version as string, /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
    assert.equal(typeof chart.description, 'string');
    assert.equal(typeof chart.kubeVersion, 'string');
  });

  it('deploys the version of package.json (appVersion, a string)', () => {
    assert.equal(chart.appVersion, pkg.version);
  });

  it('has the files every chart needs, and no stray template', () => {
    for (const f of [
      'values.yaml',
      'values.schema.json',
      'README.md',
      '.helmignore',
      'templates/NOTES.txt',
      'templates/_helpers.tpl',
    ]) {
      assert.ok(existsSync(join(CHART, f)), f);
    }
    assert.deepEqual(
      templateFiles.filter((f) => f !== '_helpers.tpl' && f !== 'NOTES.txt'),
      Object.keys(EXPECTED_KINDS).sort(),
    );
  });
});

describe('values.schema.json', () => {
  it('is a draft-07 schema that forbids unknown top-level keys', () => {
    assert.equal(schema.$schema, 'http://json-schema.org/draft-07/schema#');
    assert.equal(schema.additionalProperties, false);
  });

  it('describes exactly the top-level keys of values.yaml', () => {
    assert.deepEqual(
      Object.keys(at(schema, ['properties']) as JsonObject).sort(),
      Object.keys(defaults).sort(),
    );
  });

  it('accepts values.yaml', () => {
    assert.deepEqual(errorsOf(defaults), [], describeErrors(errorsOf(defaults)));
  });

  for (const file of exampleFiles) {
    it(`accepts examples/${file} merged onto the defaults`, () => {
      const merged = helmMerge(defaults, readValues(join(CHART, 'examples', file)));
      const errors = errorsOf(merged);
      assert.deepEqual(errors, [], describeErrors(errors));
    });
  }

  it('has a production example with autoscaling, a ServiceMonitor, existingSecret, shared associations and a NetworkPolicy', () => {
    const prod = readValues(join(CHART, 'examples', 'production.yaml'));
    assert.equal(at(prod, ['autoscaling', 'enabled']), true);
    assert.equal(at(prod, ['metrics', 'serviceMonitor', 'enabled']), true);
    assert.equal(at(prod, ['metrics', 'prometheusRule', 'enabled']), true);
    assert.equal(typeof at(prod, ['secrets', 'existingSecret']), 'string');
    assert.notEqual(at(prod, ['secrets', 'existingSecret']), '');
    assert.equal(at(prod, ['networkPolicy', 'enabled']), true);
    // shared associations (Redis + association key): any pod continues any device, so the
    // example needs no session affinity
    assert.notEqual(at(prod, ['secrets', 'keys', 'redisUrl']) ?? '', '');
    assert.notEqual(at(prod, ['secrets', 'keys', 'associationKey']) ?? '', '');
    assert.equal(at(prod, ['service', 'sessionAffinity']), 'None');
  });

  /** [what, override (null deletes, as with Helm), instance path, keyword] */
  const bad: [string, JsonObject, string, string][] = [
    ['replicaCount below 1', { replicaCount: 0 }, '/replicaCount', 'minimum'],
    ['replicaCount as a string', { replicaCount: '2' }, '/replicaCount', 'type'],
    ['an unknown top-level key', { replicas: 3 }, '', 'additionalProperties'],
    [
      'an unknown nested key',
      { service: { externalTrafficPolicies: 'Local' } },
      '/service',
      'additionalProperties',
    ],
    ['a missing image repository', { image: { repository: null } }, '/image', 'required'],
    ['an empty image repository', { image: { repository: '' } }, '/image/repository', 'minLength'],
    ['an image tag given as a number', { image: { tag: 1.1 } }, '/image/tag', 'type'],
    ['a malformed digest', { image: { digest: 'sha256:xyz' } }, '/image/digest', 'pattern'],
    ['a bad service type', { service: { type: 'ExternalName' } }, '/service/type', 'enum'],
    ['a non-UDP service protocol', { service: { protocol: 'TCP' } }, '/service/protocol', 'enum'],
    [
      'a lowercase externalTrafficPolicy',
      { service: { externalTrafficPolicy: 'local' } },
      '/service/externalTrafficPolicy',
      'enum',
    ],
    [
      'a bad sessionAffinity',
      { service: { sessionAffinity: 'Cookie' } },
      '/service/sessionAffinity',
      'enum',
    ],
    [
      'a session affinity timeout over a day',
      { service: { sessionAffinityTimeoutSeconds: 86401 } },
      '/service/sessionAffinityTimeoutSeconds',
      'maximum',
    ],
    [
      'a grace period that is not an integer',
      { terminationGracePeriodSeconds: 30.5 },
      '/terminationGracePeriodSeconds',
      'type',
    ],
    [
      'a grace period with a unit',
      { terminationGracePeriodSeconds: '30s' },
      '/terminationGracePeriodSeconds',
      'type',
    ],
    [
      'a DTLS port out of range',
      { containerPorts: { dtls: 70000 } },
      '/containerPorts/dtls',
      'maximum',
    ],
    ['a missing http port', { containerPorts: { http: null } }, '/containerPorts', 'required'],
    [
      'a probe path without a leading slash',
      { probes: { readiness: { path: 'readyz' } } },
      '/probes/readiness/path',
      'pattern',
    ],
    [
      'a probe period of 0',
      { probes: { liveness: { periodSeconds: 0 } } },
      '/probes/liveness/periodSeconds',
      'minimum',
    ],
    [
      'a memory limit in a unit Kubernetes does not know',
      { resources: { limits: { memory: '512MB' } } },
      '/resources/limits/memory',
      'oneOf',
    ],
    [
      'an unknown resources key',
      { resources: { limit: { cpu: '1' } } },
      '/resources',
      'additionalProperties',
    ],
    [
      'a bad anti-affinity type',
      { podAntiAffinity: { type: 'sometimes' } },
      '/podAntiAffinity/type',
      'enum',
    ],
    [
      'a bad whenUnsatisfiable',
      { topologySpread: { whenUnsatisfiable: 'Never' } },
      '/topologySpread/whenUnsatisfiable',
      'enum',
    ],
    [
      'a numeric label value',
      { metrics: { grafanaDashboard: { labels: { grafana_dashboard: 1 } } } },
      '/metrics/grafanaDashboard/labels/grafana_dashboard',
      'type',
    ],
    [
      'a bad scrape interval',
      { metrics: { serviceMonitor: { interval: '30 seconds' } } },
      '/metrics/serviceMonitor/interval',
      'pattern',
    ],
    [
      'a CPU target of 0 %',
      { autoscaling: { targetCPUUtilizationPercentage: 0 } },
      '/autoscaling/targetCPUUtilizationPercentage',
      'minimum',
    ],
    [
      'a PDB maxUnavailable "50" (not a number, not a percentage)',
      { podDisruptionBudget: { maxUnavailable: '50' } },
      '/podDisruptionBudget/maxUnavailable',
      'oneOf',
    ],
    [
      'an existingSecret that is not a Kubernetes name',
      { secrets: { existingSecret: 'My_Secret' } },
      '/secrets/existingSecret',
      'pattern',
    ],
    [
      'an unknown secret key setting',
      { secrets: { keys: { mqttToken: 'x' } } },
      '/secrets/keys',
      'additionalProperties',
    ],
    [
      'an egress port of 0',
      { networkPolicy: { egress: { redis: { port: 0 } } } },
      '/networkPolicy/egress/redis/port',
      'minimum',
    ],
    [
      'a heap share over 95 %',
      { nodeOptions: { heapPercent: 100 } },
      '/nodeOptions/heapPercent',
      'maximum',
    ],
    [
      'a secret in config (mqttPassword)',
      { config: { mqttPassword: 'hunter2' } },
      '/config',
      'additionalProperties',
    ],
    [
      'a secret in config (registryToken)',
      { config: { registryToken: 'token' } },
      '/config',
      'additionalProperties',
    ],
    [
      'a secret in config (redisUrl)',
      { config: { redisUrl: 'redis://:pw@redis:6379' } },
      '/config',
      'additionalProperties',
    ],
    [
      'a secret in config (associationKey)',
      { config: { associationKey: '00'.repeat(32) } },
      '/config',
      'additionalProperties',
    ],
    [
      'a port in config (set by containerPorts)',
      { config: { dtlsPort: 5685 } },
      '/config',
      'additionalProperties',
    ],
    [
      'an unknown setting in config',
      { config: { logLvl: 'info' } },
      '/config',
      'additionalProperties',
    ],
    ['a bad log level', { config: { logLevel: 'verbose' } }, '/config/logLevel', 'enum'],
    [
      'a negative drain timeout',
      { config: { drainTimeoutSeconds: -1 } },
      '/config/drainTimeoutSeconds',
      'minimum',
    ],
    [
      'a drain timeout that is not an integer',
      { config: { drainTimeoutSeconds: 2.5 } },
      '/config/drainTimeoutSeconds',
      'type',
    ],
    [
      'a block size that is not a power of two',
      { config: { blockSize: 1000 } },
      '/config/blockSize',
      'anyOf',
    ],
    [
      'a route without a backend',
      { config: { routes: [{ match: '/x' }] } },
      '/config/routes/0',
      'oneOf',
    ],
  ];

  for (const [what, override, path, keyword] of bad) {
    it(`rejects ${what} (${path || '/'} ${keyword})`, () => {
      const errors = errorsOf(helmMerge(defaults, override));
      assert.ok(errors.length > 0, `accepted: ${JSON.stringify(override)}`);
      assert.ok(
        errors.some((e) => e.instancePath === path && e.keyword === keyword),
        `expected ${path || '/'} ${keyword}, got:\n${describeErrors(errors)}`,
      );
    });
  }

  it("config's properties are the settings of src/config/settings.ts, less secrets and ports", async () => {
    const expected = expectedConfigProperties();
    const actual = at(schema, ['properties', 'config', 'properties']);
    if (UPDATE && JSON.stringify(actual) !== JSON.stringify(expected)) {
      const file = join(CHART, 'values.schema.json');
      const next = structuredClone(schema);
      const config = at(next, ['properties', 'config']) as JsonObject;
      config.properties = expected;
      await writeFormatted(file, JSON.stringify(next, null, 2), 'json');
      return;
    }
    assert.deepEqual(actual, expected, 'run UPDATE_CHART=1 node scripts/run-tests.mjs deploy/helm');
    assert.equal(at(schema, ['properties', 'config', 'additionalProperties']), false);
    for (const key of Object.keys(settings) as SettingName[]) {
      if (settings[key].secret === true) assert.equal(key in expected, false, `${key} is a secret`);
    }
  });
});

describe('values files render and configure coap-edge', () => {
  const files: [string, JsonObject][] = [
    ['values.yaml', defaults],
    ...exampleFiles.map((f): [string, JsonObject] => [
      `examples/${f}`,
      helmMerge(defaults, readValues(join(CHART, 'examples', f))),
    ]),
  ];

  for (const [name, values] of files) {
    it(`${name}: config is a valid coap-edge configuration`, () => {
      const config = loadChartConfig(values);
      assert.equal(config.drainTimeoutSeconds, at(values, ['config', 'drainTimeoutSeconds']) ?? 20);
    });

    it(`${name}: passes the checks the templates make with fail (grace period > drain timeout, ...)`, () => {
      assert.deepEqual(renderFailures(values), []);
    });
  }

  const failing: [string, JsonObject, string][] = [
    [
      'a grace period equal to the drain timeout',
      { terminationGracePeriodSeconds: 20 },
      'terminationGracePeriodSeconds',
    ],
    [
      'a grace period shorter than drain plus preStop sleep',
      { preStopSleepSeconds: 10 },
      'terminationGracePeriodSeconds',
    ],
    [
      'a drain timeout above the grace period',
      { config: { drainTimeoutSeconds: 45 } },
      'terminationGracePeriodSeconds',
    ],
    [
      'a drain timeout above the grace period, under its former name drainTimeout',
      { config: { drainTimeout: 45 } },
      'terminationGracePeriodSeconds',
    ],
    [
      'autoscaling with minReplicas > maxReplicas',
      { autoscaling: { enabled: true, minReplicas: 5, maxReplicas: 3 } },
      'autoscaling.minReplicas',
    ],
    [
      'an admin HTTP server bound to loopback (probes could not reach it)',
      { config: { httpBind: '127.0.0.1' } },
      'config.httpBind',
    ],
    [
      'autoscaling without a CPU request',
      { autoscaling: { enabled: true }, resources: { requests: { cpu: null } } },
      'resources.requests.cpu',
    ],
  ];
  for (const [what, override, reason] of failing) {
    it(`fails rendering for ${what} (the schema cannot tell)`, () => {
      const values = helmMerge(defaults, override);
      assert.deepEqual(errorsOf(values), [], 'the schema accepts it');
      assert.deepEqual(renderFailures(values), [reason]);
    });
  }

  it('values that use the former names of renamed settings still configure coap-edge (with a warning)', () => {
    const values = helmMerge(defaults, {
      config: { drainTimeout: 25, registryTimeout: 1500, idleTimeout: 600 },
    });
    assert.deepEqual(errorsOf(values), [], 'the schema accepts the former names');
    assert.deepEqual(renderFailures(values), []);
    const warnings: string[] = [];
    const config = loadChartConfig(values, (m) => warnings.push(m));
    assert.equal(config.drainTimeoutSeconds, 25, "the values' drainTimeout, not the chart default");
    assert.equal(config.registryTimeoutMs, 1500);
    assert.equal(config.idleTimeoutSeconds, 600);
    assert.equal(warnings.length, 3, warnings.join('\n'));
  });

  it('the templates carry those checks as fail calls, run by the Deployment', () => {
    const helpers = templates.get('_helpers.tpl') ?? '';
    const validateBlock =
      /define "coap-edge\.validateValues"([\s\S]*?)\{\{- define|define "coap-edge\.validateValues"([\s\S]*)$/.exec(
        helpers,
      );
    const body = validateBlock?.[1] ?? validateBlock?.[2] ?? '';
    assert.match(body, /if le \$grace \(add \$drain \$preStop/);
    assert.match(body, /fail \(printf "terminationGracePeriodSeconds/);
    assert.match(body, /fail \(printf "autoscaling\.minReplicas/);
    assert.match(body, /fail "autoscaling\.enabled needs resources\.requests\.cpu/);
    assert.match(body, /fail \(printf "config\.httpBind/);
    assert.match(
      helpers,
      /hasKey \.Values\.config "drainTimeout"[\s\S]*?hasKey \.Values\.config "drainTimeoutSeconds"[\s\S]*?\{\{- 20 \}\}/,
      'the former name, then the new one, else the default drain timeout 20 s',
    );
    assert.equal(settings.drainTimeoutSeconds.default, 20);
    assert.match(
      templates.get('deployment.yaml') ?? '',
      /^\{\{- include "coap-edge\.validateValues" \. \}\}\n/,
    );
  });

  it('reads the credentials from secrets.existingSecret into the variables the settings define', () => {
    const keys = at(defaults, ['secrets', 'keys']);
    assert.ok(isObject(keys));
    const deployment = templates.get('deployment.yaml') ?? '';
    for (const setting of Object.keys(keys) as SettingName[]) {
      assert.ok(setting in settings, `secrets.keys.${setting} is a setting`);
      assert.match(
        deployment,
        new RegExp(`"env" "${envName(setting)}" "key" \\.Values\\.secrets\\.keys\\.${setting}\\)`),
        `${envName(setting)} from secrets.keys.${setting}`,
      );
    }
    for (const key of Object.keys(settings) as SettingName[]) {
      if (settings[key].secret === true)
        assert.ok(key in keys, `secret setting ${key} can come from the Secret`);
    }
    assert.match(
      templates.get('_helpers.tpl') ?? '',
      /secretKeyRef:\n\s+name: \{\{ \.root\.Values\.secrets\.existingSecret \| quote \}\}/,
    );
  });
});

describe('templates', () => {
  for (const [file, text] of templates) {
    it(`${file}: balanced delimiters and blocks`, () => {
      const body = withoutComments(text);
      const opened = body.split('{{').length - 1;
      const closed = [...body.matchAll(ACTION)];
      assert.equal(closed.length, opened, 'every {{ is closed by }}');
      assert.ok(
        closed.every((m) => !m[0].slice(2).includes('{{')),
        'no {{ inside an action',
      );
      const stack: string[] = [];
      for (const a of actions(text)) {
        const word = /^(\w+)/.exec(a)?.[1];
        if (
          word === 'if' ||
          word === 'range' ||
          word === 'with' ||
          word === 'define' ||
          word === 'block'
        )
          stack.push(word);
        else if (word === 'else') assert.ok(stack.length > 0, `else outside a block: {{ ${a} }}`);
        else if (word === 'end') assert.ok(stack.pop() !== undefined, 'end without a block');
      }
      assert.deepEqual(stack, [], 'every block ends');
    });
  }

  for (const [file, expected] of Object.entries(EXPECTED_KINDS)) {
    it(`${file}: YAML once the actions are taken out, one ${expected.kind} (${expected.apiVersion})`, () => {
      const docs = parseAllDocuments(skeleton(templates.get(file) ?? ''), { uniqueKeys: false });
      assert.ok(Array.isArray(docs), 'parsed');
      const objects = docs
        .map((d) => {
          assert.deepEqual(d.errors, [], `${file}: ${d.errors.map((e) => e.message).join('; ')}`);
          return d.toJS() as unknown;
        })
        .filter((o) => o !== null);
      assert.equal(objects.length, 1);
      const obj = objects[0];
      assert.ok(isObject(obj));
      assert.equal(obj.apiVersion, expected.apiVersion);
      assert.equal(obj.kind, expected.kind);
      assert.ok(
        isObject(obj.metadata) &&
          typeof obj.metadata.name === 'string' &&
          obj.metadata.name.startsWith('TPL'),
        'metadata.name from a helper',
      );
      assert.match(
        templates.get(file) ?? '',
        /labels:\n\s+\{\{- include "coap-edge\.labels" \. \| nindent \d+ \}\}/,
      );
    });
  }

  it('refer only to .Values paths the schema allows and values.yaml has (config: any setting)', () => {
    const problems: string[] = [];
    for (const [file, text] of templates) {
      for (const path of valuesRefs(text)) {
        if (!schemaAllows(path))
          problems.push(`${file}: .Values.${path.join('.')} (not in the schema)`);
        else if (path[0] !== 'config' && at(defaults, path) === undefined)
          problems.push(`${file}: .Values.${path.join('.')} (not in values.yaml)`);
      }
    }
    assert.deepEqual(problems, []);
  });

  it('use every value of values.yaml', () => {
    const refs = [...templates.values()].flatMap(valuesRefs).map((p) => p.join('.'));
    const unused = leaves(defaults)
      .map((p) => p.join('.'))
      .filter(
        (leaf) => leaf !== 'global' && !refs.some((r) => leaf === r || leaf.startsWith(`${r}.`)),
      );
    assert.deepEqual(unused, []);
  });

  it('include only helpers that are defined, and every helper is used', () => {
    const defined = new Set<string>();
    const used = new Set<string>();
    for (const text of templates.values()) {
      for (const a of actions(text)) {
        const d = /^define "([^"]+)"/.exec(a);
        if (d?.[1] !== undefined) defined.add(d[1]);
        for (const m of a.matchAll(/\b(?:include|template) "([^"]+)"/g)) used.add(m[1] ?? '');
      }
    }
    assert.deepEqual(
      [...used].filter((n) => !defined.has(n)),
      [],
      'undefined helpers',
    );
    assert.deepEqual(
      [...defined].filter((n) => !used.has(n)),
      [],
      'unused helpers',
    );
    assert.ok(
      [...defined].every((n) => n.startsWith('coap-edge.')),
      'helpers are namespaced',
    );
    for (const [file, text] of templates) {
      if (file !== '_helpers.tpl')
        assert.doesNotMatch(text, /\{\{-?\s*define /, `${file} defines no helper`);
    }
  });

  it('read only chart files that exist (.Files.Get, $.Template.BasePath)', () => {
    for (const [file, text] of templates) {
      for (const m of text.matchAll(/\.Files\.Get "([^"]+)"/g)) {
        assert.ok(existsSync(join(CHART, m[1] ?? '')), `${file}: ${m[1]}`);
      }
      for (const m of text.matchAll(/\.Template\.BasePath "\/([^"]+)"/g)) {
        assert.ok(templates.has(m[1] ?? ''), `${file}: ${m[1]}`);
      }
    }
  });

  it('deployment: config checksum, downward API env, probes on the http port, drain-aware grace period', () => {
    const d = templates.get('deployment.yaml') ?? '';
    assert.match(
      d,
      /checksum\/config: \{\{ include \(print \$\.Template\.BasePath "\/configmap\.yaml"\) \. \| sha256sum \}\}/,
    );
    for (const [env, field] of [
      ['POD_NAME', 'metadata.name'],
      ['POD_NAMESPACE', 'metadata.namespace'],
      ['NODE_NAME', 'spec.nodeName'],
    ] as const) {
      assert.match(
        d,
        new RegExp(
          `- name: ${env}\\n\\s+valueFrom:\\n\\s+fieldRef:\\n\\s+fieldPath: ${field.replace('.', '\\.')}`,
        ),
      );
    }
    for (const probe of ['startup', 'liveness', 'readiness']) {
      assert.match(
        d,
        new RegExp(
          `${probe}Probe:\\n\\s+httpGet:\\n\\s+path: \\{\\{ \\.Values\\.probes\\.${probe}\\.path \\}\\}\\n\\s+port: http\\n`,
        ),
      );
    }
    assert.match(
      d,
      /- name: dtls\n\s+containerPort: \{\{ \.Values\.containerPorts\.dtls \| int \}\}\n\s+protocol: UDP/,
    );
    assert.match(
      d,
      /- name: http\n\s+containerPort: \{\{ \.Values\.containerPorts\.http \| int \}\}\n\s+protocol: TCP/,
    );
    assert.match(
      d,
      new RegExp(
        `- name: ${envName('dtlsPort')}\\n\\s+value: \\{\\{ \\.Values\\.containerPorts\\.dtls`,
      ),
    );
    assert.match(
      d,
      new RegExp(
        `- name: ${envName('httpPort')}\\n\\s+value: \\{\\{ \\.Values\\.containerPorts\\.http`,
      ),
    );
    assert.match(d, /args:\n\s+- serve\n\s+- --config\n\s+- \/etc\/coap-edge\/config\.yaml/);
    assert.match(d, /mountPath: \/etc\/coap-edge\n/);
    assert.match(d, /- name: tmp\n\s+mountPath: \/tmp/);
    assert.match(
      d,
      /terminationGracePeriodSeconds: \{\{ \.Values\.terminationGracePeriodSeconds \| int \}\}/,
    );
    assert.match(
      templates.get('configmap.yaml') ?? '',
      /config\.yaml: \|\n\s+\{\{- include "coap-edge\.config" \. \| nindent 4 \}\}/,
    );
    assert.match(
      templates.get('_helpers.tpl') ?? '',
      /define "coap-edge\.config"[\s\S]*?hasKey \.Values\.config "drainTimeout"[\s\S]*?omit \.Values\.config "drainTimeoutSeconds"/,
    );
  });

  it('service: UDP with externalTrafficPolicy (explained) and optional ClientIP affinity with a timeout', () => {
    const s = templates.get('service.yaml') ?? '';
    assert.match(s, /# DTLS keys each association by the device's source address/);
    assert.match(s, /externalTrafficPolicy: \{\{ \.Values\.service\.externalTrafficPolicy \}\}/);
    assert.match(s, /sessionAffinity: \{\{ \.Values\.service\.sessionAffinity \}\}/);
    assert.match(
      s,
      /timeoutSeconds: \{\{ \.Values\.service\.sessionAffinityTimeoutSeconds \| int \}\}/,
    );
    assert.match(s, /protocol: \{\{ \.Values\.service\.protocol \}\}/);
    assert.equal(at(defaults, ['service', 'type']), 'LoadBalancer');
    assert.equal(at(defaults, ['service', 'externalTrafficPolicy']), 'Local');
    assert.equal(at(defaults, ['service', 'port']), 5684);
    assert.equal(at(defaults, ['containerPorts', 'dtls']), settings.dtlsPort.default);
  });

  it('monitoring: ServiceMonitor, PrometheusRule and the dashboard are off by default and read files/', () => {
    for (const key of ['serviceMonitor', 'prometheusRule', 'grafanaDashboard']) {
      assert.equal(at(defaults, ['metrics', key, 'enabled']), false, key);
    }
    assert.deepEqual(at(defaults, ['metrics', 'grafanaDashboard', 'labels']), {
      grafana_dashboard: '1',
    });
    assert.match(
      templates.get('prometheusrule.yaml') ?? '',
      /\.Files\.Get "files\/alerts\.yml" \| fromYaml/,
    );
    assert.match(
      templates.get('dashboard-configmap.yaml') ?? '',
      /\.Files\.Get "files\/coap-edge-dashboard\.json"/,
    );
  });
});

describe('files/ is the one source of the dashboard and the alert rules', () => {
  it('no copy of files/alerts.yml or files/coap-edge-dashboard.json elsewhere under deploy/', () => {
    const sources = ['files/alerts.yml', 'files/coap-edge-dashboard.json'].map((f) => readText(f));
    const copies: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile()) {
          const text = readFileSync(p, 'utf8');
          const dashboardLike = p.endsWith('.json') && /"uid":\s*"coap-edge"/.test(text);
          if (sources.includes(text) || dashboardLike) copies.push(relative(REPO_ROOT, p));
        }
      }
    };
    walk(join(REPO_ROOT, 'deploy'));
    assert.deepEqual(copies, [], 'mount the chart files instead of copying them');
  });

  it('files/alerts.yml has rule groups for the PrometheusRule', () => {
    const alerts = parseYaml(readText('files/alerts.yml')) as unknown;
    assert.ok(isObject(alerts) && Array.isArray(alerts.groups) && alerts.groups.length > 0);
  });

  it('files/coap-edge-dashboard.json is a dashboard that fits a ConfigMap', () => {
    const text = readText('files/coap-edge-dashboard.json');
    const dashboard = JSON.parse(text) as unknown;
    assert.ok(isObject(dashboard) && Array.isArray(dashboard.panels));
    assert.ok(Buffer.byteLength(text) < 1_000_000, 'under the 1 MiB ConfigMap limit');
  });
});

describe('README.md', () => {
  it('has a row for every leaf of values.yaml, with its default (generated table)', () => {
    const file = join(CHART, 'README.md');
    const readme = readFileSync(file, 'utf8');
    const begin = readme.indexOf(TABLE_BEGIN);
    const end = readme.indexOf(TABLE_END);
    assert.ok(begin >= 0 && end > begin, 'README.md has the table markers');
    const expected = renderValuesTable();
    const actual = readme.slice(begin, end + TABLE_END.length);
    if (UPDATE && actual !== expected) {
      writeFileSync(file, readme.slice(0, begin) + expected + readme.slice(end + TABLE_END.length));
      return;
    }
    assert.equal(actual, expected, 'run UPDATE_CHART=1 node scripts/run-tests.mjs deploy/helm');
    for (const path of leaves(defaults))
      assert.ok(actual.includes(`| \`${dotted(path)}\` |`), dotted(path));
  });
});

describe('NOTES.txt', () => {
  const notes = templates.get('NOTES.txt') ?? '';
  it('tells how to get the load balancer address', () => {
    assert.match(notes, /kubectl get service \{\{ include "coap-edge\.fullname" \. \}\}/);
    assert.match(notes, /\.status\.loadBalancer\.ingress\[0\]\.ip/);
    assert.match(notes, /\.status\.loadBalancer\.ingress\[0\]\.hostname/);
  });
  it('tells how to connect a device', () => {
    assert.match(notes, /coap-edge psk <device-secret> --shell/);
    assert.match(notes, /coap-client-openssl -u <productKey>,<deviceKey>,2,3600 -k "\$KEY"/);
    assert.match(notes, /coaps:\/\/\$COAP_EDGE_HOST:/);
  });
  it('tells how to see the metrics', () => {
    assert.match(
      notes,
      /kubectl port-forward .*service\/\{\{ include "coap-edge\.fullname" \. \}\}-metrics/,
    );
    assert.match(notes, /\/metrics/);
  });
});
