/**
 * End-to-end helpers (HTTP routes, per-device MQTT sessions, commands for
 * sleepy devices, presence): an in-process HTTP server that records every request and answers
 * as a test tells it (status, headers, body, or never), `coap-edge serve` processes ("pods")
 * started from a YAML file, a Mosquitto of the test's own with a password file and an ACL,
 * devices files, and readers for the options of a CoAP answer. Every wait is bounded.
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { ContentFormat, OptionNumber, formatCode } from '../../src/coap/constants.js';
import { decodeUint } from '../../src/coap/options.js';
import { CipherSuite } from '../../src/dtls/constants.js';
import { derivePsk } from '../../src/enos/psk.js';
import { CoapDtlsClient, type CoapResponse } from '../../src/tools/coap-client.js';
import { Mosquitto } from '../integration/bridge/brokers.js';
import { sleep } from './e2e.js';
import { listeningPort, startCli, type Proc } from './processes.js';

// --- CoAP answers -----------------------------------------------------------------------------

/** `2.04`, `5.03`, ... */
export function codeOf(r: CoapResponse): string {
  return formatCode(r.code);
}

/** The first value of option `n`, or undefined. */
export function optionOf(r: CoapResponse, n: number): Buffer | undefined {
  return r.options.find((o) => o.number === n)?.value;
}

/** Max-Age in seconds, when present. */
export function maxAgeOf(r: CoapResponse): number | undefined {
  const v = optionOf(r, OptionNumber.MAX_AGE);
  return v === undefined ? undefined : decodeUint(v);
}

/** Content-Format, when present. */
export function contentFormatOf(r: CoapResponse): number | undefined {
  const v = optionOf(r, OptionNumber.CONTENT_FORMAT);
  return v === undefined ? undefined : decodeUint(v);
}

/** Option 2100 (command topic) as text, when present. */
export function commandTopicOf(r: CoapResponse): string | undefined {
  return optionOf(r, OptionNumber.COMMAND_TOPIC)?.toString('utf8');
}

/** Option 2102 (command payload) as text, when present. */
export function commandPayloadOf(r: CoapResponse): string | undefined {
  return optionOf(r, OptionNumber.COMMAND_PAYLOAD)?.toString('utf8');
}

/** A one-line description of an answer for assertion messages. */
export function describeAnswer(r: CoapResponse): string {
  const opts = r.options
    .map(
      (o) => `${o.number}=${o.value.length > 40 ? `${o.value.length}B` : o.value.toString('hex')}`,
    )
    .join(',');
  const body = r.payload.length > 200 ? `${r.payload.length} bytes` : r.payload.toString('utf8');
  return `${codeOf(r)} [${opts}] ${body}`;
}

// --- devices ----------------------------------------------------------------------------------

export interface DeviceSpec {
  readonly pk: string;
  readonly dk: string;
  readonly secret: string;
  readonly assetId?: string;
}

/** Writes a devices file (the embedded secret source) with `devices`; returns its path. */
export function writeDevicesFile(
  dir: string,
  devices: readonly DeviceSpec[],
  name = 'devices.json',
): string {
  const file = join(dir, name);
  const doc = {
    devices: devices.map((d) => ({
      productKey: d.pk,
      deviceKey: d.dk,
      deviceSecret: d.secret,
      ...(d.assetId !== undefined ? { assetId: d.assetId } : {}),
    })),
  };
  writeFileSync(file, JSON.stringify(doc));
  chmodSync(file, 0o644);
  return file;
}

/** A device over our DTLS client (CCM_8): identity `pk,dk,2,lifetime`, PSK from its secret. */
export function connectAs(port: number, d: DeviceSpec, lifetime = 3600): Promise<CoapDtlsClient> {
  return CoapDtlsClient.connect({
    host: '127.0.0.1',
    port,
    identity: `${d.pk},${d.dk},2,${lifetime}`,
    psk: derivePsk(d.secret),
    cipherSuites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
    handshakeTimeoutMs: 10_000,
    retransmitTimeoutMs: 500,
  });
}

/** POSTs JSON to `/topic{mqttTopic}` (Content-Format 50), waiting at most `timeoutMs`. */
export function postJson(
  client: CoapDtlsClient,
  mqttTopic: string,
  body: string,
  o: { query?: readonly string[]; timeoutMs?: number } = {},
): Promise<CoapResponse> {
  return client.request({
    method: 'POST',
    path: `/topic${mqttTopic}`,
    payload: Buffer.from(body, 'utf8'),
    contentFormat: ContentFormat.JSON,
    timeoutMs: o.timeoutMs ?? 15_000,
    ...(o.query !== undefined ? { query: o.query } : {}),
  });
}

// --- an HTTP server that answers as told -------------------------------------------------------

export interface RecordedRequest {
  readonly method: string;
  /** Path and query as on the request line. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  /** ms (performance.now) when the body was complete. */
  readonly at: number;
}

/** What to answer: a status with optional headers and body, or `hang` (never answer). */
export type HttpAnswer =
  | {
      readonly status: number;
      readonly headers?: Readonly<Record<string, string>>;
      readonly body?: string | Buffer;
    }
  | 'hang';

/**
 * An in-process HTTP/1.1 server on 127.0.0.1 (free port) that records every request and
 * answers it with `answer(request)` (default: 204). `close()` also ends hanging requests.
 */
