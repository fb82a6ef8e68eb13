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
import { CLI_FAIL } from '../../src/cli.js';
import { cliInProcess, describeResult } from '../helpers/cli-in-process.js';
import { CLI, REPO_ROOT, killAll, listeningPort, run, startCli } from '../helpers/processes.js';

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
    // not a terminal: the log is JSON lines (logFormat auto)
    const logLines = proc.stdout.trim().split('\n');
    assert.ok(logLines.length > 3);
    for (const l of logLines) assert.doesNotThrow(() => JSON.parse(l), l);

    // a subscriber on the embedded broker sees what the device publishes
    const sub = connect(banner[1] ?? '', { protocolVersion: 4 });
    after(() => sub.end(true));
    await new Promise<void>((resolve, reject) =>
      sub.once('connect', () => resolve()).once('error', reject),
    );
    const seen = new Promise<string>((resolve) => sub.on('message', (topic) => resolve(topic)));
    await sub.subscribeAsync('/sys/demoPK01/device001/thing/measurepoint/post', { qos: 1 });

    await proc.waitFor(/or with libcoap/, { stream: 'stderr' });
    // the banner's command, exactly as printed (a demo device filled in, no placeholders),
    // run by a shell with `npx coap-edge` standing for this build's CLI
    const printed = /\n {2}(npx coap-edge device post (?:[^\n]*\\\n)*[^\n]*)/.exec(proc.stderr);
    assert.ok(printed !== null, proc.stderr);
    const command = printed[1] ?? '';
    assert.doesNotMatch(command, /[<>]/, 'no placeholders');
    assert.match(command, /--identity demoPK01,device001,2,3600 --secret demo-device-secret-0001/);
    assert.match(command, new RegExp(`--port ${port} `));
    const r = await run('bash', [
      '-c',
      command.replace(/^npx coap-edge /, `"${process.execPath}" "${CLI}" `),
    ]);
    assert.equal(r.code, 0, `${command}\n${r.stdout}${r.stderr}`);
    // the demo platform answered on _reply with the same id
    assert.equal(r.stdout.trim(), '2.04 {"id":"1","code":200,"data":null}');
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
    // in-process: the error the binary prints as `coap-edge: <message>` (test/cli/cli.test.ts)
    const r = await cliInProcess([
      'serve',
      '--config',
      EMBEDDED,
      '--dtls-port',
      '0',
      '--embedded-broker',
      String(taken),
    ]);
    assert.equal(r.code, 2, describeResult(r));
    assert.equal(r.error?.code, CLI_FAIL, describeResult(r));
    assert.match(r.error.message, new RegExp(`${taken}`));
    assert.match(r.error.message, /in use|EADDRINUSE/);
  });
});
