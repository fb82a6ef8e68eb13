/**
 * SIGTERM drain of `coap-edge serve`: readiness turns false at once, new handshakes are not
 * answered, a request in flight (held by a slow HTTP backend) still gets its separate
 * response, established peers then get close_notify, and the process exits 0 — also when
 * the drain timeout cuts a hung request short.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../../src/coap/constants.js';
import { derivePsk } from '../../src/enos/psk.js';
import { CoapDtlsClient } from '../../src/tools/coap-client.js';
import { DEMO, DEMO_DEVICES, MEASUREPOINT_PAYLOAD } from '../helpers/gateway.js';
import { withTimeout } from '../helpers/hostile.js';
import { killAll, listeningPort, startCli, type Proc } from '../helpers/processes.js';

after(killAll);

/**
 * An HTTP backend that answers 200 after `delayMs` (or never, with Infinity); `hit` settles
 * when the first request arrives.
 */
async function slowBackend(
  delayMs: number,
): Promise<{ server: Server; port: number; hits: () => number; hit: Promise<void> }> {
  let hits = 0;
  let onHit = (): void => undefined;
  const hit = new Promise<void>((r) => (onHit = r));
  const server = createServer((req, res) => {
    hits++;
    onHit();
    req.resume();
    if (delayMs === Infinity) return;
    setTimeout(
      () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'),
      delayMs,
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  return {
    server,
    port: typeof addr === 'object' && addr !== null ? addr.port : 0,
    hits: () => hits,
    hit,
  };
}

function config(backendPort: number, drainTimeout: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'coap-edge-drain-'));
  const file = join(dir, 'config.yaml');
  writeFileSync(
    file,
    [
      `devices: ${DEMO_DEVICES}`,
      'bind: 127.0.0.1',
      'dtlsPort: 0',
      'httpPort: 0',
      'httpBind: 127.0.0.1',
      `drainTimeoutSeconds: ${drainTimeout}`,
      'routes:',
      "  - match: '/sys/{pk}/{dk}/thing/measurepoint/post'",
      '    backend: http',
      `    url: 'http://127.0.0.1:${backendPort}/slow'`,
      '    timeout: 60000',
      '',
    ].join('\n'),
  );
  return file;
}

async function adminPort(proc: Proc): Promise<number> {
  const m = await proc.waitFor(/^.*"msg":"admin HTTP server listening".*$/m, { stream: 'stdout' });
  const line = JSON.parse(m[0]) as { http?: unknown };
  const port = typeof line.http === 'string' ? Number(/:(\d+)$/.exec(line.http)?.[1]) : NaN;
  assert.ok(port > 0, `no admin port in ${m[0]}`);
  return port;
}

async function readyz(port: number): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: res.status, body: await res.json() };
}

/**
 * A device's handshake. A device that must get through waits up to 10 s: a process just
 * started, beside other test files on two cores, has answered a first handshake after more
 * than 1.5 s. The one that must not get through (while draining) gives up after 1.5 s.
 */
function connect(
  port: number,
  device: { identity: string; secret: string },
  handshakeTimeoutMs = 10_000,
): Promise<CoapDtlsClient> {
  return CoapDtlsClient.connect({
    host: '127.0.0.1',
    port,
    identity: device.identity,
    psk: derivePsk(device.secret),
    handshakeTimeoutMs,
    retransmitTimeoutMs: 300,
  });
}

const PATH = '/topic/sys/demoPK01/device001/thing/measurepoint/post';

// the two run side by side: each has its own process, backend and device
describe('SIGTERM drain', { concurrency: true }, () => {
  it('finishes the request in flight, refuses new handshakes, then closes and exits 0', async () => {
    const backend = await slowBackend(1_500);
    after(() => backend.server.close());
    const proc = startCli(['serve', '--config', config(backend.port, 10)]);
    const dtlsPort = await listeningPort(proc);
    const http = await adminPort(proc);
    assert.equal((await readyz(http)).status, 200);

    const device = await connect(dtlsPort, DEMO.device001);
    let closeReason: string | undefined;
    device.dtls.on('close', (r) => (closeReason = r));
    const inFlight = device.request({
      method: 'POST',
      path: PATH,
      payload: Buffer.from(MEASUREPOINT_PAYLOAD),
      timeoutMs: 10_000,
    });
    // the backend has the request: now stop
    await withTimeout(backend.hit, 5_000, 'request at the backend');
    assert.equal(backend.hits(), 1);
    const signalledAt = Date.now();
    proc.child.kill('SIGTERM');

    // readiness turns false at once: the gateway logs "draining" once it is (no polling)
    await proc.waitFor(/"msg":"draining"/, { stream: 'stdout' });
    const ready = await readyz(http).catch(() => undefined);
    assert.equal(ready?.status, 503);
    assert.deepEqual(ready?.body, { ready: false, failing: ['draining'] });

    // a new device is not answered while draining
    await assert.rejects(connect(dtlsPort, DEMO.device002, 1_500));

    // the request in flight still gets its (separate) answer
    const res = await inFlight;
    assert.equal(res.code, Code.CHANGED);
    assert.equal(res.payload.toString(), '{"ok":true}');
    assert.equal(res.separate, true);
    assert.ok(Date.now() - signalledAt >= 1_000, 'answered after the drain began');

    const result = await proc.done;
    assert.equal(result.code, 0, result.stderr);
    assert.equal(closeReason, 'peer-close-notify');
    assert.match(result.stdout, /"msg":"draining"/);
    assert.doesNotMatch(result.stdout, /drain timeout/);
  });

  it('gives up on a hung request after the drain timeout and still exits 0', async () => {
    const backend = await slowBackend(Infinity);
    after(() => backend.server.close());
    const proc = startCli(['serve', '--config', config(backend.port, 1)]);
    const dtlsPort = await listeningPort(proc);
    const device = await connect(dtlsPort, DEMO.device001);
    const hung = device.request({
      method: 'POST',
      path: PATH,
      payload: Buffer.from(MEASUREPOINT_PAYLOAD),
      timeoutMs: 10_000,
    });
    hung.catch(() => undefined);
    await withTimeout(backend.hit, 5_000, 'request at the backend');
    const signalledAt = Date.now();
    proc.child.kill('SIGTERM');
    const result = await proc.done;
    const took = Date.now() - signalledAt;
    assert.equal(result.code, 0, result.stderr);
    assert.ok(took >= 900 && took < 6_000, `exited ${took} ms after SIGTERM`);
    assert.match(result.stdout, /drain timeout: closing with exchanges in flight/);
    // the gateway closed the association (close_notify) with the request unanswered: the
    // request ends then, not at its 10 s deadline (whose timer held this file open)
    await assert.rejects(withTimeout(hung, 2_000, 'end of the request'), {
      name: 'CoapClientError',
      code: 'COAP_CLOSED',
    });
    await device.close();
  });
});
