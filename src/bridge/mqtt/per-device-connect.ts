/**
 * Logging a device in for its per-device session (`per-device.ts`): its secret, its login
 * (`per-device-login.ts`), the CONNECT on an {@link MqttConnection} that does not reconnect
 * (a refused MQTT 5 is tried again at once with 3.1.1, through the manager's
 * {@link ProtocolChoice}), and what a failure means: counted by reason, a refused login
 * remembered (`per-device-admission.ts`), an unreachable broker told to the probe.
 * Nothing here logs a credential: the device, the URL without user info, CONNACK codes.
 */
import { ErrorWithReasonCode } from 'mqtt';
import { CoapEdgeError } from '../../errors/index.js';
import type { Clock } from '../../time/clock.js';
import type { Principal } from '../types.js';
import { MqttConnection, type ConnectionHooks, type ProtocolChoice } from './connection.js';
import {
  BackendUnavailableError,
  DeviceUnauthorizedError,
  type MqttBackendError,
} from './errors.js';
import type { Admission } from './per-device-admission.js';
import {
  deviceLogin,
  isLoginRefusal,
  refusalCode,
  type DeviceAuthKind,
  type DeviceLoginTemplates,
} from './per-device-login.js';
import type { BrokerProbe } from './per-device-probe.js';
import { checkOpening, label, type DeviceSession } from './per-device-table.js';

/** Why opening a session failed after it was started (a CONNECT was sent or about to be). */
export type ConnectFailureReason =
  /** CONNACK 4/5 or 0x86/0x87: the broker refused the device's login. */
  | 'unauthorized'
  /** No connection or no CONNACK in time (also a connection lost before the SUBACKs). */
  | 'unreachable'
  /** Any other CONNACK refusal (server unavailable, busy, protocol version, ...). */
  | 'connack-refused'
  /** `secretOf` gave no secret. */
  | 'no-secret'
  /** `secretOf` threw. */
  | 'secret-error'
  /** The login could not be built from the device's keys and secret. */
  | 'login-invalid'
  /** `closeDevice` or `close` while opening. */
  | 'aborted';

export interface DeviceConnectorOptions {
  readonly url: string;
  readonly urlForLogs: string;
  readonly auth: DeviceAuthKind;
  readonly templates: DeviceLoginTemplates;
  readonly keepaliveSec: number;
  readonly connectTimeoutMs: number;
  readonly maxInflightPerDevice: number;
  readonly refusalMemoryMs: number;
  secretOf(device: Principal): Promise<string | undefined>;
  /** Wall time, ms (the EnOS login's `timestamp=`). */
  readonly now: () => number;
  /** The sessions' connection timers (SUBACK wait, close guard). */
  readonly clock: Clock;
  readonly protocol: ProtocolChoice;
  readonly admission: Admission;
  readonly probe: BrokerProbe;
  readonly warn: (obj: Record<string, unknown>, msg: string) => void;
  /** A message on the session's connection. */
  onMessage(s: DeviceSession, topic: string, payload: Buffer): void;
  /** The session's connection was lost after it was up. */
  onLost(s: DeviceSession, err: Error | undefined): void;
}

/** Thrown inside {@link DeviceConnector.connect} for a failed CONNECT; carries the last mqtt.js error. */
class AttemptFailed extends CoapEdgeError {
  readonly code = 'PER_DEVICE_CONNECT_FAILED';
  constructor(readonly last: Error | undefined) {
    super('connect attempt failed');
  }
}

export class DeviceConnector {
  /** CONNECTs sent. */
  attempts = 0;
  ok = 0;
  readonly failed: Record<ConnectFailureReason, number> = {
    unauthorized: 0,
    unreachable: 0,
    'connack-refused': 0,
    'no-secret': 0,
    'secret-error': 0,
    'login-invalid': 0,
    aborted: 0,
  };
  private connackRefusedLogged = false;
  private seq = 0;

  constructor(private readonly o: DeviceConnectorOptions) {}

