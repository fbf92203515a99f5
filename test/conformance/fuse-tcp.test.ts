// The POSIX conformance checks on a Prism mount over TCP, compared with the local file system.
import { fuseSkipReason } from '../helpers/agent.js';
import { registerChecks } from './macro.js';
import { mountBackend } from './mount-backend.js';

registerChecks(mountBackend('FUSE over TCP', 'tcp'), fuseSkipReason());
