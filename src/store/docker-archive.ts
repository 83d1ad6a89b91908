/**
 * `docker-archive:<file.tar>[:name:tag]`: `docker save` format (what Kairos `local_file: true`
 * loads): manifest.json, the config as `<hex>.json`, each layer uncompressed as `<diffid-hex>.tar`.
 * It holds one image of one platform and no signatures.
 */
import { readFile, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { UserError } from '../errors.js';
import { pathExists } from '../fs-util.js';
import { digestFile, digestOf, parseDigest } from '../oci/digest.js';
import { MediaType, isIndexMediaType, layerCompression } from '../oci/mediatypes.js';
import { formatPlatform } from '../oci/platform.js';
import { fetchBytes, type ImageCapabilities, type Target } from '../oci/target.js';
import { parseIndex, parseManifest, type Descriptor, type Manifest } from '../oci/types.js';
import { OciLayout } from './oci-layout.js';
import { isGzipFile, stageFile, stagingLayout, unpackArchive, writeTar, type TarItem } from './tar.js';
import type { ImageTransport, LocalImageLocation } from './types.js';

type DockerArchiveLocation = Extract<LocalImageLocation, { transport: 'docker-archive' }>;

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/** Write the image `manifestDesc` of `layout` as a docker archive naming it `repoTag`. */
export async function writeDockerArchive(layout: OciLayout, manifestDesc: Descriptor, file: string, repoTag: string | undefined): Promise<void> {
  const manifest = parseManifest(await fetchBytes(layout, manifestDesc), manifestDesc.mediaType, `${layout.name}@${manifestDesc.digest}`);
  const configBytes = await fetchBytes(layout, manifest.config);
  const config = JSON.parse(configBytes.toString('utf8')) as { rootfs: { diff_ids: string[] } };
  const items: TarItem[] = [];
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

/** The image manifests of an index, without attestation manifests (platform unknown/unknown). */
function images(manifests: Descriptor[]): Descriptor[] {
  return manifests.filter((d) => !(d.platform?.os === 'unknown' && d.platform.architecture === 'unknown'));
}

function onePlatformError(where: string, list: Descriptor[]): UserError {
  return new UserError(
    `${where}: a docker archive holds one platform, the image has ${list.length} (${list.map((d) => (d.platform ? formatPlatform(d.platform) : '?')).join(', ')})`,
    'pick one with --platform, e.g. --platform linux/amd64',
  );
}

/** The manifest a docker archive can hold for `root`: itself, or the one platform of an index. */
export async function singleManifest(target: Target, root: Descriptor, where: string): Promise<Descriptor> {
  if (!isIndexMediaType(root.mediaType)) return root;
  const list = images(parseIndex(await fetchBytes(target, root), root.mediaType, `${target.name}@${root.digest}`).manifests);
  if (list.length === 1) return list[0]!;
  throw onePlatformError(where, list);
}

/** Refuse up front (before a transfer) an image with several platforms for a docker archive. */
export async function requireSinglePlatform(target: Target, root: Descriptor, where: string): Promise<void> {
  if (!isIndexMediaType(root.mediaType)) return;
  const list = images(parseIndex(await fetchBytes(target, root), root.mediaType, `${target.name}@${root.digest}`).manifests);
  if (list.length > 1) throw onePlatformError(where, list);
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

interface DockerSaveEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

/** `name:tag` has a tag; `host:5000/name` does not (the colon is before the last slash). */
export function hasTag(name: string): boolean {
  return name.lastIndexOf(':') > name.lastIndexOf('/');
}

function pickDockerImage(entries: DockerSaveEntry[], ref: string, what: string): DockerSaveEntry {
  if (entries.length === 0) throw new UserError(`${what}: manifest.json lists no images`);
  if (!ref) {
    if (entries.length === 1) return entries[0]!;
    const tags = entries.flatMap((e) => e.RepoTags ?? []);
    throw new UserError(`${what}: holds ${entries.length} images; name one`, tags.length ? `append :<name:tag>, one of: ${tags.join(', ')}` : undefined);
  }
  const want = hasTag(ref) ? ref : `${ref}:latest`;
  const found = entries.find((e) => (e.RepoTags ?? []).some((t) => t === ref || t === want || t.endsWith(`/${want}`)));
  if (!found) throw new UserError(`${what}: no image named "${ref}"`, `available: ${entries.flatMap((e) => e.RepoTags ?? []).join(', ') || 'none'}`);
  return found;
}

/**
 * Turn a `docker save` archive into an OCI layout: the config bytes are kept verbatim, each layer
 * file becomes a blob (uncompressed tar, or gzip when it already is), and an OCI manifest is written.
 */
async function dockerArchiveToLayout(rawDir: string, layoutDir: string, ref: string, what: string): Promise<{ layout: OciLayout; reference: string }> {
  const manifestFile = join(rawDir, 'manifest.json');
  let entries: DockerSaveEntry[];
  try {
    entries = JSON.parse(await readFile(manifestFile, 'utf8')) as DockerSaveEntry[];
  } catch (e) {
    throw new UserError(`${what}: not a docker-archive (no readable manifest.json: ${(e as Error).message})`, 'for an OCI layout in a tar, use oci-archive:<file>');
  }
  if (!Array.isArray(entries)) throw new UserError(`${what}: manifest.json is not a list`);
  const entry = pickDockerImage(entries, ref, what);
  const inside = (p: string): string => {
    const abs = resolve(rawDir, p);
    if (!abs.startsWith(resolve(rawDir) + sep)) throw new UserError(`${what}: manifest.json names "${p}" outside the archive`);
    return abs;
  };
  const layout = await OciLayout.open(layoutDir, { create: true, durable: false });
  const configBytes = await readFile(inside(entry.Config)).catch(() => {
    throw new UserError(`${what}: config ${entry.Config} is missing`);
  });
  const config: Descriptor = { mediaType: MediaType.OciConfig, digest: digestOf(configBytes), size: configBytes.length };
  await layout.push(config, configBytes);
  const layers: Descriptor[] = [];
  for (const l of entry.Layers) {
    const path = inside(l);
    const st = await stat(path).catch(() => {
      throw new UserError(`${what}: layer ${l} is missing`);
    });
    const digest = await digestFile(path);
    const desc: Descriptor = { mediaType: (await isGzipFile(path)) ? MediaType.OciLayerGzip : MediaType.OciLayer, digest, size: st.size };
    if (!(await layout.exists(desc))) await layout.adoptBlob(path, digest);
    layers.push(desc);
  }
  const manifest: Manifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const desc: Descriptor = { mediaType: MediaType.OciManifest, digest: digestOf(bytes), size: bytes.length };
  await layout.push(desc, bytes);
  const tag = ref || entry.RepoTags?.[0] || '';
  await layout.tag(desc, tag);
  return { layout, reference: tag };
}

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

const capabilities: ImageCapabilities = { multiPlatform: false, signatures: false, inPlace: false, remote: false };

const format = (l: DockerArchiveLocation): string => `docker-archive:${l.path}${l.ref ? `:${l.ref}` : ''}`;

export const dockerArchiveTransport: ImageTransport<DockerArchiveLocation> = {
  name: 'docker-archive',
  capabilities,
  /** skopeo's syntax: the path ends at the first colon; the rest is name[:tag]. */
  parse(rest, input, what) {
    const i = rest.indexOf(':');
    const [path, ref] = i > 0 ? [rest.slice(0, i), rest.slice(i + 1)] : [rest, ''];
    if (!path) throw new UserError(`${what}: "${input}" names no path`);
    return { transport: 'docker-archive', path, ref };
  },
  format,
  identity: (l) => `docker-archive:${resolve(l.path)}`,

  /** Unpacked and converted into a temporary layout; an OCI archive (oci-layout inside, no manifest.json) is read as one. */
  async openSource(loc) {
    const display = format(loc);
    const unpacked = await unpackArchive(loc.path, display);
    try {
      if (unpacked.isOciLayout && !(await pathExists(join(unpacked.raw, 'manifest.json'), { follow: true }))) {
        return { target: await OciLayout.open(unpacked.raw), reference: loc.ref, display, capabilities, tag: loc.ref, location: display, close: unpacked.close };
      }
      const { layout, reference } = await dockerArchiveToLayout(unpacked.raw, join(unpacked.dir, 'layout'), loc.ref, display);
      return { target: layout, reference, display, capabilities, tag: reference, location: display, close: unpacked.close };
    } catch (e) {
      await unpacked.close();
      throw e;
    }
  },

  /** Assembled in a temporary layout beside the file; `close(root)` writes root's one platform. */
  async openDestination(loc, opts) {
    const display = format(loc);
    const { layout, remove } = await stagingLayout(loc.path, display);
    const name = loc.ref ? (hasTag(loc.ref) ? loc.ref : `${loc.ref}:latest`) : (opts.defaultRepoTag ?? (opts.defaultName ? `${opts.defaultName}:${opts.defaultTag || 'latest'}` : ''));
    return {
      target: layout,
      layout,
      reference: '',
      display,
      capabilities,
      tag: name,
      location: format({ ...loc, ref: loc.ref || name }),
      async close(root?: Descriptor) {
        try {
          if (root) await writeDockerArchive(layout, await singleManifest(layout, root, display), loc.path, name || undefined);
        } finally {
          await remove();
        }
      },
    };
  },
};
