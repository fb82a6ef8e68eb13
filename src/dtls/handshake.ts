/**
 * Handshake message codecs for the PSK handshake (RFC 6347 §4.2, §4.3.2; RFC 5246 §7.4;
 * RFC 4279 §2). Parsers take the complete (reassembled) message body and reject trailing bytes.
 */
import { Buffer } from 'node:buffer';
import {
  CLIENT_RANDOM_LENGTH,
  DTLS_1_2,
  HANDSHAKE_HEADER_LENGTH,
  MAX_COOKIE_LENGTH,
} from './constants.js';
import { get16, put16, put24 } from './bytes.js';
import { DtlsError, decodeError } from './errors.js';
import { Reader } from './reader.js';

/** One handshake message fragment as it appears in a record (RFC 6347 §4.2.2). */
export interface HandshakeFragment {
  readonly msgType: number;
  readonly length: number;
  readonly messageSeq: number;
  readonly fragmentOffset: number;
  readonly fragment: Buffer;
}

/** Largest handshake message accepted from a peer (a PSK ClientHello is ~100-250 bytes). */
export const MAX_HANDSHAKE_MESSAGE = 4096;

/** Splits a handshake record body into fragments; throws decode_error on any inconsistency. */
export function readFragments(body: Buffer): HandshakeFragment[] {
  const out: HandshakeFragment[] = [];
  const r = new Reader(body, 'handshake fragment');
  while (r.remaining > 0) {
    const msgType = r.u8();
    const length = r.u24();
    const messageSeq = r.u16();
    const fragmentOffset = r.u24();
    const fragmentLength = r.u24();
    if (fragmentOffset + fragmentLength > length) throw decodeError('handshake fragment');
    const fragment = r.bytes(fragmentLength);
    out.push({ msgType, length, messageSeq, fragmentOffset, fragment });
  }
  return out;
}

/** A complete handshake message with its 12-byte header, as it enters the transcript. */
export function handshakeMessage(msgType: number, messageSeq: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HANDSHAKE_HEADER_LENGTH + body.length);
  out[0] = msgType;
  put24(out, 1, body.length);
  put16(out, 4, messageSeq);
  put24(out, 6, 0);
  put24(out, 9, body.length);
  body.copy(out, HANDSHAKE_HEADER_LENGTH);
  return out;
}

export interface ClientHello {
  /** The whole message body as received (enters the transcript). */
  readonly body: Buffer;
  readonly clientVersion: number;
  readonly random: Buffer;
  readonly sessionId: Buffer;
  readonly cookie: Buffer;
  readonly cipherSuites: readonly number[];
  readonly compressionMethods: Buffer;
  /** Extension type → data. Duplicates are rejected. */
  readonly extensions: ReadonlyMap<number, Buffer>;
  /** True when the extensions block was present at all (even empty). */
  readonly hasExtensionsBlock: boolean;
  /** version‖random‖session_id and cipher_suites‖compression_methods: what the cookie covers. */
  readonly cookieInput: readonly [Buffer, Buffer];
}

export function parseClientHello(body: Buffer): ClientHello {
  const r = new Reader(body, 'ClientHello');
  const clientVersion = r.u16();
  const random = r.bytes(CLIENT_RANDOM_LENGTH);
  const sessionId = r.vec8(0, 32);
  const afterSession = 2 + CLIENT_RANDOM_LENGTH + 1 + sessionId.length;
  const cookie = r.vec8(0, MAX_COOKIE_LENGTH);
  const suitesStart = afterSession + 1 + cookie.length;
  // suites and the extensions block are read in place (no views of them)
  const suitesAt = r.skip16(2, 65534);
  const suitesEnd16 = suitesAt + get16(body, suitesAt - 2);
  if ((suitesEnd16 - suitesAt) % 2 !== 0) throw decodeError('ClientHello cipher suites');
  const cipherSuites: number[] = [];
  for (let i = suitesAt; i < suitesEnd16; i += 2) cipherSuites.push(get16(body, i));
  const compressionMethods = r.vec8(1, 255);
  const suitesEnd = suitesEnd16 + 1 + compressionMethods.length;
  const extensions = new Map<number, Buffer>();
  let hasExtensionsBlock = false;
  if (r.remaining > 0) {
    hasExtensionsBlock = true;
    const blockAt = r.skip16(0, 65535);
    const blockEnd = blockAt + get16(body, blockAt - 2);
    const e = new Reader(body, 'ClientHello extensions', blockAt, blockEnd);
    while (e.remaining > 0) {
      const type = e.u16();
      const data = e.vec16();
      if (extensions.has(type)) throw decodeError('ClientHello extensions (duplicate)');
      extensions.set(type, data);
    }
  }
  r.done();
  return {
    body,
    clientVersion,
    random,
    sessionId,
    cookie,
    cipherSuites,
    compressionMethods,
    extensions,
    hasExtensionsBlock,
    cookieInput: [body.subarray(0, afterSession), body.subarray(suitesStart, suitesEnd)],
  };
}

export function helloVerifyRequestBody(version: number, cookie: Buffer): Buffer {
  const out = Buffer.allocUnsafe(3 + cookie.length);
  put16(out, 0, version);
  out[2] = cookie.length;
  cookie.copy(out, 3);
  return out;
}

