/**
 * CoAP paths are EnOS MQTT topics (docs/protocol.md, "Requests are MQTT topics"): Uri-Path segments
 * `topic, sys, {pk}, {dk}, thing, measurepoint, post` mean the MQTT topic
 * `/sys/{pk}/{dk}/thing/measurepoint/post`. This module classifies such a path with one table
 * of the shapes the spec lists (§2 uplinks and downlinks, §4 activation, §5 command fetch and
 * reply). It is pure and allocation-light: the table is indexed once at load time, no regex is
 * built per call.
 *
 * Readings of points the spec leaves open:
 * - `thing/model/up_raw` and `thing/model/down_raw` "carry raw bytes" (§2). The device's answer
 *   to a raw command, `thing/model/down_raw_reply`, is read as raw too (it answers a raw
 *   command, as in the Alink-style scheme EnOS follows), and so is the platform's
 *   `thing/model/up_raw_reply`. So `raw` is true for the whole exchange on those topics.
 * - The answer to `rrpc/request/{msgId}` is `rrpc/response/{msgId}` (§2), not `..._reply`.
 * - A path naming a downlink (command) topic itself is a fetch of a queued command (§5,
 *   `GET /topic/{commandTopic}`); the method is not known here, the caller checks it is GET.
 * - A variable segment in the last position (serviceId, msgId) must not end in `_reply`:
 *   `thing/service/x_reply` is the reply to service `x`, never a fetch of service `x_reply`.
 * - `thing/service/measurepoint` (three levels) is service `measurepoint`; the four-level
 *   `thing/service/measurepoint/set|get` are the measurepoint commands.
 * - Reply topics of uplinks (`..._reply`, platform → device) are not device requests and do
 *   not classify; neither does anything else the spec does not list (→ 'unknown-shape').
 *
 * Every segment after `topic` must pass the identity key rules ({@link validateKey}): non-empty,
 * at most 128 UTF-8 bytes, no control characters, white space, Unicode non-characters, `,`, `/`,
 * `+` or `#` — so no path can inject an MQTT level separator or wildcard, nor anything a broker
 * may call a malformed topic (and disconnect the connection it came on), and the
 * productKey/deviceKey of a path can always be compared with a session's identity.
 */

import { EnosError } from './errors.js';
import { validateKey } from './identity.js';

/**
 * What a request on a path means.
 * - `uplink`: device → platform JSON message with a reply on `{topic}_reply`.
 * - `uplink-raw`: `thing/model/up_raw`; raw bytes, reply on `up_raw_reply` (raw as well).
 * - `sub-device-session`: `/ext/session/{pk}/{dk}/combine/login|logout` (a gateway logging
 *   sub-devices in or out; the sub-device keys are in the payload); reply on `{topic}_reply`.
 * - `activate`: `GET /topic/ext/session/{pk}/{dk}/thing/activate/info` (§4); the answer is the
 *   activation reply, there is no separate MQTT reply topic.
 * - `command-fetch`: a downlink topic itself (§5): fetch the queued command.
 * - `command-reply`: the device's answer to a command: downlink topic + `_reply`, or
 *   `rrpc/response/{msgId}`.
 */
export type TopicClass =
  'uplink' | 'uplink-raw' | 'sub-device-session' | 'activate' | 'command-fetch' | 'command-reply';

export interface TopicInfo {
  /** The MQTT topic, leading slash kept: `/sys/pk/dk/thing/measurepoint/post`. */
  readonly mqttTopic: string;
  readonly productKey: string;
  readonly deviceKey: string;
  readonly class: TopicClass;
  /** `mqttTopic + '_reply'` for uplinks and sub-device session requests; else undefined. */
  readonly replyTopic: string | undefined;
  /** True when the body is raw bytes, not JSON (`thing/model/up_raw`, `down_raw`, replies). */
  readonly raw: boolean;
  /**
   * For `command-fetch` the command topic itself; for `command-reply` the command topic it
   * answers (`.../thing/service/x` for `.../thing/service/x_reply`, `.../rrpc/request/7` for
   * `.../rrpc/response/7`). Undefined for the other classes.
   */
  readonly commandTopic: string | undefined;
}

