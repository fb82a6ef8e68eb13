/**
 * Admission of `ttd` long-polls (requests held open for a command): at most `perDevice` per
 * device and `total` per pod, counted from before the request is forwarded until its wait
 * ends. Without the per-device bound one device could fill the whole pool with its own
 * long-polls (many CON requests with `ttd`, each on its own message ID) and every other
 * device's `ttd` would be refused.
 *
 * Admission is decided before the request reaches the backend, so a refused request has had
 * no effect at all: the device may repeat it as it is, and the platform sees no duplicate.
 */
import { deviceId } from './commands/entry.js';
import type { DeviceKey } from './types.js';

export type TtdRefusal = 'device' | 'total';

export class TtdGate {
  readonly #byDevice = new Map<string, number>();
  #total = 0;
  /** Requests refused because their device already held `perDevice` long-polls. */
  refusedDevice = 0;
  /** Requests refused because the pod already held `total` long-polls. */
  refusedTotal = 0;

  constructor(
    private readonly perDevice: number,
    private readonly total: number,
  ) {}

  /** Long-polls admitted and not yet released. */
  get size(): number {
    return this.#total;
  }

  /**
   * Admits one long-poll of `device`, or says why not (counted). An admitted one must be
   * {@link release}d exactly once.
   */
  acquire(device: DeviceKey): TtdRefusal | undefined {
    const key = deviceId(device);
    const n = this.#byDevice.get(key) ?? 0;
    if (n >= this.perDevice) {
      this.refusedDevice++;
      return 'device';
    }
    if (this.#total >= this.total) {
      this.refusedTotal++;
      return 'total';
    }
    this.#byDevice.set(key, n + 1);
    this.#total++;
    return undefined;
  }

  release(device: DeviceKey): void {
    const key = deviceId(device);
    const n = this.#byDevice.get(key);
    if (n === undefined) return;
    if (n <= 1) this.#byDevice.delete(key);
    else this.#byDevice.set(key, n - 1);
    this.#total--;
  }
}
