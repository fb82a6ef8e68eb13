/**
 * The telemetry/ files share processes (scripts/test-groups.mjs): each file that sets up tracing
 * puts OpenTelemetry's globals back to none when it ends (test/helpers/otel-globals.ts). Without
 * that, the next setup's registration is refused (the API keeps the first provider, context
 * manager and propagator) and spans made through the global API go to the earlier provider.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { trace } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { TracingHandle } from '../../src/telemetry/setup.js';
import { setupTestTracing } from '../helpers/tracing.js';
import { resetOpenTelemetryGlobals } from '../helpers/otel-globals.js';

/** Keeps the names of the spans it is given (the SDK's in-memory exporter forgets at shutdown). */
class Names implements SpanExporter {
  readonly names: string[] = [];
  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    this.names.push(...spans.map((s) => s.name));
    done({ code: ExportResultCode.SUCCESS });
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

function setup(exporter: SpanExporter): TracingHandle {
  const handle = setupTestTracing({ env: { OTEL_BSP_SCHEDULE_DELAY: '10' }, exporter });
  assert.ok(handle !== undefined);
  return handle;
}

describe('OpenTelemetry globals between the files of a shared process', () => {
  it('after resetOpenTelemetryGlobals the next setup is the global one', async () => {
    const first = new Names();
    const a = setup(first);
    trace.getTracer('test').startSpan('one').end();
    await a.shutdown();
    assert.deepEqual(first.names, ['one']);
    resetOpenTelemetryGlobals();

    const second = new Names();
    const b = setup(second);
    trace.getTracer('test').startSpan('two').end();
    await b.shutdown();
    assert.deepEqual(second.names, ['two']);
    assert.deepEqual(first.names, ['one']);
  });
});

// the next file of a shared process registers its own (scripts/test-groups.mjs)
after(resetOpenTelemetryGlobals);
