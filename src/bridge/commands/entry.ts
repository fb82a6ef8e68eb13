/**
 * Rules shared by both stores, as pure functions: what a queue entry looks like (JSON, the
 * same in Redis and in tests), which JSON id a command or reply carries, which entry a reply
 * acknowledges, and when an entry has expired. The Lua scripts of `redis-scripts.ts` implement
 * the same rules; the tests run both stores through one suite.
 */
import { parseMqttTopic } from '../../enos/index.js';
import { extractReplyId } from '../mqtt/replies.js';
import type { DeviceKey, QueuedCommand } from '../types.js';

/**
 * The JSON `id` of a command or of a device's reply on `topic` (a number id as its decimal
 * string), or undefined: for raw topics (`thing/model/down_raw` and its reply carry raw bytes,
 * whatever they look like), for bodies that are not a JSON object with an id, and for an empty id.
 */
export function messageIdOf(topic: string, payload: Buffer): string | undefined {
  const parsed = parseMqttTopic(topic);
  if (parsed.ok && parsed.topic.raw) return undefined;
  const id = extractReplyId(payload);
  return id === undefined || id.length === 0 ? undefined : id;
}

/** A peek's answer when no command waits (shared: read only). */
export const NO_COMMAND = Object.freeze({ head: undefined, count: 0 } as const);

/** A device as one string: `pk\ndk` (keys never hold control characters). */
export function deviceId(device: DeviceKey): string {
  return `${device.productKey}\n${device.deviceKey}`;
}

/** The inverse of {@link deviceId}; undefined for anything else. */
export function parseDeviceId(text: string): DeviceKey | undefined {
  const parts = text.split('\n');
  const [productKey, deviceKey] = parts;
  if (parts.length !== 2 || !productKey || !deviceKey) return undefined;
  return { productKey, deviceKey };
}

/** True when an entry enqueued at `enqueuedAt` has waited `expiryMs` or longer at `now`. */
export function isExpired(enqueuedAt: number, now: number, expiryMs: number): boolean {
  return now - enqueuedAt >= expiryMs;
}

/** The stored form: `{id, topic, payload (base64), messageId?, enqueuedAt, tp?}`. */
export function encodeEntry(cmd: QueuedCommand): string {
  const o: Record<string, string | number> = {
    id: cmd.id,
    topic: cmd.topic,
    payload: cmd.payload.toString('base64'),
    enqueuedAt: cmd.enqueuedAt,
  };
  if (cmd.messageId !== undefined) o.messageId = cmd.messageId;
  if (cmd.traceparent !== undefined) o.tp = cmd.traceparent;
  return JSON.stringify(o);
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Parses a stored entry; undefined when it is not one. */
export function decodeEntry(text: string): QueuedCommand | undefined {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return undefined;
  const r = o as Record<string, unknown>;
  const { id, topic, payload, messageId, enqueuedAt, tp } = r;
  if (typeof id !== 'string' || typeof topic !== 'string' || typeof payload !== 'string') {
    return undefined;
  }
  if (typeof enqueuedAt !== 'number' || !Number.isFinite(enqueuedAt)) return undefined;
  if (messageId !== undefined && typeof messageId !== 'string') return undefined;
  if (payload.length % 4 !== 0 || !BASE64.test(payload)) return undefined;
  const cmd: QueuedCommand = {
    id,
    topic,
    payload: Buffer.from(payload, 'base64'),
    messageId,
    enqueuedAt,
  };
  return Object.freeze(
    typeof tp === 'string' && tp.length <= 128 ? { ...cmd, traceparent: tp } : cmd,
  );
}

/**
 * The index of the entry a reply on `topic` acknowledges, or -1. Entries are oldest first.
 * - With a reply id: the entry on `topic` whose `messageId` equals it; failing that, the
 *   oldest entry on `topic` without a `messageId` (a command that was not JSON, answered in JSON).
 * - Without one (raw topics, replies that are not JSON): the oldest entry on `topic`.
 */
export function matchReply(
  entries: readonly { readonly topic: string; readonly messageId: string | undefined }[],
  topic: string,
  replyId: string | undefined,
): number {
  let idless = -1;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (e === undefined || e.topic !== topic) continue;
    if (replyId === undefined || e.messageId === replyId) return i;
    if (idless < 0 && e.messageId === undefined) idless = i;
  }
  return idless;
}
