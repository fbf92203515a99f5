// A conformance backend that is a real Prism mount (host and agent processes), made at the first
// check and unmounted after the last one of the test file.
import test from 'ava';
import { mountedVolume, type MountedVolume, type TransportName } from '../helpers/mounted-volume.js';
import { runInDir, type Backend } from './macro.js';

export function mountBackend(name: string, transport: TransportName, agentArgs: string[] = []): Backend & { mount(): Promise<MountedVolume> } {
  const teardowns: Array<() => unknown> = [];
  let mounted: Promise<MountedVolume> | undefined;
  const mount = () => (mounted ??= mountedVolume({ teardown: (fn) => { teardowns.push(fn); } }, transport, { agentArgs }));
  test.after.always(async () => {
    for (const fn of teardowns.reverse()) await fn();
  });
  return { name, kernel: true, mount, run: async (check) => runInDir((await mount()).mp, check) };
}
