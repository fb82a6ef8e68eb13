/**
 * Handshake load: N concurrent connectors, each doing connect (full handshake including
 * the HelloVerifyRequest round trip) → close_notify, again and again. After a warm-up the
 * server's CPU and the count of completed handshakes are snapshot at the start and end of
 * a measured window, so handshakes in flight at the edges balance out (steady state).
 */
import type { DtlsClient } from '../../src/dtls/client.js';
import {
  connect,
  failureName,
  nthCredentials,
  type Credentials,
  type PooledCredentials,
} from './client.js';
import { openWindow, windowReport } from './harness.js';
import type { ServerProcess } from './servers.js';
import { Samples, increment, round, sleep } from './stats.js';

export interface HandshakeLoad {
  readonly creds: PooledCredentials;
  readonly suite: number;
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly handshakeTimeoutMs: number;
}

export interface HandshakeResult {
  readonly handshakesPerSec: number | null;
  readonly serverCpuUsPerHandshake: number | null;
  readonly serverCpuUsPerHandshakeSchedstat: number | null;
  /** The kernel (stime) part of serverCpuUsPerHandshake. */
  readonly serverSystemCpuUsPerHandshake: number | null;
  readonly loadGenCpuUsPerHandshake: number | null;
  readonly handshakes: number;
  readonly failures: number;
  readonly failureKinds: Record<string, number>;
  readonly retransmissions: number;
  readonly withoutHelloVerify: number;
  readonly latency: { p50Ms: number | null; p99Ms: number | null; maxMs: number | null };
  readonly window: Record<string, number | null>;
  readonly serverRssKiB: number | null;
}

export async function runHandshakes(
  server: ServerProcess,
  load: HandshakeLoad,
): Promise<HandshakeResult> {
  let measuring = false;
  let stopping = false;
  let handshakes = 0;
  let retransmissions = 0;
  let withoutHelloVerify = 0;
  let failures = 0;
  const failureKinds: Record<string, number> = {};
  const latency = new Samples();

  const connector = async (creds: Credentials): Promise<void> => {
    while (!stopping) {
      const t0 = performance.now();
      let client: DtlsClient;
      try {
        client = await connect(server.target, creds, {
          suite: load.suite,
          handshakeTimeoutMs: load.handshakeTimeoutMs,
        });
      } catch (err) {
        // Failures are counted over the whole phase (warm-up and drain included).
        failures++;
        increment(failureKinds, failureName(err));
        continue;
      }
      if (measuring) {
        handshakes++;
        latency.push(performance.now() - t0);
        retransmissions += client.trace.retransmissions;
        if (!client.trace.helloVerify) withoutHelloVerify++;
      }
      await client.close();
    }
  };

  const connectors = Array.from({ length: load.concurrency }, (_, i) =>
    connector(nthCredentials(load.creds, i)),
  );
  await sleep(load.warmupMs);
  const close = openWindow(server);
  measuring = true;
  await sleep(load.durationMs);
  measuring = false;
  const w = close();
  const serverRssKiB = server.rssKiB() ?? null;
  stopping = true;
  await Promise.all(connectors);

  const per = (us: number | null): number | null =>
    us !== null && handshakes > 0 ? round(us / handshakes, 1) : null;
  return {
    handshakesPerSec: round((handshakes * 1000) / w.wallMs, 1),
    serverCpuUsPerHandshake: per(w.serverCpuUs),
    serverCpuUsPerHandshakeSchedstat: per(w.serverCpuUsSchedstat),
    serverSystemCpuUsPerHandshake: per(w.serverSystemCpuUs),
    loadGenCpuUsPerHandshake: per(w.loadGenCpuUtilisation * w.wallMs * 1000),
    handshakes,
    failures,
    failureKinds,
    retransmissions,
    withoutHelloVerify,
    latency: latency.summary(),
    window: windowReport(w),
    serverRssKiB,
  };
}
