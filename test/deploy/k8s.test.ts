/**
 * The plain manifests of deploy/k8s/ (the Helm chart's defaults for a release named coap-edge):
 * - every document validates against the Kubernetes schemas (kubernetes-models) and uses no
 *   field Kubernetes does not know (the models accept unknown fields, so the field names are
 *   checked against their type declarations);
 * - the essentials: UDP 5684 on the container and the LoadBalancer Service with
 *   externalTrafficPolicy Local, probes on the http port's paths, a non-root read-only
 *   container without capabilities, resources, Services and the PDB selecting the pods, a grace
 *   period longer than the configured drain, a ConfigMap that coap-edge loads;
 * - they agree with the chart's values.yaml (image, ports, probes, grace period, resources, ...);
 * - the chart's templates, actions taken out, use only Kubernetes field names as well.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { envName, loadConfig } from '../../src/config/load.js';
import { REPO_ROOT } from '../helpers/processes.js';

const K8S = join(REPO_ROOT, 'deploy', 'k8s');
const CHART = join(REPO_ROOT, 'helm', 'coap-edge');
const NODE_MODULES = join(REPO_ROOT, 'node_modules');

type Obj = { [key: string]: unknown };

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, what: string): Obj {
  assert.ok(isObject(v), `${what} is a mapping`);
  return v;
}

function list(v: unknown, what: string): Obj[] {
  assert.ok(Array.isArray(v), `${what} is a list`);
  return v.map((x, i) => obj(x, `${what}[${i}]`));
}

function at(v: unknown, ...path: string[]): unknown {
  let x = v;
  for (const seg of path) {
    if (!isObject(x)) return undefined;
    x = x[seg];
  }
  return x;
}

// --- Kubernetes models: schema validation and field names --------------------------------------

interface Kind {
  /** Validates with the model's JSON schema; throws on a violation. */
  readonly validate: (doc: Obj) => void;
  /** Type declaration of the kind, for field names. */
  readonly dts: string;
}

const km = (path: string): string => join(NODE_MODULES, 'kubernetes-models', `${path}.d.ts`);

/** The kinds coap-edge deploys, keyed by apiVersion and kind. */
const KINDS: Record<string, Kind> = {
  'v1/ConfigMap': {
    validate: (d) => new ConfigMap(d).validate(),
    dts: km('v1/ConfigMap'),
  },
  'v1/Namespace': {
    validate: (d) => new Namespace(d).validate(),
    dts: km('v1/Namespace'),
  },
  'v1/Service': {
    validate: (d) => new Service(d).validate(),
    dts: km('v1/Service'),
  },
  'v1/ServiceAccount': {
    validate: (d) => new ServiceAccount(d).validate(),
    dts: km('v1/ServiceAccount'),
  },
  'apps/v1/Deployment': {
    validate: (d) => new Deployment(d).validate(),
    dts: km('apps/v1/Deployment'),
  },
  'policy/v1/PodDisruptionBudget': {
    validate: (d) => new PodDisruptionBudget(d).validate(),
    dts: km('policy/v1/PodDisruptionBudget'),
  },
  'autoscaling/v2/HorizontalPodAutoscaler': {
    validate: (d) => new HorizontalPodAutoscaler(d).validate(),
    dts: km('autoscaling/v2/HorizontalPodAutoscaler'),
  },
  'networking.k8s.io/v1/NetworkPolicy': {
    validate: (d) => new NetworkPolicy(d).validate(),
    dts: km('networking.k8s.io/v1/NetworkPolicy'),
  },
};

function kindOf(doc: Obj): Kind | undefined {
  return KINDS[`${String(doc.apiVersion)}/${String(doc.kind)}`];
}

interface TypeDecl {
  /** Field name → type text (`Array<T>`, `Map<T>` for `{ [key: string]: T }`, a name, ...). */
  readonly fields: Map<string, string>;
  /** Imported type name → its declaration file. */
  readonly imports: Map<string, string>;
}

const declCache = new Map<string, TypeDecl | null>();

