/**
 * End to end: commands for sleepy devices, across two coap-edge processes ("pods",
 * `node dist/src/cli.js serve`, each on its own DTLS port) sharing Redis (a unique prefix) and
 * the shared Mosquitto on 1883 (bridge mode; a unique shared-subscription group, so the two
 * pods split the command stream between them and no other test's gateway takes a command).
 *
 * The platform publishes a command (QoS 1) on `/sys/{pk}/{dk}/thing/service/reboot` while the
 * device has no association with any pod; it waits in Redis and rides on the device's next
 * answer as option 2100 = `/topic{commandTopic}` and 2102 = the payload (or 2100 alone when it
 * is longer than `maxInlineCommand`; `GET /topic{commandTopic}` then fetches it). The device's
 * `POST .../reboot_reply` reaches the platform and acknowledges the command, which is no
 * longer offered afterwards. Commands taken in by either pod are delivered by pod B. A request
 * with `ttd=5` is held open and answered (separate response) with a command published 1 s
 * later; without a command it is answered when the ttd runs out.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { commandQueueKey } from '../../src/bridge/commands/redis-store.js';
import { ContentFormat } from '../../src/coap/constants.js';
import type { CoapDtlsClient, CoapResponse } from '../../src/tools/coap-client.js';
import {
  MISSING_TOOLS,
  SHARED_MQTT_URL,
  SHARED_REDIS_URL,
  cliSafeSecret,
  eventually,
  measurepoint,
  measurepointTopic,
  sleep,
  startPlatform,
  startRecorder,
  uid,
  type PlatformStandIn,
  type Recorder,
} from '../helpers/e2e.js';
import {
  codeOf,
  commandPayloadOf,
  commandTopicOf,
  connectAs,
  contentFormatOf,
  describeAnswer,
  explainWith,
  postJson,
  startPod,
  waitPodLog,
  writeDevicesFile,
  type DeviceSpec,
  type Pod,
} from '../helpers/e2e-pods.js';
import { killAll } from '../helpers/processes.js';

const MAX_INLINE = 128;

function command(id: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ id, version: '1.0', method: 'thing.service.reboot', params: extra });
}

function idOf(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const id = (JSON.parse(text) as { id?: unknown }).id;
  return typeof id === 'string' ? id : undefined;
}

describe(
  'e2e: commands for sleepy devices, two coap-edge processes',
  { skip: MISSING_TOOLS },
  () => {
    const dev: DeviceSpec = { pk: uid('cmPK'), dk: uid('cmDK'), secret: cliSafeSecret('cm') };
    const probe: DeviceSpec = { pk: dev.pk, dk: uid('cmProbe'), secret: cliSafeSecret('cmp') };
    const redisPrefix = uid('e2e-cmd-');
    const rebootTopic = `/sys/${dev.pk}/${dev.dk}/thing/service/reboot`;
    const replyTopic = `${rebootTopic}_reply`;
    const uplink = measurepointTopic(dev.pk, dev.dk);
    let dir: string;
    let podA: Pod;
    let podB: Pod;
    let platform: PlatformStandIn;
    let commands: Recorder;
    let redis: Redis;
    const clients: CoapDtlsClient[] = [];

    const queueLength = (d: DeviceSpec = dev): Promise<number> =>
      redis.llen(commandQueueKey(redisPrefix, { productKey: d.pk, deviceKey: d.dk }));

    /** The platform sends a command (QoS 1, PUBACK awaited). */
    async function publishCommand(payload: string, topic = rebootTopic): Promise<void> {
      await commands.client.publishAsync(topic, payload, { qos: 1 });
    }

    /** The device replies the platform saw on `replyTopic`, as text. */
    const repliesSeen = (): string[] =>
      commands.messages
        .filter((m) => m.topic === replyTopic)
        .map((m) => m.payload.toString('utf8'));

    async function connect(pod: Pod): Promise<CoapDtlsClient> {
      const c = await explainWith([pod], connectAs(pod.port, dev));
      clients.push(c);
      return c;
    }

    async function close(c: CoapDtlsClient): Promise<void> {
      await c.close();
      clients.splice(clients.indexOf(c), 1);
    }

    function assertPlatformReply(res: CoapResponse, id: string): void {
      assert.equal(codeOf(res), '2.04', describeAnswer(res));
      assert.deepEqual(JSON.parse(res.payload.toString('utf8')), {
        id,
        code: 200,
        data: { by: 'e2e-platform' },
      });
    }

    /** The device answers command `id`; the answer of that request is returned. */
    async function reply(c: CoapDtlsClient, id: string): Promise<CoapResponse> {
      const res = await postJson(
        c,
        replyTopic,
        JSON.stringify({ id, code: 200, data: { done: true } }),
      );
      assert.equal(codeOf(res), '2.04', describeAnswer(res));
      return res;
    }

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'coap-edge-e2e-cmd-'));
      redis = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: 1 });
      const config = {
        devices: writeDevicesFile(dir, [dev, probe]),
        redisUrl: SHARED_REDIS_URL,
        redisPrefix,
        mqttUrl: SHARED_MQTT_URL,
        commandShareGroup: uid('e2ecmd'),
        maxInlineCommand: MAX_INLINE,
        maxTtdSeconds: 10,
        publishTimeoutMs: 3_000,
        replyTimeoutMs: 3_000,
        maxUnavailableRetrySeconds: 1,
      };
      [podA, podB] = await Promise.all([
        startPod(dir, 'podA', config),
        startPod(dir, 'podB', config),
      ]);
      platform = await startPlatform(SHARED_MQTT_URL, `/sys/${dev.pk}/+/thing/measurepoint/post`);
      commands = await startRecorder(SHARED_MQTT_URL, `/sys/${dev.pk}/+/thing/service/#`);
      // both bridge pools are up and both pods' command intakes subscribed (their shared
      // subscription takes what is published from now on); then a probe command must reach
      // Redis through one of them
      await Promise.all(
        [podA, podB].map(async (p) => {
          await waitPodLog(p, 'mqtt connection up', 2);
          await waitPodLog(p, 'command intake subscribed', 1, 15_000);
        }),
      );
      await publishCommand(
        command(uid('probe-')),
        `/sys/${probe.pk}/${probe.dk}/thing/service/probe`,
      );
      await eventually(async () => (await queueLength(probe)) > 0, 'the probe command in Redis');
    });

    after(async () => {
      await Promise.all(clients.map((c) => c.close()));
      await Promise.all([podA?.stop(), podB?.stop()]);
      await killAll();
      await platform?.close();
      await commands?.close();
      if (redis !== undefined) {
        const keys = await redis.keys(`${redisPrefix}:*`);
        if (keys.length > 0) await redis.del(...keys);
        redis.disconnect();
      }
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    });

    it('a command published while the device sleeps rides on its next answer (2100 + 2102); its reply reaches the platform', async () => {
      const cmd = command('cmd-1', { delay: 1 });
      assert.ok(Buffer.byteLength(cmd) <= MAX_INLINE);
      assert.equal(await queueLength(), 0);
      await publishCommand(cmd);
      await eventually(async () => (await queueLength()) === 1, 'the command waits in Redis');

      const c = await connect(podA);
      const res = await postJson(c, uplink, measurepoint('up-1'));
      assertPlatformReply(res, 'up-1');
      assert.equal(commandTopicOf(res), `/topic${rebootTopic}`, describeAnswer(res));
      assert.equal(commandPayloadOf(res), cmd);

      const ack = await reply(c, 'cmd-1');
      assert.equal(commandTopicOf(ack), undefined, `nothing else waits: ${describeAnswer(ack)}`);
      await eventually(() => repliesSeen().length === 1, 'the platform sees the reply');
      assert.deepEqual(JSON.parse(repliesSeen()[0] ?? 'null'), {
        id: 'cmd-1',
        code: 200,
        data: { done: true },
      });
      assert.equal(await queueLength(), 0, 'acknowledged: removed from the queue');

      const again = await postJson(c, uplink, measurepoint('up-2'));
      assertPlatformReply(again, 'up-2');
      assert.equal(commandTopicOf(again), undefined, `no longer offered: ${describeAnswer(again)}`);
      await close(c);
    });

    it('commands longer than maxInlineCommand: 2100 only, fetched with GET (2100 again while more wait), then acknowledged', async () => {
      const big = (id: string): string => command(id, { firmware: 'x'.repeat(300) });
      const sent = new Map([
        ['cmd-2a', big('cmd-2a')],
        ['cmd-2b', big('cmd-2b')],
      ]);
      for (const cmd of sent.values()) {
        assert.ok(Buffer.byteLength(cmd) > MAX_INLINE);
        await publishCommand(cmd);
      }
      await eventually(async () => (await queueLength()) === 2, 'two commands wait in Redis');

      const c = await connect(podA);
      const res = await postJson(c, uplink, measurepoint('up-3'));
      assertPlatformReply(res, 'up-3');
      assert.equal(commandTopicOf(res), `/topic${rebootTopic}`, describeAnswer(res));
      assert.equal(commandPayloadOf(res), undefined, 'too long for option 2102');

      const fetch = (): Promise<CoapResponse> =>
        c.request({ method: 'GET', path: `/topic${rebootTopic}`, timeoutMs: 15_000 });
      const before = repliesSeen().length;
      const fetched: string[] = [];
      for (const moreAfter of [true, false]) {
        const got = await fetch();
        assert.equal(codeOf(got), '2.05', describeAnswer(got));
        assert.equal(contentFormatOf(got), ContentFormat.JSON);
        const id = idOf(got.payload.toString('utf8'));
        assert.ok(
          id !== undefined && sent.get(id) === got.payload.toString('utf8'),
          describeAnswer(got),
        );
        fetched.push(id);
        // docs/protocol.md: the GET answer carries 2100 again while more commands wait
        assert.equal(
          commandTopicOf(got),
          moreAfter ? `/topic${rebootTopic}` : undefined,
          `${moreAfter ? 'another waits' : 'the last one'}: ${describeAnswer(got)}`,
        );
        const ack = await reply(c, id);
        assert.equal(
          commandTopicOf(ack),
          moreAfter ? `/topic${rebootTopic}` : undefined,
          describeAnswer(ack),
        );
        assert.equal(commandPayloadOf(ack), undefined, describeAnswer(ack));
      }
      assert.deepEqual([...fetched].sort(), ['cmd-2a', 'cmd-2b']);
      await eventually(() => repliesSeen().length === before + 2, 'the platform sees both replies');
      assert.deepEqual(repliesSeen().slice(before).map(idOf), fetched);
      assert.equal(await queueLength(), 0);
      const gone = await fetch();
      assert.equal(codeOf(gone), '4.04', `fetched after the replies: ${describeAnswer(gone)}`);
      const again = await postJson(c, uplink, measurepoint('up-4'));
      assert.equal(commandTopicOf(again), undefined, describeAnswer(again));
      await close(c);
    });

    it('commands taken in by either pod while the device sleeps are all delivered by pod B', async () => {
      const ids = ['cmd-3a', 'cmd-3b', 'cmd-3c', 'cmd-3d'];
      for (const id of ids) await publishCommand(command(id));
      await eventually(
        async () => (await queueLength()) === ids.length,
        'four commands wait in Redis',
      );

      const c = await connect(podB);
      let res = await postJson(c, uplink, measurepoint('up-5'));
      assertPlatformReply(res, 'up-5');
      const delivered: string[] = [];
      const before = repliesSeen().length;
      // each reply's answer names the next command, until none is left
      for (let i = 0; i < ids.length + 2 && commandTopicOf(res) !== undefined; i++) {
        assert.equal(commandTopicOf(res), `/topic${rebootTopic}`, describeAnswer(res));
        const id = idOf(commandPayloadOf(res));
        assert.ok(id !== undefined, `2102 carries the command: ${describeAnswer(res)}`);
        delivered.push(id);
        res = await reply(c, id);
      }
      assert.deepEqual([...delivered].sort(), ids, `each command once: ${delivered.join(',')}`);
      await eventually(
        () => repliesSeen().length === before + ids.length,
        'the platform sees four replies',
      );
      assert.deepEqual(repliesSeen().slice(before).map(idOf), delivered);
      assert.equal(await queueLength(), 0);
      const again = await postJson(c, uplink, measurepoint('up-6'));
      assert.equal(commandTopicOf(again), undefined, describeAnswer(again));
      await close(c);
    });

    it('ttd=5: the request is held open and answered (separate response) with a command published 1 s later', async () => {
      assert.equal(await queueLength(), 0);
      const c = await connect(podA);
      const t0 = performance.now();
      const pending = postJson(c, uplink, measurepoint('up-ttd'), {
        query: ['ttd=5'],
        timeoutMs: 15_000,
      });
      await sleep(1_000);
      const cmd = command('cmd-ttd');
      await publishCommand(cmd);
      const res = await pending;
      const ms = performance.now() - t0;
      assertPlatformReply(res, 'up-ttd');
      assert.equal(res.separate, true, 'a separate response after an empty ACK');
      assert.equal(commandTopicOf(res), `/topic${rebootTopic}`, describeAnswer(res));
      assert.equal(commandPayloadOf(res), cmd);
      assert.ok(ms >= 950, `not before the command (${Math.round(ms)} ms)`);
      assert.ok(
        ms < 4_500,
        `as soon as the command arrived, well before the 5 s ttd (${Math.round(ms)} ms)`,
      );
      await reply(c, 'cmd-ttd');
      assert.equal(await queueLength(), 0);

      // without a command, the answer comes when the ttd runs out
      const t1 = performance.now();
      const idle = await postJson(c, uplink, measurepoint('up-ttd-2'), {
        query: ['ttd=2'],
        timeoutMs: 15_000,
      });
      const idleMs = performance.now() - t1;
      assertPlatformReply(idle, 'up-ttd-2');
      assert.equal(commandTopicOf(idle), undefined, describeAnswer(idle));
      assert.ok(idleMs >= 1_900 && idleMs < 5_000, `held for the ttd (${Math.round(idleMs)} ms)`);
      await close(c);
    });

    it('neither pod logged an error', () => {
      for (const p of [podA, podB]) {
        const errors = p.proc.stdout.split('\n').filter((l) => /"level":"(error|fatal)"/.test(l));
        assert.deepEqual(errors, [], p.name);
      }
    });
  },
);
