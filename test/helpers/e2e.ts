/**
 * End-to-end helpers: a coap-edge Gateway wired to real Redis, real Mosquitto and
 * an in-process HTTP device registry (docs/registry-api.md) that counts its calls and can be
 * told to answer 500 or to hang; platform stand-ins and recorders on MQTT; devices over our
 * DTLS client; `mosquitto_sub` as a child process. Every wait is bounded.
 *
 * The shared services (Redis 127.0.0.1:6379, Mosquitto 127.0.0.1:1883) are used with a unique
 * Redis prefix and unique product keys per test, so parallel runs never see each other's
 * keys or topics. Fault tests start their own redis-server / mosquitto
 * (test/integration/auth/helpers.ts, test/integration/bridge/brokers.ts).
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { loadConfig } from '../../src/config/load.js';
import type { SettingName } from '../../src/config/settings.js';
import { CipherSuite } from '../../src/dtls/constants.js';
import { derivePsk, pskUsableOnCommandLine } from '../../src/enos/psk.js';
import { Gateway, type GatewayTestOptions } from '../../src/gateway/index.js';
import { createLogger } from '../../src/telemetry/log.js';
import type { Tracing } from '../../src/telemetry/trace.js';
import { CoapDtlsClient } from '../../src/tools/coap-client.js';
import { Proc } from './processes.js';
import { missingCommands } from './tools.js';

export const SHARED_REDIS_URL = 'redis://127.0.0.1:6379';
export const SHARED_MQTT_PORT = 1883;
export const SHARED_MQTT_URL = `mqtt://127.0.0.1:${SHARED_MQTT_PORT}`;

/**
 * Why the e2e tests cannot run here (a command they spawn is missing), or false; in CI a
 * missing command throws instead (test/helpers/tools.ts). Redis and Mosquitto on their
 * default ports are not checked: CI provides them, and a test that cannot reach them fails
 * with a message naming them.
 */
export const MISSING_TOOLS: string | false = missingCommands([
  ['redis-server', '--version'],
  ['mosquitto', '-h'],
  ['mosquitto_sub', '--help'],
  ['stdbuf', '--version'],
  ['coap-client-openssl', '-h'],
]);

/** `tag` + 8 random hex digits: a valid EnOS key, unique per call. */
export function uid(tag: string): string {
  return `${tag}${randomBytes(4).toString('hex')}`;
}

/**
 * A random secret whose PSK has no 0x00 byte, so libcoap's `-k` can take it (see
 * `pskUsableOnCommandLine`); about 6 % of random secrets do not qualify.
 */
