/**
 * Every relative link in README.md, docs/*.md and bench/**\/*.md points to a file that exists,
 * and a `#anchor` (in the same file or another markdown file) to one of its headings, named as
 * GitHub names them. The bench text moves between bench/README.md and bench/history/ as it
 * grows; a link left behind fails here instead of on the reader.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { REPO_ROOT } from '../../helpers/processes.js';

/** GitHub's anchor for a heading's text: lower case, punctuation and symbols dropped, spaces to '-'. */
function slug(heading: string): string {
  const text = heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/`/g, '')
    .replace(/\*\*|__/g, '');
  return text
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '')
    .replace(/ /g, '-');
}

/** The lines outside fenced code blocks, with inline code spans blanked. */
function proseLines(text: string): { line: string; n: number }[] {
  const out: { line: string; n: number }[] = [];
  let fence = false;
  text.split('\n').forEach((line, i) => {
    if (/^\s*(```|~~~)/.test(line)) {
      fence = !fence;
      return;
    }
    if (!fence) out.push({ line: line.replace(/`[^`]*`/g, '``'), n: i + 1 });
  });
  return out;
}

/** The anchors of a markdown file's headings (a repeated one gets -1, -2, … as on GitHub). */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fence = false;
  for (const line of text.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fence = !fence;
    const m = fence ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const base = slug(m[1] ?? '');
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    out.add(count === 0 ? base : `${base}-${count}`);
  }
  return out;
}

/** Broken relative links of these files (paths relative to root), as `file:line: target (why)`. */
function brokenLinks(root: string, files: readonly string[]): string[] {
  const texts = new Map<string, string>();
  const read = (abs: string): string => {
    let t = texts.get(abs);
    if (t === undefined) {
      t = readFileSync(abs, 'utf8');
      texts.set(abs, t);
    }
    return t;
  };
  const broken: string[] = [];
  for (const file of files) {
    const abs = join(root, file);
    for (const { line, n } of proseLines(read(abs))) {
      const targets = [
        ...[...line.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]),
        ...[...line.matchAll(/^\s*\[[^\]]+\]:\s+<?(\S+?)>?(?:\s+"[^"]*")?\s*$/g)].map((m) => m[1]),
      ];
      for (const target of targets) {
        if (target === undefined || /^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
        const hash = target.indexOf('#');
        const path = decodeURIComponent(hash < 0 ? target : target.slice(0, hash));
        const anchor = hash < 0 ? undefined : decodeURIComponent(target.slice(hash + 1));
        const dest =
          path === '' ? abs : path.startsWith('/') ? join(root, path) : resolve(dirname(abs), path);
        const where = `${file}:${n}: ${target}`;
        if (!existsSync(dest)) {
          broken.push(`${where} (no such file)`);
          continue;
        }
        if (anchor === undefined || anchor === '' || !dest.endsWith('.md')) continue;
        if (!anchors(read(dest)).has(anchor.toLowerCase())) {
          broken.push(`${where} (no heading #${anchor} in ${relative(root, dest)})`);
        }
      }
    }
  }
  return broken;
}

/** README.md, docs/*.md and bench/**\/*.md under root. */
function documents(root: string): string[] {
  const out = ['README.md'];
  for (const name of readdirSync(join(root, 'docs')).sort()) {
    if (name.endsWith('.md')) out.push(join('docs', name));
  }
  (function walk(dir: string): void {
    for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
      const p = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== 'node_modules' && entry.name !== 'results') walk(p);
      } else if (entry.name.endsWith('.md')) out.push(p);
    }
  })('bench');
  return out.filter((f) => existsSync(join(root, f)));
}

void describe('markdown links', () => {
  void it('finds a link to a missing file and to a missing heading, and accepts good ones', () => {
    const root = mkdtempSync(join(tmpdir(), 'md-links-'));
    try {
      mkdirSync(join(root, 'docs'));
      mkdirSync(join(root, 'bench', 'history'), { recursive: true });
      writeFileSync(
        join(root, 'README.md'),
        '# Top\n\nSee [design](docs/design.md#layers-one-way) and [gone](docs/gone.md).\n',
      );
      writeFileSync(
        join(root, 'docs', 'design.md'),
        '# Design\n\n## Layers: one way\n\n## Layers: one way\n',
      );
      writeFileSync(
        join(root, 'bench', 'README.md'),
        [
          '# bench/',
          '',
          '## Isolation: `--pin`',
          '',
          '[pin](#isolation---pin), [up](../README.md#top), [twice](../docs/design.md#layers-one-way-1)',
          '[stale](history/uplink.md#the-fourth-pass) and [self](#nowhere).',
          '```sh',
          'echo "[not a link](missing.md)"',
          '```',
          '',
        ].join('\n'),
      );
      writeFileSync(join(root, 'bench', 'history', 'uplink.md'), '# Uplink\n\n## The fifth pass\n');
      assert.deepEqual(brokenLinks(root, documents(root)), [
        'README.md:3: docs/gone.md (no such file)',
        'bench/README.md:6: history/uplink.md#the-fourth-pass (no heading #the-fourth-pass in bench/history/uplink.md)',
        'bench/README.md:6: #nowhere (no heading #nowhere in bench/README.md)',
      ]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  void it('README.md, docs/*.md and bench/**/*.md have no broken relative link', () => {
    const files = documents(REPO_ROOT);
    assert.ok(
      files.includes(join('bench', 'README.md')) && files.includes(join('docs', 'design.md')),
    );
    assert.deepEqual(brokenLinks(REPO_ROOT, files), []);
  });
});