/** The fields of the interface a kubernetes-models declaration file exports (null: a type alias). */
function typeDecl(file: string): TypeDecl | null {
  const cached = declCache.get(file);
  if (cached !== undefined) return cached;
  assert.ok(existsSync(file), `type declaration ${file} exists`);
  const text = readFileSync(file, 'utf8');
  const imports = new Map<string, string>();
  for (const m of text.matchAll(/import \{ (\w+) \} from "([^"]+)";/g)) {
    const spec = m[2] ?? '';
    const target = spec.startsWith('.')
      ? join(dirname(file), `${spec}.d.ts`)
      : join(NODE_MODULES, `${spec}.d.ts`);
    imports.set(m[1] ?? '', target);
  }
  const body = /export interface \w+(?: extends [^{]+)? \{\n([\s\S]*?)\n\}/.exec(text)?.[1];
  let decl: TypeDecl | null = null;
  if (body !== undefined) {
    const fields = new Map<string, string>();
    const lines = body.split('\n');
    lines.forEach((line, i) => {
      const m = /^ {4}"([^"]+)"\??: (.*?);?$/.exec(line);
      if (m === null) return;
      let type = m[2] ?? '';
      if (type === '{')
        type = `Map<${/\[key: string\]: (.+);/.exec(lines[i + 1] ?? '')?.[1] ?? 'unknown'}>`;
      fields.set(m[1] ?? '', type);
    });
    decl = { fields, imports };
  }
  declCache.set(file, decl);
  return decl;
}

/** Paths of fields in `value` that the declared type (file) does not have. */
function unknownFields(value: unknown, file: string, path: string): string[] {
  const decl = typeDecl(file);
  if (decl === null || !isObject(value)) return [];
  const out: string[] = [];
  for (const [key, v] of Object.entries(value)) {
    const type = decl.fields.get(key);
    if (type === undefined) out.push(`${path}.${key}`);
    else out.push(...unknownIn(v, type, decl, `${path}.${key}`));
  }
  return out;
}

function unknownIn(value: unknown, type: string, decl: TypeDecl, path: string): string[] {
  const array = /^Array<(.+)>$/.exec(type);
  if (array !== null) {
    return Array.isArray(value)
      ? value.flatMap((v, i) => unknownIn(v, array[1] ?? '', decl, `${path}[${i}]`))
      : [];
  }
  const map = /^Map<(.+)>$/.exec(type);
  if (map !== null) {
    return isObject(value)
      ? Object.entries(value).flatMap(([k, v]) => unknownIn(v, map[1] ?? '', decl, `${path}.${k}`))
      : [];
  }
  const file = decl.imports.get(type);
  return file !== undefined ? unknownFields(value, file, path) : [];
}

// --- the manifests and the chart's defaults ----------------------------------------------------

const manifestFiles = readdirSync(K8S)
  .filter((f) => f.endsWith('.yaml'))
  .sort();

