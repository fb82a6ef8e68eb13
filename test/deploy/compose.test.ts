/**
 * deploy/docker-compose.yml and the files it mounts, checked without a Docker engine (none
 * runs on the development machine):
 *
 * - the file validates against the Compose Specification's JSON schema (the copy the dclint
 *   package ships, checked with ajv);
 * - the file: every service of the stack, pinned images, builds from deploy/Dockerfile, every
 *   host path it mounts exists, one network, health checks and `depends_on` conditions;
 * - the wiring: coap-edge's mounted config is a valid coap-edge config (loadConfig) whose URLs
 *   name the compose services on the ports they listen on; Prometheus scrapes coap-edge's HTTP
 *   port and loads helm/coap-edge/files/alerts.yml (promtool checks both); Grafana's
 *   provisioning points at Prometheus, Jaeger and the dashboard of helm/coap-edge/files/ (the one source of
 *   the dashboard and the alert rules, shared with the chart); the registry and
 *   device simulator commands are valid coap-edge commands;
 * - the registry stand-in (src/tools/registry-standin.ts) over HTTP, also through coap-edge's
 *   own registry client, and as the `coap-edge registry` command;
 * - the stack's own processes on this machine: the registry and device-sim commands of the
 *   compose file and `serve` with the compose config, its service names pointed at the local
 *   Redis, Mosquitto, the registry and an OTLP sink: the simulated devices get 2.xx answers.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, posix, relative, resolve } from 'node:path';
import { Ajv } from 'ajv';
import { Redis } from 'ioredis';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { DevicesFile } from '../../src/auth/devices-file.js';
import { RegistryClient } from '../../src/auth/registry-client.js';
import { SecretSourceError } from '../../src/auth/source.js';
import { AuthStats } from '../../src/auth/stats.js';
import { loadConfig, type Config } from '../../src/config/load.js';
import { startRegistryStandIn, type RegistryStandIn } from '../../src/tools/registry-standin.js';
import { CLI_FAIL } from '../../src/cli.js';
import { cliInProcess, describeResult } from '../helpers/cli-in-process.js';
import { REPO_ROOT, killAll, runCli, startCli } from '../helpers/processes.js';
import { HAVE_PROMTOOL } from '../telemetry/prom.js';
import { cleanPath, copiedFiles, parseDockerfile, workdirAt } from './dockerfile.js';

const DEPLOY = join(REPO_ROOT, 'deploy');
const COMPOSE_FILE = join(DEPLOY, 'docker-compose.yml');
const DEVICES = join(REPO_ROOT, 'deploy', 'examples', 'devices.json');

type Mapping = Record<string, unknown>;
interface Service {
  readonly image?: string;
  readonly build?: string | { readonly context?: string; readonly dockerfile?: string };
  readonly command?: string | readonly string[];
  readonly ports?: readonly (string | Mapping)[];
  readonly volumes?: readonly (string | Mapping)[];
  readonly environment?: Record<string, string | number | boolean | null> | readonly string[];
  readonly healthcheck?: { readonly test?: string | readonly string[]; readonly disable?: boolean };
  readonly depends_on?: readonly string[] | Record<string, { readonly condition?: string }>;
  readonly networks?: readonly string[] | Record<string, unknown>;
  readonly stop_grace_period?: string;
  readonly read_only?: boolean;
}
interface ComposeFile {
  readonly services: Record<string, Service>;
  readonly networks?: Record<string, unknown>;
  readonly volumes?: Record<string, unknown>;
}

const compose = parseYaml(readFileSync(COMPOSE_FILE, 'utf8'), { merge: true }) as ComposeFile;

/**
 * The Compose Specification's schema (compose-spec/compose-spec, schema/compose-spec.json), as
 * the dclint package (MIT) ships it; compiled as dclint does (union types, non-strict: the
 * schema uses keywords ajv's strict mode refuses). Its `$schema` names draft-07 by an https URL
 * ajv does not know: draft-07 is ajv's default.
 */
