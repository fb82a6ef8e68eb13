/**
 * The batch span processor as `setupTracing` builds it: finished spans wait for the export
 * delay (`OTEL_BSP_SCHEDULE_DELAY`, else the specification's 5 s) and leave together in one
 * export; shutdown exports whatever still waits. The SDK's processor arms the global
 * `setTimeout`, not coap-edge's `Clock`, so node:test's mock timers drive it: no sleeping.
 * Spans go to a recording exporter through the `exporter` test hook; that sampled traces
 * reach a real OTLP receiver with every span, attribute and parent is tracing.test.ts's.
 *
 * Tracing is global per process: this file puts OpenTelemetry's globals back to none when it
 * ends, for the next file of its process (test/helpers/otel-globals.ts).
 */
import { after, afterEach, beforeEach, describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { TracingHandle } from '../../src/telemetry/setup.js';
import { setupTestTracing } from '../helpers/tracing.js';
import { resetOpenTelemetryGlobals } from '../helpers/otel-globals.js';

/** Keeps each export call's spans apart, answers success at once. */
class RecordingExporter implements SpanExporter {
  readonly exports: string[][] = [];
  shutdowns = 0;

  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    this.exports.push(spans.map((s) => s.name));
    done({ code: ExportResultCode.SUCCESS });
  }

  shutdown(): Promise<void> {
    this.shutdowns++;
    return Promise.resolve();
  }
}

function setup(env: Record<string, string>): {
  handle: TracingHandle;
  exporter: RecordingExporter;
} {
  const exporter = new RecordingExporter();
  const handle = setupTestTracing({ env, exporter });
  assert.ok(handle !== undefined);
  return { handle, exporter };
}

/** A finished (sampled) span of the handle's tracer. */
function finish(handle: TracingHandle, name: string): void {
  handle.tracing.tracer.startSpan(name).end();
}

/** Lets the processor's promise chain after an export settle (mock timers do not run it). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

describe('batch export on the configured delay', () => {
  const handles: TracingHandle[] = [];
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }));
  afterEach(async () => {
    for (const h of handles.splice(0)) await h.shutdown();
    mock.timers.reset();
  });

  it("without OTEL_BSP_SCHEDULE_DELAY: the specification's 5 s, every span of the period in one export", async () => {
    const { handle, exporter } = setup({});
    handles.push(handle);
    assert.equal(handle.batch.scheduledDelayMillis, 5000);
    finish(handle, 'a');
    mock.timers.tick(1000);
    finish(handle, 'b');
    mock.timers.tick(3999);
    finish(handle, 'c');
    assert.deepEqual(exporter.exports, [], 'nothing exported within 4 999 ms of the first span');
    mock.timers.tick(1);
    assert.deepEqual(exporter.exports, [['a', 'b', 'c']], 'one export 5 s after the first span');
    await settle();
    finish(handle, 'd');
    mock.timers.tick(4999);
    assert.equal(exporter.exports.length, 1);
    mock.timers.tick(1);
    assert.deepEqual(exporter.exports, [['a', 'b', 'c'], ['d']]);
  });

  it('OTEL_BSP_SCHEDULE_DELAY is honoured', async () => {
    const { handle, exporter } = setup({ OTEL_BSP_SCHEDULE_DELAY: '200' });
    handles.push(handle);
    assert.equal(handle.batch.scheduledDelayMillis, 200);
    assert.deepEqual(handle.warnings, []);
    finish(handle, 'a');
    mock.timers.tick(199);
    assert.deepEqual(exporter.exports, []);
    mock.timers.tick(1);
    assert.deepEqual(exporter.exports, [['a']]);
    await settle();
    finish(handle, 'b');
    mock.timers.tick(200);
    assert.deepEqual(exporter.exports, [['a'], ['b']]);
  });

  it('OTEL_BSP_MAX_EXPORT_BATCH_SIZE: a full batch leaves at once, without waiting for the delay', () => {
    const { handle, exporter } = setup({ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '3' });
    handles.push(handle);
    finish(handle, 'a');
    finish(handle, 'b');
    assert.deepEqual(exporter.exports, []);
    finish(handle, 'c');
    assert.deepEqual(exporter.exports, [['a', 'b', 'c']]);
  });

  it('an unusable value is reported and the default applies', () => {
    const { handle } = setup({ OTEL_BSP_SCHEDULE_DELAY: 'soon' });
    handles.push(handle);
    assert.equal(handle.batch.scheduledDelayMillis, 5000);
    assert.equal(handle.warnings.length, 1);
    assert.match(handle.warnings[0] ?? '', /^OTEL_BSP_SCHEDULE_DELAY=soon /);
  });

  it('shutdown exports every span still waiting, then shuts the exporter down', async () => {
    const { handle, exporter } = setup({ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '2' });
    finish(handle, 'a');
    finish(handle, 'b');
    finish(handle, 'c');
    finish(handle, 'd');
    finish(handle, 'e');
    assert.equal(exporter.exports.flat().length, 2, 'one full batch left at once');
    await handle.shutdown();
    assert.deepEqual(exporter.exports.flat().sort(), ['a', 'b', 'c', 'd', 'e']);
    assert.equal(exporter.shutdowns, 1);
    assert.equal(handle.tracing.on, false);
  });
});

// the next file of a shared process registers its own (scripts/test-groups.mjs)
after(resetOpenTelemetryGlobals);
