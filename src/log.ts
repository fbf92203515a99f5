// Structured logs (pino), quiet by default: set PRISM_LOG=info or debug to see more.
import { pino } from 'pino';

export const log = pino({ level: process.env.PRISM_LOG ?? 'warn', base: { pid: process.pid } }, pino.destination(2));
