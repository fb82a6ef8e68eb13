/**
 * The OTEL_* variables as the OpenTelemetry specification lists them, and coap-edge's own
 * settings winning where given (src/telemetry/otel-env.ts).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ROOT_CONTEXT, TraceFlags, trace, type Context } from '@opentelemetry/api';
import { SamplingDecision } from '@opentelemetry/sdk-trace-base';
import { GatewaySampler } from '../../../src/telemetry/setup.js';
import {
  DEFAULT_BATCH,
  batchConfig,
  otlpHeaders,
  otlpProtocol,
  samplingPolicy,
  sdkDisabled,
  tracesEndpoint,
} from '../../../src/telemetry/otel-env.js';

const DEFAULT = 0.01;

describe('OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG', () => {
  const policy = (env: Record<string, string>, setting?: number) => {
    const warnings: string[] = [];
    const p = samplingPolicy(setting, DEFAULT, env, warnings);
    return { ratio: p.ratio, remoteParent: p.remoteParent, sampler: p.sampler, warnings };
  };

  it('unset: coap-edge default ratio, parents followed', () => {
    assert.deepEqual(policy({}), {
      ratio: DEFAULT,
      remoteParent: 'follow',
      sampler: 'parentbased_traceidratio',
      warnings: [],
    });
  });

  it('every sampler of the specification', () => {
    const cases: [string, number, string][] = [
      ['always_on', 1, 'always'],
      ['always_off', 0, 'never'],
      ['traceidratio', 0.2, 'ratio'],
      ['parentbased_always_on', 1, 'follow'],
      ['parentbased_always_off', 0, 'follow'],
      ['parentbased_traceidratio', 0.2, 'follow'],
    ];
    for (const [name, ratio, remoteParent] of cases) {
      const p = policy({ OTEL_TRACES_SAMPLER: name, OTEL_TRACES_SAMPLER_ARG: '0.2' });
      assert.deepEqual(p, { ratio, remoteParent, sampler: name, warnings: [] }, name);
    }
  });

  it('always_on traces every datagram (was ignored: 1 % were traced)', () => {
    assert.equal(policy({ OTEL_TRACES_SAMPLER: 'always_on' }).ratio, 1);
    assert.equal(policy({ OTEL_TRACES_SAMPLER: 'ALWAYS_ON ' }).ratio, 1);
  });

  it('a ratio sampler without an argument samples everything (the specification default 1.0)', () => {
    assert.equal(policy({ OTEL_TRACES_SAMPLER: 'traceidratio' }).ratio, 1);
  });

  it('an argument alone sets the ratio of the default sampler', () => {
    assert.equal(policy({ OTEL_TRACES_SAMPLER_ARG: '0.5' }).ratio, 0.5);
  });

  it('traceSampleRatio, when the operator set it, wins over the variables', () => {
    assert.equal(policy({ OTEL_TRACES_SAMPLER: 'always_on' }, 0.05).ratio, 0.05);
    assert.equal(policy({ OTEL_TRACES_SAMPLER_ARG: '0.5' }, 0.05).ratio, 0.05);
    assert.equal(policy({ OTEL_TRACES_SAMPLER: 'always_off' }, 0.05).ratio, 0.05);
  });

  it('unknown values are reported and the defaults apply', () => {
    const p = policy({ OTEL_TRACES_SAMPLER: 'jaeger_remote', OTEL_TRACES_SAMPLER_ARG: '2' });
    assert.equal(p.ratio, DEFAULT);
    assert.equal(p.sampler, 'parentbased_traceidratio');
    assert.equal(p.warnings.length, 2);
    assert.match(p.warnings[0] ?? '', /OTEL_TRACES_SAMPLER=jaeger_remote is not supported/);
    assert.match(p.warnings[1] ?? '', /OTEL_TRACES_SAMPLER_ARG=2 is not a ratio/);
  });
});

describe('OTEL_SDK_DISABLED', () => {
  it('only "true" (any case) disables', () => {
    assert.equal(sdkDisabled({ OTEL_SDK_DISABLED: 'true' }), true);
    assert.equal(sdkDisabled({ OTEL_SDK_DISABLED: 'TRUE' }), true);
    assert.equal(sdkDisabled({ OTEL_SDK_DISABLED: 'false' }), false);
    assert.equal(sdkDisabled({ OTEL_SDK_DISABLED: '1' }), false);
    assert.equal(sdkDisabled({}), false);
  });
});

describe('OTEL_EXPORTER_OTLP_PROTOCOL and the endpoint', () => {
  it('http/protobuf by default; the traces variable wins over the general one', () => {
    assert.equal(otlpProtocol({}), 'http/protobuf');
    assert.equal(otlpProtocol({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }), 'grpc');
    assert.equal(otlpProtocol({ OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }), 'http/json');
    assert.equal(
      otlpProtocol({
        OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/protobuf',
      }),
      'http/protobuf',
    );
    const warnings: string[] = [];
    assert.equal(
      otlpProtocol({ OTEL_EXPORTER_OTLP_PROTOCOL: 'thrift' }, warnings),
      'http/protobuf',
    );
    assert.equal(warnings.length, 1);
  });

  it('the general endpoint gets /v1/traces for HTTP, not for gRPC', () => {
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4317/' };
    assert.equal(
      tracesEndpoint(undefined, env, 'http/protobuf'),
      'http://collector:4317/v1/traces',
    );
    assert.equal(tracesEndpoint(undefined, env, 'grpc'), 'http://collector:4317/');
    assert.equal(
      tracesEndpoint(
        undefined,
        { ...env, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:4317' },
        'grpc',
      ),
      'http://t:4317',
    );
    assert.equal(
      tracesEndpoint('http://setting:4318/v1/traces', env, 'grpc'),
      'http://setting:4318/v1/traces',
    );
  });
});

describe('OTEL_EXPORTER_OTLP_HEADERS', () => {
  it('key=value pairs, URL-decoded; the traces variable overrides per key', () => {
    assert.deepEqual(
      otlpHeaders({
        OTEL_EXPORTER_OTLP_HEADERS: 'Authorization=Bearer%20abc, x-tenant = t1',
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'x-tenant=t2',
      }),
      { authorization: 'Bearer abc', 'x-tenant': 't2' },
    );
  });

  it('malformed entries are skipped with a warning that never shows the value', () => {
    const warnings: string[] = [];
    const h = otlpHeaders(
      { OTEL_EXPORTER_OTLP_HEADERS: 'ok=1,secret-token-without-key,bad=%E0%A4%A' },
      warnings,
    );
    assert.deepEqual(h, { ok: '1' });
    assert.equal(warnings.length, 2);
    for (const w of warnings) {
      assert.doesNotMatch(w, /secret-token|%E0/);
    }
  });
});

describe('OTEL_BSP_* (the batch span processor)', () => {
  it("unset: the specification's 5 s delay, 30 s timeout and batches of 512; a queue of 8192", () => {
    const warnings: string[] = [];
    assert.deepEqual(batchConfig({}, warnings), {
      scheduledDelayMillis: 5000,
      exportTimeoutMillis: 30_000,
      maxQueueSize: 8192,
      maxExportBatchSize: 512,
    });
    assert.deepEqual(DEFAULT_BATCH, batchConfig({}));
    assert.deepEqual(warnings, []);
  });

  it('each variable sets its field', () => {
    assert.deepEqual(
      batchConfig({
        OTEL_BSP_SCHEDULE_DELAY: '250',
        OTEL_BSP_EXPORT_TIMEOUT: ' 4000 ',
        OTEL_BSP_MAX_QUEUE_SIZE: '100',
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '10',
      }),
      {
        scheduledDelayMillis: 250,
        exportTimeoutMillis: 4000,
        maxQueueSize: 100,
        maxExportBatchSize: 10,
      },
    );
    assert.equal(batchConfig({ OTEL_BSP_SCHEDULE_DELAY: '0' }).scheduledDelayMillis, 0);
  });

  it('values that are not integers in range are reported and the defaults apply', () => {
    const warnings: string[] = [];
    const c = batchConfig(
      {
        OTEL_BSP_SCHEDULE_DELAY: '1.5',
        OTEL_BSP_EXPORT_TIMEOUT: '-1',
        OTEL_BSP_MAX_QUEUE_SIZE: '0',
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: 'many',
      },
      warnings,
    );
    assert.deepEqual(c, DEFAULT_BATCH);
    assert.equal(warnings.length, 4);
    assert.match(
      warnings.join('\n'),
      /OTEL_BSP_SCHEDULE_DELAY=1\.5 is not an integer >= 0; using 5000/,
    );
  });

  it('a batch larger than the queue is cut to the queue size, with a warning', () => {
    const warnings: string[] = [];
    const c = batchConfig(
      { OTEL_BSP_MAX_QUEUE_SIZE: '64', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '512' },
      warnings,
    );
    assert.equal(c.maxQueueSize, 64);
    assert.equal(c.maxExportBatchSize, 64);
    assert.equal(warnings.length, 1);
  });
});

describe('GatewaySampler: what the policy does with parents', () => {
  const ctxWith = (remote: boolean, sampled: boolean) =>
    trace.setSpanContext(ROOT_CONTEXT, {
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
      isRemote: remote,
    });
  const decide = (rule: 'follow' | 'ratio' | 'always' | 'never', ctx: Context): boolean =>
    new GatewaySampler({ ratio: 0, remoteParent: rule, sampler: 'test' }).shouldSample(
      ctx,
      '0af7651916cd43dd8448eb211c80319c',
    ).decision === SamplingDecision.RECORD_AND_SAMPLED;

  it('a root span (a datagram already chosen) is sampled under every rule', () => {
    for (const rule of ['follow', 'ratio', 'always', 'never'] as const) {
      assert.equal(decide(rule, ROOT_CONTEXT), true, rule);
    }
  });

  it('a local parent is followed under every rule', () => {
    for (const rule of ['follow', 'ratio', 'always', 'never'] as const) {
      assert.equal(decide(rule, ctxWith(false, true)), true, rule);
      assert.equal(decide(rule, ctxWith(false, false)), false, rule);
    }
  });

  it("a platform's (remote) parent: followed, or always, or never, or by trace id ratio", () => {
    assert.equal(decide('follow', ctxWith(true, true)), true);
    assert.equal(decide('follow', ctxWith(true, false)), false);
    assert.equal(decide('always', ctxWith(true, false)), true);
    assert.equal(decide('never', ctxWith(true, true)), false);
    assert.equal(decide('ratio', ctxWith(true, true)), false, 'ratio 0');
  });
});