export class HttpStandIn {
  readonly requests: RecordedRequest[] = [];
  answer: (req: RecordedRequest) => HttpAnswer = () => ({ status: 204 });
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(): Promise<HttpStandIn> {
    const holder: { s?: HttpStandIn } = {};
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const self = holder.s;
        if (self === undefined) return;
        const rec: RecordedRequest = {
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(chunks),
          at: performance.now(),
        };
        self.requests.push(rec);
        let a: HttpAnswer;
        try {
          a = self.answer(rec);
        } catch {
          a = { status: 500 };
        }
        if (a === 'hang') return;
        res.writeHead(a.status, { ...a.headers });
        res.end(a.body);
      });
    });
    server.on('connection', (s: Socket) => {
      holder.s?.sockets.add(s);
      s.once('close', () => holder.s?.sockets.delete(s));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('http stand-in: no port');
    const s = new HttpStandIn(server, addr.port);
    holder.s = s;
    return s;
  }

  /** `http://127.0.0.1:<port>` */
  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The JSON bodies of the requests so far (bodies that are not JSON are left out). */
  jsonBodies(): unknown[] {
    const out: unknown[] = [];
    for (const r of this.requests) {
      try {
        out.push(JSON.parse(r.body.toString('utf8')));
      } catch {
        // not JSON
      }
    }
    return out;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.server.closeAllConnections();
    const closed = once(this.server, 'close');
    this.server.close();
    await closed;
  }
}

// --- coap-edge processes ----------------------------------------------------------------------

/** A `coap-edge serve` process with its DTLS port. */
export interface Pod {
  readonly name: string;
  readonly proc: Proc;
  readonly port: number;
  /** SIGTERM, then SIGKILL after 5 s; resolves when it is gone. */
  stop(): Promise<void>;
}

/** Writes `config` as YAML to `{dir}/{name}.yaml`; returns the path. */
export function writeYamlConfig(
  dir: string,
  name: string,
  config: Record<string, unknown>,
): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, toYaml(config));
  return file;
}

/**
 * Starts `node dist/src/cli.js serve --config {dir}/{name}.yaml` with `config` (bind 127.0.0.1,
 * DTLS port 0 and log level info unless given) and waits for its "coap-edge listening" line.
 */
export async function startPod(
  dir: string,
  name: string,
  config: Record<string, unknown>,
  o: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Pod> {
  const file = writeYamlConfig(dir, name, {
    bind: '127.0.0.1',
    dtlsPort: 0,
    logLevel: 'info',
    ...config,
  });
  const proc = startCli(['serve', '--config', file], {
    timeoutMs: o.timeoutMs ?? 120_000,
    ...(o.env !== undefined ? { env: o.env } : {}),
  });
  let port: number;
  try {
    port = await listeningPort(proc);
  } catch (err) {
    await proc.kill();
    throw err;
  }
  return {
    name,
    proc,
    port,
    stop: async () => {
      if (proc.exited) return;
      proc.signal('SIGTERM');
      const timer = setTimeout(() => proc.signal('SIGKILL'), 5_000);
      await proc.done;
      clearTimeout(timer);
    },
  };
}

/** The last `n` lines of a pod's output, for assertion messages. */
export function podLogTail(pod: Pod, n = 40): string {
  const lines = `${pod.proc.stdout}${pod.proc.stderr}`.split('\n');
  return `--- ${pod.name} (last ${n} lines)\n${lines.slice(-n).join('\n')}`;
}

/** Awaits `p`; a rejection is rethrown with the pods' log tails added. */
export async function explainWith<T>(pods: readonly Pod[], p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    throw new Error(`${text}\n${pods.map((x) => podLogTail(x)).join('\n')}`, { cause: err });
  }
}

/** Log lines of a pod (pino JSON) whose `msg` equals `msg`. */
export function podLogLines(pod: Pod, msg: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of pod.proc.stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (o.msg === msg) out.push(o);
    } catch {
      // not JSON
    }
  }
  return out;
}

/** Waits until `pod` logged `msg` at least `count` times. */
export async function waitPodLog(
  pod: Pod,
  msg: string,
  count = 1,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (podLogLines(pod, msg).length < count) {
    if (Date.now() > deadline) {
      throw new Error(
        `${pod.name}: no ${count}× "${msg}" within ${timeoutMs} ms\n${pod.proc.describe()}`,
      );
    }
    if (pod.proc.exited) throw new Error(`${pod.name} exited\n${pod.proc.describe()}`);
    await sleep(25);
  }
}

// --- Mosquitto with password authentication -------------------------------------------------

/**
 * Starts a Mosquitto of the test's own (free port) with `allow_anonymous false`, a password
 * file made with `mosquitto_passwd` for `users`, the ACL `aclLines`, and `log_type all` (its
 * log names the client id of every PUBLISH it receives). Files go to `dir`.
 */
export async function startAuthMosquitto(
  dir: string,
  users: readonly (readonly [string, string])[],
  aclLines: readonly string[],
): Promise<Mosquitto> {
  const passwd = join(dir, 'passwd');
  users.forEach(([user, pass], i) => {
    const args = i === 0 ? ['-b', '-c', passwd, user, pass] : ['-b', passwd, user, pass];
    const r = spawnSync('mosquitto_passwd', args, { encoding: 'utf8', timeout: 5_000 });
    if (r.status !== 0) throw new Error(`mosquitto_passwd ${user}: ${r.stderr}`);
  });
  const acl = join(dir, 'acl');
  writeFileSync(acl, `${aclLines.join('\n')}\n`);
  // Mosquitto started as root drops to the `mosquitto` user before it reads these files.
  chmodSync(dir, 0o755);
  chmodSync(passwd, 0o644);
  chmodSync(acl, 0o644);
  return Mosquitto.start({
    config: [
      'allow_anonymous false',
      `password_file ${passwd}`,
      `acl_file ${acl}`,
      'log_dest stderr',
      'log_type all',
    ].join('\n'),
  });
}
