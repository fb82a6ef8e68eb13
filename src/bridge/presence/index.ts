/** Device presence: tracker, stores, publisher. See `tracker.ts` for the semantics. */
export { PresenceTracker, type PresenceTrackerOptions, type PresenceStats } from './tracker.js';
export { MemoryPresenceStore } from './memory-store.js';
export { RedisPresenceStore, type RedisPresenceStoreOptions } from './redis-store.js';
export {
  presencePublisher,
  presenceEventJson,
  renderPresenceTopic,
  checkTopicTemplate,
  type PresencePublisher,
  type PresencePublisherOptions,
  type PresencePublisherStats,
  type SinkStats,
} from './publisher.js';
export {
  type PresenceErrorCode,
  type PresenceEvent,
  type PresenceStatus,
  type PresenceReason,
  type OfflineReason,
  type SessionCloseReason,
  type PresenceStore,
  type PresenceEntry,
  type TouchRequest,
  type TouchResult,
  type CloseResult,
  type LapsedDevice,
  type PresenceLogger,
} from './types.js';
