/**
 * Helpers for the metrics tests: scraping the admin server, reading the Prometheus text
 * exposition format, running `promtool`, and pulling metric names and label matchers out of
 * PromQL expressions (the dashboard's and the alert rules').
 */
import { run, type ProcessResult } from '../helpers/processes.js';
import { missingCommands } from '../helpers/tools.js';

/** True when `promtool` (Debian package `prometheus`) is on the PATH; in CI, throws if not. */
export const HAVE_PROMTOOL = missingCommands([['promtool', '--version']]) === false;

/** `promtool` with `args` (and `input` on stdin). */
export function promtool(args: readonly string[], input?: string): Promise<ProcessResult> {
  return run('promtool', args, { timeoutMs: 20_000, ...(input !== undefined ? { input } : {}) });
}

/** GET `http://127.0.0.1:<port><path>`: status, content type and body. */
export async function httpGet(
  port: number,
  path: string,
): Promise<{ status: number; contentType: string; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    signal: AbortSignal.timeout(5_000),
  });
  return {
    status: res.status,
    contentType: res.headers.get('content-type') ?? '',
    body: await res.text(),
  };
}

export type Labels = Readonly<Record<string, string>>;

export interface Sample {
  readonly name: string;
  readonly labels: Labels;
  readonly value: number;
}

export interface Family {
  readonly name: string;
  readonly type: string;
  readonly help: string;
}

/** A parsed scrape. */
export class Exposition {
  constructor(
    readonly text: string,
    readonly families: ReadonlyMap<string, Family>,
    readonly samples: readonly Sample[],
  ) {}

  static parse(text: string): Exposition {
    const families = new Map<string, Family>();
    const help = new Map<string, string>();
    const samples: Sample[] = [];
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (line === '') continue;
      const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line);
      if (meta !== null) {
        const [, kind, name = '', rest = ''] = meta;
        if (kind === 'HELP') help.set(name, rest);
        else families.set(name, { name, type: rest, help: help.get(name) ?? '' });
        continue;
      }
      if (line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( \d+)?$/.exec(line);
      if (m === null) throw new Error(`not an exposition line: ${line}`);
      const labels: Record<string, string> = {};
      const body = m[3] ?? '';
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g;
      for (let l = re.exec(body); l !== null; l = re.exec(body)) {
        labels[l[1] ?? ''] = (l[2] ?? '').replace(/\\(.)/g, (_, c: string) =>
          c === 'n' ? '\n' : c,
        );
      }
      const v = m[4] ?? 'NaN';
      samples.push({
        name: m[1] ?? '',
        labels,
        value: v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v),
      });
    }
    return new Exposition(text, families, samples);
  }

  /** The family a sample name belongs to (`x_bucket` → histogram `x`). */
  familyOf(sampleName: string): Family | undefined {
    const f = this.families.get(sampleName);
    if (f !== undefined) return f;
    const m = /^(.*)_(bucket|sum|count)$/.exec(sampleName);
    if (m === null) return undefined;
    const base = this.families.get(m[1] ?? '');
    return base !== undefined && (base.type === 'histogram' || base.type === 'summary')
      ? base
      : undefined;
  }

  /** Samples named `name` whose labels include `labels`. */
  select(name: string, labels: Labels = {}): Sample[] {
    return this.samples.filter(
      (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
    );
  }

  /** Sum of the samples named `name` whose labels include `labels` (0 when none). */
  sum(name: string, labels: Labels = {}): number {
    return this.select(name, labels).reduce((a, s) => a + s.value, 0);
  }

  /** Whether a sample named `name` with exactly these labels exists. */
  has(name: string, labels: Labels = {}): boolean {
    return this.select(name, labels).length > 0;
  }

  /** Every value label `label` takes in samples of family `family` (histograms included). */
  labelValues(family: string, label: string): Set<string> {
    const out = new Set<string>();
    for (const s of this.samples) {
      if (this.familyOf(s.name)?.name !== family) continue;
      const v = s.labels[label];
      if (v !== undefined) out.add(v);
    }
    return out;
  }
}

// --- PromQL ----------------------------------------------------------------------------------

/** Labels Prometheus (or the dashboard) adds at scrape time: not coap-edge's to check. */
export const TARGET_LABELS: ReadonlySet<string> = new Set([
  'job',
  'instance',
  'pod',
  'namespace',
  'service',
  'container',
  'endpoint',
  'le',
]);

export interface Selector {
  readonly metric: string;
  /** Label matchers: label, operator and value as written. */
  readonly matchers: readonly { label: string; op: string; value: string }[];
}

/** PromQL without `#` comments. */
function stripComments(expr: string): string {
  return expr.replace(/#[^\n]*/g, ' ');
}

/**
 * Metric names an expression refers to: every identifier that names a coap-edge or
 * prom-client default metric (`coap_edge_*`, `process_*`, `nodejs_*`), plus any other
 * identifier that looks like a metric (`*_total`, `*_seconds*`, `*_bytes`, `*_bucket`).
 */
export function metricNames(expr: string): string[] {
  const names = new Set<string>();
  // drop label matchers and string literals so label values are not taken for names
  const bare = stripComments(expr)
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '{}');
  for (const m of bare.matchAll(/\b[a-zA-Z_:][a-zA-Z0-9_:]*\b/g)) {
    const id = m[0];
    if (
      /^(coap_edge|process|nodejs)_/.test(id) ||
      /_(total|seconds|bytes|bucket|count|sum|ratio|info)$/.test(id)
    ) {
      names.add(id);
    }
  }
  return [...names];
}

/** The selectors `metric{...}` of an expression, with their label matchers. */
export function selectors(expr: string): Selector[] {
  const out: Selector[] = [];
  const text = stripComments(expr);
  for (const m of text.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}/g)) {
    const metric = m[1] ?? '';
    const matchers: { label: string; op: string; value: string }[] = [];
    for (const l of (m[2] ?? '').matchAll(
      /([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g,
    )) {
      matchers.push({ label: l[1] ?? '', op: l[2] ?? '', value: l[3] ?? '' });
    }
    out.push({ metric, matchers });
  }
  return out;
}

/**
 * The literal values a matcher names: `=` its value; `=~`/`!~` each branch of a plain
 * alternation (`a|b|c`); undefined when the value is a pattern or a Grafana variable.
 */
export function literalValues(value: string): string[] | undefined {
  if (value.includes('$')) return undefined;
  const unescaped = value.replace(/\\\\\./g, '.').replace(/\\\./g, '.');
  if (!/^[A-Za-z0-9_.|-]+$/.test(unescaped)) return undefined;
  return unescaped.split('|');
}
