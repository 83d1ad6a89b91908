import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { UserError } from '../errors.js';
import { sourceDateEpochFromEnv } from '../builder/epoch.js';
import { writeIndexIfNeeded } from '../builder/image.js';
import { writeLayer, type WrittenLayer } from '../builder/layer.js';
import { digestOf } from '../oci/digest.js';
import { MediaType } from '../oci/mediatypes.js';
import { isKnownPlatform, KNOWN_PLATFORMS, parsePlatform } from '../oci/platform.js';
import type { Descriptor, ImageConfig, Manifest } from '../oci/types.js';
import { writeDockerArchive, writeOciArchive } from '../store/archive.js';
import { OciLayout } from '../store/oci-layout.js';
import { formatLocation, type ImageLocation } from '../store/transport.js';
import { planDockerLayers } from './layers.js';
import { translateDockerfile, type Translation } from './translate.js';

/**
 * `kbundle build <folder>` for a community-bundles style folder (Dockerfile, no bundle.yaml):
 * the image `docker build` makes of it — one gzip layer per COPY in Dockerfile order, the same
 * files, folders, symlinks and modes — built without Docker and reproducibly (every mtime and
 * `created` is SOURCE_DATE_EPOCH, the gzip stream has no name or time). A scratch image holds no
 * binaries, so every platform gets the same layers; only the config's architecture differs.
 */

export const DEFAULT_PLATFORMS = ['linux/amd64', 'linux/arm64'];

export interface DockerfileBuildOptions {
  platforms?: string[];
  sourceDateEpoch?: number;
  gzipLevel?: number;
}

export interface DockerfileBuildResult {
  translation: Translation;
  name: string;
  root: Descriptor;
  layers: (WrittenLayer & { createdBy: string })[];
  images: { platform: string; manifest: Descriptor }[];
  location: string;
  tag: string;
}

/** Folder name as an image name: what community-bundles tags as `<name>_latest`. */
export function bundleNameOf(dir: string): string {
  const n = basename(resolve(dir))
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return n || 'bundle';
}

async function buildInto(t: Translation, layout: OciLayout, opts: DockerfileBuildOptions): Promise<Omit<DockerfileBuildResult, 'location' | 'tag'>> {
  const platforms = opts.platforms ?? DEFAULT_PLATFORMS;
  for (const p of platforms) if (!isKnownPlatform(p)) throw new UserError(`--platform ${p}: unknown platform`, `known: ${KNOWN_PLATFORMS.join(', ')}`);
  const epoch = opts.sourceDateEpoch ?? sourceDateEpochFromEnv();
  const mtime = new Date(epoch * 1000);
  const created = mtime.toISOString().replace(/\.000Z$/, 'Z');
  const planned = await planDockerLayers(t);
  const layers: (WrittenLayer & { createdBy: string })[] = [];
  for (const l of planned) {
    const tmp = join(layout.dir, 'blobs', 'sha256', `.build-${randomBytes(6).toString('hex')}`);
    try {
      const w = await writeLayer(l.entries, tmp, { mtime, uid: l.step.uid, gid: l.step.gid, level: opts.gzipLevel ?? 6 });
      await layout.adoptBlob(tmp, w.digest);
      // BuildKit records each Dockerfile step like this in the image history.
      layers.push({ ...w, createdBy: `${l.step.text} # buildkit` });
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }
  const images: { platform: string; manifest: Descriptor }[] = [];
  for (const p of platforms) {
    const plat = parsePlatform(p);
    const config: ImageConfig = {
      created,
      architecture: plat.architecture,
      os: plat.os,
      ...(plat.variant ? { variant: plat.variant } : {}),
      config: {},
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((l) => ({ created, created_by: l.createdBy, comment: 'buildkit.dockerfile.v0' })),
    };
    const configBytes = Buffer.from(JSON.stringify(config));
    const configDesc: Descriptor = { mediaType: MediaType.OciConfig, digest: digestOf(configBytes), size: configBytes.length };
    await layout.push(configDesc, configBytes);
    const manifest: Manifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })) };
    const bytes = Buffer.from(JSON.stringify(manifest));
    const desc: Descriptor = { mediaType: MediaType.OciManifest, digest: digestOf(bytes), size: bytes.length, platform: plat };
    await layout.push(desc, bytes);
    images.push({ platform: p, manifest: desc });
  }
  const root = await writeIndexIfNeeded(
    layout,
    images.map((i) => i.manifest),
  );
  return { translation: t, name: bundleNameOf(t.dir), root, layers, images };
}

/** Translate and build `dir` into a local transport (oci, oci-archive, docker-archive). */
export async function buildDockerfileTo(dir: string, out: ImageLocation, opts: DockerfileBuildOptions = {}): Promise<DockerfileBuildResult> {
  if (out.transport === 'docker') throw new UserError(`-o ${formatLocation(out)}: build writes local images`, `build to oci:<dir> and then: kbundle push oci:<dir>:<tag> ${out.ref}`);
  const t = await translateDockerfile(dir);
  const platforms = opts.platforms ?? DEFAULT_PLATFORMS;
  if (out.transport === 'docker-archive' && platforms.length !== 1) {
    throw new UserError(`-o ${formatLocation(out)}: a docker archive holds one platform, not ${platforms.length}`, 'pick one with --platform, e.g. --platform linux/amd64');
  }
  const name = bundleNameOf(dir);
  if (out.transport === 'oci') {
    const layout = await OciLayout.open(out.path, { create: true });
    const r = await buildInto(t, layout, opts);
    const tag = out.ref || `${name}_latest`;
    await layout.tag(r.root, tag);
    return { ...r, location: formatLocation({ ...out, ref: tag }), tag };
  }
  const tmpDir = await mkdtemp(resolve(dirname(resolve(out.path)), '.kbundle-build-'));
  try {
    const layout = await OciLayout.open(tmpDir, { create: true });
    const r = await buildInto(t, layout, opts);
    if (out.transport === 'oci-archive') {
      const tag = out.ref || `${name}_latest`;
      await layout.tag(r.root, tag);
      await writeOciArchive(layout, out.path);
      return { ...r, location: formatLocation({ ...out, ref: tag }), tag };
    }
    const tag = out.ref || `${name}:latest`;
    await writeDockerArchive(layout, r.images[0]!.manifest, out.path, tag);
    return { ...r, location: formatLocation({ ...out, ref: tag }), tag };
  } finally {
    await rm(tmpDir, { recursive: true, force: true });
  }
}
