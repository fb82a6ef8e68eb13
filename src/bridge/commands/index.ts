/**
 * Commands for sleepy devices (docs/protocol.md, "Commands for sleepy devices"): the queue every pod can deliver from
 * (Redis, or memory on a single embedded instance), the bridge-mode intake that fills it from
 * the platform's command topics, and the helpers the router uses to put a command on a
 * response and to read a request's `ttd`.
 */
export { CommandError, isCommandError, type CommandErrorCode } from './errors.js';
export { type CommandStoreStats } from './stats.js';
export {
  decodeEntry,
  encodeEntry,
  deviceId,
  parseDeviceId,
  matchReply,
  messageIdOf,
} from './entry.js';
export { MemoryCommandStore, type MemoryCommandStoreOptions } from './memory-store.js';
export {
  RedisCommandStore,
  commandQueueKey,
  commandNotifyChannel,
  type RedisCommandStoreOptions,
  type CommandRedisState,
} from './redis-store.js';
export {
  CommandIntake,
  commandFilters,
  type CommandIntakeOptions,
  type CommandIntakeState,
  type CommandIntakeStats,
  type CommandFilterOptions,
} from './intake.js';
export { commandOptions, parseTtd } from './options.js';
