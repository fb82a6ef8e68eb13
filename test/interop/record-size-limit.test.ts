/**
 * Real peers with a small receive buffer. gnutls-cli 3.7 `--recordsize 512` over DTLS offers
 * both record_size_limit (RFC 8449) and max_fragment_length: only record_size_limit may be
 * answered (RFC 8449 §5), and the limit applies.
 *
 * `openssl s_client -dtls1_2 -maxfraglen 512` (RFC 6066 max_fragment_length; OpenSSL 3 offers
 * it as a client): the ServerHello must echo the extension, and no record we send may carry
 * more than 512 bytes of plaintext. Against the real in-process gateway (a device request and
 * its answer), and against the gateway's composition (DtlsServer feeding a CoapEndpoint, as
 * src/gateway/build/dtls.ts wires them) serving a 3 KB body, fetched block by block.
 *
 * s_client runs with `-quiet` (stdout is exactly the application data, binary) and `-msg
 * -msgfile`: every record header and handshake message, in hex, goes to a file. The
 * ServerHello is read back from that dump with our own parser; the length of each application
 * record received (its header) says how many plaintext bytes it carried (CCM_8: 8-byte
 * explicit nonce and 8-byte tag, RFC 6655).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { CoapEndpoint } from '../../src/coap/endpoint.js';
import { decode, encode, type CoapMessage } from '../../src/coap/codec.js';
import { CON, Code, OptionNumber } from '../../src/coap/constants.js';
import { decodeBlock, encodeBlock, getOption } from '../../src/coap/options.js';
import { ExtensionType, HandshakeType } from '../../src/dtls/constants.js';
import { parseServerHello } from '../../src/dtls/handshake.js';
import { DtlsServer } from '../../src/dtls/server.js';
import { readRecord, type DtlsRecord } from '../../src/dtls/record.js';
import type { DtlsAssociation } from '../../src/dtls/association.js';
import { derivePsk } from '../../src/enos/psk.js';
import { UdpEndpoint } from '../../src/transport/udp.js';
import {
  DEMO,
  MEASUREPOINT_PAYLOAD,
  MEASUREPOINT_POST,
  coapRequest,
  startGateway,
} from '../helpers/gateway.js';
import { waitUntil } from '../helpers/processes.js';
import { COAP_ENDPOINT_DEFAULTS, DTLS_SERVER_DEFAULTS } from '../helpers/component-defaults.js';

const CCM8_OVERHEAD = 16;
const PSK = Buffer.from('b069dae6f34d621ccd26097c78ecab48', 'hex');
const BODY = Buffer.from(Array.from({ length: 3072 }, (_, i) => 0x20 + (i % 90)));
const LIMIT = 512;
const dir = mkdtempSync(join(tmpdir(), 'coap-edge-rsl-'));
const children = new Set<ChildProcess>();
after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** s_client with a binary stdout and its `-msg` dump in a file. */
class SClient {
  readonly child: ChildProcess;
  readonly msgFile: string;
  stdout = Buffer.alloc(0);
  stderr = '';

