/**
 * Fuzz targets: every parser that sees bytes or text from a device, with an input generator
 * (random bytes plus mutations of valid encodings, which get past the first length checks)
 * and an oracle that throws on any broken property:
 * - the parser returns, or throws only its typed error (DtlsError decode_error with the
 *   decode_error alert, CoapFormatError with its code and reaction); the EnOS parsers never
 *   throw at all;
 * - error messages are fixed text: no input bytes are echoed;
 * - everything returned is a view inside the input and the lengths add up to exactly the
 *   input (nothing read past the end, no trailing bytes accepted);
 * - where an encoder exists, what was accepted re-encodes to the same bytes.
 *
 * The suite runs each target for FUZZ_SECONDS (test/fuzz/*.test.ts); scripts/fuzz-long.mjs
 * runs them for millions of inputs and writes docs/fuzzing.md.
 */
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import fc from 'fast-check';
import { WireOption, decode, decodeWire, encode, type CoapMessage } from '../../src/coap/codec.js';
import { OptionNumber } from '../../src/coap/constants.js';
import { COAP_ERROR_CODES, CoapFormatError, reactionFor } from '../../src/coap/errors.js';
import {
  contentFormat,
  decodeBlock,
  decodeUint,
  encodeBlock,
  encodeUint,
  getOption,
  getOptions,
  uriPath,
  uriPathStrict,
} from '../../src/coap/options.js';
import {
  AlertDescription,
  DTLS_1_2,
  HANDSHAKE_HEADER_LENGTH,
  MAX_RECORD_BODY,
  RECORD_HEADER_LENGTH,
} from '../../src/dtls/constants.js';
import { DtlsError } from '../../src/dtls/errors.js';
import {
  MAX_HANDSHAKE_MESSAGE,
  clientHelloBody,
  clientKeyExchangeBody,
  handshakeMessage,
  helloVerifyRequestBody,
  parseClientHello,
  parseClientKeyExchange,
  parseFinished,
  parseHelloVerifyRequest,
  parseServerHello,
  parseServerKeyExchange,
  readFragments,
  serverHelloBody,
  type HandshakeFragment,
} from '../../src/dtls/handshake.js';
import { Reassembler } from '../../src/dtls/reassembly.js';
import { plainRecord, readRecord, type DtlsRecord } from '../../src/dtls/record.js';
import {
  formatIdentity,
  identityErrorCode,
  isValidKey,
  parseIdentity,
  type IdentityRejectReason,
} from '../../src/enos/identity.js';
import { isDownlinkTopic, parseMqttTopic, parseTopicPath } from '../../src/enos/topics.js';
import {
  bytesArb,
  fragment,
  rawOrBuilt,
  coapMessageArb,
  isViewInto,
  mutate,
  mutatedArb,
} from '../helpers/fuzz.js';

export type Layer = 'dtls' | 'coap' | 'enos';

export interface FuzzRun {
  readonly numRuns: number;
  readonly seed: number;
  /** Stop (without failing) after this many milliseconds. */
  readonly timeLimitMs: number;
}

export interface FuzzResult {
  /** Inputs actually run (fewer than asked when the time limit stopped the run). */
  readonly runs: number;
  readonly interrupted: boolean;
  readonly failed: boolean;
  /** fast-check's report (seed, path, shrunk counterexample) when `failed`. */
  readonly report: string | undefined;
}

export interface FuzzTarget {
  readonly name: string;
  readonly layer: Layer;
  /** What the oracle checks, for docs/fuzzing.md and test names. */
  readonly checks: string;
  run(p: FuzzRun): FuzzResult;
}

function target<T>(
  name: string,
  layer: Layer,
  checks: string,
  arb: fc.Arbitrary<T>,
  oracle: (input: T) => void,
): FuzzTarget {
  return {
    name,
    layer,
    checks,
    run(p) {
      const d = fc.check(fc.property(arb, oracle), {
        numRuns: p.numRuns,
        seed: p.seed,
        interruptAfterTimeLimit: p.timeLimitMs,
        markInterruptAsFailure: false,
      });
      return {
        runs: d.numRuns,
        interrupted: d.interrupted,
        failed: d.failed,
        report: d.failed ? fc.defaultReportMessage(d) : undefined,
      };
    },
  };
}

