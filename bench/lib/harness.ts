/**
 * What both benchmarks share: measurement windows (server CPU, load generator CPU, machine
 * load), alternating rounds, the environment block, and writing the JSON result.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, relative } from 'node:path';
import { CLK_TCK, cpuModel, readMachine, readMainWaitNs } from './proc.js';
import { REPO_ROOT, libcoapVersion, type ServerProcess } from './servers.js';
import { round } from './stats.js';

export interface Window {
  readonly wallMs: number;
  /** Server utime + stime over the window, in clock ticks. */
  readonly serverCpuTicks: number;
  /** The same in µs (ticks × 1e6 / CLK_TCK). */
  readonly serverCpuUs: number;
  /** The kernel (stime) part of serverCpuUs, in µs. */
  readonly serverSystemCpuUs: number;
  /** Server CPU from the per-thread schedstat sums (ns resolution), in µs. */
  readonly serverCpuUsSchedstat: number | null;
  /** Server CPU / wall time (1 = one core fully busy). */
  readonly serverCpuUtilisation: number;
  /** This process's (the load generator's) CPU / wall time. */
  readonly loadGenCpuUtilisation: number;
  /**
   * Share of the window the server's main thread was runnable but not run (waiting for a
   * CPU); null when schedstat is unreadable. A server behind its offered rate at a low
   * utilisation with a high share here was starved by the machine, not held back by itself.
   */
  readonly serverRunqueueWait: number | null;
  /** The same for this process's (the load generator's) main thread. */
  readonly loadGenRunqueueWait: number | null;
  /** Share of all cores busy, machine-wide (includes other tenants and steal). */
  readonly machineBusy: number;
  /** Share of all cores' time stolen by the hypervisor. */
  readonly machineSteal: number;
}

/** Starts a window now; call the returned function to close it. */
export function openWindow(server: Pick<ServerProcess, 'cpu'>): () => Window {
  const cpu0 = server.cpu();
  const m0 = readMachine();
  const self0 = process.cpuUsage();
  const selfWait0 = readMainWaitNs(process.pid);
  const t0 = performance.now();
  return () => {
    const t1 = performance.now();
    const self = process.cpuUsage(self0);
    const m1 = readMachine();
    const cpu1 = server.cpu();
    const selfWait1 = readMainWaitNs(process.pid);
    const wallMs = t1 - t0;
    const waitShare = (w0: number | undefined, w1: number | undefined): number | null =>
      w0 !== undefined && w1 !== undefined ? (w1 - w0) / 1e6 / wallMs : null;
    const ticks = cpu1.ticks - cpu0.ticks;
    const us = (ticks * 1e6) / CLK_TCK;
    const sched =
      cpu0.schedNs !== undefined && cpu1.schedNs !== undefined
        ? (cpu1.schedNs - cpu0.schedNs) / 1000
        : null;
    return {
      wallMs,
      serverCpuTicks: ticks,
      serverCpuUs: us,
      serverSystemCpuUs: ((cpu1.systemTicks - cpu0.systemTicks) * 1e6) / CLK_TCK,
      serverCpuUsSchedstat: sched,
      serverCpuUtilisation: us / 1000 / wallMs,
      loadGenCpuUtilisation: (self.user + self.system) / 1000 / wallMs,
      serverRunqueueWait: waitShare(cpu0.mainWaitNs, cpu1.mainWaitNs),
      loadGenRunqueueWait: waitShare(selfWait0, selfWait1),
      machineBusy: m1.total > m0.total ? (m1.busy - m0.busy) / (m1.total - m0.total) : 0,
      machineSteal: m1.total > m0.total ? (m1.steal - m0.steal) / (m1.total - m0.total) : 0,
    };
  };
}

/** The window's shared fields, rounded for the report. */
export function windowReport(w: Window): Record<string, number | null> {
  return {
    wallMs: round(w.wallMs, 0),
    serverCpuTicks: w.serverCpuTicks,
    serverSystemShare: w.serverCpuUs > 0 ? round(w.serverSystemCpuUs / w.serverCpuUs, 3) : null,
    serverCpuUtilisation: round(w.serverCpuUtilisation, 3),
    loadGenCpuUtilisation: round(w.loadGenCpuUtilisation, 3),
    serverRunqueueWait: w.serverRunqueueWait === null ? null : round(w.serverRunqueueWait, 3),
    loadGenRunqueueWait: w.loadGenRunqueueWait === null ? null : round(w.loadGenRunqueueWait, 3),
    machineBusy: round(w.machineBusy, 3),
    machineSteal: round(w.machineSteal, 3),
  };
}

export function environment(): Record<string, unknown> {
  return {
    node: process.version,
    v8: process.versions.v8,
    openssl: process.versions.openssl,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpu: cpuModel(),
    cores: os.cpus().length,
    clkTck: CLK_TCK,
    loadAverageAtStart: os.loadavg().map((x) => round(x, 2)),
    libcoap: libcoapVersion() ?? 'unknown',
    source: sourceState(),
  };
}

/**
 * The commit under test and any uncommitted change below src/ (the build measured is
 * whatever src/ held when it was compiled). Read-only git commands; null outside a checkout.
 */
function sourceState(): { commit: string; srcChanges: string[] } | null {
  const git = (...args: string[]): string =>
    execFileSync('git', ['--no-optional-locks', '-C', REPO_ROOT, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  try {
    return {
      commit: git('rev-parse', '--short=12', 'HEAD').trim(),
      srcChanges: git('status', '--porcelain', '--untracked-files=all', '--', 'src')
        .split('\n')
        .filter((l) => l.trim() !== ''),
    };
  } catch {
    return null;
  }
}

/** The command as typed, relative to the repository root. */
export function commandLine(): string {
  const script = process.argv[1] !== undefined ? relative(REPO_ROOT, process.argv[1]) : '?';
  return ['node', script, ...process.argv.slice(2)].join(' ');
}

/** Writes bench/results/<name>-<timestamp>.json and returns its path (relative). */
export function writeResult(name: string, startedAt: Date, result: unknown): string {
  const dir = join(REPO_ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const file = join(dir, `${name}-${stamp}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  return relative(REPO_ROOT, file);
}

export function log(message: string): void {
  process.stderr.write(`${message}\n`);
}
