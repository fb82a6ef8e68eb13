/**
 * `coap-edge serve` as a process: it reports the port it bound (so `--dtls-port 0` works),
 * applies the configuration file under the flags, serves a DTLS client, and on SIGTERM or
 * SIGINT sends close_notify to every connected peer and exits with code 0.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Code, ContentFormat } from '../../src/coap/constants.js';
import { DtlsClient } from '../../src/dtls/client.js';
import { CipherSuite } from '../../src/dtls/constants.js';
import { DtlsError } from '../../src/dtls/errors.js';
import { derivePsk } from '../../src/enos/psk.js';
import {
  DEMO,
  DEMO_DEVICES,
  MEASUREPOINT_PAYLOAD,
  MEASUREPOINT_POST,
  coapRequest,
  coapResponse,
  parseLogLines,
  secretForms,
} from '../helpers/gateway.js';
import { REPO_ROOT, killAll, listeningPort, startCli, type Proc } from '../helpers/processes.js';

/** Connects, checks the association works with one CoAP request (→ 5.03), returns it. */
async function connectAndUse(
  port: number,
  identity: string,
  secret: string,
  pk: string,
  dk: string,
  cipherSuites?: readonly number[],
): Promise<DtlsClient> {
  const client = await DtlsClient.connect({
    host: '127.0.0.1',
    port,
    identity,
    psk: derivePsk(secret),
    handshakeTimeoutMs: 5_000,
    ...(cipherSuites !== undefined ? { cipherSuites } : {}),
  });
  try {
    const answer = new Promise<Buffer>((resolve, reject) => {
      client.once('message', resolve);
      setTimeout(() => reject(new Error('no CoAP answer within 5 s')), 5_000).unref();
    });
    client.send(
      coapRequest({
        code: Code.POST,
        path: MEASUREPOINT_POST(pk, dk),
        messageId: 7,
        token: Buffer.from('t'),
        payload: Buffer.from(MEASUREPOINT_PAYLOAD),
        contentFormat: ContentFormat.JSON,
      }),
    );
    assert.equal(coapResponse(await answer).code, Code.SERVICE_UNAVAILABLE);
    return client;
  } catch (err) {
    await client.close();
    throw err;
  }
}

/** Sends `sig`; the client must get close_notify and the process must exit 0. */
async function stopWith(proc: Proc, client: DtlsClient, sig: NodeJS.Signals): Promise<void> {
  const closed = new Promise<string>((r) => client.once('close', r));
  proc.signal(sig);
  const reason = await Promise.race([
    closed,
    new Promise<string>((r) => setTimeout(() => r('no close event within 5 s'), 5_000).unref()),
  ]);
  assert.equal(reason, 'peer-close-notify', proc.describe());
  const r = await proc.done;
  assert.equal(r.timedOut, false, proc.describe());
  assert.equal(r.signal, null, proc.describe());
  assert.equal(r.code, 0, proc.describe());
  assert.equal(r.stderr, '', proc.describe());
  const lines = parseLogLines(r.stdout);
  const shutdown = lines.find((l) => l.msg === 'shutting down');
  assert.equal(shutdown?.signal, sig, r.stdout);
  const stopped = lines.find((l) => l.msg === 'coap-edge stopped');
  assert.equal(stopped?.closedAssociations, 1, r.stdout);
  for (const s of secretForms()) assert.ok(!r.stdout.includes(s), 'a secret is in the log');
}

describe('coap-edge serve process', { concurrency: true }, () => {
  after(killAll);

  it('SIGTERM: the connected client gets close_notify, exit code 0', async (t) => {
    const proc = startCli([
      'serve',
      '--devices',
      DEMO_DEVICES,
      '--bind',
      '127.0.0.1',
      '--dtls-port',
      '0',
    ]);
    t.after(() => proc.kill());
    const port = await listeningPort(proc);
    const client = await connectAndUse(
      port,
      DEMO.device001.identity,
      DEMO.device001.secret,
      'demoPK01',
      'device001',
    );
    t.after(() => client.close());
    await stopWith(proc, client, 'SIGTERM');
  });

  it('SIGINT, with a YAML file: the file applies, environment and flags win', async (t) => {
    // config.yaml: fixture devices, CBC-SHA256 only, dtlsPort 6000, logLevel warn. The flags
    // move the port to 0; COAP_EDGE_LOG_LEVEL moves the level to info (else no "listening"
    // line would be printed)
    const proc = startCli(
      [
        'serve',
        '--config',
        'test/fixtures/interop/config.yaml',
        '--bind',
        '127.0.0.1',
        '--dtls-port',
        '0',
      ],
      { cwd: REPO_ROOT, env: { COAP_EDGE_LOG_LEVEL: 'info' } },
    );
    t.after(() => proc.kill());
    const port = await listeningPort(proc);
    assert.match(
      proc.stdout,
      /"file":"test\/fixtures\/interop\/devices\.json","products":1,"devices":1/,
    );

    const identity = 'fixPK01,fixdev01,2,600';
    await assert.rejects(
      DtlsClient.connect({
        host: '127.0.0.1',
        port,
        identity,
        psk: derivePsk('fixture-device-secret-01'),
        cipherSuites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
        handshakeTimeoutMs: 5_000,
      }),
      (err: unknown) => err instanceof DtlsError && err.code === 'DTLS_ALERT_RECEIVED',
      'CCM_8 is not configured: the handshake fails',
    );
    const client = await connectAndUse(
      port,
      identity,
      'fixture-device-secret-01',
      'fixPK01',
      'fixdev01',
      [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8, CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256],
    );
    t.after(() => client.close());
    assert.equal(client.cipherSuite, 'TLS_PSK_WITH_AES_128_CBC_SHA256');
    assert.equal(client.encryptThenMac, true);
    await stopWith(proc, client, 'SIGINT');
  });
});