export type TopicRejectReason = 'not-topic' | 'unknown-shape' | 'bad-segment';

export type TopicParseResult =
  { ok: true; topic: TopicInfo } | { ok: false; reason: TopicRejectReason };

/** The refusals, one shared object each: a refused path allocates nothing for its answer. */
const NOT_TOPIC: TopicParseResult = Object.freeze({ ok: false, reason: 'not-topic' });
const UNKNOWN_SHAPE: TopicParseResult = Object.freeze({ ok: false, reason: 'unknown-shape' });
const BAD_SEGMENT: TopicParseResult = Object.freeze({ ok: false, reason: 'bad-segment' });

type Root = 'sys' | 'ext/session';

/**
 * Tail tokens: a literal level, `{}` (a variable level, e.g. eventId, serviceId, msgId), or
 * `{}_reply` (a variable level followed by `_reply`, e.g. `thing/service/{serviceId}_reply`).
 */
interface Shape {
  readonly root: Root;
  readonly tail: readonly string[];
  readonly class: TopicClass;
  readonly reply: boolean;
  readonly raw: boolean;
  /** How to get the command topic from the matched topic. */
  readonly command: 'none' | 'self' | 'strip-reply' | 'rrpc';
}

const VAR = '{}';
const VAR_REPLY = '{}_reply';
const REPLY = '_reply';

/** Uplinks under `/sys/{pk}/{dk}/` (§2), each answered on `{topic}_reply`. */
const sysUplinks: readonly string[] = [
  'thing/measurepoint/post',
  'thing/measurepoint/post/batch',
  'thing/measurepoint/resume',
  'thing/event/{}/post',
  'thing/attribute/update',
  'thing/attribute/query',
  'thing/attribute/delete',
  'thing/tag/update',
  'thing/tag/query',
  'thing/tag/delete',
  'thing/tsltemplate/get',
  'ota/device/inform',
  'ota/device/progress',
  'ota/device/request',
  'ota/device/getversion',
  'thing/log/post',
];

/** Downlinks under `/sys/{pk}/{dk}/` (§2): fetched by GET, answered on `{topic}_reply`. */
const sysDownlinks: readonly { tail: string; raw?: boolean; replyTail?: string }[] = [
  { tail: 'thing/service/{}' },
  { tail: 'thing/service/measurepoint/set' },
  { tail: 'thing/service/measurepoint/get' },
  { tail: 'thing/model/down_raw', raw: true },
  { tail: 'rrpc/request/{}', replyTail: 'rrpc/response/{}' },
  { tail: 'thing/enable' },
  { tail: 'thing/disable' },
  { tail: 'thing/delete' },
  { tail: 'ota/device/upgrade' },
];

/**
 * MQTT subscription filters (after `/sys/{pk}/{dk}/`) that cover every downlink above.
 * `thing/service/#` covers `thing/service/{serviceId}` and `thing/service/measurepoint/set|get`.
 */
const downlinkFilterTails: readonly string[] = [
  'thing/service/#',
  'thing/model/down_raw',
  'rrpc/request/+',
  'thing/enable',
  'thing/disable',
  'thing/delete',
  'ota/device/upgrade',
];

function replyTailOf(tail: string): string {
  return `${tail}${REPLY}`;
}

const shapes: readonly Shape[] = [
  ...sysUplinks.map((t): Shape => ({
    root: 'sys',
    tail: t.split('/'),
    class: 'uplink',
    reply: true,
    raw: false,
    command: 'none',
  })),
  {
    root: 'sys',
    tail: ['thing', 'model', 'up_raw'],
    class: 'uplink-raw',
    reply: true,
    raw: true,
    command: 'none',
  },
  ...sysDownlinks.flatMap((d): Shape[] => [
    {
      root: 'sys',
      tail: d.tail.split('/'),
      class: 'command-fetch',
      reply: false,
      raw: d.raw ?? false,
      command: 'self',
    },
    {
      root: 'sys',
      tail: (d.replyTail ?? replyTailOf(d.tail)).split('/'),
      class: 'command-reply',
      reply: false,
      raw: d.raw ?? false,
      command: d.replyTail === undefined ? 'strip-reply' : 'rrpc',
    },
  ]),
  ...['combine/login', 'combine/logout'].map((t): Shape => ({
    root: 'ext/session',
    tail: t.split('/'),
    class: 'sub-device-session',
    reply: true,
    raw: false,
    command: 'none',
  })),
  {
    root: 'ext/session',
    tail: ['thing', 'activate', 'info'],
    class: 'activate',
    reply: false,
    raw: false,
    command: 'none',
  },
];

