/**
 * What a shared association's store holds of it, sealed (docs/design.md, "Shared
 * associations"): AES-256-GCM under the association key, the handle as additional data, so
 * a store dump alone decrypts no traffic and a snapshot moved to another handle does not
 * open. Written once per handshake and read once per adoption: JSON is fine here.
 *
 * Layout: version (1) ‖ IV (12) ‖ tag (16) ‖ ciphertext.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { MAX_PLAINTEXT } from './constants.js';
import { ownCopy } from './own-buffer.js';
import type { DirectionKeys } from './record-cipher.js';

const VERSION = 1;
const IV_LENGTH = 12;
const TAG_LENGTH = 16;
const HEADER = 1 + IV_LENGTH + TAG_LENGTH;
/** The association key's length: AES-256. */
export const ASSOCIATION_KEY_LENGTH = 32;

export interface AssociationSnapshot {
  readonly suite: number;
  readonly encryptThenMac: boolean;
  readonly extendedMasterSecret: boolean;
  readonly epoch: number;
  /** Client-write (what we open) and server-write (what we seal) key material. */
  readonly client: DirectionKeys;
  readonly server: DirectionKeys;
  /** Our CID (in the peer's records), and the peer's (in ours); absent when none. */
  readonly connectionId: Buffer | undefined;
  readonly peerConnectionId: Buffer | undefined;
  /** Where the association was established from. */
  readonly address: string;
  readonly port: number;
  readonly identity: string;
  /** The layer above's principal, as its codec encoded it (a JSON value). */
  readonly principal: unknown;
  readonly establishedAt: number;
  readonly handshakeDurationMs: number;
  readonly clientRandom: Buffer;
  /**
   * Largest plaintext the peer accepts per record (RFC 8449 / RFC 6066); an adopting pod
   * honours it. Absent in snapshots written before it was stored: 2^14.
   */
  readonly peerRecordLimit?: number;
}

const b64 = z.string().max(1024);
const keysSchema = z.object({ encKey: b64, salt: b64, macKey: b64 });
const schema = z.object({
  suite: z.number().int(),
  etm: z.boolean(),
  ems: z.boolean(),
  epoch: z.number().int().min(0).max(0xffff),
  client: keysSchema,
  server: keysSchema,
  cid: b64.optional(),
  peerCid: b64.optional(),
  address: z.string().max(64),
  port: z.number().int().min(0).max(0xffff),
  identity: z.string().max(1024),
  principal: z.unknown(),
  established: z.number(),
  handshakeMs: z.number(),
  random: b64,
  rsl: z.number().int().min(64).max(MAX_PLAINTEXT).optional(),
});

function keysOut(k: DirectionKeys): z.infer<typeof keysSchema> {
  return {
    encKey: k.encKey.toString('base64'),
    salt: k.salt.toString('base64'),
    macKey: k.macKey.toString('base64'),
  };
}

/** The adopted association keeps these: each in its own allocation (own-buffer.ts). */
function fromBase64(text: string): Buffer {
  return ownCopy(Buffer.from(text, 'base64'));
}

function keysIn(k: z.infer<typeof keysSchema>): DirectionKeys {
  return {
    encKey: fromBase64(k.encKey),
    salt: fromBase64(k.salt),
    macKey: fromBase64(k.macKey),
  };
}

function aad(handle: string): Buffer {
  return Buffer.from(`coap-edge association v${VERSION} ${handle}`);
}

/** Seals a snapshot for the store under `handle`. */
export function sealSnapshot(s: AssociationSnapshot, key: Buffer, handle: string): Buffer {
  const doc: z.infer<typeof schema> = {
    suite: s.suite,
    etm: s.encryptThenMac,
    ems: s.extendedMasterSecret,
    epoch: s.epoch,
    client: keysOut(s.client),
    server: keysOut(s.server),
    ...(s.connectionId !== undefined ? { cid: s.connectionId.toString('base64') } : {}),
    ...(s.peerConnectionId !== undefined ? { peerCid: s.peerConnectionId.toString('base64') } : {}),
    address: s.address,
    port: s.port,
    identity: s.identity,
    principal: s.principal,
    established: s.establishedAt,
    handshakeMs: s.handshakeDurationMs,
    random: s.clientRandom.toString('base64'),
    ...(s.peerRecordLimit !== undefined ? { rsl: s.peerRecordLimit } : {}),
  };
  const plain = Buffer.from(JSON.stringify(doc));
  const iv = randomBytes(IV_LENGTH);
  const c = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_LENGTH });
  c.setAAD(aad(handle));
  const body = c.update(plain);
  c.final();
  plain.fill(0);
  const out = Buffer.allocUnsafe(HEADER + body.length);
  out[0] = VERSION;
  iv.copy(out, 1);
  c.getAuthTag().copy(out, 1 + IV_LENGTH);
  body.copy(out, HEADER);
  return out;
}

/**
 * Opens a sealed snapshot stored under `handle`; undefined when it is not one (another key,
 * another handle, another version, damaged): the caller treats it as not stored.
 */
export function openSnapshot(
  blob: Buffer,
  key: Buffer,
  handle: string,
): AssociationSnapshot | undefined {
  if (blob.length <= HEADER || blob[0] !== VERSION) return undefined;
  let plain: Buffer;
  try {
    const d = createDecipheriv('aes-256-gcm', key, blob.subarray(1, 1 + IV_LENGTH), {
      authTagLength: TAG_LENGTH,
    });
    d.setAAD(aad(handle));
    d.setAuthTag(blob.subarray(1 + IV_LENGTH, HEADER));
    plain = Buffer.concat([d.update(blob.subarray(HEADER)), d.final()]);
  } catch {
    return undefined;
  }
  let doc: z.infer<typeof schema>;
  try {
    const parsed = schema.safeParse(JSON.parse(plain.toString('utf8')));
    if (!parsed.success) return undefined;
    doc = parsed.data;
  } catch {
    return undefined;
  } finally {
    plain.fill(0);
  }
  return {
    suite: doc.suite,
    encryptThenMac: doc.etm,
    extendedMasterSecret: doc.ems,
    epoch: doc.epoch,
    client: keysIn(doc.client),
    server: keysIn(doc.server),
    connectionId: doc.cid !== undefined ? fromBase64(doc.cid) : undefined,
    peerConnectionId: doc.peerCid !== undefined ? fromBase64(doc.peerCid) : undefined,
    address: doc.address,
    port: doc.port,
    identity: doc.identity,
    principal: doc.principal,
    establishedAt: doc.established,
    handshakeDurationMs: doc.handshakeMs,
    clientRandom: fromBase64(doc.random),
    peerRecordLimit: doc.rsl ?? MAX_PLAINTEXT,
  };
}
