/** Tar reading and writing shared by the archive transports (oci-archive, docker-archive). */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open as openFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, normalize, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pack as tarPack } from 'tar-stream';
import { readTar } from '../util/tar-reader.js';
import { KbError, UserError } from '../errors.js';
import { pathExists } from '../fs-util.js';
import { makeStagingDir, removeStagingDir, STAGED_TEMP_FLAGS, stageAndRename } from '../util/atomic-write.js';
import { OciLayout } from './oci-layout.js';

const EPOCH = new Date(0);
const MAX_ARCHIVE_ENTRIES = 100_000;

/** Write `file` through a temporary name beside it, renamed over it only when complete. */
export const stageFile = stageAndRename;

export type TarItem = { name: string; size: number; open: () => Readable };

/** A tar of `items` in order, parent directories added, fixed times and modes. */
export async function writeTar(items: TarItem[], out: string): Promise<void> {
  const tar = tarPack();
  const done = pipeline(tar, createWriteStream(out, { flags: STAGED_TEMP_FLAGS }));
  const dirs = new Set<string>();
  try {
    for (const it of items) {
      const parts = it.name.split('/');
      for (let i = 1; i < parts.length; i++) {
        const d = parts.slice(0, i).join('/');
        if (dirs.has(d)) continue;
        dirs.add(d);
        await new Promise<void>((res, rej) => tar.entry({ name: `${d}/`, type: 'directory', mode: 0o755, mtime: EPOCH }, (e) => (e ? rej(e) : res())));
      }
      await new Promise<void>((res, rej) => {
        const sink = tar.entry({ name: it.name, type: 'file', mode: 0o644, size: it.size, mtime: EPOCH }, (e) => (e ? rej(e) : res()));
        pipeline(it.open(), sink).catch(rej);
      });
    }
    tar.finalize();
  } catch (e) {
    tar.destroy(e as Error);
    await done.catch(() => undefined);
    throw e;
  }
  await done;
}

/** Unpack the regular files of a tar into `dir`; names that would escape it are refused. */
export async function extractFiles(file: string, dir: string, what: string): Promise<void> {
  const root = resolve(dir);
  let entries = 0;
  try {
    for await (const { header, data, chunks } of readTar(createReadStream(file), what)) {
      if (++entries > MAX_ARCHIVE_ENTRIES) throw new UserError(`${what}: more than ${MAX_ARCHIVE_ENTRIES} entries`);
      const name = normalize(header.name).replace(/^(\.\/)+/, '');
      const dest = resolve(root, name);
      if (header.name.startsWith('/') || (dest !== root && !dest.startsWith(root + sep))) throw new UserError(`${what}: entry "${header.name}" points outside the archive`);
      if (header.type !== 'file' && header.type !== 'contiguous-file') continue;
      await mkdir(dirname(dest), { recursive: true });
      if (data) await writeFile(dest, data);
      else await pipeline(Readable.from(chunks), createWriteStream(dest));
    }
  } catch (e) {
    if (e instanceof KbError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new KbError('NOT_FOUND', `${what}: no such file`);
    throw new UserError(`${what}: not a readable tar archive (${(e as Error).message})`);
  }
}

export async function isGzipFile(path: string): Promise<boolean> {
  const fh = await openFile(path, 'r');
  try {
    const buf = Buffer.alloc(2);
    await fh.read(buf, 0, 2, 0);
    return buf[0] === 0x1f && buf[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

/** An unpacked archive in a temporary directory: `raw/` holds its files; `close` removes it all. */
export async function unpackArchive(file: string, what: string): Promise<{ dir: string; raw: string; isOciLayout: boolean; close(): Promise<void> }> {
  const dir = await makeStagingDir(tmpdir(), 'src');
  const close = (): Promise<void> => removeStagingDir(dir);
  try {
    const raw = join(dir, 'raw');
    await mkdir(raw);
    await extractFiles(file, raw, what);
    const isOciLayout = (await pathExists(join(raw, 'oci-layout'), { follow: true })) && (await pathExists(join(raw, 'index.json'), { follow: true }));
    return { dir, raw, isOciLayout, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/**
 * A temporary OCI layout beside `file` for an archive destination: the image is assembled there
 * and `write` turns it into the archive (temp name, then rename); the layout is removed either way.
 */
export async function stagingLayout(file: string, display: string): Promise<{ layout: OciLayout; remove(): Promise<void> }> {
  const dir = dirname(resolve(file));
  if (!(await pathExists(dir, { follow: true }))) throw new UserError(`${display}: directory ${dir} does not exist`);
  // A staging folder (pid-named): a killed process's leftover is swept by the next one.
  const tmp = await makeStagingDir(dir, 'copy');
  return { layout: await OciLayout.open(tmp, { create: true, durable: false }), remove: () => removeStagingDir(tmp) };
}
