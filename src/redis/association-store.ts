/**
 * Shared DTLS associations in Redis (docs/design.md, "Shared associations"): the Redis
 * implementation of the DTLS layer's `SharedAssociationStore`. src/redis may not import
 * src/dtls, so the shapes are declared here; structural typing makes this class assignable
 * to the interface (its test checks that at compile time).
 *
 * Layout (Redis Cluster safe: every script touches one key, the hash tag keeps each key in
 * the slot of its handle or identity):
 * - `{prefix}:assoc:{handle}`: a HASH with `blob` (the sealed snapshot, binary), `owner`
 *   (the holder), `tx` (the write counter: next unleased sequence number) and `rx` (the
 *   receive fence); PEXPIRE ttlMs, restarted by create, adopt, leaseTx and setRxFence.
 * - `{prefix}:assoc-id:{identity}`: a STRING, the handle of the identity's live association,
 *   written (with the same TTL) by create, its expiry restarted by the holder (touchIdentity,
 *   every half TTL while the association is used); the handle it replaced loses its hash.
 * Handles and identities are escaped like every key part (`escapeKeyPart`, keys.ts).
 *
 * Counters stay integers in Redis (HINCRBY): Lua numbers are doubles, and a number written
 * back from Lua would be formatted with 14 significant digits, so no script turns a counter
 * into a string itself. Sequence numbers are below 2^48, exact in a double and in the
 * integer replies Redis makes of Lua numbers.
 *
 * Nonce safety needs every acknowledged lease to survive a failover: with `durability`,
 * create, adopt, leaseTx and setRxFence answer only once that many replicas have the write
 * (WAIT on the same connection, `writeDurably`), else they reject. Errors are the ioredis
 * errors (or `RedisNotReplicatedError`); no error carries the snapshot.
 */
import { createHash } from 'node:crypto';
import { RedisReplyError, writeDurably, type Durability, type RedisClient } from './client.js';
import { escapeKeyPart } from './keys.js';

/** What an adopter gets back (the DTLS layer's `AdoptedState`). */
export interface RedisAdoptedState {
  readonly blob: Buffer;
  readonly rxFloor: number;
  readonly rxLimit: number;
  readonly txStart: number;
}

export interface RedisAssociationStoreOptions {
  /** A `createFailFastRedis` client of any topology; the caller owns (and closes) it. */
  readonly client: RedisClient;
  /** Settings `redisPrefix` (keys are `{prefix}:assoc:…`, like the other stores). */
  readonly prefix: string;
  /**
   * Replicas that must confirm every lease and how long `WAIT` waits for them (settings
   * `redisWaitReplicas`, `redisCommandTimeoutMs`: {@link durabilityFor}). None: no `WAIT`.
   */
  readonly durability?: Durability | undefined;
  /**
   * A second client (same topology) for the writes that wait for replicas: `WAIT` holds the
   * connection it is sent on until the replicas answer or it times out, and every command
   * behind it waits too, so lookups (peeks) must not share it. The caller owns it. Default:
   * `client` (fine without `durability`).
   */
  readonly durableClient?: RedisClient;
}

/**
 * KEYS[1] hash; ARGV blob, owner, tx, rx, ttlMs, identity (may be empty). Replaces whatever
 * was stored. The identity is kept so that retiring "the identity's older association" can
 * check that the handle still holds that identity's (an address handle may be another
 * device's by now, behind a NAT).
 */
const CREATE = `
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'blob', ARGV[1], 'owner', ARGV[2], 'tx', ARGV[3], 'rx', ARGV[4], 'id', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`;

/** KEYS[1] hash; ARGV identity. Deletes the association only while it is that identity's. */
const RETIRE = `
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`;

/**
 * KEYS[1] hash; ARGV owner, rxLease, txLease, ttlMs. Nil when nothing is stored, else
 * {blob, rxFloor, rxLimit, txStart}.
 */
