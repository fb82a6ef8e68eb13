/** A flight of handshake records kept for retransmission (RFC 6347 §4.2.4). */
import { Buffer } from 'node:buffer';
import { DTLS_1_2, RECORD_HEADER_LENGTH } from './constants.js';
import type { EpochState } from './keys.js';
import { writeRecordHeader } from './record-cipher.js';

export interface FlightEntry {
  readonly type: number;
  /** 0: sent in the clear; 1: protected with the epoch-1 state. */
  readonly epoch: 0 | 1;
  readonly payload: Buffer;
}

/**
 * Serializes a flight into one datagram. Every (re)transmission takes fresh record sequence
 * numbers, the handshake message_seq values stay the same. The protected records are sealed
 * first (their length depends on the cipher); then every record is written into one buffer,
 * the plain ones straight from their payload (no record of their own, no concatenation).
 */
export function encodeFlight(
  entries: readonly FlightEntry[],
  epoch0: { seq: number },
  epoch1: EpochState | undefined,
): Buffer | undefined {
  let length = 0;
  let sealed: Buffer[] | undefined;
  for (const e of entries) {
    if (e.epoch === 0) length += RECORD_HEADER_LENGTH + e.payload.length;
    else {
      const r = epoch1?.seal(e.type, e.payload);
      if (r === undefined) return undefined;
      if (entries.length === 1) return r;
      (sealed ??= []).push(r);
      length += r.length;
    }
  }
  const out = Buffer.allocUnsafe(length);
  let o = 0;
  let next = 0;
  for (const e of entries) {
    if (e.epoch === 0) {
      // the header of record.ts's plainRecord, at its place in the datagram
      writeRecordHeader(out, e.type, DTLS_1_2, 0, epoch0.seq++, e.payload.length, undefined, o);
      o += RECORD_HEADER_LENGTH;
      o += e.payload.copy(out, o);
    } else {
      const r = sealed?.[next++];
      if (r !== undefined) o += r.copy(out, o);
    }
  }
  return out;
}
