/**
 * OpenTelemetry's process-wide registrations (the global tracer provider, context manager and
 * propagator that `setupTracing` registers) put back to none, so that the next file of a
 * shared process registers its own (scripts/test-groups.mjs): a file that sets up tracing
 * calls this when it ends (`after`).
 */
import { context, propagation, trace } from '@opentelemetry/api';

export function resetOpenTelemetryGlobals(): void {
  trace.disable();
  context.disable();
  propagation.disable();
}
