/**
 * What every builder of the composition root (`src/gateway/build/`) is given and gives back.
 * `Gateway.build` calls the builders in dependency order: each gets the components it needs,
 * already built, so no component is handed a sink that is connected later.
 */
import { CoapEdgeError } from '../../errors/index.js';
import type { Config } from '../../config/load.js';
import type { Logger } from '../../telemetry/log.js';
import type { MetricSources } from '../../telemetry/metrics.js';
import type { Tracing } from '../../telemetry/trace.js';
import type { Clock } from '../../time/clock.js';
import type { ReadinessCheck } from '../admin-server.js';

/** A start-up problem the operator must fix (port taken, file invalid); exit code 2. */
export class StartupError extends CoapEdgeError {
  readonly code = 'STARTUP_FAILED';
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}

/** Something to close on shutdown (or when start-up fails half way). */
export type Closer = () => Promise<unknown> | void;

export interface BuildContext {
  readonly config: Config;
  readonly log: Logger;
  /** The one clock every component's time and timers come from (docs/design.md, "Time"). */
  readonly clock: Clock;
  /**
   * What is open so far, closed last opened first. A builder adds each thing the moment it
   * is open rather than returning its closers: when it fails half way (a bad setting after a
   * connection is open), what it opened is closed with the rest.
   */
  readonly closers: Closer[];
  /** From `setupTracing` (src/telemetry/setup.ts), for the components that trace; default none. */
  readonly tracing?: Tracing;
}

/** A builder's result: its component, its readiness checks and what the metrics read of it. */
export interface Built<C, M extends Partial<MetricSources> = Record<never, never>> {
  readonly component: C;
  readonly checks: readonly ReadinessCheck[];
  readonly metrics: M;
}

/** Closes everything in `closers`, last opened first, and empties the list. */
export async function runClosers(closers: Closer[]): Promise<void> {
  for (const c of closers.splice(0).reverse()) {
    try {
      await c();
    } catch {
      // keep closing the rest
    }
  }
}
