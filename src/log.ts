// Structured logs (pino), quiet by default: set PRISM_LOG=info or debug to see more. JSON lines on
// stderr, for a log collector; on a terminal, one human line each (PRISM_LOG_FORMAT=json or human
// chooses).
import { pino } from 'pino';

const LEVELS: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** One pino JSON line as a person reads it: `12:34:56.789 WARN message key=value ...`. */
export function humanLine(json: string): string {
  let o: Record<string, unknown>;
  try { o = JSON.parse(json) as Record<string, unknown>; } catch { return json.endsWith('\n') ? json : `${json}\n`; }
  const { level, time, msg, pid: _pid, hostname: _host, err, ...rest } = o;
  const when = typeof time === 'number' ? new Date(time).toISOString().slice(11, 23) : '';
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`);
  const e = err as { message?: string } | undefined;
  if (e?.message) fields.push(`err=${JSON.stringify(e.message)}`);
  return `${when} ${LEVELS[level as number] ?? String(level)} ${String(msg ?? '')}${fields.length ? ` ${fields.join(' ')}` : ''}\n`;
}

function destination(): pino.DestinationStream {
  const format = process.env.PRISM_LOG_FORMAT ?? (process.stderr.isTTY ? 'human' : 'json');
  if (format !== 'human') return pino.destination(2);
  return { write: (line: string) => { process.stderr.write(humanLine(line)); } };
}

export const log = pino({ level: process.env.PRISM_LOG ?? 'warn', base: { pid: process.pid } }, destination());

/** Logs one kind of event at most once per interval, saying how many were left out: a hostile peer must not flood the log. */
export class RateLimitedLog {
  private last = 0;
  private dropped = 0;
  constructor(private readonly everyMs = 1000) {}
  warn(fields: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    if (now - this.last < this.everyMs) { this.dropped++; return; }
    log.warn(this.dropped ? { ...fields, alsoSince: this.dropped } : fields, msg);
    this.last = now;
    this.dropped = 0;
  }
}
