import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { createRequire } from 'node:module';
import { once } from 'node:events';
import type * as DnsModule from 'node:dns';

import { UdpEndpoint, literalLookup } from '../../../src/transport/udp.js';
import { inCI } from '../../helpers/tools.js';

// dgram takes `dns.lookup` from the CommonJS module object when a socket is created, so a
// wrapper put there sees every lookup of a socket that uses the default
const dns = createRequire(import.meta.url)('node:dns') as typeof DnsModule;

async function peer(address: string): Promise<Socket> {
  const s = createSocket(address.includes(':') ? 'udp6' : 'udp4');
  s.bind(0, address);
  await once(s, 'listening');
  return s;
}

describe('literalLookup', () => {
  test('an IPv4 or IPv6 literal is answered before it returns, with its family', () => {
    for (const [address, family] of [
      ['192.0.2.7', 4],
      ['2001:db8::1', 6],
      ['::ffff:192.0.2.7', 6],
    ] as const) {
      let got: [unknown, string, number] | undefined;
      literalLookup(address, 4, (err, a, f) => {
        got = [err, a, f];
      });
      assert.deepEqual(got, [null, address, family]);
    }
  });

  test('a name still resolves through dns.lookup', async () => {
    const [address, family] = await new Promise<[string, number]>((resolve, reject) => {
      literalLookup('localhost', 4, (err, a, f) => (err ? reject(err) : resolve([a, f])));
    });
    assert.equal(family, 4);
    assert.match(address, /^127\./);
  });
});

describe('UdpEndpoint', () => {
  test('sends without dns.lookup and delivers to the address given', async () => {
    const rx = await peer('127.0.0.1');
    const original = dns.lookup;
    let lookups = 0;
    const counting = ((...args: Parameters<typeof original>) => {
      lookups++;
      return (original as (...a: unknown[]) => unknown)(...args);
    }) as typeof original;
    dns.lookup = counting;
    let ep: UdpEndpoint | undefined;
    try {
      ep = await UdpEndpoint.bind({ bind: '127.0.0.1', port: 0 });
      const got: string[] = [];
      const all = new Promise<void>((resolve) => {
        rx.on('message', (m) => {
          got.push(m.toString());
          if (got.length === 3) resolve();
        });
      });
      for (const m of ['a', 'b', 'c']) ep.send(Buffer.from(m), rx.address().port, '127.0.0.1');
      await all;
      assert.deepEqual(got.sort(), ['a', 'b', 'c']);
      assert.equal(lookups, 0);
      assert.equal(ep.sendErrors, 0);
    } finally {
      dns.lookup = original;
      rx.close();
      await ep?.close();
    }
  });

  test('a send the kernel refuses is counted in sendErrors, not thrown', async () => {
    const ep = await UdpEndpoint.bind({ bind: '127.0.0.1', port: 0 });
    try {
      // larger than any UDP datagram: EMSGSIZE from sendmsg
      ep.send(Buffer.alloc(70_000), 9, '127.0.0.1');
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(ep.sendErrors, 1);
    } finally {
      await ep.close();
    }
  });

  test('an IPv6 endpoint answers its peer', async (t) => {
    let ep: UdpEndpoint;
    try {
      ep = await UdpEndpoint.bind({ bind: '::1', port: 0 });
    } catch (e: unknown) {
      // CI's machines have ::1: there, its absence is a broken machine, not a reason to skip
      if (inCI()) throw e;
      t.skip('no IPv6 loopback on this machine');
      return;
    }
    const rx = await peer('::1');
    try {
      const got = once(rx, 'message');
      ep.send(Buffer.from('v6'), rx.address().port, '::1');
      const [msg] = (await got) as [Buffer];
      assert.equal(msg.toString(), 'v6');
    } finally {
      rx.close();
      await ep.close();
    }
  });
});
