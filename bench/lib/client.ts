/**
 * The load generator's building blocks: credentials, one DTLS connect with our own client
 * (src/dtls/client.ts), the one request both servers answer alike (CON GET /nothing →
 * 4.04 Not Found), and the preflight that checks a server really answers it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decode, encode } from '../../src/coap/codec.js';
import { ACK, CON, Code, OptionNumber, formatCode } from '../../src/coap/constants.js';
import { DtlsClient } from '../../src/dtls/client.js';
import { CipherSuite, cipherSuiteName } from '../../src/dtls/constants.js';
import { DtlsError } from '../../src/dtls/errors.js';
import { derivePsk } from '../../src/enos/index.js';
import { sleep } from './stats.js';

export interface Target {
  readonly host: string;
  readonly port: number;
}

export interface Credentials {
  /** EnOS identity `{productKey},{deviceKey},2,{lifetime}`. */
  readonly identity: string;
  readonly psk: Buffer;
}

/**
 * Credentials for a load of concurrent associations: identities with the same key, `identity`
 * first, one per association, since coap-edge keeps one association per device identity (a
 * new handshake retires the older).
 */
export interface PooledCredentials extends Credentials {
  readonly identities: readonly string[];
}

/** The credentials of the i-th concurrent association of a load. */
export function nthCredentials(c: PooledCredentials, i: number): Credentials {
  return { ...c, identity: c.identities[i % c.identities.length] ?? c.identity };
}

export const SUITES = {
  ccm8: CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
  cbc: CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
} as const;
export type SuiteFlag = keyof typeof SUITES;

interface DevicesJson {
  devices?: { productKey?: unknown; deviceKey?: unknown; deviceSecret?: unknown }[];
}

/**
 * Writes a copy of the devices file into `dir` with `n - 1` clones of the device (keys
 * `{deviceKey}-c{i}`, the same secret), so that n concurrent associations have distinct
 * identities and one key (libcoap's `-k` serves any identity with it). Returns the new file
 * and the credentials listing all n identities.
 */
export function withClones(
  devicesFile: string,
  deviceKey: string,
  n: number,
  dir: string,
): { file: string; creds: PooledCredentials } {
  const creds = loadCredentials(devicesFile, deviceKey);
  const json = JSON.parse(readFileSync(devicesFile, 'utf8')) as DevicesJson & {
    devices: Record<string, unknown>[];
  };
  const d = json.devices.find((x) => x.deviceKey === deviceKey) ?? {};
  const identities = [creds.identity];
  for (let i = 1; i < n; i++) {
    const dk = `${deviceKey}-c${i}`;
    json.devices.push({ ...d, deviceKey: dk, assetId: `${dk}-asset` });
    identities.push(`${String(d.productKey)},${dk},2,86400`);
  }
  const file = join(dir, 'devices.json');
  writeFileSync(file, `${JSON.stringify(json)}\n`);
  return { file, creds: { ...creds, identities } };
}

/** Identity and PSK of one device of a devices file (secureMode 2, lifetime 86400 s). */
export function loadCredentials(devicesFile: string, deviceKey: string): Credentials {
  const json = JSON.parse(readFileSync(devicesFile, 'utf8')) as DevicesJson;
  const d = json.devices?.find((x) => x.deviceKey === deviceKey);
  if (
    d === undefined ||
    typeof d.productKey !== 'string' ||
    typeof d.deviceKey !== 'string' ||
    typeof d.deviceSecret !== 'string'
  ) {
    throw new Error(`device ${deviceKey} not found in ${devicesFile}`);
  }
  return {
    identity: `${d.productKey},${d.deviceKey},2,86400`,
    psk: derivePsk(d.deviceSecret),
  };
}

export interface ConnectOptions {
  readonly suite: number;
  readonly handshakeTimeoutMs: number;
  readonly retransmitTimeoutMs?: number;
}

/** One full handshake (with the HelloVerifyRequest round trip), as a device would do it. */
export function connect(t: Target, c: Credentials, o: ConnectOptions): Promise<DtlsClient> {
  return DtlsClient.connect({
    host: t.host,
    port: t.port,
    identity: c.identity,
    psk: c.psk,
    cipherSuites: [o.suite],
    extensions: 'standard',
    handshakeTimeoutMs: o.handshakeTimeoutMs,
    ...(o.retransmitTimeoutMs !== undefined ? { retransmitTimeoutMs: o.retransmitTimeoutMs } : {}),
  });
}

