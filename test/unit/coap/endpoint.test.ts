import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { decode, encode } from '../../../src/coap/codec.js';
import { ACK, CON, Code, NON, OptionNumber, RST } from '../../../src/coap/constants.js';
import {
  CoapEndpoint,
  type CoapEndpointOptions,
  type CoapReply,
  type CoapRequest,
} from '../../../src/coap/endpoint.js';
import { getOption } from '../../../src/coap/options.js';
import { ManualClock } from '../../../src/time/clock.js';
import {
  FakePeer,
  TOKEN,
  bytes,
  deferred,
  empty,
  flush,
  req,
  uintOption,
} from './exchange-harness.js';
import { settledMemory } from '../../helpers/hostile.js';
import { COAP_ENDPOINT_DEFAULTS } from '../../helpers/component-defaults.js';

type Handler = CoapEndpointOptions<string>['handler'];

function setup(
  handler: Handler,
  extra: Partial<CoapEndpointOptions<string>> = {},
): { ep: CoapEndpoint<string>; peer: FakePeer; clock: ManualClock; errors: unknown[] } {
  const clock = new ManualClock(1000);
  const errors: unknown[] = [];
  const ep = new CoapEndpoint<string>({
    ...COAP_ENDPOINT_DEFAULTS,
    handler,
    clock,
    random: () => 0,
    onError: (e) => errors.push(e),
    ...extra,
  });
  return { ep, peer: new FakePeer(), clock, errors };
}

const COMMAND: CoapReply = {
  code: Code.CHANGED,
  options: [
    // given out of order on purpose: the encoder sorts
    { number: OptionNumber.COMMAND_PAYLOAD, value: Buffer.from('{"id":"1"}') },
    { number: OptionNumber.COMMAND_TOPIC, value: Buffer.from('/topic/cmd/x') },
    { number: OptionNumber.CONTENT_FORMAT, value: Buffer.from([50]) },
  ],
  payload: Buffer.from('ok'),
};

describe('piggybacked responses (RFC 7252 §5.2.1)', () => {
  test('a synchronous reply rides on the ACK with options 2100/2102 passed through', () => {
    const seen: CoapRequest<string>[] = [];
    const { ep, peer } = setup((r) => {
      seen.push(r);
      return COMMAND;
    });
    ep.receive(peer, req({ mid: 0x1234, payload: Buffer.from('hello') }));
    const [res, ...rest] = peer.take();
    assert.equal(rest.length, 0);
    assert.ok(res);
    assert.equal(res.type, ACK);
    assert.equal(res.messageId, 0x1234);
    assert.deepEqual(res.token, TOKEN);
    assert.equal(res.code, Code.CHANGED);
    assert.deepEqual(
      res.options.map((o) => o.number),
      [OptionNumber.CONTENT_FORMAT, OptionNumber.COMMAND_TOPIC, OptionNumber.COMMAND_PAYLOAD],
    );
    assert.equal(getOption(res, OptionNumber.COMMAND_TOPIC)?.toString(), '/topic/cmd/x');
    assert.equal(getOption(res, OptionNumber.COMMAND_PAYLOAD)?.toString(), '{"id":"1"}');
    assert.equal(res.payload.toString(), 'ok');
    assert.equal(seen.length, 1);
    const r = seen[0];
    assert.ok(r);
    assert.equal(r.payload.toString(), 'hello');
    assert.equal(r.method, Code.POST);
    assert.equal(r.confirmable, true);
    assert.equal(r.peer, peer);
    assert.equal(ep.stats.requests, 1);
    assert.equal(ep.stats.responses, 1);
    assert.equal(ep.stats.emptyAcks, 0);
  });

  test('an asynchronous reply within ackTimeout is piggybacked too', async () => {
    const d = deferred<CoapReply>();
    const { ep, peer, clock } = setup(() => d.promise);
    ep.receive(peer, req({ mid: 7 }));
    clock.advance(499);
    assert.equal(peer.sent.length, 0);
    d.resolve({ code: Code.CONTENT, payload: Buffer.from('x') });
    await flush();
    clock.advance(10_000);
    const msgs = peer.take();
    assert.equal(msgs.length, 1);
    assert.equal(msgs[0]?.type, ACK);
    assert.equal(msgs[0]?.messageId, 7);
    assert.equal(msgs[0]?.code, Code.CONTENT);
    assert.equal(ep.stats.emptyAcks, 0);
    assert.equal(ep.stats.exchangesInFlight, 0);
  });

  test('ackTimeoutMs -1 never sends an empty ACK', async () => {
    const d = deferred<CoapReply>();
    const { ep, peer, clock } = setup(() => d.promise, { ackTimeoutMs: -1 });
    ep.receive(peer, req({ mid: 8 }));
    clock.advance(60_000);
    assert.equal(peer.sent.length, 0);
    d.resolve({ code: Code.CHANGED });
    await flush();
    const msgs = peer.take();
    assert.equal(msgs.length, 1);
    assert.equal(msgs[0]?.type, ACK);
    assert.equal(msgs[0]?.messageId, 8);
  });
});

