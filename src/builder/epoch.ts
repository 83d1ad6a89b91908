import { UserError } from '../errors.js';

/** `SOURCE_DATE_EPOCH` as reproducible-builds.org defines it: a decimal integer of seconds. */
export function sourceDateEpochFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.SOURCE_DATE_EPOCH;
  if (v === undefined || v === '') return 0;
  if (!/^\d+$/.test(v)) throw new UserError(`SOURCE_DATE_EPOCH: "${v}" is not a number of seconds since 1970`, 'e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)');
  return Number(v);
}
