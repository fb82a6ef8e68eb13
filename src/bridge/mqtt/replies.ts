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
import { jsonObjectId } from '../json-object.js';

/**
 * The `id` of a JSON reply as a string (a number id is rendered with `String`), else
 * undefined: read by the byte scanner of `json-object.ts`, the value `JSON.parse` gives.
 */
export function extractReplyId(payload: Buffer): string | undefined {
  const id = jsonObjectId(payload);
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

/**
 * Where the id-waiters of (topic, id) are filed: one string, no map or list per topic while
 * one request waits. A topic that holds U+0000 (MQTT forbids it) could make two pairs share a
 * key: a hit is checked against the waiters' own topic and id.
 */
function keyOf(topic: string, id: string): string {
  return `${topic}\u0000${id}`;
}

/** The waiters of one key: one waiter, or a list when several share it. */
type Filed = WaiterImpl | WaiterImpl[];

export class ReplyMatcher {
  /** Id-waiters by {@link keyOf}. */
  private readonly byKey = new Map<string, Filed>();
  /** Raw waiters by topic, oldest first (most topics never have any). */
  private readonly raw = new Map<string, WaiterImpl[]>();
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
    const w: WaiterImpl = {
      topic,
      id,
      promise,
      settled: false,
      traceparent: undefined,
      resolve,
      reject,
    };
    if (id === undefined) {
      const list = this.raw.get(topic);
      if (list === undefined) this.raw.set(topic, [w]);
      else list.push(w);
    } else {
      const key = keyOf(topic, id);
      const filed = this.byKey.get(key);
      if (filed === undefined) this.byKey.set(key, w);
      else if (Array.isArray(filed)) filed.push(w);
      else this.byKey.set(key, [filed, w]);
    }
    this.count++;
    return w;
  }

  /**
   * Hands a received message to its waiters. Returns how many waiters it settled; 0 means
   * unmatched (no waiter on the topic, an unknown id, or not JSON while no raw waiter waits).
   */
  deliver(topic: string, payload: Buffer, traceparent?: string): number {
    if (this.byKey.size > 0) {
      const id = extractReplyId(payload);
      if (id !== undefined) {
        const n = this.deliverById(keyOf(topic, id), topic, id, payload, traceparent);
        if (n > 0) return n;
      }
    }
    const list = this.raw.get(topic);
    const w = list?.shift();
    if (list === undefined || w === undefined) return 0;
    if (list.length === 0) this.raw.delete(topic);
    w.traceparent = traceparent;
    if (this.settle(w)) w.resolve(payload);
    return 1;
  }

  private deliverById(
    key: string,
    topic: string,
    id: string,
    payload: Buffer,
    traceparent: string | undefined,
  ): number {
    const filed = this.byKey.get(key);
    if (filed === undefined) return 0;
    if (!Array.isArray(filed)) {
      if (filed.topic !== topic || filed.id !== id) return 0;
      this.byKey.delete(key);
      filed.traceparent = traceparent;
      if (this.settle(filed)) filed.resolve(payload);
      return 1;
    }
    const taken: WaiterImpl[] = [];
    const rest: WaiterImpl[] = [];
    for (const w of filed) (w.topic === topic && w.id === id ? taken : rest).push(w);
    if (taken.length === 0) return 0;
    if (rest.length === 0) this.byKey.delete(key);
    else this.byKey.set(key, rest);
    for (const w of taken) {
      w.traceparent = traceparent;
      if (this.settle(w)) w.resolve(payload);
    }
    return taken.length;
  }

  /** Rejects and removes one waiter (timeout, failed publish). False if already settled. */
  fail(waiter: ReplyWaiter, err: Error): boolean {
    if (waiter.settled) return false;
    const w = waiter as WaiterImpl;
    if (w.id === undefined) {
      const list = this.raw.get(w.topic);
      if (list !== undefined) {
        removeItem(list, w);
        if (list.length === 0) this.raw.delete(w.topic);
      }
    } else {
      const key = keyOf(w.topic, w.id);
      const filed = this.byKey.get(key);
      if (filed === w) this.byKey.delete(key);
      else if (Array.isArray(filed)) {
        removeItem(filed, w);
        if (filed.length === 0) this.byKey.delete(key);
      }
    }
    if (this.settle(w)) rejectWaiter(w, err);
    return true;
  }

  /** Rejects every waiter (backend closing). */
  failAll(err: Error): void {
    const all: WaiterImpl[] = [];
    for (const filed of this.byKey.values()) {
      if (Array.isArray(filed)) all.push(...filed);
      else all.push(filed);
    }
    for (const list of this.raw.values()) all.push(...list);
    this.byKey.clear();
    this.raw.clear();
    for (const w of all) if (this.settle(w)) rejectWaiter(w, err);
  }

  /** Marks `w` settled; false when it already was (no closure per settlement). */
  private settle(w: WaiterImpl): boolean {
    if (w.settled) return false;
    w.settled = true;
    this.count--;
    return true;
  }
}

/**
 * Rejects a waiter's promise. It may be failed before anyone awaits it (a publish that failed,
 * the backend closing): it must not become an unhandled rejection. Marked handled here rather
 * than when made, so an answered request costs no extra promise.
 */
function rejectWaiter(w: WaiterImpl, err: Error): void {
  w.promise.catch(noop);
  w.reject(err);
}

function noop(): void {}

function removeItem<T>(list: T[], item: T): void {
  const i = list.indexOf(item);
  if (i >= 0) list.splice(i, 1);
}
