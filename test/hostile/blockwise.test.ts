/**
 * Block-wise uploads (RFC 7959 Block1) from authenticated devices.
 *
 * - Memory: 8160 blocks of 16 bytes, each in a ~16 KB datagram padded with an elective
 *   option nobody understands (RFC 7252 §5.4.1 says to ignore it), spread over 8 uploads of
 *   two associations. The gateway must keep the 16 bytes of each block, not the datagram it
 *   came in: memory held after forced collections grows by a few MB at most, not by the
 *   ~130 MB of datagrams.
 * - Caps: concurrent uploads per association (a new one replaces the association's
 *   oldest), all associations (5.03 with Max-Age), and bytes of all uploads (5.03).
 * - Authorization: the first block of an upload to a path the device may not use is refused
 *   as the router would refuse the whole request (4.03 / 4.04), and no upload state exists.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { decode, encode, type CoapMessage, type CoapOption } from '../../src/coap/codec.js';
import { CON, Code, OptionNumber } from '../../src/coap/constants.js';
import { decodeBlock, decodeUint, encodeBlock, getOption } from '../../src/coap/options.js';
import { DtlsClient } from '../../src/dtls/client.js';
import type { Gateway } from '../../src/gateway/index.js';
import {
  GOOD_IDENTITY,
  GOOD_PSK,
  OTHER_IDENTITY,
  OTHER_PSK,
  PRODUCT_PSK,
  THIRD_IDENTITY,
  THIRD_PSK,
  settledMemory,
  startGateway,
  withTimeout,
  type GatewayOptions,
  type HostileServer,
} from '../helpers/hostile.js';

/** An elective (even) option number no one understands: the padding of the attack. */
const PAD_OPTION = 65000;

interface BlockSpec {
  readonly mid: number;
  /** Uri-Path segments; default the device's own measurepoint topic. */
  readonly path: readonly string[];
  /** Uri-Query, to run several transfers on one association. */
  readonly query?: string;
  readonly method?: number;
  readonly num: number;
  readonly more: boolean;
  readonly szx: number;
  readonly payload: Buffer;
  /** Bytes of padding in the elective option. */
  readonly pad?: Buffer;
}

function measurepoint(pk: string, dk: string): string[] {
  return ['topic', 'sys', pk, dk, 'thing', 'measurepoint', 'post'];
}

function blockRequest(s: BlockSpec): Buffer {
  const options: CoapOption[] = s.path.map((p) => ({
    number: OptionNumber.URI_PATH,
    value: Buffer.from(p),
  }));
  if (s.query !== undefined) {
    options.push({ number: OptionNumber.URI_QUERY, value: Buffer.from(s.query) });
  }
  options.push({
    number: OptionNumber.BLOCK1,
    value: encodeBlock({ num: s.num, more: s.more, szx: s.szx }),
  });
  if (s.pad !== undefined) options.push({ number: PAD_OPTION, value: s.pad });
  return encode({
    type: CON,
    code: s.method ?? Code.POST,
    messageId: s.mid & 0xffff,
    token: Buffer.from([s.mid >>> 8, s.mid & 0xff]),
    options,
    payload: s.payload,
  });
}

/** A device association that sends one CoAP request at a time and waits for its answer. */
class Device {
  private waiting: { mid: number; resolve: (m: CoapMessage) => void } | undefined;
  private nextMid = 1;

  private constructor(
    readonly client: DtlsClient,
    readonly productKey: string,
    readonly deviceKey: string,
  ) {
    client.on('message', (m) => {
      let msg: CoapMessage;
      try {
        msg = decode(m);
      } catch {
        return;
      }
      const w = this.waiting;
      if (w === undefined || msg.messageId !== (w.mid & 0xffff)) return;
      this.waiting = undefined;
      w.resolve(msg);
    });
  }

  static async connect(port: number, identity: string, psk: Buffer): Promise<Device> {
    const client = await withTimeout(
      DtlsClient.connect({
        host: '127.0.0.1',
        port,
        identity,
        psk,
        handshakeTimeoutMs: 10_000,
        retransmitTimeoutMs: 300,
      }),
      12_000,
      `handshake of ${identity}`,
    );
    const [pk = '', dk = ''] = identity.split(',');
    return new Device(client, pk, dk);
  }

  get ownPath(): string[] {
    return measurepoint(this.productKey, this.deviceKey);
  }

