/**
 * The chain without I/O: a fake registry (counting calls, answering when told), the
 * in-process LRU with an injected clock, the devices file, the in-process activation store.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryActivationStore } from '../../../src/auth/activation-store.js';
import { SecretChain } from '../../../src/auth/chain.js';
import {
  DevicesFile,
  type DeviceRecord,
  type ProductRecord,
} from '../../../src/auth/devices-file.js';
import { MemoryCache } from '../../../src/auth/memory-cache.js';
import { PskResolver } from '../../../src/auth/psk-resolver.js';
import { deviceRecord, productRecord } from '../../../src/auth/records.js';
import type { Registry, RegistryActivation } from '../../../src/auth/registry-client.js';
import { isPromise, SecretSourceError } from '../../../src/auth/source.js';
import { AuthStats } from '../../../src/auth/stats.js';
import { derivePsk } from '../../../src/enos/index.js';

const SECRET = 'dev-S3CRET-unit';

class FakeRegistry implements Registry {
  deviceCalls = 0;
  productCalls = 0;
  devices = new Map<string, DeviceRecord>();
  products = new Map<string, ProductRecord>();
  fail: Error | undefined;
  /** When set, device lookups wait for this promise. */
  gate: Promise<void> | undefined;

  async device(pk: string, dk: string): Promise<DeviceRecord | undefined> {
    this.deviceCalls++;
    if (this.gate !== undefined) await this.gate;
    if (this.fail !== undefined) throw this.fail;
    return this.devices.get(`${pk}/${dk}`);
  }

  product(pk: string): Promise<ProductRecord | undefined> {
    this.productCalls++;
    if (this.fail !== undefined) return Promise.reject(this.fail);
    return Promise.resolve(this.products.get(pk));
  }

  activate(): Promise<RegistryActivation> {
    return Promise.reject(new Error('not used'));
  }
}

function setup(o: { file?: DevicesFile; registry?: FakeRegistry; local?: boolean } = {}) {
  let t = 0;
  const now = () => t;
  const stats = new AuthStats();
  const mem = { max: 100, ttlMs: 10_000, negativeTtlMs: 1_000, now };
  const chain = new SecretChain({
    stats,
    devices: new MemoryCache<DeviceRecord>(mem),
    products: new MemoryCache<ProductRecord>(mem),
    file: o.file,
    registry: o.registry,
    localActivations: o.local === true ? new MemoryActivationStore(100) : undefined,
  });
  return { chain, stats, advance: (ms: number) => (t += ms) };
}

