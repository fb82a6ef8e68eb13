/**
 * How a product or device key becomes part of a Redis key, shared by every user of Redis
 * (the secret chain, the command queue, presence): `%`, `:`, `{` and `}` inside a key are
 * written `%25`, `%3A`, `%7B`, `%7D`, so `a:b`+`c` and `a`+`b:c` stay different keys and a
 * brace in a key cannot end a hash tag early; ordinary keys appear unchanged. Every key of
 * one device carries the hash tag `{pk/dk}`, so they lie in one Redis Cluster slot.
 */

const ESCAPES: Readonly<Record<string, string>> = {
  '%': '%25',
  ':': '%3A',
  '{': '%7B',
  '}': '%7D',
};

/** `%` → `%25`, `:` → `%3A`, `{` → `%7B`, `}` → `%7D`; everything else as is. */
export function escapeKeyPart(part: string): string {
  return part.replace(/[%:{}]/g, (c) => ESCAPES[c] ?? c);
}

/** Reverses {@link escapeKeyPart}. */
export function unescapeKeyPart(part: string): string {
  return part.replace(/%(?:25|3A|7B|7D)/g, (m) => {
    switch (m) {
      case '%25':
        return '%';
      case '%3A':
        return ':';
      case '%7B':
        return '{';
      default:
        return '}';
    }
  });
}

/** `{pk/dk}`: the hash tag of every key of one device. */
export function deviceHashTag(productKey: string, deviceKey: string): string {
  return `{${escapeKeyPart(productKey)}/${escapeKeyPart(deviceKey)}}`;
}
