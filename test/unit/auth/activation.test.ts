/** The one-shot activator over the in-process store, with the devices file or a fake registry. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceActivator, randomBase62 } from '../../../src/auth/activation.js';
import {
  MemoryActivationStore,
  decodeActivation,
  encodeActivation,
  type ActivationEntry,
  type ActivationStore,
} from '../../../src/auth/activation-store.js';
import { SecretChain } from '../../../src/auth/chain.js';
import {
  DevicesFile,
  type DeviceRecord,
  type ProductRecord,
} from '../../../src/auth/devices-file.js';
import { MemoryCache } from '../../../src/auth/memory-cache.js';
import { deviceRecord, productRecord } from '../../../src/auth/records.js';
import type { Registry, RegistryActivation } from '../../../src/auth/registry-client.js';
import { isPromise, SecretSourceError } from '../../../src/auth/source.js';
import { AuthStats } from '../../../src/auth/stats.js';
import { ManualClock } from '../../../src/time/clock.js';

const file = DevicesFile.fromObject({
  products: [
    { productKey: 'dyn', productSecret: 'P1', dynamicRegistration: true },
    { productKey: 'static', productSecret: 'P2' },
  ],
  devices: [
    { productKey: 'dyn', deviceKey: 'listed', deviceSecret: 'listed-S3CRET', assetId: 'A1' },
    { productKey: 'dyn', deviceKey: 'other', deviceSecret: 'other-S3CRET' },
  ],
});

/** The in-process store, counting claims; `failClaims` makes every claim reject. */
class CountingStore implements ActivationStore {
  readonly inner: MemoryActivationStore;
  claims = 0;
  failClaims = false;
  storeButFailClaims = false;
  releases = 0;
  /** Releases that reject before one goes through. */
  failReleases = 0;
  constructor(max: number) {
    this.inner = new MemoryActivationStore(max);
  }
  get(pk: string, dk: string): ActivationEntry | undefined {
    return this.inner.get(pk, dk);
  }
  claim(pk: string, dk: string, e: ActivationEntry): Promise<boolean> {
    this.claims++;
    if (this.failClaims) return Promise.reject(new SecretSourceError('SOURCE_UNAVAILABLE', 'x'));
    if (this.storeButFailClaims) {
      // written, but the answer (or the replicas' confirmation) is lost: a master crash
      return this.inner
        .claim(pk, dk, e)
        .then(() => Promise.reject(new SecretSourceError('SOURCE_UNAVAILABLE', 'x')));
    }
    return this.inner.claim(pk, dk, e);
  }
  release(pk: string, dk: string, e: ActivationEntry): Promise<boolean> {
    this.releases++;
    if (this.failReleases > 0) {
      this.failReleases--;
      return Promise.reject(new SecretSourceError('SOURCE_UNAVAILABLE', 'x'));
    }
    return this.inner.release(pk, dk, e);
  }
}

function setup(
  o: { file?: DevicesFile; registry?: Registry; storeMax?: number; clock?: ManualClock } = {},
) {
  const stats = new AuthStats();
  const mem = { max: 100, ttlMs: 60_000, negativeTtlMs: 1_000 };
  const store = new CountingStore(o.storeMax ?? 100);
  const chain = new SecretChain({
    stats,
    devices: new MemoryCache<DeviceRecord>(mem),
    products: new MemoryCache<ProductRecord>(mem),
    file: o.file,
    registry: o.registry,
    localActivations: store.inner,
  });
  const activator = new DeviceActivator({
    source: chain,
    store,
    registry: o.registry,
    file: o.file,
    stats,
    known: mem,
    onActivated: (rec) => chain.remember(rec),
    clock: o.clock,
  });
  return { chain, activator, stats, store };
}

