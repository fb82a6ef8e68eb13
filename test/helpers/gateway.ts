/**
 * An in-process coap-edge Gateway on 127.0.0.1 port 0 with its JSON log captured, plus CoAP
 * request/response helpers and the secrets of a devices file (to assert none of them leaks).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { decode, encode, type CoapMessage, type CoapOption } from '../../src/coap/codec.js';
import { CON, OptionNumber } from '../../src/coap/constants.js';
import { getOption, decodeUint } from '../../src/coap/options.js';
import { loadConfig } from '../../src/config/load.js';
import type { SettingName } from '../../src/config/settings.js';
import { derivePsk } from '../../src/enos/psk.js';
import { Gateway } from '../../src/gateway/index.js';
import { createLogger } from '../../src/telemetry/log.js';
import type { Tracing } from '../../src/telemetry/trace.js';
import { REPO_ROOT } from './processes.js';

/** The demo devices file that `npm start` uses. */
export const DEMO_DEVICES = join(REPO_ROOT, 'deploy', 'examples', 'devices.json');

export type LogLine = Record<string, unknown> & { msg?: string; level?: string };

export interface TestGateway {
  readonly gateway: Gateway;
  readonly port: number;
  /** Every log line so far, parsed. */
  logLines(): LogLine[];
  /** The raw log text so far. */
  logText(): string;
  close(): Promise<void>;
}

/** Starts a Gateway with `overrides` on top of bind 127.0.0.1, port 0 and the demo devices. */
export async function startGateway(
  opts: {
    devices?: string;
    overrides?: Readonly<Partial<Record<SettingName, unknown>>>;
    /** From `setupTracing` (default: no tracing). */
    tracing?: Tracing;
  } = {},
): Promise<TestGateway> {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const config = loadConfig({
    overrides: {
      bind: '127.0.0.1',
      dtlsPort: 0,
      devices: opts.devices ?? DEMO_DEVICES,
      logLevel: 'info',
      ...opts.overrides,
    },
  });
  const gateway = await Gateway.start(config, createLogger('info', sink), {}, opts.tracing);
  let closed = false;
  const logText = (): string => chunks.join('');
  return {
    gateway,
    port: gateway.dtlsPort,
    logText,
    logLines: () => parseLogLines(logText()),
    close: async () => {
      if (closed) return;
      closed = true;
      await gateway.close();
    },
  };
}

/** Parses pino JSON lines; a line that is not JSON fails the test. */
export function parseLogLines(text: string): LogLine[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as LogLine;
      } catch {
        throw new Error(`log line is not JSON: ${l}`);
      }
    });
}

interface DevicesJson {
  products?: { productKey: string; productSecret: string }[];
  devices?: { productKey: string; deviceKey: string; deviceSecret: string }[];
}

/**
 * Every secret of a devices file in every form that must never be logged: the secret itself
 * and its PSK as hex (both cases) and base64.
 */
export function secretForms(devicesFile = DEMO_DEVICES): string[] {
  const doc = JSON.parse(readFileSync(devicesFile, 'utf8')) as DevicesJson;
  const secrets = [
    ...(doc.products ?? []).map((p) => p.productSecret),
    ...(doc.devices ?? []).map((d) => d.deviceSecret),
  ];
  const out: string[] = [];
  for (const s of secrets) {
    const key = derivePsk(s);
    out.push(s, key.toString('hex'), key.toString('hex').toUpperCase(), key.toString('base64'));
  }
  return out;
}

/** The demo file's secrets by name, so tests read like the README. */
export const DEMO = {
  device001: { identity: 'demoPK01,device001,2,3600', secret: 'demo-device-secret-0001' },
  device002: { identity: 'demoPK01,device002,2,3600', secret: 'demo-device-secret-0002' },
  product01: { productKey: 'demoPK01', secret: 'demo-product-secret' },
  product02: { productKey: 'demoPK02', secret: 'demo-product-secret-2' },
} as const;

export const MEASUREPOINT_POST = (pk: string, dk: string): string =>
  `/topic/sys/${pk}/${dk}/thing/measurepoint/post`;

export const MEASUREPOINT_PAYLOAD = JSON.stringify({
  id: '1',
  version: '1.0',
  method: 'thing.measurepoint.post',
  params: { measurepoints: { t: 21.5 } },
});

/** A CON request datagram for `path` (leading slash, segments split on `/`). */
export function coapRequest(opts: {
  code: number;
  path: string;
  messageId: number;
  token: Buffer;
  payload?: Buffer;
  contentFormat?: number;
}): Buffer {
  const options: CoapOption[] = opts.path
    .split('/')
    .filter((s) => s !== '')
    .map((s) => ({ number: OptionNumber.URI_PATH, value: Buffer.from(s, 'utf8') }));
  if (opts.contentFormat !== undefined) {
    options.push({
      number: OptionNumber.CONTENT_FORMAT,
      value: opts.contentFormat === 0 ? Buffer.alloc(0) : Buffer.from([opts.contentFormat]),
    });
  }
  const msg: CoapMessage = {
    type: CON,
    code: opts.code,
    messageId: opts.messageId,
    token: opts.token,
    options,
    payload: opts.payload ?? Buffer.alloc(0),
  };
  return encode(msg);
}

/** Decodes a response; Max-Age as a number when present. */
export function coapResponse(datagram: Buffer): CoapMessage & { maxAge: number | undefined } {
  const msg = decode(datagram);
  const raw = getOption(msg, OptionNumber.MAX_AGE);
  return { ...msg, maxAge: raw === undefined ? undefined : decodeUint(raw) };
}
