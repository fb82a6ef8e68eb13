/**
 * Maps CoAP requests to bridge requests and bridge outcomes back to CoAP responses
 * (codes per docs/protocol.md; Max-Age as a retry hint with 5.03).
 */
import type { CoapOption } from '../../coap/codec.js';
import { Code, ContentFormat, OptionNumber } from '../../coap/constants.js';
import type { CoapReply, CoapRequest } from '../../coap/endpoint.js';
import { contentFormat, encodeUint, uriPathStrict, uriQuery } from '../../coap/options.js';
import type {
  BridgeRequest,
  BridgeResponse,
  BridgeStatus,
  Method,
  Principal,
} from '../../bridge/types.js';

const STATUS_CODES: Record<BridgeStatus, number> = {
  changed: Code.CHANGED,
  content: Code.CONTENT,
  'bad-request': Code.BAD_REQUEST,
  unauthorized: Code.UNAUTHORIZED,
  forbidden: Code.FORBIDDEN,
  'not-found': Code.NOT_FOUND,
  'method-not-allowed': Code.METHOD_NOT_ALLOWED,
  'too-large': Code.REQUEST_ENTITY_TOO_LARGE,
  'unsupported-content-format': Code.UNSUPPORTED_CONTENT_FORMAT,
  'too-many-requests': Code.TOO_MANY_REQUESTS,
  'internal-error': Code.INTERNAL_SERVER_ERROR,
  'bad-gateway': Code.BAD_GATEWAY,
  unavailable: Code.SERVICE_UNAVAILABLE,
  'gateway-timeout': Code.GATEWAY_TIMEOUT,
};

function method(code: number): Method {
  switch (code) {
    case Code.GET:
      return 'GET';
    case Code.POST:
      return 'POST';
    case Code.PUT:
      return 'PUT';
    case Code.DELETE:
      return 'DELETE';
    default:
      return 'OTHER';
  }
}

/**
 * The answer to a request whose Uri-Path is not well-formed UTF-8: 4.00, counted in the request
 * metrics under the topic class `malformed-path`. The path is not rewritten (U+FFFD) and
 * routed: a replacement character would reach the platform as a topic the device never sent.
 */
export const MALFORMED_PATH: BridgeResponse = {
  status: 'bad-request',
  topicClass: 'malformed-path',
};

/** The bridge request, or undefined when the Uri-Path is not well-formed UTF-8. */
export function toBridgeRequest(
  req: CoapRequest<Principal | undefined>,
): BridgeRequest | undefined {
  const m = req.message;
  const path = uriPathStrict(m);
  if (path === undefined) return undefined;
  return {
    principal: req.peer.principal,
    method: method(m.code),
    path,
    query: uriQuery(m),
    payload: req.payload,
    contentFormat: contentFormat(m),
  };
}

const REPLIES = new Map<BridgeStatus, CoapReply>(
  (Object.entries(STATUS_CODES) as [BridgeStatus, number][]).map(([s, code]) => [s, { code }]),
);

export function toCoapReply(res: BridgeResponse): CoapReply {
  if (res.payload === undefined && res.maxAge === undefined && res.command === undefined) {
    const shared = REPLIES.get(res.status);
    if (shared !== undefined) return shared;
  }
  const options: CoapOption[] = [];
  if (res.payload !== undefined && res.payload.length > 0) {
    options.push({
      number: OptionNumber.CONTENT_FORMAT,
      value: encodeUint(res.contentFormat ?? ContentFormat.JSON),
    });
  }
  if (res.maxAge !== undefined) {
    options.push({ number: OptionNumber.MAX_AGE, value: encodeUint(res.maxAge) });
  }
  if (res.command !== undefined) {
    // docs/protocol.md: 2100 = /topic{commandTopic}; 2102 = the command itself when it fits
    options.push({
      number: OptionNumber.COMMAND_TOPIC,
      value: Buffer.from(`/topic${res.command.topic}`, 'utf8'),
    });
    if (res.command.payload !== undefined) {
      options.push({ number: OptionNumber.COMMAND_PAYLOAD, value: res.command.payload });
    }
  }
  return {
    code: STATUS_CODES[res.status],
    options,
    ...(res.payload !== undefined ? { payload: res.payload } : {}),
  };
}
