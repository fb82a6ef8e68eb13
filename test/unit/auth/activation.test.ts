/** The activator over the in-process store, with the devices file or a fake registry. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  DeviceActivator,
  GENERATED_SECRET_LENGTH,
  randomBase62,
} from '../../../src/auth/activation.js';
import { MemoryActivationStore } from '../../../src/auth/activation-store.js';
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

const file = DevicesFile.fromObject({
  products: [
    { productKey: 'dyn', productSecret: 'P1', dynamicRegistration: true },
    { productKey: 'static', productSecret: 'P2' },
  ],
  devices: [
    { productKey: 'dyn', deviceKey: 'listed', deviceSecret: 'listed-S3CRET', assetId: 'A1' },
  ],
});

function setup(o: { file?: DevicesFile; registry?: Registry; storeMax?: number } = {}) {
  const stats = new AuthStats();
  const mem = { max: 100, ttlMs: 60_000, negativeTtlMs: 1_000 };
  const store = new MemoryActivationStore(o.storeMax ?? 100);
  const chain = new SecretChain({
    stats,
    devices: new MemoryCache<DeviceRecord>(mem),
    products: new MemoryCache<ProductRecord>(mem),
    file: o.file,
    registry: o.registry,
    localActivations: store,
  });
  const activator = new DeviceActivator({
    source: chain,
    store,
    registry: o.registry,
    file: o.file,
    stats,
    onActivated: (rec) => chain.remember(rec),
  });
  return { chain, activator, stats, store };
}

describe('DeviceActivator with the devices file', () => {
  it('generates a secret once and returns the same one after that', async () => {
    const { activator, chain, stats } = setup({ file });
    const first = await activator.activate('dyn', 'new-device');
    assert.ok(first.ok);
    assert.match(first.deviceSecret, new RegExp(`^[0-9A-Za-z]{${GENERATED_SECRET_LENGTH}}$`));
    assert.match(first.assetId, /^[0-9A-Za-z]{16}$/);
    const again = await activator.activate('dyn', 'new-device');
    assert.deepEqual(again, first);
    assert.equal(stats.activations.generated, 1);
    assert.equal(stats.activations.stored, 1);
    // a secureMode 2 lookup finds it, synchronously
    const rec = chain.device('dyn', 'new-device');
    assert.ok(!isPromise(rec));
    assert.equal(rec?.deviceSecret, first.deviceSecret);
  });

  it('gives a listed device its own secret', async () => {
    const { activator, stats } = setup({ file });
    assert.deepEqual(await activator.activate('dyn', 'listed'), {
      ok: true,
      deviceSecret: 'listed-S3CRET',
      assetId: 'A1',
    });
    assert.equal(stats.activations.file, 1);
  });

  it('concurrent activations of one device share one', async () => {
    const { activator, stats } = setup({ file });
    const all = await Promise.all(Array.from({ length: 20 }, () => activator.activate('dyn', 'x')));
    assert.equal(new Set(all.map((r) => (r.ok ? r.deviceSecret : ''))).size, 1);
    assert.equal(stats.activations.generated, 1);
    assert.equal(stats.singleFlightJoins, 19);
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

  it('refuses when the in-process store is full', async () => {
    const { activator } = setup({ file, storeMax: 1 });
    assert.ok((await activator.activate('dyn', 'a')).ok);
    assert.deepEqual(await activator.activate('dyn', 'b'), { ok: false, reason: 'unavailable' });
  });
});

class ActivatingRegistry implements Registry {
  activations = 0;
  answer: RegistryActivation = { kind: 'activated', deviceSecret: 'reg-S3CRET', assetId: 'R1' };
  deviceRec: DeviceRecord | undefined;
  fail = false;

  product(pk: string): Promise<ProductRecord | undefined> {
    return Promise.resolve(pk === 'dyn' ? productRecord('dyn', 'P', true) : undefined);
  }

  device(): Promise<DeviceRecord | undefined> {
    return Promise.resolve(this.deviceRec);
  }

  activate(): Promise<RegistryActivation> {
    this.activations++;
    if (this.fail) return Promise.reject(new SecretSourceError('SOURCE_TIMEOUT', 'slow'));
    return Promise.resolve(this.answer);
  }
}

describe('DeviceActivator with a registry', () => {
  it('activates upstream once', async () => {
    const registry = new ActivatingRegistry();
    const { activator, stats } = setup({ registry });
    const r = await activator.activate('dyn', 'd1');
    assert.deepEqual(r, { ok: true, deviceSecret: 'reg-S3CRET', assetId: 'R1' });
    assert.deepEqual(await activator.activate('dyn', 'd1'), r);
    assert.equal(registry.activations, 1);
    assert.equal(stats.activations.registry, 1);
  });

  it('on 409 reads the secret with GET /devices', async () => {
    const registry = new ActivatingRegistry();
    registry.answer = { kind: 'already-activated' };
    registry.deviceRec = deviceRecord('dyn', 'd1', 'earlier-S3CRET', 'R0');
    const { activator } = setup({ registry });
    assert.deepEqual(await activator.activate('dyn', 'd1'), {
      ok: true,
      deviceSecret: 'earlier-S3CRET',
      assetId: 'R0',
    });
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
    registry.fail = false;
    registry.answer = { kind: 'already-activated' };
    assert.deepEqual(await activator.activate('dyn', 'd'), { ok: false, reason: 'unavailable' });
  });
});

describe('randomBase62', () => {
  it('gives the requested length from the base62 alphabet', () => {
    for (const n of [1, 16, 32, 100])
      assert.match(randomBase62(n), new RegExp(`^[0-9A-Za-z]{${n}}$`));
    assert.notEqual(randomBase62(32), randomBase62(32));
  });
});
