/**
 * Routes a device request by its EnOS topic: checks that the device may use the topic,
 * then hands it to the backend. Without a backend, requests that need one get
 * `unavailable` (5.03) with a retry hint; nothing else breaks.
 */
import { parseTopicPath, type TopicInfo } from '../enos/index.js';
import type { BridgeRequest, BridgeResponse, Principal } from './types.js';

/** Seconds a device is told to wait before retrying when no backend can take its request. */
export const UNAVAILABLE_MAX_AGE = 30;

const NOT_FOUND: BridgeResponse = { status: 'not-found' };
const FORBIDDEN: BridgeResponse = { status: 'forbidden' };
const UNAVAILABLE: BridgeResponse = { status: 'unavailable', maxAge: UNAVAILABLE_MAX_AGE };

export type Authorization =
  { ok: true; topic: TopicInfo } | { ok: false; response: BridgeResponse };

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
    if (p.secureMode === 3 && topic.class !== 'activate') return { ok: false, response: FORBIDDEN };
  }
  return { ok: true, topic };
}

export class Router {
  handle(req: BridgeRequest): BridgeResponse | Promise<BridgeResponse> {
    const auth = authorize(req);
    if (!auth.ok) return auth.response;
    return UNAVAILABLE;
  }
}
