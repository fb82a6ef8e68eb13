/**
 * What the gateway tells about itself: the metrics read their sources, and the admin HTTP
 * server (`/metrics`, `/healthz`, `/readyz`) runs when `httpPort` is set. Tracing is set up
 * by the CLI before the gateway starts (`src/telemetry/setup.ts`); its `Tracing` reaches the
 * builders in the build context.
 */
import type { MetricSources, Metrics } from '../../telemetry/metrics.js';
import { startAdminServer, type AdminServer, type ReadinessCheck } from '../admin-server.js';
import { StartupError, type BuildContext, type Built } from './context.js';

export async function buildTelemetry(
  { config, log, closers }: BuildContext,
  metrics: Metrics,
  sources: MetricSources,
  checks: () => readonly ReadinessCheck[],
): Promise<Built<AdminServer | undefined>> {
  metrics.bind(sources);
  let admin: AdminServer | undefined;
  if (config.httpPort !== undefined) {
    try {
      admin = await startAdminServer({
        bind: config.httpBind,
        port: config.httpPort,
        registry: metrics.registry,
        checks,
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new StartupError(
        `cannot bind the admin HTTP server on ${config.httpBind}:${config.httpPort}: ${code}`,
      );
    }
    const a = admin;
    closers.push(() => a.close());
    log.info({ http: `${config.httpBind}:${a.port}` }, 'admin HTTP server listening');
  }
  return { component: admin, checks: [], metrics: {} };
}
