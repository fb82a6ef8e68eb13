/**
 * Routes a device request by its EnOS topic: checks that the device may use the topic, then
 * answers activation itself and hands uplinks to the message backend. Without a backend,
 * requests that need one get `unavailable` (5.03) with a retry hint; nothing else breaks.
 */
import { randomUUID } from 'node:crypto';
import { activationReply, parseTopicPath, type TopicInfo } from '../enos/index.js';
import type {
  ActivationService,
  BridgeRequest,
  BridgeResponse,
  MessageBackend,
  Principal,
} from './types.js';

export type Authorization =
  { ok: true; topic: TopicInfo } | { ok: false; response: BridgeResponse };

const NOT_FOUND: BridgeResponse = { status: 'not-found' };
const FORBIDDEN: BridgeResponse = { status: 'forbidden' };
const METHOD_NOT_ALLOWED: BridgeResponse = { status: 'method-not-allowed' };
const BAD_REQUEST: BridgeResponse = { status: 'bad-request' };
const CHANGED: BridgeResponse = { status: 'changed' };
const GATEWAY_TIMEOUT: BridgeResponse = { status: 'gateway-timeout' };
const INTERNAL_ERROR: BridgeResponse = { status: 'internal-error' };
const BAD_GATEWAY: BridgeResponse = { status: 'bad-gateway' };

/** Backend error codes meaning "not accepted now, try again later" (5.03 with Max-Age). */
const UNAVAILABLE_CODES: ReadonlySet<string> = new Set([
  'BACKEND_UNAVAILABLE',
  'BACKEND_CONNECTION_LOST',
  'BACKEND_PUBACK_TIMEOUT',
  'BACKEND_OVERLOADED',
  'BACKEND_SUBSCRIBE_FAILED',
  'BACKEND_CLOSED',
]);

/**
 * Topic and authorization rules (spec §2, §4): a secureMode-3 session may only activate;
 * every session may only use its own productKey/deviceKey.
 */
export function authorize(req: BridgeRequest): Authorization {
  const parsed = parseTopicPath(req.path);
  if (!parsed.ok) return { ok: false, response: NOT_FOUND };
  const topic = parsed.topic;
  const p: Principal | undefined = req.principal;
  if (p !== undefined) {
    if (topic.productKey !== p.productKey || topic.deviceKey !== p.deviceKey) {
      return { ok: false, response: FORBIDDEN };
    }
    // The product secret is shared by the whole product: such a session may only activate.
    if (p.secureMode === 3 && topic.class !== 'activate') return { ok: false, response: FORBIDDEN };
    // Activation hands out a device secret; only a product-secret session asks for it.
    if (p.secureMode === 2 && topic.class === 'activate') return { ok: false, response: FORBIDDEN };
  }
  return { ok: true, topic };
}

/** The JSON `id` of an EnOS request body, or undefined when the body is not such JSON. */
export function requestId(payload: Buffer): string | undefined {
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const id = (body as { id?: unknown }).id;
  if (typeof id === 'string' && id.length > 0) return id;
  if (typeof id === 'number' && Number.isFinite(id)) return String(id);
  return undefined;
}

export interface RouterOptions {
  readonly backend: MessageBackend | undefined;
  readonly activation: ActivationService | undefined;
  /** Max-Age (s) sent with 5.03. */
  readonly unavailableMaxAge: number;
}

export class Router {
  private readonly unavailable: BridgeResponse;

  constructor(private readonly opts: RouterOptions) {
    this.unavailable = { status: 'unavailable', maxAge: opts.unavailableMaxAge };
  }

  handle(req: BridgeRequest): BridgeResponse | Promise<BridgeResponse> {
    const auth = authorize(req);
    if (!auth.ok) return auth.response;
    const topic = auth.topic;
    switch (topic.class) {
      case 'activate':
        return req.method === 'GET' ? this.activate(topic) : METHOD_NOT_ALLOWED;
      case 'uplink':
      case 'sub-device-session':
      case 'uplink-raw':
        return req.method === 'POST' || req.method === 'PUT'
          ? this.uplink(topic, req)
          : METHOD_NOT_ALLOWED;
      case 'command-reply':
        return req.method === 'POST' || req.method === 'PUT'
          ? this.publish(topic, req)
          : METHOD_NOT_ALLOWED;
      case 'command-fetch':
        return NOT_FOUND;
    }
  }

  private async activate(topic: TopicInfo): Promise<BridgeResponse> {
    const service = this.opts.activation;
    if (service === undefined) return this.unavailable;
    const r = await service.activate(topic.productKey, topic.deviceKey);
    if (!r.ok) {
      if (r.reason === 'unavailable') return this.unavailable;
      return r.reason === 'unknown-product' ? NOT_FOUND : FORBIDDEN;
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

  private async uplink(topic: TopicInfo, req: BridgeRequest): Promise<BridgeResponse> {
    const backend = this.opts.backend;
    let id: string | undefined;
    if (!topic.raw) {
      id = requestId(req.payload);
      if (id === undefined) return BAD_REQUEST;
    }
    if (backend === undefined) return this.unavailable;
    try {
      if (topic.replyTopic === undefined) {
        await backend.publish(topic.mqttTopic, req.payload);
        return CHANGED;
      }
      const reply = await backend.request(topic.mqttTopic, req.payload, topic.replyTopic, id);
      return { status: 'changed', payload: reply, ...(topic.raw ? { contentFormat: 42 } : {}) };
    } catch (err) {
      return this.failure(err);
    }
  }

  private async publish(topic: TopicInfo, req: BridgeRequest): Promise<BridgeResponse> {
    if (!topic.raw && requestId(req.payload) === undefined) return BAD_REQUEST;
    const backend = this.opts.backend;
    if (backend === undefined) return this.unavailable;
    try {
      await backend.publish(topic.mqttTopic, req.payload);
      return CHANGED;
    } catch (err) {
      return this.failure(err);
    }
  }

  private failure(err: unknown): BridgeResponse {
    const e = err as { code?: unknown; reasonCode?: unknown } | null;
    const code = typeof e?.code === 'string' ? e.code : '';
    if (UNAVAILABLE_CODES.has(code)) return this.unavailable;
    if (code === 'BACKEND_REPLY_TIMEOUT') return GATEWAY_TIMEOUT;
    if (code === 'BACKEND_PUBLISH_REJECTED') {
      // MQTT 5 reason 0x97 "quota exceeded": the platform may take it later
      return e?.reasonCode === 0x97 ? this.unavailable : BAD_GATEWAY;
    }
    return INTERNAL_ERROR;
  }
}