describe('SecretChain with a registry', () => {
  it('100 concurrent lookups of one device make one registry call', async () => {
    const registry = new FakeRegistry();
    registry.devices.set('pk/dk', deviceRecord('pk', 'dk', SECRET, 'a1'));
    let open!: () => void;
    registry.gate = new Promise<void>((r) => (open = r));
    const { chain, stats } = setup({ registry });
    const lookups = Array.from({ length: 100 }, () => chain.device('pk', 'dk'));
    assert.ok(lookups.every(isPromise));
    open();
    const recs = await Promise.all(lookups);
    assert.equal(registry.deviceCalls, 1);
    assert.equal(stats.singleFlightJoins, 99);
    assert.ok(recs.every((r) => r?.deviceSecret === SECRET));
    assert.equal(stats.lookups.registry.hit, 1);
  });

  it('answers from memory synchronously after the first lookup (PskResolver fast path)', async () => {
    const registry = new FakeRegistry();
    registry.devices.set('pk/dk', deviceRecord('pk', 'dk', SECRET, undefined));
    const { chain, stats } = setup({ registry });
    const resolver = new PskResolver(chain);
    const identity = Buffer.from('pk,dk,2,300');
    const first = resolver.resolve(identity);
    assert.ok(isPromise(first), 'first lookup goes to the registry');
    const r1 = await first;
    assert.equal(r1.ok, true);
    const second = resolver.resolve(identity);
    assert.ok(!isPromise(second), 'a memory hit is not a promise');
    assert.ok(second.ok);
    assert.deepEqual(second.psk, derivePsk(SECRET));
    assert.equal(registry.deviceCalls, 1);
    assert.equal(stats.lookups.memory.hit, 1);
  });

  it('remembers a 404 for the negative TTL, then asks again', async () => {
    const registry = new FakeRegistry();
    const { chain, stats, advance } = setup({ registry });
    assert.equal(await chain.device('pk', 'nobody'), undefined);
    for (let i = 0; i < 5; i++) {
      const r = chain.device('pk', 'nobody');
      assert.ok(!isPromise(r), 'a remembered miss answers synchronously');
      assert.equal(r, undefined);
    }
    assert.equal(registry.deviceCalls, 1);
    assert.equal(stats.lookups.memory['negative-hit'], 5);
    advance(1_001);
    registry.devices.set('pk/nobody', deviceRecord('pk', 'nobody', SECRET, undefined));
    assert.equal((await chain.device('pk', 'nobody'))?.deviceSecret, SECRET);
    assert.equal(registry.deviceCalls, 2);
  });

  it('forgets a record after the memory TTL', async () => {
    const registry = new FakeRegistry();
    registry.products.set('pk', productRecord('pk', 'P', true));
    const { chain, advance } = setup({ registry });
    await chain.product('pk');
    assert.equal(registry.productCalls, 1);
    advance(9_999);
    assert.ok(!isPromise(chain.product('pk')));
    advance(2);
    assert.ok(isPromise(chain.product('pk')));
  });

  it('a failure rejects, is counted and is not cached', async () => {
    const registry = new FakeRegistry();
    registry.fail = new SecretSourceError('SOURCE_TIMEOUT', 'registry device: too slow');
    const { chain, stats } = setup({ registry });
    await assert.rejects(Promise.resolve(chain.device('pk', 'dk')), { code: 'SOURCE_TIMEOUT' });
    registry.fail = new SecretSourceError('SOURCE_UNAVAILABLE', 'registry device: status 500');
    await assert.rejects(Promise.resolve(chain.device('pk', 'dk')), { code: 'SOURCE_UNAVAILABLE' });
    assert.equal(stats.lookups.registry.timeout, 1);
    assert.equal(stats.lookups.registry.error, 1);
    registry.fail = undefined;
    registry.devices.set('pk/dk', deviceRecord('pk', 'dk', SECRET, undefined));
    assert.equal((await chain.device('pk', 'dk'))?.deviceSecret, SECRET);
    assert.equal(registry.deviceCalls, 3);
  });

  it('maps a foreign error to SOURCE_UNAVAILABLE without its message', async () => {
    const registry = new FakeRegistry();
    registry.fail = new Error(`leaky ${SECRET}`);
    const { chain } = setup({ registry });
    await assert.rejects(Promise.resolve(chain.device('pk', 'dk')), (err: unknown) => {
      assert.ok(err instanceof SecretSourceError);
      assert.equal(err.code, 'SOURCE_UNAVAILABLE');
      assert.ok(!err.message.includes(SECRET));
      return true;
    });
  });
});

describe('SecretChain with a devices file only', () => {
  const file = DevicesFile.fromObject({
    products: [{ productKey: 'pk', productSecret: 'P-secret', dynamicRegistration: true }],
    devices: [{ productKey: 'pk', deviceKey: 'dk', deviceSecret: SECRET }],
  });

  it('answers every lookup synchronously', () => {
    const { chain, stats } = setup({ file, local: true });
    const d = chain.device('pk', 'dk');
    assert.ok(!isPromise(d));
    assert.equal(d?.deviceSecret, SECRET);
    const unknown = chain.device('pk', 'other');
    assert.ok(!isPromise(unknown));
    assert.equal(unknown, undefined);
    const p = chain.product('pk');
    assert.ok(!isPromise(p));
    assert.equal(p?.dynamicRegistration, true);
    assert.equal(stats.lookups.file.hit, 2);
    assert.equal(stats.lookups.file.miss, 1);
  });

  it('the file wins over the registry for the devices it lists', async () => {
    const registry = new FakeRegistry();
    const { chain } = setup({ file, registry });
    assert.equal((chain.device('pk', 'dk') as DeviceRecord).deviceSecret, SECRET);
    assert.equal(await chain.device('pk', 'other'), undefined);
    assert.equal(registry.deviceCalls, 1);
  });
});
