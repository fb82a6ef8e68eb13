/**
 * `coap-edge device`: acts as one EnOS device. Connects over DTLS with the EnOS PSK scheme,
 * sends one request and prints the answer; `--activate-then-post` does the whole dynamic
 * activation flow (secureMode 3 with the product secret, GET activate/info, reconnect with
 * secureMode 2 and the returned device secret, then the post).
 */
import { CoapEdgeError } from '../errors/index.js';
import { randomBytes, randomInt } from 'node:crypto';
import { ContentFormat, OptionNumber, formatCode } from '../coap/constants.js';
import { CipherSuite } from '../dtls/constants.js';
import {
  activationTopic,
  derivePsk,
  formatIdentity,
  parseIdentity,
  type DeviceIdentity,
} from '../enos/index.js';
import { CoapDtlsClient, type CoapResponse } from './coap-client.js';

export interface DeviceToolOptions {
  readonly host: string;
  readonly port: number;
  readonly identity: DeviceIdentity;
  readonly secret: string;
  readonly suite: 'ccm8' | 'cbc';
  readonly timeoutMs: number;
  /** Offer an RFC 9146 Connection ID. */
  readonly cid?: boolean;
}

export interface DeviceOutcome {
  readonly step: string;
  readonly response: CoapResponse;
}

export class DeviceToolError extends CoapEdgeError {
  readonly code = 'DEVICE_TOOL_FAILED';
  constructor(message: string) {
    super(message);
    this.name = 'DeviceToolError';
  }
}

/** `pk,dk,mode,lifetime`, or the four parts given separately. */
export function identityFrom(p: {
  identity?: string;
  productKey?: string;
  deviceKey?: string;
  secureMode?: string;
  lifetime?: string;
}): DeviceIdentity {
  const text =
    p.identity ??
    `${p.productKey ?? ''},${p.deviceKey ?? ''},${p.secureMode ?? '2'},${p.lifetime ?? '3600'}`;
  const r = parseIdentity(text);
  if (!r.ok)
    throw new DeviceToolError(`invalid device identity (${r.reason}): use pk,dk,2|3,30..86400`);
  return r.identity;
}

/** An MQTT topic, or a path relative to `/sys/{pk}/{dk}/`, as the CoAP path. */
function coapPathFor(topic: string, id: DeviceIdentity): string {
  if (topic.startsWith('/topic/')) return topic;
  const mqtt = topic.startsWith('/') ? topic : `/sys/${id.productKey}/${id.deviceKey}/${topic}`;
  return `/topic${mqtt}`;
}

/** An EnOS request body for a topic when the user gave only the params (or nothing). */
function enosBody(json: string | undefined, method: string): Buffer {
  if (json === undefined) {
    return Buffer.from(
      JSON.stringify({ id: String(randomInt(1, 2 ** 31)), version: '1.0', method, params: {} }),
    );
  }
  return Buffer.from(json, 'utf8');
}

async function connect(
  o: DeviceToolOptions,
  id: DeviceIdentity,
  secret: string,
): Promise<CoapDtlsClient> {
  return CoapDtlsClient.connect({
    host: o.host,
    port: o.port,
    identity: formatIdentity(id),
    psk: derivePsk(secret),
    cipherSuites: [
      o.suite === 'cbc'
        ? CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256
        : CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
    ],
    handshakeTimeoutMs: o.timeoutMs,
    ...(o.cid === true ? { connectionId: randomBytes(4) } : {}),
  });
}

async function once(
  o: DeviceToolOptions,
  id: DeviceIdentity,
  secret: string,
  req: Parameters<CoapDtlsClient['request']>[0],
): Promise<CoapResponse> {
  const client = await connect(o, id, secret);
  try {
    return await client.request({ timeoutMs: o.timeoutMs, ...req });
  } finally {
    await client.close();
  }
}

export function post(
  o: DeviceToolOptions,
  topic: string,
  json: string | undefined,
): Promise<CoapResponse> {
  const path = coapPathFor(topic, o.identity);
  const method = path.split('/').slice(5).join('.');
  return once(o, o.identity, o.secret, {
    method: 'POST',
    path,
    payload: enosBody(json, method),
    contentFormat: ContentFormat.JSON,
  });
}

export function get(o: DeviceToolOptions, topic: string): Promise<CoapResponse> {
  return once(o, o.identity, o.secret, { method: 'GET', path: coapPathFor(topic, o.identity) });
}

export function activate(o: DeviceToolOptions): Promise<CoapResponse> {
  const id = { ...o.identity, secureMode: 3 as const };
  return once(o, id, o.secret, {
    method: 'GET',
    path: `/topic${activationTopic(id.productKey, id.deviceKey)}`,
  });
}

/** Reads `params.deviceSecret` from an activation answer. */
function activatedSecret(r: CoapResponse): string {
  if (r.code !== 0x45) throw new DeviceToolError(`activation answered ${formatCode(r.code)}`);
  let body: unknown;
  try {
    body = JSON.parse(r.payload.toString('utf8'));
  } catch {
    throw new DeviceToolError('activation answer is not JSON');
  }
  const secret = (body as { params?: { deviceSecret?: unknown } } | null)?.params?.deviceSecret;
  if (typeof secret !== 'string' || secret.length === 0) {
    throw new DeviceToolError('activation answer has no params.deviceSecret');
  }
  return secret;
}

/** secureMode 3 with the product secret → activate → secureMode 2 with the device secret → post. */
export async function activateThenPost(
  o: DeviceToolOptions,
  topic: string,
  json: string | undefined,
): Promise<DeviceOutcome[]> {
  const act = await activate(o);
  const deviceSecret = activatedSecret(act);
  const mode2: DeviceToolOptions = {
    ...o,
    identity: { ...o.identity, secureMode: 2 },
    secret: deviceSecret,
  };
  const res = await post(mode2, topic, json);
  return [
    { step: 'activate', response: act },
    { step: 'post', response: res },
  ];
}

/**
 * One line per answer: `2.04 {payload}`, then the EnOS command options when present:
 * `  command-topic: /topic/sys/..` (2100) and `  command: {..}` (2102).
 */
export function formatResponse(r: CoapResponse): string {
  const text = r.payload.length === 0 ? '' : ` ${r.payload.toString('utf8')}`;
  let out = `${formatCode(r.code)}${text}`;
  for (const o of r.options) {
    if (o.number === OptionNumber.COMMAND_TOPIC)
      out += `\n  command-topic: ${o.value.toString('utf8')}`;
    if (o.number === OptionNumber.COMMAND_PAYLOAD)
      out += `\n  command: ${o.value.toString('utf8')}`;
  }
  return out;
}
