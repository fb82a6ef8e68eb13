/**
 * Counters of the secret chain, as plain numbers for telemetry to read (no metrics library
 * here). One {@link AuthStats} object is shared by every part of one secret stack.
 */

/** Where a lookup was answered (or not). `activation` is the activation store. */
export type LookupLayer = 'memory' | 'redis' | 'registry' | 'file' | 'activation';

/**
 * What one layer said to one lookup: `hit` (a record), `miss` (nothing, ask the next
 * layer), `negative-hit` (a remembered "unknown"), `error` (failed), `timeout` (too slow).
 */
export type LookupOutcome = 'hit' | 'miss' | 'negative-hit' | 'error' | 'timeout';

/** How an activation ended; see `activation.ts`. */
export type ActivationOutcome =
  /** The registry activated the device; its secret was handed out. */
  | 'registry'
  /** The devices file lists the device; its secret was handed out. */
  | 'file'
  | 'unknown-product'
  /** No registry, and the devices file does not list the device. */
  | 'unknown-device'
  | 'dynamic-registration-disabled'
  /** Activated, or connected with its own secret, before (or the registry said 409). */
  | 'already-activated'
  | 'unavailable';

/** Redis as seen by the stack; `off` when no Redis is configured. */
export type RedisState = 'connected' | 'connecting' | 'down' | 'off';

const LAYERS: readonly LookupLayer[] = ['memory', 'redis', 'registry', 'file', 'activation'];
const OUTCOMES: readonly LookupOutcome[] = ['hit', 'miss', 'negative-hit', 'error', 'timeout'];
const ACTIVATION_OUTCOMES: readonly ActivationOutcome[] = [
  'registry',
  'file',
  'unknown-product',
  'unknown-device',
  'dynamic-registration-disabled',
  'already-activated',
  'unavailable',
];

function zeros<K extends string>(keys: readonly K[]): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const k of keys) out[k] = 0;
  return out;
}

export class AuthStats {
  /** Lookups per layer and outcome (device and product lookups together). */
  readonly lookups: { readonly [L in LookupLayer]: Record<LookupOutcome, number> };
  /** Lookups that joined a request already in flight for the same key. */
  singleFlightJoins = 0;
  /** Registry requests that failed: error status, malformed answer, network error, timeout. */
  registryFailures = 0;
  /** Registry requests refused at once because the circuit breaker was open. */
  registryRejected = 0;
  /** Times the registry circuit breaker opened. */
  registryCircuitOpened = 0;
  /** Redis 'error' events (connection errors; ioredis reconnects by itself). */
  redisConnectionErrors = 0;
  /** Redis cache writes (device and product entries) that failed. */
  redisWriteErrors = 0;
  /** Values read from Redis that did not parse (treated as not cached). */
  redisBadValues = 0;
  /** Activations and secureMode 2 marks that could not be written to the activation store. */
  activationStoreErrors = 0;
  /** Refused activations whose claim was stored all the same and then removed again. */
  activationsReleased = 0;
  /** Refused activations whose release never reached the store (10 attempts, about 25 s). */
  activationReleasesAbandoned = 0;
  /** Activations per outcome. */
  readonly activations: Record<ActivationOutcome, number>;

  readonly #redisState: () => RedisState;

  constructor(redisState: () => RedisState = () => 'off') {
    const lookups = {} as Record<LookupLayer, Record<LookupOutcome, number>>;
    for (const layer of LAYERS) lookups[layer] = zeros(OUTCOMES);
    this.lookups = lookups;
    this.activations = zeros(ACTIVATION_OUTCOMES);
    this.#redisState = redisState;
  }

  /** The Redis connection state now. */
  get redisState(): RedisState {
    return this.#redisState();
  }

  count(layer: LookupLayer, outcome: LookupOutcome): void {
    this.lookups[layer][outcome]++;
  }
}