describe('deduplication (RFC 7252 §4.5)', () => {
  test('a duplicate CON after completion gets the cached bytes, the handler runs once', () => {
    let calls = 0;
    const { ep, peer } = setup(() => {
      calls++;
      return COMMAND;
    });
    ep.receive(peer, req({ mid: 1 }));
    ep.receive(peer, req({ mid: 1 }));
    ep.receive(peer, req({ mid: 1 }));
    const raw = peer.takeRaw();
    assert.equal(calls, 1);
    assert.equal(raw.length, 3);
    // the very same encoded datagram is resent, byte for byte, from the cache's own copy: the
    // first answer's memory (a slice of the Buffer pool) is not kept alive by the cache, and
    // whatever reuses it later does not change what a duplicate gets
    const first = Buffer.from(raw[0]!);
    for (const again of [raw[1], raw[2]]) {
      assert.ok(again !== undefined && again.equals(first));
      const same = again.buffer === raw[0]?.buffer && again.byteOffset === raw[0]?.byteOffset;
      assert.ok(!same, 'not the memory of the first answer');
    }
    assert.equal(ep.stats.duplicates, 2);
    assert.equal(ep.stats.duplicateResends, 2);
    assert.equal(ep.stats.responses, 1);
    raw[0]!.fill(0xee);
    ep.receive(peer, req({ mid: 1 }));
    assert.ok(peer.takeRaw()[0]?.equals(first), 'the cached copy is unchanged');
    assert.equal(calls, 1);
  });

  test('the same message ID from another peer is a different request', () => {
    let calls = 0;
    const { ep, peer } = setup(() => {
      calls++;
      return { code: Code.CHANGED };
    });
    const other = new FakePeer('peer-2');
    ep.receive(peer, req({ mid: 1 }));
    ep.receive(other, req({ mid: 1 }));
    assert.equal(calls, 2);
    assert.equal(other.sent.length, 1);
  });

  test('a duplicate during processing: nothing before the empty ACK, the empty ACK after it', async () => {
    let calls = 0;
    const d = deferred<CoapReply>();
    const { ep, peer, clock } = setup(() => {
      calls++;
      return d.promise;
    });
    ep.receive(peer, req({ mid: 0x0101 }));
    ep.receive(peer, req({ mid: 0x0101 }));
    assert.equal(peer.sent.length, 0, 'nothing to repeat yet');
    clock.advance(500);
    const [ack] = peer.take();
    assert.equal(ack?.type, ACK);
    assert.equal(ack?.code, Code.EMPTY);
    assert.equal(ack?.messageId, 0x0101);
    ep.receive(peer, req({ mid: 0x0101 }));
    const [again] = peer.take();
    assert.equal(again?.type, ACK);
    assert.equal(again?.code, Code.EMPTY);
    assert.equal(again?.messageId, 0x0101);
    d.resolve({ code: Code.CHANGED });
    await flush();
    const [sep] = peer.take();
    assert.equal(sep?.type, CON);
    // after the separate response, a duplicate still gets only the empty ACK
    ep.receive(peer, req({ mid: 0x0101 }));
    const [third, ...none] = peer.take();
    assert.equal(none.length, 0);
    assert.equal(third?.type, ACK);
    assert.equal(third?.code, Code.EMPTY);
    assert.equal(third?.messageId, 0x0101);
    assert.equal(calls, 1);
    assert.equal(ep.stats.duplicates, 3);
  });

  test('a duplicate NON is ignored and not processed again', () => {
    let calls = 0;
    const { ep, peer } = setup(() => {
      calls++;
      return { code: Code.CHANGED };
    });
    ep.receive(peer, req({ type: NON, mid: 5 }));
    ep.receive(peer, req({ type: NON, mid: 5 }));
    assert.equal(calls, 1);
    assert.equal(peer.sent.length, 1);
    assert.equal(ep.stats.duplicates, 1);
  });

  test('an entry expires after EXCHANGE_LIFETIME (NON: NON_LIFETIME)', () => {
    let calls = 0;
    const { ep, peer, clock } = setup(
      () => {
        calls++;
        return { code: Code.CHANGED };
      },
      { exchangeLifetimeMs: 10_000, nonLifetimeMs: 4_000 },
    );
    ep.receive(peer, req({ mid: 1 }));
    ep.receive(peer, req({ type: NON, mid: 2 }));
    clock.advance(4_000);
    ep.receive(peer, req({ mid: 1 }));
    ep.receive(peer, req({ type: NON, mid: 2 }));
    assert.equal(calls, 3, 'the NON expired, the CON did not');
    clock.advance(6_000);
    ep.receive(peer, req({ mid: 1 }));
    assert.equal(calls, 4);
  });
});