  /** Sends one block (a fresh message ID) and waits for the answer. */
  async block(s: Omit<BlockSpec, 'mid'>): Promise<CoapMessage> {
    const mid = this.nextMid++;
    const answer = new Promise<CoapMessage>((resolve) => {
      this.waiting = { mid, resolve };
    });
    this.client.send(blockRequest({ ...s, mid }));
    return withTimeout(answer, 5_000, `answer to block ${s.num} of ${this.deviceKey}`);
  }

  /** Uploads `body` to `path` in blocks of 2^(szx+4); returns every answer. */
  async upload(
    body: Buffer,
    szx: number,
    extra: Partial<Omit<BlockSpec, 'mid' | 'num' | 'more' | 'szx' | 'payload'>> = {},
  ): Promise<CoapMessage[]> {
    const size = 1 << (szx + 4);
    const out: CoapMessage[] = [];
    for (let num = 0; num * size < body.length; num++) {
      const more = (num + 1) * size < body.length;
      out.push(
        await this.block({
          path: this.ownPath,
          ...extra,
          num,
          more,
          szx,
          payload: body.subarray(num * size, (num + 1) * size),
        }),
      );
    }
    return out;
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

function block1Of(m: CoapMessage): ReturnType<typeof decodeBlock> {
  const raw = getOption(m, OptionNumber.BLOCK1);
  return raw === undefined ? undefined : decodeBlock(raw);
}

/** A final answer that came from the request handler (the layer echoes Block1 with M=0). */
function fromHandler(m: CoapMessage): boolean {
  const b = block1Of(m);
  return b !== undefined && !b.more && m.code !== Code.CONTINUE;
}

function maxAgeOf(m: CoapMessage): number | undefined {
  const raw = getOption(m, OptionNumber.MAX_AGE);
  return raw === undefined ? undefined : decodeUint(raw);
}

const MB = 1024 * 1024;
const mb = (n: number): string => (n / MB).toFixed(1);

type Server = HostileServer & { readonly gateway: Gateway };

const IDENTITIES: readonly (readonly [string, Buffer])[] = [
  [GOOD_IDENTITY, GOOD_PSK],
  [OTHER_IDENTITY, OTHER_PSK],
  [THIRD_IDENTITY, THIRD_PSK],
];

/** A gateway with these settings and `n` device associations, all closed afterwards. */
async function withDevices(
  opts: GatewayOptions,
  n: number,
  fn: (srv: Server, devices: Device[]) => Promise<void>,
): Promise<void> {
  const srv = await startGateway(opts);
  const devices: Device[] = [];
  try {
    for (const [identity, psk] of IDENTITIES.slice(0, n)) {
      devices.push(await Device.connect(srv.port, identity, psk));
    }
    await fn(srv, devices);
  } finally {
    for (const d of devices) await d.close();
    await srv.close();
  }
}

describe('hostile: Block1 uploads of tiny blocks in huge datagrams', () => {
  const UPLOADS_PER_DEVICE = 4;
  const BLOCKS = 1020; // 1020 × 16 bytes = 16320, under the default maxPayload (16384)
  const PAD = Buffer.alloc(16_000, 0x61);
  /** Growth allowed for 8 uploads of 16 KB of real bytes plus the bookkeeping of 8160 exchanges. */
  const LIMIT = 16 * MB;
  let srv: Server;
  let attackers: Device[] = [];
  let third: Device | undefined;

  before(async () => {
    srv = await startGateway({});
    attackers = [
      await Device.connect(srv.port, GOOD_IDENTITY, GOOD_PSK),
      await Device.connect(srv.port, OTHER_IDENTITY, OTHER_PSK),
    ];
    third = await Device.connect(srv.port, THIRD_IDENTITY, THIRD_PSK);
  });

  after(async () => {
    for (const d of attackers) await d.close();
    await third?.close();
    await srv?.close();
  });

  test(`8160 blocks of 16 bytes in 16 KB datagrams: memory growth under ${LIMIT / MB} MB`, async (t) => {
    const coap = srv.gateway.coap.stats;
    // warm-up: one complete padded upload per device (JIT, pools, caches)
    for (const d of attackers) {
      const res = await d.upload(Buffer.alloc(160, 1), 0, { query: 'warm', pad: PAD });
      assert.ok(fromHandler(res[res.length - 1] as CoapMessage), 'warm-up upload completes');
    }
    const mem0 = await settledMemory();
    const continues0 = coap.block1Continues;

    const payload = Buffer.alloc(16, 0x42);
    const started = Date.now();
    let other = 0;
    await Promise.all(
      attackers.map(async (d) => {
        for (let num = 0; num < BLOCKS; num++) {
          for (let u = 0; u < UPLOADS_PER_DEVICE; u++) {
            const r = await d.block({
              path: d.ownPath,
              query: `u=${u}`,
              num,
              more: true,
              szx: 0,
              payload,
              pad: PAD,
            });
            if (r.code !== Code.CONTINUE) other++;
          }
        }
      }),
    );
    const attackMs = Date.now() - started;
    const sent = attackers.length * UPLOADS_PER_DEVICE * BLOCKS;
    assert.equal(other, 0, 'every block was taken (2.31 Continue)');
    assert.equal(coap.block1Continues - continues0, sent);
    assert.equal(coap.uploads, attackers.length * UPLOADS_PER_DEVICE, 'all uploads are held');
    const mem1 = await settledMemory();
    const grown = mem1 - mem0;
    t.diagnostic(
      `${sent} blocks (${mb(sent * (PAD.length + 16))} MB of datagrams, ` +
        `${(sent * 16) / 1024} KiB of payload) in ${attackMs} ms; held by uploads: ` +
        `${coap.uploadBytes} bytes; heap+buffers after GC ${mb(mem0)} -> ${mb(mem1)} MB ` +
        `(${mb(grown)} MB)`,
    );
    assert.ok(grown < LIMIT, `memory grew by ${mb(grown)} MB (limit ${LIMIT / MB} MB)`);

    // another device is served meanwhile: a whole upload reaches the handler
    assert.ok(third !== undefined);
    const res = await third.upload(Buffer.alloc(100, 7), 0);
    assert.ok(fromHandler(res[res.length - 1] as CoapMessage), 'the third device is served');

    // the attackers' uploads are complete-able: the last block hands all 16320+ bytes over
    const done = await attackers[0]?.block({
      path: attackers[0].ownPath,
      query: 'u=0',
      num: BLOCKS,
      more: false,
      szx: 0,
      payload: Buffer.alloc(8, 1),
    });
    assert.ok(done !== undefined && fromHandler(done), 'an attacker upload completes');
  });
});

describe('hostile: Block1 upload caps per association and for all of them', () => {
  test('per association: a third upload replaces the oldest; globally: 5.03 with Max-Age', async () => {
    await withDevices({ maxUploadsPerPeer: 2, maxUploads: 3 }, 3, async (srv, devices) => {
      const [a, b, c] = devices as [Device, Device, Device];
      const coap = srv.gateway.coap.stats;
      const first = (d: Device, u: number): Promise<CoapMessage> =>
        d.block({
          path: d.ownPath,
          query: `u=${u}`,
          num: 0,
          more: true,
          szx: 0,
          payload: Buffer.alloc(16),
        });
      for (const u of [0, 1, 2]) assert.equal((await first(a, u)).code, Code.CONTINUE);
      assert.equal(coap.uploads, 2, 'one association holds at most 2 uploads');
      const replaced = await a.block({
        path: a.ownPath,
        query: 'u=0',
        num: 1,
        more: false,
        szx: 0,
        payload: Buffer.alloc(1),
      });
      assert.equal(replaced.code, Code.REQUEST_ENTITY_INCOMPLETE, 'the oldest gave way');
      assert.equal(coap.uploads, 2);

      assert.equal((await first(b, 0)).code, Code.CONTINUE);
      assert.equal(coap.uploads, 3);
      const busy = await first(c, 0);
      assert.equal(busy.code, Code.SERVICE_UNAVAILABLE, 'the global count is exhausted');
      assert.ok((maxAgeOf(busy) ?? 0) > 0, '5.03 carries Max-Age');
      assert.equal(coap.uploads, 3);

      // an association closing frees its uploads for others
      await a.close();
      const deadline = Date.now() + 5_000;
      while (coap.uploads !== 1 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(coap.uploads, 1);
      assert.equal((await first(c, 1)).code, Code.CONTINUE);
    });
  });

  test('global bytes: blocks beyond maxUploadBytes get 5.03 and the upload is dropped', async () => {
    const BUDGET = 8192;
    await withDevices({ maxUploadBytes: BUDGET }, 2, async (srv, devices) => {
      const [a, b] = devices as [Device, Device];
      const coap = srv.gateway.coap.stats;
      let peak = 0;
      let taken = 0;
      let refusal: CoapMessage | undefined;
      for (let num = 0; num < 64 && refusal === undefined; num++) {
        const r = await a.block({
          path: a.ownPath,
          num,
          more: true,
          szx: 6, // 1024-byte blocks
          payload: Buffer.alloc(1024, 3),
        });
        peak = Math.max(peak, coap.uploadBytes);
        if (r.code === Code.CONTINUE) taken++;
        else refusal = r;
      }
      assert.ok(refusal !== undefined, 'the budget ran out');
      assert.equal(refusal.code, Code.SERVICE_UNAVAILABLE);
      assert.ok((maxAgeOf(refusal) ?? 0) > 0, '5.03 carries Max-Age');
      assert.ok(peak <= BUDGET, `held ${peak} bytes, budget ${BUDGET}`);
      assert.ok(taken >= 2 && taken * 1024 <= BUDGET, `${taken} blocks taken`);
      assert.equal(coap.uploads, 0, 'the refused upload is dropped');
      assert.equal(coap.uploadBytes, 0);
      // the budget is free again for anyone
      const res = await b.upload(Buffer.alloc(3000, 5), 6);
      assert.ok(fromHandler(res[res.length - 1] as CoapMessage), 'another device uploads');
    });
  });
});

describe('hostile: Block1 uploads are authorized on the first block', () => {
  let srv: Server;
  let dev: Device;
  let product: Device;

  before(async () => {
    srv = await startGateway({});
    dev = await Device.connect(srv.port, GOOD_IDENTITY, GOOD_PSK);
    // a secureMode-3 session: the product secret may only activate
    product = await Device.connect(srv.port, 'demoPK01,fresh-device-7,3,3600', PRODUCT_PSK);
  });

  after(async () => {
    await dev?.close();
    await product?.close();
    await srv?.close();
  });

  const firstBlock = (d: Device, path: readonly string[]): Promise<CoapMessage> =>
    d.block({ path, num: 0, more: true, szx: 0, payload: Buffer.alloc(16, 9) });

  test('another device’s topic: 4.03 on block 0, no upload state, later blocks 4.08', async () => {
    const coap = srv.gateway.coap.stats;
    const continues = coap.block1Continues;
    const r = await firstBlock(dev, measurepoint('demoPK01', 'device002'));
    assert.equal(r.code, Code.FORBIDDEN);
    assert.equal(coap.uploads, 0);
    assert.equal(coap.uploadBytes, 0);
    assert.equal(coap.block1Continues, continues);
    const next = await dev.block({
      path: measurepoint('demoPK01', 'device002'),
      num: 1,
      more: false,
      szx: 0,
      payload: Buffer.alloc(3),
    });
    assert.equal(next.code, Code.REQUEST_ENTITY_INCOMPLETE);
  });

  test('a path that is no topic: 4.04 on block 0, no upload state', async () => {
    const r = await firstBlock(dev, ['not', 'a', 'topic']);
    assert.equal(r.code, Code.NOT_FOUND);
    assert.equal(srv.gateway.coap.stats.uploads, 0);
  });

  test('secureMode 3 uploading to its own measurepoint topic: 4.03 on block 0', async () => {
    const r = await firstBlock(product, product.ownPath);
    assert.equal(r.code, Code.FORBIDDEN);
    assert.equal(srv.gateway.coap.stats.uploads, 0);
  });

  test('secureMode 3 uploading a GET body to its activation path: 4.00 on block 0', async () => {
    const r = await product.block({
      path: ['topic', 'ext', 'session', 'demoPK01', 'fresh-device-7', 'thing', 'activate', 'info'],
      method: Code.GET,
      num: 0,
      more: true,
      szx: 0,
      payload: Buffer.alloc(16, 9),
    });
    assert.equal(r.code, Code.BAD_REQUEST);
    assert.equal(srv.gateway.coap.stats.uploads, 0);
  });

  test('the device’s own topic is admitted and the upload reaches the router', async () => {
    const res = await dev.upload(Buffer.alloc(40, 1), 0);
    assert.deepEqual(
      res.slice(0, -1).map((m) => m.code),
      [Code.CONTINUE, Code.CONTINUE],
    );
    assert.ok(fromHandler(res[res.length - 1] as CoapMessage));
    assert.equal(srv.gateway.coap.stats.uploads, 0);
  });
});
