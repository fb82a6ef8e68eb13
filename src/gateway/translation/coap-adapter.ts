/**
 * Maps CoAP requests to bridge requests and bridge outcomes back to CoAP responses
 * (codes per docs/protocol.md; Max-Age as a retry hint with 5.03).
 */
import type { CoapOption } from '../../coap/codec.js';
import { Code, ContentFormat, OptionNumber } from '../../coap/constants.js';
import type { CoapReply, CoapRequest } from '../../coap/endpoint.js';
import {
  contentFormat,
  encodeUint,
  getOption,
  uriPathStrict,
  uriQuery,
} from '../../coap/options.js';
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

/** The bridge's name of a CoAP method code (also the `method` label of the request metrics). */
export function methodName(code: number): Method {
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

const NO_QUERY: readonly string[] = Object.freeze([]);

/** The bridge request, or undefined when the Uri-Path is not well-formed UTF-8. */
export function toBridgeRequest(
  req: CoapRequest<Principal | undefined>,
): BridgeRequest | undefined {
  const m = req.message;
  const path = uriPathStrict(m);
  if (path === undefined) return undefined;
  return {
    principal: req.peer.principal,
    method: methodName(m.code),
    path,
    query: getOption(m, OptionNumber.URI_QUERY) === undefined ? NO_QUERY : uriQuery(m),
    payload: req.payload,
    contentFormat: contentFormat(m),
  };
}

const REPLIES = new Map<BridgeStatus, CoapReply>(
  (Object.entries(STATUS_CODES) as [BridgeStatus, number][]).map(([s, code]) => [s, { code }]),
);

/** The options of a reply that carries a payload in the default format (JSON) and nothing else. */
const JSON_OPTIONS: readonly CoapOption[] = Object.freeze([
  Object.freeze({ number: OptionNumber.CONTENT_FORMAT, value: encodeUint(ContentFormat.JSON) }),
]);

export function toCoapReply(res: BridgeResponse): CoapReply {
  const payload = res.payload;
  if (res.maxAge === undefined && res.command === undefined) {
    if (payload === undefined) {
      const shared = REPLIES.get(res.status);
      if (shared !== undefined) return shared;
    } else if (
      payload.length > 0 &&
      (res.contentFormat === undefined || res.contentFormat === ContentFormat.JSON)
    ) {
      // the platform's reply: the common answer with a body, no option array made for it
      return { code: STATUS_CODES[res.status], options: JSON_OPTIONS, payload };
    }
  }
  const options: CoapOption[] = [];
  if (payload !== undefined && payload.length > 0) {
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
  const code = STATUS_CODES[res.status];
  return payload !== undefined ? { code, options, payload } : { code, options };
}