  constructor(port: number, identity: string, psk: Buffer, name: string) {
    this.msgFile = join(dir, `${name}.msg`);
    this.child = spawn(
      'openssl',
      [
        's_client',
        '-dtls1_2',
        '-connect',
        `127.0.0.1:${port}`,
        '-psk_identity',
        identity,
        '-psk',
        psk.toString('hex'),
        '-cipher',
        'PSK-AES128-CCM8',
        '-no_ticket',
        '-quiet',
        '-no_ign_eof',
        '-nocommands',
        '-maxfraglen',
        String(LIMIT),
        '-msg',
        '-msgfile',
        this.msgFile,
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    children.add(this.child);
    this.child.on('close', () => children.delete(this.child));
    this.child.stdin?.on('error', () => undefined);
    this.child.stdout?.on('data', (b: Buffer) => (this.stdout = Buffer.concat([this.stdout, b])));
    this.child.stderr?.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
  }

  /** Lines of the `-msg` dump: direction, the line, and the hex bytes that follow it. */
  dump(): { dir: '<<<' | '>>>'; head: string; bytes: Buffer }[] {
    let text = '';
    try {
      text = readFileSync(this.msgFile, 'latin1');
    } catch {
      return [];
    }
    const out: { dir: '<<<' | '>>>'; head: string; bytes: Buffer }[] = [];
    for (const line of text.split('\n')) {
      if (line.startsWith('<<<') || line.startsWith('>>>')) {
        out.push({
          dir: line.startsWith('<<<') ? '<<<' : '>>>',
          head: line,
          bytes: Buffer.alloc(0),
        });
      } else if (/^\s+[0-9a-f]{2}( [0-9a-f]{2})*\s*$/.test(line)) {
        const last = out[out.length - 1];
        if (last !== undefined)
          last.bytes = Buffer.concat([
            last.bytes,
            Buffer.from(line.trim().replace(/ /g, ''), 'hex'),
          ]);
      }
    }
    return out;
  }

  /** Headers (13 bytes) of the records received. */
  receivedRecordHeaders(): Buffer[] {
    return this.dump()
      .filter((d) => d.dir === '<<<' && d.bytes.length === 13)
      .map((d) => d.bytes);
  }

  /** The ServerHello handshake message (DTLS handshake header stripped). */
  serverHello(): ReturnType<typeof parseServerHello> | undefined {
    const m = this.dump().find(
      (d) => d.dir === '<<<' && d.bytes.length > 12 && d.bytes[0] === HandshakeType.serverHello,
    );
    return m === undefined ? undefined : parseServerHello(m.bytes.subarray(12));
  }

  describe(): string {
    return `stderr:\n${this.stderr}\nmsg:\n${this.dump()
      .map((d) => d.head)
      .join('\n')}`;
  }

  /** Sends one CoAP message (one record) and returns the next one received. */
  async exchange(datagram: Buffer): Promise<{ msg: CoapMessage; recordPlaintext: number }> {
    const headersBefore = this.appRecords().length;
    const stdoutBefore = this.stdout.length;
    this.child.stdin?.write(datagram);
    await waitUntil(
      () => this.appRecords().length > headersBefore,
      `a response\n${this.describe()}`,
    );
    const rec = this.appRecords()[headersBefore];
    assert.ok(rec !== undefined);
    const plaintext = rec.readUInt16BE(11) - CCM8_OVERHEAD;
    await waitUntil(
      () => this.stdout.length >= stdoutBefore + plaintext,
      `its ${plaintext} bytes on stdout`,
    );
    return {
      msg: decode(this.stdout.subarray(stdoutBefore, stdoutBefore + plaintext)),
      recordPlaintext: plaintext,
    };
  }

  private appRecords(): Buffer[] {
    return this.receivedRecordHeaders().filter((h) => h[0] === 23);
  }

  async established(): Promise<void> {
    // our Finished (epoch 1 handshake record) received
    await waitUntil(
      () => this.receivedRecordHeaders().some((h) => h[0] === 22 && h.readUInt16BE(3) === 1),
      `the handshake\n${this.describe()}`,
    );
  }
}

/** DtlsServer feeding a CoapEndpoint that answers every request with {@link BODY}. */
async function composition() {
  const ep = await UdpEndpoint.bind({ bind: '127.0.0.1', port: 0 });
  const outbound: Buffer[] = [];
  const coap = new CoapEndpoint<string>({
    ...COAP_ENDPOINT_DEFAULTS,
    handler: () => ({ code: Code.CONTENT, payload: BODY }),
  });
  const server = new DtlsServer<string>({
    ...DTLS_SERVER_DEFAULTS,
    send: (data, port, address) => {
      outbound.push(Buffer.from(data));
      ep.send(data, port, address);
    },
    handler: {
      resolvePsk: () => ({ ok: true, psk: PSK, principal: 'dev' }),
      onData: (a: DtlsAssociation<string>, d) => coap.receive(a, d),
    },
  });
  ep.onDatagram((m, address, port) => server.handleDatagram(m, address, port));
  return {
    port: ep.port,
    server,
    outbound,
    close: async () => {
      server.close();
      coap.close();
      await ep.close();
    },
  };
}

function records(datagrams: readonly Buffer[]): DtlsRecord[] {
  const out: DtlsRecord[] = [];
  for (const d of datagrams) {
    let off = 0;
    for (let rec = readRecord(d, off); rec !== undefined; rec = readRecord(d, off)) {
      off += rec.raw.length;
      out.push(rec);
    }
  }
  return out;
}

function assertEchoed(c: SClient): void {
  const sh = c.serverHello();
  assert.ok(sh !== undefined, c.describe());
  assert.deepEqual(
    sh.extensions.get(ExtensionType.maxFragmentLength),
    Buffer.from([1]),
    'max_fragment_length 2^9 echoed',
  );
  assert.equal(sh.extensions.has(ExtensionType.recordSizeLimit), false);
}

function assertAllFit(c: SClient): void {
  const headers = c.receivedRecordHeaders();
  assert.ok(headers.length > 3);
  for (const h of headers) {
    const length = h.readUInt16BE(11);
    const epoch = h.readUInt16BE(3);
    const plaintext = epoch === 0 ? length : length - CCM8_OVERHEAD;
    assert.ok(plaintext <= LIMIT, `a record of ${plaintext} bytes of plaintext`);
  }
}

describe('openssl s_client -maxfraglen 512', () => {
  it('the gateway echoes max_fragment_length and answers a device within 512-byte records', async (t) => {
    const gw = await startGateway();
    t.after(() => gw.close());
    const c = new SClient(gw.port, DEMO.device001.identity, derivePsk(DEMO.device001.secret), 'gw');
    t.after(() => c.child.kill('SIGKILL'));
    await c.established();
    assertEchoed(c);
    const token = Buffer.from('rsl01');
    const { msg, recordPlaintext } = await c.exchange(
      coapRequest({
        code: Code.POST,
        path: MEASUREPOINT_POST('demoPK01', 'device001'),
        messageId: 7,
        token,
        payload: Buffer.from(MEASUREPOINT_PAYLOAD),
      }),
    );
    assert.deepEqual(msg.token, token);
    assert.ok(recordPlaintext <= LIMIT);
    const [assoc] = [...gw.gateway.dtls.listAssociations()];
    assert.equal(assoc?.maxPlaintext, LIMIT);
    assertAllFit(c);
    assert.equal(gw.gateway.dtls.stats.recordTooLarge, 0);
  });

  it('a 3 KB response arrives in blocks, every record ≤ 512 bytes of plaintext', async (t) => {
    const s = await composition();
    t.after(() => s.close());
    const c = new SClient(s.port, 'demoPK01,dev,2,3600', PSK, 'big');
    t.after(() => c.child.kill('SIGKILL'));
    await c.established();
    assertEchoed(c);

    const parts: Buffer[] = [];
    let num = 0;
    let szx = 6;
    for (let mid = 1; mid < 50; mid++) {
      const { msg } = await c.exchange(
        encode({
          type: CON,
          code: Code.GET,
          messageId: mid,
          token: Buffer.from([mid]),
          options: [
            { number: OptionNumber.URI_PATH, value: Buffer.from('big') },
            { number: OptionNumber.BLOCK2, value: encodeBlock({ num, more: false, szx }) },
          ],
          payload: Buffer.alloc(0),
        }),
      );
      assert.equal(msg.code, Code.CONTENT);
      parts.push(msg.payload);
      const raw = getOption(msg, OptionNumber.BLOCK2);
      const b2 = raw === undefined ? undefined : decodeBlock(raw);
      assert.ok(b2 !== undefined, 'block-wise');
      if (!b2.more) break;
      num = b2.num + 1;
      szx = b2.szx;
    }
    assert.deepEqual(Buffer.concat(parts), BODY);
    assert.ok(parts.length >= 12, `${parts.length} blocks of at most 256 bytes`);
    assertAllFit(c);
    assert.equal(s.server.stats.recordTooLarge, 0);
  });
});

describe('gnutls-cli --udp --recordsize 512', () => {
  it('offers record_size_limit and max_fragment_length: only record_size_limit is answered, and honoured', async (t) => {
    const s = await composition();
    t.after(() => s.close());
    const child = spawn(
      'gnutls-cli',
      [
        '--udp',
        '--port',
        String(s.port),
        '127.0.0.1',
        '--pskusername',
        'demoPK01,dev,2,3600',
        '--pskkey',
        PSK.toString('hex'),
        '--priority',
        'NORMAL:-VERS-ALL:+VERS-DTLS1.2:-KX-ALL:+PSK:-CIPHER-ALL:+AES-128-CCM-8',
        '--recordsize',
        String(LIMIT),
        '-d',
        '4',
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    children.add(child);
    t.after(() => child.kill('SIGKILL'));
    let out = '';
    let err = '';
    child.stdout.setEncoding('latin1').on('data', (x: string) => (out += x));
    child.stderr.setEncoding('latin1').on('data', (x: string) => (err += x));
    child.stdin.on('error', () => undefined);
    await waitUntil(() => /Handshake was completed/.test(out + err), `the handshake\n${out}${err}`);
    // a GET without Block2: the server picks the block size that fits
    child.stdin.write(
      encode({
        type: CON,
        code: Code.GET,
        messageId: 1,
        token: Buffer.from([9]),
        options: [{ number: OptionNumber.URI_PATH, value: Buffer.from('big') }],
        payload: Buffer.alloc(0),
      }),
    );
    const first = BODY.subarray(0, 256).toString('latin1');
    await waitUntil(() => out.includes(first), `the first 256-byte block\n${out}`);
    assert.match(err, /Sending extension Record Size Limit\/28/);
    assert.match(err, /Sending extension Maximum Record Size\/1/);
    assert.match(err, /Parsing extension 'Record Size Limit\/28'/);
    assert.doesNotMatch(err, /Parsing extension 'Maximum Record Size\/1'/, 'RFC 8449 §5');
    assert.equal(out.includes(BODY.subarray(0, 257).toString('latin1')), false, 'one block only');
    const [assoc] = [...s.server.listAssociations()];
    assert.equal(assoc?.maxPlaintext, LIMIT);
    const sent = records(s.outbound);
    assert.ok(sent.some((r) => r.type === 23));
    for (const r of sent) {
      const plaintext = r.epoch === 0 ? r.body.length : r.body.length - CCM8_OVERHEAD;
      assert.ok(plaintext <= LIMIT, `a record of ${plaintext} bytes`);
    }
    assert.equal(s.server.stats.recordTooLarge, 0);
  });
});
