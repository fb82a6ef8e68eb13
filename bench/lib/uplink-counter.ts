/**
 * Child process of bench/uplink.ts: a counting subscriber on `/sys/#` (QoS 1) that records
 * the JSON id of every uplink the broker delivers, so the bench can check that every
 * message coap-edge acknowledged with 2.04 reached the broker (delivered ≥ acknowledged;
 * duplicates are allowed by QoS 1). Topics are counted by kind:
 * - `uplink`: `.../thing/measurepoint/post` (variant publish + reply),
 * - `publishOnly`: `.../<publish tail>` (variant publish only, e.g. `rrpc/response/1`),
 * - `platformReply`: `.../thing/measurepoint/post_reply` (the stand-in's replies),
 * - `other`.
 *
 * Usage: node dist/bench/lib/uplink-counter.js <mqtt-url> <publish tail>   (with IPC)
 * IPC: sends {type:'ready'} after the SUBACK; {type:'collect', seq, prefix} answers with the
 * counts and the ids (with how often each arrived) that start with `prefix`, and forgets them.
 */
import { connect } from 'mqtt';

const url = process.argv[2];
const publishTail = process.argv[3];
if (url === undefined || publishTail === undefined || process.send === undefined) {
  process.stderr.write('usage: node uplink-counter.js <mqtt-url> <tail> (as a child with IPC)\n');
  process.exit(2);
}
const send = process.send.bind(process);

const counts = { uplink: 0, publishOnly: 0, platformReply: 0, other: 0, noId: 0 };
const publishSuffix = `/${publishTail}`;
/** id → times delivered, for uplinks and publish-only messages. */
const seen = new Map<string, number>();
const ID = /^\{"id":"([^"\\]+)"/;

function idOf(payload: Buffer): string | undefined {
  const m = ID.exec(payload.toString('utf8', 0, Math.min(payload.length, 96)));
  if (m?.[1] !== undefined) return m[1];
  try {
    const id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
    return typeof id === 'string' ? id : undefined;
  } catch {
    return undefined;
  }
}

const client = connect(url, {
  clientId: `bench-counter-${process.pid}`,
  clean: true,
  reconnectPeriod: 0,
});
client.on('error', (err) => process.stderr.write(`counter: ${err.message}\n`));
client.on('close', () => {
  process.stderr.write('counter: connection closed\n');
  process.exit(1);
});
client.on('message', (topic, payload) => {
  let kind: 'uplink' | 'publishOnly' | 'platformReply' | 'other';
  if (topic.endsWith('/thing/measurepoint/post')) kind = 'uplink';
  else if (topic.endsWith(publishSuffix)) kind = 'publishOnly';
  else if (topic.endsWith('/thing/measurepoint/post_reply')) kind = 'platformReply';
  else kind = 'other';
  counts[kind]++;
  if (kind !== 'uplink' && kind !== 'publishOnly') return;
  const id = idOf(payload);
  if (id === undefined) {
    counts.noId++;
    return;
  }
  seen.set(id, (seen.get(id) ?? 0) + 1);
});
client.once('connect', () => {
  // PUBACKs at once (see uplink-platform.ts on Nagle's algorithm)
  (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
  client.subscribe('/sys/#', { qos: 1 }, (err) => {
    if (err !== undefined && err !== null) {
      process.stderr.write(`counter: subscribe failed: ${err.message}\n`);
      process.exit(1);
    }
    send({ type: 'ready', filter: '/sys/#' });
  });
});

process.on('message', (m: { type?: unknown; seq?: unknown; prefix?: unknown }) => {
  if (m.type === 'collect' && typeof m.prefix === 'string') {
    const ids: [string, number][] = [];
    for (const [id, n] of seen) {
      if (id.startsWith(m.prefix)) {
        ids.push([id, n]);
        seen.delete(id);
      }
    }
    send({ type: 'collect', seq: m.seq, counts: { ...counts }, ids });
  } else if (m.type === 'counts') {
    send({ type: 'counts', seq: m.seq, counts: { ...counts } });
  }
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => {
  client.end(true, () => process.exit(0));
});
