/**
 * The EnOS MQTT login for a proxy that logs in as the device (docs/protocol.md, "Lifetime and presence"):
 *
 * - clientId `{id}|securemode={2|3},signmethod=sha256,timestamp={ms}|`
 * - username `{deviceKey}&{productKey}`
 * - password `hex(SHA-256("clientId" + id + "deviceKey" + dk + "productKey" + pk + "timestamp" + ms + secret))`,
 *   upper case as in the documentation (the SDKs send either case).
 *
 * Vector: id `123456`, dk `test`, pk `654321`, ts `1548753362502`, secret `abcdefg` →
 * `B99032D49C706F7B27B22AB5CD2DD3C56A31E1BCBBC83BA0A2A6BB3272FBB166`.
 */

import { createHash } from 'node:crypto';
import { EnosError } from './errors.js';
import { validateKey, type SecureMode } from './identity.js';

/** What to put into the MQTT CONNECT packet. `password` is a credential: never log it. */
export interface MqttLogin {
  clientId: string;
  username: string;
  password: string;
}

export interface EnosMqttLoginParams {
  productKey: string;
  deviceKey: string;
  /** Device secret (secureMode 2) or product secret (secureMode 3). */
  secret: string;
  secureMode: SecureMode;
  /** The `{id}` part of the clientId; defaults to the deviceKey. */
  clientIdBase?: string;
  /** Milliseconds since the epoch, as the platform expects in `timestamp=`. */
  timestamp: number;
  /** Upper-case hex password (default true, as documented); false gives lower case. */
  upperCase?: boolean;
}

const badInClientIdBase = /[\p{Cc}\p{White_Space}\p{Cs}\uFEFF|]/u;

/**
 * Builds the clientId, username and signed password.
 * @throws EnosError `ENOS_MQTT_LOGIN` (detail names the field, never a value) when a key breaks
 *   the identity key rules, the clientId base is empty or holds `|`, white space or control
 *   characters (the platform splits the clientId at `|`), the timestamp is not a non-negative
 *   safe integer, the secureMode is not 2 or 3, or the secret is empty.
 */
export function enosMqttLogin(p: EnosMqttLoginParams): MqttLogin {
  if (validateKey(p.productKey) !== undefined) throw new EnosError('ENOS_MQTT_LOGIN', 'productKey');
  if (validateKey(p.deviceKey) !== undefined) throw new EnosError('ENOS_MQTT_LOGIN', 'deviceKey');
  const id = p.clientIdBase ?? p.deviceKey;
  if (id.length === 0 || badInClientIdBase.test(id)) {
    throw new EnosError('ENOS_MQTT_LOGIN', 'clientIdBase');
  }
  if (p.secureMode !== 2 && p.secureMode !== 3)
    throw new EnosError('ENOS_MQTT_LOGIN', 'secureMode');
  if (!Number.isSafeInteger(p.timestamp) || p.timestamp < 0) {
    throw new EnosError('ENOS_MQTT_LOGIN', 'timestamp');
  }
  if (typeof p.secret !== 'string' || p.secret.length === 0) {
    throw new EnosError('ENOS_MQTT_LOGIN', 'secret');
  }

  const ms = String(p.timestamp);
  const hex = createHash('sha256')
    .update(
      `clientId${id}deviceKey${p.deviceKey}productKey${p.productKey}timestamp${ms}${p.secret}`,
      'utf8',
    )
    .digest('hex');
  return {
    clientId: `${id}|securemode=${p.secureMode},signmethod=sha256,timestamp=${ms}|`,
    username: `${p.deviceKey}&${p.productKey}`,
    password: p.upperCase === false ? hex : hex.toUpperCase(),
  };
}