function composeSchemaValidator(): (doc: unknown) => string[] {
  const file = join(REPO_ROOT, 'node_modules', 'dclint', 'schemas', 'compose.schema.json');
  const schema = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  delete schema.$schema;
  const validate = new Ajv({ allErrors: true, strict: false, allowUnionTypes: true }).compile(
    schema,
  );
  return (doc) =>
    validate(doc)
      ? []
      : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? e.keyword}`);
}

function svc(name: string): Service {
  const s = compose.services[name];
  assert.ok(s !== undefined, `service ${name} exists`);
  return s;
}
const argv = (s: Service): string[] => {
  assert.ok(Array.isArray(s.command), 'command is a list (exec form)');
  return [...(s.command as readonly string[])];
};
/** The value following `flag` in a command. */
function flagValue(args: readonly string[], flag: string): string {
  const i = args.indexOf(flag);
  assert.ok(i >= 0 && i + 1 < args.length, `${flag} is given in ${args.join(' ')}`);
  return args[i + 1] ?? '';
}
function env(s: Service): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(s.environment)) {
    for (const e of s.environment as readonly string[]) {
      const eq = e.indexOf('=');
      out[eq < 0 ? e : e.slice(0, eq)] = eq < 0 ? '' : e.slice(eq + 1);
    }
  } else {
    for (const [k, v] of Object.entries(s.environment ?? {})) out[k] = v === null ? '' : String(v);
  }
  return out;
}

interface Mount {
  readonly source: string;
  readonly target: string;
  readonly bind: boolean;
  readonly readOnly: boolean;
}
function mounts(s: Service): Mount[] {
  return (s.volumes ?? []).map((v) => {
    if (typeof v === 'string') {
      const [source = '', target = '', mode = ''] = v.split(':');
      const bind = source.startsWith('.') || source.startsWith('/');
      return {
        source: bind ? resolve(DEPLOY, source) : source,
        target,
        bind,
        readOnly: mode.split(',').includes('ro'),
      };
    }
    const source = typeof v.source === 'string' ? v.source : '';
    return {
      source: v.type === 'bind' ? resolve(DEPLOY, source) : source,
      target: typeof v.target === 'string' ? v.target : '',
      bind: v.type === 'bind',
      readOnly: v.read_only === true,
    };
  });
}
/** The host path behind a container path of a service (through its bind mounts). */
function hostPath(s: Service, containerPath: string): string {
  for (const m of mounts(s)) {
    if (!m.bind) continue;
    const rel = posix.relative(m.target, containerPath);
    if (rel === '' || (!rel.startsWith('..') && !posix.isAbsolute(rel))) {
      return join(m.source, ...rel.split('/').filter((x) => x !== ''));
    }
  }
  assert.fail(`${containerPath} is not mounted from the host`);
}
function dependsOn(s: Service): Record<string, string> {
  if (s.depends_on === undefined) return {};
  if (Array.isArray(s.depends_on)) {
    return Object.fromEntries(
      (s.depends_on as readonly string[]).map((d) => [d, 'service_started']),
    );
  }
  return Object.fromEntries(
    Object.entries(s.depends_on as Record<string, { condition?: string }>).map(([k, v]) => [
      k,
      v.condition ?? 'service_started',
    ]),
  );
}
function seconds(d: string): number {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(h|ms|m|s|us)/g;
  let m: RegExpExecArray | null;
  let consumed = '';
  while ((m = re.exec(d)) !== null) {
    consumed += m[0];
    const n = Number(m[1]);
    total +=
      { h: 3600, m: 60, s: 1, ms: 0.001, us: 0.000001 }[m[2] as 'h' | 'm' | 's' | 'ms' | 'us'] * n;
  }
  assert.equal(consumed, d, `${d} is a compose duration`);
  return total;
}
const healthTest = (s: Service): string[] => {
  const t = s.healthcheck?.test;
  assert.ok(Array.isArray(t), 'healthcheck test in exec form');
  return [...(t as readonly string[])];
};

/** The coap-edge config file of the compose stack, on the host. */
function composeConfigPath(): string {
  const args = argv(svc('coap-edge'));
  assert.equal(args[0], 'serve');
  return hostPath(svc('coap-edge'), flagValue(args, '--config'));
}
let configCache: Config | undefined;
function composeConfig(): Config {
  configCache ??= loadConfig({ file: composeConfigPath() });
  return configCache;
}

const STACK = [
  'coap-edge',
  'redis',
  'mosquitto',
  'jaeger',
  'prometheus',
  'grafana',
  'registry',
  'device-sim',
];

const composeFileSuite = (): Promise<void> =>
  describe('deploy/docker-compose.yml', { concurrency: 1 }, () => {
    it('validates against the Compose Specification schema', () => {
      assert.deepEqual(composeSchemaValidator()(compose), []);
    });

    it('the schema check finds a misspelt key and a bad depends_on condition (self-test)', () => {
      const bad = structuredClone(compose) as unknown as {
        services: Record<string, Record<string, unknown>>;
      };
      const edge = bad.services['coap-edge']!;
      edge.healthcheck = { ...(edge.healthcheck as object), intervall: '5s' };
      edge.depends_on = { redis: { condition: 'healthy' } };
      const problems = composeSchemaValidator()(bad);
      assert.ok(
        problems.includes('/services/coap-edge/healthcheck must NOT have additional properties'),
        problems.join('\n'),
      );
      assert.ok(
        problems.includes(
          '/services/coap-edge/depends_on/redis/condition must be equal to one of the allowed values',
        ),
        problems.join('\n'),
      );
    });

    it('has every service of the stack, each image pinned by a tag', () => {
      assert.deepEqual(Object.keys(compose.services).sort(), [...STACK].sort());
      const images: Record<string, RegExp> = {
        redis: /^redis:\d[\w.-]*$/,
        mosquitto: /^eclipse-mosquitto:2([\w.-]*)$/,
        jaeger: /^jaegertracing\/all-in-one:\d[\w.-]*$/,
        prometheus: /^prom\/prometheus:v\d[\w.-]*$/,
        grafana: /^grafana\/grafana:\d[\w.-]*$/,
      };
      for (const [name, re] of Object.entries(images)) {
        assert.match(svc(name).image ?? '', re, `${name} image`);
        assert.equal(svc(name).build, undefined);
      }
    });

    it('builds coap-edge, the registry stand-in and the device simulator from deploy/Dockerfile with the repository as context', () => {
      for (const name of ['coap-edge', 'registry', 'device-sim']) {
        const b = svc(name).build;
        assert.ok(typeof b === 'object', `${name} has a build section`);
        const context = resolve(DEPLOY, b.context ?? '.');
        assert.equal(context, REPO_ROOT, `${name}: context is the repository root`);
        const dockerfile = join(context, b.dockerfile ?? 'Dockerfile');
        assert.equal(relative(REPO_ROOT, dockerfile), join('deploy', 'Dockerfile'));
        assert.ok(existsSync(dockerfile));
        // only coap-edge names its image: the others never make compose pull a local tag
        if (name !== 'coap-edge') assert.equal(svc(name).image, undefined);
      }
    });

    it('mounts only host paths that exist, read-only; no named volumes', () => {
      for (const [name, s] of Object.entries(compose.services)) {
        for (const m of mounts(s)) {
          assert.ok(m.bind, `${name}: ${m.source} is a bind mount (no named volumes needed)`);
          assert.ok(existsSync(m.source), `${name}: ${relative(REPO_ROOT, m.source)} exists`);
          assert.ok(m.readOnly, `${name}: ${m.target} is mounted read-only`);
          assert.ok(
            posix.isAbsolute(m.target),
            `${name}: ${m.target} is an absolute container path`,
          );
        }
      }
      assert.equal(compose.volumes, undefined);
    });

    it('puts every service on one network', () => {
      const nets = Object.keys(compose.networks ?? {});
      assert.equal(nets.length, 1);
      for (const [name, s] of Object.entries(compose.services)) {
        const n = Array.isArray(s.networks) ? s.networks : Object.keys(s.networks ?? {});
        assert.deepEqual(n, nets, `${name} networks`);
      }
    });

    it('waits for healthy dependencies where it matters; every service_healthy target has a health check; no cycles', () => {
      const deps = Object.fromEntries(
        Object.keys(compose.services).map((n) => [n, dependsOn(svc(n))]),
      );
      assert.deepEqual(deps['coap-edge'], {
        redis: 'service_healthy',
        mosquitto: 'service_healthy',
        registry: 'service_healthy',
        jaeger: 'service_started',
      });
      assert.deepEqual(deps['device-sim'], { 'coap-edge': 'service_healthy' });
      for (const [name, d] of Object.entries(deps)) {
        for (const [target, condition] of Object.entries(d)) {
          assert.ok(target in compose.services, `${name} depends on ${target}, which exists`);
          assert.ok(
            ['service_started', 'service_healthy', 'service_completed_successfully'].includes(
              condition,
            ),
          );
          if (condition === 'service_healthy') {
            const hc = svc(target).healthcheck;
            assert.ok(hc !== undefined && hc.disable !== true, `${target} has a health check`);
            assert.equal(healthTest(svc(target))[0], 'CMD');
          }
        }
      }
      const visiting = new Set<string>();
      const visit = (n: string, path: string[]): void => {
        assert.ok(!visiting.has(n), `depends_on cycle: ${[...path, n].join(' → ')}`);
        visiting.add(n);
        for (const t of Object.keys(deps[n] ?? {})) visit(t, [...path, n]);
        visiting.delete(n);
      };
      for (const n of Object.keys(deps)) visit(n, []);
    });

    it('coap-edge: publishes 5684/udp and its HTTP port, and its mounted config is a valid coap-edge config', () => {
      assert.equal(
        relative(REPO_ROOT, composeConfigPath()),
        join('deploy', 'compose', 'coap-edge.yaml'),
      );
      const c = composeConfig(); // throws ConfigError naming the field if anything is invalid
      assert.equal(c.dtlsPort, 5684);
      assert.ok(c.httpPort !== undefined, 'httpPort is set (health checks and Prometheus need it)');
      const ports = svc('coap-edge').ports ?? [];
      assert.ok(ports.includes('5684:5684/udp'), `ports ${JSON.stringify(ports)}`);
      assert.ok(ports.includes(`${c.httpPort}:${c.httpPort}`));
      // the config names no files: nothing else needs mounting
      assert.equal(c.devices, undefined);
    });

    it('coap-edge: its health check asks /readyz on the HTTP port; it drains before compose kills it; read-only root', () => {
      const c = composeConfig();
      const t = healthTest(svc('coap-edge'));
      assert.deepEqual(t.slice(0, 3), ['CMD', 'node', '-e']);
      assert.match(t[3] ?? '', new RegExp(`http://127\\.0\\.0\\.1:${c.httpPort}/readyz`));
      const grace = seconds(svc('coap-edge').stop_grace_period ?? '10s');
      assert.ok(
        grace > c.drainTimeoutSeconds,
        `stop_grace_period ${grace}s > drainTimeoutSeconds ${c.drainTimeoutSeconds}s`,
      );
      assert.equal(svc('coap-edge').read_only, true);
    });

    it('coap-edge: reaches Redis, Mosquitto, the registry (with its token) and Jaeger by service name', () => {
      const c = composeConfig();
      const redis = new URL(c.redisUrl ?? '');
      assert.equal(redis.hostname, 'redis');
      assert.equal(redis.port || '6379', '6379');
      assert.ok(!argv(svc('redis')).includes('--port'), 'Redis on its default port');

      const mqtt = new URL(c.mqttUrl ?? '');
      assert.equal(mqtt.hostname, 'mosquitto');
      const listener = mosquittoConf().get('listener')?.[0]?.split(/\s+/)[0];
      assert.equal(mqtt.port || '1883', listener);

      const reg = new URL(c.registryUrl ?? '');
      const regArgs = argv(svc('registry'));
      assert.equal(reg.hostname, 'registry');
      assert.equal(reg.port, flagValue(regArgs, '--port'));
      assert.equal(
        c.registryToken,
        flagValue(regArgs, '--token'),
        'the token the registry requires',
      );

      const otlp = new URL(c.otlpEndpoint ?? '');
      assert.equal(otlp.hostname, 'jaeger');
      assert.equal(otlp.port, '4318', 'Jaeger OTLP/HTTP');
      assert.equal(otlp.pathname, '/v1/traces');
      assert.equal(env(svc('jaeger')).COLLECTOR_OTLP_ENABLED, 'true');
      assert.ok((svc('jaeger').ports ?? []).includes('16686:16686'), 'Jaeger UI published');

      assert.equal(c.demoPlatform, true, 'uplinks get replies: there is no platform in the stack');
      assert.ok(c.presenceTopic !== undefined, 'presence events on the broker');
    });

    it('mosquitto: listener 1883, anonymous, TCP_NODELAY, mounted where the image reads its config, published', () => {
      const conf = mosquittoConf();
      assert.deepEqual(conf.get('listener'), ['1883']);
      assert.deepEqual(conf.get('allow_anonymous'), ['true']);
      assert.deepEqual(conf.get('set_tcp_nodelay'), ['true']);
      assert.ok((svc('mosquitto').ports ?? []).includes('1883:1883'));
      const t = healthTest(svc('mosquitto'));
      assert.equal(t[1], 'mosquitto_pub');
    });

    it('prometheus: scrapes coap-edge by service name on its HTTP port and loads the chart files/alerts.yml', () => {
      const c = composeConfig();
      const { prom } = prometheusConfig();
      const job = prom.scrape_configs.find((j) =>
        j.static_configs?.some((s) => s.targets.includes(`coap-edge:${c.httpPort}`)),
      );
      assert.ok(job !== undefined, `a scrape job targets coap-edge:${c.httpPort}`);
      assert.equal(job.metrics_path ?? '/metrics', '/metrics');
      const rules = (prom.rule_files ?? []).map((r) => hostPath(svc('prometheus'), r));
      assert.deepEqual(
        rules.map((r) => relative(REPO_ROOT, r)),
        [join('helm', 'coap-edge', 'files', 'alerts.yml')],
      );
      for (const r of rules) assert.ok(existsSync(r), `${relative(REPO_ROOT, r)} exists`);
      assert.ok((svc('prometheus').ports ?? []).includes('9090:9090'));
    });

    it('prometheus: promtool accepts the config with its rule file', () => {
      assert.ok(HAVE_PROMTOOL, 'promtool (Debian package prometheus) is needed');
      const { prom } = prometheusConfig();
      const tmp = mkdtempSync(join(tmpdir(), 'coap-edge-prom-'));
      try {
        const local = {
          ...prom,
          rule_files: (prom.rule_files ?? []).map((r) => hostPath(svc('prometheus'), r)),
        };
        const file = join(tmp, 'prometheus.yml');
        writeFileSync(file, toYaml(local));
        const r = spawnSync('promtool', ['check', 'config', file], {
          encoding: 'utf8',
          timeout: 30_000,
        });
        assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    });

    it('grafana: provisions Prometheus and Jaeger by service name, and the dashboard of the chart files/', () => {
      const g = svc('grafana');
      assert.equal(
        relative(REPO_ROOT, hostPath(g, '/etc/grafana/provisioning')),
        join('deploy', 'grafana', 'provisioning'),
      );
      const dsFile = hostPath(g, '/etc/grafana/provisioning/datasources/prometheus.yml');
      const ds = parseYaml(readFileSync(dsFile, 'utf8')) as {
        apiVersion: number;
        datasources: {
          name: string;
          uid?: string;
          type: string;
          url: string;
          isDefault?: boolean;
        }[];
      };
      assert.equal(ds.apiVersion, 1);
      const prom = ds.datasources.find((d) => d.type === 'prometheus');
      assert.ok(prom !== undefined);
      assert.equal(prom.url, 'http://prometheus:9090');
      assert.equal(prom.isDefault, true);
      const jaeger = ds.datasources.find((d) => d.type === 'jaeger');
      assert.equal(jaeger?.url, 'http://jaeger:16686');

      const providerFile = hostPath(g, '/etc/grafana/provisioning/dashboards/provider.yml');
      const provider = parseYaml(readFileSync(providerFile, 'utf8')) as {
        apiVersion: number;
        providers: { type: string; options: { path: string } }[];
      };
      assert.equal(provider.apiVersion, 1);
      const dashDirs = provider.providers.map((p) => hostPath(g, p.options.path));
      assert.deepEqual(
        dashDirs.map((d) => relative(REPO_ROOT, d)),
        [join('helm', 'coap-edge', 'files')],
      );
      const dashboard = join(REPO_ROOT, 'helm', 'coap-edge', 'files', 'coap-edge-dashboard.json');
      assert.ok(existsSync(dashboard), 'helm/coap-edge/files/coap-edge-dashboard.json exists');
      const home = env(g).GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH;
      if (home !== undefined) assert.equal(hostPath(g, home), dashboard);
      assert.equal(env(g).GF_SECURITY_ADMIN_USER, 'admin');
      assert.ok((g.ports ?? []).includes('3000:3000'));

      // every dashboard found there names a data source Grafana will have
      const provisioned = {
        uids: new Set(ds.datasources.flatMap((d) => (d.uid !== undefined ? [d.uid] : []))),
        names: new Set(ds.datasources.map((d) => d.name)),
      };
      for (const dir of dashDirs) {
        for (const f of readdirSync(dir).filter((n) => n.endsWith('.json'))) {
          const text = readFileSync(join(dir, f), 'utf8');
          if (text.trim() === '') continue; // a placeholder until the dashboard is written
          assert.deepEqual(dashboardDatasourceProblems(JSON.parse(text), provisioned), [], f);
        }
      }
    });

    it('the dashboard check finds data sources Grafana would not have', () => {
      const provisioned = { uids: new Set(['prometheus']), names: new Set(['Prometheus']) };
      const panel = (datasource: unknown): unknown => ({ panels: [{ targets: [{ datasource }] }] });
      assert.deepEqual(
        dashboardDatasourceProblems(panel({ type: 'prometheus', uid: 'prometheus' }), provisioned),
        [],
      );
      assert.deepEqual(dashboardDatasourceProblems(panel('Prometheus'), provisioned), []);
      assert.deepEqual(
        dashboardDatasourceProblems(panel({ uid: '-- Grafana --' }), provisioned),
        [],
      );
      assert.deepEqual(dashboardDatasourceProblems(panel(null), provisioned), []);
      const withVar = {
        ...(panel({ uid: '${datasource}' }) as object),
        templating: { list: [{ name: 'datasource', type: 'datasource', query: 'prometheus' }] },
      };
      assert.deepEqual(dashboardDatasourceProblems(withVar, provisioned), []);
      assert.deepEqual(
        dashboardDatasourceProblems(panel({ uid: '${DS_PROMETHEUS}' }), provisioned),
        [
          'data source variable ${DS_PROMETHEUS} is not defined (an export for import, not provisioning)',
        ],
      );
      assert.deepEqual(dashboardDatasourceProblems(panel({ uid: 'abc123' }), provisioned), [
        'data source abc123 is not provisioned',
      ]);
    });

    it('registry and device-sim: valid coap-edge commands, flags and files included', async () => {
      const files = imageFiles();
      for (const name of ['registry', 'device-sim']) {
        const args = argv(svc(name));
        // in-process: the help the binary prints (test/cli/cli.test.ts runs the binary's own)
        const r = await cliInProcess([args[0] ?? '', '--help']);
        assert.equal(r.code, 0, `coap-edge ${args[0]} --help\n${describeResult(r)}`);
        for (const a of args.filter((x) => x.startsWith('--'))) {
          assert.match(
            r.stdout,
            new RegExp(`\\s${a}\\b`),
            `${name}: coap-edge ${args[0]} has ${a}`,
          );
        }
        const devices = flagValue(args, '--devices');
        assert.ok(files.has(inImage(devices)), `${name}: ${devices} is in the image`);
        DevicesFile.load(join(REPO_ROOT, devices)); // and valid
      }
      const sim = argv(svc('device-sim'));
      assert.equal(sim[0], 'bench');
      assert.equal(flagValue(sim, '--host'), 'coap-edge');
      assert.equal(Number(flagValue(sim, '--port')), composeConfig().dtlsPort);
      assert.equal(
        svc('device-sim').healthcheck?.disable,
        true,
        'the image health check is for serve',
      );
      assert.equal(argv(svc('registry'))[0], 'registry');
      const hc = healthTest(svc('registry'));
      assert.match(
        hc[3] ?? '',
        new RegExp(`127\\.0\\.0\\.1:${flagValue(argv(svc('registry')), '--port')}/healthz`),
      );
    });
  });

