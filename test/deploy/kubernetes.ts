/**
 * Kubernetes manifests checked with the Kubernetes types of the kubernetes-models package
 * (generated from the Kubernetes OpenAPI specification):
 * - {@link validateManifest}: the model's JSON schema validation (types, required fields,
 *   formats);
 * - {@link unknownFields}: field names. The schemas accept fields Kubernetes does not know, so
 *   the manifests are type-checked by the TypeScript compiler as object literals of the
 *   models' interfaces (`IDeployment`, ...), whose excess-property check names a field the
 *   interface lacks, at any depth (the first such field of each manifest).
 */
import { dirname, join } from 'node:path';
import ts from 'typescript';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { REPO_ROOT } from '../helpers/processes.js';

export type Manifest = { [key: string]: unknown };

interface Kind {
  /** Validates with the model's JSON schema; throws on a violation. */
  readonly validate: (doc: Manifest) => void;
  /** The module of the kind in kubernetes-models (also its apiVersion/kind). */
  readonly module: string;
  /** The interface the module declares for it (`IDeployment`, ...). */
  readonly type: string;
}

type Model = new (data: Manifest) => { validate(): void };

/** The kinds coap-edge deploys, keyed by apiVersion/kind (which is their module's path). */
const KINDS: Record<string, Kind> = Object.fromEntries(
  (
    [
      [ConfigMap, 'v1/ConfigMap'],
      [Namespace, 'v1/Namespace'],
      [Service, 'v1/Service'],
      [ServiceAccount, 'v1/ServiceAccount'],
      [Deployment, 'apps/v1/Deployment'],
      [PodDisruptionBudget, 'policy/v1/PodDisruptionBudget'],
      [HorizontalPodAutoscaler, 'autoscaling/v2/HorizontalPodAutoscaler'],
      [NetworkPolicy, 'networking.k8s.io/v1/NetworkPolicy'],
    ] as const
  ).map(([model, module]): [string, Kind] => [
    module,
    {
      validate: (d) => new (model as unknown as Model)(d).validate(),
      module,
      type: `I${module.slice(module.lastIndexOf('/') + 1)}`,
    },
  ]),
);

function kindOf(doc: Manifest): Kind | undefined {
  return KINDS[`${String(doc.apiVersion)}/${String(doc.kind)}`];
}

/** Whether kubernetes-models has the kind (the Prometheus Operator's are not there). */
export function isKnownKind(doc: Manifest): boolean {
  return kindOf(doc) !== undefined;
}

/** Validates a manifest against its kind's schema; throws naming what is wrong. */
export function validateManifest(doc: Manifest): void {
  const kind = kindOf(doc);
  if (kind === undefined)
    throw new Error(`unknown kind ${String(doc.apiVersion)}/${String(doc.kind)}`);
  kind.validate(doc);
}

let previousProgram: ts.Program | undefined;

/**
 * The fields of the manifests that their kinds do not have (the first of each manifest; and any
 * other type error), as
 * `name: line of the field: message`, checked in one TypeScript program.
 */
export function unknownFields(manifests: readonly { name: string; doc: Manifest }[]): string[] {
  // a file among the tests, so that `kubernetes-models` resolves from the repository
  const file = join(REPO_ROOT, 'test', 'deploy', '__manifests__.ts');
  const parts: string[] = [];
  const starts: { line: number; name: string }[] = [];
  let line = 0;
  manifests.forEach(({ name, doc }, i) => {
    const kind = kindOf(doc);
    if (kind === undefined) throw new Error(`${name}: unknown kind`);
    const text =
      `import type { ${kind.type} as T${i} } from 'kubernetes-models/${kind.module}';\n` +
      `export const m${i}: T${i} = ${JSON.stringify(doc, null, 2)};\n`;
    starts.push({ line, name });
    line += text.split('\n').length - 1;
    parts.push(text);
  });
  const source = parts.join('');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    // what the models' declarations need, without the DOM of the default library
    lib: ['lib.es2022.d.ts'],
    types: [],
  };
  const base = ts.createCompilerHost(options);
  const host: ts.CompilerHost = {
    ...base,
    getSourceFile: (name, version, ...rest) =>
      name === file
        ? ts.createSourceFile(name, source, version)
        : base.getSourceFile(name, version, ...rest),
    fileExists: (name) => name === file || base.fileExists(name),
    readFile: (name) => (name === file ? source : base.readFile(name)),
  };
  // the previous program lends its unchanged files (the library, kubernetes-models)
  const program = ts.createProgram([file], options, host, previousProgram);
  previousProgram = program;
  const lines = source.split('\n');
  return ts
    .getPreEmitDiagnostics(program)
    .filter((d) => d.file?.fileName === file || d.file === undefined)
    .map((d) => {
      const message = ts.flattenDiagnosticMessageText(d.messageText, ' ');
      if (d.file === undefined || d.start === undefined) return `${dirname(file)}: ${message}`;
      const at = d.file.getLineAndCharacterOfPosition(d.start).line;
      const owner = [...starts].reverse().find((s) => s.line <= at);
      return `${owner?.name ?? '?'}: ${(lines[at] ?? '').trim()}: ${message}`;
    });
}
