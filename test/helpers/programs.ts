// Tests that run system programs skip, with the reason, where those programs are not installed
// (scripts/install-system-deps.sh installs them; `npm test` on a fresh machine must still pass).
import { spawnSync } from 'node:child_process';

/** Why the programs cannot be run here ("missing programs: ..."), or undefined when all are there. */
export function missingProgramsReason(programs: string[]): string | undefined {
  const missing = programs.filter((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0);
  return missing.length ? `missing programs: ${missing.join(', ')} (scripts/install-system-deps.sh installs them)` : undefined;
}
