/**
 * Process and machine CPU accounting from /proc (Linux only).
 *
 * The primary figure is utime + stime from /proc/<pid>/stat: whole-process totals (all
 * threads), in clock ticks of 1 / CLK_TCK s (10 ms at the usual 100 Hz). A measured window
 * of a few seconds therefore has a granularity error of ±1 tick per reading; the reports
 * give the raw tick counts so the reader can judge it. As a cross-check with nanosecond
 * resolution, the run time of every live thread is summed from
 * /proc/<pid>/task/<tid>/schedstat (threads that exit inside the window are missed).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';

function readClockTicks(): number {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    if (Number.isInteger(n) && n > 0) return n;
  } catch {
    // fall through to the Linux default
  }
  return 100;
}

/** Clock ticks per second for /proc/<pid>/stat times. */
export const CLK_TCK = readClockTicks();

export interface CpuSample {
  /** utime + stime in clock ticks. */
  readonly ticks: number;
  /** stime alone (time in the kernel: system calls, including loopback delivery). */
  readonly systemTicks: number;
  /** Sum of the live threads' run time in ns, when schedstat is readable. */
  readonly schedNs: number | undefined;
  /**
   * The main thread's (the event loop's) time runnable but waiting for a CPU, in ns
   * (schedstat's second field), when readable: time the OS did not run it although it had
   * work.
   */
  readonly mainWaitNs: number | undefined;
}

/** CPU consumed so far by a process (all threads). Throws when the process is gone. */
export function readCpu(pid: number): CpuSample {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error(`cannot parse /proc/${pid}/stat`);
  }
  return {
    ticks: utime + stime,
    systemTicks: stime,
    schedNs: readSchedNs(pid),
    mainWaitNs: readMainWaitNs(pid),
  };
}

/** `pid`'s main thread's run-queue wait in ns (see {@link CpuSample.mainWaitNs}). */
export function readMainWaitNs(pid: number): number | undefined {
  try {
    const n = Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[1]);
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

function readSchedNs(pid: number): number | undefined {
  try {
    let total = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // the thread exited between the listing and the read
      }
    }
    return Number.isFinite(total) ? total : undefined;
  } catch {
    return undefined;
  }
}

/** Resident set size in KiB, or undefined when the process is gone. */
export function readRssKiB(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] !== undefined ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export interface MachineSample {
  readonly busy: number;
  /** Time the hypervisor gave this VM's vCPUs to someone else (part of busy). */
  readonly steal: number;
  readonly total: number;
}

/** Machine-wide jiffies from the `cpu` line of /proc/stat (all cores). */
export function readMachine(): MachineSample {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  return machineSample(line.replace(/^cpu\s+/, ''));
}

/** Per CPU, from the `cpuN` lines of /proc/stat, in the order of N. */
export function readCpus(): { readonly cpu: number; readonly sample: MachineSample }[] {
  const out: { cpu: number; sample: MachineSample }[] = [];
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (m?.[1] === undefined || m[2] === undefined) continue;
    out.push({ cpu: Number(m[1]), sample: machineSample(m[2]) });
  }
  return out;
}

function machineSample(fields: string): MachineSample {
  const f = fields.trim().split(/\s+/).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, steal: f[7] ?? 0, total };
}

/** CPU model from /proc/cpuinfo (falls back to os.cpus()). */
export function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1] !== undefined) return m[1].trim();
  } catch {
    // not Linux
  }
  return os.cpus()[0]?.model ?? 'unknown';
}

/** True while the process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
