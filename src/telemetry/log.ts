/**
 * pino logger (JSON lines, or readable lines for a person at a terminal), plus a per-event
 * rate limiter so floods (bad handshakes, malformed datagrams) produce a bounded number of
 * lines and a count of what was suppressed.
 *
 * The readable format is a small formatter of our own over pino's JSON output rather than
 * pino-pretty: a line of time, level, message and `key=value` fields is all a terminal needs,
 * and it keeps the install free of pino-pretty's dependencies. The same redaction applies
 * (it happens before the line is formatted).
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

/** The `logFormat` setting: auto is pretty on a terminal and JSON otherwise. */
export type LogFormat = 'auto' | 'json' | 'pretty';

export function resolveLogFormat(format: LogFormat, isTTY: boolean): 'json' | 'pretty' {
  return format === 'auto' ? (isTTY ? 'pretty' : 'json') : format;
}

const LEVEL_COLORS: Readonly<Record<string, string>> = {
  fatal: '\x1b[35m',
  error: '\x1b[31m',
  warn: '\x1b[33m',
  info: '\x1b[32m',
  debug: '\x1b[36m',
  trace: '\x1b[90m',
};
/** Fields every line has, shown in the line's head rather than as fields. */
const HEAD_FIELDS = new Set(['time', 'level', 'msg', 'service']);

function fieldValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'object' && v !== null) {
    // errors as pino serializes them: the message is what a reader wants on the line
    const e = v as { type?: unknown; message?: unknown };
    if (typeof e.message === 'string' && typeof e.type === 'string') {
      return JSON.stringify(`${e.type}: ${e.message}`);
    }
  }
  return JSON.stringify(v) ?? String(v);
}

/**
 * One JSON log line as a readable line: `HH:MM:SS.mmm LEVEL message key=value ...`, the
 * level coloured when `color`. Text that is not a JSON object passes through unchanged.
 */
export function prettyLine(json: string, color: boolean): string {
  let o: unknown;
  try {
    o = JSON.parse(json);
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return `${json.trimEnd()}\n`;
  const rec = o as Record<string, unknown>;
  const time = typeof rec.time === 'string' ? rec.time.slice(11, 23) : '';
  const level = typeof rec.level === 'string' ? rec.level : 'info';
  const label = level.toUpperCase().padEnd(5);
  const head = color ? `${LEVEL_COLORS[level] ?? ''}${label}\x1b[0m` : label;
  const fields = Object.entries(rec)
    .filter(([k]) => !HEAD_FIELDS.has(k))
    .map(([k, v]) => `${k}=${fieldValue(v)}`);
  const msg = typeof rec.msg === 'string' ? rec.msg : '';
  return `${[time, head, msg, ...fields].filter((x) => x !== '').join(' ')}\n`;
}

/** A pino destination writing readable lines to `out`. */
function prettyDestination(out: NodeJS.WritableStream, color: boolean): pino.DestinationStream {
  return { write: (line: string) => void out.write(prettyLine(line, color)) };
}

export function createLogger(
  level: LevelWithSilent,
  destination?: NodeJS.WritableStream,
  format: 'json' | 'pretty' = 'json',
): Logger {
  const out: pino.DestinationStream | undefined =
    format === 'pretty'
      ? prettyDestination(
          destination ?? process.stdout,
          destination === undefined && process.stdout.isTTY && process.env.NO_COLOR === undefined,
        )
      : destination;
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
    out,
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
