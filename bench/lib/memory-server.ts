/**
 * Child process of bench/memory.ts: coap-edge in-process (`Gateway.start`, what `coap-edge
 * serve` runs, without the CLI's signal handling and tracing set-up), started with
 * `node --expose-gc` so that its heap can be measured after a full garbage collection.
 *
 * Usage: node --expose-gc dist/bench/lib/memory-server.js '<settings JSON>'   (with IPC)
 * The argument maps setting names to values given as text, exactly as command-line flags
 * would give them (`{"devices": "/tmp/d.json", "dtlsPort": "0", "mqttUrl": "mqtt://…"}`); the
 * configuration is loaded and validated by `loadConfig` (defaults, then these; no
 * environment variables, no YAML file).
 *
 * IPC:
 * - sends `{type:'ready', dtlsPort}` once the gateway listens;
 * - `{type:'mem', seq, gc?}` → `gc()` three times (each after a turn of the event loop, so
 *   weak callbacks and finalizers run), then `process.memoryUsage()`, V8 heap statistics,
 *   VmRSS/VmHWM from /proc/self/status and the gateway's association and handshake counts;
 * - `{type:'stop', seq}` → `gateway.close()` (close_notify to every peer), answers, exits.
 */
import { readFileSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { loadConfig } from '../../src/config/load.js';
import type { SettingName } from '../../src/config/settings.js';
import { Gateway } from '../../src/gateway/index.js';
import { createLogger } from '../../src/telemetry/log.js';

const send = process.send?.bind(process);
const runGc = (globalThis as { gc?: () => void }).gc;
if (send === undefined || process.argv[2] === undefined) {
  process.stderr.write(
    "usage: node --expose-gc memory-server.js '<settings JSON>' (as a child with IPC)\n",
  );
  process.exit(2);
}
if (runGc === undefined) {
  process.stderr.write('memory-server: start it with node --expose-gc\n');
  process.exit(2);
}

function status(): { vmRssKiB: number | null; vmHwmKiB: number | null } {
  try {
    const text = readFileSync('/proc/self/status', 'utf8');
    const kib = (key: string): number | null => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
      return m?.[1] !== undefined ? Number(m[1]) : null;
    };
    return { vmRssKiB: kib('VmRSS'), vmHwmKiB: kib('VmHWM') };
  } catch {
    return { vmRssKiB: null, vmHwmKiB: null };
  }
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function main(): Promise<void> {
  const flags = JSON.parse(process.argv[2]!) as Partial<Record<SettingName, string>>;
  const config = loadConfig({ flags });
  const log = createLogger(config.logLevel);
  const gateway = await Gateway.start(config, log);
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await gateway.close().catch(() => undefined);
  };
  process.on('message', (m: { type?: unknown; seq?: unknown; gc?: unknown }) => {
    void (async () => {
      if (m.type === 'mem') {
        const collected = m.gc !== false;
        if (collected) {
          for (let i = 0; i < 3; i++) {
            await turn();
            runGc!();
          }
        }
        const h = getHeapStatistics();
        send!({
          type: 'mem',
          seq: m.seq,
          gc: collected,
          memoryUsage: process.memoryUsage(),
          heap: {
            totalHeapSize: h.total_heap_size,
            usedHeapSize: h.used_heap_size,
            mallocedMemory: h.malloced_memory,
            externalMemory: h.external_memory,
            numberOfNativeContexts: h.number_of_native_contexts,
            numberOfDetachedContexts: h.number_of_detached_contexts,
          },
          ...status(),
          associations: gateway.dtls.associationCount,
          handshakesInProgress: gateway.dtls.handshakeCount,
        });
      } else if (m.type === 'stop') {
        await stop();
        send!({ type: 'stop', seq: m.seq });
        process.exit(0);
      }
    })();
  });
  process.on('disconnect', () => void stop().finally(() => process.exit(0)));
  process.on('SIGTERM', () => void stop().finally(() => process.exit(0)));
  send!({ type: 'ready', dtlsPort: gateway.dtlsPort });
}

main().catch((err: unknown) => {
  process.stderr.write(
    `memory-server: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
