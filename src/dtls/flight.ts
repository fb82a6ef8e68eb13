/** A flight of handshake records kept for retransmission (RFC 6347 §4.2.4). */
import { DTLS_1_2 } from './constants.js';
import type { EpochState } from './keys.js';
import { plainRecord } from './record.js';

export interface FlightEntry {
  readonly type: number;
  /** 0: sent in the clear; 1: protected with the epoch-1 state. */
  readonly epoch: 0 | 1;
  readonly payload: Buffer;
}

/**
 * Serializes a flight into one datagram. Every (re)transmission takes fresh record sequence
 * numbers, the handshake message_seq values stay the same.
 */
export function encodeFlight(
  entries: readonly FlightEntry[],
  epoch0: { seq: number },
  epoch1: EpochState | undefined,
): Buffer | undefined {
  const records: Buffer[] = [];
  for (const e of entries) {
    if (e.epoch === 0) {
      records.push(plainRecord(e.type, DTLS_1_2, 0, epoch0.seq++, e.payload));
    } else {
      const r = epoch1?.seal(e.type, e.payload);
      if (r === undefined) return undefined;
      records.push(r);
    }
  }
  return records.length === 1 ? records[0] : Buffer.concat(records);
}