/** Lets the not-awaited store write of `connected` finish. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('DeviceActivator with the devices file', () => {
  it('gives a listed device its own secret once; asking again is refused', async () => {
    const { activator, stats } = setup({ file });
    assert.deepEqual(await activator.activate('dyn', 'listed'), {
      ok: true,
      deviceSecret: 'listed-S3CRET',
      assetId: 'A1',
    });
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await activator.activate('dyn', 'listed'), {
        ok: false,
        reason: 'already-activated',
      });
    }
    assert.equal(stats.activations.file, 1);
    assert.equal(stats.activations['already-activated'], 3);
  });

  it('makes up nothing for a device the file does not list', async () => {
    const { activator, store, stats, chain } = setup({ file });
    for (let i = 0; i < 2; i++) {
      assert.deepEqual(await activator.activate('dyn', 'new-device'), {
        ok: false,
        reason: 'unknown-device',
      });
    }
    assert.equal(store.inner.size, 0);
    assert.equal(stats.activations['unknown-device'], 2);
    assert.equal(chain.device('dyn', 'new-device'), undefined);
  });

  it('concurrent activations of one device: one gets the secret, the rest are refused', async () => {
    const { activator, stats } = setup({ file });
    const all = await Promise.all(
      Array.from({ length: 20 }, () => activator.activate('dyn', 'listed')),
    );
    assert.equal(all.filter((r) => r.ok).length, 1);
    assert.equal(all.filter((r) => !r.ok && r.reason === 'already-activated').length, 19);
    assert.equal(stats.activations.file, 1);
  });

  it('a device that connected in secureMode 2 is refused; the mark is written once', async () => {
    const { activator, store, chain } = setup({ file });
    activator.connected('dyn', 'other');
    await settle();
    activator.connected('dyn', 'other');
    activator.connected('dyn', 'other');
    await settle();
    assert.equal(store.claims, 1, 'known afterwards: no more writes');
    assert.deepEqual(await activator.activate('dyn', 'other'), {
      ok: false,
      reason: 'already-activated',
    });
    // the mark is not a record: the file still answers secureMode 2 lookups
    assert.equal((chain.device('dyn', 'other') as DeviceRecord).deviceSecret, 'other-S3CRET');
  });

  it('a mark that could not be written is tried again on the next handshake', async () => {
    const { activator, store, stats } = setup({ file });
    store.failClaims = true;
    activator.connected('dyn', 'other');
    await settle();
    assert.equal(stats.activationStoreErrors, 1);
    store.failClaims = false;
    activator.connected('dyn', 'other');
    await settle();
    assert.equal(store.claims, 2);
    assert.deepEqual(await activator.activate('dyn', 'other'), {
      ok: false,
      reason: 'already-activated',
    });
  });

  it('an activated device is found by a secureMode 2 lookup, synchronously', async () => {
    const { activator, chain } = setup({ registry: new ActivatingRegistry() });
    const r = await activator.activate('dyn', 'd1');
    assert.ok(r.ok);
    const rec = chain.device('dyn', 'd1');
    assert.ok(!isPromise(rec));
    assert.equal(rec?.deviceSecret, 'reg-S3CRET');
  });

  it('refuses unknown products and products without dynamic registration', async () => {
    const { activator, stats } = setup({ file });
    assert.deepEqual(await activator.activate('nope', 'd'), {
      ok: false,
      reason: 'unknown-product',
    });
    assert.deepEqual(await activator.activate('static', 'd'), {
      ok: false,
      reason: 'dynamic-registration-disabled',
    });
    assert.equal(stats.activations['unknown-product'], 1);
    assert.equal(stats.activations['dynamic-registration-disabled'], 1);
  });

  it('a refused claim stored all the same is released, in the background until the store answers (a master crash)', async () => {
    const clock = new ManualClock();
    const { activator, store, stats } = setup({ file, clock });
    store.storeButFailClaims = true;
    store.failReleases = 3;
    assert.deepEqual(await activator.activate('dyn', 'listed'), {
      ok: false,
      reason: 'unavailable',
    });
    assert.equal(store.releases, 1, 'released at once, and failed');
    assert.notEqual(store.inner.get('dyn', 'listed'), undefined, 'the claim is still stored');
    // retried after 250, 500 and 1000 ms; the fourth attempt reaches the store
    for (const [ms, releases] of [
      [249, 1],
      [1, 2],
      [500, 3],
      [1_000, 4],
    ] as const) {
      await clock.advanceAsync(ms, 1);
      assert.equal(store.releases, releases, `after +${ms} ms`);
    }
    assert.equal(store.inner.get('dyn', 'listed'), undefined, 'released');
    assert.equal(stats.activationsReleased, 1);
    // the device asks again and gets its secret
    store.storeButFailClaims = false;
    const again = await activator.activate('dyn', 'listed');
    assert.equal(again.ok, true);
  });

  it('a release that never reaches the store is given up after 10 attempts', async () => {
    const clock = new ManualClock();
    const { activator, store, stats } = setup({ file, clock });
    store.storeButFailClaims = true;
    store.failReleases = 100;
    await activator.activate('dyn', 'listed');
    await clock.advanceAsync(60_000, 100);
    assert.equal(store.releases, 10);
    assert.equal(stats.activationReleasesAbandoned, 1);
  });

  it('refuses (5.03) when the activation cannot be recorded', async () => {
    const { activator } = setup({ file, storeMax: 0 });
    assert.deepEqual(await activator.activate('dyn', 'listed'), {
      ok: false,
      reason: 'unavailable',
    });
  });
});

class ActivatingRegistry implements Registry {
  activations = 0;
  deviceReads = 0;
  answer: RegistryActivation = { kind: 'activated', deviceSecret: 'reg-S3CRET', assetId: 'R1' };
  deviceRec: DeviceRecord | undefined;
  fail = false;

  product(pk: string): Promise<ProductRecord | undefined> {
    return Promise.resolve(pk === 'dyn' ? productRecord('dyn', 'P', true) : undefined);
  }

  device(): Promise<DeviceRecord | undefined> {
    this.deviceReads++;
    return Promise.resolve(this.deviceRec);
  }

  activate(): Promise<RegistryActivation> {
    this.activations++;
    if (this.fail) return Promise.reject(new SecretSourceError('SOURCE_TIMEOUT', 'slow'));
    return Promise.resolve(this.answer);
  }
}

describe('DeviceActivator with a registry', () => {
  it('activates upstream once; asking again is refused without asking the registry', async () => {
    const registry = new ActivatingRegistry();
    const { activator, stats } = setup({ registry });
    const r = await activator.activate('dyn', 'd1');
    assert.deepEqual(r, { ok: true, deviceSecret: 'reg-S3CRET', assetId: 'R1' });
    assert.deepEqual(await activator.activate('dyn', 'd1'), {
      ok: false,
      reason: 'already-activated',
    });
    assert.equal(registry.activations, 1);
    assert.equal(stats.activations.registry, 1);
  });

  it('409 is final: refused, and the secret is never read with GET /devices', async () => {
    const registry = new ActivatingRegistry();
    registry.answer = { kind: 'already-activated' };
    registry.deviceRec = deviceRecord('dyn', 'd1', 'earlier-S3CRET', 'R0');
    const { activator } = setup({ registry });
    assert.deepEqual(await activator.activate('dyn', 'd1'), {
      ok: false,
      reason: 'already-activated',
    });
    assert.equal(registry.deviceReads, 0);
  });

  it('a secret the registry handed out is returned even when the store cannot record it', async () => {
    const registry = new ActivatingRegistry();
    const { activator, store, stats } = setup({ registry });
    store.failClaims = true;
    assert.deepEqual(await activator.activate('dyn', 'd2'), {
      ok: true,
      deviceSecret: 'reg-S3CRET',
      assetId: 'R1',
    });
    assert.equal(stats.activationStoreErrors, 1);
  });

  it('maps the registry refusals and failures', async () => {
    const registry = new ActivatingRegistry();
    const { activator } = setup({ registry });
    registry.answer = { kind: 'dynamic-registration-disabled' };
    assert.deepEqual(await activator.activate('dyn', 'a'), {
      ok: false,
      reason: 'dynamic-registration-disabled',
    });
    registry.answer = { kind: 'unknown-product' };
    assert.deepEqual(await activator.activate('dyn', 'b'), {
      ok: false,
      reason: 'unknown-product',
    });
    registry.fail = true;
    assert.deepEqual(await activator.activate('dyn', 'c'), { ok: false, reason: 'unavailable' });
    // nothing was recorded for the refused ones: a later attempt asks the registry again
    registry.fail = false;
    registry.answer = { kind: 'activated', deviceSecret: 'reg-S3CRET', assetId: 'R1' };
    assert.ok((await activator.activate('dyn', 'c')).ok);
  });
});

describe('activation store entries', () => {
  it('round-trip activations and secureMode 2 marks; reject anything else', () => {
    const a = { deviceSecret: 'S', assetId: '', source: 'file', activatedAt: 't' } as const;
    assert.deepEqual(decodeActivation(encodeActivation(a)), a);
    const withId = { ...a, claimId: 'c1' };
    assert.deepEqual(decodeActivation(encodeActivation(withId)), withId);
    const m = { mark: 'connected', connectedAt: '2025-01-01T00:00:00.000Z' } as const;
    assert.deepEqual(decodeActivation(encodeActivation(m)), m);
    assert.doesNotMatch(encodeActivation(m), /deviceSecret/);
    // written by earlier versions for made-up secrets: still an activation
    const old = '{"deviceSecret":"S","assetId":"","source":"generated","activatedAt":"t"}';
    assert.deepEqual(decodeActivation(old), JSON.parse(old));
    for (const bad of ['{}', 'null', '[', '{"mark":"other","connectedAt":"t"}']) {
      assert.equal(decodeActivation(bad), undefined, bad);
    }
  });
});

describe('randomBase62', () => {
  it('gives the requested length from the base62 alphabet', () => {
    for (const n of [1, 16, 32, 100])
      assert.match(randomBase62(n), new RegExp(`^[0-9A-Za-z]{${n}}$`));
    assert.notEqual(randomBase62(32), randomBase62(32));
  });
});
