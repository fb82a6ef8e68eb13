/**
 * Reply correlation: requests wait on a reply topic for the message whose JSON `id` equals
 * theirs (docs/protocol.md: reply `{"id","code","data"[,"message"]}`). Pure bookkeeping; the backend
 * feeds it every message received on a reply topic and owns subscriptions and timers.
 *
 * - Waiters are keyed by (reply topic, id). Many concurrent requests of one device with
 *   different ids each get their own reply; waiters that share an id all get the same reply
 *   (a device re-sending a request with the same id while the first still waits).
 * - Raw exchanges (`thing/model/up_raw` → `up_raw_reply`, raw bytes, no id) wait without an
 *   id: the first message on the reply topic that no id-waiter takes goes to the oldest raw
 *   waiter of that topic (FIFO). A late reply to an earlier, timed-out raw request can thus
 *   answer the next one; raw replies carry nothing to tell them apart.
 * - A message no waiter takes is unmatched: the caller drops and counts it.
 */

/** The `id` of a JSON reply as a string (a number id is rendered with `String`), else undefined. */
export function extractReplyId(payload: Buffer): string | undefined {
  // Cheap pre-check: a JSON object starts with `{` after optional white space.
  let i = 0;
  while (i < payload.length) {
    const b = payload[i];
    if (b !== 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) break;
    i++;
  }
  if (payload[i] !== 0x7b) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
  const id: unknown = (parsed as Record<string, unknown>).id;
  if (typeof id === 'string') return id;
  if (typeof id === 'number' && Number.isFinite(id)) return String(id);
  return undefined;
}

/** Normalizes a request's message id for matching; undefined means a raw (id-less) exchange. */
export function normalizeMessageId(id: string | number | undefined): string | undefined {
  return id === undefined ? undefined : String(id);
}

/** One request waiting for its reply. */
export interface ReplyWaiter {
  readonly topic: string;
  /** Undefined for a raw exchange (matched first come, first served). */
  readonly id: string | undefined;
  readonly promise: Promise<Buffer>;
  /** True once resolved or rejected. */
  readonly settled: boolean;
  /** The W3C trace context the reply carried (MQTT 5 user property), if any. */
  readonly traceparent: string | undefined;
}

interface WaiterImpl extends ReplyWaiter {
  settled: boolean;
  traceparent: string | undefined;
  resolve(payload: Buffer): void;
  reject(err: Error): void;
}

interface TopicWaiters {
  readonly byId: Map<string, WaiterImpl[]>;
  /** Raw waiters, oldest first; made with the first one (most topics never have any). */
  raw: WaiterImpl[] | undefined;
}

export class ReplyMatcher {
  private readonly topics = new Map<string, TopicWaiters>();
  private count = 0;

  /** Waiters not yet settled. */
  get size(): number {
    return this.count;
  }

  /** Registers a waiter; register it before publishing so an early reply is not missed. */
  add(topic: string, id: string | undefined): ReplyWaiter {
    let resolve: (payload: Buffer) => void = noop;
    let reject: (err: Error) => void = noop;
    const promise = new Promise<Buffer>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // A waiter failed before anyone awaits it must not become an unhandled rejection.
    promise.catch(noop);
    const w: WaiterImpl = {
      topic,
      id,
      promise,
      settled: false,
      traceparent: undefined,
      resolve,
      reject,
    };
    let t = this.topics.get(topic);
    if (t === undefined) {
      t = { byId: new Map(), raw: undefined };
      this.topics.set(topic, t);
    }
    if (id === undefined) (t.raw ??= []).push(w);
    else {
      const list = t.byId.get(id);
      if (list === undefined) t.byId.set(id, [w]);
      else list.push(w);
    }
    this.count++;
    return w;
  }

  /**
   * Hands a received message to its waiters. Returns how many waiters it settled; 0 means
   * unmatched (no waiter on the topic, an unknown id, or not JSON while no raw waiter waits).
   */
  deliver(topic: string, payload: Buffer, traceparent?: string): number {
    const t = this.topics.get(topic);
    if (t === undefined) return 0;
    if (t.byId.size > 0) {
      const id = extractReplyId(payload);
      const list = id === undefined ? undefined : t.byId.get(id);
      if (id !== undefined && list !== undefined) {
        t.byId.delete(id);
        this.dropIfEmpty(topic, t);
        for (const w of list) {
          w.traceparent = traceparent;
          if (this.settle(w)) w.resolve(payload);
        }
        return list.length;
      }
    }
    const w = t.raw?.shift();
    if (w === undefined) return 0;
    this.dropIfEmpty(topic, t);
    w.traceparent = traceparent;
    if (this.settle(w)) w.resolve(payload);
    return 1;
  }

  /** Rejects and removes one waiter (timeout, failed publish). False if already settled. */
  fail(waiter: ReplyWaiter, err: Error): boolean {
    if (waiter.settled) return false;
    const w = waiter as WaiterImpl;
    const t = this.topics.get(w.topic);
    if (t !== undefined) {
      if (w.id === undefined) {
        if (t.raw !== undefined) removeItem(t.raw, w);
      } else {
        const list = t.byId.get(w.id);
        if (list !== undefined) {
          removeItem(list, w);
          if (list.length === 0) t.byId.delete(w.id);
        }
      }
      this.dropIfEmpty(w.topic, t);
    }
    if (this.settle(w)) w.reject(err);
    return true;
  }

  /** Rejects every waiter (backend closing). */
  failAll(err: Error): void {
    const all: WaiterImpl[] = [];
    for (const t of this.topics.values()) {
      for (const list of t.byId.values()) all.push(...list);
      if (t.raw !== undefined) all.push(...t.raw);
    }
    this.topics.clear();
    for (const w of all) if (this.settle(w)) w.reject(err);
  }

  /** Marks `w` settled; false when it already was (no closure per settlement). */
  private settle(w: WaiterImpl): boolean {
    if (w.settled) return false;
    w.settled = true;
    this.count--;
    return true;
  }

  private dropIfEmpty(topic: string, t: TopicWaiters): void {
    if (t.byId.size === 0 && (t.raw === undefined || t.raw.length === 0)) {
      this.topics.delete(topic);
    }
  }
}

function noop(): void {}

function removeItem<T>(list: T[], item: T): void {
  const i = list.indexOf(item);
  if (i >= 0) list.splice(i, 1);
}