/** Segments before the tail: `topic, sys, pk, dk` or `topic, ext, session, pk, dk`. */
const prefixLength: { readonly [R in Root]: number } = { sys: 4, 'ext/session': 5 };

/**
 * Shapes indexed by root, tail length and first tail level (every tail starts with a literal
 * level: a request's topic is compared with the few shapes that begin as it does, not with
 * all of its length); literal-only shapes first within a list.
 */
const index: { readonly [R in Root]: Map<string, Shape[]>[] } = { sys: [], 'ext/session': [] };
let maxSegments = 0;
for (const s of shapes) {
  const first = s.tail[0];
  if (first === undefined || first === VAR || first === VAR_REPLY) {
    throw new Error(`topic shape ${s.tail.join('/')} starts with a variable level`);
  }
  const byFirst = (index[s.root][s.tail.length] ??= new Map<string, Shape[]>());
  const list = byFirst.get(first);
  if (list === undefined) byFirst.set(first, [s]);
  else list.push(s);
  maxSegments = Math.max(maxSegments, prefixLength[s.root] + s.tail.length);
}
for (const byLength of Object.values(index)) {
  for (const byFirst of byLength) {
    for (const list of byFirst?.values() ?? []) {
      list.sort((a, b) => varCount(a.tail) - varCount(b.tail));
    }
  }
}
function varCount(tail: readonly string[]): number {
  return tail.filter((t) => t === VAR || t === VAR_REPLY).length;
}

function tokenMatches(token: string, segment: string, last: boolean): boolean {
  if (token === VAR) return !last || !segment.endsWith(REPLY);
  if (token === VAR_REPLY) return segment.length > REPLY.length && segment.endsWith(REPLY);
  return token === segment;
}

function matchShape(bucket: readonly Shape[], segments: readonly string[], from: number) {
  for (const shape of bucket) {
    const tail = shape.tail;
    let ok = true;
    for (let i = 0; i < tail.length; i++) {
      const token = tail[i] ?? '';
      const segment = segments[from + i] ?? '';
      if (!tokenMatches(token, segment, i === tail.length - 1)) {
        ok = false;
        break;
      }
    }
    if (ok) return shape;
  }
  return undefined;
}

function commandTopicOf(shape: Shape, mqttTopic: string, segments: readonly string[]) {
  switch (shape.command) {
    case 'none':
      return undefined;
    case 'self':
      return mqttTopic;
    case 'strip-reply':
      return mqttTopic.slice(0, -REPLY.length);
    case 'rrpc': {
      // `.../rrpc/response/{msgId}` answers `.../rrpc/request/{msgId}`.
      const msgId = segments[segments.length - 1] ?? '';
      const base = mqttTopic.slice(0, mqttTopic.length - msgId.length - 'response/'.length);
      return `${base}request/${msgId}`;
    }
  }
}

/**
 * Classifies a CoAP request path (its Uri-Path segments, already split and decoded).
 * Never throws.
 * - `not-topic`: the first segment is not `topic` (or there is none).
 * - `bad-segment`: a segment after `topic` is empty, longer than 128 bytes, or holds a
 *   control character, white space, a non-character, `,`, `/`, `+` or `#` (MQTT
 *   wildcard/level injection, or a topic the broker would refuse).
 * - `unknown-shape`: well-formed but not a topic the spec lists for devices to use.
 */
