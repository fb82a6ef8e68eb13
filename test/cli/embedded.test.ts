/**
 * `npm start`: coap-edge on the embedded defaults of deploy/examples/embedded.yaml (an
 * embedded aedes broker, the demo devices, a demo platform answering uplinks) serves a
 * device end to end with no Redis and no external broker, prints how to connect, and a
 * taken broker port is a clear start-up error.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { connect } from 'mqtt';
import { join } from 'node:path';
import { REPO_ROOT, killAll, listeningPort, runCli, startCli } from '../helpers/processes.js';

after(killAll);

const EMBEDDED = join(REPO_ROOT, 'deploy', 'examples', 'embedded.yaml');

describe('embedded defaults (npm start)', () => {
  it('serves a device end to end through the embedded broker and prints how to connect', async () => {
    const proc = startCli(
      [
        'serve',
        '--config',
        EMBEDDED,
        '--dtls-port',
        '0',
        '--embedded-broker',
        '0',
        '--bind',
        '127.0.0.1',
      ],
      { timeoutMs: 30_000 },
    );
    const port = await listeningPort(proc);
    const banner = await proc.waitFor(/MQTT broker \(embedded\)\s+(mqtt:\/\/127\.0\.0\.1:(\d+))/, {
      stream: 'stderr',
    });
    assert.match(proc.stderr, /mosquitto_sub -h 127\.0\.0\.1 -p \d+ -v -t '\/sys\/#'/);
    assert.match(proc.stderr, /npx coap-edge device post thing\/measurepoint\/post/);

    // a subscriber on the embedded broker sees what the device publishes
    const sub = connect(banner[1] ?? '', { protocolVersion: 4 });
    after(() => sub.end(true));
    await new Promise<void>((resolve, reject) =>
      sub.once('connect', () => resolve()).once('error', reject),
    );
    const seen = new Promise<string>((resolve) => sub.on('message', (topic) => resolve(topic)));
    await sub.subscribeAsync('/sys/demoPK01/device001/thing/measurepoint/post', { qos: 1 });

    const r = await runCli([
      'device',
      'post',
      'thing/measurepoint/post',
      '{"id":"77","version":"1.0","method":"thing.measurepoint.post","params":{}}',
      '--port',
      String(port),
      '--identity',
      'demoPK01,device001,2,3600',
      '--secret',
      'demo-device-secret-0001',
    ]);
    assert.equal(r.code, 0, r.stderr);
    // the demo platform answered on _reply with the same id
    assert.equal(r.stdout.trim(), '2.04 {"id":"77","code":200,"data":null}');
    assert.equal(await seen, '/sys/demoPK01/device001/thing/measurepoint/post');

    proc.child.kill('SIGINT');
    const done = await proc.done;
    assert.equal(done.code, 0);
  });

  it('refuses to start when the embedded broker port is taken (exit 2)', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    after(() => blocker.close());
    const addr = blocker.address();
    const taken = typeof addr === 'object' && addr !== null ? addr.port : 0;
    const r = await runCli([
      'serve',
      '--config',
      EMBEDDED,
      '--dtls-port',
      '0',
      '--embedded-broker',
      String(taken),
    ]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`${taken}`));
    assert.match(r.stderr, /in use|EADDRINUSE/);
  });
});
