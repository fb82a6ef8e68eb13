/**
 * HMAC-SHA256 (RFC 2104) under one key, for the handshake's short messages: the PRF (RFC 5246
 * §5) and the HelloVerifyRequest cookies. On `@noble/hashes` (audited, pure JavaScript)
 * rather than node:crypto: `createHmac` costs several µs of binding work per message (the
 * object, the key import, each update, the digest and its Buffer), more than hashing the two
 * or three SHA-256 blocks of a handshake message in JavaScript. Here the key's inner and outer
 * padded blocks are hashed once, when the key is made; each message runs on a copy of that
 * state, cloned into one scratch state that every key shares (all of this is synchronous).
 * The scratch is wiped by the digest (noble zeroes a state when it is finished).
 *
 * The record path (CBC_SHA256's record MAC) stays on node:crypto: its messages are whole
 * records, where the native SHA-256 wins.
 */
import { hmac, type _HMAC } from '@noble/hashes/hmac.js';
import { sha256, type _SHA256 } from '@noble/hashes/sha2.js';

export const HMAC_SHA256_LENGTH = 32;

type Mac = _HMAC<_SHA256>;

/** The state each message runs on (a copy of a key's state); made on first use. */
let scratch: Mac | undefined;

export class HmacSha256Key {
  private readonly keyed: Mac;

  /** `key` is not kept: only the hash states of its padded blocks are. */
  constructor(key: Uint8Array) {
    this.keyed = hmac.create(sha256, key) as Mac;
  }

  /** HMAC(key, a ‖ b ‖ c ‖ d) into `out[0..32)`; `out` must hold at least 32 bytes. */
  mac(out: Uint8Array, a: Uint8Array, b?: Uint8Array, c?: Uint8Array, d?: Uint8Array): void {
    const m = this.keyed._cloneInto(scratch);
    scratch = m;
    m.update(a);
    if (b !== undefined) m.update(b);
    if (c !== undefined) m.update(c);
    if (d !== undefined) m.update(d);
    m.digestInto(out);
  }

  /** Wipes the key's states; the key must not be used after. */
  destroy(): void {
    this.keyed.destroy();
  }
}
