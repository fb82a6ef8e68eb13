/**
 * Responses sized to the peer's largest message (CoapPeer.maxMessage: a DTLS association's
 * record size limit, RFC 8449 / RFC 6066): the Block2 size shrinks until a whole message fits,
 * for piggybacked, separate and NON responses, follow-up blocks and inline commands.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import type { CoapMessage } from '../../../src/coap/codec.js';
import {
  ACK,
  CON,
  Code,
  NON,
  OptionNumber,
  type MessageType,
} from '../../../src/coap/constants.js';
import { CoapEndpoint, type CoapEndpointOptions } from '../../../src/coap/endpoint.js';
import { decode } from '../../../src/coap/codec.js';
import { getOption } from '../../../src/coap/options.js';
import { ManualClock } from '../../../src/time/clock.js';
import { FakePeer, block, bytes, deferred, flush, req, uintOption } from './exchange-harness.js';
import { COAP_ENDPOINT_DEFAULTS } from '../../helpers/component-defaults.js';

type Handler = CoapEndpointOptions<string>['handler'];

function setup(handler: Handler, maxMessage: number | undefined, blockSize = 1024) {
  const clock = new ManualClock(1000);
  const ep = new CoapEndpoint<string>({
    ...COAP_ENDPOINT_DEFAULTS,
    handler,
    clock,
    random: () => 0,
    blockSize,
  });
  const peer = new FakePeer();
  if (maxMessage !== undefined) peer.maxMessage = maxMessage;
  return { ep, peer, clock };
}

/** Fetches every block of a Block2 transfer; returns the body and the raw datagrams. */
function fetchAll(
  ep: CoapEndpoint<string>,
  peer: FakePeer,
  first: Buffer,
  type: MessageType = CON,
): { body: Buffer; raw: Buffer[]; msgs: CoapMessage[] } {
  ep.receive(peer, first);
  const raw: Buffer[] = [];
  const msgs: CoapMessage[] = [];
  const parts: Buffer[] = [];
  let mid = 100;
  for (;;) {
    const got = peer.takeRaw();
    assert.equal(got.length, 1, 'one datagram per request');
    const d = got[0]!;
    raw.push(d);
    const m = decode(d);
    msgs.push(m);
    parts.push(m.payload);
    const b2 = block(m, OptionNumber.BLOCK2);
    if (b2 === undefined || !b2.more) break;
    assert.ok(mid < 400, 'transfer ends');
    ep.receive(
      peer,
      req({ mid: mid++, type, code: Code.GET, block2: { num: b2.num + 1, szx: b2.szx } }),
    );
  }
  return { body: Buffer.concat(parts), raw, msgs };
}

