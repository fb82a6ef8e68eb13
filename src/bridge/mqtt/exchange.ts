/**
 * What the bridge pool and the per-device sessions do alike: check a topic before it can
 * hurt a connection, publish QoS 1 inside an `mqtt.publish` span (with the trace context in
 * the MQTT 5 user properties), and the request/reply exchange (subscribe the reply topic,
 * publish, wait for the reply with the same JSON id).
 */
import type { UserProperties } from './connection.js';
import { MqttBackendError, ReplyTimeoutError } from './errors.js';
import { normalizeMessageId, type ReplyMatcher, type ReplyWaiter } from './replies.js';
import type { Clock, Timed, TimerQueue } from '../../time/clock.js';
import type {
  ReplySubscriptions,
  SubscribingConnection,
  SubscriptionLease,
} from './subscriptions.js';
import {
  SpanKind,
  activeContext,
  contextFrom,
  endWithError,
  isTraced,
  startChild,
  traceparentOf,
  tracingOf,
  type Context,
  type Span,
} from '../../telemetry/trace.js';

/**
 * Characters a PUBLISH topic must not hold: the wildcards `+` and `#` (MQTT 5 §3.3.2.1,
 * 3.1.1 §3.3.2.1), U+0000 and lone surrogates (not well-formed UTF-8: MQTT 5 §1.5.4, 3.1.1
 * §1.5.3), the controls U+0001–U+001F and U+007F–U+009F and the Unicode non-characters, which
 * MQTT 5 §1.5.4 lets a receiver treat as malformed. Mosquitto 2.0 does: publishing a topic
 * with any of these (checked one by one with a raw client) gets the connection closed (3.1.1)
 * or a DISCONNECT 0x81 malformed packet / 0x82 protocol error (5); U+00A0, U+FEFF and U+FFFD
 * it accepts.
 */
