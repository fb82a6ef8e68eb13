/**
 * The keep-alive timer coap-edge hands mqtt.js (`bridge/mqtt/keepalive-timer.ts`), driven by
 * mqtt.js's own KeepaliveManager on a ManualClock: the ping and the timeout come when they
 * would with a Node interval, a restart (what every PUBACK does) moves them, and a restart
 * sets no host timer while one is pending.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KeepaliveManager, type MqttClient } from 'mqtt';
import { KeepaliveTimer } from '../../../src/bridge/mqtt/keepalive-timer.js';
import { ManualClock } from '../../../src/time/clock.js';

/** A clock that counts the host timers set on it. */
class CountingClock extends ManualClock {
  set = 0;
  override setTimeout(fn: () => void, ms: number, keepAlive = false): number {
    this.set++;
    return super.setTimeout(fn, ms, keepAlive);
  }
}

function managed(keepaliveSec: number): {
  clock: CountingClock;
  manager: KeepaliveManager;
  events: string[];
} {
  const clock = new CountingClock();
  const events: string[] = [];
  const client = {
    keepalive: keepaliveSec,
    log: () => undefined,
    sendPing: () => events.push(`ping@${clock.now()}`),
    onKeepaliveTimeout: () => events.push(`timeout@${clock.now()}`),
  };
  const manager = new KeepaliveManager(
    client as unknown as MqttClient,
    new KeepaliveTimer(clock).forMqtt(),
  );
  return { clock, manager, events };
}

describe('KeepaliveTimer under mqtt.js keep-alive', () => {
  it('pings after two half-intervals of silence and times out after a third', () => {
    const { clock, events } = managed(30);
    clock.advance(29_999);
    assert.deepEqual(events, []);
    clock.advance(1);
    assert.deepEqual(events, ['ping@30000']);
    clock.advance(15_000);
    assert.deepEqual(events, ['ping@30000', 'timeout@45000']);
  });

  it('a restart moves the ping without setting another host timer', () => {
    const { clock, manager, events } = managed(30);
    assert.equal(clock.set, 1);
    for (let t = 0; t < 100; t++) {
      clock.advance(100);
      manager.reschedule(); // a PUBACK
    }
    assert.equal(clock.set, 1, 'one host timer for 100 restarts');
    // the last restart at 10 s: the first half-interval ends at 25 s, the ping is due at 40 s
    clock.advance(29_999);
    assert.deepEqual(events, []);
    clock.advance(1);
    assert.deepEqual(events, ['ping@40000']);
  });

  it('stops when mqtt.js clears it', () => {
    const { clock, manager, events } = managed(30);
    manager.destroy();
    clock.advance(120_000);
    assert.deepEqual(events, []);
    assert.equal(clock.pending, 0);
  });

  it('a shorter interval set later takes effect at once', () => {
    const { clock, manager, events } = managed(60);
    manager.setKeepalive(2);
    clock.advance(2_000);
    assert.deepEqual(events, ['ping@2000']);
  });
});
