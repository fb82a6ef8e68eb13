/**
 * Routes a device request by its EnOS topic: checks that the device may use the topic,
 * answers activation and command fetches itself, sends uplinks to the backend their route
 * names (MQTT by default, or HTTP), and lets a waiting command ride on a successful answer
 * (docs/protocol.md: options 2100/2102), holding the request open for one when it asks with `ttd`.
 * Without a backend, requests that need one get `unavailable` (5.03) with a retry hint.
 */
import { randomUUID } from 'node:crypto';
import { activationReply, parseTopicPath, type TopicClass, type TopicInfo } from '../enos/index.js';
import { isCoapEdgeError, type CoapResponseCode } from '../errors/index.js';
import { commandOptions, parseTtd } from './commands/options.js';
import type { HttpBackend } from './http/backend.js';
import { NOT_OBJECT, isJsonObject, jsonObjectId } from './json-object.js';
import { LatencyHistogram } from './mqtt/stats.js';
import {
  NO_TRACING,
  SpanKind,
  contextFrom,
  recordingSpan,
  type Span,
  type Tracing,
} from '../telemetry/trace.js';
import type { RouteTable } from './routes.js';
import { TtdGate } from './ttd-gate.js';
import type {
  ActivationService,
  BridgeRequest,
  BridgeResponse,
  BridgeStatus,
  CommandStore,
  DeviceMessageBackend,
  PresenceSink,
  Principal,
  QueuedCommand,
} from './types.js';

export type Authorization =
  { ok: true; topic: TopicInfo } | { ok: false; response: BridgeResponse };

const NOT_FOUND: BridgeResponse = { status: 'not-found' };
const FORBIDDEN: BridgeResponse = { status: 'forbidden' };
const UNAUTHORIZED: BridgeResponse = { status: 'unauthorized' };
const METHOD_NOT_ALLOWED: BridgeResponse = { status: 'method-not-allowed' };
const BAD_REQUEST: BridgeResponse = { status: 'bad-request' };
const INTERNAL_ERROR: BridgeResponse = { status: 'internal-error' };
/** The refusals of {@link authorize}, one shared object each (nothing allocated per refusal). */
const REFUSED_NOT_FOUND: Authorization = Object.freeze({ ok: false, response: NOT_FOUND });
const REFUSED_UNAUTHORIZED: Authorization = Object.freeze({ ok: false, response: UNAUTHORIZED });
const REFUSED_FORBIDDEN: Authorization = Object.freeze({ ok: false, response: FORBIDDEN });
const OCTET_STREAM = 42;
const JSON_FORMAT = 50;

/** The bridge status of each CoAP answer an error may carry (docs/errors.md). */
const STATUS_OF: { readonly [C in CoapResponseCode]: BridgeStatus } = {
  '4.00': 'bad-request',
  '4.01': 'unauthorized',
  '4.03': 'forbidden',
  '4.04': 'not-found',
  '4.05': 'method-not-allowed',
  '4.13': 'too-large',
  '4.15': 'unsupported-content-format',
  '4.29': 'too-many-requests',
  '5.00': 'internal-error',
  '5.02': 'bad-gateway',
  '5.03': 'unavailable',
  '5.04': 'gateway-timeout',
};

/**
 * Topic and authorization rules (docs/protocol.md): a secureMode-3 session may only activate;
 * every session may only use its own productKey/deviceKey.
 */
