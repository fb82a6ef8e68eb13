/**
 * Plain-number counters of the command queue, read by metrics and readiness (telemetry/ turns
 * them into instruments; nothing here depends on it). One object per store instance: each pod
 * counts what it did itself.
 */

export interface CommandStoreStats {
  /** Commands added to a device's queue. */
  readonly enqueued: number;
  /** Commands refused because the device's queue was at its bound (the command is dropped). */
  readonly refusedFull: number;
  /** Commands whose JSON id was already queued on the same topic (MQTT redelivery): kept once. */
  readonly duplicates: number;
  /** Entries dropped because they waited longer than the expiry. */
  readonly expired: number;
  /** Entries dropped because they did not parse (written by something else). */
  readonly badEntries: number;
  /** Commands handed out by `peek`, `fetch` or `waitFor` (a command may be handed out often). */
  readonly delivered: number;
  /** Commands removed by the device's reply. */
  readonly acknowledged: number;
  /** Replies that matched no queued command (already acknowledged, expired, unknown id). */
  readonly ackUnmatched: number;
  /** Requests waiting for a command now (ttd). */
  readonly waiters: number;
  /** `waitFor` calls refused because the bound on waiters was reached. */
  readonly waitersRefused: number;
  /** Waiters answered with a command that arrived while they waited. */
  readonly wakeups: number;
  /** Waiters whose time ran out without a command. */
  readonly waitTimeouts: number;
  /** Operations that failed because the store was unreachable (Redis down, timeout). */
  readonly redisErrors: number;
  /** Redis connection 'error' events (both connections; ioredis reconnects by itself). */
  readonly redisConnectionErrors: number;
  /** Enqueue notifications received (pub/sub; other pods' enqueues included). */
  readonly notifications: number;
  /** Looks for a waiting command answered without Redis: the queue was known to be empty. */
  readonly peeksSkipped: number;
}

/** The mutable counters behind {@link CommandStoreStats}. */
export class CommandCounters {
  enqueued = 0;
  refusedFull = 0;
  duplicates = 0;
  expired = 0;
  badEntries = 0;
  delivered = 0;
  acknowledged = 0;
  ackUnmatched = 0;
  waitersRefused = 0;
  wakeups = 0;
  waitTimeouts = 0;
  redisErrors = 0;
  redisConnectionErrors = 0;
  notifications = 0;
  peeksSkipped = 0;

  snapshot(waiters: number): CommandStoreStats {
    return {
      enqueued: this.enqueued,
      refusedFull: this.refusedFull,
      duplicates: this.duplicates,
      expired: this.expired,
      badEntries: this.badEntries,
      delivered: this.delivered,
      acknowledged: this.acknowledged,
      ackUnmatched: this.ackUnmatched,
      waiters,
      waitersRefused: this.waitersRefused,
      wakeups: this.wakeups,
      waitTimeouts: this.waitTimeouts,
      redisErrors: this.redisErrors,
      redisConnectionErrors: this.redisConnectionErrors,
      notifications: this.notifications,
      peeksSkipped: this.peeksSkipped,
    };
  }
}
