import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';
import { UserError } from '../errors.js';
import { parseDigest } from '../oci/digest.js';
import { layerCompression } from '../oci/mediatypes.js';
import { ManifestSchema, parseJson, type Descriptor } from '../oci/types.js';
import { fetchBytes } from './target.js';
import type { OciLayout } from './oci-layout.js';
import { stageAndRename } from '../util/atomic-write.js';

const EPOCH = new Date(0);

const stageFile = stageAndRename;

type Item = { name: string; size: number; open: () => Readable };

async function writeTar(items: Item[], out: string): Promise<void> {
  const tar = tarPack();
  const done = pipeline(tar, createWriteStream(out));
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

/** Tar a whole OCI layout directory (oci-archive transport), sorted, fixed times, staged then renamed. */
export async function writeOciArchive(layout: OciLayout, file: string): Promise<void> {
  const items: Item[] = [];
  const walk = async (rel: string): Promise<void> => {
    const abs = join(layout.dir, rel);
    for (const name of (await readdir(abs)).sort()) {
      if (name.includes('.tmp-') || name.startsWith('.build-')) continue;
      const r = rel ? `${rel}/${name}` : name;
      const st = await stat(join(layout.dir, r));
      if (st.isDirectory()) await walk(r);
      else items.push({ name: r, size: st.size, open: () => createReadStream(join(layout.dir, r)) });
    }
  };
  await walk('');
  await stageFile(file, (tmp) => writeTar(items, tmp));
}

/**
 * `docker save`-style archive (docker-archive transport, what Kairos `local_file: true` loads):
 * manifest.json, the config as `<hex>.json`, each layer uncompressed as `<diffid-hex>.tar`.
 */
export async function writeDockerArchive(layout: OciLayout, manifestDesc: Descriptor, file: string, repoTag: string | undefined): Promise<void> {
  const manifest = parseJson(ManifestSchema, await fetchBytes(layout, manifestDesc), `${layout.name}@${manifestDesc.digest}`);
  const configBytes = await fetchBytes(layout, manifest.config);
  const config = JSON.parse(configBytes.toString('utf8')) as { rootfs: { diff_ids: string[] } };
  const items: Item[] = [];
  const configName = `${parseDigest(manifest.config.digest).hex}.json`;
  const layerNames: string[] = [];
  for (const [i, layer] of manifest.layers.entries()) {
    const diffId = config.rootfs.diff_ids[i];
    if (!diffId) throw new UserError(`${layout.name}@${manifestDesc.digest}: config has no diff_id for layer ${i}`);
    const name = `${parseDigest(diffId).hex}.tar`;
    layerNames.push(name);
    const size = await uncompressedSize(layout, layer);
    items.push({
      name,
      size,
      open: () =>
        Readable.from(
          (async function* () {
            const src = await layout.fetch(layer);
            const stream = layerCompression(layer.mediaType) === 'gzip' ? src.pipe(createGunzip()) : src;
            src.on('error', (e) => stream.destroy(e));
            yield* stream;
          })(),
        ),
    });
  }
  items.push({ name: configName, size: configBytes.length, open: () => Readable.from([configBytes]) });
  const dm = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: repoTag ? [repoTag] : [], Layers: layerNames }]));
  items.push({ name: 'manifest.json', size: dm.length, open: () => Readable.from([dm]) });
  await stageFile(file, (tmp) => writeTar(items, tmp));
}

async function uncompressedSize(layout: OciLayout, layer: Descriptor): Promise<number> {
  const src = await layout.fetch(layer);
  const stream = layerCompression(layer.mediaType) === 'gzip' ? src.pipe(createGunzip()) : src;
  let n = 0;
  for await (const c of stream) n += (c as Buffer).length;
  return n;
}
