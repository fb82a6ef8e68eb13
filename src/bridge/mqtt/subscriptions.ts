/**
 * Reply-topic subscriptions of one pod: on demand, exact, reference-counted, lingering.
 *
 * Strategy (a), chosen over (b) fixed wildcard filters per pod:
 * - A request first acquires its exact reply topic (`/sys/pk/dk/thing/measurepoint/post_reply`).
 *   The first user subscribes it on one pool connection and everyone waits for the SUBACK,
 *   so the subscription is in force at the broker before the request is published and no
 *   reply can slip past. Further users of the topic share it (reference count).
 * - After the last user the subscription lingers (`lingerMs`) and is reused by the device's
 *   next request; only then is it unsubscribed. A device posting every few seconds costs
 *   one SUBSCRIBE per linger period, not one per request.
 * - Each pod receives only the replies of devices it is serving. With (b) every pod would
 *   receive every reply of every device (N pods × all reply traffic), and MQTT wildcards
 *   cannot even express "any topic ending in `_reply`": `+` and `#` match whole levels, so
 *   (b) needs one filter per reply shape (`/sys/+/+/thing/measurepoint/post_reply`, ... about
 *   twenty), and brokers with per-client ACLs often refuse such broad filters.
 * - Cost of (a): one SUBSCRIBE round trip before the first request of a device in a linger
 *   period, and broker subscription state proportional to the active devices of the pod.
 *   A device that moves to another pod may leave a lingering subscription behind on the old
 *   one for `lingerMs`; that pod then sees the device's replies and counts them unmatched.
 * - A subscription lives on the connection that made it. When that connection drops
 *   (clean session: the broker forgets it) its entries are discarded and the next request
 *   subscribes again on a connection that is up. Requests already waiting on a discarded
 *   subscription can still be answered if another request re-subscribes the topic in time;
 *   otherwise they end with their reply timeout.
 */
import { BackendUnavailableError } from './errors.js';
import { systemClock, TimerQueue, type Clock, type Timed } from '../../time/clock.js';

/** What the manager needs of a pool connection. */
export interface SubscribingConnection {
  subscribe(topic: string, timeoutMs: number): Promise<void>;
  unsubscribe(topic: string): void;
}

/** A held subscription; hand it back with {@link ReplySubscriptions.release}. */
export interface SubscriptionLease {
  readonly topic: string;
  /** Resolves once the SUBACK arrived; rejects with BackendUnavailableError otherwise. */
  readonly ready: Promise<void>;
  /** True once `ready` resolved: a request need not wait for it. */
  readonly subscribed: boolean;
}

/** One subscription; while nobody holds it, it is its own linger deadline in the queue. */
class Entry<C extends SubscribingConnection> implements SubscriptionLease, Timed {
  refs = 1;
  dead = false;
  subscribed = false;
  dueAt = 0;
  heapIndex = -1;

  constructor(
    private readonly owner: ReplySubscriptions<C>,
    readonly topic: string,
    readonly conn: C,
    readonly ready: Promise<void>,
  ) {}

  /** The linger period passed. */
  onTimer(): void {
    this.owner.lingerEnded(this);
  }
}

export class ReplySubscriptions<C extends SubscribingConnection> {
  private readonly entries = new Map<string, Entry<C>>();
  private failedCount = 0;

  /**
   * @param pick a connection that is up for a new subscription, or undefined when none is.
   * @param subackTimeoutMs how long to wait for a SUBACK.
   * @param lingerMs how long a subscription is kept after its last user.
   */
  /**
   * The linger deadlines: one host timer for all of them, not one per release. On the
   * system clock unless told otherwise (it does not hold the process open).
   */
  private readonly lingering: TimerQueue;

  /**
   * @param pick a connection that is up for a new subscription, or undefined when none is.
   * @param subackTimeoutMs how long to wait for a SUBACK.
   * @param lingerMs how long a subscription is kept after its last user.
   * @param clock the linger periods' time and timer (default: the system clock).
   */
  constructor(
    private readonly pick: () => C | undefined,
    private readonly subackTimeoutMs: number,
    private readonly lingerMs: number,
    private readonly clock: Clock = systemClock,
  ) {
    this.lingering = new TimerQueue(clock);
  }

  /** Subscriptions held now, lingering ones included. */
  get active(): number {
    return this.entries.size;
  }

  /** Subscriptions refused, timed out or lost before their SUBACK. */
  get failed(): number {
    return this.failedCount;
  }

  /**
   * Takes a reference on `topic`, subscribing it when no live subscription exists.
   * @throws BackendUnavailableError `BACKEND_UNAVAILABLE` when no connection is up.
   */
  acquire(topic: string): SubscriptionLease {
    const existing = this.entries.get(topic);
    if (existing !== undefined && !existing.dead) {
      existing.refs++;
      this.lingering.cancel(existing);
      return existing;
    }
    const conn = this.pick();
    if (conn === undefined) throw new BackendUnavailableError('BACKEND_UNAVAILABLE');
    const ready = conn.subscribe(topic, this.subackTimeoutMs);
    const entry = new Entry<C>(this, topic, conn, ready);
    // Several requests may await `ready`; a failure must not also surface as unhandled.
    ready.then(
      () => {
        entry.subscribed = true;
      },
      () => {
        this.failedCount++;
        this.discard(entry);
      },
    );
    this.entries.set(topic, entry);
    return entry;
  }

  /** Drops a reference; the last one starts the linger period. */
  release(lease: SubscriptionLease): void {
    const entry = lease as Entry<C>;
    if (entry.refs > 0) entry.refs--;
    if (entry.dead || entry.refs > 0) return;
    this.lingering.schedule(entry, this.clock.now() + this.lingerMs);
  }

  /** @internal A subscription nobody took again within `lingerMs`: unsubscribed. */
  lingerEnded(entry: Entry<C>): void {
    if (entry.dead || entry.refs > 0) return;
    this.discard(entry);
    entry.conn.unsubscribe(entry.topic);
  }

  /** The connection dropped: its subscriptions are gone at the broker (clean session). */
  connectionLost(conn: C): void {
    for (const entry of [...this.entries.values()]) {
      if (entry.conn === conn) this.discard(entry);
    }
  }

  /** Forgets everything (backend closing); nothing is unsubscribed. */
  clear(): void {
    for (const entry of [...this.entries.values()]) this.discard(entry);
  }

  private discard(entry: Entry<C>): void {
    entry.dead = true;
    this.lingering.cancel(entry);
    if (this.entries.get(entry.topic) === entry) this.entries.delete(entry.topic);
  }
}
