/**
 * Helm itself, for the chart tests: the official Helm 3 binary that scripts/fetch-helm.sh
 * unpacks under test/.cache/helm (.ci/run runs it before the tests). Without it the tests that
 * use it fail, naming the script: the chart is not checked by anything less than Helm.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT, cleanEnv, run, type ProcessResult } from './processes.js';

/** Where scripts/fetch-helm.sh puts the binary. */
export const HELM = join(REPO_ROOT, 'test', '.cache', 'helm', 'helm');

/** `helm ...args` with its cache, config and data folders in a temporary folder. */
export async function helm(args: readonly string[]): Promise<ProcessResult> {
  if (!existsSync(HELM)) {
    throw new Error(
      `Helm is not unpacked in ${HELM}: run scripts/fetch-helm.sh (.ci/run does before the tests)`,
    );
  }
  const home = mkdtempSync(join(tmpdir(), 'coap-edge-helm-home-'));
  try {
    return await run(HELM, args, {
      env: cleanEnv({
        HELM_CACHE_HOME: join(home, 'cache'),
        HELM_CONFIG_HOME: join(home, 'config'),
        HELM_DATA_HOME: join(home, 'data'),
      }),
      timeoutMs: 60_000,
    });
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

/** One rendered manifest and the template it came from (`templates/x.yaml`). */
export interface Rendered {
  readonly template: string;
  readonly doc: { [key: string]: unknown };
}

/**
 * Runs `helm <command> RELEASE CHART` (template or lint) with values given as objects (each
 * one a `-f` file, in order: Helm merges them onto values.yaml as it does for a user), plus
 * `extra` arguments.
 */
export async function helmWithValues(
  command: 'template' | 'lint',
  chart: string,
  values: readonly object[],
  extra: readonly string[] = [],
): Promise<ProcessResult> {
  const dir = mkdtempSync(join(tmpdir(), 'coap-edge-helm-values-'));
  try {
    const files = values.map((v, i) => {
      const file = join(dir, `values-${i}.json`);
      writeFileSync(file, JSON.stringify(v)); // JSON is YAML
      return file;
    });
    const release = command === 'template' ? ['coap-edge'] : [];
    return await helm([command, ...release, chart, ...files.flatMap((f) => ['-f', f]), ...extra]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The manifests of `helm template` output, each with the template that produced it. */
export function renderedManifests(stdout: string): Rendered[] {
  const out: Rendered[] = [];
  for (const d of parseAllDocuments(stdout)) {
    if (d.errors.length > 0) throw new Error(d.errors.map((e) => e.message).join('; '));
    const doc = d.toJS() as unknown;
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) continue;
    const comment = d.commentBefore ?? d.contents?.commentBefore ?? '';
    const source = /Source: [^/\n]+\/(templates\/\S+)/.exec(comment)?.[1];
    if (source === undefined) throw new Error('helm template output without a # Source: line');
    out.push({ template: source, doc: doc as { [key: string]: unknown } });
  }
  return out;
}
