/**
 * Handshake message reassembly (RFC 6347 §4.2.3) with strict bounds: messages larger than
 * MAX_HANDSHAKE_MESSAGE, too far ahead in message_seq, or beyond the per-handshake buffer cap
 * are refused; overlapping and duplicate fragments are tolerated (a later copy overwrites
 * the same bytes; a legitimate peer sends identical bytes, and the transcript check catches
 * anything else);
 * fragments of one message must agree on type and length. Complete messages come out in
 * message_seq order, so reordered messages are buffered instead of costing a retransmission.
 */
import { Buffer } from 'node:buffer';
import { MAX_HANDSHAKE_MESSAGE, type HandshakeFragment } from './handshake.js';
import { decodeError } from './errors.js';

export interface HandshakeMessage {
  readonly msgType: number;
  readonly messageSeq: number;
  readonly body: Buffer;
  /** Epoch of the record that completed the message (Finished must arrive in epoch 1). */
  readonly epoch: number;
}

/** How far ahead of the next expected message_seq fragments are buffered. */
const MAX_AHEAD = 4;
/** Bytes buffered across all incomplete messages of one handshake (Californium uses 8192). */
export const MAX_BUFFERED_BYTES = 8192;

interface Pending {
  readonly msgType: number;
  readonly length: number;
  readonly buf: Buffer;
  /** Sorted, merged [start, end) ranges received so far. */
  ranges: [number, number][];
  epoch: number;
  complete: boolean;
}

export type ReassemblyResult =
  | { readonly kind: 'messages'; readonly messages: HandshakeMessage[] }
  /** A fragment of a message already processed: the peer retransmitted its flight. */
  | { readonly kind: 'old' }
  /** Out of bounds; dropped without changing state. */
  | { readonly kind: 'dropped' };

const NONE: HandshakeMessage[] = [];
/** Never written to: add() gives a reassembler its own map first. */
const NO_PENDING: Map<number, Pending> = new Map();

export class Reassembler {
  /** Shared empty map until a message needs buffering (most handshakes buffer none). */
  private pending: Map<number, Pending> = NO_PENDING;
  private buffered = 0;

  constructor(private nextSeq: number) {}

  get expectedSeq(): number {
    return this.nextSeq;
  }

  add(f: HandshakeFragment, epoch: number): ReassemblyResult {
    if (f.messageSeq < this.nextSeq) return { kind: 'old' };
    if (f.messageSeq >= this.nextSeq + MAX_AHEAD || f.length > MAX_HANDSHAKE_MESSAGE) {
      return { kind: 'dropped' };
    }
    const whole = f.fragmentOffset === 0 && f.fragment.length === f.length;
    if (whole && f.messageSeq === this.nextSeq && this.pending.size === 0) {
      this.nextSeq++;
      return {
        kind: 'messages',
        messages: [{ msgType: f.msgType, messageSeq: f.messageSeq, body: f.fragment, epoch }],
      };
    }
    let p = this.pending.get(f.messageSeq);
    if (p === undefined) {
      // The cap applies to messages ahead of the next expected one: those cannot block it.
      if (f.messageSeq !== this.nextSeq && this.buffered + f.length > MAX_BUFFERED_BYTES) {
        return { kind: 'dropped' };
      }
      p = {
        msgType: f.msgType,
        length: f.length,
        buf: Buffer.alloc(f.length),
        ranges: [],
        epoch,
        complete: f.length === 0,
      };
      if (this.pending === NO_PENDING) this.pending = new Map();
      this.pending.set(f.messageSeq, p);
      this.buffered += f.length;
    } else if (p.msgType !== f.msgType || p.length !== f.length) {
      throw decodeError('handshake fragment (inconsistent length or type)');
    }
    if (!p.complete && f.fragment.length > 0) {
      f.fragment.copy(p.buf, f.fragmentOffset);
      p.ranges = addRange(p.ranges, f.fragmentOffset, f.fragmentOffset + f.fragment.length);
      const first = p.ranges[0];
      p.complete =
        p.ranges.length === 1 && first !== undefined && first[0] === 0 && first[1] === p.length;
      p.epoch = epoch;
    }
    return { kind: 'messages', messages: this.drain() };
  }

  private drain(): HandshakeMessage[] {
    let out: HandshakeMessage[] = NONE;
    for (;;) {
      const p = this.pending.get(this.nextSeq);
      if (p === undefined || !p.complete) return out;
      if (out === NONE) out = [];
      out.push({ msgType: p.msgType, messageSeq: this.nextSeq, body: p.buf, epoch: p.epoch });
      this.pending.delete(this.nextSeq);
      this.buffered -= p.length;
      this.nextSeq++;
    }
  }
}

function addRange(ranges: [number, number][], start: number, end: number): [number, number][] {
  const out: [number, number][] = [];
  let s = start;
  let e = end;
  let placed = false;
  for (const r of ranges) {
    if (r[1] < s) out.push(r);
    else if (r[0] > e) {
      if (!placed) {
        out.push([s, e]);
        placed = true;
      }
      out.push(r);
    } else {
      s = Math.min(s, r[0]);
      e = Math.max(e, r[1]);
    }
  }
  if (!placed) out.push([s, e]);
  return out;
}
