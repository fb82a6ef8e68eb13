/**
 * A platform stand-in for trying coap-edge without a platform: subscribed to the device
 * topics on the broker, it answers every uplink that expects a reply with
 * `{"id": <same>, "code": 200, "data": null}` on `{topic}_reply` (raw uplinks get an
 * empty raw reply). Enabled by `demoPlatform: true`; never for production.
 */
import { connect, type MqttClient } from 'mqtt';
import { noDelay } from '../bridge/mqtt/connection.js';
import { parseMqttTopic } from '../enos/index.js';

export interface PlatformStandIn {
  readonly replies: () => number;
  close(): Promise<void>;
}

export async function startPlatformStandIn(
  url: string,
  topicPrefix = '',
): Promise<PlatformStandIn> {
  const client: MqttClient = connect(url, {
    clientId: `coap-edge-demo-platform-${Math.random().toString(16).slice(2, 10)}`,
    reconnectPeriod: 1000,
  });
  // every (re)connect: the replies must not wait for Nagle and the broker's delayed ACK
  client.on('connect', () => noDelay(client));
  let replies = 0;
  client.on('message', (topic, payload) => {
    if (!topic.startsWith(topicPrefix)) return;
    const parsed = parseMqttTopic(topic.slice(topicPrefix.length));
    if (!parsed.ok || parsed.topic.replyTopic === undefined) return;
    const t = parsed.topic;
    if (t.class !== 'uplink' && t.class !== 'uplink-raw' && t.class !== 'sub-device-session')
      return;
    let reply: Buffer;
    if (t.raw) reply = Buffer.alloc(0);
    else {
      let id: unknown;
      try {
        id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
      } catch {
        return;
      }
      reply = Buffer.from(JSON.stringify({ id, code: 200, data: null }));
    }
    replies++;
    client.publish(topicPrefix + (t.replyTopic ?? ''), reply, { qos: 1 });
  });
  client.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  await client.subscribeAsync([`${topicPrefix}/sys/#`, `${topicPrefix}/ext/session/#`], { qos: 1 });
  return {
    replies: () => replies,
    close: () => client.endAsync(),
  };
}
