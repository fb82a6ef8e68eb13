/**
 * What the CoAP exchange layer tells whoever listens, through `node:diagnostics_channel`
 * (docs/design.md, "Events, not diffs"): a duplicate request (RFC 7252 §4.5). Telemetry
 * subscribes; the layer knows nothing of it. A message is built only when the channel has a
 * subscriber. `source` is the {@link CoapStats} of the endpoint it happened in (channels are
 * process-wide, a process may run several endpoints).
 *
 * @module
 */
import { channel } from 'node:diagnostics_channel';
import type { CoapStats } from './stats.js';

/** `coap-edge:coap.duplicate`: a request recognised as a duplicate by peer and message ID. */
export const COAP_DUPLICATE_CHANNEL = 'coap-edge:coap.duplicate';

export interface CoapDuplicateEvent {
  readonly source: CoapStats;
  readonly messageId: number;
  /** Whether the cached answer went out again (CON with an answer or empty ACK cached). */
  readonly resent: boolean;
}

export const coapDuplicateChannel = channel(COAP_DUPLICATE_CHANNEL);

/**
 * Publishes a duplicate when somebody listens and the source publishes duplicates now
 * (`CoapStats.duplicateEvents`); the caller counted it already.
 */
export function publishDuplicate(source: CoapStats, messageId: number, resent: boolean): void {
  if (!source.duplicateEvents || !coapDuplicateChannel.hasSubscribers) return;
  const event: CoapDuplicateEvent = { source, messageId, resent };
  coapDuplicateChannel.publish(event);
}