export function authorize(req: BridgeRequest): Authorization {
  const parsed = parseTopicPath(req.path);
  if (!parsed.ok) return REFUSED_NOT_FOUND;
  const topic = parsed.topic;
  const p: Principal | undefined = req.principal;
  // Activation hands out a device secret: never without a product-secret DTLS session (the
  // plain development port has no principal at all).
  if (p === undefined && topic.class === 'activate') return REFUSED_UNAUTHORIZED;
  if (p !== undefined) {
    if (topic.productKey !== p.productKey || topic.deviceKey !== p.deviceKey) {
      return REFUSED_FORBIDDEN;
    }
    // The product secret is shared by the whole product: such a session may only activate.
    if (p.secureMode === 3 && topic.class !== 'activate') return REFUSED_FORBIDDEN;
    // Activation hands out a device secret; only a product-secret session asks for it.
    if (p.secureMode === 2 && topic.class === 'activate') return REFUSED_FORBIDDEN;
  }
  return { ok: true, topic };
}

/** A body's `id` as the reply is matched by: a non-empty string, or a number's decimal string. */
function idOf(id: string | number | undefined): string | undefined {
  if (typeof id === 'string' && id.length > 0) return id;
  if (typeof id === 'number' && Number.isFinite(id)) return String(id);
  return undefined;
}

export interface RouterOptions {
  /** Continues a platform's trace when a command that carries one is delivered (default: off). */
  readonly tracing?: Tracing;
  /** MQTT, bridge or per-device; undefined: none configured. */
  readonly mqtt: DeviceMessageBackend | undefined;
  readonly http: Pick<HttpBackend, 'call'> | undefined;
  readonly routes: RouteTable | undefined;
  readonly activation: ActivationService | undefined;
  readonly commands: CommandStore | undefined;
  readonly presence: PresenceSink | undefined;
  /** Max-Age (s) sent with 5.03. */
  readonly unavailableMaxAge: number;
  /** Largest command payload carried inline in option 2102. */
  readonly maxInlineCommand: number;
  /** Cap on ttd (s). */
  readonly maxTtd: number;
  /** Requests of one device held open for a command (ttd) at once (setting of that name). */
  readonly maxTtdWaitersPerDevice: number;
  /** Requests held open for a command (ttd) at once, all devices (setting of that name). */
  readonly maxTtdWaiters: number;
}

/** Age of a command when handed to its device: 1 s to 2 days (commands wait up to 48 h). */
const COMMAND_AGE_BOUNDS_MS = [1e3, 1e4, 6e4, 3e5, 9e5, 36e5, 216e5, 864e5, 1728e5];

export class Router {
  private readonly unavailable: BridgeResponse;
  /**
   * The answer to a `ttd` request beyond the long-poll bounds: 4.29 Too Many Requests
   * (RFC 8516) with Max-Age, before anything is forwarded. A device that does not know 4.29
   * reads it as a 4.xx client error, which it must not repeat unchanged at once; repeating it
   * after Max-Age, or without `ttd`, works. Nothing was published, so repeating it is safe.
   */
  private readonly tooManyWaiters: BridgeResponse;
  /** ttd long-polls admitted now, and those refused (read by telemetry). */
  readonly ttd: TtdGate;
  /** How long commands waited before their device got them (read by telemetry). */
  readonly commandAge = new LatencyHistogram(COMMAND_AGE_BOUNDS_MS);

  constructor(private readonly opts: RouterOptions) {
    this.unavailable = { status: 'unavailable', maxAge: opts.unavailableMaxAge };
    this.tooManyWaiters = { status: 'too-many-requests', maxAge: opts.unavailableMaxAge };
    this.ttd = new TtdGate(opts.maxTtdWaitersPerDevice, opts.maxTtdWaiters);
  }

  /**
   * The answer to one request, with its topic class (for metrics). Synchronous where nothing
   * waits; the common case (an uplink forwarded to MQTT, no `ttd`, no command waiting) is one
   * async frame awaiting the backend, with nothing chained after it here.
   */
  handle(req: BridgeRequest): BridgeResponse | Promise<BridgeResponse> {
    const auth = authorize(req);
    if (!auth.ok) return auth.response;
    const topic = auth.topic;
    switch (topic.class) {
      case 'activate':
        return req.method === 'GET'
          ? this.activate(topic).then(classOf(topic.class).set)
          : classed(METHOD_NOT_ALLOWED, topic.class);
      case 'command-fetch':
        return req.method === 'GET'
          ? this.fetchCommand(topic, req).then(classOf(topic.class).set)
          : classed(METHOD_NOT_ALLOWED, topic.class);
      case 'uplink':
      case 'sub-device-session':
      case 'uplink-raw':
      case 'command-reply':
        return req.method === 'POST' || req.method === 'PUT'
          ? this.forward(topic, req)
          : classed(METHOD_NOT_ALLOWED, topic.class);
    }
  }

