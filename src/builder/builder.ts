import { sourceDateEpochFromEnv } from './epoch.js';
import { UserError } from '../errors.js';
import { Annotation } from '../oci/mediatypes.js';
import { REQUIRES_ANNOTATION, requiresJson } from '../requires/requires.js';
import type { Descriptor } from '../oci/types.js';
import type { OciLayout } from '../store/oci-layout.js';
import { planEntries } from './entries.js';
import { writeIndexIfNeeded, writeLayerBlob, writeSingleLayerImage } from '../layer/image.js';
import { ZSTD_DEFAULT_LEVEL } from '../layer/zstd.js';
import type { LayerEntry, WrittenLayer } from '../layer/tar.js';
import { loadBundleSpec, type LoadedSpec } from './spec.js';

export interface BuildOptions {
  /** Seconds since the epoch for every timestamp (SOURCE_DATE_EPOCH); default 0. */
  sourceDateEpoch?: number;
  uid?: number;
  gid?: number;
  gzipLevel?: number;
  /** Layer compression: gzip (default) or zstd (needs the zstd program; level `zstdLevel`, default 3). */
  compression?: 'gzip' | 'zstd';
  zstdLevel?: number;
  revision?: string;
  /** Sign the dm-verity root hash of sysext/confext images with this key and certificate. */
  sysextKey?: string;
  sysextCert?: string;
  /** Build only these platforms (subset of the spec's). */
  platforms?: string[];
  onProgress?: (event: BuildProgress) => void;
  /** Things the build went ahead with but the user should know (e.g. sysext files a Kairos node does not merge). */
  onWarning?: (msg: string) => void;
  /** trusted_root.json for keyless `signature:` pins of downloads (default KBUNDLE_TRUSTED_ROOT). */
  trustedRoot?: string;
}

export type BuildProgress =
  { kind: 'layer-start'; platform: string; entries: number; bytes: number } | { kind: 'layer-bytes'; platform: string; bytes: number } | { kind: 'layer-done'; platform: string; layer: WrittenLayer };

export interface PlatformImage {
  platform: string;
  manifest: Descriptor;
  config: Descriptor;
  layer: WrittenLayer;
}

export interface BuildResult {
  loaded: LoadedSpec;
  /** The manifest (one platform) or image index (several) to tag. */
  root: Descriptor;
  images: PlatformImage[];
}

/**
 * Build a bundle folder into `layout`: one gzip layer per platform, its config and manifest,
 * plus an index for several platforms. Blobs land under their digest only once complete;
 * nothing is tagged here (the caller tags once everything is in place).
 */
export interface BuildPlan {
  loaded: LoadedSpec;
  plans: { platform: string; entries: LayerEntry[] }[];
}

/**
 * Validate the spec, read every source and fetch pinned downloads: all that can fail on bad
 * input happens here, before any output exists.
 */
export async function planBuild(bundleDir: string, opts: BuildOptions = {}): Promise<BuildPlan> {
  const loaded = await loadBundleSpec(bundleDir);
  const { spec } = loaded;
  const platforms = opts.platforms ?? spec.platforms;
  for (const p of platforms) {
    if (!spec.platforms.includes(p)) throw new UserError(`--platform ${p}: ${loaded.specPath} does not list it (platforms: ${spec.platforms.join(', ')})`);
  }
  const plans = await Promise.all(platforms.map(async (p) => ({ platform: p, entries: await planEntries(loaded, p, { trustedRoot: opts.trustedRoot }) })));
  return { loaded, plans };
}

export async function buildBundle(bundleDir: string | BuildPlan, layout: OciLayout, opts: BuildOptions = {}): Promise<BuildResult> {
  const { loaded, plans } = typeof bundleDir === 'string' ? await planBuild(bundleDir, opts) : bundleDir;
  const { spec } = loaded;
  const epoch = opts.sourceDateEpoch ?? sourceDateEpochFromEnv();
  if (spec.type === 'sysext' || spec.type === 'confext') {
    const { buildSysextBundleImage } = await import('./sysext-image.js');
    // One warning per message, not one per platform: every platform builds the same tree.
    const said = new Set<string>();
    const warn = opts.onWarning;
    const onWarning = warn
      ? (m: string) => {
          if (!said.has(m)) warn(m);
          said.add(m);
        }
      : undefined;
    const r = await buildSysextBundleImage(loaded, layout, {
      sourceDateEpoch: epoch,
      platforms: plans.map((p) => p.platform),
      revision: opts.revision,
      key: opts.sysextKey,
      cert: opts.sysextCert,
      onWarning,
      trustedRoot: opts.trustedRoot,
    });
    return { loaded, root: r.root, images: r.images };
  }
  const mtime = new Date(epoch * 1000);
  const created = mtime.toISOString().replace(/\.000Z$/, 'Z');

  const annotations: Record<string, string> = {
    [Annotation.Created]: created,
    [Annotation.Title]: spec.name,
    [Annotation.Version]: spec.version,
    [Annotation.Description]: spec.description,
    [Annotation.BundleType]: spec.type,
  };
  if (spec.source) annotations[Annotation.Source] = spec.source;
  if (spec.license) annotations[Annotation.Licenses] = spec.license;
  if (opts.revision) annotations[Annotation.Revision] = opts.revision;
  if (spec.requires) annotations[REQUIRES_ANNOTATION] = requiresJson(spec.requires);

  // Platforms are independent layers: building them concurrently keeps both cores busy.
  const images = await Promise.all(
    plans.map(async ({ platform, entries }): Promise<PlatformImage> => {
      opts.onProgress?.({ kind: 'layer-start', platform, entries: entries.length, bytes: entries.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0) });
      const layer = await writeLayerBlob(layout, entries, {
        mtime,
        uid: opts.uid ?? 0,
        gid: opts.gid ?? 0,
        compression: opts.compression,
        level: opts.compression === 'zstd' ? (opts.zstdLevel ?? ZSTD_DEFAULT_LEVEL) : (opts.gzipLevel ?? 6),
        onBytes: opts.onProgress ? (n) => opts.onProgress!({ kind: 'layer-bytes', platform, bytes: n }) : undefined,
      });
      opts.onProgress?.({ kind: 'layer-done', platform, layer });
      const image = await writeSingleLayerImage(layout, { platform, created, createdBy: `kbundle build ${spec.name} ${spec.version}`, annotations, layer });
      return { platform, manifest: image.manifest, config: image.config, layer };
    }),
  );

  const root = await writeIndexIfNeeded(
    layout,
    images.map((i) => i.manifest),
    annotations,
  );
  return { loaded, root, images };
}

/** The tag kbundle uses when the output names none: `<name>_<version>`, as community bundles tag `<name>_latest`. */
export function defaultTag(result: BuildResult): string {
  return `${result.loaded.spec.name}_${result.loaded.spec.version}`;
}
