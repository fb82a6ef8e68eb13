/**
 * A measurement window over several processes at once (coap-edge, the broker, the platform
 * stand-in, ...): utime + stime from /proc/<pid>/stat per process, the bench process's own
 * CPU (the load generator) and machine-wide load, between opening and closing the window.
 */
import { CLK_TCK, readCpu, readCpus, readMachine, type CpuSample } from './proc.js';
import { round } from './stats.js';

export interface ProcessCpu {
  /** utime + stime over the window, in clock ticks (1 / CLK_TCK s). */
  readonly ticks: number;
  /** The same in µs. */
  readonly us: number;
  /** The kernel (stime) part, in µs. */
  readonly systemUs: number;
  /** From the per-thread schedstat sums (ns resolution), in µs; null when unreadable. */
  readonly schedUs: number | null;
  /** CPU / wall time; 1 = one core busy. */
  readonly utilisation: number;
}

export interface MultiWindow {
  readonly wallMs: number;
  readonly processes: Record<string, ProcessCpu>;
  /** The bench process's CPU / wall time. */
  readonly loadGenCpuUtilisation: number;
  /** The bench process's CPU over the window, in µs. */
  readonly loadGenCpuUs: number;
  /** Share of all cores busy, machine-wide (other tenants and steal included). */
  readonly machineBusy: number;
  readonly machineSteal: number;
  /** Share of each CPU busy (CPU number → share), other tenants included. */
  readonly cpuBusy: Record<string, number>;
}

function sample(pid: number): CpuSample | undefined {
  try {
    return readCpu(pid);
  } catch {
    return undefined;
  }
}

/** Starts a window over the given processes (name → pid); call the result to close it. */
export function openMultiWindow(pids: Readonly<Record<string, number>>): () => MultiWindow {
  const names = Object.keys(pids);
  const before = new Map(names.map((n) => [n, sample(pids[n]!)]));
  const m0 = readMachine();
  const c0 = readCpus();
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const t1 = performance.now();
    const self = process.cpuUsage(self0);
    const m1 = readMachine();
    const c1 = readCpus();
    const cpuBusy: Record<string, number> = {};
    for (const { cpu, sample: b } of c1) {
      const a = c0.find((x) => x.cpu === cpu)?.sample;
      if (a !== undefined && b.total > a.total) {
        cpuBusy[cpu] = round((b.busy - a.busy) / (b.total - a.total), 3)!;
      }
    }
    const wallMs = t1 - t0;
    const processes: Record<string, ProcessCpu> = {};
    for (const n of names) {
      const a = before.get(n);
      const b = sample(pids[n]!);
      if (a === undefined || b === undefined) continue;
      const ticks = b.ticks - a.ticks;
      const us = (ticks * 1e6) / CLK_TCK;
      processes[n] = {
        ticks,
        us,
        systemUs: ((b.systemTicks - a.systemTicks) * 1e6) / CLK_TCK,
        schedUs:
          a.schedNs !== undefined && b.schedNs !== undefined
            ? (b.schedNs - a.schedNs) / 1000
            : null,
        utilisation: us / 1000 / wallMs,
      };
    }
    const loadGenCpuUs = self.user + self.system;
    return {
      wallMs,
      processes,
      loadGenCpuUs,
      loadGenCpuUtilisation: loadGenCpuUs / 1000 / wallMs,
      machineBusy: m1.total > m0.total ? (m1.busy - m0.busy) / (m1.total - m0.total) : 0,
      machineSteal: m1.total > m0.total ? (m1.steal - m0.steal) / (m1.total - m0.total) : 0,
      cpuBusy,
    };
  };
}

export interface ProcessReport {
  /** utime + stime per message, µs. */
  readonly usPerMessage: number | null;
  /** The kernel (stime) part of it. */
  readonly systemUsPerMessage: number | null;
  /** The same from schedstat (ns resolution), as a cross-check. */
  readonly schedstatUsPerMessage: number | null;
  readonly ticks: number;
  readonly utilisation: number | null;
}

/** Per-process CPU per message (µs), ticks and utilisation, rounded for the report. */
export function perMessage(w: MultiWindow, messages: number): Record<string, ProcessReport> {
  const out: Record<string, ProcessReport> = {};
  const per = (us: number | null): number | null =>
    us !== null && messages > 0 ? round(us / messages, 2) : null;
  for (const [name, p] of Object.entries(w.processes)) {
    out[name] = {
      usPerMessage: per(p.us),
      systemUsPerMessage: per(p.systemUs),
      schedstatUsPerMessage: per(p.schedUs),
      ticks: p.ticks,
      utilisation: round(p.utilisation, 3),
    };
  }
  return out;
}
