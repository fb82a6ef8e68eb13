/**
 * How the router answers a backend failure: the CoAP reaction the error carries
 * (docs/errors.md), with the configured Max-Age for "retry later"; anything else is 5.00.
 * The expected answers are those of docs/protocol.md "Answers".
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Router } from '../../../src/bridge/router.js';
import {
  BackendRejectedError,
  BackendUnavailableError,
  DeviceSuspectedError,
  DeviceUnauthorizedError,
  MqttBackendError,
  ReplyTimeoutError,
  type BackendUnavailableCode,
} from '../../../src/bridge/mqtt/errors.js';
import { CommandError } from '../../../src/bridge/commands/errors.js';
import type {
  BridgeRequest,
  BridgeResponse,
  CommandStore,
  DeviceMessageBackend,
} from '../../../src/bridge/types.js';
import { TTD_DEFAULTS } from '../../helpers/component-defaults.js';

const MAX_AGE = 37;
const principal = {
  productKey: 'pk1',
  deviceKey: 'dk1',
  secureMode: 2 as const,
  lifetime: 3600,
  assetId: undefined,
  sessionId: 's1',
};

function request(
  method: BridgeRequest['method'],
  path: string,
  body = '{"id":"1"}',
): BridgeRequest {
  return {
    principal,
    method,
    path: path.split('/').filter((s) => s !== ''),
    query: [],
    payload: Buffer.from(body),
    contentFormat: undefined,
  };
}

function routerFailingWith(err: Error, commands?: CommandStore): Router {
  const backend: DeviceMessageBackend = {
    publish: () => Promise.reject(err),
    request: () => Promise.reject(err),
  };
  return new Router({
    ...TTD_DEFAULTS,
    mqtt: backend,
    http: undefined,
    routes: undefined,
    activation: undefined,
    commands,
    presence: undefined,
    unavailableMaxAge: MAX_AGE,
    maxInlineCommand: 256,
    maxTtd: 60,
  });
}

/** The answers to an uplink awaiting a platform reply (request) and to a command reply (publish). */
async function answers(err: Error): Promise<BridgeResponse[]> {
  const r = routerFailingWith(err);
  return [
    await r.handle(request('POST', '/topic/sys/pk1/dk1/thing/measurepoint/post')),
    await r.handle(request('POST', '/topic/sys/pk1/dk1/thing/service/reboot_reply')),
  ];
}

async function assertAnswer(err: Error, expected: Omit<BridgeResponse, 'topicClass'>) {
  const [uplink, commandReply] = await answers(err);
  assert.deepEqual(uplink, { ...expected, topicClass: 'uplink' });
  assert.deepEqual(commandReply, { ...expected, topicClass: 'command-reply' });
}

describe('router: answers to backend failures', () => {
  const unavailable: BackendUnavailableCode[] = [
    'BACKEND_UNAVAILABLE',
    'BACKEND_CONNECTION_LOST',
    'BACKEND_PUBACK_TIMEOUT',
    'BACKEND_OVERLOADED',
    'BACKEND_SUBSCRIBE_FAILED',
    'BACKEND_CLOSED',
  ];
  for (const code of unavailable) {
    it(`${code}: 5.03 with the configured Max-Age`, async () => {
      await assertAnswer(new BackendUnavailableError(code), {
        status: 'unavailable',
        maxAge: MAX_AGE,
      });
    });
  }

  it('BACKEND_REPLY_TIMEOUT: 5.04', async () => {
    await assertAnswer(new ReplyTimeoutError('/t_reply', 5), { status: 'gateway-timeout' });
  });

  it('BACKEND_DEVICE_SUSPECTED: 5.03 with Max-Age = the suspension left', async () => {
    await assertAnswer(new DeviceSuspectedError(12), { status: 'unavailable', maxAge: 12 });
  });

  it('BACKEND_DEVICE_UNAUTHORIZED: 4.01', async () => {
    await assertAnswer(new DeviceUnauthorizedError('refused', false), { status: 'unauthorized' });
  });

  it('BACKEND_PUBLISH_REJECTED: 5.02, but 5.03 with Max-Age for 0x97 quota exceeded', async () => {
    await assertAnswer(new BackendRejectedError(0x87), { status: 'bad-gateway' });
    await assertAnswer(new BackendRejectedError(0x97), { status: 'unavailable', maxAge: MAX_AGE });
  });

  it('BACKEND_BAD_TOPIC and errors without a reaction: 5.00', async () => {
    await assertAnswer(new MqttBackendError('BACKEND_BAD_TOPIC'), { status: 'internal-error' });
    await assertAnswer(new Error('boom'), { status: 'internal-error' });
    await assertAnswer(new CommandError('COMMANDS_TOO_MANY_WAITERS'), {
      status: 'internal-error',
    });
  });

  it('a command fetch whose store fails: 5.03 with the configured Max-Age', async () => {
    for (const err of [new CommandError('COMMANDS_UNAVAILABLE', 'redis down'), new Error('x')]) {
      const store = {
        fetch: () => Promise.reject(err),
      } as unknown as CommandStore;
      const r = routerFailingWith(new Error('unused'), store);
      const res = await r.handle(request('GET', '/topic/sys/pk1/dk1/thing/service/reboot', ''));
      assert.deepEqual(res, {
        status: 'unavailable',
        maxAge: MAX_AGE,
        topicClass: 'command-fetch',
      });
    }
  });
});
