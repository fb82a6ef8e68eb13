/**
 * Devices whose command queue is known to be empty, so that the look for a waiting command
 * that goes with every uplink (`peek`) costs no Redis round trip for them.
 *
 * Why it holds: a queue becomes non-empty only by an enqueue, and every enqueue, on any pod,
 * publishes the device on the notification channel (redis-store.ts). So a device leaves the
 * set on its notification, the whole set is forgotten whenever the subscription is not live
 * (a notification may have been missed), and a look that found the queue empty enters the
 * device only if the subscription was live for the whole look and no notification for the
 * device arrived meanwhile. What remains is the channel's own delay: a look on this pod within
 * that delay after another pod's enqueue (Redis delivering the PUBLISH to this pod; not measured
 * here) still says
 * "none", and the device gets the command on its next request or long-poll (`waitFor` wakes on
 * the notification). Expiry and acknowledgement only empty queues, which never makes the set
 * wrong.
 *
 * Bounded: at most `max` devices, the least recently entered dropped first (a dropped device
 * only costs its next look a round trip again).
 */
export class KnownEmpty {
  readonly #max: number;
  readonly #empty = new Set<string>();
  /** Looks in flight per device; `stale` once a notification or a subscription change came. */
  readonly #looking = new Map<string, { count: number; stale: boolean }>();
  #live = false;

  constructor(max: number) {
    this.#max = Math.max(0, Math.floor(max));
  }

  get size(): number {
    return this.#empty.size;
  }

  /** Whether `device`'s queue is known to be empty now. */
  has(device: string): boolean {
    return this.#live && this.#empty.has(device);
  }

  /** A look at `device`'s queue starts; pass the result to {@link end}. */
  begin(device: string): { count: number; stale: boolean } {
    let look = this.#looking.get(device);
    if (look === undefined) {
      look = { count: 0, stale: !this.#live };
      this.#looking.set(device, look);
    }
    look.count++;
    return look;
  }

  /** The look ended: `empty` when it found no command (a failed look passes false). */
  end(device: string, look: { count: number; stale: boolean }, empty: boolean): void {
    if (--look.count === 0 && this.#looking.get(device) === look) this.#looking.delete(device);
    if (!empty || look.stale || !this.#live || this.#max === 0) return;
    if (this.#empty.has(device)) return;
    if (this.#empty.size >= this.#max) {
      const oldest = this.#empty.values().next();
      if (oldest.done !== true) this.#empty.delete(oldest.value);
    }
    this.#empty.add(device);
  }

  /** A command was (or is being) queued for `device`. */
  notified(device: string): void {
    this.#empty.delete(device);
    const look = this.#looking.get(device);
    if (look !== undefined) look.stale = true;
  }

  /** The subscription is up (true) or down (false): either way, forget what was known. */
  subscription(live: boolean): void {
    this.#live = live;
    this.#empty.clear();
    for (const look of this.#looking.values()) look.stale = true;
  }
}
