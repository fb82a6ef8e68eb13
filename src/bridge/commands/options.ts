/**
 * Small helpers the router uses to put a queued command on a response (docs/protocol.md) and to read a
 * request's `ttd` (time till disconnect, as Eclipse Hono names it).
 */
import type { QueuedCommand } from '../types.js';

/**
 * What the response carries for a queued command: the topic (the CoAP adapter writes option
 * 2100 = `/topic{topic}`) and the payload for option 2102, only when it fits in `maxInline`
 * bytes (settings `maxInlineCommand`); otherwise the device fetches it with
 * `GET /topic{topic}`.
 */
export function commandOptions(
  cmd: QueuedCommand,
  maxInline: number,
): { topic: string; payload: Buffer | undefined } {
  return { topic: cmd.topic, payload: cmd.payload.length <= maxInline ? cmd.payload : undefined };
}

const TTD_KEYS: readonly string[] = ['ttd=', 'hono-ttd='];
const SECONDS = /^[0-9]{1,10}$/;

/**
 * The `ttd=<seconds>` (or Hono's `hono-ttd=<seconds>`) of a request's Uri-Query arguments,
 * capped at `maxTtd` (setting `maxTtdSeconds`): how long the request may be held open for a command.
 * Undefined when there is none, or when the first one is malformed (not a decimal integer
 * >= 0: signs, fractions, empty, white space). Only the first ttd argument counts.
 */
export function parseTtd(query: readonly string[], maxTtd: number): number | undefined {
  for (const arg of query) {
    const key = TTD_KEYS.find((k) => arg.startsWith(k));
    if (key === undefined) continue;
    const value = arg.slice(key.length);
    if (!SECONDS.test(value)) return undefined;
    return Math.min(Number(value), Math.max(0, maxTtd));
  }
  return undefined;
}
