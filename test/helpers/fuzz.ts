/**
 * Input generators shared by the fuzz targets (test/fuzz/) and the codec unit tests: random
 * byte strings, byte-level mutations of valid encodings (flip, set, insert, delete, truncate),
 * and arbitrary valid CoAP messages.
 */
import fc from 'fast-check';
import type { CoapMessage, CoapOption } from '../../src/coap/codec.js';
import { OptionNumber, type MessageType } from '../../src/coap/constants.js';

const EMPTY = Buffer.alloc(0);

export const bytesArb = (max: number, min = 0): fc.Arbitrary<Buffer> =>
  fc.uint8Array({ minLength: min, maxLength: max }).map((u) => Buffer.from(u));

export type Mutation =
  | { readonly kind: 'flip'; readonly at: number; readonly bit: number }
  | { readonly kind: 'set'; readonly at: number; readonly byte: number }
  | { readonly kind: 'insert'; readonly at: number; readonly byte: number }
  | { readonly kind: 'delete'; readonly at: number }
  | { readonly kind: 'truncate'; readonly at: number };

const atArb = fc.nat({ max: 1 << 16 });
const byteArb = fc.integer({ min: 0, max: 255 });
export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: atArb, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: atArb, byte: byteArb }),
  fc.record({ kind: fc.constant('insert' as const), at: atArb, byte: byteArb }),
  fc.record({ kind: fc.constant('delete' as const), at: atArb }),
  fc.record({ kind: fc.constant('truncate' as const), at: atArb }),
);

/** Applies the mutations in order to a copy of `input`. */
export function mutate(input: Buffer, mutations: readonly Mutation[]): Buffer {
  let b = Buffer.from(input);
  for (const m of mutations) {
    switch (m.kind) {
      case 'flip':
        if (b.length > 0) b[m.at % b.length]! ^= 1 << m.bit;
        break;
      case 'set':
        if (b.length > 0) b[m.at % b.length] = m.byte;
        break;
      case 'insert': {
        const at = m.at % (b.length + 1);
        b = Buffer.concat([b.subarray(0, at), Buffer.from([m.byte]), b.subarray(at)]);
        break;
      }
      case 'delete':
        if (b.length > 0) {
          const at = m.at % b.length;
          b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
        }
        break;
      case 'truncate':
        b = b.subarray(0, m.at % (b.length + 1));
        break;
    }
  }
  return b;
}

/** 1-4 mutations of a valid encoding: mostly still close enough to pass the first checks. */
export function mutatedArb(valid: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  return fc
    .tuple(valid, fc.array(mutationArb, { minLength: 1, maxLength: 4 }))
    .map(([b, muts]) => mutate(b, muts));
}

/**
 * Either random bytes (`items` undefined), or generated items that the oracle encodes and then
 * mutates 0-3 times (`buf` undefined): with no mutation the oracle knows what must come back.
 */
export function rawOrBuilt<T>(
  items: fc.Arbitrary<T[]>,
  rawMax: number,
): fc.Arbitrary<{ items: T[] | undefined; buf: Buffer | undefined; muts: Mutation[] }> {
  return fc.oneof(
    fc.record({
      items: fc.constant(undefined),
      buf: bytesArb(rawMax),
      muts: fc.constant<Mutation[]>([]),
    }),
    fc.record({
      items,
      buf: fc.constant(undefined),
      muts: fc.array(mutationArb, { maxLength: 3 }),
    }),
  );
}

const optionNumberArb = fc.oneof(
  fc.integer({ min: 0, max: 64 }),
  fc.constantFrom(...Object.values(OptionNumber)),
  fc.integer({ min: 0, max: 65535 }),
);

export const coapOptionArb: fc.Arbitrary<CoapOption> = fc.record(
  {
    number: optionNumberArb,
    value: fc.oneof(
      { weight: 8, arbitrary: bytesArb(20) },
      { weight: 1, arbitrary: bytesArb(400) },
    ),
  },
  { noNullPrototype: true },
);

const typeArb = fc.constantFrom<MessageType>(0, 1, 2, 3);

const nonEmptyMessageArb: fc.Arbitrary<CoapMessage> = fc.record(
  {
    type: typeArb,
    code: fc.integer({ min: 1, max: 255 }),
    messageId: fc.integer({ min: 0, max: 0xffff }),
    token: bytesArb(8),
    options: fc.array(coapOptionArb, { maxLength: 12 }),
    payload: fc.oneof(fc.constant(EMPTY), bytesArb(300)),
  },
  { noNullPrototype: true },
);

const emptyMessageArb: fc.Arbitrary<CoapMessage> = fc.record(
  {
    type: typeArb,
    code: fc.constant(0),
    messageId: fc.integer({ min: 0, max: 0xffff }),
    token: fc.constant(EMPTY),
    options: fc.constant([]),
    payload: fc.constant(EMPTY),
  },
  { noNullPrototype: true },
);

/** Any message `encode` accepts (options in any order; a tenth are Empty messages). */
export const coapMessageArb: fc.Arbitrary<CoapMessage> = fc.oneof(
  { weight: 9, arbitrary: nonEmptyMessageArb },
  { weight: 1, arbitrary: emptyMessageArb },
);

/** True when `view` is a slice of `input`'s own bytes (no copy, nothing outside it). */
export function isViewInto(view: Buffer, input: Buffer): boolean {
  if (view.length === 0) return true;
  return (
    view.buffer === input.buffer &&
    view.byteOffset >= input.byteOffset &&
    view.byteOffset + view.length <= input.byteOffset + input.length
  );
}

/** One handshake fragment with its 12-byte header; every field can lie. */
export function fragment(f: {
  readonly msgType: number;
  readonly length: number;
  readonly messageSeq: number;
  readonly offset: number;
  readonly data: Buffer;
  /** Written into fragment_length; defaults to data.length. */
  readonly fragmentLength?: number;
}): Buffer {
  const out = Buffer.alloc(12 + f.data.length);
  out[0] = f.msgType;
  out.writeUIntBE(f.length, 1, 3);
  out.writeUInt16BE(f.messageSeq, 4);
  out.writeUIntBE(f.offset, 6, 3);
  out.writeUIntBE(f.fragmentLength ?? f.data.length, 9, 3);
  f.data.copy(out, 12);
  return out;
}
