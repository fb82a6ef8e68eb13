/**
 * Gateway.drain's deadline runs on the gateway's clock: with a request held by a backend that
 * does not answer, the drain gives up when the clock reaches the deadline, not in real time
 * (test/cli/drain.test.ts runs the binary's SIGTERM drain in real time).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { loadConfig } from '../../../src/config/load.js';
import { derivePsk } from '../../../src/enos/psk.js';
import { Gateway } from '../../../src/gateway/index.js';
import { createLogger } from '../../../src/telemetry/log.js';
import { ManualClock } from '../../../src/time/clock.js';
import { CoapDtlsClient } from '../../../src/tools/coap-client.js';
import { DEMO, DEMO_DEVICES, MEASUREPOINT_PAYLOAD } from '../../helpers/gateway.js';

describe('Gateway.drain', () => {
  it('gives up on a request in flight when its clock reaches the drain deadline', async () => {
    const held: ServerResponse[] = [];
    let onHit = (): void => undefined;
    const hit = new Promise<void>((r) => (onHit = r));
    const backend = createServer((req, res) => {
      req.resume();
      held.push(res);
      onHit();
    });
    backend.listen(0, '127.0.0.1');
    await once(backend, 'listening');
    const addr = backend.address();
    assert.ok(addr !== null && typeof addr === 'object');
    after(() => backend.close());

    let log = '';
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb): void {
        log += chunk.toString('utf8');
        cb();
      },
    });
    const config = loadConfig({
      overrides: {
        bind: '127.0.0.1',
        dtlsPort: 0,
        devices: DEMO_DEVICES,
        routes: [
          {
            match: '/sys/{pk}/{dk}/thing/measurepoint/post',
            backend: 'http',
            url: `http://127.0.0.1:${addr.port}/slow`,
            timeout: 60_000,
          },
        ],
      },
    });
    const clock = new ManualClock();
    const gateway = await Gateway.start(config, createLogger('info', sink), { clock });
    const device = await CoapDtlsClient.connect({
      host: '127.0.0.1',
      port: gateway.dtlsPort,
      identity: DEMO.device001.identity,
      psk: derivePsk(DEMO.device001.secret),
    });
    after(() => device.close());
    const inFlight = device.request({
      method: 'POST',
      path: '/topic/sys/demoPK01/device001/thing/measurepoint/post',
      payload: Buffer.from(MEASUREPOINT_PAYLOAD),
      timeoutMs: 30_000,
    });
    inFlight.catch(() => undefined);
    await hit;

    const drainMs = 20_000; // shorter than the route's 60 s deadline (also on the clock)
    const drained = gateway.drain(drainMs);
    assert.equal(gateway.draining, true);
    const gaveUp = (): boolean => log.includes('drain timeout: closing with exchanges in flight');
    clock.advance(drainMs - 1);
    await new Promise((r) => setImmediate(r));
    assert.equal(gaveUp(), false, 'still draining 1 ms before the deadline');
    clock.advance(1);
    await new Promise((r) => setImmediate(r));
    assert.equal(gaveUp(), true, 'gave up at the deadline, on the clock');
    // the backend lets go of the request, so that its connection pool can close
    for (const res of held) res.destroy();
    await drained;
  });
});