// ---------------------------------------------------------------------------------------
// DTLS
// ---------------------------------------------------------------------------------------

/** Runs `parse`; a throw must be a decode_error DtlsError carrying the decode_error alert. */
function dtlsParse<T>(parse: () => T): T | undefined {
  try {
    return parse();
  } catch (err) {
    if (!(err instanceof DtlsError)) throw err;
    assert.equal(err.code, 'DTLS_DECODE_ERROR');
    assert.equal(err.alert, AlertDescription.decodeError);
    // fixed text naming the structure, never input bytes
    assert.match(err.message, /^malformed [A-Za-z ()]+$/);
    return undefined;
  }
}

function assertDtlsRejects(parse: () => unknown): void {
  assert.equal(dtlsParse(parse), undefined, 'trailing bytes accepted');
}

const u8 = fc.integer({ min: 0, max: 255 });
const u16 = fc.integer({ min: 0, max: 0xffff });
const random32 = bytesArb(32, 32);

const recordArb = fc.record({
  type: fc.oneof(fc.constantFrom(20, 21, 22, 23, 25), u8),
  version: fc.oneof(fc.constantFrom(DTLS_1_2, 0xfeff), u16),
  epoch: fc.oneof(fc.constantFrom(0, 1), u16),
  seq: fc.oneof(fc.nat({ max: 10 }), fc.integer({ min: 0, max: 2 ** 48 - 1 })),
  body: bytesArb(64),
});

/** readRecord walking a datagram as the server does: record after record until it stops. */
const dtlsRecord = target(
  'dtls.readRecord',
  'dtls',
  'never throws; each record is a view inside the datagram with a 0xFE version, a body within the RFC maximum and header + body = raw; unmutated datagrams of records come back record by record, whole',
  rawOrBuilt(fc.array(recordArb, { minLength: 1, maxLength: 4 }), 80),
  ({ items: records, buf, muts }) => {
    const clean = records?.map((r) => plainRecord(r.type, r.version, r.epoch, r.seq, r.body));
    const input = buf ?? mutate(Buffer.concat(clean ?? []), muts);
    const got: DtlsRecord[] = [];
    let off = 0;
    for (;;) {
      const r = readRecord(input, off);
      if (r === undefined) break;
      assert.ok(isViewInto(r.raw, input) && isViewInto(r.body, input));
      assert.equal(r.raw.byteOffset, input.byteOffset + off);
      assert.equal(r.version >>> 8, 0xfe);
      assert.ok(r.body.length <= MAX_RECORD_BODY);
      assert.equal(r.raw.length, RECORD_HEADER_LENGTH + r.body.length);
      assert.ok(r.raw.subarray(RECORD_HEADER_LENGTH).equals(r.body));
      assert.ok(plainRecord(r.type, r.version, r.epoch, r.seq, r.body).equals(r.raw));
      got.push(r);
      off += r.raw.length;
    }
    if (records !== undefined && muts.length === 0) {
      // readRecord stops at the first non-DTLS record: the rest of the datagram is unusable
      const firstBad = records.findIndex((r) => r.version >>> 8 !== 0xfe);
      const expected = firstBad === -1 ? records : records.slice(0, firstBad);
      assert.equal(got.length, expected.length);
      expected.forEach((e, i) => {
        const r = got[i]!;
        assert.deepEqual([r.type, r.version, r.epoch, r.seq], [e.type, e.version, e.epoch, e.seq]);
        assert.ok(r.body.equals(e.body));
      });
      if (firstBad === -1) assert.equal(off, input.length);
    }
  },
);