/** Directives of deploy/compose/mosquitto.conf (through the mosquitto service's mount). */
function mosquittoConf(): Map<string, string[]> {
  const file = hostPath(svc('mosquitto'), '/mosquitto/config/mosquitto.conf');
  const out = new Map<string, string[]>();
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [key = '', ...rest] = line.split(/\s+/);
    out.set(key, [...(out.get(key) ?? []), rest.join(' ')]);
  }
  return out;
}

interface PromConfig {
  rule_files?: string[];
  scrape_configs: {
    job_name: string;
    metrics_path?: string;
    static_configs?: { targets: string[] }[];
  }[];
}
function prometheusConfig(): { prom: PromConfig; file: string } {
  // the prom/prometheus image reads /etc/prometheus/prometheus.yml unless told otherwise
  const file = hostPath(svc('prometheus'), '/etc/prometheus/prometheus.yml');
  return { prom: parseYaml(readFileSync(file, 'utf8')) as PromConfig, file };
}

/** Every data source reference in a dashboard: `datasource.uid`, or a legacy name string. */
function datasourceRefs(node: unknown): string[] {
  if (Array.isArray(node)) return node.flatMap(datasourceRefs);
  if (typeof node !== 'object' || node === null) return [];
  const out: string[] = [];
  for (const [k, v] of Object.entries(node)) {
    if (k === 'datasource') {
      if (typeof v === 'string') out.push(v);
      else if (typeof v === 'object' && v !== null) {
        const uid = (v as { uid?: unknown }).uid;
        if (typeof uid === 'string') out.push(uid);
      }
    } else out.push(...datasourceRefs(v));
  }
  return out;
}

