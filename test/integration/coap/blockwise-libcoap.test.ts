/**
 * The CoAP exchange layer over a real DTLS association (our DtlsServer on a UdpEndpoint),
 * with libcoap's coap-client-openssl as the peer. libcoap does block-wise transfers itself
 * (`-b` sets its block size), so these tests show that our Block1 reassembly, Block2
 * serving and separate responses interoperate with an independent implementation.
 *
 * The PSK goes to coap-client's `-k` as raw bytes through a bash `$'\xNN'` literal
 * (`pskShellLiteral`), since Node would re-encode an argv string as UTF-8.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Code, ContentFormat, OptionNumber } from '../../../src/coap/constants.js';
import { CoapEndpoint, type CoapReply, type CoapRequest } from '../../../src/coap/endpoint.js';
import { encodeUint, uriPath } from '../../../src/coap/options.js';
import { DtlsServer } from '../../../src/dtls/server.js';
import { derivePsk, pskShellLiteral, pskUsableOnCommandLine } from '../../../src/enos/psk.js';
import { UdpEndpoint } from '../../../src/transport/udp.js';
import { killAll, run, waitUntil, type ProcessResult } from '../../helpers/processes.js';
import { COAP_ENDPOINT_DEFAULTS, DTLS_SERVER_DEFAULTS } from '../../helpers/component-defaults.js';

const IDENTITY = 'blockwise-test';

function keyFor(): Buffer {
  for (let i = 0; ; i++) {
    const k = derivePsk(`blockwise-secret-${i}`);
    if (pskUsableOnCommandLine(k)) return k;
  }
}
const PSK = keyFor();

/** 3 KiB of printable, position-dependent text (coap-client -o writes it byte for byte). */
function text(n: number, salt: string): Buffer {
  let s = '';
  for (let i = 0; s.length < n; i++) s += `${salt}-${i};`;
  return Buffer.from(s.slice(0, n));
}
const UPLOAD = text(3 * 1024, 'up');
const BIG = text(5 * 1024, 'down');

function coapClient(args: readonly string[], timeoutMs = 20_000): Promise<ProcessResult> {
  const script = `key=${pskShellLiteral(PSK)}; exec coap-client-openssl -k "$key" "$@"`;
  return run('bash', ['-c', script, 'bash', '-u', IDENTITY, '-B', '10', ...args], { timeoutMs });
}