describe('separate responses (RFC 7252 §5.2.2) and retransmission (§4.2)', () => {
  async function separate(
    extra: Partial<CoapEndpointOptions<string>> = {},
  ): Promise<ReturnType<typeof setup> & { conMid: number; conBytes: Buffer }> {
    const d = deferred<CoapReply>();
    const s = setup(() => d.promise, extra);
    s.ep.receive(s.peer, req({ mid: 0x2000, token: Buffer.from([1, 2, 3, 4]) }));
    s.clock.advance(500);
    const [ack] = s.peer.take();
    assert.equal(ack?.type, ACK);
    assert.equal(ack?.code, Code.EMPTY);
    assert.equal(ack?.messageId, 0x2000);
    assert.equal(ack?.token.length, 0);
    d.resolve({ code: Code.CHANGED, payload: Buffer.from('late') });
    await flush();
    const [raw] = s.peer.takeRaw();
    assert.ok(raw);
    const con = decode(raw);
    assert.equal(con.type, CON);
    assert.equal(con.code, Code.CHANGED);
    assert.notEqual(con.messageId, 0x2000, 'a new message ID');
    assert.deepEqual(con.token, Buffer.from([1, 2, 3, 4]), 'the same token');
    assert.equal(con.payload.toString(), 'late');
    assert.equal(s.ep.stats.emptyAcks, 1);
    assert.equal(s.ep.stats.separateResponses, 1);
    assert.equal(s.ep.stats.separateInFlight, 1);
    return { ...s, conMid: con.messageId, conBytes: raw };
  }

  test('retransmitted with doubling timeouts, then given up after MAX_RETRANSMIT', async () => {
    const { ep, peer, clock, conBytes } = await separate();
    // random() = 0: initial timeout exactly ACK_TIMEOUT = 2000, then 4000, 8000, 16000
    const times: number[] = [];
    const start = clock.now();
    for (let t = 0; t < 70_000; t += 100) {
      clock.advance(100);
      for (const b of peer.takeRaw()) {
        assert.deepEqual(b, conBytes, 'the same datagram each time');
        times.push(clock.now() - start);
      }
    }
    assert.deepEqual(times, [2000, 6000, 14000, 30000]);
    assert.equal(ep.stats.retransmissions, 4);
    assert.equal(ep.stats.giveUps, 1, 'given up at 62 s, after the last timeout');
    assert.equal(ep.stats.separateInFlight, 0);
  });

  test('the initial timeout is random in [ACK_TIMEOUT, ACK_TIMEOUT × 1.5]', async () => {
    const { ep, peer, clock } = await separate({ random: () => 0.999 });
    // 2000 × (1 + 0.999 × 0.5) = 2999
    clock.advance(2998);
    assert.equal(peer.sent.length, 0);
    clock.advance(1);
    assert.equal(peer.sent.length, 1);
    assert.equal(ep.stats.retransmissions, 1);
  });

  test('an ACK from the peer stops the retransmission', async () => {
    const { ep, peer, clock, conMid } = await separate();
    clock.advance(2000);
    assert.equal(peer.takeRaw().length, 1);
    ep.receive(peer, empty(ACK, conMid));
    clock.advance(100_000);
    assert.equal(peer.sent.length, 0);
    assert.equal(ep.stats.acksReceived, 1);
    assert.equal(ep.stats.giveUps, 0);
    assert.equal(ep.stats.separateInFlight, 0);
  });

  test('an RST from the peer stops it too (the peer lost interest)', async () => {
    const { ep, peer, clock, conMid } = await separate();
    ep.receive(peer, empty(RST, conMid));
    clock.advance(100_000);
    assert.equal(peer.sent.length, 0);
    assert.equal(ep.stats.resetsReceived, 1);
    assert.equal(ep.stats.retransmissions, 0);
  });

  test('an ACK with another message ID or from another peer changes nothing', async () => {
    const { ep, peer, clock, conMid } = await separate();
    ep.receive(peer, empty(ACK, (conMid + 1) & 0xffff));
    ep.receive(new FakePeer('peer-2'), empty(ACK, conMid));
    clock.advance(2000);
    assert.equal(peer.sent.length, 1);
    assert.equal(ep.stats.ignored, 2);
  });

  test('ackTimeoutMs 0: even a synchronous reply is separate', () => {
    const { ep, peer } = setup(() => ({ code: Code.CHANGED }), { ackTimeoutMs: 0 });
    ep.receive(peer, req({ mid: 9 }));
    const [ack, con] = peer.take();
    assert.equal(ack?.type, ACK);
    assert.equal(ack?.code, Code.EMPTY);
    assert.equal(con?.type, CON);
    assert.equal(con?.code, Code.CHANGED);
    assert.equal(ep.stats.emptyAcks, 1);
  });

  test('ackTimeoutMs 0 with an asynchronous handler: the empty ACK goes out at once', async () => {
    const d = deferred<CoapReply>();
    const { ep, peer } = setup(() => d.promise, { ackTimeoutMs: 0 });
    ep.receive(peer, req({ mid: 10 }));
    assert.equal(peer.take()[0]?.code, Code.EMPTY);
    d.resolve({ code: Code.CHANGED });
    await flush();
    assert.equal(peer.take()[0]?.type, CON);
    assert.equal(ep.stats.separateResponses, 1);
  });

  test('message IDs of separate responses to one peer are consecutive', async () => {
    const d1 = deferred<CoapReply>();
    const d2 = deferred<CoapReply>();
    const ds = [d1, d2];
    const { ep, peer } = setup(() => ds.shift()?.promise ?? Promise.resolve({ code: 0x44 }), {
      ackTimeoutMs: 0,
    });
    ep.receive(peer, req({ mid: 1 }));
    ep.receive(peer, req({ mid: 2 }));
    d1.resolve({ code: Code.CHANGED });
    d2.resolve({ code: Code.CHANGED });
    await flush();
    const cons = peer.take().filter((m) => m.type === CON);
    assert.equal(cons.length, 2);
    assert.equal(((cons[1]?.messageId ?? 0) - (cons[0]?.messageId ?? 0)) & 0xffff, 1);
  });
});

