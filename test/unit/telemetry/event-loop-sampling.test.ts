/**
 * The event-loop delay percentiles come from a native histogram that wakes the loop every
 * sampling interval, also when the gateway is idle: sampled every 100 ms, not prom-client's
 * 10 ms (100 wake-ups a second were nearly all of an idle pod's CPU).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import type * as PerfHooks from 'node:perf_hooks';
import { createMetrics, EVENT_LOOP_SAMPLE_MS } from '../../../src/telemetry/metrics.js';

test('the event-loop delay histogram samples every 100 ms and its percentiles are exported', async () => {
  // prom-client reads perf_hooks.monitorEventLoopDelay when the default metrics are made
  const perfHooks = createRequire(import.meta.url)('node:perf_hooks') as typeof PerfHooks;
  const original = perfHooks.monitorEventLoopDelay;
  const resolutions: (number | undefined)[] = [];
  perfHooks.monitorEventLoopDelay = (options) => {
    resolutions.push(options?.resolution);
    return original(options);
  };
  let metrics: ReturnType<typeof createMetrics>;
  try {
    metrics = createMetrics();
  } finally {
    perfHooks.monitorEventLoopDelay = original;
  }
  assert.equal(EVENT_LOOP_SAMPLE_MS, 100);
  assert.deepEqual(resolutions, [100]);
  const text = await metrics.registry.metrics();
  for (const name of ['nodejs_eventloop_lag_p50_seconds', 'nodejs_eventloop_lag_p99_seconds'])
    assert.ok(text.includes(`# TYPE ${name} gauge`), name);
});
