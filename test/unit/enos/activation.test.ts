import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { activationReply, EnosError } from '../../../src/enos/index.js';

void describe('activationReply', () => {
  void it('has the shape of docs/protocol.md (dynamic activation) in the documented key order', () => {
    const reply = activationReply({
      id: '42',
      assetId: 'asset1',
      productKey: 'pk1',
      deviceKey: 'dk1',
      deviceSecret: 's3cr3t-value',
    });
    assert.deepEqual(reply, {
      id: '42',
      version: '1.0',
      method: 'thing.activate.info',
      params: {
        assetId: 'asset1',
        productKey: 'pk1',
        deviceKey: 'dk1',
        deviceSecret: 's3cr3t-value',
      },
    });
    assert.equal(
      JSON.stringify(reply),
      '{"id":"42","version":"1.0","method":"thing.activate.info","params":{"assetId":"asset1","productKey":"pk1","deviceKey":"dk1","deviceSecret":"s3cr3t-value"}}',
    );
  });

  void it('sends an unknown assetId as an empty string', () => {
    const reply = activationReply({
      id: '1',
      assetId: undefined,
      productKey: 'pk1',
      deviceKey: 'dk1',
      deviceSecret: 'x',
    });
    assert.equal(reply.params.assetId, '');
  });

  void it('rejects bad keys and an empty secret, naming the field only', () => {
    const ok = {
      id: '1',
      assetId: 'a',
      productKey: 'pk',
      deviceKey: 'dk',
      deviceSecret: 'top-secret',
    };
    const bad: [Record<string, unknown>, string][] = [
      [{ productKey: '+' }, 'productKey'],
      [{ deviceKey: 'a,b' }, 'deviceKey'],
      [{ deviceSecret: '' }, 'deviceSecret'],
      [{ id: 7 }, 'id'],
    ];
    for (const [patch, field] of bad) {
      assert.throws(
        () => activationReply({ ...ok, ...patch }),
        (e: unknown) =>
          e instanceof EnosError &&
          e.code === 'ENOS_ACTIVATION' &&
          e.message.endsWith(`: ${field}`) &&
          !e.message.includes('top-secret'),
        field,
      );
    }
  });
});
