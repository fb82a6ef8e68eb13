/**
 * The plain manifests of deploy/k8s/ (the Helm chart's defaults for a release named coap-edge):
 * - they are what Helm renders from the chart with its defaults (`helm template`), less Helm's
 *   own labels and the config checksum;
 * - every document validates against the Kubernetes schemas (kubernetes-models) and uses no
 *   field Kubernetes does not know (checked by the TypeScript compiler against the models'
 *   interfaces: test/deploy/kubernetes.ts);
 * - the essentials: UDP 5684 on the container and the LoadBalancer Service with
 *   externalTrafficPolicy Local, probes on the http port's paths, a non-root read-only
 *   container without capabilities, resources, Services and the PDB selecting the pods, a grace
 *   period longer than the configured drain, a ConfigMap that coap-edge loads;
 * - they agree with the chart's values.yaml (image, ports, probes, grace period, resources, ...).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { envName, loadConfig } from '../../src/config/load.js';
import { helmWithValues, renderedManifests } from '../helpers/helm.js';
import { REPO_ROOT } from '../helpers/processes.js';
import { unknownFields, validateManifest } from './kubernetes.js';

const K8S = join(REPO_ROOT, 'deploy', 'k8s');
const CHART = join(REPO_ROOT, 'helm', 'coap-edge');

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
      assert.doesNotThrow(() => validateManifest(doc));
      assert.equal(at(doc, 'metadata', 'namespace'), undefined, 'namespace from kubectl -n');
    });
  }

  it('uses only fields Kubernetes knows (TypeScript against the kubernetes-models interfaces)', () => {
    const named = docs.map(({ file, doc }) => ({ name: `${file}: ${String(doc.kind)}`, doc }));
    assert.deepEqual(unknownFields(named), []);
  });

  it('the field-name check finds a misspelt field deep in a pod spec (self-test)', () => {
    // TypeScript names the first unknown field of each manifest
    const probe = structuredClone(deployment);
    const c = list(at(probe, 'spec', 'template', 'spec', 'containers'), 'containers')[0]!;
    c.readinessProbe = { httpGet: { path: '/readyz', port: 'http', shceme: 'HTTP' } };
    const grace = structuredClone(deployment);
    obj(at(grace, 'spec', 'template', 'spec'), 'spec').terminationGracePeriodSecond = 30;
    const problems = unknownFields([
      { name: 'probe', doc: probe },
      { name: 'grace', doc: grace },
    ]);
    assert.equal(problems.length, 2, problems.join('\n'));
    assert.match(problems[0] ?? '', /^probe: "shceme": "HTTP": .*'"shceme"' does not exist/);
    assert.match(
      problems[1] ?? '',
      /^grace: "terminationGracePeriodSecond": 30: .*'"terminationGracePeriodSecond"' does not exist/,
    );
    assert.throws(() =>
      validateManifest({
        ...deployment,
        spec: { ...obj(deployment.spec, 'spec'), replicas: 'two' },
      }),
    );
  });

  it('are what helm template renders from the chart with its defaults (less Helm labels and the config checksum)', async () => {
    const r = await helmWithValues('template', CHART, []);
    assert.equal(r.code, 0, r.stderr);
    const normalise = (doc: Obj): Obj => {
      const d = structuredClone(doc);
      for (const meta of [at(d, 'metadata'), at(d, 'spec', 'template', 'metadata')]) {
        if (!isObject(meta)) continue;
        const labels = obj(meta.labels, 'labels');
        delete labels['helm.sh/chart'];
        delete labels['app.kubernetes.io/managed-by'];
        if (isObject(meta.annotations)) {
          delete meta.annotations['checksum/config'];
          if (Object.keys(meta.annotations).length === 0) delete meta.annotations;
        }
      }
      // the ConfigMap's config.yaml as data (deploy/k8s explains it with comments)
      const config = at(d, 'data', 'config.yaml');
      if (typeof config === 'string') obj(d.data, 'data')['config.yaml'] = parseYaml(config);
      return d;
    };
    const key = (d: Obj): string => `${String(d.kind)}/${String(at(d, 'metadata', 'name'))}`;
    const rendered = renderedManifests(r.stdout).map((m) => normalise(m.doc));
    const plain = docs.map((d) => normalise(d.doc)).filter((d) => d.kind !== 'Namespace');
    assert.deepEqual(plain.map(key).sort(), rendered.map(key).sort());
    for (const d of plain) {
      assert.deepEqual(
        d,
        rendered.find((x) => key(x) === key(d)),
        key(d),
      );
    }
    for (const d of docs) {
      if (d.doc.kind === 'Namespace') continue;
      assert.equal(at(d.doc, 'metadata', 'labels', 'app.kubernetes.io/managed-by'), 'kubectl');
    }
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
