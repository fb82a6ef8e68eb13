/**
 * EnOS PSK derivation: SHA-256 of the secret, bytes 9 to 24 counted from 1, i.e.
 * `digest.subarray(8, 24)` (docs/protocol.md, "Identity and key").
 */

import { createHash } from 'node:crypto';
import { EnosError } from './errors.js';

/** Length of an EnOS PSK in bytes. */
export const PSK_LENGTH = 16;

const loneSurrogate = /\p{Cs}/u;

/**
 * The DTLS PSK for a device secret (secureMode 2) or product secret (secureMode 3):
 * bytes 9..24 (1-based) of `SHA-256(utf8(secret))`, in a fresh 16-byte buffer of its own.
 *
 * Vectors (docs/protocol.md): `abcdefg` → `F5B79B5FB0803061152A44F92B37E23C`,
 * `zPwChiLh0EaifR809D5Rc6LDIC6A` → `C14429BDE9E22995162F199D808297A5`.
 *
 * @throws EnosError `ENOS_SECRET` for an empty secret (its key would be public knowledge) or
 *   one with a lone surrogate (UTF-8 encoding would silently replace it with U+FFFD, so two
 *   different secrets would share a key). The secret is never put into the message.
 */
export function derivePsk(secret: string): Buffer {
  if (typeof secret !== 'string' || secret.length === 0) throw new EnosError('ENOS_SECRET');
  if (loneSurrogate.test(secret)) throw new EnosError('ENOS_SECRET');
  const digest = createHash('sha256').update(secret, 'utf8').digest();
  const key = Buffer.alloc(PSK_LENGTH);
  digest.copy(key, 0, 8, 24);
  return key;
}

/**
 * False when the key holds a 0x00 byte. `coap-client-openssl -k` takes the key as the literal
 * bytes of its argument, and a C argv string ends at the first NUL (bash's `$'...'` stops there
 * too), so such a key cannot be given on a command line; use a tool that takes hex instead.
 */
export function pskUsableOnCommandLine(key: Buffer): boolean {
  return !key.includes(0);
}

/**
 * The key as a bash ANSI-C quoted string, every byte written as `\xNN`:
 * `$'\xf5\xb7\x9b...'`, for `coap-client-openssl -u <identity> -k $'...'`.
 * The output reveals the key: it is for tools and tests, never for logs.
 * @throws EnosError `ENOS_PSK_COMMAND_LINE` when {@link pskUsableOnCommandLine} is false
 *   (bash would silently cut the key at the 0x00 byte).
 */
export function pskShellLiteral(key: Buffer): string {
  if (!pskUsableOnCommandLine(key)) throw new EnosError('ENOS_PSK_COMMAND_LINE');
  let out = "$'";
  for (const byte of key) out += `\\x${byte.toString(16).padStart(2, '0')}`;
  return `${out}'`;
}
