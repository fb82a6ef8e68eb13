/**
 * The exchange layer's diagnostics channel (src/coap/events.ts): a duplicate request is
 * published on `coap-edge:coap.duplicate` with the endpoint's stats as its source, and no
 * message is built (publish is never called) while nobody subscribes.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';

import { Code, NON } from '../../../src/coap/constants.js';
import { CoapEndpoint } from '../../../src/coap/endpoint.js';
import {
  COAP_DUPLICATE_CHANNEL,
  coapDuplicateChannel,
  type CoapDuplicateEvent,
} from '../../../src/coap/events.js';
import { ManualClock } from '../../../src/time/clock.js';
import { FakePeer, req } from './exchange-harness.js';
import { COAP_ENDPOINT_DEFAULTS } from '../../helpers/component-defaults.js';

function endpoint(): CoapEndpoint<string> {
  return new CoapEndpoint<string>({
    ...COAP_ENDPOINT_DEFAULTS,
    handler: () => ({ code: Code.CHANGED }),
    clock: new ManualClock(1000),
    random: () => 0,
  });
}

/** Counts calls of the channel's publish (the only place a message is handed over). */
function countPublishes(): { count(): number; restore(): void } {
  let n = 0;
  const original = coapDuplicateChannel.publish.bind(coapDuplicateChannel);
  coapDuplicateChannel.publish = (m: unknown) => {
    n++;
    original(m);
  };
  return {
    count: () => n,
    restore: () => {
      delete (coapDuplicateChannel as { publish?: unknown }).publish;
    },
  };
}

describe('coap events (diagnostics_channel)', () => {
  test('a duplicate CON and a duplicate NON are published, with their endpoint as source', () => {
    const a = endpoint();
    const b = endpoint();
    const peer = new FakePeer();
    const events: CoapDuplicateEvent[] = [];
    const listener = (m: unknown): void => void events.push(m as CoapDuplicateEvent);
    subscribe(COAP_DUPLICATE_CHANNEL, listener);
    try {
      a.receive(peer, req({ mid: 11 }));
      assert.equal(events.length, 0, 'a new request is no duplicate');
      a.receive(peer, req({ mid: 11 }));
      b.receive(peer, req({ mid: 12, type: NON }));
      b.receive(peer, req({ mid: 12, type: NON }));
    } finally {
      unsubscribe(COAP_DUPLICATE_CHANNEL, listener);
      a.close();
      b.close();
    }
    assert.equal(events.length, 2);
    assert.equal(events[0]?.source, a.stats);
    assert.equal(events[0]?.messageId, 11);
    assert.equal(events[0]?.resent, true, 'the cached ACK went out again');
    assert.equal(events[1]?.source, b.stats);
    assert.equal(events[1]?.messageId, 12);
    assert.equal(events[1]?.resent, false, 'a NON duplicate is ignored');
    assert.equal(a.stats.duplicates, 1);
    assert.equal(b.stats.duplicates, 1);
  });

  test('nothing is published (no message built) while nobody subscribes', () => {
    const ep = endpoint();
    const peer = new FakePeer();
    const publishes = countPublishes();
    try {
      assert.equal(coapDuplicateChannel.hasSubscribers, false);
      for (let i = 0; i < 5; i++) ep.receive(peer, req({ mid: 21 }));
      assert.equal(ep.stats.duplicates, 4);
      assert.equal(publishes.count(), 0);
      // the counter does count: with a subscriber the same duplicates are published
      const listener = (): void => undefined;
      subscribe(COAP_DUPLICATE_CHANNEL, listener);
      try {
        ep.receive(peer, req({ mid: 21 }));
      } finally {
        unsubscribe(COAP_DUPLICATE_CHANNEL, listener);
      }
      assert.equal(publishes.count(), 1);
    } finally {
      publishes.restore();
      ep.close();
    }
  });
});
