/**
 * Where the trusted root for keyless verification comes from when none is named: the one
 * `kbundle trust update` last fetched through TUF (kept in the trust cache), else the public-good
 * root compiled into kbundle. Nothing is fetched here.
 *
 * Trust cache (`kbundle trust update` writes it, verification reads it):
 *   $KBUNDLE_TRUST_CACHE, else <root>/usr/local/var/lib/kbundle/trust
 *     trusted_root.json          the last trusted root that passed TUF verification
 *     state.json                 where it came from (mirror, TUF versions, time)
 *     tuf/<mirror>/…             the TUF client's metadata (root, timestamp, snapshot, targets)
 * /usr/local survives upgrades and resets on Kairos nodes, like the node policy under usr/local/etc.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { KbError } from '../errors.js';
import { parseTrustedRoot, type TrustedRoot } from '../verify/trust.js';
import { PUBLIC_GOOD_TRUSTED_ROOT } from './public-good.js';

export const TRUST_CACHE_ENV = 'KBUNDLE_TRUST_CACHE';
/** Relative to the node root. */
export const TRUST_CACHE_PATH = 'usr/local/var/lib/kbundle/trust';
export const CACHED_ROOT_FILE = 'trusted_root.json';
export const STATE_FILE = 'state.json';

/** The trust cache directory: explicit, else $KBUNDLE_TRUST_CACHE, else under the node root. */
export function trustCacheDir(opts: { cacheDir?: string; root?: string; env?: NodeJS.ProcessEnv } = {}): string {
  if (opts.cacheDir) return resolve(opts.cacheDir);
  const fromEnv = (opts.env ?? process.env)[TRUST_CACHE_ENV];
  if (fromEnv) return resolve(fromEnv);
  return resolve(opts.root ?? '/', TRUST_CACHE_PATH);
}

export interface DefaultTrustedRoot {
  root: TrustedRoot;
  /** `embedded` (public-good, compiled in) or the cached file's path. */
  source: string;
}

export function embeddedTrustedRoot(): TrustedRoot {
  return parseTrustedRoot(JSON.stringify(PUBLIC_GOOD_TRUSTED_ROOT), 'the embedded public-good trusted root');
}

/**
 * The trusted root to use when the user named none. A cached root that cannot be read as one is
 * an error, not a silent fall-back: the node's operator put it there (and `trust update` only
 * writes verified ones), so a damaged file must be looked at.
 */
export async function defaultTrustedRoot(opts: { cacheDir?: string; root?: string; env?: NodeJS.ProcessEnv } = {}): Promise<DefaultTrustedRoot> {
  const file = join(trustCacheDir(opts), CACHED_ROOT_FILE);
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code;
    if (errno !== 'ENOENT' && errno !== 'ENOTDIR') {
      throw new KbError('INVALID_INPUT', `${file}: cannot read the cached trusted root (${errno ?? (e as Error).message})`, { cause: e });
    }
  }
  if (text === undefined) return { root: embeddedTrustedRoot(), source: 'embedded' };
  try {
    return { root: parseTrustedRoot(text, file), source: file };
  } catch (e) {
    throw new KbError('INVALID_INPUT', (e as Error).message, { hint: `run kbundle trust update, or remove ${file} to use the embedded public-good root`, cause: e });
  }
}