  /**
   * Looks up the device's secret, builds its login and connects; resolves with the
   * connection up (the session's `conn`).
   * @throws DeviceUnauthorizedError, BackendUnavailableError (counted), or the session's
   *   end error when it was ended meanwhile (not counted here)
   */
  async connect(s: DeviceSession, device: Principal): Promise<MqttConnection> {
    const o = this.o;
    let secret: string | undefined;
    try {
      secret = await o.secretOf(device);
    } catch {
      this.failed['secret-error']++;
      throw new BackendUnavailableError('BACKEND_UNAVAILABLE', 'device secret lookup failed');
    }
    checkOpening(s);
    if (secret === undefined || secret.length === 0) {
      this.failed['no-secret']++;
      throw new DeviceUnauthorizedError('no device secret', false);
    }
    let login: { clientId: string; username: string; password: string };
    try {
      login = deviceLogin(o.auth, o.templates, s.device, secret, o.now());
    } catch {
      this.failed['login-invalid']++;
      throw new DeviceUnauthorizedError('login cannot be built', false);
    }
    let conn: MqttConnection;
    try {
      conn = await this.attempt(s, login);
    } catch (e: unknown) {
      if (!(e instanceof AttemptFailed)) throw e; // aborted
      throw this.attemptError(s, e.last);
    }
    this.ok++;
    this.connackRefusedLogged = false;
    o.probe.answered();
    return conn;
  }

  /**
   * Connects; resolves when up, rejects with {@link AttemptFailed} or the abort error. The
   * connection does not reconnect: a session reopens on the device's next request.
   */
  private attempt(
    s: DeviceSession,
    login: { clientId: string; username: string; password: string },
  ): Promise<MqttConnection> {
    const o = this.o;
    return new Promise<MqttConnection>((resolve, reject) => {
      let settled = false;
      const hooks: ConnectionHooks = {
        protocolLevel: () => o.protocol.level,
        onVersionRefused: (_c, level) => o.protocol.refused(level),
        onAttempt: () => {
          this.attempts++;
        },
        onUp: (c) => {
          if (settled) return;
          settled = true;
          s.abort = undefined;
          resolve(c);
        },
        onDown: (c, wasUp, err, retrying) => {
          if (retrying) return; // MQTT 5 refused: again at once with 3.1.1
          void c.close();
          if (!settled) {
            settled = true;
            s.abort = undefined;
            reject(new AttemptFailed(err));
          } else if (wasUp) o.onLost(s, err);
        },
        onMessage: (topic, payload) => o.onMessage(s, topic, payload),
      };
      const conn = new MqttConnection(
        this.seq++,
        {
          url: o.url,
          username: login.username,
          password: login.password,
          clientId: login.clientId,
          keepaliveSec: o.keepaliveSec,
          connectTimeoutMs: o.connectTimeoutMs,
          reconnect: false,
          maxInflight: Math.max(1, o.maxInflightPerDevice),
          clock: o.clock,
        },
        hooks,
      );
      s.conn = conn;
      s.abort = (err) => {
        if (settled) return;
        settled = true;
        s.abort = undefined;
        void conn.close();
        reject(err);
      };
      conn.start();
    });
  }

  /** The error of a failed CONNECT (counted); a refused login is remembered. */
  private attemptError(s: DeviceSession, err: Error | undefined): MqttBackendError {
    const o = this.o;
    const code = refusalCode(err);
    if (isLoginRefusal(err)) {
      this.failed.unauthorized++;
      o.probe.answered();
      o.admission.rememberRefusal(s.key);
      o.warn(
        { device: label(s.device), connack: code, rememberMs: o.refusalMemoryMs },
        'broker refused the device login; answering unauthorized without retrying meanwhile',
      );
      return new DeviceUnauthorizedError(`CONNACK ${code ?? '?'}`, false);
    }
    if (err instanceof ErrorWithReasonCode) {
      this.failed['connack-refused']++;
      o.probe.answered();
      if (!this.connackRefusedLogged) {
        // once until a device connects again; every refusal is counted
        this.connackRefusedLogged = true;
        o.warn(
          { device: label(s.device), url: o.urlForLogs, connack: code },
          'broker refused a device connection',
        );
      }
      return new BackendUnavailableError('BACKEND_UNAVAILABLE', `CONNACK ${code ?? '?'}`);
    }
    this.failed.unreachable++;
    o.probe.unreachable(err);
    return new BackendUnavailableError('BACKEND_UNAVAILABLE', 'broker unreachable');
  }
}