const fragmentArb = fc
  .record({
    msgType: fc.oneof(fc.constantFrom(1, 3, 16, 20), u8),
    messageSeq: fc.oneof(fc.nat({ max: 4 }), u16),
    body: bytesArb(48),
    cut: fc.nat(),
    len: fc.nat(),
  })
  .map(({ msgType, messageSeq, body, cut, len }) => {
    const fragmentOffset = cut % (body.length + 1);
    const fragment = body.subarray(fragmentOffset, fragmentOffset + (len % (body.length + 1)));
    return { msgType, messageSeq, length: body.length, fragmentOffset, fragment };
  });

function fragmentBytes(f: HandshakeFragment): Buffer {
  return fragment({ ...f, offset: f.fragmentOffset, data: f.fragment });
}

const dtlsFragments = target(
  'dtls.readFragments',
  'dtls',
  'returns or throws decode_error; fragments are views inside the record body, each within its message length, and 12-byte headers + fragments add up to the whole body; unmutated records give their fragments back',
  rawOrBuilt(fc.array(fragmentArb, { minLength: 1, maxLength: 4 }), 80),
  ({ items: frags, buf, muts }) => {
    const input = buf ?? mutate(Buffer.concat((frags ?? []).map(fragmentBytes)), muts);
    const got = dtlsParse(() => readFragments(input));
    if (got !== undefined) {
      let total = 0;
      for (const f of got) {
        assert.ok(isViewInto(f.fragment, input));
        assert.ok(f.fragmentOffset + f.fragment.length <= f.length);
        total += HANDSHAKE_HEADER_LENGTH + f.fragment.length;
      }
      assert.equal(total, input.length);
      assert.ok(Buffer.concat(got.map(fragmentBytes)).equals(input));
    }
    if (frags !== undefined && muts.length === 0) {
      assert.ok(got !== undefined, 'valid fragments refused');
      assert.deepEqual(
        got.map((f) => ({ ...f, fragment: f.fragment.toString('hex') })),
        frags.map((f) => ({ ...f, fragment: f.fragment.toString('hex') })),
      );
    }
  },
);

const extensionsArb = fc.uniqueArray(fc.tuple(u16, bytesArb(24)), {
  maxLength: 6,
  selector: ([t]) => t,
});

const clientHelloArb = fc
  .record({
    random: random32,
    cookie: fc.oneof(bytesArb(32), bytesArb(255)),
    cipherSuites: fc.array(fc.oneof(fc.constantFrom(0xc0a8, 0x00a8, 0xc0ae, 0x00ff), u16), {
      minLength: 1,
      maxLength: 12,
    }),
    extensions: fc.option(extensionsArb, { nil: undefined }),
  })
  .map((p) => clientHelloBody(p));

const dtlsClientHello = target(
  'dtls.parseClientHello',
  'dtls',
  'returns or throws decode_error; fields are views inside the body; an accepted body with no session id and null compression re-encodes to the same bytes; a byte appended after the extensions block is refused',
  fc.oneof(bytesArb(200), clientHelloArb, mutatedArb(clientHelloArb)),
  (body) => {
    const ch = dtlsParse(() => parseClientHello(body));
    if (ch === undefined) return;
    for (const v of [ch.random, ch.sessionId, ch.cookie, ch.compressionMethods, ...ch.cookieInput])
      assert.ok(isViewInto(v, body));
    for (const v of ch.extensions.values()) assert.ok(isViewInto(v, body));
    assert.equal(ch.random.length, 32);
    assert.ok(ch.cipherSuites.length >= 1 && ch.compressionMethods.length >= 1);
    if (
      ch.clientVersion === DTLS_1_2 &&
      ch.sessionId.length === 0 &&
      ch.compressionMethods.equals(Buffer.from([0]))
    ) {
      const again = clientHelloBody({
        random: ch.random,
        cookie: ch.cookie,
        cipherSuites: ch.cipherSuites,
        extensions: ch.hasExtensionsBlock ? [...ch.extensions] : undefined,
      });
      assert.ok(again.equals(body), 'accepted bytes do not re-encode to themselves');
    }
    if (ch.hasExtensionsBlock) {
      assertDtlsRejects(() => parseClientHello(Buffer.concat([body, Buffer.from([0])])));
    }
  },
);

