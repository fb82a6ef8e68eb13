/**
 * The bench-only native prototypes (bench/native/edge_native.c), loaded from their node-gyp
 * build: `npm run bench:native` builds them on demand. Nothing in src/ or the tests uses this,
 * and CI never builds it. See bench/history/native.md "What a native path would gain".
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** An OpenSSL context owned by the addon (freed when the JavaScript value is collected). */
export type NativeHandle = { readonly __native: unique symbol };

export interface EdgeNative {
  ccmNew(key: Buffer, encrypt: boolean): NativeHandle;
  /** AES-128-CCM, 8-byte tag: ciphertext ‖ tag of `plain` at `out[at]`. */
  ccmSeal(
    ctx: NativeHandle,
    nonce: Buffer,
    aad: Buffer,
    plain: Buffer,
    out: Buffer,
    at: number,
  ): void;
  /** The plaintext of `ciphertext` into `pt` (at least as long); whether `tag` verified. */
  ccmOpen(
    ctx: NativeHandle,
    nonce: Buffer,
    aad: Buffer,
    ciphertext: Buffer,
    tag: Buffer,
    pt: Buffer,
  ): boolean;
  hmacNew(): NativeHandle;
  /** HMAC-SHA256(key, a ‖ b) at `out[at]`. */
  hmacSha256(ctx: NativeHandle, key: Buffer, a: Buffer, b: Buffer, out: Buffer, at: number): void;
  /**
   * Binds 127.0.0.1:`port`; each readable event reads up to `batch` datagrams with recvmmsg
   * into `rx` (2048-byte slots), writes length, IPv4 and port per datagram into `meta`
   * (Uint32 triples) and calls `onBatch(count)` once; what `udpQueue` queued meanwhile leaves
   * in one sendmmsg after it.
   */
  udpOpen(
    port: number,
    batch: number,
    rx: Buffer,
    meta: Buffer,
    tx: Buffer,
    onBatch: (count: number) => void,
  ): void;
  udpQueue(data: Buffer, ip: number, port: number): void;
  udpFlush(): void;
  /** [batches, datagrams, sendmmsg calls] so far. */
  udpStats(): [number, number, number];
  udpClose(): void;
}

/** The arena slot size and the largest batch of the native UDP socket. */
export const NATIVE_SLOT = 2048;
export const NATIVE_MAX_BATCH = 64;

const ADDON = fileURLToPath(
  new URL('../../../bench/native/build/Release/edge_native.node', import.meta.url),
);

/** The addon, or an error that says how to build it. */
export function loadNative(): EdgeNative {
  if (!existsSync(ADDON)) {
    throw new Error(`${ADDON} is not built: run \`npm run bench:native\` first`);
  }
  return createRequire(import.meta.url)(ADDON) as EdgeNative;
}
