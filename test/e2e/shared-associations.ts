/**
 * Shared DTLS associations across two `coap-edge serve` PROCESSES (docs/design.md, "Shared
 * associations"): both pods use the same Redis (a unique prefix), the same association key
 * and the shared Mosquitto 1883. A UDP relay in the test plays the load balancer in front of
 * them: each device flow leaves from a back socket of its own (the source address the pods
 * see stays the same, as with kube-proxy DNAT) toward pod A, and can be switched to pod B.
 *
 * - SIGKILL of A: the device's next request is answered by B with no handshake (an adoption
 *   in B's /metrics), and every message acknowledged before the kill reached the broker once.
 * - Replay: every datagram the device sent to A, sent again to B from the device's flow after
 *   A died (before and after B adopted the association): nothing reaches the broker twice.
 * - SIGTERM drain of A: the device gets no close_notify and goes on at B with no handshake.
 *
 * Each runs with a Connection ID offered by the device and without (matched by address).
 * Every test has its own pod A (killed or drained) and device; the tests with default settings
 * share one pod B, and assert on what its metrics and log gained during the test.
 *
 * The tests are declared here and run from three files side by side (each test mostly waits
 * for its pods): `shared-associations-cid` and `shared-associations-address` (the tests with
 * default settings, one pod B each) and `shared-associations-exact-fence` (both modes with
 * `associationFenceRecords: 0`, pods of their own).
 */
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code, ContentFormat, formatCode } from '../../src/coap/constants.js';
import { CipherSuite } from '../../src/dtls/constants.js';
import { derivePsk } from '../../src/enos/psk.js';
import { CoapDtlsClient, type CoapResponse } from '../../src/tools/coap-client.js';
import {
  MISSING_TOOLS,
  SHARED_MQTT_URL,
  SHARED_REDIS_URL,
  cliSafeSecret,
  eventually,
  measurepoint,
  measurepointTopic,
  startPlatform,
  uid,
  type PlatformStandIn,
} from '../helpers/e2e.js';
import {
  explainWith,
  podLogLines,
  podLogTail,
  startPod,
  waitPodLog,
  writeDevicesFile,
  type DeviceSpec,
  type Pod,
} from '../helpers/e2e-pods.js';
import { START_TIMEOUT_MS } from '../helpers/processes.js';
import { Relay } from '../helpers/udp-relay.js';

const ASSOCIATION_KEY = randomBytes(32).toString('hex');

// --- pods and their metrics --------------------------------------------------------------------

interface MetricsPod extends Pod {
  readonly adminPort: number;
}

/**
 * `serve` starts of this module's tests, two at a time in a process: the three files that
 * declare them run side by side in one process (and load this module once), and the six pods
 * their first tests started at once missed the 15 s start deadline at a load of 26 on two cores
 * where a file alone, starting two, did not. A start waits here before its deadline runs.
 */
const POD_STARTS_AT_ONCE = 2;
let podStarts = 0;
const podStartQueue: (() => void)[] = [];

async function oneOfPodStarts<T>(start: () => Promise<T>): Promise<T> {
  if (podStarts >= POD_STARTS_AT_ONCE)
    await new Promise<void>((resolve) => podStartQueue.push(resolve));
  else podStarts++;
  try {
    return await start();
  } finally {
    // the slot goes to the next start waiting, or is freed
    const next = podStartQueue.shift();
    if (next !== undefined) next();
    else podStarts--;
  }
}