function describeRun(r: ProcessResult): string {
  return `exit ${r.code} timedOut ${r.timedOut}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

describe('CoAP exchange layer over DTLS with coap-client-openssl', () => {
  let udp: UdpEndpoint;
  let dtls: DtlsServer<string>;
  let coap: CoapEndpoint<string>;
  let dir: string;
  const received: { path: string; payload: Buffer; method: number }[] = [];
  let closedPeers = 0;

  const handler = (r: CoapRequest<string>): CoapReply | Promise<CoapReply> => {
    const path = uriPath(r.message).join('/');
    received.push({ path, payload: r.payload, method: r.method });
    switch (path) {
      case 'upload':
        return { code: Code.CHANGED };
      case 'big':
        return {
          code: Code.CONTENT,
          options: [
            { number: OptionNumber.CONTENT_FORMAT, value: encodeUint(ContentFormat.TEXT_PLAIN) },
          ],
          payload: BIG,
        };
      case 'both':
        return { code: Code.CHANGED, payload: BIG };
      case 'slow':
        return new Promise((resolve) =>
          setTimeout(() => resolve({ code: Code.CHANGED, payload: Buffer.from('late') }), 300),
        );
      default:
        return { code: Code.NOT_FOUND };
    }
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coap-blockwise-'));
    udp = await UdpEndpoint.bind({ bind: '127.0.0.1', port: 0 });
    coap = new CoapEndpoint<string>({
      ...COAP_ENDPOINT_DEFAULTS,
      handler,
      ackTimeoutMs: 100,
      blockSize: 1024,
    });
    dtls = new DtlsServer<string>({
      ...DTLS_SERVER_DEFAULTS,
      send: udp.send,
      handler: {
        resolvePsk: (identity) =>
          identity.toString() === IDENTITY
            ? { ok: true, psk: PSK, principal: IDENTITY }
            : { ok: false, alert: 'unknown_psk_identity', reason: 'unknown' },
        onData: (assoc, data) => coap.receive(assoc, data),
        onClosed: (assoc) => {
          closedPeers++;
          coap.peerClosed(assoc.key);
        },
      },
    });
    udp.onDatagram((msg, address, port) => dtls.handleDatagram(msg, address, port));
  });

  after(async () => {
    await killAll();
    dtls.close();
    coap.close();
    await udp.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a 3 KiB POST uploaded in 64-byte blocks arrives in full at the handler', async () => {
    const file = join(dir, 'upload.txt');
    writeFileSync(file, UPLOAD);
    const before = coap.stats.block1Continues;
    received.length = 0;
    const r = await coapClient([
      '-m',
      'post',
      '-b',
      '64',
      '-f',
      file,
      `coaps://127.0.0.1:${udp.port}/upload`,
    ]);
    assert.equal(r.timedOut, false, describeRun(r));
    assert.equal(r.code, 0, describeRun(r));
    const got = received.filter((x) => x.path === 'upload');
    assert.equal(got.length, 1, describeRun(r));
    assert.equal(got[0]?.method, Code.POST);
    assert.equal(got[0]?.payload.length, UPLOAD.length);
    assert.ok(got[0]?.payload.equals(UPLOAD), 'payload reassembled byte for byte');
    assert.equal(coap.stats.block1Continues - before, 47, '48 blocks: 47 answered 2.31');
    assert.doesNotMatch(r.stderr, /^[45]\.\d\d$/m, describeRun(r));
  });

  it('a 5 KiB response comes back complete (Block2, server block size 1024)', async () => {
    const out = join(dir, 'big.txt');
    const served = coap.stats.block2Served;
    const r = await coapClient(['-m', 'get', '-o', out, `coaps://127.0.0.1:${udp.port}/big`]);
    assert.equal(r.code, 0, describeRun(r));
    assert.ok(readFileSync(out).equals(BIG), `body matches\n${describeRun(r)}`);
    assert.equal(coap.stats.block2Served - served, 4, 'blocks 1-4 from the body cache');
    assert.equal(received.filter((x) => x.path === 'big').length, 1);
  });

  it('a 5 KiB response in the 64-byte blocks the client asks for', async () => {
    const out = join(dir, 'big64.txt');
    const served = coap.stats.block2Served;
    const r = await coapClient([
      '-m',
      'get',
      '-b',
      '64',
      '-o',
      out,
      `coaps://127.0.0.1:${udp.port}/big`,
    ]);
    assert.equal(r.code, 0, describeRun(r));
    assert.ok(readFileSync(out).equals(BIG), `body matches\n${describeRun(r)}`);
    assert.equal(coap.stats.block2Served - served, 79);
  });

  it('Block1 upload and Block2 answer in one exchange (POST)', async () => {
    const file = join(dir, 'both-in.txt');
    const out = join(dir, 'both-out.txt');
    writeFileSync(file, UPLOAD);
    received.length = 0;
    const r = await coapClient([
      '-m',
      'post',
      '-b',
      '256',
      '-f',
      file,
      '-o',
      out,
      `coaps://127.0.0.1:${udp.port}/both`,
    ]);
    assert.equal(r.code, 0, describeRun(r));
    const got = received.filter((x) => x.path === 'both');
    assert.equal(got.length, 1, `handler called once\n${describeRun(r)}`);
    assert.ok(got[0]?.payload.equals(UPLOAD));
    assert.ok(readFileSync(out).equals(BIG), `body matches\n${describeRun(r)}`);
  });

  it('a slow handler: empty ACK, then a separate CON response that libcoap acknowledges', async () => {
    const acks = coap.stats.acksReceived;
    const separate = coap.stats.separateResponses;
    const r = await coapClient(['-m', 'post', '-e', 'x', `coaps://127.0.0.1:${udp.port}/slow`]);
    assert.equal(r.code, 0, describeRun(r));
    assert.match(r.stdout, /late/, describeRun(r));
    assert.equal(coap.stats.separateResponses - separate, 1);
    // the ACK for our CON may still be on its way when coap-client exits
    for (let i = 0; i < 50 && coap.stats.acksReceived === acks; i++) {
      await new Promise((res) => setTimeout(res, 20));
    }
    assert.equal(coap.stats.acksReceived - acks, 1, 'libcoap ACKed the separate response');
    assert.equal(coap.stats.retransmissions, 0);
  });

  it('each close_notify from coap-client dropped the peer state (peerClosed)', async () => {
    await waitUntil(() => closedPeers >= 5, 'every coap-client association closed');
    assert.equal(coap.stats.peers, 0);
    assert.equal(coap.stats.dedupEntries, 0);
    assert.equal(coap.stats.bodies, 0);
    assert.equal(coap.stats.uploads, 0);
    assert.equal(coap.stats.separateInFlight, 0);
    assert.equal(coap.stats.duplicates, 0);
    assert.equal(coap.stats.malformed, 0);
  });
});