const dtlsClientKeyExchange = target(
  'dtls.parseClientKeyExchange',
  'dtls',
  'returns a non-empty identity that is a view of the body and re-encodes to the same bytes, or throws decode_error; trailing bytes are refused',
  fc.oneof(
    bytesArb(40),
    bytesArb(300, 1).map(clientKeyExchangeBody),
    mutatedArb(bytesArb(64, 1).map(clientKeyExchangeBody)),
  ),
  (body) => {
    const id = dtlsParse(() => parseClientKeyExchange(body));
    if (id === undefined) return;
    assert.ok(id.length >= 1 && isViewInto(id, body));
    assert.ok(clientKeyExchangeBody(id).equals(body));
    assertDtlsRejects(() => parseClientKeyExchange(Buffer.concat([body, Buffer.from([0])])));
  },
);

const serverHelloArb = fc
  .record({
    random: random32,
    sessionId: bytesArb(32),
    cipherSuite: u16,
    extensions: extensionsArb,
  })
  .map((p) => serverHelloBody(p));

/** The parsers of what a server sends, used by the client in src/dtls/client.ts. */
const dtlsServerFlight = target(
  'dtls.server-flight parsers',
  'dtls',
  'parseHelloVerifyRequest, parseServerHello, parseServerKeyExchange, parseFinished: return or throw decode_error; results are views inside the body; accepted HelloVerifyRequests and ServerHellos re-encode to the same bytes; trailing bytes are refused',
  fc.oneof(
    fc.tuple(fc.nat({ max: 3 }), bytesArb(80)),
    fc.tuple(
      fc.constant(0),
      mutatedArb(bytesArb(40).map((c) => helloVerifyRequestBody(DTLS_1_2, c))),
    ),
    fc.tuple(fc.constant(1), fc.oneof(serverHelloArb, mutatedArb(serverHelloArb))),
    fc.tuple(fc.constant(2), mutatedArb(bytesArb(40).map(clientKeyExchangeBody))),
    fc.tuple(fc.constant(3), mutatedArb(bytesArb(12, 12))),
  ),
  ([which, body]) => {
    const trailing = Buffer.concat([body, Buffer.from([0])]);
    switch (which) {
      case 0: {
        const hvr = dtlsParse(() => parseHelloVerifyRequest(body));
        if (hvr === undefined) return;
        assert.ok(isViewInto(hvr.cookie, body));
        assert.ok(helloVerifyRequestBody(hvr.version, hvr.cookie).equals(body));
        assertDtlsRejects(() => parseHelloVerifyRequest(trailing));
        return;
      }
      case 1: {
        const sh = dtlsParse(() => parseServerHello(body));
        if (sh === undefined) return;
        assert.ok(isViewInto(sh.random, body) && isViewInto(sh.sessionId, body));
        const hasBlock = body.length > 2 + 32 + 1 + sh.sessionId.length + 3;
        if (
          sh.version === DTLS_1_2 &&
          sh.compression === 0 &&
          hasBlock === sh.extensions.size > 0
        ) {
          const again = serverHelloBody({ ...sh, extensions: [...sh.extensions] });
          assert.ok(again.equals(body), 'accepted bytes do not re-encode to themselves');
        }
        if (hasBlock) assertDtlsRejects(() => parseServerHello(trailing));
        return;
      }
      case 2: {
        const hint = dtlsParse(() => parseServerKeyExchange(body));
        if (hint === undefined) return;
        assert.ok(isViewInto(hint, body) && clientKeyExchangeBody(hint).equals(body));
        assertDtlsRejects(() => parseServerKeyExchange(trailing));
        return;
      }
      default: {
        const vd = dtlsParse(() => parseFinished(body));
        if (vd === undefined) return;
        assert.equal(vd.length, 12);
        assertDtlsRejects(() => parseFinished(trailing));
      }
    }
  },
);

