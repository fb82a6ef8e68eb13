import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EnosError, enosMqttLogin, type EnosMqttLoginParams } from '../../../src/enos/index.js';

const vector: EnosMqttLoginParams = {
  productKey: '654321',
  deviceKey: 'test',
  clientIdBase: '123456',
  secret: 'abcdefg',
  secureMode: 2,
  timestamp: 1548753362502,
};
const expected = 'B99032D49C706F7B27B22AB5CD2DD3C56A31E1BCBBC83BA0A2A6BB3272FBB166';

void describe('enosMqttLogin', () => {
  void it('matches the spec vector (upper case by default)', () => {
    assert.deepEqual(enosMqttLogin(vector), {
      clientId: '123456|securemode=2,signmethod=sha256,timestamp=1548753362502|',
      username: 'test&654321',
      password: expected,
    });
    assert.equal(enosMqttLogin({ ...vector, upperCase: true }).password, expected);
  });

  void it('gives lower-case hex on request', () => {
    assert.equal(enosMqttLogin({ ...vector, upperCase: false }).password, expected.toLowerCase());
  });

  void it('uses the deviceKey as clientId base by default', () => {
    const rest: EnosMqttLoginParams = { ...vector, secureMode: 3 };
    delete rest.clientIdBase;
    const login = enosMqttLogin(rest);
    assert.equal(login.clientId, 'test|securemode=3,signmethod=sha256,timestamp=1548753362502|');
    assert.notEqual(login.password, expected);
    assert.match(login.password, /^[0-9A-F]{64}$/);
  });

  void it('rejects values that would make an ambiguous or unusable login, naming only the field', () => {
    const bad: [Partial<EnosMqttLoginParams>, string][] = [
      [{ productKey: 'a/b' }, 'productKey'],
      [{ deviceKey: '' }, 'deviceKey'],
      [{ clientIdBase: 'a|b' }, 'clientIdBase'],
      [{ clientIdBase: '' }, 'clientIdBase'],
      [{ clientIdBase: 'a b' }, 'clientIdBase'],
      [{ timestamp: -1 }, 'timestamp'],
      [{ timestamp: 1.5 }, 'timestamp'],
      [{ timestamp: Number.NaN }, 'timestamp'],
      [{ secret: '' }, 'secret'],
      [{ secureMode: 4 as 2 }, 'secureMode'],
    ];
    for (const [patch, field] of bad) {
      assert.throws(
        () => enosMqttLogin({ ...vector, ...patch }),
        (e: unknown) =>
          e instanceof EnosError &&
          e.code === 'ENOS_MQTT_LOGIN' &&
          e.message.endsWith(`: ${field}`) &&
          !e.message.includes('abcdefg'),
        field,
      );
    }
  });
});
