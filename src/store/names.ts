import { PrismError } from '../errors.js';

export const VOLUME_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export function checkVolumeName(name: string): string {
  if (!VOLUME_NAME.test(name)) {
    throw new PrismError('EINVAL', `invalid volume name ${JSON.stringify(name)}: use 1-64 of a-z 0-9 . _ - starting with a letter or digit`);
  }
  return name;
}

/**
 * Hidden volumes (pins for readers beside a host, staged imports) start with this: no name a user
 * gives can, so they never clash, and listings leave them out.
 */
export const HIDDEN = '~';

export function isHidden(name: string): boolean {
  return name.startsWith(HIDDEN);
}
