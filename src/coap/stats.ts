/**
 * Counters and gauges of the CoAP exchange layer, as plain numbers for telemetry to read
 * (no callbacks, no allocation when they change).
 *
 * @module
 */

/** Counters (only grow) and gauges (current sizes) of one {@link CoapEndpoint}. */
export class CoapStats {
  // --- messages ------------------------------------------------------------------------
  /** Datagrams handed to `receive`. */
  messagesIn = 0;
  /** New requests (not duplicates), CON and NON. */
  requests = 0;
  /** Responses sent for the first time (piggybacked, separate or NON; not resends). */
  responses = 0;
  /** Requests recognised as duplicates by peer and message ID (RFC 7252 §4.5). */
  duplicates = 0;
  /**
   * Whether duplicates are published to the duplicate channel's subscribers (events.ts). A
   * subscriber that wants them only at times turns this off and back on around those times
   * (telemetry: while a datagram is traced). Default on.
   */
  duplicateEvents = true;
  /** Cached datagrams (response or empty ACK) sent again for a duplicate. */
  duplicateResends = 0;
  /** Empty ACKs sent because the handler took longer than the ACK timeout (RFC 7252 §5.2.2). */
  emptyAcks = 0;
  /** Responses sent as separate CON messages (RFC 7252 §5.2.2). */
  separateResponses = 0;
  /** Retransmissions of separate CON responses (RFC 7252 §4.2). */
  retransmissions = 0;
  /** Separate CON responses given up after MAX_RETRANSMIT retransmissions. */
  giveUps = 0;
  /** Empty ACKs received for our separate CON responses. */
  acksReceived = 0;
  /** RSTs received for our separate CON responses (the peer lost interest). */
  resetsReceived = 0;
  /** RSTs sent (pings, rejected CON messages). */
  resets = 0;
  /** CoAP pings (Empty CON) answered with RST (RFC 7252 §4.3). */
  pings = 0;
  /** Datagrams that failed to decode or had a shape RFC 7252 §4 rejects. */
  malformed = 0;
  /** Well-formed messages with nothing to do (stray ACK/RST, unexpected responses). */
  ignored = 0;
  /** Requests with an unrecognised critical option (4.02 for CON, dropped for NON). */
  badOptions = 0;
  /** Handler exceptions, rejections and unencodable replies (answered 5.00). */
  handlerErrors = 0;
  /** Requests refused with 5.03 because too many exchanges or uploads are in flight. */
  overloaded = 0;
  /** Requests larger than maxPayload without Block1 (4.13). */
  tooLarge = 0;
  /** Responses dropped because the peer was closed while the handler ran. */
  orphanedResponses = 0;

  // --- block-wise (RFC 7959) ------------------------------------------------------------
  /** Intermediate Block1 blocks answered with 2.31 Continue. */
  block1Continues = 0;
  /** Block1 uploads completed and handed to the handler. */
  block1Completed = 0;
  /** Block1 requests answered 4.08 (out of order or unknown transfer). */
  block1Incomplete = 0;
  /** Block1 uploads refused with 4.13 (Size1 or reassembled size above maxPayload). */
  block1TooLarge = 0;
  /** Block1 uploads refused on their first block by the application's admission check. */
  block1Refused = 0;
  /** Block1 uploads dropped by expiry, caps or restart. */
  block1Dropped = 0;
  /** Responses split into Block2 blocks (first block sent). */
  block2Transfers = 0;
  /** Follow-up Block2 requests served from the body cache. */
  block2Served = 0;
  /** Follow-up Block2 requests for which no body was cached. */
  block2Misses = 0;
  /** Cached bodies dropped by caps (not by expiry). */
  block2Evicted = 0;
  /**
   * Responses whose smallest block still did not fit the peer's largest message (its options
   * alone are too long for the device's record size limit); the channel refuses them.
   */
  tooLargeForPeer = 0;
  /** Commands announced without their inline payload (option 2102) because it did not fit. */
  commandsNotInlined = 0;

  // --- gauges ---------------------------------------------------------------------------
  /** Peers with deduplication state (recent message IDs or exchanges in flight). */
  peers = 0;
  /** Completed exchanges remembered for deduplication. */
  dedupEntries = 0;
  /** Bytes of cached datagrams in the deduplication cache. */
  dedupBytes = 0;
  /** Deduplication entries evicted by the entry/byte caps before their lifetime ended. */
  dedupEvictions = 0;
  /** Requests whose handler has not settled yet. */
  exchangesInFlight = 0;
  /** Separate CON responses waiting for their ACK. */
  separateInFlight = 0;
  /** Block1 uploads being reassembled. */
  uploads = 0;
  /** Bytes held by Block1 uploads (buffers as allocated, keys, bookkeeping). */
  uploadBytes = 0;
  /** Response bodies cached for Block2 follow-ups. */
  bodies = 0;
  /** Bytes held by cached response bodies. */
  bodyBytes = 0;
}
