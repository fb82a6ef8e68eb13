/**
 * Every Redis key coap-edge's secret chain uses, in one place:
 *
 * - `{prefix}:device:{pk/dk}`: cached device record or remembered miss (TTL)
 * - `{prefix}:product:{pk}`: cached product record or remembered miss (TTL)
 * - `{prefix}:activation:{pk/dk}`: the device's one-shot state, the activation handed to
 *   it or the mark that it connected in secureMode 2 (no TTL: lasting, removed only by an
 *   operator resetting the device)
 *
 * `{pk/dk}` is a Redis Cluster hash tag: every key of one device (these, and its command
 * queue `{prefix}:cmd:{pk/dk}`) lies in one slot, so reading several of them in one
 * command (MGET) works on a cluster too. `/` cannot occur in product or device keys, so the
 * tag is unambiguous; the prefix may not contain braces (settings check it).
 *
 * Keys may contain `:` (only `,` `/` `+` `#`, white space and control characters are
 * excluded), so `%`, `:`, `{` and `}` inside a key are written `%25`, `%3A`, `%7B`, `%7D`:
 * `a:b`+`c` and `a`+`b:c` stay different keys, a brace in a key cannot end the hash tag
 * early, and ordinary keys appear unchanged.
 *
 * Versions before the hash tags wrote activations as `{prefix}:activation:{pk}:{dk}`
 * ({@link RedisKeys.legacyActivation}); they are still read (docs/operations.md, "Upgrading
 * the key layout").
 */

import { deviceHashTag, escapeKeyPart } from '../redis/keys.js';

/** Key part escaping of the layout before hash tags (`%` and `:` only). */
function legacyEscape(part: string): string {
  return part.replace(/[%:]/g, (c) => (c === '%' ? '%25' : '%3A'));
}

export class RedisKeys {
  readonly #prefix: string;

  constructor(prefix: string) {
    this.#prefix = prefix;
  }

  device(productKey: string, deviceKey: string): string {
    return `${this.#prefix}:device:${deviceHashTag(productKey, deviceKey)}`;
  }

  product(productKey: string): string {
    return `${this.#prefix}:product:${escapeKeyPart(productKey)}`;
  }

  activation(productKey: string, deviceKey: string): string {
    return `${this.#prefix}:activation:${deviceHashTag(productKey, deviceKey)}`;
  }

  /** Where versions before the hash tags kept the activation (read, never written). */
  legacyActivation(productKey: string, deviceKey: string): string {
    return `${this.#prefix}:activation:${legacyEscape(productKey)}:${legacyEscape(deviceKey)}`;
  }
}
