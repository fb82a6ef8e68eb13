/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): self time per function, top N,
 * as a share of the busy (non-idle) samples.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { REPO_ROOT } from './servers.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface HotFunction {
  readonly function: string;
  readonly location: string;
  readonly selfMs: number;
  /** Share of the busy (non-idle) samples, in %. */
  readonly selfPercent: number;
}

export interface ProfileSummary {
  readonly file: string;
  readonly busyMs: number;
  readonly idleMs: number;
  readonly top: HotFunction[];
}

function location(url: string, line: number): string {
  if (url === '') return '(native)';
  const path = url.startsWith('file://') ? relative(REPO_ROOT, new URL(url).pathname) : url;
  return `${path}:${line + 1}`;
}

export function summariseProfile(file: string, topN = 15): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const self = new Map<string, { fn: string; loc: string; us: number }>();
  let busyUs = 0;
  let idleUs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const node = byId.get(p.samples[i]!);
    const dt = p.timeDeltas[i] ?? 0;
    if (node === undefined) continue;
    const fn = node.callFrame.functionName || '(anonymous)';
    if (fn === '(idle)') {
      idleUs += dt;
      continue;
    }
    busyUs += dt;
    const loc = location(node.callFrame.url, node.callFrame.lineNumber);
    const key = `${fn}@${loc}`;
    const e = self.get(key) ?? { fn, loc, us: 0 };
    e.us += dt;
    self.set(key, e);
  }
  const top = [...self.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, topN)
    .map((e) => ({
      function: e.fn,
      location: e.loc,
      selfMs: Math.round(e.us / 100) / 10,
      selfPercent: busyUs > 0 ? Math.round((1000 * e.us) / busyUs) / 10 : 0,
    }));
  const rel = relative(REPO_ROOT, file);
  return {
    file: rel.startsWith('..') ? file : rel,
    busyMs: Math.round(busyUs / 1000),
    idleMs: Math.round(idleUs / 1000),
    top,
  };
}

/** The newest `.cpuprofile` in a directory, if any. */
export function newestProfile(dir: string): string | undefined {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .sort();
  const last = files[files.length - 1];
  return last !== undefined ? join(dir, last) : undefined;
}
