// The POSIX conformance checks on a Prism mount over shared memory without the kernel's writeback
// cache (--no-writeback-cache: every write() reaches the agent), compared with the local file system.
// The default mount of a volume of one VM has the cache on where the kernel can prune (fuse-shm.test.ts).
import { fuseSkipReason } from '../helpers/agent.js';
import { registerChecks } from './macro.js';
import { mountBackend } from './mount-backend.js';

registerChecks(mountBackend('FUSE over shm --no-writeback-cache', 'shm', ['--no-writeback-cache']), fuseSkipReason());
