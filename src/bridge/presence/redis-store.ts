/**
 * Presence decided in Redis, shared by every pod. Layout (`{pk}`/`{dk}` escaped as in
 * `auth/redis-keys.ts`); every key carries the hash tag `{presence}`, so all of them lie in
 * one Redis Cluster slot and each transition stays one atomic script on one node:
 *
 * - `{prefix}:{presence}:deadlines`: sorted set, member `{pk}:{dk}`, score = deadline in ms.
 *   **A device is online exactly while it is a member.** Expires (PEXPIRE) `retainMs` after
 *   the latest deadline written, so the state of a pool that is gone does not stay forever.
 * - `{prefix}:{presence}:dev:{pk}:{dk}`: hash `sid` (current session), `at` (ms of the
 *   request that set `sid`), `lt` (lifetime in s). Expires `retainMs` after the deadline.
 *   After a claim it holds only `off` (the claim's `now`, ms) for `opTtlMs`: see touch.
 * - `{prefix}:{presence}:seq`: counter, incremented once per transition (the events' `seq`).
 * - `{prefix}:{presence}:op:{token}`: the answer of a transition, kept `opTtlMs` (60 s) so a
 *   retry of a write whose answer was lost (command timeout) learns what it did.
 *
 * The set of online devices spans all devices and must change atomically with the device's
 * hash, hence one slot for presence rather than the device's own hash tag: presence is
 * small (one hash per online device) and on a cluster it lives on one shard.
 *
 * Three Lua scripts make the transitions atomic (a script runs alone on the server); each
 * declares every key it touches (KEYS), none builds a key name itself:
 *
 * - touch: not a member → HSET + ZADD + INCR, answer `online` (only the first of any number
 *   of concurrent writers finds the device absent), except when a claim removed the device
 *   at or after this write's deadline (`off` ≥ deadline): then nothing, answer `lapsed`. That
 *   is late news of a pod whose sweep was held up past its flush lead while another pod's
 *   sweeper claimed the device: the news had lapsed by the claim anyway, and making the device
 *   online again would publish an `online` dated before the `offline` already published, and
 *   a second `offline` later. News still within its lifetime at the claim (the claim was
 *   early) makes it online again, a new session after the claim too, and a device first seen
 *   during a Redis outage has no marker: its online/offline pair is published as before.
 *   A member → deadline = max(old, new), and the session is taken over only by a write whose
 *   request is not older than the stored one (a late flush of an old session on one pod
 *   cannot undo a re-handshake on another).
 * - close: member and `sid` equal → DEL + ZREM + INCR, answer `offline`; else nothing.
 * - claim: the candidates (ZRANGEBYSCORE ≤ now LIMIT n, read first) are passed with their
 *   hashes; the script removes each that is still a member with a deadline ≤ now (DEL +
 *   ZREM + INCR, leaving the hash's `off` marker) and answers the list: each lapsed device is
 *   removed by exactly one claim, whichever pod's sweeper runs it, and a device refreshed
 *   between the read and the script is left alone.
 *
 * Deadlines are written with one pod's clock and compared with another's: pods' clocks must
 * agree (NTP); a skew of Δ makes a lapse Δ early or late. Keys expire relative to the write
 * (PEXPIRE), so an injected test clock is safe.
 *
 * Scripts are sent with EVALSHA and fall back to EVAL when the server does not know them
 * (after a restart or a failover to a replica that never ran them).
 *
 * The client should be configured to fail fast like `auth/redis-connection.ts` (no offline
 * queue, a command timeout): every method then rejects at once while Redis is away, and the
 * tracker retries later. The store does not own the client and never closes it.
 */
import { createHash } from 'node:crypto';
import type { RedisClient } from '../../redis/client.js';
import { escapeKeyPart, unescapeKeyPart } from '../../redis/keys.js';
import type { DeviceKey } from '../types.js';
import {
  PresenceError,
  type CloseResult,
  type LapsedDevice,
  type PresenceEntry,
  type PresenceStore,
  type TouchRequest,
  type TouchResult,
} from './types.js';

// KEYS: 1 deadlines, 2 device hash, 3 op result, 4 seq
// ARGV: 1 member, 2 sessionId, 3 seenAt ms, 4 deadline ms, 5 lifetime s, 6 op ttl ms, 7 retain ms
const TOUCH = `
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local at = tonumber(ARGV[3])
local deadline = tonumber(ARGV[4])
local res
if not score then
  local off = tonumber(redis.call('HGET', KEYS[2], 'off'))
  if off and deadline <= off then
    res = '{"r":"lapsed"}'
    redis.call('SET', KEYS[3], res, 'PX', ARGV[6])
    return res
  end
  local seq = redis.call('INCR', KEYS[4])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'sid', ARGV[2], 'at', ARGV[3], 'lt', ARGV[5])
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  res = '{"r":"online","seq":' .. seq .. '}'
  redis.call('SET', KEYS[3], res, 'PX', ARGV[6])
else
  local stored = tonumber(redis.call('HGET', KEYS[2], 'at'))
  if (not stored) or stored <= at then
    redis.call('HSET', KEYS[2], 'sid', ARGV[2], 'at', ARGV[3], 'lt', ARGV[5])
  end
  if deadline > tonumber(score) then
    redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  else
    deadline = tonumber(score)
  end
  res = redis.call('GET', KEYS[3]) or '{"r":"refreshed"}'
end
local ttl = math.max(deadline - at, 0) + tonumber(ARGV[7])
redis.call('PEXPIRE', KEYS[2], ttl)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return res
`;

