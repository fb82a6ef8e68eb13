/**
 * deploy/Dockerfile and .dockerignore through real parsers, for checks without a Docker engine
 * (none runs on the development machine; hadolint is not packaged for Debian 12 or npm):
 *
 * - {@link parseDockerfile}: dockerfile-ast (the parser of the Docker language server that
 *   VS Code uses) for instructions, options, exec form, ENV properties and stages; the same
 *   project's dockerfile-utils linter is run by the tests;
 * - {@link dockerIgnore}: @balena/dockerignore, a port of Docker's own .dockerignore matching;
 * - {@link copiedFiles}: which repository files a stage's COPY instructions put where (Docker's
 *   rules for directories, files and destinations), which no tool answers without a build.
 */
import { posix } from 'node:path';
import dockerignore, { type Ignore } from '@balena/dockerignore';
import {
  DockerfileParser,
  Env,
  JSONInstruction,
  ModifiableInstruction,
  type Instruction as AstInstruction,
} from 'dockerfile-ast';

export interface Instruction {
  /** 1-based line of the keyword. */
  readonly line: number;
  /** Upper case: FROM, RUN, COPY, ... */
  readonly keyword: string;
  /** `--name=value` / `--name` options (FROM, COPY, ADD, RUN, HEALTHCHECK). */
  readonly flags: Readonly<Record<string, string>>;
  /** The arguments after the options, continuation lines joined (dockerfile-ast's text). */
  readonly rest: string;
  /** The arguments, one string each (quotes kept in shell form; exec form: the JSON strings). */
  readonly args: readonly string[];
  /** The arguments as a JSON array of strings (exec form), when they are one. */
  readonly exec: readonly string[] | undefined;
  /** ENV: the variables it sets. */
  readonly env: Readonly<Record<string, string>>;
}

export interface Stage {
  readonly index: number;
  readonly base: string;
  readonly name: string | undefined;
  readonly from: Instruction;
  /** The instructions after FROM, up to the next FROM. */
  readonly instructions: readonly Instruction[];
}

export interface Dockerfile {
  /** Instructions before the first FROM (ARG only, in a valid file). */
  readonly preamble: readonly Instruction[];
  readonly stages: readonly Stage[];
}

function instruction(ast: AstInstruction): Instruction {
  const flags: Record<string, string> = {};
  if (ast instanceof ModifiableInstruction) {
    for (const f of ast.getFlags()) flags[f.getName()] = f.getValue() ?? '';
  }
  const exec =
    ast instanceof JSONInstruction && ast.getJSONStrings().length > 0
      ? ast.getJSONStrings().map((s) => s.getJSONValue())
      : undefined;
  const env: Record<string, string> = {};
  if (ast instanceof Env) {
    for (const p of ast.getProperties()) env[p.getName()] = p.getValue() ?? '';
  }
  return {
    line: ast.getRange().start.line + 1,
    keyword: ast.getKeyword().toUpperCase(),
    flags,
    rest: ast.getArgumentsContent() ?? '',
    args: exec ?? ast.getArguments().map((a) => a.getValue()),
    exec,
    env,
  };
}

export function parseDockerfile(text: string): Dockerfile {
  const preamble: Instruction[] = [];
  const stages: {
    index: number;
    base: string;
    name: string | undefined;
    from: Instruction;
    instructions: Instruction[];
  }[] = [];
  for (const ast of DockerfileParser.parse(text).getInstructions()) {
    const ins = instruction(ast);
    if (ins.keyword === 'FROM') {
      const image = ast.getArguments()[0]?.getValue();
      const as = ast.getArguments()[1]?.getValue();
      const name = ast.getArguments()[2]?.getValue();
      if (
        image === undefined ||
        (as !== undefined && (as.toUpperCase() !== 'AS' || name === undefined))
      )
        throw new Error(`line ${ins.line}: FROM image [AS name] expected`);
      stages.push({
        index: stages.length,
        base: image,
        name: name?.toLowerCase(),
        from: ins,
        instructions: [],
      });
    } else {
      const current = stages[stages.length - 1];
      if (current === undefined) preamble.push(ins);
      else current.instructions.push(ins);
    }
  }
  return { preamble, stages };
}

/** The command of a `HEALTHCHECK [options] CMD ...` (exec form), parsed as a CMD instruction. */
export function healthcheckCommand(ins: Instruction): readonly string[] | undefined {
  const cmd = DockerfileParser.parse(ins.rest).getInstructions()[0];
  return cmd === undefined ? undefined : instruction(cmd).exec;
}

/** COPY/ADD sources and destination (exec or shell form). */
export function copyArgs(ins: Instruction): { sources: string[]; dest: string } {
  if (ins.args.length < 2)
    throw new Error(`line ${ins.line}: ${ins.keyword} needs a source and a destination`);
  return { sources: ins.args.slice(0, -1), dest: ins.args[ins.args.length - 1] ?? '' };
}

/** Normalises a context-relative path: no leading `./` or `/`, no trailing `/`, `//` folded. */
export function cleanPath(p: string): string {
  const parts: string[] = [];
  for (const seg of p.replace(/\\/g, '/').split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') parts.pop();
    else parts.push(seg);
  }
  return parts.join('/');
}

// the package is CommonJS (`module.exports = ignore`); its types declare a default export
const ignore = dockerignore as unknown as typeof dockerignore.default;

/** The matcher of a .dockerignore file: `ignores(path)` for a context-relative path. */
export function dockerIgnore(text: string): Ignore {
  return ignore().add(text);
}

// --- what a stage's COPY instructions put where -----------------------------------------------

/**
 * The WORKDIR in force at an instruction of a stage (absolute; `/` before any WORKDIR), or at
 * the end of the stage without one.
 */
export function workdirAt(stage: Stage, ins?: Instruction): string {
  let wd = '/';
  for (const i of stage.instructions) {
    if (i === ins) break;
    if (i.keyword === 'WORKDIR') wd = posix.resolve(wd, i.rest.trim());
  }
  return wd;
}

/**
 * The files a stage's COPY instructions put into the image: absolute image path → repository
 * path. `repoPathOf` says which repository path holds a COPY source (`undefined`: leave that
 * source out); `filesBelow` lists the files under a repository path (the path for a file).
 * Docker's rules: a directory source copies its contents into the destination; a file goes
 * into a destination ending in `/` (or given several sources) under its own name, else to the
 * destination path itself.
 */
export function copiedFiles(
  stage: Stage,
  repoPathOf: (ins: Instruction, source: string) => string | undefined,
  filesBelow: (repoPath: string) => string[],
): Map<string, string> {
  const out = new Map<string, string>();
  for (const ins of stage.instructions.filter((i) => i.keyword === 'COPY')) {
    const { sources, dest } = copyArgs(ins);
    const destAbs = posix.resolve(workdirAt(stage, ins), dest);
    const intoDir = dest.endsWith('/') || sources.length > 1;
    for (const src of sources) {
      const repoPath = repoPathOf(ins, src);
      if (repoPath === undefined) continue;
      for (const f of filesBelow(repoPath)) {
        const inside = posix.relative(repoPath, f);
        const target =
          inside === ''
            ? intoDir
              ? posix.join(destAbs, posix.basename(f))
              : destAbs
            : posix.join(destAbs, inside);
        out.set(target, f);
      }
    }
  }
  return out;
}
