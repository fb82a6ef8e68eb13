/**
 * pino JSON logger, plus a per-event rate limiter so floods (bad handshakes, malformed
 * datagrams) produce a bounded number of lines and a count of what was suppressed.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { recordingSpan } from './trace.js';

/**
 * trace_id and span_id of the active span in every line logged while one records. pino
 * merges the line's fields into the object returned here, so it must be a new one.
 */
function traceFields(): Record<string, string> {
  const span = recordingSpan();
  if (span === undefined) return {};
  const c = span.spanContext();
  return { trace_id: c.traceId, span_id: c.spanId };
}

export type { Logger };

export function createLogger(level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'coap-edge' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin: traceFields,
      redact: {
        paths: [
          'secret',
          'psk',
          'deviceSecret',
          'productSecret',
          'password',
          '*.secret',
          '*.psk',
          '*.deviceSecret',
          '*.productSecret',
          '*.password',
          'registryToken',
        ],
        censor: '<redacted>',
      },
    },
    destination as pino.DestinationStream | undefined,
  );
}

/**
 * Allows `burst` lines per `windowMs` for each event name; further lines in the window are
 * counted and reported once, in the first line of the next window.
 */
export class LogLimiter {
  private readonly windows = new Map<
    string,
    { start: number; count: number; suppressed: number }
  >();

  constructor(
    private readonly burst = 10,
    private readonly windowMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Returns undefined when the line must be dropped, else the count suppressed before it. */
  admit(event: string): number | undefined {
    const t = this.now();
    let w = this.windows.get(event);
    if (w === undefined || t - w.start >= this.windowMs) {
      const suppressed = w?.suppressed ?? 0;
      w = { start: t, count: 1, suppressed: 0 };
      this.windows.set(event, w);
      return suppressed;
    }
    if (w.count < this.burst) {
      w.count++;
      return 0;
    }
    w.suppressed++;
    return undefined;
  }
}
