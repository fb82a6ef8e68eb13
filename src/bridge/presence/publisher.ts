/**
 * Where presence events go (settings `presenceTopic`, `presenceWebhook`): an MQTT topic
 * rendered from a template, and/or a JSON POST to a webhook. Each sink is tried once more
 * after a failure; failures are counted and reported to the tracker (which counts and logs
 * them too). The tracker publishes off the request path, so a slow sink never delays a device.
 *
 * Payload (both sinks): {@link presenceEventJson}, UTF-8 JSON with the fields of
 * {@link PresenceEvent} in a fixed order. A retry after a timeout may deliver an event twice:
 * `seq` identifies it.
 *
 * Topic template: `{pk}`, `{dk}` and `{status}` are replaced (keys cannot hold MQTT wildcards
 * or `/`, see enos/identity.ts); any other `{...}`, `+` or `#` is a configuration error.
 * Example: `/presence/{pk}/{dk}` → `/presence/MuGsF6W4/15bBZlRknc`.
 *
 * Webhook: `POST {url}` with `content-type: application/json`, `x-coap-edge-event: presence`
 * and `x-coap-edge-seq`; any 2xx is success. Network errors, timeouts, 429 and 5xx are retried
 * once after `retryDelayMs`; other statuses are not retried.
 */
import { createRequire } from 'node:module';
import { CoapEdgeError } from '../../errors/index.js';
import type * as Undici from 'undici';
import type { Pool } from 'undici';
import { systemClock, type Clock, type TimerHandle } from '../../time/clock.js';
import { PresenceError, type PresenceEvent } from './types.js';

export interface PresencePublisherOptions {
  /** Publishes one MQTT message (e.g. `MessageBackend.publish`); needed with `topicTemplate`. */
  readonly mqttPublish?: ((topic: string, payload: Buffer) => Promise<void>) | undefined;
  /** MQTT topic template (settings `presenceTopic`); unset: no MQTT events. */
  readonly topicTemplate?: string | undefined;
  /** http(s) URL (settings `presenceWebhook`); unset: no webhook. */
  readonly webhookUrl?: string | undefined;
  /** Extra headers of every webhook request (e.g. authorization). */
  readonly webhookHeaders?: Readonly<Record<string, string>> | undefined;
  /** ms per attempt (MQTT publish and HTTP request each). @default 5000 */
  readonly timeoutMs?: number | undefined;
  /** ms before the one retry. @default 500 */
  readonly retryDelayMs?: number | undefined;
  /** Webhook connections. @default 4 */
  readonly connections?: number | undefined;
  /**
   * Timers of the attempt timeouts and the retry delay (undici's own connect, header and body
   * timeouts stay on Node's timers). @default the system clock
   */
  readonly clock?: Clock | undefined;
}

export interface SinkStats {
  readonly ok: number;
  /** Events this sink did not take, after the retry. */
  readonly failed: number;
  /** Attempts that failed and were retried. */
  readonly retried: number;
}

export interface PresencePublisherStats {
  readonly mqtt: SinkStats;
  readonly webhook: SinkStats;
}

export interface PresencePublisher {
  /** Sends to every configured sink; rejects (`PRESENCE_PUBLISH_FAILED`) if one failed. */
  publish(event: PresenceEvent): Promise<void>;
  stats(): PresencePublisherStats;
  /** Waits for webhook requests in flight and closes its connections. */
  close(): Promise<void>;
}

/** The JSON of an event, fields in a fixed order; `sessionId` only when known. */
export function presenceEventJson(ev: PresenceEvent): string {
  return JSON.stringify({
    productKey: ev.productKey,
    deviceKey: ev.deviceKey,
    status: ev.status,
    reason: ev.reason,
    time: ev.time,
    lifetime: ev.lifetime,
    ...(ev.sessionId === undefined ? {} : { sessionId: ev.sessionId }),
    seq: ev.seq,
  });
}

const PLACEHOLDER = /\{([^{}]*)\}/g;
const KNOWN = new Set(['pk', 'dk', 'status']);

/** Checks a topic template; throws `PRESENCE_BAD_CONFIG` naming the problem. */
export function checkTopicTemplate(template: string): void {
  const bad = (why: string): never => {
    throw new PresenceError('PRESENCE_BAD_CONFIG', `presence topic template: ${why}`);
  };
  if (template.length === 0) bad('empty');
  if (/[+#]/.test(template) || template.includes('\u0000')) bad('contains +, # or NUL');
  for (const m of template.matchAll(PLACEHOLDER)) {
    if (!KNOWN.has(m[1] ?? ''))
      bad(`unknown placeholder {${m[1] ?? ''}} (known: {pk} {dk} {status})`);
  }
  if (/[{}]/.test(template.replace(PLACEHOLDER, ''))) bad('unbalanced braces');
}

/** The topic of an event. */
export function renderPresenceTopic(template: string, ev: PresenceEvent): string {
  return template.replace(PLACEHOLDER, (_, name: string) =>
    name === 'pk' ? ev.productKey : name === 'dk' ? ev.deviceKey : ev.status,
  );
}

class Sink {
  ok = 0;
  failed = 0;
  retried = 0;

  snapshot(): SinkStats {
    return { ok: this.ok, failed: this.failed, retried: this.retried };
  }
}

/** A failure worth one retry, or not. */
class AttemptError extends CoapEdgeError {
  readonly code = 'PRESENCE_ATTEMPT_FAILED';
  constructor(
    message: string,
    readonly retry: boolean,
  ) {
    super(message);
  }
}

function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((r) => clock.setTimeout(r, ms, true));
}

function withTimeout<T>(clock: Clock, p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: TimerHandle;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = clock.setTimeout(() => reject(new AttemptError(`${what}: timeout`, true)), ms, true);
    }),
  ]).finally(() => clock.clearTimeout(timer));
}

