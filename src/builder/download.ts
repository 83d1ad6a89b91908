import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { downloadToFile } from '../registry/download.js';
import { errorMessage, KbError, UserError } from '../errors.js';
import { DigestMismatchError, VerifyingStream } from '../oci/digest.js';
import { STAGED_TEMP_FLAGS, stageAndRename } from '../util/atomic-write.js';
import { decompressFile } from '../layer/codec.js';
import { readTar } from '../util/tar-reader.js';

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
  try {
    await stageAndRename(final, (tmp) => downloadToFile({ url, dest: tmp, what, staged: true, through: () => new VerifyingStream(`sha256:${sha256}`, undefined, `${what}: ${url}`) }));
  } catch (e) {
    if (e instanceof DigestMismatchError) {
      throw new KbError('DIGEST_MISMATCH', `${what}: ${url}: content digest ${e.actual} does not match the expected sha256:${sha256}`, {
        hint: 'update sha256 in bundle.yaml only if you trust the new file',
        cause: e,
      });
    }
    if (e instanceof KbError) throw e;
    throw new KbError('TRANSIENT', `${what}: download of ${url} failed: ${errorMessage(e)}`, { cause: e });
  }
  return final;
}

/** Member names a "not found" error lists. */
const LISTED_MEMBERS = 8;

/**
 * One regular file out of a pinned tar or tar.gz download (told apart by the gzip magic, not the
 * name), cached next to the archive as `<archive sha256>.member-<sha256 of the name>`. The archive
 * was verified by its pin, so its member is too. Member names match with or without a leading
 * `./`; a symlink, a directory, or a name the archive lacks is an error naming what is there.
 */
export async function extractPinnedMember(archive: string, archiveSha256: string, member: string, what: string): Promise<string> {
  const want = member.replace(/^(\.\/)+/, '').replace(/^\/+/, '');
  const final = join(downloadCacheDir(), `${archiveSha256}.member-${createHash('sha256').update(want).digest('hex').slice(0, 32)}`);
  try {
    if ((await stat(final)).isFile()) return final;
  } catch {
    /* not extracted yet */
  }
  const head = Buffer.alloc(2);
  const fh = await open(archive, 'r');
  try {
    await fh.read(head, 0, 2, 0);
  } finally {
    await fh.close();
  }
  const gzipped = head[0] === 0x1f && head[1] === 0x8b;
  const label = 'the download';
  const seen: string[] = [];
  try {
    for await (const { header, chunks } of readTar(decompressFile(archive, gzipped ? 'gzip' : 'none', label), label)) {
      const name = header.name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
      if (name !== want) {
        if (header.type === 'file' && seen.length <= LISTED_MEMBERS) seen.push(name);
        continue;
      }
      if (header.type !== 'file' && header.type !== 'contiguous-file') {
        const target = header.linkname ? ` to ${header.linkname}` : '';
        throw new UserError(
          `${what}: extract: "${member}" is a ${header.type}${target} in the archive, not a regular file`,
          target ? `name the file it points to: extract: ${header.linkname}` : 'name a regular file of the archive',
        );
      }
      await stageAndRename(final, (tmp) => pipeline(Readable.from(chunks), createWriteStream(tmp, { flags: STAGED_TEMP_FLAGS })));
      return final; // leaving the loop stops reading the archive
    }
  } catch (e) {
    if (e instanceof UserError || (e instanceof KbError && e.code !== 'TRUNCATED' && e.code !== 'INVALID_INPUT')) throw e;
    throw new KbError(e instanceof KbError ? e.code : 'INVALID_INPUT', `${what}: extract: cannot read the download as a ${gzipped ? 'tar.gz' : 'tar'} archive: ${errorMessage(e)}`, {
      hint: 'extract: takes tar and tar.gz downloads',
      cause: e,
    });
  }
  throw new UserError(
    `${what}: extract: the archive has no "${member}"`,
    seen.length ? `its files include ${seen.slice(0, LISTED_MEMBERS).join(', ')}${seen.length > LISTED_MEMBERS ? ', …' : ''}` : 'the archive holds no regular files',
  );
}