export function parseHelloVerifyRequest(body: Buffer): { version: number; cookie: Buffer } {
  const r = new Reader(body, 'HelloVerifyRequest');
  const version = r.u16();
  const cookie = r.vec8(0, MAX_COOKIE_LENGTH);
  r.done();
  return { version, cookie };
}

export interface ServerHelloParams {
  readonly random: Buffer;
  readonly sessionId: Buffer;
  readonly cipherSuite: number;
  /** Extensions in wire order; an empty list writes no extensions block. */
  readonly extensions: readonly (readonly [number, Buffer])[];
}

export function serverHelloBody(p: ServerHelloParams): Buffer {
  // indexed, not destructured: no iterator per extension
  const exts = p.extensions;
  let extLength = 0;
  for (const e of exts) extLength += 4 + e[1].length;
  const length = 2 + 32 + 1 + p.sessionId.length + 2 + 1 + (exts.length > 0 ? 2 + extLength : 0);
  const out = Buffer.allocUnsafe(length);
  put16(out, 0, DTLS_1_2);
  let o = 2;
  o += p.random.copy(out, o);
  out[o++] = p.sessionId.length;
  o += p.sessionId.copy(out, o);
  put16(out, o, p.cipherSuite);
  o += 2;
  out[o++] = 0; // compression: null
  if (exts.length > 0) {
    put16(out, o, extLength);
    o += 2;
    for (const e of exts) {
      put16(out, o, e[0]);
      put16(out, o + 2, e[1].length);
      o += 4;
      o += e[1].copy(out, o);
    }
  }
  return out;
}

export interface ServerHello {
  readonly version: number;
  readonly random: Buffer;
  readonly sessionId: Buffer;
  readonly cipherSuite: number;
  readonly compression: number;
  readonly extensions: ReadonlyMap<number, Buffer>;
}

export function parseServerHello(body: Buffer): ServerHello {
  const r = new Reader(body, 'ServerHello');
  const version = r.u16();
  const random = r.bytes(32);
  const sessionId = r.vec8(0, 32);
  const cipherSuite = r.u16();
  const compression = r.u8();
  const extensions = new Map<number, Buffer>();
  if (r.remaining > 0) {
    const e = new Reader(r.vec16(), 'ServerHello extensions');
    while (e.remaining > 0) {
      const type = e.u16();
      const data = e.vec16();
      if (extensions.has(type)) throw decodeError('ServerHello extensions (duplicate)');
      extensions.set(type, data);
    }
  }
  r.done();
  return { version, random, sessionId, cipherSuite, compression, extensions };
}

export interface ClientHelloParams {
  readonly random: Buffer;
  readonly cookie: Buffer;
  readonly cipherSuites: readonly number[];
  /** Extensions in wire order; `undefined` writes no extensions block at all. */
  readonly extensions: readonly (readonly [number, Buffer])[] | undefined;
}

export function clientHelloBody(p: ClientHelloParams): Buffer {
  let extLength = 0;
  for (const [, data] of p.extensions ?? []) extLength += 4 + data.length;
  const length =
    2 +
    32 +
    1 +
    1 +
    p.cookie.length +
    2 +
    2 * p.cipherSuites.length +
    2 +
    (p.extensions !== undefined ? 2 + extLength : 0);
  const out = Buffer.allocUnsafe(length);
  let o = out.writeUInt16BE(DTLS_1_2, 0);
  o += p.random.copy(out, o);
  out[o++] = 0; // no session id
  out[o++] = p.cookie.length;
  o += p.cookie.copy(out, o);
  o = out.writeUInt16BE(2 * p.cipherSuites.length, o);
  for (const s of p.cipherSuites) o = out.writeUInt16BE(s, o);
  out[o++] = 1;
  out[o++] = 0; // compression: null
  if (p.extensions !== undefined) {
    o = out.writeUInt16BE(extLength, o);
    for (const [type, data] of p.extensions) {
      o = out.writeUInt16BE(type, o);
      o = out.writeUInt16BE(data.length, o);
      o += data.copy(out, o);
    }
  }
  return out;
}

/** ServerKeyExchange for PSK: psk_identity_hint<0..2^16-1> (RFC 4279 §2). */
export function parseServerKeyExchange(body: Buffer): Buffer {
  const r = new Reader(body, 'ServerKeyExchange');
  const hint = r.vec16();
  r.done();
  return hint;
}

/** ClientKeyExchange for PSK: psk_identity<0..2^16-1> (RFC 4279 §2). */
export function parseClientKeyExchange(body: Buffer): Buffer {
  const r = new Reader(body, 'ClientKeyExchange');
  const identity = r.vec16(1);
  r.done();
  return identity;
}

export function clientKeyExchangeBody(identity: Buffer): Buffer {
  const out = Buffer.allocUnsafe(2 + identity.length);
  out.writeUInt16BE(identity.length, 0);
  identity.copy(out, 2);
  return out;
}

export function parseFinished(body: Buffer): Buffer {
  if (body.length !== 12) throw decodeError('Finished');
  return body;
}

export function expectType(msgType: number, expected: number): void {
  if (msgType !== expected) {
    throw new DtlsError(
      'DTLS_UNEXPECTED_MESSAGE',
      `unexpected handshake message ${msgType}, expected ${expected}`,
    );
  }
}
