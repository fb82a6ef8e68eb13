/**
 * Handshakes for the floor reference programs (uplink-floor.ts, records-floor.ts): coap-edge's
 * own `DtlsServer` (src/dtls), run with association sharing on an in-process
 * `MemoryAssociationStore`. When a handshake completes, the server hands the store the sealed
 * snapshot of the association (suite, epoch, both directions' keys, address) and the first
 * write sequence number it does not hold (`txNext`; it sealed its Finished below it). The
 * store opens that snapshot with the key it gave the server and passes it to `onPeer`, so the
 * floor handles the peer's records from then on — read only, nothing in src/ changed.
 * Only CCM_8 associations are passed on (the floors speak that suite alone). Also the floors'
 * shared record handling: `checkRecord` (header checks, replay window, AAD) and
 * `floorDatagrams` (records of a datagram, close_notify, the rest to the DtlsServer).
 */
import { randomBytes } from 'node:crypto';
import type { RemoteInfo } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { loadConfig } from '../../src/config/load.js';
import { CipherSuite } from '../../src/dtls/constants.js';
import { derivePsk } from '../../src/enos/index.js';
import type { ReplayWindow } from '../../src/dtls/replay-window.js';
import { DtlsServer } from '../../src/dtls/server.js';
import { MemoryAssociationStore } from '../../src/dtls/shared.js';
import {
  ASSOCIATION_KEY_LENGTH,
  openSnapshot,
  type AssociationSnapshot,
} from '../../src/dtls/snapshot.js';
import { dtlsServerSettings } from '../../src/gateway/component-settings.js';

export interface TakeOverOptions {
  /** coap-edge devices file: `{ devices: [{ productKey, deviceKey, deviceSecret }] }`. */
  readonly devicesFile: string;
  readonly send: (data: Buffer, port: number, address: string) => void;
  /** A CCM_8 association just established, and the first write sequence number to use. */
  readonly onPeer: (s: AssociationSnapshot, txNext: number) => void;
}

/** A DtlsServer whose completed CCM_8 handshakes are handed to `onPeer`. */
export function takeOverServer(o: TakeOverOptions): DtlsServer<string> {
  const psks = new Map<string, Buffer>();
  const devicesJson = JSON.parse(readFileSync(o.devicesFile, 'utf8')) as {
    devices: { productKey: string; deviceKey: string; deviceSecret: string }[];
  };
  for (const d of devicesJson.devices) {
    psks.set(`${d.productKey},${d.deviceKey}`, derivePsk(d.deviceSecret));
  }
  const associationKey = randomBytes(ASSOCIATION_KEY_LENGTH);

  class TakeOverStore extends MemoryAssociationStore {
    override create(...args: Parameters<MemoryAssociationStore['create']>): Promise<void> {
      const [handle, , blob, txNext] = args;
      const s = openSnapshot(blob, associationKey, handle);
      if (s !== undefined && s.suite === CipherSuite.TLS_PSK_WITH_AES_128_CCM_8) {
        o.onPeer(s, txNext);
      }
      return super.create(...args);
    }
  }

  return new DtlsServer<string>({
    ...dtlsServerSettings(loadConfig()),
    cipherSuites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
    cidLength: 0,
    send: o.send,
    shared: {
      store: new TakeOverStore(),
      key: associationKey,
      principal: { encode: (p) => p, decode: (v) => (typeof v === 'string' ? v : undefined) },
    },
    handler: {
      resolvePsk: (identity) => {
        const id = identity.toString('utf8');
        const parts = id.split(',');
        const psk = psks.get(`${parts[0]},${parts[1]}`);
        return psk !== undefined
          ? { ok: true, psk, principal: id }
          : { ok: false, alert: 'unknown_psk_identity', reason: 'unknown-device' };
      },
      // application data of the floor's peers never reaches the DtlsServer
      onData: () => undefined,
    },
  });
}

export const RECORD_HEADER = 13;
export const EXPLICIT_NONCE = 8;
export const TAG = 8;
const TYPE_ALERT = 21;
const TYPE_APPLICATION_DATA = 23;
const DTLS_1_2 = 0xfefd;
const CLOSE_NOTIFY = 0;

/** What a floor keeps per association for the record checks. */
export interface FloorPeer {
  readonly address: string;
  readonly port: number;
  readonly epoch: number;
  readonly window: ReplayWindow;
  /** The 13-byte AAD, rewritten per record. */
  readonly aad: Buffer;
  /** salt(4) ‖ explicit nonce(8): the CCM nonces, rewritten per record. */
  readonly readNonce: Buffer;
  readonly writeNonce: Buffer;
  writeSeq: number;
}

