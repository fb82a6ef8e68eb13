/**
 * Counts `Map` lookups (`get` and `has`) made while `fn` runs, by key, through
 * `Map.prototype` — so a test can say how often a path looks something up without reaching
 * into a class's private fields. Node's own internals use their own Map copies (primordials)
 * and are not counted.
 */
export function countMapLookups<T>(fn: () => T): { result: T; keys: unknown[] } {
  const keys: unknown[] = [];
  const proto = Map.prototype as { get: (k: unknown) => unknown; has: (k: unknown) => boolean };
  const { get, has } = proto;
  proto.get = function (this: Map<unknown, unknown>, k: unknown) {
    keys.push(k);
    return get.call(this, k);
  };
  proto.has = function (this: Map<unknown, unknown>, k: unknown) {
    keys.push(k);
    return has.call(this, k);
  };
  try {
    return { result: fn(), keys };
  } finally {
    proto.get = get;
    proto.has = has;
  }
}
