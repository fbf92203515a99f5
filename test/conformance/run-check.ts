// Runs one conformance check in a directory and prints what it gave as JSON. The macro starts it as
// nobody (uid and gid 65534) for the unprivileged checks: a process cannot take that identity back.
// Usage: node run-check.js DIR TITLE
import { NodeFs } from './node-fs.js';
import { checkNamed } from './posix-checks.js';
import { outcome, UMASK } from './posix-fs.js';

const [dir, title] = process.argv.slice(2);
if (!dir || !title) throw new Error('usage: run-check.js DIR TITLE');
process.umask(UMASK);
process.stdout.write(JSON.stringify(outcome(() => checkNamed(title).run(new NodeFs(dir)))));