const reassemblyArb = fc.record({
  /** The real messages of a flight, message_seq 0, 1, ... */
  messages: fc.array(fc.tuple(fc.constantFrom(1, 16, 20), bytesArb(300)), {
    minLength: 1,
    maxLength: 3,
  }),
  cuts: fc.array(fc.nat(), { maxLength: 6 }),
  /** Each real fragment is sent this many extra times. */
  dupes: fc.array(fc.nat({ max: 2 }), { maxLength: 12 }),
  /** Forged fragments, framed as readFragments lets through (offset + length within length). */
  junk: fc.array(
    fc
      .record({
        msgType: u8,
        length: fc.oneof(fc.nat({ max: 300 }), fc.nat({ max: 1 << 24 })),
        messageSeq: fc.oneof(fc.nat({ max: 6 }), u16),
        fragmentOffset: fc.oneof(fc.nat({ max: 300 }), fc.nat({ max: 1 << 24 })),
        fragment: bytesArb(64),
      })
      .map((j): HandshakeFragment => {
        const fragmentOffset = Math.min(j.fragmentOffset, j.length);
        const fragment = j.fragment.subarray(0, j.length - fragmentOffset);
        return { ...j, fragmentOffset, fragment };
      }),
    { maxLength: 4 },
  ),
  order: fc.array(fc.nat(), { maxLength: 40 }),
  epoch: fc.constantFrom(0, 1),
});

const dtlsReassembly = target(
  'dtls.Reassembler',
  'dtls',
  'fed split, reordered, duplicated and forged fragments: add returns or throws decode_error; messages come out in message_seq order with their declared length, never over the message cap; with no forged fragments every message comes out exactly once, byte for byte',
  reassemblyArb,
  ({ messages, cuts, dupes, junk, order, epoch }) => {
    const frags: HandshakeFragment[] = [];
    messages.forEach(([msgType, body], seq) => {
      const points = [...new Set(cuts.map((c) => c % (body.length + 1)))].sort((a, b) => a - b);
      let prev = 0;
      for (const p of [...points, body.length]) {
        if (p < prev || (p === prev && body.length > 0)) continue;
        const fragment = body.subarray(prev, p);
        const f = { msgType, length: body.length, messageSeq: seq, fragmentOffset: prev, fragment };
        for (let k = 0; k <= (dupes[frags.length] ?? 0); k++) frags.push(f);
        prev = p;
      }
    });
    for (const j of junk) frags.push(j);
    // shuffle deterministically from `order`
    for (let i = frags.length - 1; i > 0; i--) {
      const k = (order[i] ?? 0) % (i + 1);
      [frags[i], frags[k]] = [frags[k]!, frags[i]!];
    }
    const r = new Reassembler(0);
    const out = [];
    for (const f of frags) {
      const res = dtlsParse(() => r.add(f, epoch));
      if (res?.kind === 'messages') out.push(...res.messages);
    }
    out.forEach((m, i) => {
      assert.equal(m.messageSeq, i);
      assert.ok(m.body.length <= MAX_HANDSHAKE_MESSAGE);
      assert.equal(m.epoch, epoch);
    });
    assert.equal(r.expectedSeq, out.length);
    if (junk.length === 0) {
      assert.equal(out.length, messages.length, 'a complete flight did not come out whole');
      out.forEach((m, i) => {
        const [msgType, body] = messages[i]!;
        assert.equal(m.msgType, msgType);
        assert.ok(
          handshakeMessage(m.msgType, m.messageSeq, m.body).equals(
            handshakeMessage(msgType, i, body),
          ),
        );
      });
    }
  },
);

// ---------------------------------------------------------------------------------------
// CoAP
// ---------------------------------------------------------------------------------------

const coapMessageText = new Map(
  COAP_ERROR_CODES.map((c) => [c, new CoapFormatError(c, 0, undefined, undefined).message]),
);

/** decodeWire's outcome: the message, or the error it threw (checked by checkDecodeTotal). */
function tryDecodeWire(input: Buffer): CoapMessage | CoapFormatError {
  try {
    return decodeWire(input);
  } catch (err) {
    if (!(err instanceof CoapFormatError)) throw err;
    return err;
  }
}

/**
 * decode returns or throws a well-formed CoapFormatError; accepted bytes re-encode exactly;
 * decodeWire accepts and refuses the same input the same way, its options read as decode's.
 */
