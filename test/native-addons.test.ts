// A missing native addon is a failure, never a skip or a pass: without it there are no shared-memory
// rings and no FUSE mounts, so most of what Prism is goes untested. Tests that need it and are run
// without it may still skip; this one fails the run and says why.
import test from 'ava';
import { doorbellAvailable } from '../src/native/doorbell.js';
import * as files from '../src/native/files.js';
import { nativeAvailable } from '../src/native/ivshmem.js';
import * as fuse from '../src/native/mount.js';

test('the ivshmem addon (mmap, futex) is built and loads', (t) => {
  const a = nativeAvailable();
  t.true(a.ok, a.ok ? '' : a.reason);
});

test('the FUSE addon (mount, umount, /dev/fuse reader) is built and loads', (t) => {
  const a = fuse.available();
  t.true(a.ok, a.ok ? '' : a.reason);
});

test('the files addon (mknod for export) is built and loads', (t) => {
  const a = files.available();
  t.true(a.ok, a.ok ? '' : a.reason);
});

test('the doorbell addon (eventfd, SCM_RIGHTS, VFIO) is built and loads', (t) => {
  const a = doorbellAvailable();
  t.true(a.ok, a.ok ? '' : a.reason);
});
