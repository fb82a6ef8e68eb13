/**
 * The request path above DTLS: the bridge router (topic rules, authorization, backends,
 * commands, presence) and the CoAP endpoint whose requests the translation
 * (`../translation/`) hands to it.
 */
import type { DeviceSessionManager } from '../../bridge/mqtt/per-device.js';
import type { PresenceTracker } from '../../bridge/presence/index.js';
import { Router } from '../../bridge/router.js';
import type { Principal } from '../../bridge/types.js';
import { CoapEndpoint } from '../../coap/endpoint.js';
import type { MetricSources, RequestStats } from '../../telemetry/metrics.js';
import { coapEndpointSettings } from '../component-settings.js';
import {
  createRequestHandler,
  createUploadAdmission,
  duplicateTracer,
} from '../translation/request-handler.js';
import { NO_TRACING } from '../../telemetry/trace.js';
import type { Commands } from './commands.js';
import type { BuildContext, Built } from './context.js';
import type { Routes } from './http.js';
import type { Mqtt } from './mqtt.js';
import type { Secrets } from './secrets.js';

export interface CoapDeps {
  readonly mqtt: Mqtt;
  readonly sessions: DeviceSessionManager | undefined;
  readonly routes: Routes;
  readonly secrets: Secrets;
  readonly commands: Commands;
  readonly presence: PresenceTracker;
  readonly requests: RequestStats;
}

export function buildCoap(
  { config, log, clock, closers, tracing = NO_TRACING }: BuildContext,
  { mqtt, sessions, routes: { routes, http }, secrets: { secrets }, ...deps }: CoapDeps,
): Built<
  CoapEndpoint<Principal | undefined>,
  Pick<MetricSources, 'coap' | 'requests' | 'commandAge' | 'ttd'>
> {
  const bridge = mqtt.pool;
  const router = new Router({
    tracing,
    mqtt:
      sessions ??
      (bridge === undefined || config.mqttMode !== 'bridge'
        ? undefined
        : // the device rides along so a publish that gets a shared connection dropped
          // suspects its device (no poison loop over the pool)
          bridge.forDevices()),
    http,
    routes,
    activation: secrets.activator,
    commands: deps.commands.store,
    presence: deps.presence,
    unavailableMaxAge: config.maxUnavailableRetrySeconds,
    maxInlineCommand: config.maxInlineCommand,
    maxTtd: config.maxTtdSeconds,
    maxTtdWaitersPerDevice: config.maxTtdWaitersPerDevice,
    maxTtdWaiters: config.maxTtdWaiters,
  });
  const coap = new CoapEndpoint<Principal | undefined>({
    clock,
    handler: createRequestHandler(router, deps.requests, tracing),
    admit: createUploadAdmission(),
    ...coapEndpointSettings(config),
    onError: (err) => log.error({ err }, 'request handler failed'),
    onDuplicate: duplicateTracer(tracing),
  });
  closers.push(() => coap.close());
  return {
    component: coap,
    checks: [],
    metrics: {
      coap: coap.stats,
      requests: deps.requests,
      commandAge: () => router.commandAge.snapshot(),
      ttd: () => router.ttd,
    },
  };
}
