/**
 * Load generator: N simulated devices, each with its own DTLS association (CCM_8 by
 * default), posting EnOS measurepoints in a closed loop (one request outstanding per
 * device) or at a fixed rate, for a duration. Reports throughput, latency percentiles and
 * failures as one JSON object. Used by `coap-edge bench` and by bench/ scripts.
 *
 * With `cid` the devices offer an RFC 9146 Connection ID; with `rebindEveryMs` each moves its
 * association to a new source port now and then (a NAT rebinding), and the result says how
 * the first request after each move fared.
 */
import { randomBytes } from 'node:crypto';
import { CipherSuite } from '../dtls/constants.js';
import { derivePsk, formatIdentity } from '../enos/index.js';
import { ContentFormat } from '../coap/constants.js';
import { CoapDtlsClient } from './coap-client.js';

export interface LoadDevice {
  readonly productKey: string;
  readonly deviceKey: string;
  readonly secret: string;
}

export interface LoadOptions {
  readonly host: string;
  readonly port: number;
  readonly devices: readonly LoadDevice[];
  readonly durationMs: number;
  /** Requests per second per device; 0 = closed loop (next request when the answer came). */
  readonly ratePerDevice: number;
  readonly suite: 'ccm8' | 'cbc';
  /** Path relative to /topic/sys/{pk}/{dk}/ (default thing/measurepoint/post). */
  readonly topic?: string;
  /** Connect this many devices at once (default 32). */
  readonly connectConcurrency?: number;
  readonly requestTimeoutMs?: number;
  /** Called when every device is connected, before the measured phase. */
  readonly onConnected?: () => void | Promise<void>;
  /** Offer a 4-byte RFC 9146 Connection ID (as mbedTLS devices do). */
  readonly cid?: boolean;
  /** Each device moves to a new UDP source port this often during the measured phase. */
  readonly rebindEveryMs?: number;
}

export interface LoadResult {
  readonly devices: number;
  readonly connected: number;
  readonly connectFailures: number;
  readonly handshakeMs: { readonly p50: number; readonly p99: number };
  readonly durationMs: number;
  readonly requests: number;
  readonly ok: number;
  readonly failed: number;
  readonly codes: Readonly<Record<string, number>>;
  readonly messagesPerSecond: number;
  readonly latencyMs: {
    readonly p50: number;
    readonly p90: number;
    readonly p99: number;
    readonly max: number;
  };
  /** With `rebindEveryMs`: the moves, and the first request after each. */
  readonly rebinding?: {
    readonly rebinds: number;
    /** Answered 2.xx without a CoAP retransmission. */
    readonly answeredFirstTry: number;
    readonly answeredAfterRetransmission: number;
    readonly failed: number;
  };
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? 0;
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

let counter = 0;
function measurepointBody(): Buffer {
  counter = (counter + 1) % 2 ** 31;
  return Buffer.from(
    JSON.stringify({
      id: String(counter),
      version: '1.0',
      method: 'thing.measurepoint.post',
      params: { measurepoints: { temperature: 21.5, humidity: 40 }, time: Date.now() },
    }),
  );
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const suite =
    o.suite === 'cbc'
      ? CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256
      : CipherSuite.TLS_PSK_WITH_AES_128_CCM_8;
  const clients: { c: CoapDtlsClient; path: string }[] = [];
  const handshakeTimes: number[] = [];
  let connectFailures = 0;
  const queue = [...o.devices];
  const worker = async (): Promise<void> => {
    for (let d = queue.shift(); d !== undefined; d = queue.shift()) {
      const started = performance.now();
      try {
        const c = await CoapDtlsClient.connect({
          host: o.host,
          port: o.port,
          identity: formatIdentity({
            productKey: d.productKey,
            deviceKey: d.deviceKey,
            secureMode: 2,
            lifetime: 3600,
          }),
          psk: derivePsk(d.secret),
          cipherSuites: [suite],
          handshakeTimeoutMs: 20_000,
          ...(o.cid === true ? { connectionId: randomBytes(4) } : {}),
        });
        handshakeTimes.push(performance.now() - started);
        clients.push({
          c,
          path: `/topic/sys/${d.productKey}/${d.deviceKey}/${o.topic ?? 'thing/measurepoint/post'}`,
        });
      } catch {
        connectFailures++;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.connectConcurrency ?? 32) }, worker));
  await o.onConnected?.();

