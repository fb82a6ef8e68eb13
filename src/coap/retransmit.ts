/**
 * Reliable transmission of the Confirmable messages we originate, i.e. separate responses
 * (RFC 7252 §4.2, §5.2.2): the first timeout is random in [ACK_TIMEOUT,
 * ACK_TIMEOUT × ACK_RANDOM_FACTOR], each retransmission doubles it, and after
 * MAX_RETRANSMIT retransmissions (and one more timeout) the message is given up. An ACK or
 * RST from the peer with the same message ID ends it; an RST also means the peer has no
 * interest in the response any more (§4.2).
 *
 * Every pending message is one {@link Outgoing} object scheduled in the shared
 * {@link TimerQueue}, found by peer key and message ID when the ACK arrives.
 *
 * @module
 */

import type { CoapStats } from './stats.js';
import type { Timed, TimerQueue } from '../time/clock.js';

/** Where a datagram goes: the subset of a CoAP peer this module needs. */
export interface DatagramSink {
  readonly key: string;
  /** False when the channel is closed. */
  send(datagram: Buffer): boolean;
}

/** Transmission parameters (RFC 7252 §4.8). */
export interface RetransmitParams {
  /** ACK_TIMEOUT in ms (2000). */
  readonly ackTimeoutMs: number;
  /** ACK_RANDOM_FACTOR (1.5). */
  readonly ackRandomFactor: number;
  /** MAX_RETRANSMIT (4). */
  readonly maxRetransmit: number;
}

/** One Confirmable message waiting for its ACK. */
class Outgoing implements Timed {
  dueAt = 0;
  heapIndex = -1;
  /** Retransmissions so far. */
  retransmits = 0;

  /**
   * @param owner the retransmitter tracking it
   * @param peer where it goes
   * @param messageId its message ID
   * @param bytes the encoded datagram, sent as is each time
   * @param timeoutMs the current timeout (doubles with each retransmission)
   */
  constructor(
    readonly owner: Retransmitter,
    readonly peer: DatagramSink,
    readonly messageId: number,
    readonly bytes: Buffer,
    public timeoutMs: number,
  ) {}

  onTimer(now: number): void {
    this.owner.timeout(this, now);
  }
}

/** Tracks and retransmits the Confirmable messages sent to all peers. */
export class Retransmitter {
  private readonly peers = new Map<string, Map<number, Outgoing>>();
  private count = 0;

  /**
   * @param params transmission parameters
   * @param timers the shared timer queue
   * @param stats counters `retransmissions`, `giveUps`, `acksReceived`, `resetsReceived`,
   *   gauge `separateInFlight`
   * @param random uniform in [0, 1), for the initial timeout
   * @param onEmpty called when the last message waiting for its ACK is gone
   */
  constructor(
    private readonly params: RetransmitParams,
    private readonly timers: TimerQueue,
    private readonly stats: CoapStats,
    private readonly random: () => number,
    private readonly onEmpty: () => void = noop,
  ) {}

  /** Messages waiting for their ACK. */
  get size(): number {
    return this.count;
  }

  /**
   * Sends `bytes` (a CON with message ID `messageId`) and keeps retransmitting it until
   * acknowledged. Returns false, tracking nothing, when the peer's channel is closed.
   */
  start(peer: DatagramSink, messageId: number, bytes: Buffer, now: number): boolean {
    if (!peer.send(bytes)) return false;
    const { ackTimeoutMs, ackRandomFactor } = this.params;
    const timeout = ackTimeoutMs * (1 + this.random() * (ackRandomFactor - 1));
    let mine = this.peers.get(peer.key);
    if (mine === undefined) {
      mine = new Map();
      this.peers.set(peer.key, mine);
    }
    const old = mine.get(messageId);
    if (old !== undefined) this.remove(old);
    const o = new Outgoing(this, peer, messageId, bytes, timeout);
    mine.set(messageId, o);
    this.count++;
    this.stats.separateInFlight = this.count;
    this.timers.schedule(o, now + timeout);
    return true;
  }

  /** An ACK (`reset` false) or RST arrived; true when it matched a pending message. */
  settle(peerKey: string, messageId: number, reset: boolean): boolean {
    const o = this.peers.get(peerKey)?.get(messageId);
    if (o === undefined) return false;
    if (reset) this.stats.resetsReceived++;
    else this.stats.acksReceived++;
    this.remove(o);
    return true;
  }

  /** @internal called by {@link Outgoing.onTimer} */
  timeout(o: Outgoing, now: number): void {
    if (o.retransmits >= this.params.maxRetransmit) {
      this.stats.giveUps++;
      this.remove(o);
      return;
    }
    if (!o.peer.send(o.bytes)) {
      this.stats.giveUps++;
      this.remove(o);
      return;
    }
    o.retransmits++;
    this.stats.retransmissions++;
    o.timeoutMs *= 2;
    this.timers.schedule(o, now + o.timeoutMs);
  }

  /** Stops every retransmission towards one peer. */
  dropPeer(peerKey: string): void {
    const mine = this.peers.get(peerKey);
    if (mine === undefined) return;
    for (const o of [...mine.values()]) this.remove(o);
  }

  /** Stops everything. */
  clear(): void {
    for (const mine of this.peers.values()) for (const o of mine.values()) this.timers.cancel(o);
    this.peers.clear();
    this.count = 0;
    this.stats.separateInFlight = 0;
  }

  private remove(o: Outgoing): void {
    this.timers.cancel(o);
    const key = o.peer.key;
    const mine = this.peers.get(key);
    if (mine === undefined || mine.get(o.messageId) !== o) return;
    mine.delete(o.messageId);
    if (mine.size === 0) this.peers.delete(key);
    this.count--;
    this.stats.separateInFlight = this.count;
    if (this.count === 0) this.onEmpty();
  }
}

function noop(): void {
  // nothing waits
}