// KEYS: 1 deadlines, 2 device hash, 3 op result, 4 seq
// ARGV: 1 member, 2 sessionId, 3 op ttl ms
const CLOSE = `
local prior = redis.call('GET', KEYS[3])
if prior then return prior end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return '{"r":"absent"}' end
local cur = redis.call('HMGET', KEYS[2], 'sid', 'lt')
if cur[1] ~= ARGV[2] then return '{"r":"not-current"}' end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
local seq = redis.call('INCR', KEYS[4])
local res = '{"r":"offline","seq":' .. seq .. ',"lt":' .. (tonumber(cur[2]) or 0) .. '}'
redis.call('SET', KEYS[3], res, 'PX', ARGV[3])
return res
`;

// KEYS: 1 deadlines, 2 op result, 3 seq, 4.. the candidates' hashes
// ARGV: 1 now ms, 2 op ttl ms, 3.. the candidates' members (in the order of their hashes)
const CLAIM = `
local prior = redis.call('GET', KEYS[2])
if prior then return prior end
local now = tonumber(ARGV[1])
local out = {}
for i = 3, #ARGV do
  local m = ARGV[i]
  local h = KEYS[i + 1]
  local score = redis.call('ZSCORE', KEYS[1], m)
  if score and tonumber(score) <= now then
    local d = redis.call('HMGET', h, 'sid', 'lt')
    redis.call('DEL', h)
    redis.call('HSET', h, 'off', ARGV[1])
    redis.call('PEXPIRE', h, ARGV[2])
    redis.call('ZREM', KEYS[1], m)
    local seq = redis.call('INCR', KEYS[3])
    out[#out + 1] = {m, score, d[1] or '', tonumber(d[2]) or 0, seq}
  end
end
if #out == 0 then
  redis.call('SET', KEYS[2], '[]', 'PX', ARGV[2])
  return '[]'
end
local res = cjson.encode(out)
redis.call('SET', KEYS[2], res, 'PX', ARGV[2])
return res
`;

interface Script {
  readonly text: string;
  readonly sha: string;
}

function script(text: string): Script {
  return { text, sha: createHash('sha1').update(text).digest('hex') };
}

const SCRIPTS = { touch: script(TOUCH), close: script(CLOSE), claim: script(CLAIM) } as const;

export interface RedisPresenceStoreOptions {
  /** A fail-fast ioredis client, e.g. `RedisConnection.client`. Not closed by the store. */
  readonly client: RedisClient;
  /** Key namespace (settings `redisPrefix`). */
  readonly prefix: string;
  /** How long entries outlive their deadline when no sweeper removes them. @default 24 h */
  readonly retainMs?: number;
  /** How long a transition's answer is kept for a retry with the same token. @default 60 s */
  readonly opTtlMs?: number;
}

function badReply(what: string): PresenceError {
  return new PresenceError('PRESENCE_STORE_BAD_REPLY', `presence store: malformed ${what} reply`);
}

function parseJson(raw: unknown, what: string): unknown {
  if (typeof raw !== 'string') throw badReply(what);
  try {
    return JSON.parse(raw);
  } catch {
    throw badReply(what);
  }
}

function field(obj: unknown, name: string): unknown {
  return typeof obj === 'object' && obj !== null
    ? (obj as Record<string, unknown>)[name]
    : undefined;
}

function int(v: unknown, what: string): number {
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw badReply(what);
  return n;
}

export class RedisPresenceStore implements PresenceStore {
  readonly #client: RedisClient;
  readonly #prefix: string;
  readonly #retainMs: number;
  readonly #opTtlMs: number;

  constructor(o: RedisPresenceStoreOptions) {
    this.#client = o.client;
    this.#prefix = o.prefix;
    this.#retainMs = Math.round(o.retainMs ?? 86_400_000);
    this.#opTtlMs = Math.round(o.opTtlMs ?? 60_000);
    if (!(this.#retainMs >= 1 && this.#opTtlMs >= 1)) {
      throw new PresenceError('PRESENCE_BAD_CONFIG', 'retainMs and opTtlMs must be positive');
    }
  }

  onlineCount(): Promise<number> {
    return this.#client.zcard(this.deadlinesKey);
  }

  /** The sorted set of deadlines (tests and operators look at it). */
  get deadlinesKey(): string {
    return `${this.#prefix}:{presence}:deadlines`;
  }

  /** The hash of one device. */
  deviceKey(d: DeviceKey): string {
    return this.#hashKey(this.#member(d));
  }

  #hashKey(member: string): string {
    return `${this.#prefix}:{presence}:dev:${member}`;
  }