  const latencies: number[] = [];
  const codes: Record<string, number> = {};
  let failed = 0;
  const started = performance.now();
  const end = started + o.durationMs;
  const interval = o.ratePerDevice > 0 ? 1000 / o.ratePerDevice : 0;
  const rebindEvery = o.rebindEveryMs ?? 0;
  const moves = { rebinds: 0, answeredFirstTry: 0, answeredAfterRetransmission: 0, failed: 0 };
  await Promise.all(
    clients.map(async ({ c, path }, i) => {
      let next = started + (interval > 0 ? (i / clients.length) * interval : 0);
      // staggered, so that not every device moves at once
      let nextRebind =
        rebindEvery > 0 ? started + rebindEvery * (1 + i / clients.length) : Infinity;
      while (performance.now() < end) {
        if (interval > 0) {
          const wait = next - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          next += interval;
          if (performance.now() >= end) break;
        }
        let moved = false;
        if (performance.now() >= nextRebind) {
          nextRebind += rebindEvery;
          try {
            await c.dtls.rebind();
            moves.rebinds++;
            moved = true;
          } catch {
            moves.failed++;
          }
        }
        const t0 = performance.now();
        try {
          const r = await c.request({
            method: 'POST',
            path,
            payload: measurepointBody(),
            contentFormat: ContentFormat.JSON,
            timeoutMs: o.requestTimeoutMs ?? 30_000,
          });
          latencies.push(performance.now() - t0);
          const k = `${r.code >> 5}.${String(r.code & 31).padStart(2, '0')}`;
          codes[k] = (codes[k] ?? 0) + 1;
          if (moved) {
            if (r.code >> 5 !== 2) moves.failed++;
            else if (r.retransmissions === 0) moves.answeredFirstTry++;
            else moves.answeredAfterRetransmission++;
          }
        } catch {
          failed++;
          if (moved) moves.failed++;
        }
      }
    }),
  );
  const durationMs = performance.now() - started;
  await Promise.all(clients.map(({ c }) => c.close().catch(() => undefined)));
  latencies.sort((a, b) => a - b);
  handshakeTimes.sort((a, b) => a - b);
  const ok = Object.entries(codes).reduce((n, [k, v]) => (k.startsWith('2.') ? n + v : n), 0);
  return {
    devices: o.devices.length,
    connected: clients.length,
    connectFailures,
    handshakeMs: {
      p50: round(percentile(handshakeTimes, 50)),
      p99: round(percentile(handshakeTimes, 99)),
    },
    durationMs: Math.round(durationMs),
    requests: latencies.length + failed,
    ok,
    failed,
    codes,
    messagesPerSecond: round((latencies.length / durationMs) * 1000),
    latencyMs: {
      p50: round(percentile(latencies, 50)),
      p90: round(percentile(latencies, 90)),
      p99: round(percentile(latencies, 99)),
      max: round(latencies[latencies.length - 1] ?? 0),
    },
    ...(rebindEvery > 0 ? { rebinding: moves } : {}),
  };
}

/** A devices file with `count` devices of one product, secrets derived from a seed. */
export function generateDevices(
  count: number,
  productKey: string,
  seed: string,
): {
  products: { productKey: string; productSecret: string; dynamicRegistration: boolean }[];
  devices: { productKey: string; deviceKey: string; deviceSecret: string }[];
} {
  const devices = Array.from({ length: count }, (_, i) => ({
    productKey,
    deviceKey: `dev${String(i).padStart(6, '0')}`,
    deviceSecret: `${seed}-${i}`,
  }));
  return {
    products: [{ productKey, productSecret: `${seed}-product`, dynamicRegistration: true }],
    devices,
  };
}
