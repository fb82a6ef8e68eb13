/**
 * What an established association keeps must not pin Node's shared Buffer pool.
 * `Buffer.from(array)`, `Buffer.from(string)` and `Buffer.allocUnsafe(n < 4 KiB)` cut from one
 * 8 KiB slab shared by every such allocation of the process; a long-lived slice keeps the
 * whole slab alive. Between two handshakes of a running server the slab is filled with
 * datagrams, cookies and other garbage, so each association holding such a slice may pin 8 KiB.
 *
 * Real handshakes (our DtlsClient to a DtlsServer over loopback UDP, with and without a
 * Connection ID, both suites; two application records, or none, so that the server keeps its
 * last flight), then
 * every Buffer reachable from each association (not through its host, the server) is checked:
 * none may be a slice of a pool slab, except the module-level constants several associations
 * share (one slab for the process, not one per association), and what the association's
 * buffers hold of their own stays under a bound. The same for the key material,
 * CIDs and client_random of a snapshot another pod adopts (shared associations).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';

import { DtlsClient } from '../../../src/dtls/client.js';
import { CipherSuite } from '../../../src/dtls/constants.js';
import { ManualClock } from '../../../src/time/clock.js';
import { openSnapshot, sealSnapshot } from '../../../src/dtls/snapshot.js';
import { DtlsServer } from '../../../src/dtls/server.js';
import type { DtlsAssociation } from '../../../src/dtls/association.js';
import { DTLS_SERVER_DEFAULTS } from '../../helpers/component-defaults.js';
import { bindUdp } from '../../helpers/processes.js';

const PSK = Buffer.from('0123456789abcdef');
const IDENTITY = 'demoPK01,device001,2,3600';
/**
 * Bytes of buffers an association may hold of its own: its key material and the few short
 * values beside it. Scratch for sealing and opening records is shared by all (it was 1 KiB per
 * long-lived CCM_8 cipher).
 */
const OWN_BYTES_LIMIT = 256;

/** Whether `v` is a slice of one of the pool's slabs (Buffer.poolSize bytes, shared). */
function fromPool(v: ArrayBufferView): boolean {
  return v.buffer.byteLength === Buffer.poolSize && v.byteLength < Buffer.poolSize;
}

/** Every ArrayBufferView reachable from `root` (own properties, Maps, Sets, arrays), by path. */
function views(root: object, skip: ReadonlySet<string>): Map<ArrayBufferView, string> {
  const found = new Map<ArrayBufferView, string>();
  const seen = new Set<object>();
  const walk = (v: unknown, path: string, depth: number): void => {
    if (v === null || (typeof v !== 'object' && typeof v !== 'function')) return;
    const o = v;
    if (seen.has(o) || depth > 12) return;
    seen.add(o);
    if (ArrayBuffer.isView(o)) {
      found.set(o, path);
      return;
    }
    if (o instanceof Map) {
      for (const [k, x] of o) {
        walk(k, `${path}<key>`, depth + 1);
        walk(x, `${path}<value>`, depth + 1);
      }
    } else if (o instanceof Set) {
      for (const x of o) walk(x, `${path}<item>`, depth + 1);
    }
    if (typeof o === 'function') return;
    for (const k of Reflect.ownKeys(o)) {
      if (typeof k === 'string' && skip.has(k)) continue;
      const d = Object.getOwnPropertyDescriptor(o, k);
      if (d !== undefined && 'value' in d) walk(d.value, `${path}.${String(k)}`, depth + 1);
    }
  };
  walk(root, '', 0);
  return found;
}