describe('CoAP responses fit the peer’s largest message', () => {
  test('a 3 KB reply to a peer taking 512 bytes goes in 256-byte blocks, every datagram ≤ 512', () => {
    const body = bytes(3072);
    const { ep, peer } = setup(() => ({ code: Code.CONTENT, payload: body }), 512);
    const r = fetchAll(ep, peer, req({ mid: 1, code: Code.GET }));
    assert.deepEqual(r.body, body);
    for (const d of r.raw) assert.ok(d.length <= 512, `datagram of ${d.length} bytes`);
    assert.equal(block(r.msgs[0]!, OptionNumber.BLOCK2)?.szx, 4, '256-byte blocks');
    assert.equal(r.msgs.length, 12);
    assert.equal(uintOption(r.msgs[0]!, OptionNumber.SIZE2), 3072);
    assert.equal(ep.stats.block2Served, 11);
  });

  test('without a limit the same reply uses the configured 1024-byte blocks', () => {
    const body = bytes(3072);
    const { ep, peer } = setup(() => ({ code: Code.CONTENT, payload: body }), undefined);
    const r = fetchAll(ep, peer, req({ mid: 1, code: Code.GET }));
    assert.deepEqual(r.body, body);
    assert.equal(block(r.msgs[0]!, OptionNumber.BLOCK2)?.szx, 6);
    assert.equal(r.msgs.length, 3);
  });

  test('a reply under the block size but over the limit is split; one that fits is not', () => {
    const { ep, peer } = setup(
      (q) => ({ code: Code.CONTENT, payload: bytes(q.payload.length) }),
      512,
    );
    ep.receive(peer, req({ mid: 1, payload: Buffer.alloc(490) }));
    const [m] = peer.take();
    assert.ok(m !== undefined);
    assert.equal(block(m, OptionNumber.BLOCK2)?.num, 0, 'split: 490 bytes + header > 512');
    assert.ok(m.payload.length <= 256);
    ep.receive(peer, req({ mid: 2, payload: Buffer.alloc(400) }));
    const [w] = peer.takeRaw();
    assert.ok(w !== undefined);
    assert.equal(getOption(decode(w), OptionNumber.BLOCK2), undefined, 'fits whole');
    assert.ok(w.length <= 512);
  });

  test('a client asking for 1024-byte blocks gets smaller ones and the num scaled', () => {
    const body = bytes(3000);
    const { ep, peer } = setup(() => ({ code: Code.CONTENT, payload: body }), 250);
    // the second 1024-byte block starts at 1024: with the fitted 128-byte blocks that is num 8
    ep.receive(peer, req({ mid: 1, code: Code.GET, block2: { num: 1, szx: 6 } }));
    const [m] = peer.take();
    assert.ok(m !== undefined);
    const b2 = block(m, OptionNumber.BLOCK2);
    assert.deepEqual(b2 && { num: b2.num, szx: b2.szx }, { num: 8, szx: 3 });
    assert.deepEqual(m.payload, body.subarray(1024, 1152));
  });

  test('separate CON and NON responses are sized the same way', async () => {
    const body = bytes(2000);
    const d = deferred<{ code: number; payload: Buffer }>();
    const { ep, peer, clock } = setup(() => d.promise, 200);
    ep.receive(peer, req({ mid: 1, code: Code.GET }));
    clock.advance(500); // empty ACK
    d.resolve({ code: Code.CONTENT, payload: body });
    await flush();
    const sent = peer.takeRaw();
    assert.equal(sent.length, 2);
    const sep = decode(sent[1]!);
    assert.equal(sep.type, CON);
    assert.ok(sent[1]!.length <= 200);
    assert.equal(block(sep, OptionNumber.BLOCK2)?.szx, 3);

    const n = setup(() => ({ code: Code.CONTENT, payload: body }), 200);
    const r = fetchAll(n.ep, n.peer, req({ mid: 1, type: NON, code: Code.GET }), NON);
    assert.deepEqual(r.body, body);
    for (const x of r.raw) assert.ok(x.length <= 200);
    assert.equal(r.msgs[0]!.type, NON);
  });

  test('a piggybacked command (2100/2102) and a body: the blocks leave room for the options', () => {
    const command = Buffer.alloc(256, 0x63);
    const topic = Buffer.from('/topic/sys/pk/dk/thing/service/measurepoint/set');
    const body = bytes(1500);
    const { ep, peer } = setup(
      () => ({
        code: Code.CHANGED,
        options: [
          { number: OptionNumber.COMMAND_TOPIC, value: topic },
          { number: OptionNumber.COMMAND_PAYLOAD, value: command },
        ],
        payload: body,
      }),
      512,
    );
    const r = fetchAll(ep, peer, req({ mid: 1, code: Code.GET }));
    assert.deepEqual(r.body, body);
    for (const d of r.raw) assert.ok(d.length <= 512, `datagram of ${d.length} bytes`);
    assert.deepEqual(getOption(r.msgs[0]!, OptionNumber.COMMAND_PAYLOAD), command);
    assert.deepEqual(getOption(r.msgs[1]!, OptionNumber.COMMAND_PAYLOAD), command);
    assert.equal(block(r.msgs[0]!, OptionNumber.BLOCK2)?.szx, 3, '128: 256 + options > 512');
    assert.equal(ep.stats.commandsNotInlined, 0);
  });

  test('an inline command too long for the limit is left out; 2100 still announces it', () => {
    const topic = Buffer.from('/topic/sys/pk/dk/thing/service/x');
    const { ep, peer } = setup(
      () => ({
        code: Code.CHANGED,
        options: [
          { number: OptionNumber.COMMAND_TOPIC, value: topic },
          { number: OptionNumber.COMMAND_PAYLOAD, value: Buffer.alloc(200, 0x63) },
        ],
        payload: Buffer.from('{"code":200}'),
      }),
      128,
    );
    ep.receive(peer, req({ mid: 1 }));
    const [d] = peer.takeRaw();
    assert.ok(d !== undefined);
    assert.ok(d.length <= 128);
    const m = decode(d);
    assert.equal(m.type, ACK);
    assert.deepEqual(getOption(m, OptionNumber.COMMAND_TOPIC), topic);
    assert.equal(getOption(m, OptionNumber.COMMAND_PAYLOAD), undefined);
    assert.deepEqual(m.payload, Buffer.from('{"code":200}'));
    assert.equal(ep.stats.commandsNotInlined, 1);
    assert.equal(ep.stats.tooLargeForPeer, 0);
  });

  test('options alone over the limit: counted, sent as small as it gets (the channel refuses it)', () => {
    const { ep, peer } = setup(
      () => ({
        code: Code.CONTENT,
        options: [{ number: OptionNumber.LOCATION_PATH, value: Buffer.alloc(200, 0x61) }],
        payload: bytes(100),
      }),
      128,
    );
    ep.receive(peer, req({ mid: 1, code: Code.GET }));
    const [m] = peer.take();
    assert.ok(m !== undefined);
    assert.equal(block(m, OptionNumber.BLOCK2)?.szx, 0);
    assert.equal(ep.stats.tooLargeForPeer, 1);
  });
});
