// The POSIX conformance checks on a Prism mount over shared memory with the kernel's writeback cache
// (--writeback-cache: writes land in the page cache and reach the agent merged), compared with the
// local file system: size after truncate and extend, mtime after write, O_APPEND, O_WRONLY, all of it.
import { fuseSkipReason } from '../helpers/agent.js';
import { registerChecks } from './macro.js';
import { mountBackend } from './mount-backend.js';

registerChecks(mountBackend('FUSE over shm --writeback-cache', 'shm', ['--writeback-cache']), fuseSkipReason());