/**
 * What in a dashboard names a data source that the provisioned ones do not provide: a uid or
 * name Grafana will not have, or a `${var}` that is not a data source variable of the
 * dashboard (e.g. `${DS_PROMETHEUS}` of an export for import, which provisioning never fills).
 */
function dashboardDatasourceProblems(
  dashboard: unknown,
  provisioned: { uids: ReadonlySet<string>; names: ReadonlySet<string> },
): string[] {
  const list =
    (dashboard as { templating?: { list?: { name?: unknown; type?: unknown }[] } }).templating
      ?.list ?? [];
  const vars = new Set(list.filter((v) => v.type === 'datasource').map((v) => String(v.name)));
  const problems = new Set<string>();
  for (const ref of datasourceRefs(dashboard)) {
    const v = /^\$\{?([A-Za-z0-9_]+)(?::\w+)?\}?$/.exec(ref);
    if (v !== null) {
      if (!vars.has(v[1] ?? '')) {
        problems.add(
          `data source variable ${ref} is not defined (an export for import, not provisioning)`,
        );
      }
    } else if (
      ref !== '-- Grafana --' &&
      ref !== 'grafana' &&
      ref !== '-- Mixed --' &&
      ref !== '-- Dashboard --' &&
      !provisioned.uids.has(ref) &&
      !provisioned.names.has(ref)
    ) {
      problems.add(`data source ${ref} is not provisioned`);
    }
  }
  return [...problems];
}

