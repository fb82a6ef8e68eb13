/**
 * Every setting of coap-edge, in one table. The zod schema, the command-line flags, the
 * environment variables and the README reference table are all derived from this table,
 * so they cannot drift apart.
 *
 * Naming: the YAML key is the table key (camelCase); the flag is its kebab-case form
 * (`dtlsPort` → `--dtls-port`); the environment variable is `COAP_EDGE_` + upper snake case
 * (`COAP_EDGE_DTLS_PORT`).
 */
import { z } from 'zod';

/** How a value given as text (flag or environment variable) is turned into the setting's type. */
export type SettingKind = 'string' | 'integer' | 'number' | 'boolean' | 'list' | 'yaml';

export interface Setting<
  S extends z.ZodType = z.ZodType,
  D extends z.output<S> | undefined = z.output<S> | undefined,
> {
  readonly schema: S;
  /** Default value; `undefined` means "not set" (the feature is off or has no value). */
  readonly default: D;
  readonly kind: SettingKind;
  /** One line for the README table and `--help`. */
  readonly doc: string;
  /** Placeholder in `--help`, e.g. `<port>`. */
  readonly arg?: string;
  /** Never printed (config dump, logs). */
  readonly secret?: boolean;
  /** Only in the YAML file (structured values such as lists of objects). */
  readonly yamlOnly?: boolean;
  /** Section heading for the README table. */
  readonly group: string;
}

function setting<S extends z.ZodType, const D extends z.output<S> | undefined>(
  schema: S,
  def: D,
  kind: SettingKind,
  group: string,
  doc: string,
  extra: { arg?: string; secret?: boolean; yamlOnly?: boolean } = {},
): Setting<S, D> {
  return { schema, default: def, kind, group, doc, ...extra };
}

const port = z.number().int().min(0).max(65535);
const positiveInt = z.number().int().min(1);
const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export const settings = {
  // --- network -------------------------------------------------------------------------
  bind: setting(
    z.string().min(1),
    '0.0.0.0',
    'string',
    'Network',
    'Address the UDP sockets bind to (`::` for dual stack).',
    { arg: '<address>' },
  ),
  dtlsPort: setting(port, 5684, 'integer', 'Network', 'UDP port for CoAP over DTLS 1.2 PSK.', {
    arg: '<port>',
  }),
  coapPort: setting(
    port,
    undefined,
    'integer',
    'Network',
    'UDP port for plain, unauthenticated CoAP. Development only; off unless set.',
    { arg: '<port>' },
  ),
  // --- devices and secrets ---------------------------------------------------------------
  devices: setting(
    z.string().min(1),
    undefined,
    'string',
    'Secrets',
    'JSON file with products and devices (the embedded secret source).',
    { arg: '<file.json>' },
  ),
  // --- DTLS ------------------------------------------------------------------------------
  maxAssociations: setting(
    positiveInt,
    100_000,
    'integer',
    'DTLS',
    'Most established DTLS associations kept; beyond it the least recently active one is evicted.',
    { arg: '<n>' },
  ),
  maxHandshakes: setting(
    positiveInt,
    5_000,
    'integer',
    'DTLS',
    'Most handshakes in progress (after the cookie exchange); further ClientHellos are not answered.',
    { arg: '<n>' },
  ),
  idleTimeout: setting(
    positiveInt,
    86_700,
    'integer',
    'DTLS',
    'Seconds without traffic after which an association is evicted (default: the longest EnOS lifetime plus 5 min).',
    { arg: '<seconds>' },
  ),
  handshakeTimeout: setting(
    positiveInt,
    60,
    'integer',
    'DTLS',
    'Seconds a handshake may take from the verified ClientHello to the Finished message.',
    { arg: '<seconds>' },
  ),
  retransmitTimeout: setting(
    positiveInt,
    1_000,
    'integer',
    'DTLS',
    'Initial DTLS flight retransmission timer in ms; doubles on each retransmission up to 60 s (RFC 6347 §4.2.4.1).',
    { arg: '<ms>' },
  ),
  cookieLifetime: setting(
    positiveInt,
    60,
    'integer',
    'DTLS',
    'Seconds between HelloVerifyRequest cookie secret rotations; the previous secret stays valid.',
    { arg: '<seconds>' },
  ),
  cipherSuites: setting(
    z.array(z.enum(['TLS_PSK_WITH_AES_128_CCM_8', 'TLS_PSK_WITH_AES_128_CBC_SHA256'])).min(1),
    ['TLS_PSK_WITH_AES_128_CCM_8', 'TLS_PSK_WITH_AES_128_CBC_SHA256'],
    'list',
    'DTLS',
    'Cipher suites in order of server preference.',
    { arg: '<suite,...>' },
  ),
  // --- process ---------------------------------------------------------------------------
  logLevel: setting(
    logLevel,
    'info',
    'string',
    'Process',
    'Log level: fatal, error, warn, info, debug, trace or silent.',
    { arg: '<level>' },
  ),
} as const;

export type Settings = typeof settings;
export type SettingName = keyof Settings;
