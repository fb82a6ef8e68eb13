/**
 * The Lua scripts of the Redis command store. Each runs atomically on one key, the device's
 * queue `{prefix}:cmd:{pk/dk}` (a list of JSON entries, oldest first), so two pods never
 * both take the same decision: enqueue-if-not-full, acknowledge = remove the matching entry
 * (exactly one of two concurrent acknowledgements of a command removes it). Every script
 * first drops expired and unreadable entries (`purge`), so they are dropped on read.
 *
 * Clock: `now` is the calling pod's clock (ms). A few seconds of skew between pods move the
 * expiry of a 48 h queue by as much; each entry is judged by its own `enqueuedAt`.
 *
 * Scripts are sent by EVALSHA, falling back to EVAL when Redis does not know them yet
 * (NOSCRIPT: first use, after a restart, a failover or SCRIPT FLUSH). The one key is the
 * only key a script touches, so it runs on a Redis Cluster too; the notification channel
 * is not a key (a cluster forwards PUBLISH to every node).
 */
import { createHash } from 'node:crypto';
import { writeDurably, type Durability, type RedisClient } from '../../redis/client.js';

/**
 * Every script answers `{result, count, expired, bad[, entry]}`: its own result, how many
 * entries wait after it ran, how many it dropped as expired or unreadable, and an entry.
 *
 * Drops expired and unreadable entries; returns the live ones (raw text, topic, message id or
 * false) and how many were dropped for each reason.
 */
const PURGE = `
local function purge(key, now, expiry)
  local items = redis.call('LRANGE', key, 0, -1)
  local live = {}
  local expired, bad = 0, 0
  for i = 1, #items do
    local raw = items[i]
    local ok, e = pcall(cjson.decode, raw)
    if not ok or type(e) ~= 'table' or type(e.id) ~= 'string' or type(e.topic) ~= 'string'
        or type(e.payload) ~= 'string' or type(e.enqueuedAt) ~= 'number' then
      redis.call('LREM', key, 1, raw)
      bad = bad + 1
    elseif now - e.enqueuedAt >= expiry then
      redis.call('LREM', key, 1, raw)
      expired = expired + 1
    else
      local mid = false
      if type(e.messageId) == 'string' then mid = e.messageId end
      live[#live + 1] = { raw = raw, topic = e.topic, mid = mid }
    end
  end
  return live, expired, bad
end
`;

/**
 * KEYS[1] queue. ARGV: entry, topic, messageId ('' = none), maxLen, now, expiryMs, channel,
 * notification. → {'queued'|'full'|'duplicate', count, expired, bad}. A queued entry
 * refreshes the key's TTL to expiryMs and publishes the notification.
 */
export const ENQUEUE = `${PURGE}
local live, expired, bad = purge(KEYS[1], tonumber(ARGV[5]), tonumber(ARGV[6]))
if ARGV[3] ~= '' then
  for i = 1, #live do
    if live[i].topic == ARGV[2] and live[i].mid == ARGV[3] then
      return { 'duplicate', #live, expired, bad }
    end
  end
end
if #live >= tonumber(ARGV[4]) then
  return { 'full', #live, expired, bad }
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return { 'queued', #live + 1, expired, bad }
`;

/** KEYS[1] queue. ARGV: now, expiryMs. → {found 0|1, count, expired, bad, head entry or nil}. */
export const PEEK = `${PURGE}
local live, expired, bad = purge(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if #live > 0 then
  return { 1, #live, expired, bad, live[1].raw }
end
return { 0, 0, expired, bad }
`;

/**
 * KEYS[1] queue. ARGV: now, expiryMs, topic. → {found 0|1, count, expired, bad, oldest entry
 * on topic or nil}.
 */
export const FETCH = `${PURGE}
local live, expired, bad = purge(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
for i = 1, #live do
  if live[i].topic == ARGV[3] then
    return { 1, #live, expired, bad, live[i].raw }
  end
end
return { 0, #live, expired, bad }
`;

/**
 * KEYS[1] queue. ARGV: now, expiryMs, topic, reply id ('' = none). Removes the entry the
 * reply acknowledges (`matchReply` in entry.ts) → {removed 0|1, count after, expired, bad}.
 */
export const ACKNOWLEDGE = `${PURGE}
local live, expired, bad = purge(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
local idx, idless = nil, nil
for i = 1, #live do
  local e = live[i]
  if e.topic == ARGV[3] then
    if ARGV[4] == '' or e.mid == ARGV[4] then
      idx = i
      break
    end
    if idless == nil and e.mid == false then idless = i end
  end
end
idx = idx or idless
if idx == nil then
  return { 0, #live, expired, bad }
end
redis.call('LREM', KEYS[1], 1, live[idx].raw)
return { 1, #live - 1, expired, bad }
`;

/** A script sent by its SHA-1, with the source as fallback. */
export class LuaScript {
  readonly sha: string;

  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  /**
   * Runs the script on `key`; with `durability`, the reply comes only once enough replicas
   * have the script's writes (else `RedisNotReplicatedError`).
   */
  async run(
    client: RedisClient,
    key: string,
    args: readonly (string | number)[],
    durability?: Durability,
  ): Promise<unknown> {
    if (durability === undefined || durability.replicas <= 0) {
      try {
        return await client.evalsha(this.sha, 1, key, ...args);
      } catch (e: unknown) {
        if (!isNoScript(e)) throw e;
        return await client.eval(this.source, 1, key, ...args);
      }
    }
    try {
      return await writeDurably(client, durability, (p) => p.evalsha(this.sha, 1, key, ...args));
    } catch (e: unknown) {
      if (!isNoScript(e)) throw e;
      return await writeDurably(client, durability, (p) => p.eval(this.source, 1, key, ...args));
    }
  }
}

function isNoScript(e: unknown): boolean {
  return e instanceof Error && e.message.startsWith('NOSCRIPT');
}
