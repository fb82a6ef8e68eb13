/** The topic routes and, when a route calls HTTP, the HTTP backend. */
import { HttpBackend } from '../../bridge/http/index.js';
import { RouteConfigError, compileRoutes, type RouteTable } from '../../bridge/routes.js';
import type { MetricSources } from '../../telemetry/metrics.js';
import { StartupError, type BuildContext, type Built } from './context.js';

export interface Routes {
  readonly routes: RouteTable;
  readonly http: HttpBackend | undefined;
}

export function buildRoutes({
  config,
  log,
  clock,
  closers,
}: BuildContext): Built<Routes, Pick<MetricSources, 'http'>> {
  let routes: RouteTable;
  try {
    routes = compileRoutes(config.routes);
  } catch (err) {
    if (err instanceof RouteConfigError) throw new StartupError(err.message);
    throw err;
  }
  let http: HttpBackend | undefined;
  if (routes.hasHttp) {
    const h = new HttpBackend({
      clock,
      timeoutMs: config.httpTimeoutMs,
      connections: config.httpConnections,
      maxConcurrency: config.httpMaxConcurrency,
      unavailableMaxAge: config.maxUnavailableRetrySeconds,
    });
    closers.push(() => h.close());
    http = h;
    log.info({ routes: routes.routes.length }, 'HTTP routes configured');
  }
  return {
    component: { routes, http },
    checks: [],
    metrics: http !== undefined ? { http: () => http.stats() } : {},
  };
}