  private async activate(topic: TopicInfo): Promise<BridgeResponse> {
    const service = this.opts.activation;
    if (service === undefined) return this.unavailable;
    const r = await service.activate(topic.productKey, topic.deviceKey);
    if (!r.ok) {
      if (r.reason === 'unavailable') return this.unavailable;
      // already activated (or connected with its own secret), disabled: 4.03, no secret
      return r.reason === 'unknown-product' || r.reason === 'unknown-device'
        ? NOT_FOUND
        : FORBIDDEN;
    }
    const body = activationReply({
      id: randomUUID(),
      assetId: r.assetId,
      productKey: topic.productKey,
      deviceKey: topic.deviceKey,
      deviceSecret: r.deviceSecret,
    });
    return { status: 'content', payload: Buffer.from(JSON.stringify(body)) };
  }

  /** `GET /topic{commandTopic}`: the oldest command on that topic; 2100 again while more wait. */
  private async fetchCommand(topic: TopicInfo, req: BridgeRequest): Promise<BridgeResponse> {
    const store = this.opts.commands;
    if (store === undefined) return NOT_FOUND;
    const device = principalFor(req, topic);
    const exchange = recordingSpan(); // before any await (the context is synchronous)
    let got;
    try {
      got = await store.fetch(device, topic.mqttTopic);
    } catch (err) {
      return this.failure(err, this.unavailable);
    }
    const cmd = got.command;
    if (cmd === undefined) return NOT_FOUND;
    this.delivered(cmd, exchange);
    this.opts.presence?.seen(device);
    const res: BridgeResponse = {
      status: 'content',
      payload: cmd.payload,
      contentFormat: topic.raw ? OCTET_STREAM : JSON_FORMAT,
    };
    if (got.count <= 1) return res;
    // more wait: name the next one (it may be this one again until the device replies)
    const next = await this.peek(device);
    return next === undefined
      ? res
      : withCommand(res, { topic: next.topic, payload: undefined }, topic.class);
  }

  /**
   * A request with `ttd` takes a long-poll slot before it is forwarded (see {@link TtdGate});
   * without one it is answered 4.29 and not forwarded. Every answer carries the topic class.
   */
  private forward(topic: TopicInfo, req: BridgeRequest): BridgeResponse | Promise<BridgeResponse> {
    const exchange = recordingSpan(); // before any await (the context is synchronous)
    const device = principalFor(req, topic);
    const ttd =
      this.opts.commands === undefined || req.query.length === 0
        ? undefined
        : parseTtd(req.query, this.opts.maxTtd);
    const waits = ttd !== undefined && ttd > 0;
    if (waits && this.ttd.acquire(device) !== undefined) {
      return classed(this.tooManyWaiters, topic.class);
    }
    // Only a request with a reply needs a field of its body (the id, read from the bytes); for
    // the others it is enough to know that the body is a JSON object, without building it.
    let id: string | undefined;
    let wellFormed = true;
    if (!topic.raw) {
      if (topic.replyTopic === undefined) wellFormed = isJsonObject(req.payload);
      else {
        const found = jsonObjectId(req.payload);
        wellFormed = found !== NOT_OBJECT;
        if (found !== NOT_OBJECT) id = idOf(found);
      }
    }
    if (!wellFormed) {
      if (waits) this.ttd.release(device);
      return classed(BAD_REQUEST, topic.class);
    }
    if (!waits) return this.forwardAndWait(topic, req, device, id, exchange, 0);
    return this.forwardAndWait(topic, req, device, id, exchange, ttd).finally(() =>
      this.ttd.release(device),
    );
  }

