import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, open as openFile, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, normalize, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract } from 'tar-stream';
import { UserError } from '../errors.js';
import { digestFile, digestOf } from '../oci/digest.js';
import { MediaType, isIndexMediaType } from '../oci/mediatypes.js';
import { formatPlatform } from '../oci/platform.js';
import { IndexSchema, parseJson, type Descriptor, type Manifest } from '../oci/types.js';
import type { RegistryClient } from '../registry/client.js';
import { manifestReference, parseReference, type ImageReference } from '../registry/reference.js';
import { RegistryTarget, type RegistryTargetOptions } from '../registry/registry-target.js';
import { writeDockerArchive, writeOciArchive } from './archive.js';
import { OciLayout } from './oci-layout.js';
import { fetchBytes, type Target } from './target.js';
import { formatLocation, parseLocation, type ImageLocation } from './transport.js';
import { pathExists } from '../fs-util.js';

/** An image location opened for reading or writing. */
export interface OpenedImage {
  target: Target;
  /** What to resolve (source) or tag (destination) inside `target`: a tag, a digest, or '' (layout default). */
  reference: string;
  /** The location as the user wrote it, normalised, for messages. */
  display: string;
  /** Set for registry locations. */
  registryRef?: ImageReference;
  /**
   * Finish with the location: destinations that are archives are written now (`root` is what was
   * copied); temporary files are removed either way.
   */
  close(root?: Descriptor): Promise<void>;
}

const LOCAL_TRANSPORTS = ['oci:', 'oci-archive:', 'docker-archive:', 'docker:'];

/**
 * Any image argument: `oci:dir[:tag]`, `oci-archive:f.tar[:tag]`, `docker-archive:f.tar[:name:tag]`,
 * `docker://host/repo:tag`, or a bare registry reference (`host/repo:tag`, as docker and cosign take it).
 */
export function parseImageArgument(s: string, what = 'image'): ImageLocation {
  if (LOCAL_TRANSPORTS.some((t) => s.startsWith(t))) {
    const loc = parseLocation(s, what);
    if (loc.transport === 'docker-archive') {
      // skopeo's docker-archive syntax: the path ends at the first colon; the rest is name[:tag].
      const whole = loc.ref ? `${loc.path}:${loc.ref}` : loc.path;
      const i = whole.indexOf(':');
      return i > 0 ? { transport: 'docker-archive', path: whole.slice(0, i), ref: whole.slice(i + 1) } : { transport: 'docker-archive', path: whole, ref: '' };
    }
    if (loc.transport === 'docker') parseReference(loc.ref, what);
    return loc;
  }
  parseReference(s, what);
  return { transport: 'docker', ref: s };
}

export interface OpenOptions {
  client: RegistryClient;
  registry?: RegistryTargetOptions;
}

// ---------------------------------------------------------------------------------------------
// Archive extraction
// ---------------------------------------------------------------------------------------------

const MAX_ARCHIVE_ENTRIES = 100_000;

