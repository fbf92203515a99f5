// The memfs floor of the fs benchmark: the agent's in-memory FileSystem behind the same FUSE session
// the agent uses, with no RPC behind it. Run as its own process (`node memfs-serve.js MOUNTPOINT`) so
// the benchmark's synchronous syscalls never share an event loop with the server answering them.
// Prints "ready" once mounted; exits when the mount goes away.
import { MemFs } from '../src/guest-agent/fuse/memfs.js';
import { mountAndServe } from '../src/guest-agent/fuse/session.js';

const mountpoint = process.argv[2];
if (!mountpoint) {
  process.stderr.write('usage: memfs-serve MOUNTPOINT [CACHE_SECONDS]\n');
  process.exit(2);
}
// The agent's kernel cache times with a metadata table (10 s), so the floor caches as Prism does.
const cacheSec = Number(process.argv[3] ?? 10);
const { done } = mountAndServe(mountpoint, new MemFs(), { fsname: 'memfs', entrySec: cacheSec, attrSec: cacheSec });
process.stdout.write('ready\n');
done.then(() => process.exit(0), (e: unknown) => {
  process.stderr.write(`memfs-serve: ${(e as Error).message}\n`);
  process.exit(1);
});
