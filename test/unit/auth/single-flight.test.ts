import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SingleFlight } from '../../../src/auth/single-flight.js';

function deferred<T>(): {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: Error) => void;
} {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('SingleFlight', () => {
  it('100 concurrent calls for one key run the work once', async () => {
    let joins = 0;
    const sf = new SingleFlight<string, number>(() => joins++);
    const d = deferred<number>();
    let calls = 0;
    const all = Array.from({ length: 100 }, () =>
      sf.run('k', () => {
        calls++;
        return d.promise;
      }),
    );
    assert.equal(calls, 1);
    assert.equal(joins, 99);
    assert.equal(sf.size, 1);
    d.resolve(42);
    assert.deepEqual(new Set(await Promise.all(all)), new Set([42]));
    assert.equal(sf.size, 0, 'nothing is kept after the work settles');
  });

  it('different keys run separately', async () => {
    const sf = new SingleFlight<string, string>();
    let calls = 0;
    const work = (v: string) => () => {
      calls++;
      return Promise.resolve(v);
    };
    const [a, b] = await Promise.all([sf.run('a', work('A')), sf.run('b', work('B'))]);
    assert.equal(a, 'A');
    assert.equal(b, 'B');
    assert.equal(calls, 2);
  });

  it('a failure reaches every joiner and is not remembered', async () => {
    const sf = new SingleFlight<string, number>();
    const d = deferred<number>();
    const p1 = sf.run('k', () => d.promise);
    const p2 = sf.run('k', () => Promise.resolve(0));
    d.reject(new Error('boom'));
    await assert.rejects(p1, /boom/);
    await assert.rejects(p2, /boom/);
    assert.equal(await sf.run('k', () => Promise.resolve(7)), 7);
  });

  it('work that throws synchronously rejects and leaves nothing behind', async () => {
    const sf = new SingleFlight<string, number>();
    await assert.rejects(
      sf.run('k', () => {
        throw new Error('sync');
      }),
      /sync/,
    );
    assert.equal(sf.size, 0);
    assert.equal(await sf.run('k', () => Promise.resolve(1)), 1);
  });
});