/** A short name for why a connect or request failed, for the failure counts. */
export function failureName(err: unknown): string {
  if (err instanceof DtlsError) {
    return err.code === 'DTLS_ALERT_RECEIVED' ? `${err.code}:${err.message}` : err.code;
  }
  if (err instanceof Error) return (err as NodeJS.ErrnoException).code ?? err.name;
  return 'unknown';
}

const NOTHING = Buffer.from('nothing');
const NOTHING_OPTIONS = [{ number: OptionNumber.URI_PATH, value: NOTHING }];
const EMPTY = Buffer.alloc(0);

/** CON GET /nothing with the given message ID and token. */
export function nothingRequest(messageId: number, token: Buffer): Buffer {
  return encode({
    type: CON,
    code: Code.GET,
    messageId,
    token,
    options: NOTHING_OPTIONS,
    payload: EMPTY,
  });
}

/** The expected answer: a piggybacked ACK 4.04 (any options or diagnostic payload). */
export const EXPECTED_TYPE = ACK;
export const EXPECTED_CODE = Code.NOT_FOUND;

export interface Preflight {
  readonly ok: boolean;
  readonly suite: string;
  readonly extendedMasterSecret?: boolean;
  readonly encryptThenMac?: boolean;
  readonly helloVerify?: boolean;
  readonly handshakeMs?: number;
  /** Response to CON GET /nothing, e.g. "ACK 4.04". */
  readonly response?: string;
  readonly requestBytes?: number;
  readonly responseBytes?: number;
  readonly responsePayload?: string;
  readonly error?: string;
}

/** One handshake and one GET /nothing; says what the server negotiated and answered. */
export async function preflight(t: Target, c: Credentials, suite: number): Promise<Preflight> {
  const t0 = performance.now();
  let client: DtlsClient;
  try {
    client = await connect(t, c, { suite, handshakeTimeoutMs: 5000 });
  } catch (err) {
    return {
      ok: false,
      suite: cipherSuiteName.get(suite) ?? String(suite),
      error: failureName(err),
    };
  }
  const handshakeMs = performance.now() - t0;
  try {
    const token = Buffer.from([0xbe, 0x4c, 0x00, 0x01]);
    const req = nothingRequest(0x1234, token);
    const reply = new Promise<Buffer | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), 3000);
      client.once('message', (m) => {
        clearTimeout(timer);
        resolve(m);
      });
    });
    client.send(req);
    const raw = await reply;
    const base = {
      suite: client.cipherSuite,
      extendedMasterSecret: client.extendedMasterSecret,
      encryptThenMac: client.encryptThenMac,
      helloVerify: client.trace.helloVerify,
      handshakeMs: Math.round(handshakeMs * 10) / 10,
      requestBytes: req.length,
    };
    if (raw === undefined) return { ok: false, ...base, error: 'no response to GET /nothing' };
    const m = decode(raw);
    const typeName = ['CON', 'NON', 'ACK', 'RST'][m.type] ?? '?';
    const matches = m.messageId === 0x1234 && m.token.equals(token);
    return {
      ok: matches && m.type === EXPECTED_TYPE && m.code === EXPECTED_CODE,
      ...base,
      response: `${typeName} ${formatCode(m.code)}${matches ? '' : ' (MID/token mismatch)'}`,
      responseBytes: raw.length,
      responsePayload: m.payload.toString('utf8'),
    };
  } finally {
    await client.close();
  }
}

/** Waits until a handshake succeeds (the server is up), or throws after `timeoutMs`. */
export async function waitReady(
  t: Target,
  c: Credentials,
  alive: () => boolean,
  timeoutMs = 15_000,
  attemptTimeoutMs = 1000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let last = 'not tried';
  while (performance.now() < deadline) {
    if (!alive()) throw new Error('server process exited during start-up');
    try {
      const client = await connect(t, c, {
        suite: SUITES.ccm8,
        handshakeTimeoutMs: attemptTimeoutMs,
        retransmitTimeoutMs: attemptTimeoutMs / 5,
      });
      await client.close();
      return;
    } catch (err) {
      last = failureName(err);
      await sleep(100);
    }
  }
  throw new Error(`server at ${t.host}:${t.port} not ready after ${timeoutMs} ms (${last})`);
}
