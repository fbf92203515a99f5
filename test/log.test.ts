// Log lines for a person at a terminal: pino's JSON turned into one readable line.
import test from 'ava';
import { humanLine } from '../src/log.js';

test('a JSON log line becomes time, level, message and its fields', (t) => {
  const at = Date.UTC(2026, 11, 2, 12, 34, 56, 789);
  const line = humanLine(JSON.stringify({ level: 40, time: at, pid: 7, hostname: 'h', msg: 'no ivshmem doorbell', vm: 'web', reason: 'addon missing', n: 3 }));
  t.is(line, '12:34:56.789 WARN no ivshmem doorbell vm=web reason="addon missing" n=3\n');
  t.is(humanLine(JSON.stringify({ level: 50, time: at, msg: 'commit failed', err: { message: 'ENOSPC: disk full', stack: 'at x' } })),
    '12:34:56.789 ERROR commit failed err="ENOSPC: disk full"\n', 'an error by its message, without the stack');
  t.is(humanLine('not json'), 'not json\n', 'anything else passes through');
});