describe('established associations keep no slice of the shared Buffer pool', () => {
  let socket: Socket;
  let server: DtlsServer<string>;
  let port: number;
  before(async () => {
    ({ socket, port } = await bindUdp());
    server = new DtlsServer<string>({
      ...DTLS_SERVER_DEFAULTS,
      clock: new ManualClock(0, 1_000_000),
      send: (data, p, address) => socket.send(data, p, address),
      handler: {
        resolvePsk: (identity) =>
          identity.toString() === IDENTITY
            ? { ok: true, psk: PSK, principal: 'device001' }
            : { ok: false, alert: 'unknown_psk_identity', reason: 'unknown-device' },
        onData: (assoc: DtlsAssociation<string>, data) => void assoc.send(data),
        onUnknownRecord: () => undefined,
      },
    });
    socket.on('message', (msg, rinfo) => server.handleDatagram(msg, rinfo.address, rinfo.port));
  });
  after(async () => {
    server.close();
    await new Promise<void>((done) => socket.close(() => done()));
  });

  it('keys, IVs, CIDs, client_random and the rest are in allocations of their own', async () => {
    const clients: DtlsClient[] = [];
    try {
      for (const suite of [
        CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
        CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
      ]) {
        for (const connectionId of [undefined, Buffer.from('0a0b0c0d', 'hex')]) {
          // without data the server keeps its last flight (Finished) for retransmission
          for (const data of [true, false]) {
            const c = await DtlsClient.connect({
              host: '127.0.0.1',
              port,
              identity: IDENTITY,
              psk: PSK,
              cipherSuites: [suite],
              ...(connectionId !== undefined ? { connectionId } : {}),
            });
            clients.push(c);
            if (!data) continue;
            const echoed = new Promise<void>((r) => c.once('message', () => r()));
            // two records: the second makes the long-lived cipher objects
            c.send(Buffer.from('hello'));
            await echoed;
            const again = new Promise<void>((r) => c.once('message', () => r()));
            c.send(Buffer.from('again'));
            await again;
          }
        }
      }
      const all = [...server.listAssociations()];
      assert.equal(all.length, clients.length, 'one association per client');
      const perAssociation = all.map((a) => views(a, new Set(['host'])));
      // a view reachable from two associations is a shared constant, not per-association
      const seenOnce = new Set<ArrayBufferView>();
      const shared = new Set<ArrayBufferView>();
      for (const m of perAssociation) {
        for (const v of m.keys()) {
          if (seenOnce.has(v)) shared.add(v);
          else seenOnce.add(v);
        }
      }
      const pinned: string[] = [];
      const large: string[] = [];
      let owned = 0;
      perAssociation.forEach((m, i) => {
        // the memory of its own an association's buffers hold (each ArrayBuffer once)
        const own = new Set<ArrayBufferLike>();
        for (const [v, path] of m) {
          if (shared.has(v)) continue;
          owned++;
          if (fromPool(v)) pinned.push(`association ${i}${path} (${v.byteLength} bytes)`);
          else own.add(v.buffer);
        }
        let bytes = 0;
        for (const b of own) bytes += b.byteLength;
        // key block (≤ 96), client_random (32), CIDs, Finished (24), CCM chaining blocks (32)
        if (bytes > OWN_BYTES_LIMIT) large.push(`association ${i}: ${bytes} bytes`);
      });
      assert.ok(owned >= 4 * all.length, `the walk found each association's buffers (${owned})`);
      assert.deepEqual(pinned, [], 'slices of a pool slab kept by an association');
      assert.deepEqual(large, [], `associations holding more than ${OWN_BYTES_LIMIT} bytes`);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });
});

describe('an adopted snapshot keeps no slice of the shared Buffer pool', () => {
  it('keys, CIDs and client_random of an opened snapshot are in allocations of their own', () => {
    const key = randomBytes(32);
    for (const suite of [
      CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
      CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
    ]) {
      const ccm = suite === CipherSuite.TLS_PSK_WITH_AES_128_CCM_8;
      const dir = () => ({
        encKey: randomBytes(16),
        salt: ccm ? randomBytes(4) : Buffer.alloc(0),
        macKey: ccm ? Buffer.alloc(0) : randomBytes(32),
      });
      const blob = sealSnapshot(
        {
          suite,
          encryptThenMac: !ccm,
          extendedMasterSecret: true,
          epoch: 1,
          client: dir(),
          server: dir(),
          connectionId: randomBytes(8),
          peerConnectionId: randomBytes(4),
          address: '127.0.0.1',
          port: 5684,
          identity: IDENTITY,
          principal: 'device001',
          establishedAt: 1,
          handshakeDurationMs: 2,
          clientRandom: randomBytes(32),
        },
        key,
        'c:01',
      );
      const opened = openSnapshot(blob, key, 'c:01');
      assert.ok(opened !== undefined);
      const found = views(opened, new Set());
      assert.ok(found.size >= 8, `the walk found the snapshot's buffers (${found.size})`);
      const pinned = [...found]
        .filter(([v]) => fromPool(v))
        .map(([v, path]) => `${path} (${v.byteLength} bytes)`);
      assert.deepEqual(pinned, [], `suite 0x${suite.toString(16)}: slices of a pool slab`);
    }
  });
});
