/**
 * What the DTLS layer tells whoever listens, through `node:diagnostics_channel` (docs/design.md,
 * "Events, not diffs"): a dropped record and a handshake's outcome. The layer knows nothing of
 * who listens (telemetry subscribes: datagram spans get events). A message is built only when
 * the channel has a subscriber, so with nobody listening an event costs one property read.
 *
 * Channels are process-wide (one per name), while a process may run several servers: every
 * message carries `source`, the {@link DtlsStats} of the server it happened in, so a
 * subscriber can keep to its own server's events.
 *
 * @module
 */
import { channel } from 'node:diagnostics_channel';
import type { DropReason, DtlsStats, HandshakeFailReason } from './types.js';

/** `coap-edge:dtls.drop`: a record (or datagram) was dropped, with the reason it is counted under. */
export const DTLS_DROP_CHANNEL = 'coap-edge:dtls.drop';
/** `coap-edge:dtls.handshake`: a handshake ended, established or failed. */
export const DTLS_HANDSHAKE_CHANNEL = 'coap-edge:dtls.handshake';

export interface DtlsDropEvent {
  readonly source: DtlsStats;
  readonly reason: DropReason;
}

export type DtlsHandshakeEvent =
  | { readonly source: DtlsStats; readonly outcome: 'established'; readonly suite: string }
  | {
      readonly source: DtlsStats;
      readonly outcome: 'failed';
      readonly reason: HandshakeFailReason;
      /** The suite our ServerHello announced, `none` when the handshake failed before it. */
      readonly suite: string;
    };

export const dtlsDropChannel = channel(DTLS_DROP_CHANNEL);
const dtlsHandshakeChannel = channel(DTLS_HANDSHAKE_CHANNEL);

/**
 * Publishes a drop when somebody listens and the source publishes drops now
 * (`DtlsStats.dropEvents`); the caller counted it already.
 */
export function publishDrop(source: DtlsStats, reason: DropReason): void {
  if (!source.dropEvents || !dtlsDropChannel.hasSubscribers) return;
  const event: DtlsDropEvent = { source, reason };
  dtlsDropChannel.publish(event);
}

/** Publishes a handshake's outcome when somebody listens. */
export function publishHandshake(
  source: DtlsStats,
  suite: string,
  reason: HandshakeFailReason | undefined,
): void {
  if (!dtlsHandshakeChannel.hasSubscribers) return;
  const event: DtlsHandshakeEvent =
    reason === undefined
      ? { source, outcome: 'established', suite }
      : { source, outcome: 'failed', reason, suite };
  dtlsHandshakeChannel.publish(event);
}