function errorText(err: unknown): string {
  if (err instanceof AttemptError) return err.message;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? code : err.name;
  }
  return 'unknown error';
}

export function presencePublisher(o: PresencePublisherOptions): PresencePublisher {
  const timeoutMs = o.timeoutMs ?? 5_000;
  const retryDelayMs = o.retryDelayMs ?? 500;
  const clock = o.clock ?? systemClock;
  if (!(timeoutMs > 0 && retryDelayMs >= 0)) {
    throw new PresenceError('PRESENCE_BAD_CONFIG', 'presence publisher: bad timeouts');
  }
  const mqtt = new Sink();
  const webhook = new Sink();

  let mqttSend: ((ev: PresenceEvent, body: Buffer) => Promise<void>) | undefined;
  if (o.topicTemplate !== undefined) {
    const template = o.topicTemplate;
    checkTopicTemplate(template);
    const publish = o.mqttPublish;
    if (publish === undefined) {
      throw new PresenceError(
        'PRESENCE_BAD_CONFIG',
        'presence topic template given without an MQTT backend',
      );
    }
    mqttSend = (ev, body) =>
      withTimeout(clock, publish(renderPresenceTopic(template, ev), body), timeoutMs, 'mqtt');
  }

  let pool: Pool | undefined;
  let webhookSend: ((ev: PresenceEvent, body: Buffer) => Promise<void>) | undefined;
  if (o.webhookUrl !== undefined) {
    let url: URL;
    try {
      url = new URL(o.webhookUrl);
    } catch {
      throw new PresenceError('PRESENCE_BAD_CONFIG', 'presence webhook: not a URL');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new PresenceError('PRESENCE_BAD_CONFIG', 'presence webhook: URL must be http(s)');
    }
    // undici (a CommonJS package of ~110 files) is loaded only when a webhook is configured:
    // every pod without one saved its start-up CPU (docs/testing.md, "Suite time")
    const { Pool: PoolClass } = createRequire(import.meta.url)('undici') as typeof Undici;
    const p = new PoolClass(url.origin, {
      connections: o.connections ?? 4,
      connectTimeout: timeoutMs,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      keepAliveTimeout: 30_000,
      pipelining: 1,
    });
    pool = p;
    const path = url.pathname + url.search;
    const extra = o.webhookHeaders ?? {};
    webhookSend = async (ev, body) => {
      const abort = new AbortController();
      const timer = clock.setTimeout(() => abort.abort(), timeoutMs, true);
      try {
        const res = await p.request({
          method: 'POST',
          path,
          headers: {
            ...extra,
            'content-type': 'application/json',
            'x-coap-edge-event': 'presence',
            'x-coap-edge-seq': String(ev.seq),
          },
          body,
          signal: abort.signal,
        });
        await res.body.dump({ limit: 64 * 1024 }).catch(() => {});
        const s = res.statusCode;
        if (s < 200 || s > 299) {
          throw new AttemptError(`webhook: status ${s}`, s === 429 || s >= 500);
        }
      } catch (err: unknown) {
        if (err instanceof AttemptError) throw err;
        throw new AttemptError(
          abort.signal.aborted ? 'webhook: timeout' : `webhook: ${errorText(err)}`,
          true,
        );
      } finally {
        clock.clearTimeout(timer);
      }
    };
  }

  async function attempt(
    sink: Sink,
    send: (ev: PresenceEvent, body: Buffer) => Promise<void>,
    ev: PresenceEvent,
    body: Buffer,
  ): Promise<string | undefined> {
    for (let i = 0; ; i++) {
      try {
        await send(ev, body);
        sink.ok++;
        return undefined;
      } catch (err: unknown) {
        const retry = !(err instanceof AttemptError) || err.retry;
        if (i === 0 && retry) {
          sink.retried++;
          await sleep(clock, retryDelayMs);
          continue;
        }
        sink.failed++;
        return errorText(err);
      }
    }
  }

  return {
    async publish(ev: PresenceEvent): Promise<void> {
      const body = Buffer.from(presenceEventJson(ev));
      const results = await Promise.all([
        mqttSend === undefined ? undefined : attempt(mqtt, mqttSend, ev, body),
        webhookSend === undefined ? undefined : attempt(webhook, webhookSend, ev, body),
      ]);
      const errors = results.filter((r): r is string => r !== undefined);
      if (errors.length > 0) {
        throw new PresenceError('PRESENCE_PUBLISH_FAILED', errors.join('; '));
      }
    },
    stats: () => ({ mqtt: mqtt.snapshot(), webhook: webhook.snapshot() }),
    async close(): Promise<void> {
      if (pool !== undefined) await pool.close();
    },
  };
}