  /**
   * Forwards to the route's backend, then lets a waiting command ride on a successful answer
   * (waiting up to `ttd` s for one). The look for a command starts before the backend is
   * called; a store that knows the answer without I/O (`peekNow`) costs no promise.
   */
  private async forwardAndWait(
    topic: TopicInfo,
    req: BridgeRequest,
    device: Principal,
    id: string | undefined,
    exchange: Span | undefined,
    ttd: number,
  ): Promise<BridgeResponse> {
    const cls = topic.class;
    // Look for a waiting command while the backend works (one Redis round trip, in parallel).
    const store = this.opts.commands;
    let known: QueuedCommand | undefined;
    let pending: Promise<QueuedCommand | undefined> | undefined;
    if (store !== undefined) {
      const now = store.peekNow?.(device);
      if (now === undefined) pending = this.peek(device);
      else known = now.head;
    }
    const route = this.opts.routes?.match(topic.mqttTopic, device);
    let res: BridgeResponse;
    if (route?.backend === 'http') {
      const http = this.opts.http;
      res =
        http === undefined
          ? this.unavailable
          : await http.call(route, {
              device,
              topic: topic.mqttTopic,
              payload: req.payload,
              contentFormat: req.contentFormat,
            });
    } else {
      const backend = this.opts.mqtt;
      const mqttTopic =
        route !== undefined ? route.renderTopic(topic.mqttTopic, device) : topic.mqttTopic;
      if (backend === undefined) res = this.unavailable;
      else if (topic.replyTopic === undefined) {
        try {
          await backend.publish(device, mqttTopic, req.payload);
          res = classOf(cls).changed;
        } catch (err) {
          res = this.failure(err);
        }
      } else if (!topic.raw && id === undefined) {
        res = BAD_REQUEST; // a reply is matched by the JSON id
      } else {
        const replyTopic = mqttTopic === topic.mqttTopic ? topic.replyTopic : `${mqttTopic}_reply`;
        try {
          const reply = await backend.request(device, mqttTopic, req.payload, replyTopic, id);
          res = {
            status: 'changed',
            payload: reply,
            contentFormat: topic.raw ? OCTET_STREAM : JSON_FORMAT,
            topicClass: cls,
          };
        } catch (err) {
          res = this.failure(err);
        }
      }
    }
    if (!isSuccess(res)) {
      void pending?.catch(() => undefined);
      return classed(res, cls);
    }
    if (cls === 'command-reply' && store !== undefined && topic.commandTopic !== undefined) {
      // the device answered the command: now it may leave the queue (without a promise when
      // the store can say at once)
      const acked = store.acknowledgeNow?.(device, topic.commandTopic, req.payload);
      if (acked === undefined) {
        await store.acknowledge(device, topic.commandTopic, req.payload).catch(() => false);
      }
    }
    if (req.principal !== undefined) this.opts.presence?.seen(device);
    if (store === undefined) return classed(res, cls);
    let cmd = pending === undefined ? known : await pending;
    if (cls === 'command-reply' && cmd !== undefined) cmd = await this.peek(device);
    if (cmd === undefined && ttd > 0) {
      cmd = await store.waitFor(device, ttd * 1000).catch(() => undefined);
    }
    if (cmd === undefined) return classed(res, cls);
    this.delivered(cmd, exchange);
    return withCommand(res, commandOptions(cmd, this.opts.maxInlineCommand), cls);
  }