export function parseTopicPath(segments: readonly string[]): TopicParseResult {
  if (segments.length === 0 || segments[0] !== 'topic') return NOT_TOPIC;
  if (segments.length > maxSegments) return UNKNOWN_SHAPE;
  for (let i = 1; i < segments.length; i++) {
    if (validateKey(segments[i] ?? '') !== undefined) return BAD_SEGMENT;
  }

  let root: Root;
  if (segments[1] === 'sys') root = 'sys';
  else if (segments[1] === 'ext' && segments[2] === 'session') root = 'ext/session';
  else return UNKNOWN_SHAPE;

  const from = prefixLength[root];
  const bucket = index[root][segments.length - from]?.get(segments[from] ?? '');
  const shape = bucket && matchShape(bucket, segments, from);
  if (!shape) return UNKNOWN_SHAPE;

  // concatenated: a slice and its join cost ~1 k instructions more per request (callgrind)
  let mqttTopic = '';
  for (let i = 1; i < segments.length; i++) mqttTopic += `/${segments[i] ?? ''}`;
  return {
    ok: true,
    topic: {
      mqttTopic,
      productKey: segments[from - 2] ?? '',
      deviceKey: segments[from - 1] ?? '',
      class: shape.class,
      replyTopic: shape.reply ? `${mqttTopic}${REPLY}` : undefined,
      raw: shape.raw,
      commandTopic: commandTopicOf(shape, mqttTopic, segments),
    },
  };
}

/**
 * Classifies an MQTT topic (`/sys/pk/dk/...`) with the same table as {@link parseTopicPath};
 * a topic without its leading slash is `not-topic`. Never throws.
 */
export function parseMqttTopic(mqttTopic: string): TopicParseResult {
  if (!mqttTopic.startsWith('/')) return NOT_TOPIC;
  const levels = mqttTopic.split('/');
  levels[0] = 'topic';
  return parseTopicPath(levels);
}

/**
 * True when an MQTT topic is a downlink (command) topic the spec lists:
 * `/sys/{pk}/{dk}/thing/service/{serviceId}`, `thing/service/measurepoint/set|get`,
 * `thing/model/down_raw`, `rrpc/request/{msgId}`, `thing/enable|disable|delete`,
 * `ota/device/upgrade`. False for their `_reply` topics, which the filters of
 * {@link downlinkTopicPatterns} also match (a subscriber sees replies published to them).
 */
export function isDownlinkTopic(mqttTopic: string): boolean {
  const r = parseMqttTopic(mqttTopic);
  return r.ok && r.topic.class === 'command-fetch';
}

function checkKeys(productKey: string, deviceKey: string): void {
  if (validateKey(productKey) !== undefined) throw new EnosError('ENOS_TOPIC', 'productKey');
  if (validateKey(deviceKey) !== undefined) throw new EnosError('ENOS_TOPIC', 'deviceKey');
}

/**
 * The MQTT subscription filters that receive every downlink (command) topic of one device:
 * `/sys/{pk}/{dk}/thing/service/#`, `.../thing/model/down_raw`, `.../rrpc/request/+`,
 * `.../thing/enable`, `.../thing/disable`, `.../thing/delete`, `.../ota/device/upgrade`.
 * They also match the `_reply` topics of these commands; filter received messages with
 * {@link isDownlinkTopic}.
 * @throws EnosError `ENOS_TOPIC` when a key breaks the identity key rules (it could inject
 *   `+`, `#` or `/` into the filters).
 */
export function downlinkTopicPatterns(productKey: string, deviceKey: string): readonly string[] {
  checkKeys(productKey, deviceKey);
  return downlinkFilterTails.map((t) => `/sys/${productKey}/${deviceKey}/${t}`);
}

/**
 * The activation topic `/ext/session/{pk}/{dk}/thing/activate/info` (§4).
 * @throws EnosError `ENOS_TOPIC` when a key breaks the identity key rules.
 */
export function activationTopic(productKey: string, deviceKey: string): string {
  checkKeys(productKey, deviceKey);
  return `/ext/session/${productKey}/${deviceKey}/thing/activate/info`;
}

/**
 * The CoAP path for an MQTT topic, `/topic` + topic, as carried in option 2100 (§5):
 * `/sys/pk/dk/thing/service/x` → `/topic/sys/pk/dk/thing/service/x`.
 */
export function topicToCoapPath(mqttTopic: string): string {
  return `/topic${mqttTopic}`;
}