async function startSharingPod(
  dir: string,
  name: string,
  devices: string,
  redisPrefix: string,
  settings: Record<string, unknown> = {},
): Promise<MetricsPod> {
  const pod = await oneOfPodStarts(() =>
    startPod(
      dir,
      name,
      {
        devices,
        redisUrl: SHARED_REDIS_URL,
        redisPrefix,
        mqttUrl: SHARED_MQTT_URL,
        httpPort: 0,
        httpBind: '127.0.0.1',
        // "association adopted" is a debug line
        logLevel: 'debug',
        // always piggybacked: one answer per request
        ackTimeoutMs: -1,
        replyTimeoutMs: 5_000,
        drainTimeoutSeconds: 5,
        // not what these tests are about; at the default 300 ms a pod starved by other work
        // (load 25) saw its association's create time out, so it was never shared
        redisCommandTimeoutMs: 2_000,
        ...settings,
      },
      { env: { COAP_EDGE_ASSOCIATION_KEY: ASSOCIATION_KEY } },
    ),
  );
  const m = await pod.proc.waitFor(/^.*"msg":"admin HTTP server listening".*$/m, {
    stream: 'stdout',
  });
  const line = JSON.parse(m[0]) as { http?: unknown };
  const adminPort = typeof line.http === 'string' ? Number(/:(\d+)$/.exec(line.http)?.[1]) : NaN;
  assert.ok(adminPort > 0, `no admin port in ${m[0]}`);
  // traffic only once ready, as from a load balancer: Redis (secrets and the association
  // store) and MQTT connected; a handshake before the store is up would not be shared
  await explainWith(
    [pod],
    eventually(
      async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200,
      `${name} ready`,
      // its Redis and MQTT connections, made after it listens: not under test (START_TIMEOUT_MS)
      START_TIMEOUT_MS,
    ),
  );
  // the first heartbeat goes out before the store's connection is up: not worth a warning
  assert.doesNotMatch(pod.proc.stdout, /shared association store failed/, pod.proc.describe());
  return { ...pod, adminPort };
}

/** The sum of the samples of `name` whose labels include every `labels` pair. */
async function metric(
  pod: MetricsPod,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${pod.adminPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{([^}]*)\})? ([0-9.e+-]+|NaN)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => have.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

// --- the tests ---------------------------------------------------------------------------------

/** Which tests a file declares: those with default settings (sharing pod B), or the exact fence's. */
export type SharedAssociationTests = 'default settings' | 'exact fence';