const docs: { file: string; doc: Obj }[] = manifestFiles.flatMap((file) =>
  parseAllDocuments(readFileSync(join(K8S, file), 'utf8')).flatMap((d) => {
    assert.deepEqual(d.errors, [], `${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    const js = d.toJS() as unknown;
    return js === null ? [] : [{ file, doc: obj(js, file) }];
  }),
);

function only(kind: string, name?: string): Obj {
  const found = docs.filter(
    (d) => d.doc.kind === kind && (name === undefined || at(d.doc, 'metadata', 'name') === name),
  );
  assert.equal(found.length, 1, `one ${kind}${name !== undefined ? ` ${name}` : ''}`);
  return found[0]!.doc;
}

const values = obj(parseYaml(readFileSync(join(CHART, 'values.yaml'), 'utf8')), 'values.yaml');
const chart = obj(parseYaml(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')), 'Chart.yaml');

const deployment = only('Deployment');
const podSpec = obj(at(deployment, 'spec', 'template', 'spec'), 'pod spec');
const podLabels = obj(at(deployment, 'spec', 'template', 'metadata', 'labels'), 'pod labels');
const containers = list(podSpec.containers, 'containers');
const container = containers[0]!;
const ports = list(container.ports, 'container ports');
const env = list(container.env, 'env');
const configMap = only('ConfigMap');
const dtlsService = only('Service', 'coap-edge');
const metricsService = only('Service', 'coap-edge-metrics');
const configText = at(configMap, 'data', 'config.yaml');

function containerPort(name: string): Obj {
  const p = ports.find((x) => x.name === name);
  return obj(p, `container port ${name}`);
}

function envValue(name: string): string | undefined {
  const e = env.find((x) => x.name === name);
  return typeof e?.value === 'string' ? e.value : undefined;
}

/** Whether every label of `selector` is on the pods. */
function selects(selector: unknown): boolean {
  const s = obj(selector, 'selector');
  return Object.keys(s).length > 0 && Object.entries(s).every(([k, v]) => podLabels[k] === v);
}

/** The chart's `coap-edge.maxOldSpaceSize` helper: heapPercent of the memory limit, in MiB. */
function heapMiB(memory: unknown, percent: number): number | undefined {
  const m = /^([0-9]+)(Gi|Mi|G|M)?$/.exec(String(memory));
  if (m === null) return undefined;
  const n = Number(m[1]);
  const mib =
    m[2] === 'Gi'
      ? n * 1024
      : m[2] === 'Mi'
        ? n
        : m[2] === 'G'
          ? Math.floor((n * 1e9) / 1048576)
          : m[2] === 'M'
            ? Math.floor((n * 1e6) / 1048576)
            : Math.floor(n / 1048576);
  return mib > 0 ? Math.floor((mib * percent) / 100) : undefined;
}

function loadManifestConfig(): ReturnType<typeof loadConfig> {
  assert.equal(typeof configText, 'string', 'the ConfigMap has config.yaml');
  const dir = mkdtempSync(join(tmpdir(), 'coap-edge-k8s-'));
  try {
    const file = join(dir, 'config.yaml');
    writeFileSync(file, configText as string);
    // the Deployment's literal environment applies over the file, as in the pod
    const literal: Record<string, string> = {};
    for (const e of env) if (typeof e.value === 'string') literal[String(e.name)] = e.value;
    return loadConfig({ file, env: literal });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ================================================================================================

describe('deploy/k8s: Kubernetes schemas', () => {
  it('holds the kinds of the chart with its defaults (and the optional Namespace)', () => {
    assert.deepEqual(
      docs.map((d) => `${String(d.doc.kind)}/${String(at(d.doc, 'metadata', 'name'))}`).sort(),
      [
        'ConfigMap/coap-edge',
        'Deployment/coap-edge',
        'Namespace/coap-edge',
        'PodDisruptionBudget/coap-edge',
        'Service/coap-edge',
        'Service/coap-edge-metrics',
        'ServiceAccount/coap-edge',
      ],
    );
    assert.ok(existsSync(join(K8S, 'README.md')));
    assert.match(
      readFileSync(join(K8S, 'README.md'), 'utf8'),
      /mirror the defaults of the Helm chart/,
    );
  });

  for (const { file, doc } of docs) {
    const name = `${file}: ${String(doc.kind)} ${String(at(doc, 'metadata', 'name'))}`;
    it(`${name} validates against the Kubernetes schema`, () => {
      const kind = kindOf(doc);
      assert.ok(kind !== undefined, `known kind ${String(doc.apiVersion)}/${String(doc.kind)}`);
      assert.doesNotThrow(() => kind.validate(doc));
      assert.equal(at(doc, 'metadata', 'namespace'), undefined, 'namespace from kubectl -n');
    });
    it(`${name} uses only fields Kubernetes knows`, () => {
      const kind = kindOf(doc);
      assert.ok(kind !== undefined);
      assert.deepEqual(unknownFields(doc, kind.dts, String(doc.kind)), []);
    });
  }

  it('the field-name check finds a misspelt field deep in a pod spec (self-test)', () => {
    const bad = structuredClone(deployment);
    const c = list(at(bad, 'spec', 'template', 'spec', 'containers'), 'containers')[0]!;
    c.readinessProbe = { httpGet: { path: '/readyz', port: 'http', shceme: 'HTTP' } };
    obj(at(bad, 'spec', 'template', 'spec'), 'spec').terminationGracePeriodSecond = 30;
    assert.deepEqual(unknownFields(bad, KINDS['apps/v1/Deployment']!.dts, 'Deployment').sort(), [
      'Deployment.spec.template.spec.containers[0].readinessProbe.httpGet.shceme',
      'Deployment.spec.template.spec.terminationGracePeriodSecond',
    ]);
    assert.throws(() =>
      KINDS['apps/v1/Deployment']!.validate({
        ...deployment,
        spec: { ...obj(deployment.spec, 'spec'), replicas: 'two' },
      }),
    );
  });
});

describe('deploy/k8s: essentials', () => {
  it('the container listens on UDP 5684 (dtls) and TCP http, the ports coap-edge is told', () => {
    assert.deepEqual(containerPort('dtls'), { name: 'dtls', containerPort: 5684, protocol: 'UDP' });
    assert.equal(containerPort('http').protocol, 'TCP');
    assert.equal(envValue(envName('dtlsPort')), String(containerPort('dtls').containerPort));
    assert.equal(envValue(envName('httpPort')), String(containerPort('http').containerPort));
    const config = loadManifestConfig();
    assert.equal(config.dtlsPort, containerPort('dtls').containerPort);
    assert.equal(config.httpPort, containerPort('http').containerPort);
  });

  it('the LoadBalancer Service sends UDP 5684 to the dtls port with externalTrafficPolicy Local', () => {
    const spec = obj(dtlsService.spec, 'service spec');
    assert.equal(spec.type, 'LoadBalancer');
    assert.equal(spec.externalTrafficPolicy, 'Local');
    const [port, ...rest] = list(spec.ports, 'service ports');
    assert.deepEqual(rest, []);
    assert.equal(port!.port, 5684);
    assert.equal(port!.protocol, 'UDP');
    assert.equal(port!.targetPort, 'dtls');
    assert.equal(containerPort('dtls').protocol, 'UDP');
    assert.match(
      readFileSync(join(K8S, 'service.yaml'), 'utf8'),
      /# DTLS keys each association by the device's source address/,
    );
  });

  it('the metrics Service is a ClusterIP Service for the http port', () => {
    const spec = obj(metricsService.spec, 'metrics service spec');
    assert.equal(spec.type, 'ClusterIP');
    const [port] = list(spec.ports, 'metrics ports');
    assert.equal(port!.targetPort, 'http');
    assert.equal(port!.protocol, 'TCP');
  });

  it('the Services, the Deployment selector, the PDB and the anti-affinity select the pods', () => {
    assert.ok(selects(at(dtlsService, 'spec', 'selector')), 'DTLS Service');
    assert.ok(selects(at(metricsService, 'spec', 'selector')), 'metrics Service');
    assert.ok(selects(at(deployment, 'spec', 'selector', 'matchLabels')), 'Deployment');
    assert.ok(selects(at(only('PodDisruptionBudget'), 'spec', 'selector', 'matchLabels')), 'PDB');
    const term = obj(
      list(
        at(
          podSpec,
          'affinity',
          'podAntiAffinity',
          'preferredDuringSchedulingIgnoredDuringExecution',
        ),
        'anti-affinity',
      )[0],
      'term',
    );
    assert.ok(
      selects(at(term, 'podAffinityTerm', 'labelSelector', 'matchLabels')),
      'anti-affinity',
    );
    assert.deepEqual(at(deployment, 'spec', 'selector', 'matchLabels'), {
      'app.kubernetes.io/name': 'coap-edge',
      'app.kubernetes.io/instance': 'coap-edge',
    });
  });

  it('liveness, readiness and startup probes ask the http port for /healthz and /readyz', () => {
    const httpPort = containerPort('http');
    for (const [probe, path] of [
      ['livenessProbe', '/healthz'],
      ['readinessProbe', '/readyz'],
      ['startupProbe', '/healthz'],
    ] as const) {
      const get = obj(at(container, probe, 'httpGet'), probe);
      assert.equal(get.path, path, probe);
      assert.ok(
        get.port === 'http' || get.port === httpPort.containerPort,
        `${probe} on the http port`,
      );
    }
  });

  it('runs non-root, read-only, without privilege escalation or capabilities, seccomp RuntimeDefault', () => {
    const pod = obj(podSpec.securityContext, 'pod securityContext');
    const c = obj(container.securityContext, 'container securityContext');
    assert.equal(pod.runAsNonRoot, true);
    assert.equal(c.runAsNonRoot, true);
    assert.equal(c.runAsUser, 1000);
    assert.equal(c.readOnlyRootFilesystem, true);
    assert.equal(c.allowPrivilegeEscalation, false);
    assert.deepEqual(at(c, 'capabilities', 'drop'), ['ALL']);
    assert.equal(
      at(c, 'seccompProfile', 'type') ?? at(pod, 'seccompProfile', 'type'),
      'RuntimeDefault',
    );
    assert.equal(podSpec.automountServiceAccountToken, false);
    assert.equal(podSpec.serviceAccountName, at(only('ServiceAccount'), 'metadata', 'name'));
    // writable /tmp on a read-only root filesystem
    const tmp = list(container.volumeMounts, 'volumeMounts').find((m) => m.mountPath === '/tmp');
    const volume = list(podSpec.volumes, 'volumes').find((v) => v.name === tmp?.name);
    assert.ok(isObject(volume?.emptyDir), '/tmp is an emptyDir');
  });

  it('sets CPU and memory requests and limits', () => {
    for (const kind of ['requests', 'limits']) {
      for (const r of ['cpu', 'memory']) {
        assert.ok(at(container, 'resources', kind, r) !== undefined, `${kind}.${r}`);
      }
    }
  });

  it('gives the downward API names to the telemetry (POD_NAME, POD_NAMESPACE, NODE_NAME)', () => {
    for (const [name, field] of [
      ['POD_NAME', 'metadata.name'],
      ['POD_NAMESPACE', 'metadata.namespace'],
      ['NODE_NAME', 'spec.nodeName'],
    ] as const) {
      const e = env.find((x) => x.name === name);
      assert.equal(at(e, 'valueFrom', 'fieldRef', 'fieldPath'), field, name);
    }
  });

  it('keeps credentials out of literal values', () => {
    for (const key of ['registryToken', 'mqttPassword', 'redisUrl'] as const) {
      assert.equal(envValue(envName(key)), undefined, envName(key));
    }
    assert.doesNotMatch(String(configText), /registryToken|mqttPassword|redisUrl/);
  });

  it('reads config.yaml from the ConfigMap, and coap-edge loads it', () => {
    assert.deepEqual(container.args, ['serve', '--config', '/etc/coap-edge/config.yaml']);
    const mount = list(container.volumeMounts, 'volumeMounts').find(
      (m) => m.mountPath === '/etc/coap-edge',
    );
    const volume = list(podSpec.volumes, 'volumes').find((v) => v.name === mount?.name);
    assert.equal(at(volume, 'configMap', 'name'), at(configMap, 'metadata', 'name'));
    assert.doesNotThrow(() => loadManifestConfig());
  });

  it('has a grace period longer than the drain timeout of its config', () => {
    const config = loadManifestConfig();
    const grace = podSpec.terminationGracePeriodSeconds;
    assert.equal(typeof grace, 'number');
    assert.ok(
      (grace as number) > config.drainTimeoutSeconds,
      `${String(grace)} > ${config.drainTimeoutSeconds}`,
    );
  });
});

describe('deploy/k8s agrees with the chart defaults (values.yaml)', () => {
  it('image, pull policy and replicas', () => {
    const tag = at(values, 'image', 'tag') || chart.appVersion;
    assert.equal(container.image, `${String(at(values, 'image', 'repository'))}:${String(tag)}`);
    assert.equal(container.imagePullPolicy, at(values, 'image', 'pullPolicy'));
    assert.equal(at(deployment, 'spec', 'replicas'), values.replicaCount);
    assert.deepEqual(at(deployment, 'spec', 'strategy'), values.strategy);
    assert.equal(podLabels['app.kubernetes.io/version'], chart.appVersion);
  });

  it('ports', () => {
    assert.equal(containerPort('dtls').containerPort, at(values, 'containerPorts', 'dtls'));
    assert.equal(containerPort('http').containerPort, at(values, 'containerPorts', 'http'));
    const spec = obj(dtlsService.spec, 'service spec');
    assert.equal(spec.type, at(values, 'service', 'type'));
    assert.equal(spec.externalTrafficPolicy, at(values, 'service', 'externalTrafficPolicy'));
    assert.equal(spec.sessionAffinity, at(values, 'service', 'sessionAffinity'));
    assert.equal(list(spec.ports, 'ports')[0]!.port, at(values, 'service', 'port'));
    assert.equal(list(spec.ports, 'ports')[0]!.protocol, at(values, 'service', 'protocol'));
    assert.equal(
      list(at(metricsService, 'spec', 'ports'), 'ports')[0]!.port,
      at(values, 'metrics', 'service', 'port'),
    );
  });

  it('probes', () => {
    const pick = (p: unknown, keys: readonly string[]): Obj =>
      Object.fromEntries(keys.filter((k) => at(p, k) !== undefined).map((k) => [k, at(p, k)]));
    for (const [probe, key] of [
      ['livenessProbe', 'liveness'],
      ['readinessProbe', 'readiness'],
      ['startupProbe', 'startup'],
    ] as const) {
      const v = obj(at(values, 'probes', key), key);
      assert.equal(at(container, probe, 'httpGet', 'path'), v.path, `${key}.path`);
      const timing = ['periodSeconds', 'timeoutSeconds', 'failureThreshold', 'successThreshold'];
      assert.deepEqual(pick(container[probe], timing), pick(v, timing), `${key} timing`);
    }
    assert.equal(at(values, 'probes', 'startup', 'enabled'), true);
  });

  it('grace period, drain timeout and the config', () => {
    assert.equal(podSpec.terminationGracePeriodSeconds, values.terminationGracePeriodSeconds);
    assert.equal(values.preStopSleepSeconds, 0);
    assert.equal(container.lifecycle, undefined, 'no preStop sleep');
    assert.deepEqual(parseYaml(String(configText)), values.config);
  });

  it('resources, NODE_OPTIONS and security contexts', () => {
    assert.deepEqual(container.resources, values.resources);
    const heap = heapMiB(
      at(values, 'resources', 'limits', 'memory'),
      Number(at(values, 'nodeOptions', 'heapPercent')),
    );
    assert.equal(at(values, 'nodeOptions', 'heapFromMemoryLimit'), true);
    assert.equal(heap, 384);
    assert.equal(envValue('NODE_OPTIONS'), `--max-old-space-size=${heap}`);
    assert.deepEqual(podSpec.securityContext, values.podSecurityContext);
    assert.deepEqual(container.securityContext, values.securityContext);
    const tmpVolume = list(podSpec.volumes, 'volumes').find((v) => v.name === 'tmp');
    assert.deepEqual(at(tmpVolume, 'emptyDir'), {
      sizeLimit: at(values, 'tmpVolume', 'sizeLimit'),
    });
  });

  it('placement, ServiceAccount and PodDisruptionBudget', () => {
    assert.equal(at(values, 'podAntiAffinity', 'type'), 'soft');
    const term = obj(
      list(
        at(
          podSpec,
          'affinity',
          'podAntiAffinity',
          'preferredDuringSchedulingIgnoredDuringExecution',
        ),
        'anti-affinity',
      )[0],
      'term',
    );
    assert.equal(term.weight, at(values, 'podAntiAffinity', 'weight'));
    assert.equal(
      at(term, 'podAffinityTerm', 'topologyKey'),
      at(values, 'podAntiAffinity', 'topologyKey'),
    );
    assert.equal(at(values, 'topologySpread', 'enabled'), false);
    assert.equal(podSpec.topologySpreadConstraints, undefined);
    assert.equal(
      podSpec.automountServiceAccountToken,
      at(values, 'serviceAccount', 'automountServiceAccountToken'),
    );
    assert.equal(at(only('ServiceAccount'), 'automountServiceAccountToken'), false);
    assert.equal(at(values, 'podDisruptionBudget', 'enabled'), true);
    assert.equal(
      at(only('PodDisruptionBudget'), 'spec', 'maxUnavailable'),
      at(values, 'podDisruptionBudget', 'maxUnavailable'),
    );
  });

  it('leaves out what the chart leaves out by default', () => {
    for (const key of ['autoscaling', 'networkPolicy'] as const) {
      assert.equal(at(values, key, 'enabled'), false, key);
    }
    assert.equal(at(values, 'secrets', 'existingSecret'), '');
    assert.equal(
      env.some((e) => isObject(at(e, 'valueFrom', 'secretKeyRef'))),
      false,
    );
  });
});

// --- the chart's templates, with their actions taken out ------------------------------------

const ACTION = /\{\{-?([\s\S]*?)-?\}\}/g;

/** Same as in helm.test.ts: lines of actions only go, inline actions become a placeholder. */
function skeleton(text: string): string {
  return text
    .replace(/\{\{-?\s*\/\*[\s\S]*?\*\/\s*-?\}\}/g, '')
    .split('\n')
    .flatMap((line) => {
      if (!line.includes('{{')) return [line];
      if (line.replace(ACTION, '').trim() === '') return [];
      return [line.replace(ACTION, 'TPL')];
    })
    .join('\n');
}

describe('chart templates use only Kubernetes field names', () => {
  const dir = join(CHART, 'templates');
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()) {
    it(file, (t) => {
      const parsed = parseAllDocuments(skeleton(readFileSync(join(dir, file), 'utf8')), {
        uniqueKeys: false,
      });
      assert.ok(Array.isArray(parsed));
      for (const d of parsed) {
        const doc = d.toJS() as unknown;
        if (!isObject(doc)) continue;
        const kind = kindOf(doc);
        if (kind === undefined) {
          // Prometheus Operator resources: no schema here
          assert.equal(doc.apiVersion, 'monitoring.coreos.com/v1');
          t.diagnostic(`${String(doc.kind)}: custom resource, field names not checked`);
          continue;
        }
        assert.deepEqual(unknownFields(doc, kind.dts, String(doc.kind)), []);
      }
    });
  }
});
