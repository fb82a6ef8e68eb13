/**
 * The dashboard and the alert rules against what coap-edge exports:
 * - helm/coap-edge/files/coap-edge-dashboard.json is a provisionable Grafana dashboard (schema,
 *   uid, data source variable, panels for every layer);
 * - helm/coap-edge/files/alerts.yml passes `promtool check rules`, every rule has a severity, a
 *   summary and a description, and `promtool test rules` fires each alert on synthetic
 *   series (and keeps the ratio alerts quiet below their volume);
 * - every metric name in every PromQL expression of both files is a family of a live
 *   `/metrics` scrape (a Gateway with MQTT, an HTTP route and Redis, after one device
 *   request), and every literal label value they match on is one the scrape shows;
 * - docs/observability.md names every exported `coap_edge_*` family (and no other).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import type { CoapDtlsClient } from '../../src/tools/coap-client.js';
import {
  SHARED_MQTT_URL,
  SHARED_REDIS_URL,
  startE2eGateway,
  uid,
  type E2eGateway,
} from '../helpers/e2e.js';
import {
  HttpStandIn,
  codeOf,
  connectAs,
  postJson,
  writeDevicesFile,
  type DeviceSpec,
} from '../helpers/e2e-pods.js';
import { REPO_ROOT } from '../helpers/processes.js';
import {
  Exposition,
  HAVE_PROMTOOL,
  TARGET_LABELS,
  httpGet,
  literalValues,
  metricNames,
  promtool,
  selectors,
} from './prom.js';

// one source each, in the chart (Helm reads no file outside it); compose mounts them from there
const DASHBOARD = join(REPO_ROOT, 'helm', 'coap-edge', 'files', 'coap-edge-dashboard.json');
const ALERTS = join(REPO_ROOT, 'helm', 'coap-edge', 'files', 'alerts.yml');
const DOC = join(REPO_ROOT, 'docs', 'observability.md');

// --- reading the two files -------------------------------------------------------------------

interface Panel {
  readonly id?: number;
  readonly type: string;
  readonly title?: string;
  readonly datasource?: { type?: string; uid?: string };
  readonly gridPos?: { h: number; w: number; x: number; y: number };
  readonly targets?: readonly { expr?: string; refId?: string; datasource?: unknown }[];
  readonly panels?: readonly Panel[];
}

interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly schemaVersion: number;
  readonly panels: readonly Panel[];
  readonly templating: {
    readonly list: readonly {
      name: string;
      type: string;
      query?: unknown;
      definition?: string;
    }[];
  };
}

interface Rule {
  readonly alert?: string;
  readonly record?: string;
  readonly expr: string;
  readonly for?: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
}

interface RuleFile {
  readonly groups: readonly { name: string; rules: readonly Rule[] }[];
}

function loadDashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
}

function loadRules(): RuleFile {
  return parseYaml(readFileSync(ALERTS, 'utf8')) as RuleFile;
}

/** Every panel, rows' nested panels included. */
function allPanels(d: Dashboard): Panel[] {
  const out: Panel[] = [];
  const walk = (ps: readonly Panel[]): void => {
    for (const p of ps) {
      out.push(p);
      if (p.panels !== undefined) walk(p.panels);
    }
  };
  walk(d.panels);
  return out;
}

/** Every PromQL expression of the dashboard (targets and query variables), with where. */
function dashboardExprs(d: Dashboard): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const p of allPanels(d)) {
    for (const t of p.targets ?? []) {
      if (t.expr !== undefined) out.push({ where: `panel "${p.title ?? p.id}"`, expr: t.expr });
    }
  }
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue;
    const q = v.query;
    const expr =
      typeof q === 'string'
        ? q
        : typeof q === 'object' && q !== null && 'query' in q
          ? String(q.query)
          : (v.definition ?? '');
    // label_values(metric{...}, label): the selector inside is PromQL
    const inner = /^label_values\((.*),\s*[a-zA-Z_]+\)$/.exec(expr)?.[1] ?? expr;
    out.push({ where: `variable $${v.name}`, expr: inner });
  }
  return out;
}

