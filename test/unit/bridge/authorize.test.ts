/**
 * The topic authorization rules of the router (`authorize`): own keys only, a product-secret
 * session may only activate, and activation never without an authenticated session.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { authorize } from '../../../src/bridge/router.js';
import type { BridgeRequest } from '../../../src/bridge/types.js';

function req(path: string, principal: BridgeRequest['principal']): BridgeRequest {
  return {
    principal,
    method: 'GET',
    path: path.split('/').filter((s) => s !== ''),
    query: [],
    payload: Buffer.alloc(0),
    contentFormat: undefined,
  };
}

const ACTIVATE = '/topic/ext/session/pk1/dk1/thing/activate/info';
const POST = '/topic/sys/pk1/dk1/thing/measurepoint/post';
const mode = (secureMode: 2 | 3) => ({
  productKey: 'pk1',
  deviceKey: 'dk1',
  secureMode,
  lifetime: 3600,
  assetId: undefined,
  sessionId: 's1',
});

describe('authorize', () => {
  it('activation on the unauthenticated development port is refused 4.01 (it would hand out secrets)', () => {
    const a = authorize(req(ACTIVATE, undefined));
    assert.equal(a.ok, false);
    assert.deepEqual(!a.ok && a.response, { status: 'unauthorized' });
  });

  it('a product-secret session may activate and nothing else', () => {
    assert.equal(authorize(req(ACTIVATE, mode(3))).ok, true);
    assert.equal(authorize(req(POST, mode(3))).ok, false);
  });

  it('a device-secret session may post its own topics but not activate', () => {
    assert.equal(authorize(req(POST, mode(2))).ok, true);
    assert.equal(authorize(req(ACTIVATE, mode(2))).ok, false);
    assert.equal(authorize(req('/topic/sys/pk1/other/thing/measurepoint/post', mode(2))).ok, false);
  });

  it('the development port may still post (no principal: the topic names the device)', () => {
    assert.equal(authorize(req(POST, undefined)).ok, true);
  });
});
