/**
 * Devices suspected of poisoning a shared bridge connection: their publish was in flight when
 * the broker dropped the connection. Validation (`checkTopic`, the topic key rules) refuses
 * everything known to make a broker disconnect; this guards against what it does not know
 * (another broker's rules, a payload a broker plugin chokes on). Without it one device could
 * cut every pooled connection in turn: its publish drops connection A (failing every other
 * device's publish in flight on A), it gets 5.03, retries on connection B, and so on.
 *
 * A suspected device's publishes are refused without being sent (5.03 with Max-Age = the time
 * left) for a suspension that starts short and doubles with every further drop it is part of:
 * `baseMs`, `2 × baseMs`, ... up to `maxMs`. Its strikes are forgotten `maxMs` after its last
 * suspension ended, so one broker hiccup costs a device one short pause, never a ban.
 *
 * How sure a drop is decides when the suspension starts. An MQTT 5 broker that refuses a
 * packet says so (DISCONNECT with a malformed-packet, protocol-error, topic-invalid, ...
 * reason): the devices in flight are suspended at once. A broker that just closes (MQTT 3.1.1,
 * a restart, a network fault) names nobody: a device in flight gets a strike without a
 * suspension, and is suspended only if it is in flight again at another such drop within
 * `probationMs`. A broker restart thus costs no device a pause, while a device whose publish
 * makes a 3.1.1 broker drop the connection gets to cut it twice, not endlessly.
 *
 * Why not only the last publish before the drop: the broker reads the connection in order and
 * closes it at the packet it refuses, but publishes written after that one are in flight too,
 * and PUBACKs of good ones before it can be lost with the socket; no single publish can be
 * named with certainty. Every device with a publish in flight is suspected; an innocent one
 * pays at most one retry delay, the culprit is in every drop and its suspension grows until it
 * stops costing anything.
 *
 * Bounded: at most `maxEntries` devices are remembered (least recently struck dropped first).
 */

export interface SuspectOptions {
  /** First suspension, ms. */
  readonly baseMs: number;
  /** Longest suspension, ms; also how long strikes are remembered after one ends. */
  readonly maxMs: number;
  /** How long a strike without a suspension (an unexplained drop) is remembered, ms. */
  readonly probationMs: number;
  /** Devices remembered at most. */
  readonly maxEntries: number;
  /** Monotonic clock in ms. */
  readonly now: () => number;
}

interface Entry {
  strikes: number;
  /** The drop it was last struck for (one strike per drop, however many publishes). */
  cause: string;
  /** Refused until then (not refused at all when not past `since`). */
  until: number;
  /** Whether a suspension was imposed (or only a strike is remembered). */
  suspended: boolean;
}

export class Suspects {
  readonly #entries = new Map<string, Entry>();
  /** Devices struck (a device struck twice counts twice). */
  strikes = 0;

  constructor(private readonly o: SuspectOptions) {}

  /** Devices remembered now. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * The device had a publish in flight on a connection the broker dropped; `cause` names that
   * drop, so a device with several publishes in it is struck once.
   */
  strike(device: string, cause: string, certain: boolean): void {
    const now = this.o.now();
    const e = this.#live(device, now);
    if (e !== undefined && e.cause === cause) return;
    const strikes = (e?.strikes ?? 0) + 1;
    // an unexplained drop suspends only a device that was in flight at an earlier one too
    const suspend = certain || strikes >= 2;
    const ms = suspend
      ? Math.min(this.o.maxMs, this.o.baseMs * 2 ** Math.min(strikes - (certain ? 1 : 2), 30))
      : 0;
    // re-inserted: the Map's order is the LRU order
    this.#entries.delete(device);
    this.#entries.set(device, {
      strikes,
      cause,
      until: now + ms,
      suspended: suspend || e?.suspended === true,
    });
    this.strikes++;
    if (this.#entries.size > this.o.maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
  }

  /** Ms the device's publishes are still refused; 0 when it is not suspended. */
  remainingMs(device: string): number {
    if (this.#entries.size === 0) return 0;
    const now = this.o.now();
    const e = this.#live(device, now);
    return e === undefined || e.until <= now ? 0 : e.until - now;
  }

  /** The entry, unless its strikes are forgotten (dropped then). */
  #live(device: string, now: number): Entry | undefined {
    const e = this.#entries.get(device);
    if (e !== undefined && now > e.until + (e.suspended ? this.o.maxMs : this.o.probationMs)) {
      this.#entries.delete(device);
      return undefined;
    }
    return e;
  }
}
