/**
 * Typed errors of the command queue and intake. Callers switch on `code` (stable), never on
 * the message; messages name no keys, payloads or credentials.
 *
 * How the router answers them: a request that only wanted to see whether a command waits
 * (any uplink, `ttd`) is answered without one; the uplink itself is unaffected. A
 * `GET /topic{commandTopic}` (fetch) gets 5.03 with Max-Age, so the device asks again; a
 * `_reply` whose acknowledgement failed is still published to the platform (the command stays
 * queued and is delivered again: at-least-once). Every code is listed in docs/errors.md.
 */
import { CoapEdgeError, type CoapReaction } from '../../errors/index.js';

export type CommandErrorCode =
  /** The store cannot be reached now (Redis down, slow beyond its command timeout, closed). */
  | 'COMMANDS_UNAVAILABLE'
  /** `waitFor`: the bound on concurrent waiters is reached; answer without waiting. */
  | 'COMMANDS_TOO_MANY_WAITERS'
  /** A command topic filter is not a valid MQTT filter after `{pk}`/`{dk}` became `+`. */
  | 'COMMANDS_BAD_FILTER';

const messages: { readonly [C in CommandErrorCode]: string } = {
  COMMANDS_UNAVAILABLE: 'command store unavailable',
  COMMANDS_TOO_MANY_WAITERS: 'too many requests waiting for commands',
  COMMANDS_BAD_FILTER: 'bad command topic filter',
};

/** A command fetch that failed with `COMMANDS_UNAVAILABLE`: 5.03 with Max-Age, ask again. */
const UNAVAILABLE: CoapReaction = { code: '5.03', maxAge: 'configured' };

export class CommandError extends CoapEdgeError {
  readonly code: CommandErrorCode;

  constructor(code: CommandErrorCode, detail?: string, cause?: unknown) {
    super(
      detail === undefined ? messages[code] : `${messages[code]}: ${detail}`,
      cause === undefined ? undefined : { cause },
    );
    this.name = 'CommandError';
    this.code = code;
  }

  override get coap(): CoapReaction | undefined {
    return this.code === 'COMMANDS_UNAVAILABLE' ? UNAVAILABLE : undefined;
  }
}

export function isCommandError(e: unknown): e is CommandError {
  return e instanceof CommandError;
}
