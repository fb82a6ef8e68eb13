/**
 * Child process of bench/uplink.ts: the platform stand-in of the "publish + reply" variant,
 * in a process of its own so its CPU is measured apart from the load generator. It answers
 * as src/tools/platform-standin.ts does — `{"id": <same>, "code": 200, "data": null}` with
 * QoS 1 on `{topic}_reply` — but subscribes only to the measurepoint uplink topic
 * (`/sys/+/+/thing/measurepoint/post`, QoS 1), as a platform would, so it does not also
 * receive its own replies and the other variant's publishes (the demo stand-in subscribes to
 * `/sys/#`).
 *
 * TCP_NODELAY: mqtt.js opens its socket with Nagle's algorithm on. A small write that follows
 * another not yet acknowledged one then waits for the peer's (possibly delayed, ~40 ms on
 * Linux) ACK. The stand-in sets TCP_NODELAY so that it never adds such a wait; so does the
 * broker (`set_tcp_nodelay true`). Whatever remains is on coap-edge's side.
 *
 * Usage: node dist/bench/lib/uplink-platform.js <mqtt-url>   (with an IPC channel)
 * IPC: sends {type:'ready'} after the SUBACK; answers {type:'stats', seq} with its counters.
 */
import { connect } from 'mqtt';

const url = process.argv[2];
if (url === undefined || process.send === undefined) {
  process.stderr.write('usage: node uplink-platform.js <mqtt-url> (as a child with IPC)\n');
  process.exit(2);
}
const send = process.send.bind(process);
const FILTER = '/sys/+/+/thing/measurepoint/post';

let received = 0;
let replied = 0;
let undecodable = 0;
let publishErrors = 0;

const client = connect(url, {
  clientId: `bench-platform-${process.pid}`,
  clean: true,
  reconnectPeriod: 0,
});
client.on('error', (err) => process.stderr.write(`platform: ${err.message}\n`));
client.on('close', () => {
  process.stderr.write('platform: connection closed\n');
  process.exit(1);
});
client.on('message', (topic, payload) => {
  received++;
  let id: unknown;
  try {
    id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
  } catch {
    undecodable++;
    return;
  }
  const reply = Buffer.from(JSON.stringify({ id, code: 200, data: null }));
  client.publish(`${topic}_reply`, reply, { qos: 1 }, (err) => {
    if (err !== undefined && err !== null) publishErrors++;
    else replied++;
  });
});
client.once('connect', () => {
  (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
  client.subscribe(FILTER, { qos: 1 }, (err) => {
    if (err !== undefined && err !== null) {
      process.stderr.write(`platform: subscribe failed: ${err.message}\n`);
      process.exit(1);
    }
    send({ type: 'ready', filter: FILTER });
  });
});

process.on('message', (m: { type?: unknown; seq?: unknown }) => {
  if (m.type === 'stats') {
    send({ type: 'stats', seq: m.seq, received, replied, undecodable, publishErrors });
  }
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => {
  client.end(true, () => process.exit(0));
});
