/**
 * CPU isolation for `uplink.js --pin`: each measured server process on a CPU of its own, the
 * bench process (load generator, broker round-trip client) and every other child (Mosquitto,
 * the platform stand-in, the counting subscriber, the sinks) on the other CPUs.
 *
 * The affinity is set with `taskset` from util-linux, the standard tool for
 * sched_setaffinity (Node has no binding for it): the bench pins itself, all its threads, with
 * `taskset -a -p -c <others> <pid>` before it starts any child, so every child inherits that
 * set; a server is started behind `taskset -c <cpu>` (which execs, so the pid stays the
 * server's and every thread it makes inherits the set). What each process really had is read
 * back from `/proc/<pid>/task/<tid>/status` (`Cpus_allowed_list`), thread by thread, for the
 * JSON, so a pin that did not take shows there.
 *
 * Other tenants of the machine are not pinned: they still run on every CPU.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

/** CPUs of a Linux CPU list (`0-1`, `0,2-3`), ascending; throws on anything else. */
export function parseCpuList(text: string): number[] {
  const cpus = new Set<number>();
  for (const part of text.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (m === null) throw new Error(`not a CPU list: ${JSON.stringify(text)}`);
    const lo = Number(m[1]);
    const hi = m[2] !== undefined ? Number(m[2]) : lo;
    if (hi < lo) throw new Error(`not a CPU list: ${JSON.stringify(text)}`);
    for (let c = lo; c <= hi; c++) cpus.add(c);
  }
  return [...cpus].sort((a, b) => a - b);
}

/** The CPU list form of `cpus` (`[0, 1, 2, 5]` → `0-2,5`). */
export function formatCpuList(cpus: readonly number[]): string {
  const sorted = [...new Set(cpus)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** `Cpus_allowed_list` of a task's status file, parsed. */
function allowedOf(statusText: string): number[] {
  const m = /^Cpus_allowed_list:\s*(\S+)\s*$/m.exec(statusText);
  if (m?.[1] === undefined) throw new Error('no Cpus_allowed_list in the status file');
  return parseCpuList(m[1]);
}

/** The CPUs a process may run on (its main thread's set). */
export function allowedCpus(pid: number = process.pid): number[] {
  return allowedOf(readFileSync(`/proc/${pid}/status`, 'utf8'));
}

export interface PinPlan {
  /** The CPU of every measured server process. */
  readonly serverCpus: readonly number[];
  /** The bench process and every other child. */
  readonly otherCpus: readonly number[];
}

/**
 * Splits the CPUs the bench may use: the server gets `serverCpu` (default the highest), the
 * rest everything else. Needs two CPUs at least.
 */
export function planPin(available: readonly number[], serverCpu?: number): PinPlan {
  if (available.length < 2) {
    throw new Error(
      `--pin needs two CPUs at least; this process may use ${formatCpuList(available)}`,
    );
  }
  const server = serverCpu ?? available[available.length - 1]!;
  if (!available.includes(server)) {
    throw new Error(`CPU ${server} is not one this process may use (${formatCpuList(available)})`);
  }
  return { serverCpus: [server], otherCpus: available.filter((c) => c !== server) };
}

/** Sets the affinity of every thread of `pid` (`taskset -a -p -c`). */
export function pinProcess(pid: number, cpus: readonly number[]): void {
  execFileSync('taskset', ['-a', '-p', '-c', formatCpuList(cpus), String(pid)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

/** The command prefix that starts a process on `cpus` (`taskset -c <list>`; it execs). */
export function pinLauncher(cpus: readonly number[]): string[] {
  return ['taskset', '-c', formatCpuList(cpus)];
}

export interface Affinity {
  /** The main thread's CPUs, as a CPU list. */
  readonly cpus: string;
  readonly threads: number;
  /** Threads whose set differs from the main thread's (0 when the pin took everywhere). */
  readonly threadsElsewhere: number;
}

/** What a process's threads may run on now, read back from /proc; undefined once it is gone. */
export function affinityOf(pid: number): Affinity | undefined {
  try {
    const main = formatCpuList(allowedCpus(pid));
    let threads = 0;
    let elsewhere = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const set = formatCpuList(
          allowedOf(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8')),
        );
        threads++;
        if (set !== main) elsewhere++;
      } catch {
        // the thread exited between the listing and the read
      }
    }
    return { cpus: main, threads, threadsElsewhere: elsewhere };
  } catch {
    return undefined;
  }
}
