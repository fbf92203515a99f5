import { PrismError } from '../errors.js';

export const VOLUME_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export function checkVolumeName(name: string): string {
  if (!VOLUME_NAME.test(name)) {
    throw new PrismError('EINVAL', `invalid volume name ${JSON.stringify(name)}: use 1-64 of a-z 0-9 . _ - starting with a letter or digit`);
  }
  return name;
}