function checkDecodeTotal(input: Buffer): CoapMessage | undefined {
  let m: CoapMessage;
  const wire = tryDecodeWire(input);
  try {
    m = decode(input);
  } catch (err) {
    if (!(err instanceof CoapFormatError)) throw err;
    assert.ok(wire instanceof CoapFormatError, 'decodeWire accepted what decode refused');
    assert.deepEqual(
      [wire.code, wire.offset, wire.type, wire.messageId, wire.reaction],
      [err.code, err.offset, err.type, err.messageId, err.reaction],
    );
    assert.ok(coapMessageText.has(err.code), `unknown code ${err.code}`);
    assert.equal(err.message, coapMessageText.get(err.code));
    const headerReadable = input.length >= 4 && input[0]! >>> 6 === 1;
    assert.equal(err.type === undefined, !headerReadable);
    assert.equal(err.messageId === undefined, !headerReadable);
    if (headerReadable) {
      assert.equal(err.type, (input[0]! >>> 4) & 3);
      assert.equal(err.messageId, input.readUInt16BE(2));
    }
    assert.equal(err.reaction, reactionFor(err.type));
    assert.ok(err.offset >= 0 && err.offset <= input.length);
    return undefined;
  }
  assert.ok(isViewInto(m.token, input) && isViewInto(m.payload, input));
  for (const o of m.options) assert.ok(isViewInto(o.value, input));
  assert.ok(encode(m).equals(input), 'accepted bytes do not re-encode to themselves');
  assert.ok(!(wire instanceof CoapFormatError), 'decodeWire refused what decode accepted');
  assert.deepEqual(
    [wire.type, wire.code, wire.messageId, wire.token, wire.payload],
    [m.type, m.code, m.messageId, m.token, m.payload],
  );
  assert.equal(wire.options.length, m.options.length);
  wire.options.forEach((o, i) => {
    assert.ok(o instanceof WireOption && o.bytes === input);
    assert.ok(o.start >= 0 && o.start <= o.end && o.end <= input.length);
    assert.equal(o.number, m.options[i]?.number);
    assert.ok(isViewInto(o.value, input) && o.value.equals(m.options[i]!.value));
  });
  assert.ok(encode(wire).equals(input), 'decodeWire: accepted bytes do not re-encode');
  return m;
}

const coapDecode = target(
  'coap.decode',
  'coap',
  "decode returns or throws CoapFormatError with a known code, its fixed text, the header type and message ID when readable, and the reaction RFC 7252 gives that type; accepted datagrams are views of the input and re-encode to the same bytes; encode → decode round-trips arbitrary messages; decodeWire accepts and refuses the same datagrams with the same error, its options ranges of the input that read as decode's values",
  fc.oneof(
    fc.tuple(bytesArb(300), fc.constant(undefined)),
    fc.tuple(
      fc
        .tuple(fc.integer({ min: 0, max: 0x3f }), bytesArb(300))
        .map(([h, b]) => Buffer.concat([Buffer.from([0x40 | h]), b])),
      fc.constant(undefined),
    ),
    fc.tuple(fc.constant(undefined), coapMessageArb),
    fc.tuple(mutatedArb(coapMessageArb.map(encode)), fc.constant(undefined)),
  ),
  ([bytes, msg]) => {
    if (bytes !== undefined) {
      checkDecodeTotal(bytes);
      return;
    }
    const back = checkDecodeTotal(encode(msg));
    assert.ok(back !== undefined, 'an encoded message does not decode');
    const sorted = [...msg.options].sort((a, b) => a.number - b.number);
    assert.deepEqual(
      back.options.map((o) => [o.number, o.value.toString('hex')]),
      sorted.map((o) => [o.number, o.value.toString('hex')]),
    );
  },
);

