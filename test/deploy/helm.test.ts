/**
 * The Helm chart (helm/coap-edge), checked with Helm itself (the binary scripts/fetch-helm.sh
 * unpacks; test/helpers/helm.ts):
 * - `helm lint --strict` with values.yaml and with every examples/*.yaml;
 * - `helm template` with each of them: every manifest validates against the Kubernetes schemas
 *   and uses only fields Kubernetes knows (test/deploy/kubernetes.ts), each template renders
 *   the expected kind with the chart's names and labels, and the checks the templates make with
 *   `fail` (grace period > drain timeout, ...) stop a rendering with bad values and pass every
 *   values file; the rendered PrometheusRule passes `promtool check rules`;
 * - Chart.yaml fields; values.schema.json is valid draft-07 and accepts values.yaml and every
 *   examples/*.yaml (merged onto the defaults as Helm does), and rejects a table of bad values,
 *   each for the expected reason (ajv; Helm applies the same schema: one case is checked
 *   through `helm lint`);
 * - the schema's `config` part equals what src/config/settings.ts allows (secrets and ports left
 *   out), and every values file's `config` loads with the real config loader;
 * - template sources: every `.Values.x.y` a path the schema allows (and values.yaml has),
 *   every `include` defined and every helper used, every `.Files.Get` file present, every value
 *   used;
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
  parseDocument,
  stringify as toYaml,
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
import { helmWithValues, renderedManifests, type Rendered } from '../helpers/helm.js';
import { REPO_ROOT } from '../helpers/processes.js';
import { HAVE_PROMTOOL, promtool } from '../telemetry/prom.js';
import { isKnownKind, unknownFields, validateManifest } from './kubernetes.js';

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
  }
});

/** Renders of the chart by `helm template`, one per set of values files, on first use. */
const renders = new Map<string, Promise<Rendered[]>>();
function render(name: string, values: readonly JsonObject[]): Promise<Rendered[]> {
  let p = renders.get(name);
  if (p === undefined) {
    p = helmWithValues('template', CHART, values).then((r) => {
      assert.equal(r.code, 0, `helm template with ${name}:\n${r.stderr}`);
      return renderedManifests(r.stdout);
    });
    renders.set(name, p);
  }
  return p;
}

const valueSets: [string, JsonObject[]][] = [
  ['values.yaml', []],
  ...exampleFiles.map((f): [string, JsonObject[]] => [
    `examples/${f}`,
    [readValues(join(CHART, 'examples', f))],
  ]),
];

/** Values that render what no values file does: the Service with ClientIP affinity. */
const AFFINITY: JsonObject = {
  service: { sessionAffinity: 'ClientIP', sessionAffinityTimeoutSeconds: 600 },
};

let fieldCheck: Promise<string[]> | undefined;
/**
 * The unknown fields of every manifest Helm renders from the values files (and AFFINITY), as
 * `values: template: ...`: one TypeScript program for them all, built on first use.
 */
function fieldProblems(): Promise<string[]> {
  const sets: [string, JsonObject[]][] = [...valueSets, ['ClientIP affinity', [AFFINITY]]];
  fieldCheck ??= Promise.all(
    sets.map(async ([name, values]) =>
      (await render(name, values))
        .filter((m) => isKnownKind(m.doc))
        .map((m) => ({ name: `${name}: ${m.template}`, doc: m.doc })),
    ),
  ).then((all) => unknownFields(all.flat()));
  return fieldCheck;
}