/**
 * A new application-data record for a `plainLength`-byte plaintext at the peer's next write
 * sequence number: header and explicit nonce (epoch ‖ seq, RFC 6655 §3) written, the peer's
 * `writeNonce` and `aad` set for sealing it; ciphertext and tag go at 21 (left to the caller).
 */
export function newRecord(peer: FloorPeer, plainLength: number): Buffer {
  const seq = peer.writeSeq++;
  const record = Buffer.allocUnsafe(RECORD_HEADER + EXPLICIT_NONCE + plainLength + TAG);
  record[0] = TYPE_APPLICATION_DATA;
  record.writeUInt16BE(DTLS_1_2, 1);
  record.writeUInt16BE(peer.epoch, 3);
  record.writeUIntBE(seq, 5, 6);
  record.writeUInt16BE(EXPLICIT_NONCE + plainLength + TAG, 11);
  record.copy(record, RECORD_HEADER, 3, 11);
  record.copy(peer.writeNonce, 4, 3, 11);
  const aad = peer.aad;
  record.copy(aad, 0, 3, 11);
  aad[8] = TYPE_APPLICATION_DATA;
  aad.writeUInt16BE(DTLS_1_2, 9);
  aad.writeUInt16BE(plainLength, 11);
  return record;
}

/** The floors' key of a peer address. */
export function peerKey(address: string, port: number): string {
  return `${address}|${port}`;
}

/**
 * The checks before opening the CCM_8 record at `offset` whose length field is `length`:
 * version, epoch, room for explicit nonce and tag, replay window. Writes the record's AAD
 * (epoch ‖ seq ‖ type ‖ version ‖ plaintext length) to `peer.aad`. Returns the sequence
 * number, or -1: drop the record silently (RFC 6347).
 */
export function checkRecord(peer: FloorPeer, msg: Buffer, offset: number, length: number): number {
  if (msg.readUInt16BE(offset + 1) !== DTLS_1_2) return -1;
  if (msg.readUInt16BE(offset + 3) !== peer.epoch) return -1;
  if (length < EXPLICIT_NONCE + TAG) return -1;
  const seq = msg.readUIntBE(offset + 5, 6);
  if (!peer.window.check(seq)) return -1;
  const aad = peer.aad;
  msg.copy(aad, 0, offset + 3, offset + 11); // epoch ‖ seq
  aad[8] = msg[offset] ?? 0;
  aad.writeUInt16BE(DTLS_1_2, 9);
  aad.writeUInt16BE(length - EXPLICIT_NONCE - TAG, 11);
  return seq;
}

/**
 * The records of one datagram of a known peer, cut with every length checked and opened with
 * `open` (undefined: dropped); the plaintext of application data goes to `onData`. Returns
 * false when the peer sent close_notify (the caller drops it), true otherwise.
 */
export function floorRecords<P extends FloorPeer>(
  peer: P,
  msg: Buffer,
  open: (peer: P, msg: Buffer, offset: number, length: number) => Buffer | undefined,
  onData: (peer: P, plain: Buffer) => void,
): boolean {
  let offset = 0;
  while (msg.length - offset >= RECORD_HEADER) {
    const length = msg.readUInt16BE(offset + 11);
    const end = offset + RECORD_HEADER + length;
    if (end > msg.length) return true;
    const plain = open(peer, msg, offset, length);
    const recordType = msg[offset];
    offset = end;
    if (plain === undefined) continue;
    if (recordType === TYPE_APPLICATION_DATA) onData(peer, plain);
    else if (recordType === TYPE_ALERT && plain.length === 2 && plain[1] === CLOSE_NOTIFY) {
      return false;
    }
  }
  return true;
}

/** Whether a datagram starting with `type` may be a known peer's (application data, alert). */
export function peerRecordType(type: number | undefined): boolean {
  return type === TYPE_APPLICATION_DATA || type === TYPE_ALERT;
}

/**
 * The floors' datagram handler: application data and alerts of a peer in `peers` go to
 * `floorRecords`, a close_notify drops the peer. Any other datagram goes to the DtlsServer.
 */
export function floorDatagrams<P extends FloorPeer>(
  dtls: DtlsServer<string>,
  peers: Map<string, P>,
  open: (peer: P, msg: Buffer, offset: number, length: number) => Buffer | undefined,
  onData: (peer: P, plain: Buffer) => void,
): (msg: Buffer, rinfo: RemoteInfo) => void {
  return (msg, rinfo) => {
    const peer = peerRecordType(msg[0]) ? peers.get(peerKey(rinfo.address, rinfo.port)) : undefined;
    if (peer === undefined) {
      dtls.handleDatagram(msg, rinfo.address, rinfo.port);
      return;
    }
    if (!floorRecords(peer, msg, open, onData)) peers.delete(peerKey(peer.address, peer.port));
  };
}
