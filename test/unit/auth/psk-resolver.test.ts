/**
 * PskResolver keeps the key derived from each record's secret: the answers must stay exactly
 * derivePsk(secret), in a buffer of the caller's own, and follow a changed secret.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { DeviceRecord, ProductRecord } from '../../../src/auth/devices-file.js';
import { PskResolver } from '../../../src/auth/psk-resolver.js';
import { deviceRecord, productRecord } from '../../../src/auth/records.js';
import { isPromise, type SecretSource } from '../../../src/auth/source.js';
import { derivePsk } from '../../../src/enos/index.js';

/** A source answering from plain objects, synchronously; the test may swap or edit them. */
class FixedSource implements SecretSource {
  devices = new Map<string, DeviceRecord>();
  products = new Map<string, ProductRecord>();
  device(pk: string, dk: string): DeviceRecord | undefined {
    return this.devices.get(`${pk}/${dk}`);
  }
  product(pk: string): ProductRecord | undefined {
    return this.products.get(pk);
  }
}

function pskOf(resolver: PskResolver, identity: string): Buffer {
  const r = resolver.resolve(Buffer.from(identity));
  assert.ok(!isPromise(r));
  assert.ok(r.ok, 'resolved');
  return r.psk;
}

describe('PskResolver key derivation', () => {
  it('answers derivePsk(secret) every time, in a buffer the caller may wipe', () => {
    const source = new FixedSource();
    source.devices.set('pk/dk', deviceRecord('pk', 'dk', 'secret-one', undefined));
    const resolver = new PskResolver(source);
    const expected = derivePsk('secret-one');
    const first = pskOf(resolver, 'pk,dk,2,300');
    assert.deepEqual(first, expected);
    first.fill(0);
    const second = pskOf(resolver, 'pk,dk,2,300');
    assert.deepEqual(second, expected);
  });

  it('follows a new record and a secret changed in place', () => {
    const source = new FixedSource();
    source.devices.set('pk/dk', deviceRecord('pk', 'dk', 'secret-one', undefined));
    const resolver = new PskResolver(source);
    assert.deepEqual(pskOf(resolver, 'pk,dk,2,300'), derivePsk('secret-one'));
    source.devices.set('pk/dk', deviceRecord('pk', 'dk', 'secret-two', undefined));
    assert.deepEqual(pskOf(resolver, 'pk,dk,2,300'), derivePsk('secret-two'));
    // records are frozen in this code base; a mutable one must still not keep a stale key
    const mutable = { productKey: 'pk', deviceKey: 'dk', deviceSecret: 'a', assetId: undefined };
    source.devices.set('pk/dk', mutable);
    assert.deepEqual(pskOf(resolver, 'pk,dk,2,300'), derivePsk('a'));
    mutable.deviceSecret = 'b';
    assert.deepEqual(pskOf(resolver, 'pk,dk,2,300'), derivePsk('b'));
  });

  it('derives product keys (secureMode 3) the same way', () => {
    const source = new FixedSource();
    source.products.set('pk', productRecord('pk', 'product-secret', true));
    const resolver = new PskResolver(source);
    const a = pskOf(resolver, 'pk,dk1,3,300');
    const b = pskOf(resolver, 'pk,dk2,3,300');
    assert.deepEqual(a, derivePsk('product-secret'));
    assert.deepEqual(b, derivePsk('product-secret'));
    a.fill(0);
    assert.deepEqual(pskOf(resolver, 'pk,dk3,3,300'), derivePsk('product-secret'));
  });
});
