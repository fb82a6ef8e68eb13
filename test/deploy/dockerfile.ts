/**
 * Just enough of Docker's build file formats to check deploy/Dockerfile and .dockerignore
 * without a Docker engine (none runs on the development machine, and hadolint is not there).
 *
 * - {@link parseDockerfile}: instructions with their line numbers, continuation lines (`\`
 *   at the end of a line; comment lines inside a continuation are dropped, as Docker does),
 *   `--flag=value` options, exec form (JSON array) or shell form, and stages
 *   (`FROM image [AS name]`).
 * - {@link DockerIgnore}: the patterns of a .dockerignore (Go `filepath.Match` syntax plus
 *   `**`, `!` exceptions, the last matching line wins, a match on a directory covers what is
 *   inside it).
 */
import { posix } from 'node:path';

export interface Instruction {
  /** 1-based line of the keyword. */
  readonly line: number;
  /** Upper case: FROM, RUN, COPY, ... */
  readonly keyword: string;
  /** Leading `--name=value` / `--name` options (FROM, COPY, ADD, RUN, HEALTHCHECK). */
  readonly flags: Readonly<Record<string, string>>;
  /** The arguments after the options, continuation lines joined. */
  readonly rest: string;
  /** The arguments as a JSON array of strings (exec form), when they are one. */
  readonly exec: readonly string[] | undefined;
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

const FLAG_KEYWORDS = new Set(['FROM', 'COPY', 'ADD', 'RUN', 'HEALTHCHECK']);

function execForm(text: string): string[] | undefined {
  const t = text.trim();
  if (!t.startsWith('[')) return undefined;
  try {
    const v = JSON.parse(t) as unknown;
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : undefined;
  } catch {
    return undefined;
  }
}

function splitFlags(
  keyword: string,
  args: string,
): { flags: Record<string, string>; rest: string } {
  const flags: Record<string, string> = {};
  let rest = args.trimStart();
  if (!FLAG_KEYWORDS.has(keyword)) return { flags, rest };
  for (
    let m = /^--([A-Za-z-]+)(?:=(\S*))?\s+/.exec(rest);
    m;
    m = /^--([A-Za-z-]+)(?:=(\S*))?\s+/.exec(rest)
  ) {
    flags[m[1] ?? ''] = m[2] ?? '';
    rest = rest.slice(m[0].length);
  }
  return { flags, rest };
}

export function parseDockerfile(text: string): Dockerfile {
  const lines = text.split(/\r?\n/);
  const instructions: Instruction[] = [];
  let pending: { line: number; text: string } | undefined;
  lines.forEach((raw, i) => {
    const trimmed = raw.trim();
    // comment lines (parser directives included) and blank lines; inside a continuation too
    if (trimmed.startsWith('#') || (trimmed === '' && pending === undefined)) return;
    if (trimmed === '' && pending !== undefined) return;
    const continued = /\\\s*$/.test(raw);
    const part = continued ? raw.replace(/\\\s*$/, '') : raw;
    if (pending === undefined) pending = { line: i + 1, text: part };
    else pending.text += part;
    if (!continued) {
      const m = /^\s*(\S+)\s*([\s\S]*)$/.exec(pending.text);
      if (m === null) throw new Error(`line ${pending.line}: cannot parse`);
      const keyword = (m[1] ?? '').toUpperCase();
      const { flags, rest } = splitFlags(keyword, m[2] ?? '');
      instructions.push({ line: pending.line, keyword, flags, rest, exec: execForm(rest) });
      pending = undefined;
    }
  });
  if (pending !== undefined) throw new Error(`line ${pending.line}: continuation at end of file`);

  const preamble: Instruction[] = [];
  const stages: {
    index: number;
    base: string;
    name: string | undefined;
    from: Instruction;
    instructions: Instruction[];
  }[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?\s*$/i.exec(ins.rest);
      if (m === null) throw new Error(`line ${ins.line}: FROM image [AS name] expected`);
      stages.push({
        index: stages.length,
        base: m[1] ?? '',
        name: m[2]?.toLowerCase(),
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

/** The shell words of a simple command line (quotes respected; no expansions). */
export function shellWords(text: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] ?? '';
    if (quote !== undefined) {
      if (c === quote) quote = undefined;
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  return words;
}

/** `ENV a=b c=d` or `ENV a b` as pairs. */
export function envPairs(ins: Instruction): Record<string, string> {
  const out: Record<string, string> = {};
  const words = shellWords(ins.rest);
  if (words.length > 0 && words.every((w) => w.includes('='))) {
    for (const w of words) {
      const eq = w.indexOf('=');
      out[w.slice(0, eq)] = w.slice(eq + 1);
    }
  } else if (words.length >= 1) {
    out[words[0] ?? ''] = words.slice(1).join(' ');
  }
  return out;
}

/** COPY/ADD sources and destination (exec or shell form). */
export function copyArgs(ins: Instruction): { sources: string[]; dest: string } {
  const words = ins.exec ?? shellWords(ins.rest);
  if (words.length < 2)
    throw new Error(`line ${ins.line}: ${ins.keyword} needs a source and a destination`);
  return { sources: words.slice(0, -1), dest: words[words.length - 1] ?? '' };
}

// --- .dockerignore ----------------------------------------------------------------------------

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

function globToRegExp(pattern: string): RegExp {
  let re = '';
  const segs = pattern.split('/');
  segs.forEach((seg, i) => {
    const last = i === segs.length - 1;
    if (seg === '**') {
      // any number of path segments (also none)
      re += last ? '.*' : '(?:[^/]+/)*';
      return;
    }
    for (let j = 0; j < seg.length; j++) {
      const c = seg[j] ?? '';
      if (c === '*') re += '[^/]*';
      else if (c === '?') re += '[^/]';
      else if (c === '[') {
        const close = seg.indexOf(']', j + 1);
        if (close < 0) re += '\\[';
        else {
          let cls = seg.slice(j + 1, close);
          if (cls.startsWith('^') || cls.startsWith('!')) cls = `^${cls.slice(1)}`;
          re += `[${cls}]`;
          j = close;
        }
      } else if (c === '\\' && j + 1 < seg.length) {
        j++;
        re += (seg[j] ?? '').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      } else re += c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    }
    if (!last) re += '/';
  });
  return new RegExp(`^${re}$`);
}

export class DockerIgnore {
  readonly rules: readonly {
    readonly exclude: boolean;
    readonly re: RegExp;
    readonly pattern: string;
  }[];

  constructor(text: string) {
    const rules: { exclude: boolean; re: RegExp; pattern: string }[] = [];
    for (const raw of text.split(/\r?\n/)) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const exclude = !line.startsWith('!');
      const pattern = cleanPath(exclude ? line : line.slice(1).trim());
      if (pattern === '') continue;
      rules.push({ exclude, re: globToRegExp(pattern), pattern: line });
    }
    this.rules = rules;
  }

  /** Whether a context-relative path is left out of the build context. */
  excludes(path: string): boolean {
    const p = cleanPath(path);
    const parts = p.split('/');
    // the path itself and each parent directory: a pattern matching a parent covers the path
    const candidates = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const rule of this.rules) {
      if (candidates.some((c) => rule.re.test(c))) excluded = rule.exclude;
    }
    return excluded;
  }
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