/** Repository files copied from the build context into the runtime image, by image path. */
function imageFiles(): Map<string, string> {
  const df = parseDockerfile(readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8'));
  const final = df.stages[df.stages.length - 1];
  assert.ok(final !== undefined);
  const below = (p: string): string[] => {
    const abs = join(REPO_ROOT, p);
    if (!existsSync(abs)) return [];
    if (!statSync(abs).isDirectory()) return [p];
    return readdirSync(abs).flatMap((n) => below(posix.join(p, n)));
  };
  return copiedFiles(
    final,
    (ins, src) => (ins.flags.from === undefined ? cleanPath(src) : undefined),
    below,
  );
}

/** A path given to a command of the image, as the image sees it (relative to its WORKDIR). */
function inImage(path: string): string {
  const df = parseDockerfile(readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8'));
  const final = df.stages[df.stages.length - 1];
  assert.ok(final !== undefined);
  return posix.resolve(workdirAt(final), path);
}

// --- the registry stand-in -------------------------------------------------------------------

const TOKEN = 'test-token-0123';
const file = (): DevicesFile => DevicesFile.load(DEVICES);
const demo = JSON.parse(readFileSync(DEVICES, 'utf8')) as {
  products: { productKey: string; productSecret: string; dynamicRegistration?: boolean }[];
  devices: { productKey: string; deviceKey: string; deviceSecret: string; assetId?: string }[];
};

const standInSuite = (): Promise<void> =>
  describe('registry stand-in (src/tools/registry-standin.ts)', { concurrency: 1 }, () => {
    let reg: RegistryStandIn;
    const lines: string[] = [];
    let base = '';
    before(async () => {
      reg = await startRegistryStandIn({
        devices: file(),
        port: 0,
        bind: '127.0.0.1',
        token: TOKEN,
        maxActivations: 3,
        log: (l) => lines.push(l),
      });
      base = `http://127.0.0.1:${reg.port}`;
    });
    after(() => reg.close());

    const get = (
      path: string,
      init: RequestInit = {},
      token: string | null = TOKEN,
    ): Promise<Response> =>
      fetch(`${base}${path}`, {
        ...init,
        headers: token === null ? {} : { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(5_000),
      });
    const json = async (r: Response): Promise<unknown> => JSON.parse(await r.text()) as unknown;

    it('serves products and devices of the file; 404 for unknown ones', async () => {
      const p = demo.products[0]!;
      let r = await get(`/products/${p.productKey}`);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('content-type'), 'application/json');
      assert.deepEqual(await json(r), {
        productSecret: p.productSecret,
        dynamicRegistration: true,
      });
      const d = demo.devices[0]!;
      r = await get(`/devices/${d.productKey}/${d.deviceKey}`);
      assert.deepEqual(await json(r), { deviceSecret: d.deviceSecret, assetId: d.assetId });
      assert.equal((await get('/products/nope')).status, 404);
      assert.equal((await get(`/devices/${d.productKey}/nope`)).status, 404);
      assert.equal((await get('/devices/nope/nope')).status, 404);
    });

    it('requires the bearer token (401), except on /healthz', async () => {
      const p = `/products/${demo.products[0]!.productKey}`;
      const none = await get(p, {}, null);
      assert.equal(none.status, 401);
      assert.equal(none.headers.get('www-authenticate'), 'Bearer');
      assert.equal((await get(p, {}, 'wrong')).status, 401);
      assert.equal((await get(p, {}, `${TOKEN}x`)).status, 401);
      assert.equal((await get(p, {}, TOKEN.slice(0, -1))).status, 401);
      assert.equal((await get('/healthz', {}, null)).status, 200);
    });

    it('activates once: 200 with a new secret, then 409, then GET serves that secret', async () => {
      const pk = demo.products.find((p) => p.dynamicRegistration === true)!.productKey;
      const path = `/devices/${pk}/${encodeURIComponent('new:device')}`;
      const first = await get(`${path}/activate`, { method: 'POST' });
      assert.equal(first.status, 200);
      const made = (await json(first)) as { deviceSecret: string; assetId: string };
      assert.match(made.deviceSecret, /^[0-9A-Za-z]{32}$/);
      assert.match(made.assetId, /^[0-9A-Za-z]{16}$/);
      assert.equal((await get(`${path}/activate`, { method: 'POST' })).status, 409);
      const after = await get(path);
      assert.equal(after.status, 200);
      assert.deepEqual(await json(after), made);
      assert.equal(reg.activations(), 1);
    });

    it('answers 409 for a device of the file, 403 without dynamic registration, 404 for an unknown product', async () => {
      const d = demo.devices.find((x) => x.productKey === demo.products[0]!.productKey)!;
      assert.equal(
        (await get(`/devices/${d.productKey}/${d.deviceKey}/activate`, { method: 'POST' })).status,
        409,
      );
      const off = demo.products.find((p) => p.dynamicRegistration !== true)!;
      assert.equal(
        (await get(`/devices/${off.productKey}/x/activate`, { method: 'POST' })).status,
        403,
      );
      assert.equal((await get('/devices/nope/x/activate', { method: 'POST' })).status, 404);
    });

    it('answers 405 for a wrong method, 404 for other paths, 400 for a malformed path', async () => {
      const pk = demo.products[0]!.productKey;
      const r = await get(`/devices/${pk}/x/activate`);
      assert.equal(r.status, 405);
      assert.equal(r.headers.get('allow'), 'POST');
      assert.equal((await get(`/products/${pk}`, { method: 'POST' })).status, 405);
      assert.equal((await get('/')).status, 404);
      assert.equal((await get(`/products/${pk}/more`)).status, 404);
      assert.equal((await get('/devices//x')).status, 404);
      assert.equal((await get('/products/%E0')).status, 400);
    });

    it('refuses activations beyond its limit with 503', async () => {
      const pk = demo.products[0]!.productKey;
      const statuses: number[] = [];
      for (const dk of ['lim1', 'lim2', 'lim3']) {
        statuses.push((await get(`/devices/${pk}/${dk}/activate`, { method: 'POST' })).status);
      }
      // one activation from an earlier test: 3 allowed in all
      assert.deepEqual(statuses.sort(), [200, 200, 503]);
    });

    it("satisfies coap-edge's own registry client (docs/registry-api.md)", async () => {
      const client = new RegistryClient({
        url: base,
        token: TOKEN,
        timeoutMs: 2_000,
        stats: new AuthStats(),
      });
      try {
        const p = demo.products[0]!;
        assert.deepEqual(await client.product(p.productKey), {
          productKey: p.productKey,
          productSecret: p.productSecret,
          dynamicRegistration: true,
        });
        assert.equal(await client.product('unknown'), undefined);
        const d = demo.devices[1]!;
        const rec = await client.device(d.productKey, d.deviceKey);
        assert.equal(rec?.deviceSecret, d.deviceSecret);
        assert.equal(rec?.assetId, d.assetId);
        const other = new RegistryClient({
          url: base,
          token: undefined,
          timeoutMs: 2_000,
          stats: new AuthStats(),
          breakerThreshold: 0,
        });
        try {
          await assert.rejects(other.product(p.productKey), SecretSourceError);
        } finally {
          await other.close();
        }
        assert.deepEqual(await client.activate('nope', 'x'), { kind: 'unknown-product' });
        const off = demo.products.find((x) => x.dynamicRegistration !== true)!;
        assert.deepEqual(await client.activate(off.productKey, 'x'), {
          kind: 'dynamic-registration-disabled',
        });
        assert.deepEqual(await client.activate(d.productKey, d.deviceKey), {
          kind: 'already-activated',
        });
      } finally {
        await client.close();
      }
    });

    it('never logs a secret or the token', () => {
      assert.ok(lines.length > 10);
      const text = lines.join('\n');
      const secrets = [
        TOKEN,
        ...demo.products.map((p) => p.productSecret),
        ...demo.devices.map((d) => d.deviceSecret),
      ];
      for (const s of secrets) assert.ok(!text.includes(s), 'a secret in the log');
      assert.match(text, /^POST \/devices\/\S+\/activate 409$/m);
      assert.doesNotMatch(text, /healthz/);
    });
  });

const registryCommandSuite = (): Promise<void> =>
  describe('coap-edge registry (command)', { concurrency: 1 }, () => {
    it('serves the devices file on the given port with the token from the environment; SIGTERM exits 0', async () => {
      const p = startCli(
        [
          'registry',
          '--devices',
          'deploy/examples/devices.json',
          '--port',
          '0',
          '--bind',
          '127.0.0.1',
        ],
        {
          env: { COAP_EDGE_REGISTRY_TOKEN: TOKEN },
        },
      );
      const m = await p.waitFor(
        /listening on http:\/\/127\.0\.0\.1:(\d+) \(2 products, 3 devices; bearer token required\)/,
      );
      const url = `http://127.0.0.1:${m[1]}/products/${demo.products[0]!.productKey}`;
      assert.equal((await fetch(url, { signal: AbortSignal.timeout(5_000) })).status, 401);
      const r = await fetch(url, {
        headers: { authorization: `Bearer ${TOKEN}` },
        signal: AbortSignal.timeout(5_000),
      });
      assert.equal(r.status, 200);
      await p.waitFor(/registry: GET \/products\/\S+ 200/);
      p.signal('SIGTERM');
      const done = await p.done;
      assert.equal(done.code, 0, p.describe());
      assert.ok(
        !done.stdout.includes(TOKEN) && !done.stderr.includes(TOKEN),
        'the token is never printed',
      );
    });

    it('exits 2 with a message for a missing or invalid devices file and a bad port', async () => {
      // in-process: the exit code and the message the binary prints as `coap-edge: <message>`
      // (test/cli/cli.test.ts runs the binary's own refusals)
      let r = await cliInProcess(['registry']);
      assert.equal(r.code, 2, describeResult(r));
      r = await cliInProcess(['registry', '--devices', 'no/such/file.json']);
      assert.equal(r.code, 2, describeResult(r));
      assert.equal(r.error?.code, CLI_FAIL, describeResult(r));
      assert.equal(r.error.message, 'no/such/file.json: cannot read file (ENOENT)');
      assert.equal(r.stderr, '');
      r = await cliInProcess([
        'registry',
        '--devices',
        'deploy/examples/devices.json',
        '--port',
        '70000',
      ]);
      assert.equal(r.code, 2, describeResult(r));
      assert.match(`${r.stderr}${r.error?.message ?? ''}`, /--port/);
    });
  });

// --- the stack's processes, without Docker ------------------------------------------------------

/** Records the OTLP/HTTP requests it gets (stands in for Jaeger's collector). */
async function otlpSink(): Promise<{ server: Server; port: number; posts: string[] }> {
  const posts: string[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      posts.push(`${req.method ?? ''} ${req.url ?? ''}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  assert.ok(typeof addr === 'object' && addr !== null);
  return { server, port: addr.port, posts };
}

const stackSuite = (): Promise<void> =>
  describe(
    'the stack on this machine (compose commands and config, no Docker)',
    { concurrency: 1 },
    () => {
      const tmp = mkdtempSync(join(tmpdir(), 'coap-edge-stack-'));
      const prefix = `stack${randomBytes(4).toString('hex')}`;
      after(async () => {
        const redis = new Redis('redis://127.0.0.1:6379', {
          lazyConnect: true,
          maxRetriesPerRequest: 1,
        });
        try {
          await redis.connect();
          const keys = await redis.keys(`${prefix}:*`);
          if (keys.length > 0) await redis.del(...keys);
        } catch {
          // Redis gone: nothing to clean
        } finally {
          redis.disconnect();
        }
        rmSync(tmp, { recursive: true, force: true });
      });

      it('registry + serve (compose config) + device-sim: every simulated request is answered 2.xx, secrets come from the registry, traces go out', async () => {
        const sink = await otlpSink();
        try {
          // the registry service's command, on a free loopback port
          const regArgs = argv(svc('registry')).map((a, i, all) =>
            all[i - 1] === '--port' ? '0' : a,
          );
          const registry = startCli([...regArgs, '--bind', '127.0.0.1'], { timeoutMs: 60_000 });
          const rm = await registry.waitFor(/listening on http:\/\/[^:]+:(\d+)/);

          // the compose config with service names pointed at this machine, isolated from other tests
          const doc = parseYaml(readFileSync(composeConfigPath(), 'utf8')) as Record<
            string,
            unknown
          >;
          const local: Record<string, string> = {
            'redis:6379': '127.0.0.1:6379',
            'mosquitto:1883': '127.0.0.1:1883',
            [`registry:${new URL(composeConfig().registryUrl ?? '').port}`]: `127.0.0.1:${rm[1]}`,
            'jaeger:4318': `127.0.0.1:${sink.port}`,
          };
          for (const key of ['redisUrl', 'mqttUrl', 'registryUrl', 'otlpEndpoint']) {
            const u = new URL(String(doc[key]));
            const to = local[`${u.hostname}:${u.port}`];
            assert.ok(to !== undefined, `${key} ${u.host} is a service of the stack`);
            u.host = to;
            doc[key] = u.href.replace(/\/$/, '');
          }
          Object.assign(doc, {
            bind: '127.0.0.1',
            httpBind: '127.0.0.1',
            dtlsPort: 0,
            httpPort: 0,
            redisPrefix: prefix,
            mqttTopicPrefix: prefix, // the demo platform answers only this test's devices
            commandShareGroup: prefix,
          });
          const cfg = join(tmp, 'coap-edge.yaml');
          writeFileSync(cfg, toYaml(doc));
          const serveArgs = argv(svc('coap-edge')).map((a, i, all) =>
            all[i - 1] === '--config' ? cfg : a,
          );
          const serve = startCli(serveArgs, { timeoutMs: 60_000 });
          const dm = await serve.waitFor(
            /"dtls":"127\.0\.0\.1:(\d+)"[^\n]*"msg":"coap-edge listening"/,
          );
          const hm = await serve.waitFor(
            /"http":"127\.0\.0\.1:(\d+)"[^\n]*"msg":"admin HTTP server listening"/,
          );

          // the compose health check of coap-edge (its /readyz), until it passes
          const script = (healthTest(svc('coap-edge'))[3] ?? '').replace(
            `:${composeConfig().httpPort}/`,
            `:${hm[1]}/`,
          );
          const deadline = Date.now() + 15_000;
          for (;;) {
            const r = spawnSync(process.execPath, ['-e', script], { timeout: 5_000 });
            if (r.status === 0) break;
            assert.ok(
              Date.now() < deadline,
              `coap-edge never got ready (Redis 127.0.0.1:6379 and Mosquitto 127.0.0.1:1883 are needed)\n${serve.describe()}`,
            );
            await new Promise((res) => setTimeout(res, 200));
          }

          // the device simulator's command against it, for 6 s instead of an hour
          const simArgs = argv(svc('device-sim')).map((a, i, all) =>
            all[i - 1] === '--host'
              ? '127.0.0.1'
              : all[i - 1] === '--port'
                ? (dm[1] ?? '')
                : all[i - 1] === '--duration'
                  ? '6'
                  : a,
          );
          const sim = await runCli(simArgs, { timeoutMs: 45_000 });
          assert.equal(sim.code, 0, `${sim.stdout}\n${sim.stderr}\n${serve.describe()}`);
          const result = JSON.parse(sim.stdout) as {
            connected: number;
            requests: number;
            ok: number;
            failed: number;
            codes: Record<string, number>;
          };
          assert.equal(result.connected, Number(flagValue(simArgs, '--count')), sim.stdout);
          assert.ok(result.requests >= 3, sim.stdout);
          assert.equal(result.failed, 0, sim.stdout);
          assert.equal(
            result.ok,
            result.requests,
            `every request answered 2.xx (demoPlatform replies): ${sim.stdout}`,
          );

          // the secrets came from the registry, asked with the token
          for (const d of demo.devices) {
            await registry.waitFor(
              new RegExp(`registry: GET /devices/${d.productKey}/${d.deviceKey} 200`),
              { timeoutMs: 1_000 },
            );
          }
          const metrics = await fetch(`http://127.0.0.1:${hm[1]}/metrics`, {
            signal: AbortSignal.timeout(5_000),
          });
          assert.equal(metrics.status, 200);
          assert.match(await metrics.text(), /^# HELP /m);

          // SIGTERM (docker compose stop): drains, flushes the traces, exits 0
          serve.signal('SIGTERM');
          const done = await serve.done;
          assert.equal(done.code, 0, serve.describe());
          assert.ok(
            sink.posts.some((p) => p === 'POST /v1/traces'),
            `traces exported: ${sink.posts.join(', ')}`,
          );
          registry.signal('SIGTERM');
          assert.equal((await registry.done).code, 0, registry.describe());
        } finally {
          await new Promise<void>((r) => sink.server.close(() => r()));
        }
      });
    },
  );

// The four run side by side (the stack mostly waits: processes starting, the device
// simulator's 6 s); the tests within each run in order. killAll is the file's: it kills
// every child process of the file, the other suites' too.
after(killAll);
describe('deploy: docker compose', { concurrency: true }, () => {
  void composeFileSuite();
  void standInSuite();
  void registryCommandSuite();
  void stackSuite();
});
