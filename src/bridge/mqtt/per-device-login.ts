/**
 * Pure parts of per-device MQTT sessions: the device's own login (EnOS signed or from
 * templates), its command topic filters, topic filter matching, and what a refused CONNACK
 * means. Nothing here logs; `password` values are credentials and never leave the CONNECT.
 */
import { CoapEdgeError } from '../../errors/index.js';
import { ErrorWithReasonCode } from 'mqtt';
import { enosMqttLogin, type MqttLogin } from '../../enos/index.js';
import type { DeviceKey } from '../types.js';

/** `enos`: EnOS signed login from the device secret; `template`: `{pk}`/`{dk}`/`{secret}` templates. */
export type DeviceAuthKind = 'enos' | 'template';

export interface DeviceLoginTemplates {
  /** e.g. `{pk}.{dk}`; `{pk}`, `{dk}` only. */
  readonly clientId: string;
  /** e.g. `{dk}&{pk}`; `{pk}`, `{dk}` only. */
  readonly username: string;
  /** e.g. `{secret}`; `{pk}`, `{dk}`, `{secret}`. */
  readonly password: string;
}

export type PerDeviceConfigErrorCode = 'PER_DEVICE_BAD_TEMPLATE';

/** A template the per-device sessions cannot use; thrown at construction (start-up). */
export class PerDeviceConfigError extends CoapEdgeError {
  readonly code: PerDeviceConfigErrorCode = 'PER_DEVICE_BAD_TEMPLATE';

  constructor(message: string) {
    super(message);
    this.name = 'PerDeviceConfigError';
  }
}

export type TemplateVar = 'pk' | 'dk' | 'secret';

const placeholder = /\{([^{}]*)\}/g;

/**
 * Checks that `template` uses only the placeholders in `allowed`.
 * @throws PerDeviceConfigError naming the setting and the placeholder (never a value).
 */
function checkTemplate(name: string, template: string, allowed: readonly TemplateVar[]): void {
  for (const m of template.matchAll(placeholder)) {
    const v = m[1] ?? '';
    if (!(allowed as readonly string[]).includes(v)) {
      throw new PerDeviceConfigError(
        `${name}: unknown placeholder {${v}} (allowed: ${allowed.map((a) => `{${a}}`).join(', ')})`,
      );
    }
  }
}

/** Replaces `{pk}`, `{dk}` and `{secret}` (when given); other text is kept as it is. */
export function fillTemplate(
  template: string,
  vars: { readonly pk: string; readonly dk: string; readonly secret?: string },
): string {
  return template.replace(placeholder, (whole, name: string) => {
    if (name === 'pk') return vars.pk;
    if (name === 'dk') return vars.dk;
    if (name === 'secret' && vars.secret !== undefined) return vars.secret;
    return whole;
  });
}

/** Validates the login templates (start-up). `{secret}` only in the password. */
export function checkLoginTemplates(t: DeviceLoginTemplates): void {
  checkTemplate('mqttDeviceClientId', t.clientId, ['pk', 'dk']);
  checkTemplate('mqttDeviceUsername', t.username, ['pk', 'dk']);
  checkTemplate('mqttDevicePassword', t.password, ['pk', 'dk', 'secret']);
}

/**
 * What the device's CONNECT carries.
 * - `enos` (docs/protocol.md "Lifetime and presence", secureMode 2 with the device secret): clientId
 *   `{dk}|securemode=2,signmethod=sha256,timestamp={ms}|`, username `{dk}&{pk}`, password the
 *   upper-case hex SHA-256 signature.
 * - `template`: the three templates filled in.
 * @throws EnosError `ENOS_MQTT_LOGIN` (enos, a key or the secret unusable)
 */
export function deviceLogin(
  auth: DeviceAuthKind,
  templates: DeviceLoginTemplates,
  device: DeviceKey,
  secret: string,
  timestampMs: number,
): MqttLogin {
  if (auth === 'enos') {
    return enosMqttLogin({
      productKey: device.productKey,
      deviceKey: device.deviceKey,
      secret,
      secureMode: 2,
      timestamp: Math.floor(timestampMs),
    });
  }
  const vars = { pk: device.productKey, dk: device.deviceKey };
  return {
    clientId: fillTemplate(templates.clientId, vars),
    username: fillTemplate(templates.username, vars),
    password: fillTemplate(templates.password, { ...vars, secret }),
  };
}

/**
 * Validates the command topic templates (start-up): `{pk}`, `{dk}` only, MQTT wildcards only
 * as whole levels (`#` last).
 * @throws PerDeviceConfigError
 */
export function checkCommandTopics(templates: readonly string[]): void {
  if (templates.length === 0) throw new PerDeviceConfigError('commandTopics: empty list');
  for (const t of templates) {
    checkTemplate('commandTopics', t, ['pk', 'dk']);
    if (!isValidFilter(fillTemplate(t, { pk: 'p', dk: 'd' }))) {
      throw new PerDeviceConfigError(`commandTopics: not a valid MQTT topic filter: ${t}`);
    }
  }
}

/** The device's command topic filters: templates filled in, `prefix` put before each. */
export function commandFilters(
  templates: readonly string[],
  device: DeviceKey,
  prefix: string,
): string[] {
  const vars = { pk: device.productKey, dk: device.deviceKey };
  return templates.map((t) => prefix + fillTemplate(t, vars));
}

/** An MQTT topic filter: `+` and `#` only as whole levels, `#` only last; no NUL; not empty. */
export function isValidFilter(filter: string): boolean {
  if (filter.length === 0 || filter.includes('\u0000')) return false;
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i] ?? '';
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return false;
    if (l.includes('+') && l !== '+') return false;
  }
  return true;
}

/**
 * True when `topic` matches the MQTT topic `filter` (MQTT 3.1.1 §4.7: `+` one level, `#` the
 * rest including the parent level; topics starting with `$` are not matched by a leading
 * wildcard).
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    const fl = f[i];
    if (fl === '#') return true;
    const tl = t[i];
    if (tl === undefined) return false;
    if (fl !== '+' && fl !== tl) return false;
  }
  return f.length === t.length;
}

/**
 * The broker refused the login itself: CONNACK "bad username or password" / "not
 * authorized" (3.1.1 return codes 4 and 5; MQTT 5 reason codes 0x86 and 0x87), as mqtt.js
 * reports them (`ErrorWithReasonCode`).
 */
export function isLoginRefusal(err: Error | undefined): boolean {
  if (!(err instanceof ErrorWithReasonCode)) return false;
  return err.code === 4 || err.code === 5 || err.code === 0x86 || err.code === 0x87;
}

/** The CONNACK code of a refusal, for messages (`0x87`); undefined for other errors. */
export function refusalCode(err: Error | undefined): string | undefined {
  return err instanceof ErrorWithReasonCode ? `0x${err.code.toString(16)}` : undefined;
}
