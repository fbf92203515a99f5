// Builds the addons with node-gyp: shared memory (native/ivshmem -> build/Release/prism_ivshmem.node),
// FUSE mounts (native/fuse -> prism_fuse.node), mknod(2) (native/files -> prism_files.node) and the
// ivshmem doorbell's descriptors (native/doorbell -> prism_doorbell.node).
// Runs as the package's install script and NEVER fails the install: without the addon Prism still
// works over TCP, so a failed build prints one line saying why shared memory is unavailable.
//   PRISM_SKIP_NATIVE=1  skip the build.   PRISM_NATIVE_VERBOSE=1  show node-gyp's output.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'package.json'));
const strict = process.argv.includes('--strict'); // npm run build:native: fail loudly
const verbose = strict || process.env.PRISM_NATIVE_VERBOSE === '1';

function unavailable(reason) {
  console.error(`prism: shared memory is unavailable (VRPC will use TCP): ${reason}`);
  process.exit(strict ? 1 : 0);
}

if (process.env.PRISM_SKIP_NATIVE === '1' && !strict) unavailable('PRISM_SKIP_NATIVE=1 skipped the native build');
if (process.platform !== 'linux') unavailable(`the ivshmem addon needs Linux (futex, /dev/shm), this is ${process.platform}`);

let gyp;
try {
  gyp = require.resolve('node-gyp/bin/node-gyp.js');
} catch {
  // npm ships its own node-gyp and tells install scripts where it is.
  gyp = process.env.npm_config_node_gyp;
}
if (!gyp || !fs.existsSync(gyp)) unavailable('node-gyp not found (npm install --include=dev, or install node-gyp)');
try {
  require.resolve('node-addon-api');
} catch {
  unavailable('the node-addon-api package is missing (npm install)');
}

// Build against the headers of the running Node when they are installed next to it (offline; a
// distribution's node package puts them in PREFIX/include/node), unless npm already chose a nodedir.
const args = [gyp, 'rebuild'];
const prefix = path.resolve(path.dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) {
  args.push(`--nodedir=${prefix}`);
}

const r = spawnSync(process.execPath, args, {
  cwd: root,
  encoding: 'utf8',
  stdio: verbose ? 'inherit' : 'pipe',
  maxBuffer: 64 << 20,
});
if (r.error) unavailable(`could not run node-gyp: ${r.error.message}`);
if (r.status !== 0) {
  const out = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n').map((l) => l.trim());
  const line =
    out.find((l) => /\berror:|not found|No such file/i.test(l) && !/^gyp /.test(l)) ??
    out.find((l) => /^gyp ERR! stack Error/.test(l))?.replace(/^gyp ERR! stack /, '') ??
    out.find((l) => /^gyp ERR!/.test(l)) ??
    `node-gyp exited with status ${r.status}`;
  unavailable(`the native build failed: ${line.slice(0, 300)} (PRISM_NATIVE_VERBOSE=1 npm run build:native for details)`);
}
const built = path.join(root, 'build', 'Release', 'prism_ivshmem.node');
if (!fs.existsSync(built)) unavailable(`node-gyp succeeded but ${path.relative(root, built)} is missing`);
console.error(`prism: built ${path.relative(root, built)} (shared memory available)`);
if (!fs.existsSync(path.join(root, 'build', 'Release', 'prism_fuse.node'))) console.error('prism: build/Release/prism_fuse.node is missing (FUSE mounts unavailable)');
if (!fs.existsSync(path.join(root, 'build', 'Release', 'prism_files.node'))) console.error('prism: build/Release/prism_files.node is missing (export cannot make FIFOs, devices or sockets)');
if (!fs.existsSync(path.join(root, 'build', 'Release', 'prism_doorbell.node'))) console.error('prism: build/Release/prism_doorbell.node is missing (ivshmem doorbells unavailable: guests are polled)');
