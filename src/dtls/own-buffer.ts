/**
 * Long-lived bytes in an allocation of their own.
 *
 * `Buffer.from(array | string)` and `Buffer.allocUnsafe(n)` below 4 KiB cut their bytes from
 * an 8 KiB slab that every such allocation of the process shares (`Buffer.poolSize`); a slice
 * kept keeps the whole slab alive. What an association holds for its lifetime (keys, IVs,
 * Connection IDs, client_random) is copied with {@link ownCopy} instead, so that an association
 * costs its own bytes, not a slab of datagrams and cookies per association (measured in
 * bench/history/handshake.md, "Association memory and the Buffer pool").
 */
import { Buffer } from 'node:buffer';

/** A copy of `bytes` in a Buffer that owns its ArrayBuffer (`Buffer.alloc` never pools). */
export function ownCopy(bytes: Uint8Array): Buffer {
  const out = Buffer.alloc(bytes.length);
  out.set(bytes);
  return out;
}
