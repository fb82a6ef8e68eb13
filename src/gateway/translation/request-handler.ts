/**
 * The CoAP request handler: maps a CoAP request to the bridge and the answer back, records
 * request metrics, and (when traced) wraps the exchange in a `coap.exchange` span.
 */
// Node's global `performance` is a getter: an imported binding is a constant
// (bench/history/records.md, "The record path, third pass")
import { performance } from 'node:perf_hooks';
import { authorize, type Router } from '../../bridge/router.js';
import type { BridgeResponse, Principal } from '../../bridge/types.js';
import { Code, OptionNumber, formatCode } from '../../coap/constants.js';
import type { CoapMessage } from '../../coap/codec.js';
import type {
  CoapAdmission,
  CoapPeer,
  CoapReply,
  CoapRequest,
  CoapRequestHandler,
} from '../../coap/endpoint.js';
import { decodeBlock, getOption } from '../../coap/options.js';
import type { RequestStats } from '../../telemetry/metrics.js';
import {
  SpanKind,
  SpanStatusCode,
  isTraced,
  startChild,
  withSpan,
  type Attributes,
  type Span,
  NO_TRACING,
  type Tracing,
} from '../../telemetry/trace.js';
import { MALFORMED_PATH, methodName, toBridgeRequest, toCoapReply } from './coap-adapter.js';

/** "2.04" etc., computed once per code. */
const CODE_LABELS: string[] = Array.from({ length: 256 }, (_, c) => formatCode(c));

function exchangeAttributes(
  m: CoapMessage,
  bodySize: number,
  principal: Principal | undefined,
  duplicate: boolean,
): Attributes {
  const method = methodName(m.code);
  const attrs: Attributes = {
    'coap.type': m.type === 0 ? 'CON' : 'NON',
    // a method the bridge does not name (FETCH, PATCH…) by its code, "0.05"
    'coap.method': method !== 'OTHER' ? method : (CODE_LABELS[m.code] ?? String(m.code)),
    'coap.message_id': m.messageId,
    'coap.token_length': m.token.length,
    'coap.duplicate': duplicate,
    'coap.request.body.size': bodySize,
  };
  const b1 = getOption(m, OptionNumber.BLOCK1);
  const b2 = getOption(m, OptionNumber.BLOCK2);
  if (b1 !== undefined) attrs['coap.block1.num'] = decodeBlock(b1)?.num ?? -1;
  if (b2 !== undefined) attrs['coap.block2.num'] = decodeBlock(b2)?.num ?? -1;
  if (principal !== undefined) {
    attrs['coap_edge.product_key'] = principal.productKey;
    attrs['coap_edge.device_key'] = principal.deviceKey;
  }
  return attrs;
}

/**
 * A duplicate request (same peer and message ID within the exchange lifetime) never reaches
 * the handler: the endpoint answers it from its cache (CON) or ignores it (NON). When traced it
 * still gets its own short `coap.exchange` span, with `coap.duplicate` true and
 * `coap.duplicate.resent` telling whether the cached answer went out again.
 */
export function duplicateTracer(
  tracing: Tracing,
): (peer: CoapPeer<Principal | undefined>, m: CoapMessage, resent: boolean) => void {
  return (peer, m, resent) => {
    if (tracing.on && isTraced()) traceDuplicate(peer, m, resent);
  };
}

function traceDuplicate(
  peer: CoapPeer<Principal | undefined>,
  m: CoapMessage,
  resent: boolean,
): void {
  const span = startChild(
    'coap.exchange',
    exchangeAttributes(m, m.payload.length, peer.principal, true),
    SpanKind.SERVER,
  );
  if (span === undefined) return;
  span.setAttribute('coap.duplicate.resent', resent);
  span.end();
}

export function createRequestHandler(
  router: Router,
  requests: RequestStats,
  tracing: Tracing = NO_TRACING,
): CoapRequestHandler<Principal | undefined> {
  const finish = (
    res: BridgeResponse,
    req: CoapRequest<Principal | undefined>,
    started: number,
    span: Span | undefined,
  ): CoapReply => {
    const reply = toCoapReply(res);
    const code = CODE_LABELS[reply.code] ?? String(reply.code);
    requests.record(
      methodName(req.method),
      res.topicClass ?? 'none',
      code,
      (performance.now() - started) / 1000,
    );
    if (span !== undefined) {
      span.setAttribute('coap.response_code', code);
      if (res.topicClass !== undefined) span.setAttribute('coap_edge.topic_class', res.topicClass);
      if (res.command !== undefined) span.setAttribute('coap_edge.command_attached', true);
      if (reply.code >> 5 === 5) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
    return reply;
  };
  return (req) => {
    const started = performance.now();
    // attributes are built only for an exchange that will be recorded
    const span =
      tracing.on && isTraced()
        ? startChild(
            'coap.exchange',
            exchangeAttributes(req.message, req.payload.length, req.peer.principal, false),
            SpanKind.SERVER,
          )
        : undefined;
    const breq = toBridgeRequest(req);
    if (breq === undefined) return finish(MALFORMED_PATH, req, started, span);
    const res =
      span === undefined ? router.handle(breq) : withSpan(span, () => router.handle(breq));
    return res instanceof Promise
      ? res.then((r) => finish(r, req, started, span))
      : finish(res, req, started, span);
  };
}

/**
 * Admission of Block1 uploads: the router's own authorization (topic path, the device's own
 * productKey/deviceKey, secureMode 3 only activates) applied to the first block, so a
 * request the router would refuse is refused before its body is reassembled, with the code
 * the router would answer.
 */
export function createUploadAdmission(): CoapAdmission<Principal | undefined> {
  return (req) => {
    // GET and DELETE carry no body in any route (activation is a GET): nothing to reassemble
    if (req.method === Code.GET || req.method === Code.DELETE) return Code.BAD_REQUEST;
    const breq = toBridgeRequest(req);
    // a Uri-Path that is not UTF-8 is refused on the first block as the whole request would be
    if (breq === undefined) return toCoapReply(MALFORMED_PATH).code;
    const auth = authorize(breq);
    return auth.ok ? undefined : toCoapReply(auth.response).code;
  };
}