/** Unpack the regular files of a tar into `dir`; names that would escape it are refused. */
async function extractFiles(file: string, dir: string, what: string): Promise<void> {
  const root = resolve(dir);
  const ex = tarExtract();
  let entries = 0;
  ex.on('entry', (headers, stream, next) => {
    const fail = (e: unknown): void => {
      stream.resume();
      next(e instanceof Error ? e : new Error(String(e)));
    };
    if (++entries > MAX_ARCHIVE_ENTRIES) return fail(new UserError(`${what}: more than ${MAX_ARCHIVE_ENTRIES} entries`));
    const name = normalize(headers.name).replace(/^(\.\/)+/, '');
    const dest = resolve(root, name);
    if (headers.name.startsWith('/') || (dest !== root && !dest.startsWith(root + sep))) return fail(new UserError(`${what}: entry "${headers.name}" points outside the archive`));
    if (headers.type !== 'file' && headers.type !== 'contiguous-file') {
      stream.resume();
      stream.on('end', () => next());
      return;
    }
    mkdir(dirname(dest), { recursive: true })
      .then(() => pipeline(stream, createWriteStream(dest)))
      .then(() => next(), fail);
  });
  try {
    await pipeline(createReadStream(file), ex);
  } catch (e) {
    if (e instanceof UserError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UserError(`${what}: no such file`);
    throw new UserError(`${what}: not a readable tar archive (${(e as Error).message})`);
  }
}

async function isGzipFile(path: string): Promise<boolean> {
  const fh = await openFile(path, 'r');
  try {
    const buf = Buffer.alloc(2);
    await fh.read(buf, 0, 2, 0);
    return buf[0] === 0x1f && buf[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

interface DockerSaveEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

/** `name:tag` has a tag; `host:5000/name` does not (the colon is before the last slash). */
function hasTag(name: string): boolean {
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
  const layout = await OciLayout.open(layoutDir, { create: true });
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
// Sources and destinations
// ---------------------------------------------------------------------------------------------

function registryTarget(loc: { ref: string }, opts: OpenOptions, access: 'pull' | 'push'): { target: RegistryTarget; ref: ImageReference } {
  const ref = parseReference(loc.ref);
  return { target: RegistryTarget.forReference(opts.client, ref, { ...(opts.registry ?? {}), access }), ref };
}

/** Open an image location to read from. Archives are unpacked into a temporary layout. */
export async function openSource(loc: ImageLocation, opts: OpenOptions): Promise<OpenedImage> {
  const display = formatLocation(loc);
  if (loc.transport === 'docker') {
    const { target, ref } = registryTarget(loc, opts, 'pull');
    return { target, reference: manifestReference(ref), display, registryRef: ref, close: async () => undefined };
  }
  if (loc.transport === 'oci') {
    return { target: await OciLayout.open(loc.path), reference: loc.ref, display, close: async () => undefined };
  }
  const tmp = await mkdtemp(join(tmpdir(), 'kbundle-src-'));
  const cleanup = async (): Promise<void> => rm(tmp, { recursive: true, force: true });
  try {
    const raw = join(tmp, 'raw');
    await mkdir(raw);
    await extractFiles(loc.path, raw, display);
    const isOciLayout = (await pathExists(join(raw, 'oci-layout'), { follow: true })) && (await pathExists(join(raw, 'index.json'), { follow: true }));
    if (loc.transport === 'oci-archive' || (isOciLayout && !(await pathExists(join(raw, 'manifest.json'), { follow: true })))) {
      if (!isOciLayout) throw new UserError(`${display}: not an OCI archive (no oci-layout/index.json inside)`, 'for `docker save` output use docker-archive:<file>');
      return { target: await OciLayout.open(raw), reference: loc.ref, display, close: cleanup };
    }
    const { layout, reference } = await dockerArchiveToLayout(raw, join(tmp, 'layout'), loc.ref, display);
    return { target: layout, reference, display, close: cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** A manifest for a single-image destination (docker-archive): the root, or the one platform of an index. */
async function singleManifest(layout: OciLayout, root: Descriptor, display: string): Promise<Descriptor> {
  if (!isIndexMediaType(root.mediaType)) return root;
  const index = parseJson(IndexSchema, await fetchBytes(layout, root), `${layout.name}@${root.digest}`);
  const images = index.manifests.filter((d) => !(d.platform?.os === 'unknown' && d.platform.architecture === 'unknown'));
  if (images.length === 1) return images[0]!;
  throw new UserError(
    `${display}: a docker archive holds one platform, the image has ${images.length} (${images.map((d) => (d.platform ? formatPlatform(d.platform) : '?')).join(', ')})`,
    'pick one with --platform, e.g. --platform linux/amd64',
  );
}

export interface DestinationDefaults {
  /** Tag for layouts and OCI archives when the location names none (e.g. the source's tag). */
  defaultTag?: string;
  /** Image name (`host/repo`) for the RepoTags of a docker archive when the location names none. */
  defaultName?: string;
}

/**
 * Open an image location to write to. Archive destinations are assembled in a temporary layout
 * beside the file and written (temp name, then rename) by `close(root)`.
 */
export async function openDestination(loc: ImageLocation, opts: OpenOptions & DestinationDefaults): Promise<OpenedImage> {
  const display = formatLocation(loc);
  if (loc.transport === 'docker') {
    const { target, ref } = registryTarget(loc, opts, 'push');
    return { target, reference: ref.digest ?? ref.tag ?? 'latest', display, registryRef: ref, close: async () => undefined };
  }
  if (loc.transport === 'oci') {
    const existed = await pathExists(loc.path, { follow: true });
    const layout = await OciLayout.open(loc.path, { create: true });
    return {
      target: layout,
      reference: loc.ref || opts.defaultTag || '',
      display,
      // A failed copy into a layout this call created leaves nothing behind.
      close: async (root?: Descriptor) => {
        if (!root && !existed) await rm(loc.path, { recursive: true, force: true });
      },
    };
  }
  const dir = dirname(resolve(loc.path));
  if (!(await pathExists(dir, { follow: true }))) throw new UserError(`${display}: directory ${dir} does not exist`);
  const tmp = await mkdtemp(join(dir, '.kbundle-copy-'));
  const layout = await OciLayout.open(tmp, { create: true });
  const transport = loc.transport;
  const reference = transport === 'oci-archive' ? loc.ref || opts.defaultTag || '' : '';
  return {
    target: layout,
    reference,
    display,
    async close(root?: Descriptor) {
      try {
        if (!root) return;
        if (transport === 'oci-archive') {
          await writeOciArchive(layout, loc.path);
          return;
        }
        const manifest = await singleManifest(layout, root, display);
        const name = loc.ref ? (hasTag(loc.ref) ? loc.ref : `${loc.ref}:latest`) : opts.defaultName ? `${opts.defaultName}:${opts.defaultTag || 'latest'}` : undefined;
        await writeDockerArchive(layout, manifest, loc.path, name);
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    },
  };
}