describe('Helm: helm lint and helm template', () => {
  for (const [name, values] of valueSets) {
    it(`${name}: helm lint --strict passes`, async () => {
      const r = await helmWithValues('lint', CHART, values, ['--strict']);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    });

    it(`${name}: helm template renders manifests that validate against the Kubernetes schemas, with known fields only`, async () => {
      const manifests = await render(name, values);
      assert.ok(manifests.length > 0);
      for (const m of manifests) {
        if (isKnownKind(m.doc)) assert.doesNotThrow(() => validateManifest(m.doc), m.template);
        // Prometheus Operator resources: no schema here
        else assert.equal(m.doc.apiVersion, 'monitoring.coreos.com/v1', m.template);
      }
      assert.deepEqual(
        (await fieldProblems()).filter((p) => p.startsWith(`${name}: `)),
        [],
      );
    });
  }

  it('every template renders its kind, named after the release, with the chart labels (examples/production.yaml: every feature on)', async () => {
    const [name, values] = valueSets.find(([n]) => n === 'examples/production.yaml')!;
    const manifests = await render(name, values);
    const chart = parseYaml(readText('Chart.yaml')) as JsonObject;
    assert.deepEqual(
      [...new Set(manifests.map((m) => m.template.replace('templates/', '')))].sort(),
      Object.keys(EXPECTED_KINDS).sort(),
    );
    for (const [file, expected] of Object.entries(EXPECTED_KINDS)) {
      const docs = manifests.filter((m) => m.template === `templates/${file}`).map((m) => m.doc);
      assert.equal(docs.length, 1, file);
      const doc = docs[0]!;
      assert.equal(doc.apiVersion, expected.apiVersion, file);
      assert.equal(doc.kind, expected.kind, file);
      const metadata = doc.metadata as JsonObject;
      assert.equal(typeof metadata.name, 'string', `${file}: name`);
      assert.match(metadata.name as string, /^coap-edge(-[a-z]+)?$/, `${file}: name`);
      const labels = metadata.labels as JsonObject;
      assert.deepEqual(
        {
          name: labels['app.kubernetes.io/name'],
          instance: labels['app.kubernetes.io/instance'],
          managedBy: labels['app.kubernetes.io/managed-by'],
          chart: labels['helm.sh/chart'],
        },
        {
          name: 'coap-edge',
          instance: 'coap-edge',
          managedBy: 'Helm',
          chart: `coap-edge-${chart.version as string}`,
        },
        `${file}: labels`,
      );
    }
  });

  it('the PrometheusRule (examples/production.yaml) carries the groups of files/alerts.yml, and promtool accepts them', async () => {
    assert.ok(HAVE_PROMTOOL, 'promtool (Debian package prometheus) is needed');
    const [name, values] = valueSets.find(([n]) => n === 'examples/production.yaml')!;
    const rule = (await render(name, values)).find((m) => m.doc.kind === 'PrometheusRule');
    assert.ok(rule !== undefined, 'rendered');
    const spec = rule.doc.spec as JsonObject;
    assert.deepEqual(spec.groups, (parseYaml(readText('files/alerts.yml')) as JsonObject).groups);
    const dir = mkdtempSync(join(tmpdir(), 'coap-edge-helm-rules-'));
    try {
      const file = join(dir, 'rules.yml');
      writeFileSync(file, toYaml(spec));
      const r = await promtool(['check', 'rules', file]);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('helm lint applies values.schema.json (a replicaCount of 0 is refused)', async () => {
    const r = await helmWithValues('lint', CHART, [{ replicaCount: 0 }], ['--strict']);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(`${r.stdout}${r.stderr}`, /replicaCount/);
  });

  /** [what, override (null deletes, as with Helm), what helm template says] */
  const failing: [string, JsonObject, RegExp][] = [
    [
      'a grace period equal to the drain timeout',
      { terminationGracePeriodSeconds: 20 },
      /terminationGracePeriodSeconds \(20\) must be greater than config\.drainTimeoutSeconds \(20\) plus preStopSleepSeconds \(0\)/,
    ],
    [
      'a grace period equal to the default drain timeout (config.drainTimeoutSeconds unset)',
      { terminationGracePeriodSeconds: 20, config: { drainTimeoutSeconds: null } },
      /terminationGracePeriodSeconds \(20\) must be greater than config\.drainTimeoutSeconds \(20\)/,
    ],
    [
      'a grace period shorter than drain plus preStop sleep',
      { preStopSleepSeconds: 10 },
      /terminationGracePeriodSeconds \(30\) must be greater than config\.drainTimeoutSeconds \(20\) plus preStopSleepSeconds \(10\)/,
    ],
    [
      'a drain timeout above the grace period',
      { config: { drainTimeoutSeconds: 45 } },
      /must be greater than config\.drainTimeoutSeconds \(45\)/,
    ],
    [
      'a drain timeout above the grace period, under its former name drainTimeout',
      { config: { drainTimeout: 45 } },
      /must be greater than config\.drainTimeoutSeconds \(45\)/,
    ],
    [
      'autoscaling with minReplicas > maxReplicas',
      { autoscaling: { enabled: true, minReplicas: 5, maxReplicas: 3 } },
      /autoscaling\.minReplicas \(5\) must not be greater than autoscaling\.maxReplicas \(3\)/,
    ],
    [
      'an admin HTTP server bound to loopback (probes could not reach it)',
      { config: { httpBind: '127.0.0.1' } },
      /config\.httpBind \(127\.0\.0\.1\) is a loopback address/,
    ],
    [
      'autoscaling without a CPU request',
      { autoscaling: { enabled: true }, resources: { requests: { cpu: null } } },
      /autoscaling\.enabled needs resources\.requests\.cpu/,
    ],
  ];
  for (const [what, override, message] of failing) {
    it(`helm template fails for ${what} (the schema cannot tell)`, async () => {
      assert.deepEqual(errorsOf(helmMerge(defaults, override)), [], 'the schema accepts it');
      const r = await helmWithValues('template', CHART, [override]);
      assert.notEqual(r.code, 0, 'rendered');
      assert.match(r.stderr, message);
    });
  }

  it('values that use the former names of renamed settings render a config coap-edge reads (with a warning each)', async () => {
    const overrides = { config: { drainTimeout: 25, registryTimeout: 1500, idleTimeout: 600 } };
    assert.deepEqual(errorsOf(helmMerge(defaults, overrides)), [], 'the schema accepts them');
    const r = await helmWithValues('template', CHART, [overrides]);
    assert.equal(r.code, 0, r.stderr);
    const configMap = renderedManifests(r.stdout).find((m) => m.doc.kind === 'ConfigMap')?.doc;
    const text = at(configMap as JsonObject, ['data', 'config.yaml']);
    assert.ok(typeof text === 'string', 'the ConfigMap holds config.yaml');
    const dir = mkdtempSync(join(tmpdir(), 'coap-edge-helm-'));
    try {
      const file = join(dir, 'config.yaml');
      writeFileSync(file, text);
      const warnings: string[] = [];
      const config = loadConfig({ file, onDeprecated: (m) => warnings.push(m) });
      assert.equal(config.drainTimeoutSeconds, 25, "the values' drainTimeout, not the default");
      assert.equal(config.registryTimeoutMs, 1500);
      assert.equal(config.idleTimeoutSeconds, 600);
      assert.equal(warnings.length, 3, warnings.join('\n'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the default drain timeout of the templates is the setting default', () => {
    // the second failing case above: 20 s when config.drainTimeoutSeconds is unset
    assert.equal(settings.drainTimeoutSeconds.default, 20);
  });

  it('reads the credentials from secrets.existingSecret into the variables the settings define (examples/production.yaml)', async () => {
    const [name, values] = valueSets.find(([n]) => n === 'examples/production.yaml')!;
    const prod = values[0]!;
    const keys = at(prod, ['secrets', 'keys']);
    assert.ok(isObject(keys));
    const deployment = (await render(name, values)).find((m) => m.doc.kind === 'Deployment');
    const container = at(deployment?.doc as JsonObject | undefined, [
      'spec',
      'template',
      'spec',
      'containers',
    ]);
    assert.ok(Array.isArray(container) && isObject(container[0]));
    const env = container[0].env;
    assert.ok(Array.isArray(env));
    for (const [setting, key] of Object.entries(keys)) {
      assert.ok(setting in settings, `secrets.keys.${setting} is a setting`);
      const variable = envName(setting);
      const entry: Json | undefined = env.find((e: Json) => isObject(e) && e.name === variable);
      assert.deepEqual(
        at(entry, ['valueFrom', 'secretKeyRef']),
        { name: at(prod, ['secrets', 'existingSecret']), key, optional: false },
        `${variable} from secrets.keys.${setting}`,
      );
    }
    const allKeys = at(defaults, ['secrets', 'keys']);
    assert.ok(isObject(allKeys));
    for (const key of Object.keys(settings) as SettingName[]) {
      if (settings[key].secret === true)
        assert.ok(key in allKeys, `secret setting ${key} can come from the Secret (values.yaml)`);
    }
  });
});

describe('templates', () => {
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

  it('deployment (rendered): config checksum, downward API env, probes on the http port, ports coap-edge is told, grace period', async () => {
    const custom = {
      containerPorts: { dtls: 5700, http: 9500 },
      terminationGracePeriodSeconds: 45,
      config: { logLevel: 'debug' },
    };
    const rendered = await render('custom ports', [custom]);
    const values = helmMerge(defaults, custom);
    const deployment = rendered.find((m) => m.doc.kind === 'Deployment')?.doc as JsonObject;
    const pod = at(deployment, ['spec', 'template', 'spec']) as JsonObject;
    const c = (pod.containers as JsonObject[])[0]!;
    const env = c.env as JsonObject[];
    const envEntry = (name: string): JsonObject | undefined => env.find((e) => e.name === name);

    // the checksum follows the ConfigMap: another config, another checksum
    const checksum = (m: Rendered[]): Json | undefined =>
      at(m.find((x) => x.doc.kind === 'Deployment')?.doc as JsonObject, [
        'spec',
        'template',
        'metadata',
        'annotations',
        'checksum/config',
      ]);
    const defaultRender = await render('values.yaml', []);
    assert.match(checksum(rendered) as string, /^[0-9a-f]{64}$/);
    assert.notEqual(checksum(rendered), checksum(defaultRender));
    assert.equal(checksum(await render('custom ports', [custom])), checksum(rendered));

    for (const [name, field] of [
      ['POD_NAME', 'metadata.name'],
      ['POD_NAMESPACE', 'metadata.namespace'],
      ['NODE_NAME', 'spec.nodeName'],
    ] as const) {
      assert.equal(at(envEntry(name), ['valueFrom', 'fieldRef', 'fieldPath']), field, name);
    }
    for (const probe of ['startup', 'liveness', 'readiness']) {
      assert.deepEqual(at(c, [`${probe}Probe`, 'httpGet']), {
        path: at(values, ['probes', probe, 'path']),
        port: 'http',
      });
    }
    assert.deepEqual(c.ports, [
      { name: 'dtls', containerPort: 5700, protocol: 'UDP' },
      { name: 'http', containerPort: 9500, protocol: 'TCP' },
    ]);
    assert.equal(envEntry(envName('dtlsPort'))?.value, '5700');
    assert.equal(envEntry(envName('httpPort'))?.value, '9500');
    assert.deepEqual(c.args, ['serve', '--config', '/etc/coap-edge/config.yaml']);
    const mounts = c.volumeMounts as JsonObject[];
    const configVolume = mounts.find((m) => m.mountPath === '/etc/coap-edge')?.name;
    const configMap = rendered.find((m) => m.doc.kind === 'ConfigMap')?.doc as JsonObject;
    assert.equal(
      at(
        (pod.volumes as JsonObject[]).find((v) => v.name === configVolume),
        ['configMap', 'name'],
      ),
      at(configMap, ['metadata', 'name']),
    );
    assert.ok(mounts.some((m) => m.name === 'tmp' && m.mountPath === '/tmp'));
    assert.equal(pod.terminationGracePeriodSeconds, 45);
    assert.deepEqual(parseYaml(at(configMap, ['data', 'config.yaml']) as string), values.config);
  });

  it('service (rendered): UDP with externalTrafficPolicy (explained) and optional ClientIP affinity with a timeout', async () => {
    assert.match(
      templates.get('service.yaml') ?? '',
      /# DTLS keys each association by the device's source address/,
    );
    const service = (m: Rendered[]): JsonObject =>
      m.find(
        (x) =>
          x.doc.kind === 'Service' && at(x.doc as JsonObject, ['metadata', 'name']) === 'coap-edge',
      )?.doc as JsonObject;
    const plain = service(await render('values.yaml', []));
    assert.equal(at(plain, ['spec', 'type']), 'LoadBalancer');
    assert.equal(at(plain, ['spec', 'externalTrafficPolicy']), 'Local');
    assert.equal(
      at(plain, ['spec', 'sessionAffinity']),
      at(defaults, ['service', 'sessionAffinity']),
    );
    assert.deepEqual(at(plain, ['spec', 'ports']), [
      { name: 'dtls', port: 5684, targetPort: 'dtls', protocol: 'UDP' },
    ]);
    assert.equal(at(defaults, ['containerPorts', 'dtls']), settings.dtlsPort.default);
    const sticky = service(await render('ClientIP affinity', [AFFINITY]));
    assert.equal(at(sticky, ['spec', 'sessionAffinity']), 'ClientIP');
    assert.equal(at(sticky, ['spec', 'sessionAffinityConfig', 'clientIP', 'timeoutSeconds']), 600);
    const problems = await fieldProblems();
    assert.deepEqual(
      problems.filter((p) => p.startsWith('ClientIP affinity: ')),
      [],
    );
  });

  it('monitoring (rendered): ServiceMonitor, PrometheusRule and the dashboard are off by default; the dashboard is files/', async () => {
    const kinds = (m: Rendered[]): string[] =>
      m.map(
        (x) => `${String(x.doc.kind)}/${at(x.doc as JsonObject, ['metadata', 'name']) as string}`,
      );
    const plain = kinds(await render('values.yaml', []));
    for (const k of [
      'ServiceMonitor/coap-edge',
      'PrometheusRule/coap-edge',
      'ConfigMap/coap-edge-dashboard',
    ])
      assert.ok(!plain.includes(k), `${k} is off by default`);
    const [name, values] = valueSets.find(([n]) => n === 'examples/production.yaml')!;
    const prod = await render(name, values);
    const dashboard = prod.find((x) => x.template === 'templates/dashboard-configmap.yaml')
      ?.doc as JsonObject;
    assert.equal(at(dashboard, ['metadata', 'labels', 'grafana_dashboard']), '1');
    assert.equal(
      at(dashboard, ['data', 'coap-edge.json']),
      readText('files/coap-edge-dashboard.json').trimEnd(),
    );
    assert.ok(prod.some((x) => x.doc.kind === 'ServiceMonitor'));
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
