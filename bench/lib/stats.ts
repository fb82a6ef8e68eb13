/** Small statistics helpers for the benchmark reports. */

/** Median of the finite values; null when there are none. */
export function median(xs: readonly (number | null)[]): number | null {
  const s = xs.filter((x): x is number => x !== null && Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100) of an ascending array; null when empty. */
export function percentile(sorted: Float64Array, p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Rounds to `digits` significant decimals after the point; keeps null. */
export function round(x: number | null, digits = 1): number | null {
  if (x === null || !Number.isFinite(x)) return null;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** a / b, or null when either is missing or b is 0. */
export function ratio(a: number | null, b: number | null): number | null {
  if (a === null || b === null || b === 0) return null;
  return a / b;
}

/** A growable list of latencies in milliseconds. */
/** The values as given, their min, quartiles (nearest rank), median and max, rounded. */
export function spreadOf(xs: readonly number[], digits = 3): Record<string, unknown> {
  const s = Float64Array.from(xs).sort();
  return {
    perRound: xs,
    min: round(s.length > 0 ? s[0]! : null, digits),
    q1: round(percentile(s, 25), digits),
    median: round(median(xs), digits),
    q3: round(percentile(s, 75), digits),
    max: round(s.length > 0 ? s[s.length - 1]! : null, digits),
  };
}

export class Samples {
  private buf = new Float64Array(4096);
  private n = 0;

  push(x: number): void {
    if (this.n === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.n++] = x;
  }

  get length(): number {
    return this.n;
  }

  /** The samples in the order pushed (a copy). */
  values(): Float64Array {
    return this.buf.slice(0, this.n);
  }

  /** Arithmetic mean in ms (rounded to µs); null when empty. */
  mean(): number | null {
    if (this.n === 0) return null;
    let total = 0;
    for (let i = 0; i < this.n; i++) total += this.buf[i]!;
    return round(total / this.n, 3);
  }

  /** p50, p90, p99 and max in ms (rounded to µs). */
  quantiles(): {
    p50Ms: number | null;
    p90Ms: number | null;
    p99Ms: number | null;
    maxMs: number | null;
  } {
    const s = this.buf.slice(0, this.n).sort();
    return {
      p50Ms: round(percentile(s, 50), 3),
      p90Ms: round(percentile(s, 90), 3),
      p99Ms: round(percentile(s, 99), 3),
      maxMs: round(s.length > 0 ? s[s.length - 1]! : null, 3),
    };
  }

  /** p50, p99 and max in ms (rounded to µs). */
  summary(): { p50Ms: number | null; p99Ms: number | null; maxMs: number | null } {
    const s = this.buf.slice(0, this.n).sort();
    return {
      p50Ms: round(percentile(s, 50), 3),
      p99Ms: round(percentile(s, 99), 3),
      maxMs: round(s.length > 0 ? s[s.length - 1]! : null, 3),
    };
  }
}

export function increment(counts: Record<string, number>, key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