function ruleExprs(r: RuleFile): { where: string; expr: string }[] {
  return r.groups.flatMap((g) =>
    g.rules.map((rule) => ({ where: `rule ${rule.alert ?? rule.record ?? '?'}`, expr: rule.expr })),
  );
}

// --- static checks -----------------------------------------------------------------------------

describe('telemetry: the Grafana dashboard', () => {
  it('is a dashboard Grafana can provision: uid coap-edge, schema ≥ 38, a Prometheus data source variable', () => {
    const d = loadDashboard();
    assert.equal(d.uid, 'coap-edge');
    assert.equal(d.title, 'coap-edge');
    assert.ok(d.schemaVersion >= 38, `schemaVersion ${d.schemaVersion}`);
    const ds = d.templating.list.find((v) => v.type === 'datasource');
    assert.ok(ds !== undefined, 'a data source variable');
    assert.equal(ds.query, 'prometheus');
    const vars = d.templating.list.map((v) => v.name);
    assert.ok(vars.includes('instance'), `variables: ${vars.join(', ')}`);
    const ids = new Set<number>();
    for (const p of allPanels(d)) {
      assert.ok(p.id !== undefined && !ids.has(p.id), `panel ids unique: ${p.title}`);
      ids.add(p.id);
      assert.ok(p.gridPos !== undefined, `gridPos of ${p.title}`);
      if (p.type === 'row') continue;
      assert.deepEqual(p.datasource, { type: 'prometheus', uid: `\${${ds.name}}` }, p.title);
      assert.ok((p.targets ?? []).length > 0, `targets of ${p.title}`);
      for (const t of p.targets ?? []) {
        assert.ok(typeof t.expr === 'string' && t.expr.length > 0, `expr in ${p.title}`);
        assert.match(t.expr, /instance=~"\$instance"/, `${p.title} follows $instance`);
      }
    }
  });

  it('has panels for traffic, latency, handshakes, shared associations, errors, backends, online devices, commands and key lookups', () => {
    const d = loadDashboard();
    const rows = allPanels(d)
      .filter((p) => p.type === 'row')
      .map((p) => p.title);
    for (const r of [
      'Traffic',
      'Latency',
      'Handshakes',
      'Shared associations',
      'Errors',
      'Backend health',
      'Key lookups',
      'Commands and presence',
    ]) {
      assert.ok(rows.includes(r), `row ${r} in ${rows.join(', ')}`);
    }
    const exprs = dashboardExprs(d).map((e) => e.expr);
    const uses = (re: RegExp, what: string): void =>
      assert.ok(
        exprs.some((e) => re.test(e)),
        what,
      );
    uses(/rate\(coap_edge_datagrams_received_total/, 'datagrams in');
    uses(/rate\(coap_edge_datagrams_sent_total/, 'datagrams out');
    uses(/sum by \(code\) \(rate\(coap_edge_coap_requests_total/, 'requests by code');
    for (const q of ['0.5', '0.9', '0.99']) {
      uses(
        new RegExp(
          `histogram_quantile\\(${q.replace('.', '\\.')}, sum by \\(le\\) \\(rate\\(coap_edge_coap_request_duration_seconds_bucket`,
        ),
        `request latency p${q.slice(2)}`,
      );
    }
    uses(/coap_edge_backend_request_duration_seconds_bucket/, 'backend latency');
    uses(/coap_edge_dtls_handshakes_started_total/, 'handshakes started');
    uses(/sum by \(reason\) \(rate\(coap_edge_dtls_handshakes_failed_total/, 'failures by reason');
    uses(/coap_edge_dtls_handshake_duration_seconds_bucket/, 'handshake duration');
    uses(/coap_edge_dtls_handshakes_in_progress/, 'half-open handshakes');
    uses(/sum by \(reason\) \(rate\(coap_edge_dtls_records_dropped_total/, 'drops by reason');
    uses(/coap_edge_coap_requests_total\{[^}]*code=~"\[45\]/, 'CoAP 4.xx/5.xx');
    uses(/coap_edge_backend_up/, 'backend up');
    uses(/coap_edge_backend_requests_total/, 'backend requests by outcome');
    uses(/coap_edge_mqtt_replies_total/, 'MQTT replies');
    uses(/coap_edge_redis_up/, 'Redis up');
    uses(/coap_edge_registry_failures_total/, 'registry failures');
    uses(/coap_edge_key_lookups_total/, 'key lookups');
    uses(/coap_edge_commands_total/, 'commands');
    // shared associations: the three panels operators look at, by title and by query
    const titled = (title: string): string[] =>
      allPanels(d)
        .filter((p) => p.title === title)
        .flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? ''));
    const panel = (title: string, res: readonly RegExp[]): void => {
      const ex = titled(title);
      assert.ok(ex.length > 0, `panel "${title}"`);
      for (const re of res)
        assert.ok(
          ex.some((e) => re.test(e)),
          `panel "${title}" queries ${re}`,
        );
    };
    panel('Adoptions and lookups', [
      /sum by \(via\) \(rate\(coap_edge_dtls_adoptions_total/,
      /sum by \(result\) \(rate\(coap_edge_dtls_association_lookups_total/,
    ]);
    panel('Unknown peer / CID drops', [
      /coap_edge_dtls_records_dropped_total\{[^}]*reason=~"unknown_peer\|unknown_cid"/,
    ]);
    panel('Sequence leases', [
      /sum by \(kind\) \(rate\(coap_edge_dtls_sequence_leases_total/,
      /coap_edge_dtls_sequence_leases_lost_total/,
      /coap_edge_dtls_sequence_lease_errors_total/,
      /coap_edge_dtls_records_held_for_lease_total/,
      /coap_edge_dtls_records_dropped_for_lease_total/,
    ]);
    uses(/coap_edge_dtls_adoption_duration_seconds_bucket/, 'adoption duration');
    // the online count is global (every pod reads the shared store): never summed over pods
    uses(/^max\(coap_edge_devices_online/, 'online devices (max over pods)');
    assert.ok(
      !exprs.some((e) => /sum[^(]*\(coap_edge_devices_online/.test(e)),
      'coap_edge_devices_online is not summed',
    );
  });
});

describe('telemetry: the alert rules', { skip: HAVE_PROMTOOL ? false : 'promtool missing' }, () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-tel-rules-'));
  });

  after(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('pass promtool check rules', async () => {
    const r = await promtool(['check', 'rules', ALERTS]);
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /SUCCESS: \d+ rules found/);
  });

  it('each alert has a severity, a summary and a description; the required alerts exist', () => {
    const rules = loadRules().groups.flatMap((g) => g.rules);
    for (const r of rules) {
      assert.ok(r.alert !== undefined, `only alerting rules: ${r.record ?? r.expr}`);
      assert.ok(
        ['critical', 'warning', 'info'].includes(r.labels?.severity ?? ''),
        `${r.alert} severity`,
      );
      assert.ok((r.annotations?.summary ?? '').length > 0, `${r.alert} summary`);
      assert.ok((r.annotations?.description ?? '').length > 0, `${r.alert} description`);
      assert.ok(r.for !== undefined, `${r.alert} has a for: duration`);
    }
    const names = rules.map((r) => r.alert);
    for (const required of [
      'CoapEdgeHandshakeFailureRatioHigh',
      'CoapEdgeBackendDown',
      'CoapEdgeUnavailableAnswersHigh',
      'CoapEdgeRequestLatencyHigh',
      'CoapEdgeDtlsDropsHigh',
      'CoapEdgeUnknownPeerRecordsHigh',
      'CoapEdgeSharedAssociationStoreErrors',
      'CoapEdgeRedisDown',
      'CoapEdgeNotReady',
    ]) {
      assert.ok(names.includes(required), `${required} in ${names.join(', ')}`);
    }
  });

  it('promtool test rules: every alert fires on synthetic series; the ratio alerts stay quiet below their volume', async () => {
    // the rules as they are, without annotations (promtool compares rendered annotations;
    // their templates are checked by `promtool check rules` above)
    const file = loadRules();
    const bare = {
      groups: file.groups.map((g) => ({
        ...g,
        rules: g.rules.map(({ annotations: _annotations, ...r }) => r),
      })),
    };
    writeFileSync(join(dir, 'rules.yml'), toYaml(bare));
    const job = 'coap-edge';
    const a = 'coap-edge-0:9464';
    const series = (name: string, labels: Record<string, string>, values: string) => ({
      series: `${name}{${Object.entries({ job, instance: a, ...labels })
        .map(([k, v]) => `${k}="${v}"`)
        .join(',')}}`,
      values,
    });
    const fires = (alertname: string, at: string, labels: Record<string, string>) => ({
      eval_time: at,
      alertname,
      exp_alerts: [{ exp_labels: { job, ...labels } }],
    });
    const quiet = (alertname: string, at: string) => ({ eval_time: at, alertname, exp_alerts: [] });
    const buckets = (le: string, values: string) =>
      series('coap_edge_coap_request_duration_seconds_bucket', { method: 'POST', le }, values);
    const tests = [
      {
        // backend down for 2 minutes
        input_series: [series('coap_edge_backend_up', { backend: 'mqtt' }, '1 1 0x10')],
        alert_rule_test: [
          quiet('CoapEdgeBackendDown', '3m'),
          fires('CoapEdgeBackendDown', '6m', {
            instance: a,
            backend: 'mqtt',
            severity: 'critical',
          }),
        ],
      },
      {
        input_series: [
          series('coap_edge_redis_up', { client: 'secrets' }, '0x10'),
          series('coap_edge_ready', {}, '0x10'),
        ],
        alert_rule_test: [
          fires('CoapEdgeRedisDown', '5m', {
            instance: a,
            client: 'secrets',
            severity: 'critical',
          }),
          quiet('CoapEdgeNotReady', '3m'),
          fires('CoapEdgeNotReady', '6m', { instance: a, severity: 'warning' }),
        ],
      },
      {
        // every handshake fails (wrong keys after a rotation): no completed series at all
        input_series: [
          series('coap_edge_dtls_handshakes_failed_total', { reason: 'bad_record_mac' }, '0+5x30'),
        ],
        alert_rule_test: [
          fires('CoapEdgeHandshakeFailureRatioHigh', '20m', { severity: 'warning' }),
        ],
      },
      {
        // 30 % failing among many completions
        input_series: [
          series('coap_edge_dtls_handshakes_failed_total', { reason: 'psk_rejected' }, '0+3x30'),
          series(
            'coap_edge_dtls_handshakes_completed_total',
            { cipher_suite: 'TLS_PSK_WITH_AES_128_CCM_8' },
            '0+7x30',
          ),
        ],
        alert_rule_test: [
          fires('CoapEdgeHandshakeFailureRatioHigh', '20m', { severity: 'warning' }),
        ],
      },
      {
        // few failures (below the volume), or a small ratio, or only replaced handshakes
        input_series: [
          series('coap_edge_dtls_handshakes_failed_total', { reason: 'timeout' }, '0+1x30'),
          series(
            'coap_edge_dtls_handshakes_failed_total',
            { reason: 'replaced', instance: 'coap-edge-1:9464' },
            '0+50x30',
          ),
        ],
        alert_rule_test: [quiet('CoapEdgeHandshakeFailureRatioHigh', '25m')],
      },
      {
        input_series: [
          series('coap_edge_dtls_handshakes_failed_total', { reason: 'timeout' }, '0+5x30'),
          series(
            'coap_edge_dtls_handshakes_completed_total',
            { cipher_suite: 'TLS_PSK_WITH_AES_128_CCM_8' },
            '0+100x30',
          ),
        ],
        alert_rule_test: [quiet('CoapEdgeHandshakeFailureRatioHigh', '25m')],
      },
      {
        // forged records: 3 per second; replays: 0.2 per second (below the threshold)
        input_series: [
          series('coap_edge_dtls_records_dropped_total', { reason: 'bad_mac' }, '0+180x30'),
          series('coap_edge_dtls_records_dropped_total', { reason: 'replay' }, '0+12x30'),
          series('coap_edge_dtls_records_dropped_total', { reason: 'handshake_limit' }, '0+6x30'),
        ],
        alert_rule_test: [
          quiet('CoapEdgeDtlsDropsHigh', '8m'),
          fires('CoapEdgeDtlsDropsHigh', '20m', {
            instance: a,
            reason: 'bad_mac',
            severity: 'warning',
          }),
          fires('CoapEdgeHandshakeLimitReached', '10m', { instance: a, severity: 'warning' }),
        ],
      },
      {
        // records for unknown associations: 15/s by address and 10/s by CID on one instance
        // (each alone below 20/s); the attack-signal drop alert leaves them out
        input_series: [
          series('coap_edge_dtls_records_dropped_total', { reason: 'unknown_peer' }, '0+900x30'),
          series('coap_edge_dtls_records_dropped_total', { reason: 'unknown_cid' }, '0+600x30'),
        ],
        alert_rule_test: [
          quiet('CoapEdgeUnknownPeerRecordsHigh', '8m'),
          fires('CoapEdgeUnknownPeerRecordsHigh', '20m', { instance: a, severity: 'warning' }),
          quiet('CoapEdgeDtlsDropsHigh', '20m'),
        ],
      },
      {
        // 10 unknown records/s: below the storm threshold
        input_series: [
          series('coap_edge_dtls_records_dropped_total', { reason: 'unknown_peer' }, '0+600x30'),
        ],
        alert_rule_test: [quiet('CoapEdgeUnknownPeerRecordsHigh', '25m')],
      },
      {
        // lease, store and lookup errors together 0.1/s (each alone at most 0.05/s)
        input_series: [
          series('coap_edge_dtls_sequence_lease_errors_total', {}, '0+2x30'),
          series('coap_edge_dtls_association_store_errors_total', {}, '0+1x30'),
          series('coap_edge_dtls_association_lookups_total', { result: 'error' }, '0+3x30'),
          series('coap_edge_dtls_association_lookups_total', { result: 'missing' }, '0+600x30'),
        ],
        alert_rule_test: [
          quiet('CoapEdgeSharedAssociationStoreErrors', '4m'),
          fires('CoapEdgeSharedAssociationStoreErrors', '15m', {
            instance: a,
            severity: 'warning',
          }),
        ],
      },
      {
        // a few lease errors, and many lookups that found nothing (not an error): quiet
        input_series: [
          series('coap_edge_dtls_sequence_lease_errors_total', {}, '0+2x30'),
          series('coap_edge_dtls_association_store_errors_total', {}, '0x30'),
          series('coap_edge_dtls_association_lookups_total', { result: 'error' }, '0x30'),
          series('coap_edge_dtls_association_lookups_total', { result: 'missing' }, '0+600x30'),
        ],
        alert_rule_test: [quiet('CoapEdgeSharedAssociationStoreErrors', '20m')],
      },
      {
        // every answer takes 2.5-5 s
        input_series: [
          buckets('1', '0x40'),
          buckets('2.5', '0x40'),
          buckets('5', '0+10x40'),
          buckets('+Inf', '0+10x40'),
        ],
        alert_rule_test: [fires('CoapEdgeRequestLatencyHigh', '25m', { severity: 'warning' })],
      },
      {
        // 25 % of the answers are 5.03
        input_series: [
          series(
            'coap_edge_coap_requests_total',
            { method: 'POST', topic_class: 'uplink', code: '2.04' },
            '0+60x30',
          ),
          series(
            'coap_edge_coap_requests_total',
            { method: 'POST', topic_class: 'uplink', code: '5.03' },
            '0+20x30',
          ),
          series('coap_edge_mqtt_replies_total', { outcome: 'matched' }, '0+60x30'),
          series('coap_edge_mqtt_replies_total', { outcome: 'timeout' }, '0+20x30'),
          series('coap_edge_registry_failures_total', {}, '0+12x30'),
        ],
        alert_rule_test: [
          fires('CoapEdgeUnavailableAnswersHigh', '15m', { severity: 'warning' }),
          fires('CoapEdgeMqttReplyTimeoutsHigh', '25m', { severity: 'warning' }),
          fires('CoapEdgeRegistryFailing', '20m', { instance: a, severity: 'warning' }),
        ],
      },
    ].map((t) => ({ interval: '1m', ...t }));
    const tested = new Set(
      tests.flatMap((t) =>
        t.alert_rule_test.filter((x) => x.exp_alerts.length > 0).map((x) => x.alertname),
      ),
    );
    for (const rule of file.groups.flatMap((g) => g.rules)) {
      assert.ok(tested.has(rule.alert ?? ''), `a firing test for ${rule.alert}`);
    }
    const testFile = join(dir, 'tests.yml');
    writeFileSync(
      testFile,
      toYaml({ rule_files: ['rules.yml'], evaluation_interval: '1m', tests }),
    );
    const r = await promtool(['test', 'rules', testFile]);
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
  });
});

// --- against a live scrape ---------------------------------------------------------------------

/** Families that have no samples unless MQTT runs in per-device mode. */
/** Families that exist only in per-device MQTT mode (absent, not 0, in bridge mode). */
const PER_DEVICE_ONLY = new Set([
  'coap_edge_mqtt_device_connects_total',
  'coap_edge_mqtt_device_sessions',
]);

/** Label values that appear only once such traffic happened (not known up front). */
const DYNAMIC_LABELS = new Set([
  'coap_edge_coap_requests_total/code',
  'coap_edge_coap_requests_total/method',
  'coap_edge_coap_requests_total/topic_class',
  'coap_edge_dtls_handshakes_completed_total/cipher_suite',
  'coap_edge_mqtt_device_connects_total/outcome',
]);

describe('telemetry: PromQL of the dashboard and the alerts against a live /metrics', () => {
  const dev: DeviceSpec = { pk: uid('dbPK'), dk: uid('dbDK'), secret: `db-${uid('s')}` };
  let dir: string;
  let http: HttpStandIn;
  let gw: E2eGateway;
  let device: CoapDtlsClient;
  let scrape: Exposition;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coap-edge-tel-promql-'));
    http = await HttpStandIn.start();
    http.answer = () => ({ status: 200, body: '{}' });
    // MQTT (bridge), Redis (secrets cache, commands, presence), an HTTP route: every part
    // whose metrics are conditional is configured
    gw = await startE2eGateway({
      devices: writeDevicesFile(dir, [dev]),
      mqttUrl: SHARED_MQTT_URL,
      redisUrl: SHARED_REDIS_URL,
      redisPrefix: uid('tel-promql-'),
      commandShareGroup: uid('tel'),
      httpPort: 0,
      httpBind: '127.0.0.1',
      routes: [
        {
          name: 'events',
          match: '/sys/{pk}/{dk}/thing/event/+/post',
          backend: 'http',
          url: `${http.origin}/events`,
        },
      ],
    });
    device = await connectAs(gw.port, dev);
    const res = await postJson(
      device,
      `/sys/${dev.pk}/${dev.dk}/thing/event/alarm/post`,
      JSON.stringify({ id: '1', params: {} }),
    );
    assert.equal(codeOf(res), '2.04');
    const port = gw.gateway.httpPort;
    assert.ok(port !== undefined);
    const body = await httpGet(port, '/metrics');
    assert.equal(body.status, 200);
    scrape = Exposition.parse(body.body);
  });

  after(async () => {
    await device?.close();
    await gw?.close();
    await http?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const everyExpr = (): { where: string; expr: string }[] => [
    ...dashboardExprs(loadDashboard()),
    ...ruleExprs(loadRules()),
  ];

  it('every metric an expression names is exported (histogram _bucket/_sum/_count by their family)', () => {
    const exprs = everyExpr();
    assert.ok(exprs.length > 50, `${exprs.length} expressions`);
    const used = new Set<string>();
    for (const { where, expr } of exprs) {
      const names = metricNames(expr);
      assert.ok(names.length > 0 || where.startsWith('variable'), `${where}: no metric in ${expr}`);
      for (const n of names) {
        const family = scrape.familyOf(n);
        assert.ok(family !== undefined, `${where}: ${n} is not exported (in ${expr})`);
        used.add(family.name);
      }
    }
    // and the dashboard covers (almost) every coap_edge family
    const unused = [...scrape.families.keys()].filter(
      (f) => f.startsWith('coap_edge_') && !used.has(f),
    );
    assert.deepEqual(unused, [], 'coap_edge families no panel or alert shows');
  });

  it('every literal label value an expression matches on is one the scrape shows', () => {
    for (const { where, expr } of everyExpr()) {
      for (const sel of selectors(expr)) {
        const family = scrape.familyOf(sel.metric);
        if (family === undefined) continue; // reported by the test above
        for (const m of sel.matchers) {
          if (TARGET_LABELS.has(m.label)) continue;
          const seen = scrape.labelValues(family.name, m.label);
          const key = `${family.name}/${m.label}`;
          if (seen.size === 0 && (DYNAMIC_LABELS.has(key) || PER_DEVICE_ONLY.has(family.name))) {
            continue;
          }
          assert.ok(seen.size > 0, `${where}: ${family.name} has no label ${m.label}`);
          const values = literalValues(m.value);
          if (values === undefined || DYNAMIC_LABELS.has(key)) continue;
          for (const v of values) {
            assert.ok(
              seen.has(v),
              `${where}: ${family.name}{${m.label}="${v}"} never exported (has: ${[...seen].join(', ')})`,
            );
          }
        }
      }
    }
  });

  it('every family an expression names has samples once MQTT, HTTP and Redis are configured', () => {
    const empty = new Set<string>();
    for (const { expr } of everyExpr()) {
      for (const n of metricNames(expr)) {
        const family = scrape.familyOf(n);
        if (family === undefined || PER_DEVICE_ONLY.has(family.name)) continue;
        const has = scrape.samples.some((s) => scrape.familyOf(s.name)?.name === family.name);
        if (!has) empty.add(family.name);
      }
    }
    assert.deepEqual([...empty], []);
  });

  it('docs/observability.md names every exported coap_edge_* family, and only those', () => {
    const doc = readFileSync(DOC, 'utf8');
    const families = [...scrape.families.keys()].filter((f) => f.startsWith('coap_edge_'));
    assert.ok(families.length > 30, `${families.length} families`);
    for (const f of families) {
      assert.ok(new RegExp(`\\b${f}\\b`).test(doc), `${f} is not documented`);
    }
    for (const m of doc.matchAll(/\bcoap_edge_[a-z0-9_]+\b/g)) {
      assert.ok(scrape.familyOf(m[0]) !== undefined, `the doc names ${m[0]}, not exported`);
    }
    for (const rule of loadRules().groups.flatMap((g) => g.rules)) {
      assert.ok(doc.includes(rule.alert ?? '?'), `alert ${rule.alert} is not documented`);
    }
  });
});
