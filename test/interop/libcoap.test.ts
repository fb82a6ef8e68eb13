/**
 * libcoap's coap-client-openssl and coap-client-gnutls (`-u identity -k key`) sending CoAP
 * requests to coap-edge, in process (Gateway.start) and as the real `coap-edge serve`
 * process. No backend exists yet, so an uplink on the device's own topic gets 5.03; an
 * unknown path gets 4.04, another device's topic 4.03. Also: a secureMode-3 session on a
 * product with dynamic registration completes the handshake and may not publish (4.03).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Code, ContentFormat } from '../../src/coap/constants.js';
import { DtlsClient } from '../../src/dtls/client.js';
import { derivePsk, pskShellLiteral } from '../../src/enos/psk.js';
import {
  DEMO,
  DEMO_DEVICES,
  MEASUREPOINT_PAYLOAD,
  MEASUREPOINT_POST,
  coapRequest,
  coapResponse,
  secretForms,
  startGateway,
  type TestGateway,
} from '../helpers/gateway.js';
import {
  killAll,
  listeningPort,
  runCoapClient,
  startCli,
  waitUntil,
  type CoapClientFlavor,
  type Proc,
  type ProcessResult,
} from '../helpers/processes.js';

const FLAVORS: readonly CoapClientFlavor[] = ['coap-client-openssl', 'coap-client-gnutls'];
const KEY1 = derivePsk(DEMO.device001.secret);

/** The three requests of the interop check, with the response code libcoap must print. */
const REQUESTS = [
  {
    name: 'POST to its own measurepoint topic → 5.03 (no backend yet)',
    method: 'post',
    path: MEASUREPOINT_POST('demoPK01', 'device001'),
    payload: MEASUREPOINT_PAYLOAD,
    contentFormat: ContentFormat.JSON,
    expect: '5.03',
  },
  { name: 'GET /nothing → 4.04', method: 'get', path: '/nothing', expect: '4.04' },
  {
    name: "POST to another device's topic → 4.03",
    method: 'post',
    path: MEASUREPOINT_POST('demoPK01', 'device002'),
    payload: MEASUREPOINT_PAYLOAD,
    contentFormat: ContentFormat.JSON,
    expect: '4.03',
  },
] as const;

