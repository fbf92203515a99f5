// Structured logs (pino), quiet by default: set PRISM_LOG=info or debug to see more.
import { pino } from 'pino';

export const log = pino({ level: process.env.PRISM_LOG ?? 'warn', base: { pid: process.pid } }, pino.destination(2));

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
