/**
 * The bench's tracing switch (bench/lib/tracing-switch.ts, `instructions.js --alternate`):
 * `setupTracing` publishes its `Tracing` and the provider's `forceFlush` on
 * TRACING_SETUP_CHANNEL, and a running gateway follows `on` and `ratio` changed at run time —
 * off traces nothing, ratio 1 traces every datagram — and `forceFlush` exports what waits
 * (the batch delay here is far longer than the test).
 *
 * OpenTelemetry's registrations are process-wide: the file puts them back to none when it ends
 * (it shares a process with other files: scripts/test-groups.mjs).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { Code } from '../../src/coap/constants.js';
import { CipherSuite } from '../../src/dtls/constants.js';
import { derivePsk } from '../../src/enos/psk.js';
import type { TracingHandle } from '../../src/telemetry/setup.js';
import { setupTestTracing } from '../helpers/tracing.js';
import { TRACING_SETUP_CHANNEL, type TracingSetupEvent } from '../../src/telemetry/trace.js';
import { CoapDtlsClient } from '../../src/tools/coap-client.js';
import { DEMO, MEASUREPOINT_PAYLOAD, startGateway, type TestGateway } from '../helpers/gateway.js';
import { resetOpenTelemetryGlobals } from '../helpers/otel-globals.js';

describe('telemetry: the setup channel and tracing switched at run time', () => {
  const exporter = new InMemorySpanExporter();
  const events: TracingSetupEvent[] = [];
  const onSetup = (m: unknown): void => {
    events.push(m as TracingSetupEvent);
  };
  let handle: TracingHandle | undefined;
  let gw: TestGateway;
  let client: CoapDtlsClient;

  before(async () => {
    subscribe(TRACING_SETUP_CHANNEL, onSetup);
    handle = setupTestTracing({
      exporter,
      sampleRatio: 0.01,
      // no export by the timer during the test: only forceFlush exports
      env: { OTEL_BSP_SCHEDULE_DELAY: '600000' },
    });
    assert.ok(handle !== undefined);
    gw = await startGateway({ tracing: handle.tracing });
    client = await CoapDtlsClient.connect({
      host: '127.0.0.1',
      port: gw.port,
      identity: DEMO.device001.identity,
      psk: derivePsk(DEMO.device001.secret),
      cipherSuites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
      handshakeTimeoutMs: 10_000,
      retransmitTimeoutMs: 2_000,
    });
    // the handshake's datagrams were sampled at 1 % (one in ~25 runs had a trace of them):
    // the test starts from nothing exported
    await events[0]?.forceFlush();
    exporter.reset();
  });

  after(async () => {
    unsubscribe(TRACING_SETUP_CHANNEL, onSetup);
    await client?.close().catch(() => undefined);
    await gw?.close();
    await handle?.shutdown();
  });

  async function uplinks(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      // no broker: a measurepoint is answered 5.03 at once, after its spans' work
      const res = await client.request({
        method: 'POST',
        path: '/topic/sys/demoPK01/device001/thing/measurepoint/post',
        payload: Buffer.from(MEASUREPOINT_PAYLOAD),
        contentFormat: 50,
        timeoutMs: 10_000,
        // no retransmission under load: a second datagram would be a second root span
        ackTimeoutMs: 10_000,
      });
      assert.equal(res.code, Code.SERVICE_UNAVAILABLE);
    }
  }

  it("publishes the gateway's Tracing and a forceFlush once, at setup", () => {
    assert.equal(events.length, 1);
    assert.equal(events[0]!.tracing, handle!.tracing);
  });

  it('off at run time traces nothing; ratio 1 traces every datagram; forceFlush exports them', async () => {
    const ev = events[0]!;
    ev.tracing.on = false;
    await uplinks(3);
    await ev.forceFlush();
    assert.equal(exporter.getFinishedSpans().length, 0);

    ev.tracing.on = true;
    ev.tracing.ratio = 1;
    await uplinks(2);
    assert.equal(exporter.getFinishedSpans().length, 0, 'nothing exported before the flush');
    await ev.forceFlush();
    const roots = exporter.getFinishedSpans().filter((s) => s.name === 'coap-edge.datagram');
    assert.equal(roots.length, 2);

    ev.tracing.ratio = 0;
    exporter.reset();
    await uplinks(3);
    await ev.forceFlush();
    assert.equal(exporter.getFinishedSpans().length, 0);
  });
});

after(resetOpenTelemetryGlobals);