const coapOptions = target(
  'coap.options',
  'coap',
  "on decoded messages with random option values: uriPathStrict is undefined exactly when a Uri-Path is not UTF-8, else equals uriPath (the same on decodeWire's message, and contentFormat too); decodeUint/encodeUint and decodeBlock/encodeBlock round-trip (minimal form), refuse what RFC 7252/7959 refuse, and never throw",
  fc.tuple(
    mutatedArb(coapMessageArb.map(encode)),
    fc.array(
      fc.record({
        number: fc.constantFrom(
          OptionNumber.URI_PATH,
          OptionNumber.CONTENT_FORMAT,
          OptionNumber.BLOCK1,
          OptionNumber.BLOCK2,
        ),
        value: bytesArb(6),
      }),
      { maxLength: 6 },
    ),
  ),
  ([noise, extra]) => {
    const base = checkDecodeTotal(noise);
    const m: CoapMessage = {
      type: 0,
      code: 1,
      messageId: 1,
      token: Buffer.alloc(0),
      payload: Buffer.alloc(0),
      options: [...(base?.code === 0 ? [] : (base?.options ?? [])), ...extra],
    };
    const bytes = encode(m);
    const msg = decode(bytes);
    const paths = getOptions(msg, OptionNumber.URI_PATH);
    const strict = uriPathStrict(msg);
    // the exchange layer's messages (options read from the datagram) read the same
    const wire = decodeWire(bytes);
    assert.deepEqual(uriPathStrict(wire), strict);
    assert.deepEqual(uriPath(wire), uriPath(msg));
    assert.equal(contentFormat(wire), contentFormat(msg));
    assert.equal(
      strict === undefined,
      paths.some((p) => !isUtf8(p)),
    );
    if (strict !== undefined) assert.deepEqual(strict, uriPath(msg));
    const cf = contentFormat(msg);
    const cfRaw = getOption(msg, OptionNumber.CONTENT_FORMAT);
    assert.equal(cf === undefined, cfRaw === undefined || cfRaw.length > 2);
    for (const o of msg.options) {
      const v = o.value;
      const n = decodeUint(v);
      assert.equal(n === undefined, v.length > 4);
      if (n !== undefined) {
        let lead = 0;
        while (lead < v.length && v[lead] === 0) lead++;
        assert.ok(encodeUint(n).equals(v.subarray(lead)));
      }
      const b = decodeBlock(v);
      assert.equal(b === undefined, v.length > 3 || (v.length > 0 && (v[v.length - 1]! & 7) === 7));
      if (b !== undefined) {
        assert.equal(b.size, 16 << b.szx);
        assert.equal(decodeUint(encodeBlock(b)), decodeUint(v));
      }
    }
  },
);

// ---------------------------------------------------------------------------------------
// EnOS
// ---------------------------------------------------------------------------------------

const REASONS: readonly IdentityRejectReason[] = [
  'not-utf8',
  'field-count',
  'empty-key',
  'bad-character',
  'bad-mode',
  'bad-lifetime',
  'too-long',
];

const keyChar = fc.constantFrom('a', 'Z', '0', '-', '_', '.', ':', 'ü', '€', '😀');
const validKeyArb = fc.array(keyChar, { minLength: 1, maxLength: 40 }).map((a) => a.join(''));
const validIdentityText = fc
  .record({
    productKey: validKeyArb,
    deviceKey: validKeyArb,
    secureMode: fc.constantFrom(2 as const, 3 as const),
    lifetime: fc.oneof(fc.integer({ min: 30, max: 86400 }), fc.constantFrom(30, 86400)),
  })
  .map(formatIdentity);
const anyUnit = fc.integer({ min: 0, max: 0xffff }).map((n) => String.fromCharCode(n));
const identityPiece = fc.constantFrom(
  'a',
  ',',
  ' ',
  '0',
  '2',
  '3',
  '29',
  '86401',
  '+',
  '/',
  '#',
  '\u0000',
  '\uFEFF',
  '\uD800',
  'ü',
  '\u0085',
  '\uFDD0',
);

