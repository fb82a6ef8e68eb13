/**
 * Session ids (`Principal.sessionId`): random UUIDs (version 4) made as flat strings.
 *
 * `crypto.randomUUID()` builds its string by concatenation, so V8 keeps it as a chain of
 * some 14 cons strings: ~500 bytes and 15 heap objects per id that stays alive. The
 * presence tracker remembers up to 10 000 ended sessions, so under handshake churn those
 * chains were most of the live heap every major GC marked (docs/design.md, "Memory at
 * idle"). Here the id is written into one buffer and decoded once: one string of 36
 * characters (~70 bytes kept). The random bytes come from a pool refilled every 128 ids,
 * as `randomUUID` does with its own.
 */
import { randomFillSync } from 'node:crypto';

const IDS_PER_FILL = 128;
const pool = Buffer.alloc(16 * IDS_PER_FILL);
let used = pool.length;
const HEX = Buffer.from('0123456789abcdef', 'latin1');
const text = Buffer.from('00000000-0000-4000-8000-000000000000', 'latin1');
/** Where each of the 16 bytes goes in `text`. */
const AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34] as const;

/** A new random UUID (RFC 9562 version 4), lower case, as one flat string. */
export function newSessionId(): string {
  if (used === pool.length) {
    randomFillSync(pool);
    used = 0;
  }
  for (let i = 0; i < 16; i++) {
    let b = pool[used + i]!;
    if (i === 6)
      b = (b & 0x0f) | 0x40; // version 4
    else if (i === 8) b = (b & 0x3f) | 0x80; // variant 10
    const at = AT[i]!;
    text[at] = HEX[b >> 4]!;
    text[at + 1] = HEX[b & 0x0f]!;
  }
  used += 16;
  return text.toString('latin1', 0, 36);
}