describe('NON requests (RFC 7252 §5.2.3)', () => {
  test('get a NON response with a new message ID and the same token', async () => {
    const d = deferred<CoapReply>();
    const { ep, peer, clock } = setup(() => d.promise);
    ep.receive(peer, req({ type: NON, mid: 0x3000 }));
    clock.advance(5000);
    assert.equal(peer.sent.length, 0, 'no empty ACK for a NON');
    d.resolve({ code: Code.CONTENT, payload: Buffer.from('v') });
    await flush();
    const [res] = peer.take();
    assert.equal(res?.type, NON);
    assert.equal(res?.code, Code.CONTENT);
    assert.notEqual(res?.messageId, 0x3000);
    assert.deepEqual(res?.token, TOKEN);
    clock.advance(100_000);
    assert.equal(peer.sent.length, 0, 'a NON is not retransmitted');
  });

  test('the handler sees confirmable false', () => {
    let confirmable: boolean | undefined;
    const { ep, peer } = setup((r) => {
      confirmable = r.confirmable;
      return { code: Code.CHANGED };
    });
    ep.receive(peer, req({ type: NON, mid: 1 }));
    assert.equal(confirmable, false);
  });
});

describe('message shapes (RFC 7252 §4.2, §4.3)', () => {
  function noHandler(): Handler {
    return () => {
      throw new Error('handler must not be called');
    };
  }

  test('a CoAP ping (Empty CON) gets an RST with its message ID', () => {
    const { ep, peer } = setup(noHandler());
    ep.receive(peer, empty(CON, 0x4242));
    const [rst] = peer.take();
    assert.equal(rst?.type, RST);
    assert.equal(rst?.code, Code.EMPTY);
    assert.equal(rst?.messageId, 0x4242);
    assert.equal(ep.stats.pings, 1);
  });

  test('an Empty NON is rejected silently', () => {
    const { ep, peer } = setup(noHandler());
    ep.receive(peer, empty(NON, 1));
    assert.equal(peer.sent.length, 0);
    assert.equal(ep.stats.malformed, 1);
  });

  test('an ACK carrying a request and a non-Empty RST are ignored', () => {
    const { ep, peer } = setup(noHandler());
    ep.receive(peer, req({ type: ACK, mid: 1 }));
    ep.receive(peer, req({ type: RST, mid: 2 }));
    assert.equal(peer.sent.length, 0);
    assert.equal(ep.stats.malformed, 2);
  });

  test('an ACK carrying a response, stray ACKs and RSTs are ignored', () => {
    const { ep, peer } = setup(noHandler());
    ep.receive(peer, req({ type: ACK, code: Code.CONTENT, mid: 1 }));
    ep.receive(peer, empty(ACK, 2));
    ep.receive(peer, empty(RST, 3));
    assert.equal(peer.sent.length, 0);
    assert.equal(ep.stats.ignored, 3);
  });

  test('a CON response or a reserved code class is rejected with RST, a NON one is ignored', () => {
    const { ep, peer } = setup(noHandler());
    ep.receive(peer, req({ code: Code.CONTENT, mid: 1 }));
    ep.receive(peer, req({ code: 0xe1 /* 7.01 */, mid: 2 }));
    ep.receive(peer, req({ code: 0x21 /* 1.01 */, mid: 3 }));
    ep.receive(peer, req({ type: NON, code: Code.CONTENT, mid: 4 }));
    ep.receive(peer, req({ type: NON, code: 0xc1, mid: 5 }));
    const msgs = peer.take();
    assert.deepEqual(
      msgs.map((m) => [m.type, m.messageId]),
      [
        [RST, 1],
        [RST, 2],
        [RST, 3],
      ],
    );
  });

  test('an undecodable CON gets an RST, an undecodable NON or bad version is dropped', () => {
    const { ep, peer } = setup(noHandler());
    ep.receive(peer, Buffer.from([0x49, 0x02, 0x00, 0x05])); // CON, TKL 9
    ep.receive(peer, Buffer.from([0x59, 0x02, 0x00, 0x06])); // NON, TKL 9
    ep.receive(peer, Buffer.from([0x80, 0x02, 0x00, 0x07])); // version 2
    ep.receive(peer, Buffer.from([0x40]));
    const msgs = peer.take();
    assert.equal(msgs.length, 1);
    assert.equal(msgs[0]?.type, RST);
    assert.equal(msgs[0]?.messageId, 5);
    assert.equal(ep.stats.malformed, 4);
  });
});