const ADOPT = `
local blob = redis.call('HGET', KEYS[1], 'blob')
if not blob then return nil end
local rxLimit = redis.call('HINCRBY', KEYS[1], 'rx', ARGV[2])
local txEnd = redis.call('HINCRBY', KEYS[1], 'tx', ARGV[3])
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return { blob, rxLimit - tonumber(ARGV[2]), rxLimit, txEnd - tonumber(ARGV[3]) }
`;

/** KEYS[1] hash; ARGV owner, count, ttlMs. The first leased number, nil when not the holder. */
const LEASE_TX = `
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return nil end
local txEnd = redis.call('HINCRBY', KEYS[1], 'tx', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return txEnd - tonumber(ARGV[2])
`;

/** KEYS[1] hash; ARGV owner, fence, ttlMs. 1, or 0 when not the holder. */
const SET_RX_FENCE = `
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rx', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`;

/** KEYS[1] identity index; ARGV handle, ttlMs. Restarts its expiry while it names `handle`. */
const TOUCH_IDENTITY = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`;

/** KEYS[1] hash; ARGV owner. Deletes when `owner` holds it: 1, else 0. */
const REMOVE = `
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`;

interface Script {
  readonly source: string;
  readonly sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

const createScript = script(CREATE);
const adoptScript = script(ADOPT);
const leaseTxScript = script(LEASE_TX);
const setRxFenceScript = script(SET_RX_FENCE);
const removeScript = script(REMOVE);
const retireScript = script(RETIRE);
const touchIdentityScript = script(TOUCH_IDENTITY);

function isNoScript(e: unknown): boolean {
  return e instanceof Error && e.message.startsWith('NOSCRIPT');
}

/** An integer (sequence number) in a reply; the message names the operation only. */
function int(v: unknown, op: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
  throw new RedisReplyError(op);
}

/**
 * ioredis attaches the failed command (`err.command.args`) to its errors: the snapshot is
 * replaced there by its length, so logging the error cannot write it out.
 */
function withoutBlob(e: unknown, blob: Buffer): unknown {
  if (typeof e !== 'object' || e === null || !('command' in e)) return e;
  const command: unknown = e.command;
  if (typeof command !== 'object' || command === null || !('args' in command)) return e;
  const args: unknown = command.args;
  if (Array.isArray(args)) {
    command.args = args.map((a: unknown) => (a === blob ? `<snapshot ${blob.length} bytes>` : a));
  }
  return e;
}

export class RedisAssociationStore {
  readonly #client: RedisClient;
  /** Where writes that wait for replicas go (`#client` unless given one of its own). */
  readonly #durable: RedisClient;
  readonly #prefix: string;
  readonly #durability: Durability | undefined;

  constructor(o: RedisAssociationStoreOptions) {
    this.#client = o.client;
    this.#durable = o.durableClient ?? o.client;
    this.#prefix = o.prefix;
    this.#durability = o.durability;
  }

  /** `{prefix}:assoc:{handle}`: the association's hash. */
  associationKey(handle: string): string {
    return `${this.#prefix}:assoc:{${escapeKeyPart(handle)}}`;
  }

  /** `{prefix}:assoc-id:{identity}`: the handle of the identity's live association. */
  identityKey(identity: string): string {
    return `${this.#prefix}:assoc-id:{${escapeKeyPart(identity)}}`;
  }

  async create(
    handle: string,
    owner: string,
    blob: Buffer,
    txNext: number,
    rxFence: number,
    ttlMs: number,
    identity: string | undefined,
  ): Promise<void> {
    try {
      await this.#run(
        createScript,
        this.associationKey(handle),
        [blob, owner, txNext, rxFence, ttlMs, identity ?? ''],
        true,
      );
    } catch (e: unknown) {
      throw withoutBlob(e, blob);
    }
    if (identity === undefined) return;
    const old = await writeDurably(this.#durable, this.#durability, (p) =>
      p.set(this.identityKey(identity), handle, 'PX', ttlMs, 'GET'),
    );
    // the identity's association before this one ended: its snapshot must not be adopted
    if (typeof old === 'string' && old !== handle) {
      await this.#run(retireScript, this.associationKey(old), [identity], false);
    }
  }

  /** The snapshot and receive fence, read only; undefined when nothing is stored. */
  async peek(
    handle: string,
  ): Promise<{ blob: Buffer; rxFence: number; owner: string } | undefined> {
    const [blob, rx, owner] = await this.#client.hmgetBuffer(
      this.associationKey(handle),
      'blob',
      'rx',
      'owner',
    );
    if (blob == null || rx == null || owner == null) return undefined;
    const fence = Number(rx.toString());
    if (!Number.isSafeInteger(fence)) throw new RedisReplyError('peek');
    return { blob, rxFence: fence, owner: owner.toString() };
  }

  /** `{prefix}:assoc-holder:{owner}`: the pod instance is alive while this key is. */
  holderKey(owner: string): string {
    return `${this.#prefix}:assoc-holder:{${escapeKeyPart(owner)}}`;
  }

  async heartbeat(owner: string, ttlMs: number): Promise<void> {
    if (ttlMs <= 0) await this.#client.del(this.holderKey(owner));
    else await this.#client.set(this.holderKey(owner), '1', 'PX', Math.ceil(ttlMs));
  }

  async alive(owner: string): Promise<boolean> {
    return (await this.#client.exists(this.holderKey(owner))) === 1;
  }

  async adopt(
    handle: string,
    owner: string,
    rxLease: number,
    txLease: number,
    ttlMs: number,
  ): Promise<RedisAdoptedState | undefined> {
    const r = await this.#run(
      adoptScript,
      this.associationKey(handle),
      [owner, rxLease, txLease, ttlMs],
      true,
    );
    if (r === null) return undefined;
    if (!Array.isArray(r) || r.length !== 4 || !Buffer.isBuffer(r[0])) {
      throw new RedisReplyError('adopt');
    }
    const [blob, rxFloor, rxLimit, txStart] = r as [Buffer, unknown, unknown, unknown];
    return {
      blob,
      rxFloor: int(rxFloor, 'adopt'),
      rxLimit: int(rxLimit, 'adopt'),
      txStart: int(txStart, 'adopt'),
    };
  }

  async leaseTx(
    handle: string,
    owner: string,
    count: number,
    ttlMs: number,
  ): Promise<number | undefined> {
    const r = await this.#run(
      leaseTxScript,
      this.associationKey(handle),
      [owner, count, ttlMs],
      true,
    );
    return r === null ? undefined : int(r, 'leaseTx');
  }

  async setRxFence(handle: string, owner: string, fence: number, ttlMs: number): Promise<boolean> {
    const r = await this.#run(
      setRxFenceScript,
      this.associationKey(handle),
      [owner, fence, ttlMs],
      true,
    );
    return int(r, 'setRxFence') === 1;
  }

  async touchIdentity(identity: string, handle: string, ttlMs: number): Promise<void> {
    await this.#run(touchIdentityScript, this.identityKey(identity), [handle, ttlMs], false);
  }

  async remove(handle: string, owner: string): Promise<void> {
    await this.#run(removeScript, this.associationKey(handle), [owner], false);
  }

  /**
   * Runs `s` on `key` by its SHA-1 (the source when the server does not know it yet), with
   * Buffer replies (the snapshot is binary); `durable` writes wait for the replicas.
   */
  async #run(
    s: Script,
    key: string,
    args: readonly (string | number | Buffer)[],
    durable: boolean,
  ): Promise<unknown> {
    const durability = durable ? this.#durability : undefined;
    const once = (cmd: 'EVALSHA' | 'EVAL', body: string): Promise<unknown> =>
      durability === undefined
        ? this.#client.callBuffer(cmd, body, 1, key, ...args)
        : writeDurably(this.#durable, durability, (p) => p.callBuffer(cmd, body, 1, key, ...args));
    try {
      return await once('EVALSHA', s.sha);
    } catch (e: unknown) {
      if (!isNoScript(e)) throw e;
      return await once('EVAL', s.source);
    }
  }
}
