/**
 * `setupTracing` as the telemetry tests call it: no endpoint, every datagram sampled, no forced
 * device, a test service name and version, no environment; a test gives only what it is about
 * (an exporter, a ratio, `OTEL_*` variables, an endpoint). Plain JavaScript callers (a child
 * script) pass the same options.
 */
import {
  setupTracing,
  type TracingHandle,
  type TracingOptions,
} from '../../src/telemetry/setup.js';

/** The options every test starts from. */
const TEST_TRACING: TracingOptions = {
  endpoint: undefined,
  sampleRatio: 1,
  forcedDevices: [],
  serviceName: 'coap-edge-test',
  serviceVersion: '0.0.0-test',
  env: {},
};

/** `setupTracing` with the test defaults and `o` over them: undefined when tracing stays off. */
export function setupTestTracing(o: Partial<TracingOptions> = {}): TracingHandle | undefined {
  return setupTracing({ ...TEST_TRACING, ...o });
}
