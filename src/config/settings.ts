/**
 * Every setting of coap-edge, in one table. The zod schema, the command-line flags, the
 * environment variables and the README reference table are all derived from this table,
 * so they cannot drift apart.
 *
 * Naming: the YAML key is the table key (camelCase); the flag is its kebab-case form
 * (`dtlsPort` → `--dtls-port`); the environment variable is `COAP_EDGE_` + upper snake case
 * (`COAP_EDGE_DTLS_PORT`).
 *
 * Units: a duration's name ends in its unit, `Ms` or `Seconds` (`ackTimeoutMs`,
 * `drainTimeoutSeconds`), and so do its flag and variable. The names these settings had before
 * are still read (see {@link renamedSettings}).
 */
import { z } from 'zod';
import { DEFAULT_DTLS_PORT } from './dtls-port.js';

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

/** Where a route sends a device request: an MQTT topic or an HTTP endpoint. */
const routeAuth = z.discriminatedUnion('type', [
  z.object({ type: z.literal('bearer'), tokenEnv: z.string().min(1) }).strict(),
  z
    .object({
      type: z.literal('hmac'),
      secretEnv: z.string().min(1),
      header: z.string().min(1).default('X-Signature'),
    })
    .strict(),
]);
export const routeSchema = z.discriminatedUnion('backend', [
  z
    .object({
      name: z.string().min(1).optional(),
      /** MQTT topic pattern: literal levels, `{pk}`, `{dk}`, `+` and a final `#`. */
      match: z.string().min(1),
      backend: z.literal('mqtt'),
      /** Topic template ({pk}, {dk}, {topic}); default: the device's own topic. */
      topic: z.string().min(1).optional(),
    })
    .strict(),
  z
    .object({
      name: z.string().min(1).optional(),
      match: z.string().min(1),
      backend: z.literal('http'),
      method: z.enum(['POST', 'PUT']).default('POST'),
      /** URL template ({pk}, {dk}, {topic}). */
      url: z.string().min(1),
      headers: z.record(z.string(), z.string()).default({}),
      auth: routeAuth.optional(),
      /** Request timeout in ms (default: httpTimeoutMs). */
      timeoutMs: z.number().int().min(1).optional(),
      /** Former name of `timeoutMs`: still read, with a warning (see `routeTimeoutsInMs`). */
      timeout: z.number().int().min(1).optional(),
    })
    .strict()
    .refine((r) => r.timeout === undefined || r.timeoutMs === undefined, {
      message: 'both timeout and timeoutMs are set; keep only timeoutMs',
    }),
]);
export type RouteConfig = z.output<typeof routeSchema>;
const positiveInt = z.number().int().min(1);
/** `host:port` or `[v6addr]:port` of a Redis node or sentinel. */
const redisNode = z
  .string()
  .regex(/^(?:\[[0-9A-Fa-f:.]+\]|[^\s:[\]]+):\d{1,5}$/, 'must be host:port');
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
  dtlsPort: setting(
    port,
    DEFAULT_DTLS_PORT,
    'integer',
    'Network',
    'UDP port for CoAP over DTLS 1.2 PSK.',
    {
      arg: '<port>',
    },
  ),
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
  redisUrl: setting(
    z.url({ protocol: /^rediss?$/ }),
    undefined,
    'string',
    'Secrets',
    'Redis URL (`redis://[:password@]host:6379/0`, `rediss://` for TLS): shared secret cache and activation store for all pods.',
    { arg: '<url>', secret: true },
  ),
  redisPrefix: setting(
    z
      .string()
      .min(1)
      .regex(/^[A-Za-z0-9:_.-]+$/),
    'coap-edge',
    'string',
    'Secrets',
    'Namespace prefix of every Redis key coap-edge writes (no braces: keys carry Cluster hash tags).',
    { arg: '<prefix>' },
  ),
  redisCluster: setting(
    z.array(redisNode).min(1),
    undefined,
    'list',
    'Secrets',
    'Seed nodes of a Redis Cluster (`host:port,...`), instead of `redisUrl`; auth and TLS from `redisUsername`, `redisPassword`, `redisTls`.',
    { arg: '<host:port,...>' },
  ),
  redisSentinels: setting(
    z.array(redisNode).min(1),
    undefined,
    'list',
    'Secrets',
    'Redis Sentinels (`host:port,...`) that name the master (`redisSentinelMaster`), instead of `redisUrl`.',
    { arg: '<host:port,...>' },
  ),
  redisSentinelMaster: setting(
    z.string().min(1).max(200),
    undefined,
    'string',
    'Secrets',
    'Master name the Redis Sentinels monitor (with `redisSentinels`).',
    { arg: '<name>' },
  ),
  redisUsername: setting(
    z.string().min(1),
    undefined,
    'string',
    'Secrets',
    'ACL user for Redis Cluster nodes or the Sentinel-named master (a `redisUrl` carries its own).',
    { arg: '<user>' },
  ),
  redisPassword: setting(
    z.string().min(1),
    undefined,
    'string',
    'Secrets',
    'Password for Redis Cluster nodes or the Sentinel-named master (a `redisUrl` carries its own).',
    { arg: '<password>', secret: true },
  ),
  redisSentinelPassword: setting(
    z.string().min(1),
    undefined,
    'string',
    'Secrets',
    'Password of the Redis Sentinels themselves, when they require one.',
    { arg: '<password>', secret: true },
  ),
  redisTls: setting(
    z.boolean(),
    false,
    'boolean',
    'Secrets',
    'TLS to Redis Cluster nodes, or to the sentinels and master (a `redisUrl` says `rediss://`).',
  ),
  redisTlsCa: setting(
    z.string().min(1),
    undefined,
    'string',
    'Secrets',
    "PEM file of the CA that signed the Redis servers' certificates (default: the system CAs).",
    { arg: '<file.pem>' },
  ),
  redisWaitReplicas: setting(
    z.number().int().min(0).max(16),
    0,
    'integer',
    'Secrets',
    "Replicas that must confirm (Redis WAIT) a queued command, an activation or a shared association's sequence lease before it is used. Set it to the number of replicas each master has: then a failover keeps them (fewer lets one lose them; such writes are refused until the new master has that many).",
    { arg: '<n>' },
  ),
  redisCommandTimeoutMs: setting(
    positiveInt,
    300,
    'integer',
    'Secrets',
    'Deadline in ms of one Redis command, on every Redis connection (secret lookups, activations, commands, shared associations, presence); WAIT for replicas gets 80 % of it. A slower answer counts as Redis unavailable: a secret lookup goes to the registry, an activation is refused (5.03). Raise it when Redis answers slowly (remote, loaded).',
    { arg: '<ms>' },
  ),
  registryUrl: setting(
    z.url({ protocol: /^https?$/ }),
    undefined,
    'string',
    'Secrets',
    'Base URL of the upstream device registry (see docs/registry-api.md).',
    { arg: '<url>' },
  ),
  registryToken: setting(
    z.string().min(1),
    undefined,
    'string',
    'Secrets',
    'Bearer token sent to the registry.',
    { arg: '<token>', secret: true },
  ),
  registryTimeoutMs: setting(
    positiveInt,
    2_000,
    'integer',
    'Secrets',
    'Registry request timeout in ms; a slow registry fails the handshake after this long.',
    { arg: '<ms>' },
  ),
  secretCacheSize: setting(
    positiveInt,
    100_000,
    'integer',
    'Secrets',
    'Entries in the in-process secret cache (LRU).',
    { arg: '<n>' },
  ),
  secretCacheTtlSeconds: setting(
    positiveInt,
    300,
    'integer',
    'Secrets',
    'Seconds a secret stays in the in-process cache.',
    { arg: '<seconds>' },
  ),
  redisCacheTtlSeconds: setting(
    positiveInt,
    3_600,
    'integer',
    'Secrets',
    'Seconds a secret fetched from the registry stays in Redis.',
    { arg: '<seconds>' },
  ),
  negativeCacheTtlSeconds: setting(
    positiveInt,
    30,
    'integer',
    'Secrets',
    'Seconds an unknown device or product is remembered as unknown.',
    { arg: '<seconds>' },
  ),
  // --- CoAP ----------------------------------------------------------------------------------
  ackTimeoutMs: setting(
    z.number().int().min(-1),
    500,
    'integer',
    'CoAP',
    'Ms to wait for the backend before an empty ACK goes out and the answer follows as a separate response (0: always separate, -1: always piggybacked).',
    { arg: '<ms>' },
  ),
  maxPayload: setting(
    z.number().int().min(16).max(1_048_576),
    16_384,
    'integer',
    'CoAP',
    'Largest request payload in bytes, also reassembled from Block1 transfers; larger requests get 4.13 with Size1.',
    { arg: '<bytes>' },
  ),
  maxUploadsPerPeer: setting(
    z.number().int().min(1).max(64),
    4,
    'integer',
    'CoAP',
    'Block1 uploads one association may reassemble at once; a new one beyond it replaces the association’s oldest.',
    { arg: '<count>' },
  ),
  maxUploads: setting(
    z.number().int().min(0),
    1_000,
    'integer',
    'CoAP',
    'Block1 uploads reassembled at once over all associations; a new one beyond it gets 5.03 with Max-Age.',
    { arg: '<count>' },
  ),
  maxUploadBytes: setting(
    z.number().int().min(0),
    16_777_216,
    'integer',
    'CoAP',
    'Bytes all Block1 uploads may hold together (their buffers, keys and bookkeeping); a block needing more gets 5.03 and its upload is dropped.',
    { arg: '<bytes>' },
  ),
  blockSize: setting(
    z.union([
      z.literal(16),
      z.literal(32),
      z.literal(64),
      z.literal(128),
      z.literal(256),
      z.literal(512),
      z.literal(1024),
    ]),
    1_024,
    'integer',
    'CoAP',
    'Largest response payload sent in one message; longer answers go block-wise (Block2). A device may ask for smaller blocks.',
    { arg: '<bytes>' },
  ),
  // --- MQTT ----------------------------------------------------------------------------------
  mqttUrl: setting(
    z.url({ protocol: /^mqtts?$/ }),
    undefined,
    'string',
    'MQTT',
    'MQTT broker URL (`mqtt://host:1883`, `mqtts://host:8883`). Without it (and without --embedded-broker) requests that need a broker get 5.03.',
    { arg: '<url>' },
  ),
  mqttUsername: setting(
    z.string().min(1),
    undefined,
    'string',
    'MQTT',
    'Username of the bridge connections.',
    { arg: '<name>' },
  ),
  mqttPassword: setting(
    z.string().min(1),
    undefined,
    'string',
    'MQTT',
    'Password of the bridge connections.',
    { arg: '<password>', secret: true },
  ),
  mqttClientIdPrefix: setting(
    z.string().min(1).max(64),
    'coap-edge-',
    'string',
    'MQTT',
    'Client id prefix of the bridge connections (a random suffix is added per connection).',
    { arg: '<prefix>' },
  ),
  mqttPoolSize: setting(
    z.number().int().min(1).max(64),
    2,
    'integer',
    'MQTT',
    'Bridge connections that publish for all devices.',
    { arg: '<n>' },
  ),
  mqttProtocol: setting(
    z.enum(['auto', '5', '3.1.1']),
    'auto',
    'string',
    'MQTT',
    'MQTT protocol version: auto tries MQTT 5 and falls back to 3.1.1.',
    { arg: '<version>' },
  ),
  mqttTopicPrefix: setting(
    z
      .string()
      .refine((v) => !/[#+]/.test(v) && !v.includes('\u0000'), 'must not contain #, + or NUL'),
    '',
    'string',
    'MQTT',
    'Prefix put before every MQTT topic (the EnOS topic keeps its leading slash after it).',
    { arg: '<prefix>' },
  ),
  publishTimeoutMs: setting(
    positiveInt,
    5_000,
    'integer',
    'MQTT',
    'Ms to wait for the PUBACK of a QoS 1 publish before answering 5.03.',
    { arg: '<ms>' },
  ),
  replyTimeoutMs: setting(
    positiveInt,
    5_000,
    'integer',
    'MQTT',
    'Ms to wait for the platform reply on the `_reply` topic before answering 5.04.',
    { arg: '<ms>' },
  ),
  embeddedBroker: setting(
    port,
    undefined,
    'integer',
    'MQTT',
    'Run an embedded MQTT broker (aedes) on this port and bridge to it; for trying coap-edge without a broker.',
    { arg: '<port>' },
  ),
  demoPlatform: setting(
    z.boolean(),
    false,
    'boolean',
    'MQTT',
    'Answer every uplink on the broker with a success reply, as a platform would: for trying coap-edge with the embedded broker, never in production.',
  ),
  mqttMode: setting(
    z.enum(['bridge', 'per-device']),
    'bridge',
    'string',
    'MQTT',
    'bridge: a few pooled connections publish for all devices; per-device: one connection per online device, logged in with its own credentials.',
    { arg: '<mode>' },
  ),
  mqttDeviceAuth: setting(
    z.enum(['enos', 'template']),
    'enos',
    'string',
    'MQTT',
    'per-device login: enos (EnOS signed clientId/username/password from the device secret) or template (mqttDeviceUsername/Password).',
    { arg: '<kind>' },
  ),
  mqttDeviceClientId: setting(
    z.string().min(1),
    '{pk}.{dk}',
    'string',
    'MQTT',
    'per-device client id template for template login ({pk}, {dk}).',
    { arg: '<template>' },
  ),
  mqttDeviceUsername: setting(
    z.string().min(1),
    '{dk}&{pk}',
    'string',
    'MQTT',
    'per-device username template for template login ({pk}, {dk}).',
    { arg: '<template>' },
  ),
  mqttDevicePassword: setting(
    z.string().min(1),
    '{secret}',
    'string',
    'MQTT',
    'per-device password template for template login ({pk}, {dk}, {secret} = device secret).',
    { arg: '<template>' },
  ),
  maxDeviceSessions: setting(
    positiveInt,
    10_000,
    'integer',
    'MQTT',
    'per-device mode: most device connections open at once; beyond it requests get 5.03.',
    { arg: '<n>' },
  ),
  deviceConnectRate: setting(
    positiveInt,
    200,
    'integer',
    'MQTT',
    'per-device mode: most new device connections opened per second.',
    { arg: '<per-second>' },
  ),
  // --- routes and HTTP backend -----------------------------------------------------------------
  routes: setting(
    z.array(routeSchema),
    [],
    'yaml',
    'Routes',
    'Route list (YAML only): CoAP topic patterns to an MQTT topic or an HTTP endpoint; first match wins; topics no route matches go to MQTT unchanged (the EnOS mapping). See "Routes" above.',
    { yamlOnly: true },
  ),
  httpTimeoutMs: setting(
    positiveInt,
    5_000,
    'integer',
    'Routes',
    'Default HTTP route timeout in ms; a timeout answers 5.04.',
    { arg: '<ms>' },
  ),
  httpConnections: setting(
    positiveInt,
    64,
    'integer',
    'Routes',
    'Keep-alive connections per HTTP origin.',
    { arg: '<n>' },
  ),
  httpMaxConcurrency: setting(
    positiveInt,
    512,
    'integer',
    'Routes',
    'HTTP requests in flight at once across all routes; beyond it requests get 5.03.',
    { arg: '<n>' },
  ),
  // --- commands (downlink) -------------------------------------------------------------------
  commandTopics: setting(
    z.array(z.string().min(1)).min(1),
    [
      '/sys/{pk}/{dk}/thing/service/#',
      '/sys/{pk}/{dk}/thing/model/down_raw',
      '/sys/{pk}/{dk}/rrpc/request/+',
      '/sys/{pk}/{dk}/thing/enable',
      '/sys/{pk}/{dk}/thing/disable',
      '/sys/{pk}/{dk}/thing/delete',
      '/sys/{pk}/{dk}/ota/device/upgrade',
    ],
    'list',
    'Commands',
    'MQTT topic filters carrying commands for devices ({pk}, {dk}; + for any device in bridge mode).',
    { arg: '<filter,...>' },
  ),
  commandShareGroup: setting(
    z
      .string()
      .min(1)
      .regex(/^[A-Za-z0-9_-]+$/),
    'coap-edge',
    'string',
    'Commands',
    'Shared subscription group ($share/<group>/...) through which the pods of one deployment split the command stream in bridge mode.',
    { arg: '<group>' },
  ),
  commandQueueLength: setting(
    positiveInt,
    16,
    'integer',
    'Commands',
    'Most commands waiting per device; further ones are refused and counted.',
    { arg: '<n>' },
  ),
  commandExpirySeconds: setting(
    positiveInt,
    172_800,
    'integer',
    'Commands',
    'Seconds a command waits for its device before it is dropped (default 48 h).',
    { arg: '<seconds>' },
  ),
  maxInlineCommand: setting(
    z.number().int().min(0).max(65_535),
    256,
    'integer',
    'Commands',
    'Largest command payload carried in option 2102 on the next response; longer ones are fetched with GET.',
    { arg: '<bytes>' },
  ),
  maxTtdSeconds: setting(
    z.number().int().min(0).max(3_600),
    60,
    'integer',
    'Commands',
    "Cap on a request's ttd=<seconds> (time till disconnect: the request is held open for a command).",
    { arg: '<seconds>' },
  ),
  maxTtdWaitersPerDevice: setting(
    z.number().int().min(0).max(1_000),
    2,
    'integer',
    'Commands',
    'Requests of one device held open for a command (ttd) at once; one more is answered 4.29 Too Many Requests with Max-Age, before anything is forwarded.',
    { arg: '<n>' },
  ),
  maxTtdWaiters: setting(
    z.number().int().min(0).max(1_000_000),
    10_000,
    'integer',
    'Commands',
    'Requests held open for a command (ttd) at once on this instance, all devices; one more is answered 4.29 with Max-Age.',
    { arg: '<n>' },
  ),
  // --- presence ------------------------------------------------------------------------------
  presenceTopic: setting(
    z.string().min(1),
    undefined,
    'string',
    'Presence',
    'MQTT topic template for online/offline events ({pk}, {dk}); unset: no MQTT events.',
    { arg: '<template>' },
  ),
  presenceWebhook: setting(
    z.url({ protocol: /^https?$/ }),
    undefined,
    'string',
    'Presence',
    'URL that receives online/offline events as JSON POSTs; unset: no webhook.',
    { arg: '<url>' },
  ),
  presenceSweepIntervalSeconds: setting(
    positiveInt,
    5,
    'integer',
    'Presence',
    'Seconds between checks for devices whose lifetime lapsed (they go offline).',
    { arg: '<seconds>' },
  ),
  // --- DTLS ------------------------------------------------------------------------------
  maxAssociations: setting(
    positiveInt,
    100_000,
    'integer',
    'DTLS',
    'Most established DTLS associations kept; when full, secureMode 3 sessions go first, then sessions silent since their handshake (for over a minute), then the least recently active device.',
    { arg: '<n>' },
  ),
  maxActivationSessions: setting(
    positiveInt,
    64,
    'integer',
    'DTLS',
    'Most concurrent secureMode 3 (activation-only) associations per product; a new one evicts the oldest of its product.',
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
  maxHandshakesPerAddress: setting(
    positiveInt,
    100,
    'integer',
    'DTLS',
    'Most handshakes in progress from one source address; further ClientHellos from it are not answered.',
    { arg: '<n>' },
  ),
  maxHandshakesPerPrefix: setting(
    positiveInt,
    400,
    'integer',
    'DTLS',
    'Most handshakes in progress from one /24 (IPv4) or /64 (IPv6) network.',
    { arg: '<n>' },
  ),
  stalledHandshakeTimeoutSeconds: setting(
    positiveInt,
    5,
    'integer',
    'DTLS',
    'Seconds after which, once the handshake table is half full, a handshake whose client never answered the ServerHello is given up; handshakes that progress keep handshakeTimeoutSeconds.',
    { arg: '<seconds>' },
  ),
  idleTimeoutSeconds: setting(
    positiveInt,
    86_700,
    'integer',
    'DTLS',
    'Seconds without traffic after which an association is evicted (default: the longest EnOS lifetime plus 5 min).',
    { arg: '<seconds>' },
  ),
  handshakeTimeoutSeconds: setting(
    positiveInt,
    60,
    'integer',
    'DTLS',
    'Seconds a handshake may take from the verified ClientHello to the Finished message.',
    { arg: '<seconds>' },
  ),
  retransmitTimeoutMs: setting(
    positiveInt,
    1_000,
    'integer',
    'DTLS',
    'Initial DTLS flight retransmission timer in ms; doubles on each retransmission up to 60 s (RFC 6347 §4.2.4.1).',
    { arg: '<ms>' },
  ),
  cookieLifetimeSeconds: setting(
    positiveInt,
    60,
    'integer',
    'DTLS',
    'Seconds between HelloVerifyRequest cookie secret rotations; the previous secret stays valid.',
    { arg: '<seconds>' },
  ),
  cidLength: setting(
    z.number().int().min(0).max(32),
    8,
    'integer',
    'DTLS',
    'Length in bytes of the RFC 9146 Connection ID handed to devices that offer the connection_id extension; records are then matched by CID and a device keeps its session when its NAT mapping changes. Random, so unique across pods without coordination. 0 disables CID.',
    { arg: '<n>' },
  ),
  associationKey: setting(
    z
      .string()
      .refine(
        (v) => /^[0-9a-fA-F]{64}$/.test(v) || Buffer.from(v, 'base64').length === 32,
        'must be 32 bytes: 64 hex characters or base64',
      ),
    undefined,
    'string',
    'DTLS',
    'Key (32 bytes, hex or base64) that encrypts DTLS association state in Redis. With Redis and this key, associations are shared: any pod continues any device without a handshake (pod loss, rolling update, NAT rebinding onto another pod). Every pod needs the same key; keep it in a Secret.',
    { arg: '<key>', secret: true },
  ),
  associationFenceRecords: setting(
    z.number().int().min(0).max(64),
    64,
    'integer',
    'DTLS',
    "Most of a shared association's incoming records one Redis write reserves (about a second of a busy device's records, at most this many). After a pod crash the device's next records up to that reservation are refused (the dead pod may have taken them), so a busy device needs a few CoAP retransmissions. 0: every record waits for its own Redis write before it is acted on, and a crash costs at most the request in flight, at one Redis write (and WAIT) per record. Devices slower than a record a second get their own write per record either way.",
    { arg: '<n>' },
  ),
  detailedPskAlerts: setting(
    z.boolean(),
    false,
    'boolean',
    'DTLS',
    'Tell a refused device why (unknown_psk_identity, handshake_failure, bad_record_mac) instead of decrypt_error for every PSK refusal; for debugging only, since it shows which devices exist. The reason is logged and counted either way.',
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
  httpPort: setting(
    port,
    undefined,
    'integer',
    'Observability',
    'TCP port of the admin HTTP server: /metrics (Prometheus), /healthz (live), /readyz (ready). Off unless set.',
    { arg: '<port>' },
  ),
  httpBind: setting(
    z.string().min(1),
    '0.0.0.0',
    'string',
    'Observability',
    'Address the admin HTTP server binds to.',
    { arg: '<address>' },
  ),
  otlpEndpoint: setting(
    z.url({ protocol: /^https?$/ }),
    undefined,
    'string',
    'Observability',
    'OTLP traces endpoint (http://jaeger:4318/v1/traces; for OTEL_EXPORTER_OTLP_PROTOCOL=grpc http://collector:4317). Tracing is off unless this or OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set, and off whenever OTEL_SDK_DISABLED=true.',
    { arg: '<url>' },
  ),
  traceSampleRatio: setting(
    z.number().min(0).max(1),
    undefined,
    'number',
    'Observability',
    'Share of datagrams traced when tracing is on. Unset: as OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG say, else 0.01; set, it wins over them.',
    { arg: '<ratio>' },
  ),
  traceDevices: setting(
    z.array(z.string().min(1)),
    [],
    'list',
    'Observability',
    'Device keys whose datagrams are always traced (for support cases).',
    { arg: '<dk,...>' },
  ),
  serviceName: setting(
    z.string().min(1),
    'coap-edge',
    'string',
    'Observability',
    'service.name of traces (OTEL_SERVICE_NAME wins when set).',
    { arg: '<name>' },
  ),
  maxUnavailableRetrySeconds: setting(
    positiveInt,
    30,
    'integer',
    'Process',
    'Max-Age in seconds sent with 5.03 when a backend is unavailable: when the device should retry.',
    { arg: '<seconds>' },
  ),
  drainTimeoutSeconds: setting(
    z.number().int().min(0).max(3_600),
    20,
    'integer',
    'Process',
    "Seconds a SIGTERM waits for requests in flight and separate responses before the sockets close (keep it below the pod's terminationGracePeriodSeconds).",
    { arg: '<seconds>' },
  ),
  logLevel: setting(
    logLevel,
    'info',
    'string',
    'Process',
    'Log level: fatal, error, warn, info, debug, trace or silent.',
    { arg: '<level>' },
  ),
  logFormat: setting(
    z.enum(['auto', 'json', 'pretty']),
    'auto',
    'string',
    'Process',
    'Log line format: json (one JSON object per line), pretty (readable lines) or auto (pretty when standard output is a terminal, else json).',
    { arg: '<auto|json|pretty>' },
  ),
} as const;

export type Settings = typeof settings;
export type SettingName = keyof Settings;

/**
 * Former names of the settings that were renamed to say their unit (same value, same unit).
 * They are still read from the YAML file, as `COAP_EDGE_*` variables and as flags, each with a
 * warning naming the new name; setting both names in one source is an error.
 */
export const renamedSettings = {
  registryTimeout: 'registryTimeoutMs',
  secretCacheTtl: 'secretCacheTtlSeconds',
  redisCacheTtl: 'redisCacheTtlSeconds',
  negativeCacheTtl: 'negativeCacheTtlSeconds',
  ackTimeout: 'ackTimeoutMs',
  publishTimeout: 'publishTimeoutMs',
  replyTimeout: 'replyTimeoutMs',
  httpTimeout: 'httpTimeoutMs',
  commandExpiry: 'commandExpirySeconds',
  maxTtd: 'maxTtdSeconds',
  presenceSweepInterval: 'presenceSweepIntervalSeconds',
  stalledHandshakeTimeout: 'stalledHandshakeTimeoutSeconds',
  idleTimeout: 'idleTimeoutSeconds',
  handshakeTimeout: 'handshakeTimeoutSeconds',
  retransmitTimeout: 'retransmitTimeoutMs',
  cookieLifetime: 'cookieLifetimeSeconds',
  maxUnavailableRetry: 'maxUnavailableRetrySeconds',
  drainTimeout: 'drainTimeoutSeconds',
} as const satisfies Readonly<Record<string, SettingName>>;

export type RenamedSetting = keyof typeof renamedSettings;
