// The POSIX conformance checks on a Prism mount over shared memory without the metadata table
// (--no-meta: every LOOKUP and GETATTR is an RPC), compared with the local file system.
import { fuseSkipReason } from '../helpers/agent.js';
import { registerChecks } from './macro.js';
import { mountBackend } from './mount-backend.js';

registerChecks(mountBackend('FUSE over shm --no-meta', 'shm', ['--no-meta']), fuseSkipReason());