describe('unrecognised critical options (RFC 7252 §5.4.1)', () => {
  test('a CON with an unknown critical option gets 4.02 without reaching the handler', () => {
    let calls = 0;
    const { ep, peer } = setup(() => {
      calls++;
      return { code: Code.CHANGED };
    });
    ep.receive(peer, req({ mid: 1, options: [{ number: 9, value: Buffer.from('x') }] }));
    ep.receive(
      peer,
      req({ mid: 2, options: [{ number: OptionNumber.IF_MATCH, value: Buffer.alloc(0) }] }),
    );
    const msgs = peer.take();
    assert.deepEqual(
      msgs.map((m) => [m.type, m.code, m.payload.length]),
      [
        [ACK, Code.BAD_OPTION, 0],
        [ACK, Code.BAD_OPTION, 0],
      ],
    );
    assert.equal(calls, 0);
    assert.equal(ep.stats.badOptions, 2);
  });

  test('unknown elective options (2100, 2102, 0x1000, Observe) are fine', () => {
    let calls = 0;
    const { ep, peer } = setup(() => {
      calls++;
      return { code: Code.CHANGED };
    });
    ep.receive(
      peer,
      req({
        mid: 1,
        options: [
          { number: OptionNumber.OBSERVE, value: Buffer.alloc(0) },
          { number: OptionNumber.COMMAND_TOPIC, value: Buffer.from('x') },
          { number: OptionNumber.COMMAND_PAYLOAD, value: Buffer.from('y') },
          { number: 0x1000, value: Buffer.from('z') },
          { number: OptionNumber.CONTENT_FORMAT, value: Buffer.from([50]) },
          { number: OptionNumber.URI_QUERY, value: Buffer.from('a=b') },
          { number: OptionNumber.ACCEPT, value: Buffer.from([50]) },
          { number: OptionNumber.URI_HOST, value: Buffer.from('h') },
          { number: OptionNumber.URI_PORT, value: Buffer.from([1]) },
        ],
      }),
    );
    assert.equal(calls, 1);
    assert.equal(peer.take()[0]?.code, Code.CHANGED);
  });

  test('a NON with an unknown critical option is dropped; the check can be configured or turned off', () => {
    let calls = 0;
    const handler: Handler = () => {
      calls++;
      return { code: Code.CHANGED };
    };
    const bad = { number: 9, value: Buffer.from('x') };
    const a = setup(handler);
    a.ep.receive(a.peer, req({ type: NON, mid: 1, options: [bad] }));
    assert.equal(a.peer.sent.length, 0);
    assert.equal(calls, 0);

    const b = setup(handler, { understoodOptions: [OptionNumber.URI_PATH, 9] });
    b.ep.receive(b.peer, req({ mid: 1, options: [bad] }));
    assert.equal(calls, 1);
    b.ep.receive(
      b.peer,
      req({ mid: 2, options: [{ number: OptionNumber.URI_QUERY, value: Buffer.from('q') }] }),
    );
    assert.equal(calls, 1, 'Uri-Query is not in this custom set');
    assert.deepEqual(
      b.peer.take().map((m) => m.code),
      [Code.CHANGED, Code.BAD_OPTION],
    );

    const c = setup(handler, { understoodOptions: null });
    c.ep.receive(c.peer, req({ mid: 1, options: [bad] }));
    assert.equal(calls, 2);
  });
});

