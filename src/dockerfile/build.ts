import { basename, resolve } from 'node:path';
import { UserError } from '../errors.js';
import { sourceDateEpochFromEnv } from '../builder/epoch.js';
import { writeIndexIfNeeded, writeLayerBlob } from '../layer/image.js';
import type { WrittenLayer } from '../layer/tar.js';
import { digestOf } from '../oci/digest.js';
import { MediaType } from '../oci/mediatypes.js';
import { isKnownPlatform, KNOWN_PLATFORMS, parsePlatform } from '../oci/platform.js';
import type { Descriptor, ImageConfig, Manifest } from '../oci/types.js';
import type { OciLayout } from '../store/oci-layout.js';
import { openDestination } from '../store/open.js';
import { capabilitiesOf, formatLocation, isRegistryLocation, type ImageLocation } from '../store/transport.js';
import { planDockerLayers } from './layers.js';
import { translateDockerfile, type Translation } from './translate.js';
import type { SbomFormat, WrittenSbom } from '../sbom/index.js';

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
  /** Write an SBOM of each platform image (see src/sbom). */
  sbom?: { format: SbomFormat; dir: string };
}

export interface DockerfileBuildResult {
  translation: Translation;
  name: string;
  root: Descriptor;
  layers: (WrittenLayer & { createdBy: string })[];
  images: { platform: string; manifest: Descriptor }[];
  location: string;
  tag: string;
  sboms?: WrittenSbom[];
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
    const w = await writeLayerBlob(layout, l.entries, { mtime, uid: l.step.uid, gid: l.step.gid, level: opts.gzipLevel ?? 6 });
    // BuildKit records each Dockerfile step like this in the image history.
    layers.push({ ...w, createdBy: `${l.step.text} # buildkit` });
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
  if (isRegistryLocation(out)) throw new UserError(`-o ${formatLocation(out)}: build writes local images`, `build to oci:<dir> and then: kbundle push oci:<dir>:<tag> ${out.ref}`);
  const t = await translateDockerfile(dir);
  const platforms = opts.platforms ?? DEFAULT_PLATFORMS;
  if (!capabilitiesOf(out).multiPlatform && platforms.length !== 1) {
    throw new UserError(`-o ${formatLocation(out)}: a docker archive holds one platform, not ${platforms.length}`, 'pick one with --platform, e.g. --platform linux/amd64');
  }
  const name = bundleNameOf(dir);
  // Layouts and OCI archives are tagged <name>_latest (community-bundles' tag), docker archives <name>:latest.
  const dst = await openDestination(out, { defaultTag: `${name}_latest`, defaultRepoTag: `${name}:latest` });
  try {
    const r = await buildInto(t, dst.layout!, opts);
    let sboms: WrittenSbom[] | undefined;
    if (opts.sbom) {
      const { writeSboms } = await import('../sbom/index.js');
      const epoch = opts.sourceDateEpoch ?? sourceDateEpochFromEnv();
      sboms = await writeSboms(dst.layout!, r.images, () => ({ name, version: 'latest', type: 'container', epoch, downloads: [] }), opts.sbom.format, opts.sbom.dir);
    }
    if (dst.reference) await dst.layout!.tag(r.root, dst.reference);
    await dst.close(r.root);
    return { ...r, location: dst.location, tag: dst.tag, ...(sboms ? { sboms } : {}) };
  } catch (e) {
    await dst.close().catch(() => undefined);
    throw e;
  }
}
