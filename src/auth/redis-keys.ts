/**
 * Every Redis key coap-edge's secret chain uses, in one place:
 *
 * - `{prefix}:device:{pk}:{dk}`: cached device record or remembered miss (TTL)
 * - `{prefix}:product:{pk}`: cached product record or remembered miss (TTL)
 * - `{prefix}:activation:{pk}:{dk}`: the device's one-shot state, the activation handed to
 *   it or the mark that it connected in secureMode 2 (no TTL: lasting, removed only by an
 *   operator resetting the device)
 *
 * Keys may contain `:` (only `,` `/` `+` `#`, white space and control characters are
 * excluded), so `%` and `:` inside a key are written `%25` and `%3A`: `a:b`+`c` and `a`+`b:c`
 * stay different keys, and ordinary keys appear unchanged.
 */

/** `%` → `%25`, `:` → `%3A`; everything else as is. */
export function escapeKeyPart(part: string): string {
  return part.replace(/[%:]/g, (c) => (c === '%' ? '%25' : '%3A'));
}

export class RedisKeys {
  readonly #prefix: string;

  constructor(prefix: string) {
    this.#prefix = prefix;
  }

  device(productKey: string, deviceKey: string): string {
    return `${this.#prefix}:device:${escapeKeyPart(productKey)}:${escapeKeyPart(deviceKey)}`;
  }

  product(productKey: string): string {
    return `${this.#prefix}:product:${escapeKeyPart(productKey)}`;
  }

  activation(productKey: string, deviceKey: string): string {
    return `${this.#prefix}:activation:${escapeKeyPart(productKey)}:${escapeKeyPart(deviceKey)}`;
  }
}