const enosIdentity = target(
  'enos.parseIdentity',
  'enos',
  'never throws on bytes or strings (lone surrogates included); an accepted identity re-formats to exactly the input; a refusal has a known reason with an error code; bytes and the same text as a string get the same answer',
  fc.oneof(
    bytesArb(300),
    fc.string({ unit: anyUnit, maxLength: 300 }),
    validIdentityText,
    mutatedArb(validIdentityText.map((s) => Buffer.from(s))),
    fc.array(identityPiece, { maxLength: 14 }).map((p) => p.join('')),
  ),
  (raw) => {
    const r = parseIdentity(raw);
    if (r.ok) {
      const text = formatIdentity(r.identity);
      if (typeof raw === 'string') assert.equal(text, raw);
      else assert.ok(Buffer.from(text).equals(raw));
      assert.ok(isValidKey(r.identity.productKey) && isValidKey(r.identity.deviceKey));
    } else {
      assert.ok(REASONS.includes(r.reason), r.reason);
      assert.match(identityErrorCode(r.reason), /^ENOS_IDENTITY_/);
    }
    if (typeof raw === 'string' && !/\p{Cs}/u.test(raw)) {
      assert.deepEqual(parseIdentity(Buffer.from(raw)), r);
    }
  },
);

const level = fc.oneof(
  fc.constantFrom(
    'topic',
    'sys',
    'ext',
    'session',
    'thing',
    'service',
    'measurepoint',
    'post',
    'set',
    'get',
    'event',
    'model',
    'up_raw',
    'down_raw',
    'down_raw_reply',
    'activate',
    'info',
    'combine',
    'login',
    'rrpc',
    'request',
    'response',
    'x_reply',
    '_reply',
    '+',
    '#',
    '',
    'a/b',
  ),
  validKeyArb,
  fc.string({ unit: anyUnit, maxLength: 6 }),
);

const enosTopics = target(
  'enos.parseTopicPath',
  'enos',
  'never throws; an accepted path is its MQTT topic level by level with valid keys, parseMqttTopic of that topic gives the same answer, uplinks reply on topic + _reply, and the command topic of a fetch or reply is a downlink topic',
  fc.oneof(
    fc.array(level, { maxLength: 10 }),
    fc
      .tuple(validKeyArb, validKeyArb, fc.array(level, { maxLength: 4 }))
      .map(([pk, dk, tail]) => ['topic', 'sys', pk, dk, ...tail]),
    fc
      .tuple(validKeyArb, validKeyArb, fc.array(level, { maxLength: 3 }))
      .map(([pk, dk, tail]) => ['topic', 'ext', 'session', pk, dk, ...tail]),
  ),
  (segments) => {
    const r = parseTopicPath(segments);
    const mqtt = `/${segments.slice(1).join('/')}`;
    if (!r.ok) {
      assert.ok(['not-topic', 'unknown-shape', 'bad-segment'].includes(r.reason));
      // (a segment holding '/' is refused here but splits into valid MQTT levels there)
      if (segments[0] === 'topic' && !segments.some((x) => x.includes('/')))
        assert.equal(parseMqttTopic(mqtt).ok, false);
      return;
    }
    const t = r.topic;
    assert.equal(t.mqttTopic, mqtt);
    assert.deepEqual(parseMqttTopic(mqtt), r);
    assert.ok(isValidKey(t.productKey) && isValidKey(t.deviceKey));
    assert.ok(segments.includes(t.productKey) && segments.includes(t.deviceKey));
    if (t.class === 'uplink' || t.class === 'uplink-raw' || t.class === 'sub-device-session')
      assert.equal(t.replyTopic, `${mqtt}_reply`);
    else assert.equal(t.replyTopic, undefined);
    if (t.class === 'command-fetch') assert.equal(t.commandTopic, mqtt);
    if (t.class === 'command-reply') assert.ok(isDownlinkTopic(t.commandTopic ?? ''));
    assert.equal(isDownlinkTopic(mqtt), t.class === 'command-fetch');
  },
);

export const TARGETS: readonly FuzzTarget[] = [
  dtlsRecord,
  dtlsFragments,
  dtlsClientHello,
  dtlsClientKeyExchange,
  dtlsServerFlight,
  dtlsReassembly,
  coapDecode,
  coapOptions,
  enosIdentity,
  enosTopics,
];
