import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { undiciFull } from '../registry/undici-lazy.js';
import { UserError } from '../errors.js';
import { VerifyingStream } from '../oci/digest.js';

export function downloadCacheDir(): string {
  return process.env.KBUNDLE_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kbundle', 'downloads');
}

/**
 * Fetch a pinned download into the content-addressed cache (once), verifying its sha256 while
 * streaming; a mismatch fails the build and leaves nothing in the cache.
 */
export async function fetchPinned(url: string, sha256: string, what: string): Promise<string> {
  const dir = downloadCacheDir();
  const final = join(dir, sha256);
  try {
    if ((await stat(final)).isFile()) return final;
  } catch {
    /* not cached yet */
  }
  await mkdir(dir, { recursive: true });
  let res;
  try {
    res = await (await undiciFull()).fetch(url, { redirect: 'follow' });
  } catch (e) {
    throw new UserError(`${what}: download of ${url} failed: ${(e as Error).cause ? String((e as Error & { cause: Error }).cause.message) : (e as Error).message}`);
  }
  if (!res.ok || !res.body) throw new UserError(`${what}: download of ${url} failed: HTTP ${res.status}`);
  const tmp = `${final}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    await pipeline(Readable.fromWeb(res.body as never), new VerifyingStream(`sha256:${sha256}`, undefined, `${what}: ${url}`), createWriteStream(tmp));
    await rename(tmp, final);
  } catch (e) {
    await rm(tmp, { force: true });
    if (e instanceof UserError) throw new UserError(e.message, 'update sha256 in bundle.yaml only if you trust the new file');
    throw e;
  }
  return final;
}