  /**
   * A command handed to its device: its age is measured, and a command the platform sent
   * with a trace context continues that trace (a `command.deliver` span in it, linked to
   * this request's span).
   */
  private delivered(cmd: QueuedCommand, current: Span | undefined): void {
    this.commandAge.observe(Date.now() - cmd.enqueuedAt);
    const tracing = this.opts.tracing ?? NO_TRACING;
    if (cmd.traceparent === undefined || !tracing.on) return;
    tracing.tracer
      .startSpan(
        'command.deliver',
        {
          kind: SpanKind.CONSUMER,
          links: current !== undefined ? [{ context: current.spanContext() }] : [],
          attributes: {
            'messaging.system': 'mqtt',
            'messaging.destination.name': cmd.topic,
            'messaging.operation.type': 'process',
          },
        },
        contextFrom(cmd.traceparent),
      )
      .end();
  }

  private async peek(device: Principal): Promise<QueuedCommand | undefined> {
    const store = this.opts.commands;
    if (store === undefined) return undefined;
    try {
      return (await store.peek(device)).head;
    } catch {
      return undefined; // commands unavailable: the request itself is still answered
    }
  }

  /**
   * The answer to a request that failed with `err`: the CoAP reaction the error carries
   * (docs/errors.md), or `fallback` for an error without one.
   */
  private failure(err: unknown, fallback: BridgeResponse = INTERNAL_ERROR): BridgeResponse {
    const reaction = isCoapEdgeError(err) ? err.coap : undefined;
    if (reaction === undefined) return fallback;
    const status = STATUS_OF[reaction.code];
    const maxAge = reaction.maxAge === 'configured' ? this.opts.unavailableMaxAge : reaction.maxAge;
    return maxAge === undefined ? { status } : { status, maxAge };
  }
}

function isSuccess(res: BridgeResponse): boolean {
  return res.status === 'changed' || res.status === 'content';
}

/**
 * The device a request acts for. On the unauthenticated development port there is no
 * principal: the topic's keys stand in, with a one-hour lifetime.
 */
function principalFor(req: BridgeRequest, topic: TopicInfo): Principal {
  return (
    req.principal ?? {
      productKey: topic.productKey,
      deviceKey: topic.deviceKey,
      secureMode: 2,
      lifetime: 3600,
      assetId: undefined,
      sessionId: 'plain-coap',
    }
  );
}

/**
 * `res` with the topic class `cls`: `res` itself when it has it, else a copy (the fields
 * named one by one: no object spread on the request path).
 */
function classed(res: BridgeResponse, cls: TopicClass): BridgeResponse {
  return res.topicClass === cls ? res : withCommand(res, res.command, cls);
}

/** A copy of `res` with `command` (when defined) and the topic class `cls`. */
function withCommand(
  res: BridgeResponse,
  command: BridgeResponse['command'],
  cls: TopicClass,
): BridgeResponse {
  const out: {
    status: BridgeStatus;
    payload?: Buffer;
    contentFormat?: number;
    maxAge?: number;
    command?: BridgeResponse['command'];
    topicClass?: string;
  } = { status: res.status };
  if (res.payload !== undefined) out.payload = res.payload;
  if (res.contentFormat !== undefined) out.contentFormat = res.contentFormat;
  if (res.maxAge !== undefined) out.maxAge = res.maxAge;
  if (command !== undefined) out.command = command;
  out.topicClass = cls;
  return out;
}

/** Per topic class, made once: its bare 2.04 and the `then` callback that sets the class. */
interface ClassAnswers {
  readonly changed: BridgeResponse;
  readonly set: (res: BridgeResponse) => BridgeResponse;
}

const CLASS_ANSWERS = new Map<TopicClass, ClassAnswers>();

function classOf(cls: TopicClass): ClassAnswers {
  let a = CLASS_ANSWERS.get(cls);
  if (a === undefined) {
    a = {
      changed: Object.freeze({ status: 'changed', topicClass: cls }),
      set: (res) => classed(res, cls),
    };
    CLASS_ANSWERS.set(cls, a);
  }
  return a;
}