const BROKER_REFUSES = /[+#\p{Cc}\p{Cs}\p{Noncharacter_Code_Point}]/u;

/**
 * A topic a broker would answer with a disconnect (see `BROKER_REFUSES`, or an empty or
 * over-long topic) would take a connection down, and with it every other publish in flight on
 * it; such a call is refused before anything is sent. EnOS topics from `parseTopicPath` never
 * trip this (their levels pass the identity key rules).
 */
export function checkTopic(topic: string): MqttBackendError | undefined {
  // a UTF-16 code unit is at most 3 UTF-8 bytes: a topic's bytes are counted only when it is
  // long enough to exceed 65 535 (the count was ~1.3 k instructions a call, twice a request)
  const bad =
    topic.length === 0 ||
    BROKER_REFUSES.test(topic) ||
    (topic.length > 0xffff / 3 && Buffer.byteLength(topic) > 0xffff);
  return bad
    ? new MqttBackendError('BACKEND_BAD_TOPIC', JSON.stringify(topic.slice(0, 64)))
    : undefined;
}

export function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

/**
 * How one backend sends a QoS 1 publish and resolves on its PUBACK; `device` names the device
 * it is for, when the backend tracks that (the bridge pool's suspects).
 */
export type SendFn = (
  topic: string,
  payload: Buffer,
  userProperties: UserProperties | undefined,
  device?: string,
) => Promise<void>;

/**
 * The last `{ traceparent }` user properties made, kept reachable. Such an object is the only
 * one of its hidden class (map), and V8 holds the maps that optimized code and feedback name
 * weakly: at 1 % sampling and a few uplinks per second none is alive at a mark-compact, the
 * map goes with it, and the next traced publish deoptimizes `tracedPublish`, which every
 * uplink runs, and TurboFan compiles it again (bench/history/tracing.md, "i11-trace3"). One kept
 * object (a trace id, no secret) keeps the map, as the span keeper does for the spans'.
 */
const kept: { properties: UserProperties | undefined } = { properties: undefined };

/** `{ traceparent: tp }`, the user properties of a traced publish that has none of its own. */
function traceProperties(tp: string): UserProperties {
  const properties = { traceparent: tp };
  kept.properties = properties;
  return properties;
}

/**
 * Publishes through `send` inside an `mqtt.publish` span when the active span records; the
 * trace context then travels as the MQTT 5 user property `traceparent` (3.1.1 connections
 * drop user properties).
 */
export function tracedPublish(
  send: SendFn,
  topic: string,
  payload: Buffer,
  userProperties: UserProperties | undefined,
  parent: Context = activeContext(),
  device?: string,
): Promise<void> {
  // attributes are built only for a publish that will be recorded
  const span = !isTraced(parent)
    ? undefined
    : startChild(
        'mqtt.publish',
        {
          'messaging.system': 'mqtt',
          'messaging.destination.name': topic,
          'messaging.operation.type': 'send',
          'messaging.message.body.size': payload.length,
          'messaging.mqtt.qos': 1,
        },
        SpanKind.PRODUCER,
        parent,
      );
  if (span === undefined) return send(topic, payload, userProperties, device);
  const tp = traceparentOf(span);
  const props =
    tp === undefined
      ? userProperties
      : userProperties === undefined
        ? traceProperties(tp)
        : { ...userProperties, traceparent: tp };
  return send(topic, payload, props, device).then(
    () => span.end(),
    (e: unknown) => {
      endWithError(span, e instanceof MqttBackendError ? e.code : 'error');
      throw e;
    },
  );
}

export interface RequestReplyOptions<C extends SubscribingConnection> {
  readonly replies: ReplyMatcher;
  readonly subscriptions: ReplySubscriptions<C>;
  readonly send: SendFn;
  /** Full topics (prefix included). */
  readonly topic: string;
  readonly replyTopic: string;
  readonly payload: Buffer;
  readonly messageId: string | number | undefined;
  readonly userProperties: UserProperties | undefined;
  /** The device the request is for (see {@link SendFn}). */
  readonly device?: string | undefined;
  readonly timeoutMs: number;
  /** Reads the time the reply deadline counts from (the clock of `deadlines`). */
  readonly clock: Clock;
  /**
   * Where the reply deadline waits: an object in this queue, no host timer and no closure
   * per request.
   */
  readonly deadlines: TimerQueue;
  /** The reply topic could not be subscribed (counted by the caller). */
  readonly onSubscribeFailed?: (e: unknown) => void;
  readonly onTimeout: () => void;
  /** The context the spans belong to (default: the active one when the call starts). */
  readonly parent?: Context;
}

/**
 * 1. Makes sure the connection receives `replyTopic` (SUBACK awaited) and registers the
 *    waiter before publishing, so an early reply is not missed.
 * 2. Publishes (QoS 1, PUBACK awaited) in an `mqtt.publish` span.
 * 3. Waits up to `timeoutMs` from the PUBACK, in an `mqtt.reply_wait` span, for the message
 *    on the reply topic whose JSON `id` equals `messageId` (undefined: raw exchanges, first
 *    come first served). A reply carrying the platform's trace context continues that trace.
 * @throws the publish errors; `BACKEND_SUBSCRIBE_FAILED`; ReplyTimeoutError
 */
export async function requestReply<C extends SubscribingConnection>(
  o: RequestReplyOptions<C>,
): Promise<Buffer> {
  // captured now: the spans below start after awaits
  const parent = o.parent ?? activeContext();
  const waiter = o.replies.add(o.replyTopic, normalizeMessageId(o.messageId));
  let lease: SubscriptionLease;
  try {
    lease = o.subscriptions.acquire(o.replyTopic);
  } catch (e: unknown) {
    o.replies.fail(waiter, toError(e));
    throw e;
  }
  try {
    // an established subscription needs no turn of the event loop
    if (!lease.subscribed) {
      try {
        await lease.ready;
      } catch (e: unknown) {
        o.onSubscribeFailed?.(e);
        throw e;
      }
    }
    await tracedPublish(o.send, o.topic, o.payload, o.userProperties, parent, o.device);
  } catch (e: unknown) {
    o.replies.fail(waiter, toError(e));
    o.subscriptions.release(lease);
    throw e;
  }
  const deadline = new ReplyDeadline(o, waiter);
  latest.deadline = deadline;
  o.deadlines.schedule(deadline, o.clock.now() + o.timeoutMs);
  const wait = !isTraced(parent)
    ? undefined
    : startChild(
        'mqtt.reply_wait',
        {
          'messaging.system': 'mqtt',
          'messaging.destination.name': o.replyTopic,
          'messaging.operation.type': 'receive',
        },
        SpanKind.INTERNAL,
        parent,
      );
  try {
    const reply = await waiter.promise;
    if (wait !== undefined) {
      continuePlatformTrace(waiter.traceparent, wait, o.replyTopic, parent);
      wait.end();
    }
    return reply;
  } catch (e: unknown) {
    endWithError(wait, e instanceof MqttBackendError ? e.code : 'error');
    throw e;
  } finally {
    o.deadlines.cancel(deadline);
    o.subscriptions.release(lease);
  }
}

/** No reply within the timeout: the waiter fails (counted once). */
function deadlineMissed(o: RequestReplyOptions<SubscribingConnection>, waiter: ReplyWaiter): void {
  if (o.replies.fail(waiter, new ReplyTimeoutError(o.replyTopic, o.timeoutMs))) o.onTimeout();
}

/**
 * The latest reply deadline, held until the next one: with no ReplyDeadline alive a full GC
 * frees the maps of its fields and deoptimizes the reply flow compiled against them
 * (NATIVE_BUFFER_MAP_HOLDER in src/dtls/record-cipher.ts says why).
 */
const latest: { deadline: ReplyDeadline | undefined } = { deadline: undefined };

/** A request's reply deadline as an entry of a {@link TimerQueue}. */
class ReplyDeadline implements Timed {
  dueAt = 0;
  heapIndex = -1;
  constructor(
    private readonly o: RequestReplyOptions<SubscribingConnection>,
    private readonly waiter: ReplyWaiter,
  ) {}

  onTimer(): void {
    deadlineMissed(this.o, this.waiter);
  }
}

/**
 * A reply that carries the platform's trace context continues that trace: a short
 * `mqtt.reply` span in the platform's trace, linked to our waiting span.
 */
function continuePlatformTrace(
  traceparent: string | undefined,
  wait: Span,
  topic: string,
  parent: Context,
): void {
  const tracing = tracingOf(parent);
  if (traceparent === undefined || tracing === undefined) return;
  tracing.tracer
    .startSpan(
      'mqtt.reply',
      {
        kind: SpanKind.CONSUMER,
        links: [{ context: wait.spanContext() }],
        attributes: {
          'messaging.system': 'mqtt',
          'messaging.destination.name': topic,
          'messaging.operation.type': 'receive',
        },
      },
      contextFrom(traceparent),
    )
    .end();
}
