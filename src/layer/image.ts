import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { digestOf } from '../oci/digest.js';
import { MediaType } from '../oci/mediatypes.js';
import { parsePlatform } from '../oci/platform.js';
import type { Descriptor, ImageConfig, Index, Manifest } from '../oci/types.js';
import type { OciLayout } from '../store/oci-layout.js';
import { STAGED_TEMP_FLAGS, stageThenName } from '../util/atomic-write.js';
import { writeLayer, type LayerEntry, type LayerOptions, type WrittenLayer } from './tar.js';

/** Objects are built in a fixed key order, so JSON.stringify is stable: same input, same digest. */
function canonicalJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

export interface SingleLayerImage {
  manifest: Descriptor;
  config: Descriptor;
}

/**
 * Config and manifest of a one-layer image for `platform` (the layer blob is already stored):
 * labels and annotations carry the same metadata, `created` is the reproducible build time.
 */
export async function writeSingleLayerImage(
  layout: OciLayout,
  opts: {
    platform: string;
    created: string;
    createdBy: string;
    annotations: Record<string, string>;
    layer: { mediaType?: string; digest: string; size: number; diffId: string };
    /** For images meant to run as containers (the kbundle image): entrypoint and environment. */
    run?: { Entrypoint: string[]; Env: string[]; WorkingDir?: string };
  },
): Promise<SingleLayerImage> {
  const plat = parsePlatform(opts.platform);
  const config: ImageConfig = {
    created: opts.created,
    architecture: plat.architecture,
    os: plat.os,
    ...(plat.variant ? { variant: plat.variant } : {}),
    config: { ...(opts.run ?? {}), Labels: { ...opts.annotations } },
    rootfs: { type: 'layers', diff_ids: [opts.layer.diffId] },
    history: [{ created: opts.created, created_by: opts.createdBy }],
  };
  const configBytes = canonicalJson(config);
  const configDesc: Descriptor = { mediaType: MediaType.OciConfig, digest: digestOf(configBytes), size: configBytes.length };
  await layout.push(configDesc, configBytes);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: configDesc,
    layers: [{ mediaType: opts.layer.mediaType ?? MediaType.OciLayerGzip, digest: opts.layer.digest, size: opts.layer.size }],
    annotations: opts.annotations,
  };
  const manifestBytes = canonicalJson(manifest);
  const manifestDesc: Descriptor = { mediaType: MediaType.OciManifest, digest: digestOf(manifestBytes), size: manifestBytes.length, platform: plat };
  await layout.push(manifestDesc, manifestBytes);
  return { manifest: manifestDesc, config: configDesc };
}

/** The root of a multi-platform image: an index over the platform manifests (one needs none). */
export async function writeIndexIfNeeded(layout: OciLayout, manifests: Descriptor[], annotations?: Record<string, string>): Promise<Descriptor> {
  if (manifests.length === 1) return manifests[0]!;
  const index: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests, ...(annotations ? { annotations } : {}) };
  const bytes = canonicalJson(index);
  const root: Descriptor = { mediaType: MediaType.OciIndex, digest: digestOf(bytes), size: bytes.length };
  await layout.push(root, bytes);
  return root;
}

/**
 * Write a layer straight into `layout`'s blob store: staged beside the blobs (hashed while
 * written), then renamed to its digest, so no partial blob ever has a digest name.
 */
export async function writeLayerBlob(layout: OciLayout, entries: readonly LayerEntry[], opts: LayerOptions): Promise<WrittenLayer> {
  const dir = join(layout.dir, 'blobs', 'sha256');
  await mkdir(dir, { recursive: true });
  return stageThenName(
    dir,
    (tmp) => writeLayer(entries, tmp, { ...opts, outputFlags: STAGED_TEMP_FLAGS }),
    (layer) => layout.blobPath(layer.digest),
  );
}