describe('ignored elective options (RFC 7252 §5.4.1)', () => {
  /** An elective (even) option number nothing understands. */
  const PAD = 65000;

  test('padding in them is not kept: the request is copied without it', async () => {
    const d = deferred<CoapReply>();
    const seen: CoapRequest<string>[] = [];
    const { ep, peer } = setup((r) => {
      seen.push(r);
      return d.promise;
    });
    const payload = bytes(20);
    const datagram = req({
      mid: 7,
      options: [{ number: PAD, value: Buffer.alloc(4096, 1) }],
      payload,
    });
    ep.receive(peer, datagram);
    datagram.fill(0); // the transport reuses its buffer while the handler runs
    const r = seen[0];
    assert.ok(r);
    assert.deepEqual(r.payload, payload);
    assert.deepEqual(r.message.token, TOKEN);
    assert.equal(getOption(r.message, PAD), undefined, 'the padding is gone');
    assert.deepEqual(getOption(r.message, OptionNumber.URI_PATH), Buffer.from('t'));
    d.resolve({ code: Code.CHANGED });
    await flush();
    const [res] = peer.take();
    assert.equal(res?.code, Code.CHANGED);
    assert.deepEqual(res?.token, TOKEN);
  });

  test('a few bytes of them are passed through untouched', () => {
    const seen: CoapRequest<string>[] = [];
    const { ep, peer } = setup((r) => {
      seen.push(r);
      return { code: Code.CHANGED };
    });
    ep.receive(peer, req({ mid: 8, options: [{ number: PAD, value: Buffer.from('etag-ish') }] }));
    const r = seen[0];
    assert.ok(r);
    assert.deepEqual(getOption(r.message, PAD), Buffer.from('etag-ish'));
    assert.equal(peer.take()[0]?.code, Code.CHANGED);
  });

  test('2000 requests padded to 16 KB held by a slow handler: memory follows their real size', async (t) => {
    const N = 2000;
    const LIMIT = 8 * 1024 * 1024;
    const d = deferred<CoapReply>();
    const { ep, peer } = setup(() => d.promise);
    const pad = [{ number: PAD, value: Buffer.alloc(16_000, 1) }];
    const payload = bytes(20);
    const mem0 = await settledMemory();
    for (let i = 0; i < N; i++) ep.receive(peer, req({ mid: i, options: pad, payload }));
    assert.equal(ep.stats.exchangesInFlight, N);
    const mem1 = await settledMemory();
    const mb = (n: number): string => (n / 1024 / 1024).toFixed(1);
    t.diagnostic(`${N} padded requests in flight: memory ${mb(mem0)} -> ${mb(mem1)} MB`);
    assert.ok(mem1 - mem0 < LIMIT, `grew by ${mb(mem1 - mem0)} MB`);
    d.resolve({ code: Code.CHANGED });
    await flush();
    assert.equal(ep.stats.exchangesInFlight, 0);
    ep.close();
  });
});

