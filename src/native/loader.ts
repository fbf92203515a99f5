// The one loader of the project's addons (build/Release/*.node, built by `npm run build:native`).
// Loading never throws: a wrapper asks status() and falls back (TCP instead of shared memory), or
// calls need(), whose error is the same for every addon: ENOSYS, naming the file and how to build it.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PrismError } from '../errors.js';

export type AddonStatus = { ok: true } | { ok: false; reason: string };

export interface AddonLoader<T> {
  /** The addon, or undefined when it cannot load here (loaded once, then cached). */
  load(): T | undefined;
  /** The addon, or PrismError ENOSYS saying why not. */
  need(): T;
  /** Whether the addon loads here, and if not, why. */
  status(): AddonStatus;
}

/** The package root: this file runs as dist/src/native/loader.js (or src/native/loader.ts under a TS loader). */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'binding.gyp')) || fs.existsSync(path.join(dir, 'package.json'))) break;
    dir = path.dirname(dir);
  }
  return dir;
}

/**
 * A lazy loader of build/Release/<name>.node, or of the file $<envVar> names (tests, packaging).
 * `purpose` says what is missing without it, as in "shared memory is unavailable: ...".
 */
export function addonLoader<T>(name: string, envVar: string, purpose: string): AddonLoader<T> {
  let addon: T | undefined;
  let failure: string | undefined;
  const load = (): T | undefined => {
    if (addon || failure) return addon;
    const fromEnv = process.env[envVar];
    const file = fromEnv ? path.resolve(fromEnv) : path.join(packageRoot(), 'build', 'Release', `${name}.node`);
    if (process.platform !== 'linux') {
      failure = `the ${name} addon needs Linux (this is ${process.platform})`;
    } else if (!fs.existsSync(file)) {
      failure = `the ${name} addon is not built (${file} is missing; run npm run build:native)`;
    } else {
      try {
        addon = createRequire(import.meta.url)(file) as T;
      } catch (e) {
        failure = `the ${name} addon failed to load: ${(e as Error).message}`;
      }
    }
    return addon;
  };
  return {
    load,
    need() {
      const a = load();
      if (!a) throw new PrismError('ENOSYS', `${purpose} is unavailable: ${failure ?? 'unknown'}`);
      return a;
    },
    status() {
      return load() ? { ok: true } : { ok: false, reason: failure ?? 'unknown' };
    },
  };
}