/** Declares the tests `which`, with a Connection ID offered by the device (`withCid`) or not. */
export function describeSharedAssociations(withCid: boolean, which: SharedAssociationTests): void {
  describe(
    `e2e: shared associations across gateway processes, ${withCid ? 'CID offered' : 'no CID (by address)'}`,
    { skip: MISSING_TOOLS },
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'coap-edge-shared-'));
      const newSpec = (tag: string): DeviceSpec => ({
        pk: uid(`sh${tag}`),
        dk: uid('dev'),
        secret: cliSafeSecret('sh'),
      });
      /** The devices of the tests with default settings: they share pod B (and its files). */
      const sharedSpecs = new Map(['k', 'r', 'd'].map((tag) => [tag, newSpec(tag)]));
      const sharedDevices = writeDevicesFile(dir, [...sharedSpecs.values()], 'shared.json');
      const sharedPrefix = uid('e2e-shared-');
      let sharedB: MetricsPod | undefined;
      let a: MetricsPod | undefined;
      let b: MetricsPod | undefined;
      let relay: Relay | undefined;
      let device: CoapDtlsClient | undefined;
      let platform: PlatformStandIn | undefined;

      afterEach(async () => {
        await device?.close().catch(() => undefined);
        await relay?.close();
        await platform?.close();
        await Promise.all([a?.stop(), b === sharedB ? undefined : b?.stop()]);
        device = relay = platform = a = b = undefined;
      });

      after(async () => {
        await sharedB?.stop();
        sharedB = undefined;
      });

      /**
       * Pod A, pod B, a platform for the device's topic, the relay toward A, the device on it.
       * With `settings`, a pair of pods of their own; without, a new A beside the shared B.
       */
      async function setUp(tag: string, settings?: Record<string, unknown>) {
        const own = settings !== undefined ? newSpec(tag) : undefined;
        const spec = own ?? sharedSpecs.get(tag);
        assert.ok(spec !== undefined, `no device for ${tag}`);
        if (own !== undefined) {
          const devices = writeDevicesFile(dir, [own], `${uid('devices-')}.json`);
          const prefix = uid('e2e-shared-');
          [a, b] = await Promise.all([
            startSharingPod(dir, uid('A-'), devices, prefix, settings),
            startSharingPod(dir, uid('B-'), devices, prefix, settings),
          ]);
        } else {
          [a, b] = await Promise.all([
            startSharingPod(dir, uid('A-'), sharedDevices, sharedPrefix),
            sharedB ?? startSharingPod(dir, uid('B-'), sharedDevices, sharedPrefix),
          ]);
          sharedB = b;
        }
        // what B had counted and logged before this test's device
        const bBefore = await snapshot(b);
        const topic = measurepointTopic(spec.pk, spec.dk);
        platform = await startPlatform(SHARED_MQTT_URL, topic);
        relay = await Relay.start(a.port);
        device = await explainWith(
          [a, b],
          CoapDtlsClient.connect({
            host: '127.0.0.1',
            port: relay.port,
            identity: `${spec.pk},${spec.dk},2,3600`,
            psk: derivePsk(spec.secret),
            cipherSuites: [CipherSuite.TLS_PSK_WITH_AES_128_CCM_8],
            handshakeTimeoutMs: 10_000,
            retransmitTimeoutMs: 500,
            ...(withCid ? { connectionId: Buffer.alloc(0) } : {}),
          }),
        );
        const pods = [a, b];
        const d = device;
        const p = platform;
        const r = relay;
        return {
          a,
          b,
          bBefore,
          d,
          relay: r,
          platform: p,
          pods,
          /** POSTs measurepoint `id`; must be answered 2.04 with the platform's reply. */
          post: async (id: string): Promise<CoapResponse> => {
            const res = await explainWith(
              pods,
              d.request({
                method: 'POST',
                path: `/topic${topic}`,
                payload: Buffer.from(measurepoint(id)),
                contentFormat: ContentFormat.JSON,
                timeoutMs: 15_000,
                ackTimeoutMs: 500,
              }),
            );
            assert.equal(formatCode(res.code), formatCode(Code.CHANGED), res.payload.toString());
            assert.equal((JSON.parse(res.payload.toString()) as { id?: unknown }).id, id);
            return res;
          },
          /** How many times the broker delivered measurepoint `id` to the platform. */
          seen: (id: string): number =>
            p.messages.filter(
              (m) => (JSON.parse(m.payload.toString()) as { id?: unknown }).id === id,
            ).length,
        };
      }

      /** Waits until A has lowered the device's receive fence (it went quiet). */
      async function fenceLowered(pod: MetricsPod): Promise<void> {
        try {
          await eventually(
            async () =>
              (await metric(pod, 'coap_edge_dtls_sequence_leases_total', { kind: 'lower' })) >= 1,
            `${pod.name}: the receive fence lowered`,
            10_000,
          );
        } catch (err) {
          const text = await (await fetch(`http://127.0.0.1:${pod.adminPort}/metrics`)).text();
          const lines = text.split('\n').filter((l) => /^coap_edge_dtls_/.test(l));
          throw new Error(`${String(err)}\n${lines.join('\n')}\n${podLogTail(pod, 30)}`, {
            cause: err,
          });
        }
      }

      /** What B's metrics and log say about adoptions and handshakes. */
      async function snapshot(pod: MetricsPod) {
        return {
          adoptionsVia: await metric(pod, 'coap_edge_dtls_adoptions_total', {
            via: withCid ? 'cid' : 'address',
          }),
          adoptions: await metric(pod, 'coap_edge_dtls_adoptions_total'),
          started: await metric(pod, 'coap_edge_dtls_handshakes_started_total'),
          completed: await metric(pod, 'coap_edge_dtls_handshakes_completed_total'),
          adoptedLines: podLogLines(pod, 'association adopted').length,
          establishedLines: podLogLines(pod, 'association established').length,
        };
      }

      /**
       * B answered after an adoption (by CID or address), with no handshake: since `before`
       * (taken when the test began), one adoption more and no handshake.
       */
      async function adoptedWithoutHandshake(
        pod: MetricsPod,
        before: Awaited<ReturnType<typeof snapshot>>,
      ): Promise<void> {
        assert.ok(!pod.proc.exited, `${pod.name} is running`);
        assert.equal(
          await metric(pod, 'coap_edge_dtls_adoptions_total', { via: withCid ? 'cid' : 'address' }),
          before.adoptionsVia + 1,
          `${pod.name}: one adoption via ${withCid ? 'cid' : 'address'}`,
        );
        assert.equal(await metric(pod, 'coap_edge_dtls_adoptions_total'), before.adoptions + 1);
        assert.equal(await metric(pod, 'coap_edge_dtls_handshakes_started_total'), before.started);
        assert.equal(
          await metric(pod, 'coap_edge_dtls_handshakes_completed_total'),
          before.completed,
        );
        // the pod writes its log to a pipe: the line may reach this process after the
        // /metrics answer that already counts the adoption
        await waitPodLog(pod, 'association adopted', before.adoptedLines + 1);
        assert.equal(
          podLogLines(pod, 'association adopted').length,
          before.adoptedLines + 1,
          'adoption logged',
        );
        assert.equal(
          podLogLines(pod, 'association established').length,
          before.establishedLines,
          'no handshake logged',
        );
      }

      /** Switches the relay to B and times the first answer from it. */
      async function switchAndPost(
        s: Awaited<ReturnType<typeof setUp>>,
        id: string,
        what: string,
      ): Promise<CoapResponse> {
        s.relay.target = s.b.port;
        const t0 = performance.now();
        const res = await s.post(id);
        console.log(
          `# ${withCid ? 'cid' : 'address'} ${what}: first answer from B ` +
            `${(performance.now() - t0).toFixed(0)} ms after the switch ` +
            `(${res.retransmissions} CoAP retransmissions)`,
        );
        return res;
      }

      if (which === 'default settings') {
        it('SIGKILL of A: B answers the next request by adoption, nothing acknowledged is lost or doubled', async () => {
          const s = await setUp('k');
          const ids = ['k1', 'k2', 'k3'];
          for (const id of ids) await s.post(id);
          assert.equal(await metric(s.a, 'coap_edge_dtls_associations_stored_total'), 1);
          // A lowers the fence once the device is quiet (1 s); killed before, B refuses the
          // records within A's receive lease until the next one past it (CoAP retransmissions)
          await fenceLowered(s.a);
          const gone = await s.a.proc.kill();
          assert.equal(gone.signal, 'SIGKILL');

          await switchAndPost(s, 'k4', 'after SIGKILL');
          await adoptedWithoutHandshake(s.b, s.bBefore);
          await s.post('k5');
          for (const id of [...ids, 'k4', 'k5'])
            assert.equal(s.seen(id), 1, `${id} on the broker once`);
          assert.equal(s.platform.messages.length, 5);
        });

        it('replay: everything the device sent to A, sent again to B after the kill, reaches the broker never twice', async () => {
          const s = await setUp('r');
          const ids = ['r1', 'r2', 'r3'];
          for (const id of ids) await s.post(id);
          await fenceLowered(s.a);
          const captured = s.relay.captured.slice();
          await s.a.proc.kill();
          s.relay.target = s.b.port;

          // before B holds the association: looked up, found, every record authentic but
          // below the fence A lowered. While A's heartbeat lasts B leaves them (unproven); once
          // it expired B may take the association over at the fence (fenced): either way no
          // replayed record is accepted
          const lookups = async (): Promise<number> =>
            (await metric(s.b, 'coap_edge_dtls_association_lookups_total', {
              result: 'unproven',
            })) +
            (await metric(s.b, 'coap_edge_dtls_association_lookups_total', { result: 'fenced' }));
          const lookupsBefore = await lookups();
          for (const d of captured) s.relay.inject(d);
          await eventually(
            async () => (await lookups()) >= lookupsBefore + 1,
            'B: the replayed records looked up, none accepted',
            10_000,
          );
          assert.equal(s.platform.messages.length, 3, 'no replayed request reached the broker');

          // the device goes on at B from its very first record: B's CoAP layer got that one
          // as the request and every retransmission as its duplicate. How many retransmissions
          // there were is the machine's speed (the device retransmits after 0.5 s and 1.5 s;
          // at a load of 13-20 B's answer came after the second), not B's doing; a record B
          // refused would leave one retransmission without its duplicate. A retransmission
          // still in flight when the answer came reaches B after it: waited for, then counted.
          const duplicates = (): Promise<number> =>
            metric(s.b, 'coap_edge_coap_exchange_events_total', { event: 'duplicate' });
          const duplicatesBefore = await duplicates();
          const first = await s.post('r4');
          await eventually(
            async () => (await duplicates()) - duplicatesBefore >= first.retransmissions,
            `B: each of the ${first.retransmissions} retransmissions of r4 a duplicate`,
            10_000,
          );
          assert.equal(
            (await duplicates()) - duplicatesBefore,
            first.retransmissions,
            `B took r4's first record (${first.retransmissions} retransmissions)`,
          );
          await adoptedWithoutHandshake(s.b, s.bBefore);

          // after the adoption: the replay window (and fence) drops them
          const droppedBefore = await metric(s.b, 'coap_edge_dtls_records_dropped_total');
          for (const d of captured) s.relay.inject(d);
          // a fresh request after the replays: B handles datagrams of one flow in order, and
          // publishes in order, so a replay that got through would be on the broker before it
          await s.post('r5');
          const dropped =
            (await metric(s.b, 'coap_edge_dtls_records_dropped_total')) - droppedBefore;
          for (const id of [...ids, 'r4', 'r5'])
            assert.equal(s.seen(id), 1, `${id} on the broker once`);
          assert.equal(s.platform.messages.length, 5, 'nothing reached the broker twice');
          console.log(
            `# ${withCid ? 'cid' : 'address'} replay: ${captured.length} datagrams replayed twice; ` +
              `after the adoption ${dropped} records dropped`,
          );
          assert.ok(dropped >= 1, 'the replays after the adoption were dropped and counted');
        });

        it('SIGTERM drain of A: no close_notify, the device goes on at B with no handshake', async () => {
          const s = await setUp('d');
          let closed: unknown;
          s.d.dtls.on('close', (reason: unknown) => {
            closed = reason ?? 'closed';
          });
          await s.post('d1');
          await s.post('d2');
          // no pause: the hand-over lowers the fence at once
          s.a.proc.signal('SIGTERM');
          const gone = await s.a.proc.done;
          assert.equal(gone.code, 0, s.a.proc.describe());
          const handed = podLogLines(s.a, 'associations handed over');
          assert.equal(handed.length, 1, 'A logged the hand-over');
          assert.equal(handed[0]?.handedOver, 1, podLogTail(s.a, 15));
          assert.equal(closed, undefined, 'the device got no close_notify');

          await switchAndPost(s, 'd3', 'after SIGTERM drain');
          await adoptedWithoutHandshake(s.b, s.bBefore);
          assert.equal(closed, undefined, 'the device is still established');
          for (const id of ['d1', 'd2', 'd3'])
            assert.equal(s.seen(id), 1, `${id} on the broker once`);
        });
      } else {
        it("associationFenceRecords 0: SIGKILL in mid-traffic, B takes the device's very next record", async () => {
          // pods of its own: both with the exact fence
          const s = await setUp('x', { associationFenceRecords: 0 });
          const ids = Array.from({ length: 10 }, (_, i) => `x${i}`);
          for (const id of ids) await s.post(id);
          // killed busy, before the fence could come down: with an exact fence B takes the
          // association over at the device's very next record
          const gone = await s.a.proc.kill();
          assert.equal(gone.signal, 'SIGKILL');
          await switchAndPost(s, 'x10', 'after SIGKILL (exact fence)');
          // nothing the device sent after the kill was refused as possibly taken by A (with
          // the default fence a busy device's next records are: replay drops, retransmissions)
          assert.equal(
            await metric(s.b, 'coap_edge_dtls_records_dropped_total', { reason: 'replay' }),
            0,
            'no fresh record refused',
          );
          await adoptedWithoutHandshake(s.b, s.bBefore);
          for (const id of [...ids, 'x10']) assert.equal(s.seen(id), 1, `${id} on the broker once`);
        });
      }
    },
  );
}
