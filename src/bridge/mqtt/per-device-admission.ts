/**
 * Whether a device without a per-device session may open one now (`per-device.ts`, "Bounds
 * and what the router answers"): not while its refused login is remembered, not beyond
 * `maxSessions`, and only with a connect slot of the rate limit (`per-device-rate.ts`),
 * possibly after a short wait.
 */
import { BackendUnavailableError, DeviceUnauthorizedError } from './errors.js';
import { TokenBucket } from './per-device-rate.js';

/** Why a session was not even started. */
export type ConnectRefusalReason = 'remembered-unauthorized' | 'max-sessions' | 'rate-limited';

export interface AdmissionOptions {
  readonly maxSessions: number;
  readonly connectRatePerSecond: number;
  /** Longest wait for a connect slot. */
  readonly connectWaitMs: number;
  /** How long a refused login is answered from memory. */
  readonly refusalMemoryMs: number;
  /** Wall time, ms. */
  readonly now: () => number;
}

export class Admission {
  /** Device key → until (ms, `now()`) its refused login is answered from memory. */
  private readonly refusals = new Map<string, number>();
  private readonly bucket: TokenBucket;
  readonly maxSessions: number;
  readonly refused: Record<ConnectRefusalReason, number> = {
    'remembered-unauthorized': 0,
    'max-sessions': 0,
    'rate-limited': 0,
  };

  constructor(private readonly o: AdmissionOptions) {
    this.maxSessions = Math.max(1, Math.floor(o.maxSessions));
    const rate = Math.max(1, o.connectRatePerSecond);
    this.bucket = new TokenBucket(rate, rate, o.now);
  }

  /** Devices whose refused login is remembered now. */
  get rememberedRefusals(): number {
    return this.refusals.size;
  }

  /** Connect tokens available now (below zero while reserved ones wait). */
  tokens(): number {
    return this.bucket.available();
  }

  /**
   * Admits a new session of the device `key` while `sessions` are open or opening: the ms to
   * wait for its connect slot (0: now).
   * @throws DeviceUnauthorizedError its login was refused recently
   * @throws BackendUnavailableError `BACKEND_OVERLOADED`: at `maxSessions`, or no slot soon
   */
  admit(key: string, sessions: number): number {
    const until = this.refusals.get(key);
    if (until !== undefined) {
      if (until > this.o.now()) {
        this.refused['remembered-unauthorized']++;
        throw new DeviceUnauthorizedError('login refused recently', true);
      }
      this.refusals.delete(key);
    }
    if (sessions >= this.maxSessions) {
      this.refused['max-sessions']++;
      throw new BackendUnavailableError(
        'BACKEND_OVERLOADED',
        `per-device sessions at their maximum (${this.maxSessions})`,
      );
    }
    const waitMs = this.bucket.reserve(this.o.connectWaitMs);
    if (waitMs === undefined) {
      this.refused['rate-limited']++;
      throw new BackendUnavailableError('BACKEND_OVERLOADED', 'device connect rate limit');
    }
    return waitMs;
  }

  /** The broker refused the device's login: answer it from memory for `refusalMemoryMs`. */
  rememberRefusal(key: string): void {
    this.refusals.delete(key);
    this.refusals.set(key, this.o.now() + this.o.refusalMemoryMs);
    // bounded, oldest first (Map keeps insertion order)
    const cap = Math.max(1000, this.maxSessions);
    while (this.refusals.size > cap) {
      const first = this.refusals.keys().next();
      if (first.done === true) break;
      this.refusals.delete(first.value);
    }
  }

  /** Forgets the refusals that are over by `now`. */
  sweep(now: number): void {
    for (const [key, until] of this.refusals) {
      if (until <= now) this.refusals.delete(key);
    }
  }

  clear(): void {
    this.refusals.clear();
  }
}
