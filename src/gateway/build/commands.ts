/**
 * Commands for sleepy devices: the store every pod can deliver from (Redis, or memory
 * without it) and, in bridge mode, the intake that fills it from the platform's command
 * topics (docs/design.md, "Commands for sleepy devices"). Built before the per-device
 * sessions, which deliver the commands of their connections into the same store.
 */
import {
  CommandIntake,
  MemoryCommandStore,
  RedisCommandStore,
  isCommandError,
} from '../../bridge/commands/index.js';
import type { RedisTarget } from '../../redis/client.js';
import type { MetricSources } from '../../telemetry/metrics.js';
import type { Mqtt } from './mqtt.js';
import { StartupError, type BuildContext, type Built } from './context.js';

export interface Commands {
  readonly store: RedisCommandStore | MemoryCommandStore;
  /** The MQTT command intake (bridge mode), when it runs. */
  readonly intake: CommandIntake | undefined;
}

export function buildCommands(
  { config, log, clock, closers }: BuildContext,
  redis: RedisTarget | undefined,
  { brokerUrl, onEmbedded, protocol }: Mqtt,
): Built<Commands, Pick<MetricSources, 'commands' | 'commandIntake' | 'commandsRedisUp'>> {
  // Commands wait where every pod can deliver them: Redis, or memory without it.
  const expiryMs = config.commandExpirySeconds * 1000;
  let commands: RedisCommandStore | MemoryCommandStore;
  if (redis !== undefined) {
    commands = new RedisCommandStore({
      url: redis,
      prefix: config.redisPrefix,
      waitReplicas: config.redisWaitReplicas,
      commandTimeoutMs: config.redisCommandTimeoutMs,
      queueLength: config.commandQueueLength,
      expiryMs,
      maxWaiters: config.maxTtdWaiters,
      clock,
    });
  } else {
    commands = new MemoryCommandStore({
      queueLength: config.commandQueueLength,
      expiryMs,
      maxWaiters: config.maxTtdWaiters,
      clock,
    });
  }
  const store = commands;
  closers.push(() => store.close());
  let commandIntake: CommandIntake | undefined;
  if (brokerUrl !== undefined && config.mqttMode === 'bridge') {
    let intake: CommandIntake;
    try {
      intake = new CommandIntake({
        url: brokerUrl,
        username: config.mqttUsername,
        password: config.mqttPassword,
        protocol,
        topics: config.commandTopics,
        topicPrefix: config.mqttTopicPrefix,
        shareGroup: config.commandShareGroup,
        // aedes (the embedded broker) has no $share; there is only one pod then anyway
        shared: !onEmbedded,
        store,
        logger: log,
        clock,
      });
    } catch (err) {
      if (isCommandError(err)) throw new StartupError(`commandTopics: ${err.message}`);
      throw err;
    }
    intake.start();
    closers.push(() => intake.close());
    commandIntake = intake;
  }
  return {
    component: { store, intake: commandIntake },
    checks: [],
    metrics: {
      commands: () => store.stats(),
      ...(commandIntake !== undefined
        ? { commandIntake: commandIntake.stats.bind(commandIntake) }
        : {}),
      ...(store instanceof RedisCommandStore
        ? { commandsRedisUp: () => store.state() === 'connected' }
        : {}),
    },
  };
}