export function cliSafeSecret(tag = 'S'): string {
  for (;;) {
    const s = `${tag}-${randomBytes(12).toString('base64url')}`;
    if (pskUsableOnCommandLine(derivePsk(s))) return s;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `cond` every 20 ms until it holds; throws naming `what` after `timeoutMs`. */
export async function eventually(
  cond: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

// --- EnOS bodies and paths ------------------------------------------------------------------

export const measurepointTopic = (pk: string, dk: string): string =>
  `/sys/${pk}/${dk}/thing/measurepoint/post`;

export const upRawTopic = (pk: string, dk: string): string => `/sys/${pk}/${dk}/thing/model/up_raw`;

export const activationPath = (pk: string, dk: string): string =>
  `/topic/ext/session/${pk}/${dk}/thing/activate/info`;

/** The CoAP path of an MQTT topic. */
export const coapPath = (mqttTopic: string): string => `/topic${mqttTopic}`;

/** An EnOS measurepoint request body with JSON `id`. */
export function measurepoint(id: string | number, t = 21.5): string {
  return JSON.stringify({
    id: String(id),
    version: '1.0',
    method: 'thing.measurepoint.post',
    params: { measurepoints: { t } },
  });
}

/** The reply the platform stand-ins send for a JSON request: same `id`, code 200. */
export function platformReply(payload: Buffer): string | undefined {
  let id: unknown;
  try {
    id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
  } catch {
    return undefined;
  }
  return JSON.stringify({ id, code: 200, data: { by: 'e2e-platform' } });
}

// --- the device registry --------------------------------------------------------------------

/** `ok`: answers from its tables; `error`: 500 to everything; `hang`: never answers. */
export type RegistryMode = 'ok' | 'error' | 'hang';

export interface RegistryCall {
  readonly method: string;
  /** Decoded path without the base path, e.g. `/devices/pk/dk/activate`. */
  readonly path: string;
  readonly authorized: boolean;
  readonly status: number | 'hang';
}

/**
 * The device registry of docs/registry-api.md over `node:http`: products, devices, one-shot
 * activation (409 after the first; the device then reads as a normal device). Requests must
 * carry `Authorization: Bearer <token>` (else 401). Every call is recorded.
 */
export class E2eRegistry {
  static readonly BASE = '/registry/v1';
  mode: RegistryMode = 'ok';
  /** The next activation happens, but its answer never comes (then resets). */
  hangNextActivation = false;
  readonly calls: RegistryCall[] = [];
  readonly products = new Map<string, { productSecret: string; dynamicRegistration: boolean }>();
  readonly devices = new Map<string, { deviceSecret: string; assetId?: string }>();
  readonly token = `tok-${randomBytes(8).toString('hex')}`;
  /** Open connections, so close() can end hanging requests. */
  readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(): Promise<E2eRegistry> {
    const holder: { reg?: E2eRegistry } = {};
    const server = createServer((req, res) => holder.reg?.handle(req, res));
    server.on('connection', (s: Socket) => {
      holder.reg?.sockets.add(s);
      s.once('close', () => holder.reg?.sockets.delete(s));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('registry: no port');
    const reg = new E2eRegistry(server, `http://127.0.0.1:${addr.port}${E2eRegistry.BASE}`);
    holder.reg = reg;
    return reg;
  }

  addProduct(pk: string, productSecret: string, dynamicRegistration = true): void {
    this.products.set(pk, { productSecret, dynamicRegistration });
  }

  addDevice(pk: string, dk: string, deviceSecret: string): void {
    this.devices.set(`${pk}/${dk}`, { deviceSecret, assetId: `asset-${dk}` });
  }

  /** Calls with this method and path (all outcomes). */
  count(method: string, path: string): number {
    return this.calls.filter((c) => c.method === method && c.path === path).length;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const method = req.method ?? 'GET';
    const raw = (req.url ?? '').split('?')[0] ?? '';
    const parts = raw.startsWith(`${E2eRegistry.BASE}/`)
      ? raw
          .slice(E2eRegistry.BASE.length + 1)
          .split('/')
          .map((p) => decodeURIComponent(p))
      : [];
    const path = `/${parts.join('/')}`;
    const authorized = req.headers.authorization === `Bearer ${this.token}`;
    if (this.mode === 'hang') {
      this.calls.push({ method, path, authorized, status: 'hang' });
      return; // the socket stays open until the client gives up or close()
    }
    const answer = (status: number, body?: unknown): void => {
      this.calls.push({ method, path, authorized, status });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(body === undefined ? '' : JSON.stringify(body));
    };
    if (this.mode === 'error') return answer(500, { error: 'registry failure (test)' });
    if (!authorized) return answer(401, { error: 'unauthorized' });
    const [kind, pk = '', dk = '', action] = parts;
    if (method === 'GET' && kind === 'products' && parts.length === 2) {
      const p = this.products.get(pk);
      return p === undefined ? answer(404) : answer(200, p);
    }
    if (method === 'GET' && kind === 'devices' && parts.length === 3) {
      const d = this.devices.get(`${pk}/${dk}`);
      return d === undefined ? answer(404) : answer(200, d);
    }
    if (method === 'POST' && kind === 'devices' && action === 'activate' && parts.length === 4) {
      const p = this.products.get(pk);
      if (p === undefined) return answer(404);
      if (!p.dynamicRegistration) return answer(403);
      if (this.devices.has(`${pk}/${dk}`)) return answer(409);
      const d = { deviceSecret: cliSafeSecret('act'), assetId: `asset-${dk}` };
      this.devices.set(`${pk}/${dk}`, d);
      if (this.hangNextActivation) {
        this.hangNextActivation = false;
        this.calls.push({ method, path, authorized, status: 'hang' });
        return;
      }
      return answer(200, d);
    }
    return answer(400, { error: 'bad request' });
  }

  /** Closes the server and every connection, hanging ones included. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.server.closeAllConnections();
    const closed = once(this.server, 'close');
    this.server.close();
    await closed;
  }
}

// --- the gateway ----------------------------------------------------------------------------

export interface E2eGateway {
  readonly gateway: Gateway;
  readonly port: number;
  /** The captured JSON log so far (for assertion messages). */
  logText(): string;
  /** Log lines at level error or fatal so far. */
  errorLines(): string[];
  close(): Promise<void>;
}

/**
 * `Gateway.start` on 127.0.0.1, DTLS port 0, no devices file, short timeouts, with
 * `overrides` on top, the test-only `testing` options and `tracing`; waits (bounded) until the MQTT
 * bridge and Redis are connected when they are configured.
 */
export async function startE2eGateway(
  overrides: Readonly<Partial<Record<SettingName, unknown>>>,
  testing: GatewayTestOptions = {},
  /** From `setupTracing` (default: no tracing). */
  tracing?: Tracing,
): Promise<E2eGateway> {
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
      logLevel: 'info',
      registryTimeoutMs: 1_000,
      publishTimeoutMs: 3_000,
      replyTimeoutMs: 3_000,
      maxUnavailableRetrySeconds: 1,
      ...overrides,
    },
  });
  const gateway = await Gateway.start(
    config,
    createLogger(config.logLevel, sink),
    testing,
    tracing,
  );
  const logText = (): string => chunks.join('');
  try {
    if (gateway.mqtt !== undefined && !(await gateway.mqtt.waitConnected(10_000))) {
      throw new Error(`gateway: MQTT bridge did not connect to ${String(config.mqttUrl)}`);
    }
    if (config.redisUrl !== undefined) {
      await eventually(
        () => gateway.secrets.redisState() === 'connected',
        `gateway: Redis at ${config.redisUrl}`,
        10_000,
      );
    }
  } catch (err) {
    await gateway.close();
    throw err;
  }
  let closed = false;
  return {
    gateway,
    port: gateway.dtlsPort,
    logText,
    errorLines: () =>
      logText()
        .split('\n')
        .filter((l) => /"level":"(error|fatal)"/.test(l)),
    close: async () => {
      if (closed) return;
      closed = true;
      await gateway.close();
    },
  };
}

// --- devices --------------------------------------------------------------------------------

/** A device over our DTLS client: identity `pk,dk,mode,3600`, PSK from `secret`. */
export function connectDevice(
  port: number,
  o: { pk: string; dk: string; mode?: 2 | 3; secret: string; handshakeTimeoutMs?: number },
): Promise<CoapDtlsClient> {
  return CoapDtlsClient.connect({
    host: '127.0.0.1',
    port,
    identity: `${o.pk},${o.dk},${o.mode ?? 2},3600`,
    psk: derivePsk(o.secret),
    cipherSuites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
    handshakeTimeoutMs: o.handshakeTimeoutMs ?? 10_000,
    retransmitTimeoutMs: 500,
  });
}

/** Runs `fn` and says how long it took to settle and how. */
export async function timed<T>(
  fn: () => Promise<T>,
): Promise<{ ms: number; value?: T; error?: unknown }> {
  const t0 = performance.now();
  try {
    const value = await fn();
    return { ms: performance.now() - t0, value };
  } catch (error: unknown) {
    return { ms: performance.now() - t0, error };
  }
}

// --- MQTT -----------------------------------------------------------------------------------

export interface MqttMessage {
  readonly topic: string;
  readonly payload: Buffer;
}

/** An mqtt.js client that records every message on `filters` (QoS 1). */
export interface Recorder {
  readonly client: MqttClient;
  readonly messages: MqttMessage[];
  close(): Promise<void>;
}

export async function startRecorder(
  url: string,
  filters: string | string[],
  opts: IClientOptions = {},
): Promise<Recorder> {
  const client = connect(url, {
    clientId: uid('e2e-rec-'),
    reconnectPeriod: 200,
    connectTimeout: 5_000,
    ...opts,
  });
  client.on('error', () => undefined);
  const messages: MqttMessage[] = [];
  client.on('message', (topic, payload) => messages.push({ topic, payload: Buffer.from(payload) }));
  try {
    await withTimeout(
      new Promise<void>((resolve) => client.once('connect', () => resolve())),
      10_000,
      `MQTT connect to ${url}`,
    );
    await withTimeout(client.subscribeAsync(filters, { qos: 1 }), 10_000, 'SUBACK');
  } catch (err) {
    client.end(true);
    throw err;
  }
  return {
    client,
    messages,
    close: async () => {
      await withTimeout(client.endAsync(true), 5_000, 'MQTT client end').catch(() => undefined);
    },
  };
}

/**
 * A platform stand-in: records the requests on `filters` and answers each on `{topic}_reply`
 * with `reply(topic, payload)` (QoS 1) after `delayMs`; no answer when `reply` returns
 * undefined. Default answer: {@link platformReply}.
 */
export interface PlatformStandIn extends Recorder {
  readonly replies: () => number;
}

export interface PlatformOptions {
  readonly reply?: (topic: string, payload: Buffer) => Buffer | string | undefined;
  readonly delayMs?: number;
  readonly client?: IClientOptions;
}

export async function startPlatform(
  url: string,
  filters: string | string[],
  o: PlatformOptions = {},
): Promise<PlatformStandIn> {
  const reply = o.reply ?? ((_t: string, p: Buffer) => platformReply(p));
  const rec = await startRecorder(url, filters, { clientId: uid('e2e-platform-'), ...o.client });
  let replies = 0;
  rec.client.on('message', (topic, payload) => {
    if (topic.endsWith('_reply')) return;
    const answer = reply(topic, payload);
    if (answer === undefined) return;
    const send = (): void => {
      replies++;
      rec.client.publish(`${topic}_reply`, answer, { qos: 1 });
    };
    if (o.delayMs === undefined) send();
    else setTimeout(send, o.delayMs);
  });
  return { ...rec, replies: () => replies };
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * `mosquitto_sub -h 127.0.0.1 -p <port> -v -t <topic> -C <count>` (plus `-d` to know when the
 * subscription is in force, and `-q 1`), started under `stdbuf -oL`, and subscribed. Its message lines are
 * `{@link subLines}`.
 */
export async function startMosquittoSub(port: number, topic: string, count = 1): Promise<Proc> {
  // stdbuf: mosquitto_sub writes to a pipe through a full stdio buffer, so its lines would
  // only show up at exit
  const p = new Proc(
    'stdbuf',
    [
      '-oL',
      'mosquitto_sub',
      ...['-h', '127.0.0.1', '-p', String(port), '-d', '-v', '-q', '1'],
      ...['-t', topic, '-C', String(count)],
    ],
    { timeoutMs: 30_000 },
  );
  await p.waitFor(/^Subscribed \(mid: \d+\)/m, { stream: 'stdout', timeoutMs: 10_000 });
  return p;
}

/** The message lines (`topic payload`) of `mosquitto_sub -d -v` output, debug lines removed. */
export function subLines(stdout: string): string[] {
  return stdout
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('Client ') && !l.startsWith('Subscribed '));
}

/** The JSON object lines of a libcoap client's stdout (its payload), other lines ignored. */
export function jsonLines(stdout: string): unknown[] {
  const out: unknown[] = [];
  for (const line of stdout.split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try {
      out.push(JSON.parse(t));
    } catch {
      // not a JSON line
    }
  }
  return out;
}
