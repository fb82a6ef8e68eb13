/**
 * A Mosquitto broker for the per-device variants: the configuration of `startMosquitto`
 * (uplink-procs.ts: own instance on a free port, no persistence, raised in-flight and queue
 * limits, TCP_NODELAY) plus a `password_file` holding one user per simulated device.
 *
 * `allow_anonymous true` stays: clients without a username (coap-edge's bridge pool, the
 * platform stand-in, the counting subscriber) still connect anonymously, while a client that
 * presents a username — each per-device session — is checked against the password file
 * (Mosquitto 2: a wrong password is refused, "not authorised"). `checkPasswordAuth` proves
 * that before the measurement.
 *
 * The password file is written in plain text (`username:password` per line) and hashed in
 * place with `mosquitto_passwd -U` (one call for all users; about 0.1 ms per user).
 * Started as root, Mosquitto drops to the `mosquitto` user before it reads the password
 * file: the file is then given to that user (or, without such a user, made world-readable;
 * it holds hashes of generated demo secrets only) and its directory made traversable.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as mqttConnect } from 'mqtt';
import { freeTcpPort, spawnHelper } from './servers.js';
import { sleep } from './stats.js';
import { mosquittoVersion, type Broker } from './uplink-procs.js';

const HOST = '127.0.0.1';

export interface BrokerUser {
  readonly username: string;
  readonly password: string;
}

export interface AuthBroker extends Broker {
  /** Users in the password file and how long `mosquitto_passwd -U` took. */
  readonly passwordFile: { readonly users: number; readonly hashMs: number };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect(port, HOST);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function idOf(flag: '-u' | '-g', user: string): number | undefined {
  const r = spawnSync('id', [flag, user], { encoding: 'utf8', timeout: 5000 });
  const n = Number(r.stdout.trim());
  return r.status === 0 && Number.isInteger(n) ? n : undefined;
}

/** Root only: Mosquitto reads the password file after dropping to its own user. */
function readableByMosquitto(dir: string, file: string): void {
  chmodSync(dir, 0o711);
  const uid = idOf('-u', 'mosquitto');
  const gid = idOf('-g', 'mosquitto');
  if (uid !== undefined && gid !== undefined) chownSync(file, uid, gid);
  else chmodSync(file, 0o644);
}

/** Mosquitto as `startMosquitto` starts it, plus `password_file` with `users`. */
export async function startMosquittoWithPasswords(
  users: readonly BrokerUser[],
): Promise<AuthBroker> {
  const bad = users.find((u) => u.username.includes(':') || /[\r\n]/.test(u.username + u.password));
  if (bad !== undefined) throw new Error(`user ${bad.username}: no ':' or line breaks allowed`);
  const dir = mkdtempSync(join(tmpdir(), 'coap-edge-uplink-mosquitto-'));
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  process.once('exit', cleanup); // also on Ctrl-C
  const passwd = join(dir, 'passwd');
  writeFileSync(passwd, users.map((u) => `${u.username}:${u.password}\n`).join(''), {
    mode: 0o600,
  });
  const t0 = performance.now();
  const hashed = spawnSync('mosquitto_passwd', ['-U', passwd], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  const hashMs = Math.round(performance.now() - t0);
  if (hashed.status !== 0) {
    cleanup();
    throw new Error(
      `mosquitto_passwd -U failed (${hashed.status ?? hashed.signal ?? hashed.error?.message}): ` +
        `${hashed.stderr ?? ''}`,
    );
  }
  if (process.getuid?.() === 0) readableByMosquitto(dir, passwd);
  const port = await freeTcpPort();
  const config = [
    `listener ${port} ${HOST}`,
    'allow_anonymous true',
    `password_file ${passwd}`,
    'persistence false',
    'max_inflight_messages 1000',
    'max_queued_messages 100000',
    'max_queued_bytes 0',
    'set_tcp_nodelay true',
    'connection_messages false',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    '',
  ].join('\n');
  const file = join(dir, 'mosquitto.conf');
  writeFileSync(file, config);
  const proc = spawnHelper('mosquitto', 'mosquitto', ['-c', file]);
  const deadline = performance.now() + 10_000;
  while (!(await canConnect(port))) {
    if (!proc.alive() || performance.now() > deadline) {
      await proc.stop(1000);
      cleanup();
      throw new Error(`mosquitto did not start on port ${port}:\n${proc.outputTail()}`);
    }
    await sleep(50);
  }
  return {
    proc,
    port,
    url: `mqtt://${HOST}:${port}`,
    config,
    version: mosquittoVersion(),
    cleanup,
    passwordFile: { users: users.length, hashMs },
  };
}

/** 'accepted' or the refusal (CONNACK code / error) of one MQTT 5 login. */
function tryLogin(url: string, username: string, password: string): Promise<string> {
  return new Promise((resolve) => {
    const c = mqttConnect(url, {
      clientId: `bench-authcheck-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
      username,
      password,
      protocolVersion: 5,
      reconnectPeriod: 0,
      connectTimeout: 5000,
    });
    const done = (r: string): void => {
      c.end(true);
      resolve(r);
    };
    c.once('connect', () => done('accepted'));
    c.once('error', (err) => {
      const code = (err as { code?: unknown }).code;
      done(`refused (${typeof code === 'number' ? `reason 0x${code.toString(16)}` : err.message})`);
    });
  });
}

/** Logs in once with a user's password and once with a wrong one. */
export async function checkPasswordAuth(
  url: string,
  user: BrokerUser,
): Promise<{ rightPassword: string; wrongPassword: string; enforced: boolean }> {
  const rightPassword = await tryLogin(url, user.username, user.password);
  const wrongPassword = await tryLogin(url, user.username, `${user.password}-wrong`);
  return {
    rightPassword,
    wrongPassword,
    enforced: rightPassword === 'accepted' && wrongPassword.startsWith('refused'),
  };
}
