// Runs ava with the TAP reporter and ends with the one-line summary CI looks for:
// "N passed, N failed". Skipped tests are counted on their own line, never as passed.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const avaCli = path.join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs');
const child = spawn(process.execPath, [avaCli, '--tap', ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'inherit'] });

let passed = 0, failed = 0, skipped = 0, todo = 0, buffer = '';
child.stdout.setEncoding('utf8');
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  buffer += chunk;
  let nl;
  while ((nl = buffer.indexOf('\n')) >= 0) {
    const line = buffer.slice(0, nl);
    buffer = buffer.slice(nl + 1);
    if (/^ok \d+/.test(line)) {
      if (/# SKIP/i.test(line)) skipped++;
      else if (/# TODO/i.test(line)) todo++;
      else passed++;
    } else if (/^not ok \d+/.test(line)) {
      if (/# TODO/i.test(line)) todo++;
      else failed++;
    }
  }
});
child.on('close', (code) => {
  if (code !== 0 && failed === 0) failed = 1; // ava itself failed (crash, uncaught error, timeout)
  if (skipped || todo) console.log(`${skipped} skipped, ${todo} todo`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
});