describe('handler failures never leak error text', () => {
  test('a throw, a rejection, a non-response code and an unencodable reply give 5.00 without payload', async () => {
    const replies: (() => CoapReply | Promise<CoapReply>)[] = [
      () => {
        throw new Error('secret internal detail');
      },
      () => Promise.reject(new Error('secret internal detail')),
      () => ({ code: Code.GET, payload: Buffer.from('x') }),
      () => ({ code: Code.CHANGED, options: [{ number: 70_000, value: Buffer.alloc(0) }] }),
    ];
    let i = 0;
    const { ep, peer, errors } = setup(() => {
      const r = replies[i++];
      assert.ok(r);
      return r();
    });
    for (let mid = 1; mid <= replies.length; mid++) ep.receive(peer, req({ mid }));
    await flush();
    const msgs = peer.take();
    assert.equal(msgs.length, 4);
    for (const m of msgs) {
      assert.equal(m.code, Code.INTERNAL_SERVER_ERROR);
      assert.equal(m.payload.length, 0);
      assert.equal(m.options.length, 0);
    }
    assert.equal(errors.length, 4);
    assert.equal(ep.stats.handlerErrors, 4);
  });
});

describe('bounds and lifecycle', () => {
  test('beyond maxInFlight a request gets 5.03 with Max-Age', async () => {
    const d = deferred<CoapReply>();
    let calls = 0;
    const { ep, peer } = setup(
      () => {
        calls++;
        return d.promise;
      },
      { maxInFlight: 1, busyMaxAgeS: 7 },
    );
    ep.receive(peer, req({ mid: 1 }));
    ep.receive(peer, req({ mid: 2 }));
    const [busy] = peer.take();
    assert.ok(busy);
    assert.equal(busy.code, Code.SERVICE_UNAVAILABLE);
    assert.equal(busy.messageId, 2);
    assert.equal(uintOption(busy, OptionNumber.MAX_AGE), 7);
    assert.equal(calls, 1);
    assert.equal(ep.stats.overloaded, 1);
    d.resolve({ code: Code.CHANGED });
    await flush();
  });

  test('peerClosed drops dedup state, stops retransmissions and orphans running handlers', async () => {
    const d = deferred<CoapReply>();
    let calls = 0;
    const { ep, peer, clock } = setup(
      () => {
        calls++;
        return calls === 2 ? d.promise : { code: Code.CHANGED };
      },
      { ackTimeoutMs: 0 },
    );
    ep.receive(peer, req({ mid: 1 })); // separate, retransmitting
    ep.receive(peer, req({ mid: 2 })); // running
    peer.take();
    assert.equal(ep.stats.separateInFlight, 1);
    assert.equal(ep.stats.peers, 1);
    ep.peerClosed(peer.key);
    assert.equal(ep.stats.separateInFlight, 0);
    assert.equal(ep.stats.peers, 0);
    assert.equal(ep.stats.dedupEntries, 0);
    clock.advance(100_000);
    assert.equal(peer.sent.length, 0, 'no retransmission after close');
    d.resolve({ code: Code.CHANGED });
    await flush();
    assert.equal(peer.sent.length, 0, 'the late reply is dropped');
    assert.equal(ep.stats.orphanedResponses, 1);
    assert.equal(ep.stats.exchangesInFlight, 0);
    // a new association may reuse message IDs: they are new requests
    ep.receive(peer, req({ mid: 1 }));
    assert.equal(calls, 3);
  });

  test('a peer whose channel refuses to send is given up at once', async () => {
    const d = deferred<CoapReply>();
    const { ep, peer, clock } = setup(() => d.promise);
    ep.receive(peer, req({ mid: 1 }));
    clock.advance(500);
    peer.take();
    peer.open = false;
    d.resolve({ code: Code.CHANGED });
    await flush();
    assert.equal(ep.stats.separateInFlight, 0);
  });

  test('close() stops the timers and ignores later datagrams', () => {
    const { ep, peer, clock } = setup(() => ({ code: Code.CHANGED }), { ackTimeoutMs: 0 });
    ep.receive(peer, req({ mid: 1 }));
    peer.take();
    ep.close();
    assert.equal(clock.pending, 0);
    ep.receive(peer, req({ mid: 2 }));
    assert.equal(peer.sent.length, 0);
  });

  test('the sweeper empties expired state and then stops', () => {
    const { ep, peer, clock } = setup(() => ({ code: Code.CHANGED }), {
      exchangeLifetimeMs: 1_000,
      sweepIntervalMs: 500,
    });
    for (let mid = 0; mid < 10; mid++) ep.receive(peer, req({ mid }));
    assert.equal(ep.stats.dedupEntries, 10);
    assert.ok(ep.stats.dedupBytes > 0);
    clock.advance(1_500);
    assert.equal(ep.stats.dedupEntries, 0);
    assert.equal(ep.stats.dedupBytes, 0);
    assert.equal(ep.stats.peers, 0);
    assert.equal(clock.pending, 0, 'no timer left when nothing is cached');
  });

  test('the layer keeps no reference to the request encoder input', () => {
    // sanity: a response for a request whose datagram is a view into a larger buffer
    const { ep, peer } = setup((r) => ({ code: Code.CONTENT, payload: r.payload }));
    const big = Buffer.concat([
      Buffer.from([9, 9, 9]),
      req({ mid: 3, payload: Buffer.from('abc') }),
    ]);
    ep.receive(peer, big.subarray(3));
    assert.equal(peer.take()[0]?.payload.toString(), 'abc');
  });
});

test('encode of empty ACK matches the codec', () => {
  // guards the hand-built 4-byte Empty messages of the endpoint
  const { ep, peer } = setup(() => ({ code: Code.CHANGED }), { ackTimeoutMs: 0 });
  ep.receive(peer, req({ mid: 0xabcd }));
  const [ack] = peer.takeRaw();
  assert.deepEqual(
    ack,
    encode({
      type: ACK,
      code: 0,
      messageId: 0xabcd,
      token: Buffer.alloc(0),
      options: [],
      payload: Buffer.alloc(0),
    }),
  );
});