  #member(d: DeviceKey): string {
    return `${escapeKeyPart(d.productKey)}:${escapeKeyPart(d.deviceKey)}`;
  }

  #seqKey(): string {
    return `${this.#prefix}:{presence}:seq`;
  }

  #opKey(token: string): string {
    return `${this.#prefix}:{presence}:op:${token}`;
  }

  async touch(t: TouchRequest): Promise<TouchResult> {
    const raw = await this.#run(
      SCRIPTS.touch,
      [this.deadlinesKey, this.deviceKey(t.device), this.#opKey(t.token), this.#seqKey()],
      [
        this.#member(t.device),
        t.sessionId,
        Math.round(t.seenAt),
        Math.round(t.deadline),
        t.lifetime,
        this.#opTtlMs,
        this.#retainMs,
      ],
    );
    const obj = parseJson(raw, 'touch');
    switch (field(obj, 'r')) {
      case 'online':
        return { kind: 'online', seq: int(field(obj, 'seq'), 'touch') };
      case 'refreshed':
        return { kind: 'refreshed' };
      case 'lapsed':
        return { kind: 'lapsed' };
      default:
        throw badReply('touch');
    }
  }

  async close(device: DeviceKey, sessionId: string, token: string): Promise<CloseResult> {
    const raw = await this.#run(
      SCRIPTS.close,
      [this.deadlinesKey, this.deviceKey(device), this.#opKey(token), this.#seqKey()],
      [this.#member(device), sessionId, this.#opTtlMs],
    );
    const obj = parseJson(raw, 'close');
    switch (field(obj, 'r')) {
      case 'offline':
        return {
          kind: 'offline',
          seq: int(field(obj, 'seq'), 'close'),
          lifetime: int(field(obj, 'lt'), 'close'),
        };
      case 'not-current':
        return { kind: 'not-current' };
      case 'absent':
        return { kind: 'absent' };
      default:
        throw badReply('close');
    }
  }

  async claimLapsed(now: number, limit: number, token: string): Promise<readonly LapsedDevice[]> {
    const at = Math.floor(now);
    // candidates first (a read); the script decides again for each, atomically
    const members = await this.#client.zrangebyscore(
      this.deadlinesKey,
      '-inf',
      at,
      'LIMIT',
      0,
      Math.max(1, Math.floor(limit)),
    );
    // even without candidates: a retry learns what the first attempt with this token did
    const raw = await this.#run(
      SCRIPTS.claim,
      [
        this.deadlinesKey,
        this.#opKey(token),
        this.#seqKey(),
        ...members.map((m) => this.#hashKey(m)),
      ],
      [at, this.#opTtlMs, ...members],
    );
    const list = parseJson(raw, 'claim');
    // cjson encodes an empty table as an object; the script answers '[]' itself then
    if (!Array.isArray(list)) throw badReply('claim');
    const out: LapsedDevice[] = [];
    for (const item of list as unknown[]) {
      if (!Array.isArray(item) || item.length !== 5) throw badReply('claim');
      const [member, score, sid, lt, seq] = item as unknown[];
      if (typeof member !== 'string' || typeof sid !== 'string') throw badReply('claim');
      const parts = member.split(':');
      const [pk, dk] = parts;
      // a member this code did not write: removed by the claim all the same, no event
      if (parts.length !== 2 || pk === undefined || dk === undefined) continue;
      out.push({
        device: { productKey: unescapeKeyPart(pk), deviceKey: unescapeKeyPart(dk) },
        deadline: int(score, 'claim'),
        sessionId: sid === '' ? undefined : sid,
        lifetime: int(lt, 'claim'),
        seq: int(seq, 'claim'),
      });
    }
    return out;
  }

  async get(device: DeviceKey): Promise<PresenceEntry | undefined> {
    const [score, h] = await Promise.all([
      this.#client.zscore(this.deadlinesKey, this.#member(device)),
      this.#client.hmget(this.deviceKey(device), 'sid', 'lt'),
    ]);
    if (score === null) return undefined;
    const [sid, lt] = h;
    return {
      sessionId: sid ?? undefined,
      deadline: Number(score),
      lifetime: lt === null || lt === undefined ? 0 : Number(lt),
    };
  }

  async #run(s: Script, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await this.#client.evalsha(s.sha, keys.length, ...keys, ...args);
    } catch (err: unknown) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return await this.#client.eval(s.text, keys.length, ...keys, ...args);
    }
  }
}