/** libcoap prints a non-2.xx code alone on a line of stderr; DTLS warnings go to stdout. */
function assertAnswer(r: ProcessResult, code: string, what: string): void {
  const all = `--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
  assert.equal(r.timedOut, false, `${what}: timed out\n${all}`);
  assert.equal(r.code, 0, `${what}: exit code\n${all}`);
  assert.match(r.stderr, new RegExp(`^${code.replace('.', '\\.')}$`, 'm'), `${what}\n${all}`);
  assert.doesNotMatch(`${r.stdout}${r.stderr}`, /alert|cannot send/i, `${what}\n${all}`);
}

/**
 * Runs the clients of one device one at a time: the gateway keeps one association per device
 * identity, so a second client of the same identity finishing its handshake would retire the
 * first one's association in the middle of its request.
 */
async function oneAfterTheOther<T, R>(xs: readonly T[], f: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (const x of xs) out.push(await f(x));
  return out;
}

describe('the PSK travels to libcoap as raw bytes', () => {
  it('Node re-encodes argv strings as UTF-8, the bash $-literal keeps the bytes', () => {
    assert.ok(
      KEY1.some((b) => b >= 0x80),
      'the demo key has bytes >= 0x80',
    );
    const viaLatin1 = spawnSync('bash', [
      '-c',
      'printf %s "$1" | od -An -v -tx1',
      'bash',
      KEY1.toString('latin1'),
    ]);
    const viaLiteral = spawnSync('bash', [
      '-c',
      `printf %s ${pskShellLiteral(KEY1)} | od -An -v -tx1`,
    ]);
    const hex = (b: Buffer): string => b.toString().replace(/\s+/g, '');
    assert.notEqual(hex(viaLatin1.stdout), KEY1.toString('hex'));
    assert.equal(hex(viaLiteral.stdout), KEY1.toString('hex'));
  });
});

describe('coap-client against an in-process gateway', () => {
  let gw: TestGateway;
  let cbc: TestGateway;
  before(async () => {
    gw = await startGateway();
    cbc = await startGateway({ overrides: { cipherSuites: ['TLS_PSK_WITH_AES_128_CBC_SHA256'] } });
  });
  after(async () => {
    await killAll();
    await gw.close();
    await cbc.close();
  });

  for (const req of REQUESTS) {
    it(`${req.name} (both clients)`, async () => {
      const results = await oneAfterTheOther(FLAVORS, (flavor) =>
        runCoapClient(flavor, {
          port: gw.port,
          identity: DEMO.device001.identity,
          psk: KEY1,
          ...req,
        }),
      );
      results.forEach((r, i) => assertAnswer(r, req.expect, FLAVORS[i]!));
    });
  }

  it('with TLS_PSK_WITH_AES_128_CBC_SHA256 only: 5.03 for both clients', async () => {
    const [req] = REQUESTS;
    const results = await oneAfterTheOther(FLAVORS, (flavor) =>
      runCoapClient(flavor, {
        port: cbc.port,
        identity: DEMO.device001.identity,
        psk: KEY1,
        ...req,
      }),
    );
    results.forEach((r, i) => assertAnswer(r, req.expect, FLAVORS[i]!));
  });

  it('every client closed with close_notify; suites, EMS and no secrets in the log', async () => {
    const n = REQUESTS.length * FLAVORS.length;
    await waitUntil(() => gw.gateway.dtls.associationCount === 0, 'all associations closed');
    await waitUntil(() => cbc.gateway.dtls.associationCount === 0, 'all associations closed');
    assert.equal(gw.gateway.dtls.handshakeCount, 0);
    assert.equal(gw.gateway.dtls.stats.closed['peer-close-notify'], n);
    assert.equal(cbc.gateway.dtls.stats.closed['peer-close-notify'], FLAVORS.length);

    const established = (g: TestGateway): Record<string, unknown>[] =>
      g.logLines().filter((l) => l.msg === 'association established');
    assert.equal(established(gw).length, n);
    for (const l of established(gw)) {
      assert.equal(l.identity, DEMO.device001.identity);
      assert.equal(l.suite, 'TLS_PSK_WITH_AES_128_CCM_8');
      assert.equal(l.ems, true);
    }
    assert.equal(established(cbc).length, FLAVORS.length);
    for (const l of established(cbc)) {
      assert.equal(l.suite, 'TLS_PSK_WITH_AES_128_CBC_SHA256');
      assert.equal(l.ems, true);
    }
    for (const g of [gw, cbc]) {
      const text = g.logText();
      for (const s of secretForms()) assert.ok(!text.includes(s), 'a secret is in the log');
    }
  });
});

describe('secureMode 3 on a product with dynamic registration', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startGateway();
  });
  after(async () => {
    await killAll();
    await gw.close();
  });
  const productKey = derivePsk(DEMO.product01.secret);

  it('coap-client: the handshake completes; an uplink is 4.03', async () => {
    const results = await Promise.all(
      FLAVORS.map((flavor, i) =>
        runCoapClient(flavor, {
          port: gw.port,
          identity: `demoPK01,fresh-device-${i},3,60`,
          psk: productKey,
          method: 'post',
          path: MEASUREPOINT_POST('demoPK01', `fresh-device-${i}`),
          payload: MEASUREPOINT_PAYLOAD,
          contentFormat: ContentFormat.JSON,
        }),
      ),
    );
    results.forEach((r, i) => assertAnswer(r, '4.03', FLAVORS[i]!));
    const established = gw.logLines().filter((l) => l.msg === 'association established');
    assert.deepEqual(established.map((l) => l.identity).sort(), [
      'demoPK01,fresh-device-0,3,60',
      'demoPK01,fresh-device-1,3,60',
    ]);
  });

  it('DtlsClient: the principal is secureMode 3; an uplink is 4.03', async (t) => {
    const client = await DtlsClient.connect({
      host: '127.0.0.1',
      port: gw.port,
      identity: 'demoPK01,fresh-device-9,3,60',
      psk: productKey,
      handshakeTimeoutMs: 5_000,
    });
    t.after(() => client.close());
    const assoc = [...gw.gateway.dtls.listAssociations()].find((a) => a.port === client.localPort);
    assert.ok(assoc !== undefined, 'the association exists on the server');
    assert.equal(assoc.principal.secureMode, 3);
    assert.equal(assoc.principal.productKey, 'demoPK01');
    assert.equal(assoc.principal.deviceKey, 'fresh-device-9');
    const answer = new Promise<Buffer>((r) => client.once('message', r));
    client.send(
      coapRequest({
        code: Code.POST,
        path: MEASUREPOINT_POST('demoPK01', 'fresh-device-9'),
        messageId: 0x1234,
        token: Buffer.from('m3'),
        payload: Buffer.from(MEASUREPOINT_PAYLOAD),
        contentFormat: ContentFormat.JSON,
      }),
    );
    const res = coapResponse(await answer);
    assert.equal(res.code, Code.FORBIDDEN);
    assert.equal(res.messageId, 0x1234);
    assert.deepEqual(res.token, Buffer.from('m3'));
  });
});

describe('coap-client against the coap-edge serve process', () => {
  let port = 0;
  let proc: Proc;
  before(async () => {
    proc = startCli([
      'serve',
      '--devices',
      DEMO_DEVICES,
      '--bind',
      '127.0.0.1',
      '--dtls-port',
      '0',
      '--log-level',
      'info',
    ]);
    port = await listeningPort(proc);
  });
  after(async () => {
    await killAll();
  });

  for (const req of REQUESTS) {
    it(`coap-client-openssl: ${req.name}`, async () => {
      const r = await runCoapClient('coap-client-openssl', {
        port,
        identity: DEMO.device001.identity,
        psk: KEY1,
        ...req,
      });
      assertAnswer(r, req.expect, 'coap-client-openssl');
    });
  }

  it('coap-client-gnutls: the uplink gets 5.03', async () => {
    const [req] = REQUESTS;
    const r = await runCoapClient('coap-client-gnutls', {
      port,
      identity: DEMO.device001.identity,
      psk: KEY1,
      ...req,
    });
    assertAnswer(r, req.expect, 'coap-client-gnutls');
  });

  it('SIGTERM stops it with exit code 0; its log has no secret', async () => {
    proc.signal('SIGTERM');
    const r = await proc.done;
    assert.equal(r.code, 0, proc.describe());
    assert.equal(r.stderr, '');
    const established = r.stdout.split('\n').filter((l) => l.includes('association established'));
    assert.equal(established.length, REQUESTS.length + 1, r.stdout);
    for (const s of secretForms()) assert.ok(!r.stdout.includes(s), 'a secret is in the log');
  });
});
