/**
 * Tracing is injected, not global: three gateways in one process, A and B each with a Tracing
 * of their own (`setupTracing` twice, each with its own in-memory exporter) and C with none.
 * Each exporter gets the spans of its own gateway only (roots, and the children the layers
 * below start from the datagram's context), C's datagrams are traced nowhere, and a drop is
 * an event on the datagram span of the gateway that dropped it (diagnostics channels are
 * process-wide; the event names its server).
 *
 * The context manager and propagator the first setup registers are process-wide: this file
 * puts them back to none when it ends, for the next file of its process
 * (test/helpers/otel-globals.ts).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sendDatagram } from '../helpers/processes.js';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { Code } from '../../src/coap/constants.js';
import { CipherSuite } from '../../src/dtls/constants.js';
import { coapDuplicateChannel } from '../../src/coap/events.js';
import { dtlsDropChannel } from '../../src/dtls/events.js';
import { derivePsk } from '../../src/enos/psk.js';
import type { TracingHandle } from '../../src/telemetry/setup.js';
import { setupTestTracing } from '../helpers/tracing.js';
import { CoapDtlsClient } from '../../src/tools/coap-client.js';
import { eventually } from '../helpers/e2e.js';
import { DEMO, MEASUREPOINT_PAYLOAD, startGateway, type TestGateway } from '../helpers/gateway.js';
import { describeSpans, fromReadableSpan, type OtlpSpan } from '../helpers/otlp.js';
import { resetOpenTelemetryGlobals } from '../helpers/otel-globals.js';

function traced(exporter: InMemorySpanExporter, serviceName: string): TracingHandle {
  const handle = setupTestTracing({
    exporter,
    serviceName,
    // spans leave 50 ms after they end, not after the specification's 5 s, which the wait
    // for both exports would sit out (telemetry/batch-export checks the setting)
    env: { OTEL_BSP_SCHEDULE_DELAY: '50' },
  });
  assert.ok(handle !== undefined);
  return handle;
}

async function deviceRequest(port: number): Promise<void> {
  const client = await CoapDtlsClient.connect({
    host: '127.0.0.1',
    port,
    identity: DEMO.device001.identity,
    psk: derivePsk(DEMO.device001.secret),
    cipherSuites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
    handshakeTimeoutMs: 10_000,
    retransmitTimeoutMs: 500,
  });
  try {
    const res = await client.request({
      method: 'POST',
      path: '/topic/sys/demoPK01/device001/thing/measurepoint/post',
      payload: Buffer.from(MEASUREPOINT_PAYLOAD),
      contentFormat: 50,
      timeoutMs: 10_000,
    });
    // no broker: answered 5.03 at once, which is all this needs
    assert.equal(res.code, Code.SERVICE_UNAVAILABLE);
  } finally {
    await client.close();
  }
}

function garbage(port: number): Promise<void> {
  return sendDatagram(port, Buffer.from('garbage'));
}

describe('telemetry: two gateways with different tracing in one process', () => {
  const exporterA = new InMemorySpanExporter();
  const exporterB = new InMemorySpanExporter();
  let tracingA: TracingHandle;
  let tracingB: TracingHandle;
  let a: TestGateway;
  let b: TestGateway;
  let c: TestGateway;
  let spansA: OtlpSpan[] = [];
  let spansB: OtlpSpan[] = [];

  before(async () => {
    tracingA = traced(exporterA, 'gateway-a');
    tracingB = traced(exporterB, 'gateway-b');
    a = await startGateway({ tracing: tracingA.tracing });
    b = await startGateway({ tracing: tracingB.tracing });
    c = await startGateway();
    for (const gw of [c, a, b]) {
      await garbage(gw.port);
      await deviceRequest(gw.port);
    }
    // each gateway has dropped the garbage by now (its handshake came after it)
    for (const gw of [a, b, c]) assert.equal(gw.gateway.dtls.stats.drops['malformed-record'], 1);
    // the batch goes in end order: once the exchange is exported, the rest was before it
    const exported = (e: InMemorySpanExporter): boolean =>
      e.getFinishedSpans().some((s) => s.name === 'coap.exchange');
    await eventually(() => exported(exporterA) && exported(exporterB), 'both exports');
    spansA = exporterA.getFinishedSpans().map(fromReadableSpan);
    spansB = exporterB.getFinishedSpans().map(fromReadableSpan);
  });

  after(async () => {
    await tracingA?.shutdown();
    await tracingB?.shutdown();
    await a?.close();
    await b?.close();
    await c?.close();
  });

  function check(spans: OtlpSpan[], own: TestGateway, service: string): void {
    const msg = describeSpans(spans);
    const roots = spans.filter((s) => s.parentSpanId === undefined);
    assert.ok(roots.length >= 3, `handshake and request datagrams: ${msg}`);
    for (const r of roots) {
      assert.equal(r.name, 'coap-edge.datagram', msg);
      assert.equal(r.attributes['server.port'], own.port, `only its own datagrams: ${msg}`);
    }
    for (const s of spans) {
      assert.equal(s.resource['service.name'], service, msg);
      assert.ok(
        roots.some((r) => r.traceId === s.traceId),
        `every span belongs to a trace rooted here: ${s.name} ${msg}`,
      );
    }
    for (const name of ['dtls.handshake', 'dtls.decrypt', 'coap.exchange']) {
      assert.ok(
        spans.some((s) => s.name === name),
        `${name}: ${msg}`,
      );
    }
    // the garbage was this gateway's: one datagram span with one drop event
    const dropped = roots.flatMap((r) =>
      r.events.filter(
        (e) => e.name === 'dtls.dropped' && e.attributes['dtls.drop_reason'] === 'malformed-record',
      ),
    );
    assert.equal(dropped.length, 1, msg);
  }

  it("A's exporter has A's spans only, with its drop event", () => {
    check(spansA, a, 'gateway-a');
  });

  it("B's exporter has B's spans only, with its drop event", () => {
    check(spansB, b, 'gateway-b');
  });

  it('C (no tracing) is traced nowhere', () => {
    for (const s of [...spansA, ...spansB]) assert.notEqual(s.attributes['server.port'], c.port);
  });
});

describe('telemetry: a closed gateway leaves no subscription behind', () => {
  it('the channels have no subscriber once the traced gateway closed', async () => {
    const exporter = new InMemorySpanExporter();
    const handle = traced(exporter, 'gateway-closed');
    const gw = await startGateway({ tracing: handle.tracing });
    try {
      assert.equal(dtlsDropChannel.hasSubscribers, true, 'the tracer listens while it runs');
      assert.equal(coapDuplicateChannel.hasSubscribers, true);
    } finally {
      await gw.close();
      await handle.shutdown();
    }
    assert.equal(dtlsDropChannel.hasSubscribers, false);
    assert.equal(coapDuplicateChannel.hasSubscribers, false);
  });
});

// the next file of a shared process registers its own (scripts/test-groups.mjs)
after(resetOpenTelemetryGlobals);
