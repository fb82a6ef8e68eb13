/** Public types of the DTLS server: what the layer above plugs in and gets back. */
import { EVICTION_CLASSES } from './association-table.js';
import { publishDrop } from './events.js';
import { SharedStats } from './shared.js';

export interface PeerAddress {
  readonly address: string;
  readonly port: number;
}

/** What the server needs from the key lookup for one PSK identity. */
export type PskResolution<P> =
  | { readonly ok: true; readonly psk: Buffer; readonly principal: P }
  | {
      readonly ok: false;
      /** Alert to end the handshake with. */
      readonly alert: 'unknown_psk_identity' | 'handshake_failure' | 'internal_error';
      /** Short, stable reason for logs and metrics; never contains a secret. */
      readonly reason: string;
    };

export type CloseReason =
  | 'peer-close-notify'
  | 'peer-fatal-alert'
  | 'local-close'
  | 'idle'
  | 'evicted'
  | 'replaced'
  /** A newer handshake of the same peer identity completed, on another address. */
  | 'superseded'
  | 'sequence-exhausted'
  | 'server-shutdown'
  /**
   * Dropped from this pod's memory but alive in the shared store: another pod took it over,
   * the memory bound pushed it out, or the pod stopped (drain). The device goes on.
   */
  | 'offloaded';

export type HandshakeFailReason =
  | 'psk-rejected'
  | 'psk-lookup-error'
  | 'bad-record-mac'
  | 'bad-finished'
  | 'no-shared-cipher'
  | 'protocol-version'
  | 'protocol-error'
  | 'peer-alert'
  | 'timeout'
  | 'stalled'
  | 'replaced'
  /** Verified, but the table is full of associations a restricted one may not displace. */
  | 'association-limit'
  | 'server-shutdown';

export interface HandshakeFailure {
  readonly address: string;
  readonly port: number;
  readonly reason: HandshakeFailReason;
  /** More detail, e.g. the lookup's own reason ('unknown-device'); never a secret. */
  readonly detail: string | undefined;
  /** The PSK identity the client sent, if it got that far (identities are not secret). */
  readonly identity: string | undefined;
  /** Alert sent to the client, by name. */
  readonly alert: string | undefined;
}

export type DropReason =
  | 'malformed-record'
  | 'unknown-peer'
  /** A tls12_cid record whose Connection ID belongs to no association or handshake here. */
  | 'unknown-cid'
  | 'replay'
  | 'bad-mac'
  | 'unexpected-record'
  | 'bad-epoch'
  | 'malformed-handshake'
  | 'fragmented-client-hello'
  | 'duplicate-client-hello'
  | 'handshake-limit'
  | 'address-limit'
  | 'prefix-limit'
  | 'not-accepting'
  | 'buffer-full';

export const DROP_REASONS: readonly DropReason[] = [
  'malformed-record',
  'unknown-peer',
  'unknown-cid',
  'replay',
  'bad-mac',
  'unexpected-record',
  'bad-epoch',
  'malformed-handshake',
  'fragmented-client-hello',
  'duplicate-client-hello',
  'handshake-limit',
  'address-limit',
  'prefix-limit',
  'not-accepting',
  'buffer-full',
];

const HANDSHAKE_FAIL_REASONS: readonly HandshakeFailReason[] = [
  'psk-rejected',
  'psk-lookup-error',
  'bad-record-mac',
  'bad-finished',
  'no-shared-cipher',
  'protocol-version',
  'protocol-error',
  'peer-alert',
  'timeout',
  'stalled',
  'replaced',
  'association-limit',
  'server-shutdown',
];

const CLOSE_REASONS: readonly CloseReason[] = [
  'peer-close-notify',
  'peer-fatal-alert',
  'local-close',
  'idle',
  'evicted',
  'replaced',
  'superseded',
  'sequence-exhausted',
  'server-shutdown',
  'offloaded',
];

function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const k of keys) out[k] = 0;
  return out;
}

/**
 * Plain counters, incremented on the hot path at the cost of an add; telemetry reads them at
 * scrape time (observable instruments), so nothing here depends on a metrics SDK.
 */
export class DtlsStats {
  datagramsIn = 0;
  datagramsOut = 0;
  recordsIn = 0;
  applicationRecordsIn = 0;
  applicationRecordsOut = 0;
  helloVerifySent = 0;
  handshakesStarted = 0;
  handshakesCompleted = 0;
  retransmissions = 0;
  pskLookupsPending = 0;
  /** Protected records matched to their association by Connection ID / by address. */
  readonly demux = { cid: 0, address: 0 };
  /** Associations whose peer address moved to a new one (RFC 9146 §6). */
  peerAddressUpdates = 0;
  /**
   * CID associations taken off their address because another peer handshook from it (NAT
   * port reuse); kept under their CID until their device speaks again.
   */
  parked = 0;
  /** Datagrams not sent to a not yet validated new peer address (RFC 9853 §4 budget). */
  amplificationLimited = 0;
  /**
   * Records not sent because their plaintext exceeded the peer's record size limit (RFC 8449,
   * RFC 6066): the layer above sent a message too large for the device.
   */
  recordTooLarge = 0;
  /**
   * Whether drops are published to the drop channel's subscribers (events.ts). A subscriber
   * that wants them only at times turns this off and back on around those times: telemetry
   * wants the drops of traced datagrams only (gateway/datagram-tracing.ts), so with tracing on
   * no event is built for the drops of the datagrams it does not trace. Default on.
   */
  dropEvents = true;
  readonly drops = zeroes(DROP_REASONS);
  readonly handshakesFailed = zeroes(HANDSHAKE_FAIL_REASONS);
  readonly closed = zeroes(CLOSE_REASONS);
  /** Associations evicted to make room, by the rule that chose them. */
  readonly evicted = zeroes(EVICTION_CLASSES);
  /** Association sharing between pods (zero without a shared store). */
  readonly shared = new SharedStats();
  readonly completedBySuite: Record<string, number> = {};
  /**
   * Failed handshakes by the cipher suite our ServerHello announced (`none` when the
   * handshake failed before one went out), then by reason.
   */
  readonly failedBySuite: Record<string, Record<HandshakeFailReason, number>> = {
    none: zeroes(HANDSHAKE_FAIL_REASONS),
  };

  /** Counts a failed handshake by reason and by suite name (`none` before the ServerHello). */
  handshakeFailed(reason: HandshakeFailReason, suite: string): void {
    this.handshakesFailed[reason]++;
    (this.failedBySuite[suite] ??= zeroes(HANDSHAKE_FAIL_REASONS))[reason]++;
  }

  /** Counts a dropped record and publishes it (`coap-edge:dtls.drop`, events.ts) to listeners. */
  drop(reason: DropReason): void {
    this.drops[reason]++;
    publishDrop(this, reason);
  }
}
