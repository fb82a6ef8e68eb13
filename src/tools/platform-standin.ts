/**
 * A platform stand-in for trying coap-edge without a platform: subscribed to the device
 * topics on the broker, it answers every uplink that expects a reply with
 * `{"id": <same>, "code": 200, "data": null}` on `{topic}_reply` (raw uplinks get an
 * empty raw reply). Enabled by `demoPlatform: true`; never for production.
 *
 * On the embedded broker it runs inside the broker's process (no MQTT connection of its own:
 * two TCP hops and their packet parsing less per request); on any other broker it is an
 * MQTT client.
 */
import { connect, type MqttClient } from 'mqtt';
import { noDelay } from '../bridge/mqtt/connection.js';
import type { LocalBrokerClient } from '../bridge/mqtt/embedded-broker.js';
import { parseMqttTopic } from '../enos/index.js';

export interface PlatformStandIn {
  readonly replies: () => number;
  close(): Promise<void>;
}

/** Where the stand-in meets the devices' messages: a broker URL, or the embedded broker. */
export type StandInBroker = string | LocalBrokerClient;

/**
 * The stand-in's answer to a message on `topic` (the broker's topic, prefix included): the
 * reply topic and payload, or undefined when the message asks for none (a reply, a command,
 * an uplink without a reply topic, a body without a JSON id).
 */
export function standInReply(
  topic: string,
  payload: Buffer,
  topicPrefix: string,
): { topic: string; payload: Buffer } | undefined {
  if (!topic.startsWith(topicPrefix)) return undefined;
  const parsed = parseMqttTopic(topic.slice(topicPrefix.length));
  if (!parsed.ok || parsed.topic.replyTopic === undefined) return undefined;
  const t = parsed.topic;
  if (t.class !== 'uplink' && t.class !== 'uplink-raw' && t.class !== 'sub-device-session')
    return undefined;
  let reply: Buffer;
  if (t.raw) reply = Buffer.alloc(0);
  else {
    let id: unknown;
    try {
      id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
    } catch {
      return undefined;
    }
    reply = Buffer.from(JSON.stringify({ id, code: 200, data: null }));
  }
  return { topic: topicPrefix + (t.replyTopic ?? ''), payload: reply };
}

export async function startPlatformStandIn(
  broker: StandInBroker,
  topicPrefix = '',
): Promise<PlatformStandIn> {
  const filters = [`${topicPrefix}/sys/#`, `${topicPrefix}/ext/session/#`];
  let replies = 0;
  if (typeof broker !== 'string') {
    const onMessage = (topic: string, payload: Buffer): void => {
      const r = standInReply(topic, payload, topicPrefix);
      if (r === undefined) return;
      replies++;
      broker.publish(r.topic, r.payload);
    };
    await Promise.all(filters.map((f) => broker.subscribe(f, onMessage)));
    return { replies: () => replies, close: () => broker.close() };
  }
  const client: MqttClient = connect(broker, {
    clientId: `coap-edge-demo-platform-${Math.random().toString(16).slice(2, 10)}`,
    reconnectPeriod: 1000,
    writeCache: false, // as src/bridge/mqtt/connection.ts: no table of 65 536 Buffers
  });
  // every (re)connect: the replies must not wait for Nagle and the broker's delayed ACK
  client.on('connect', () => noDelay(client));
  client.on('message', (topic, payload) => {
    const r = standInReply(topic, payload, topicPrefix);
    if (r === undefined) return;
    replies++;
    client.publish(r.topic, r.payload, { qos: 1 });
  });
  client.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  await client.subscribeAsync(filters, { qos: 1 });
  return {
    replies: () => replies,
    close: () => client.endAsync(),
  };
}
