import { createReadStream, createWriteStream, openSync } from 'node:fs';
import { chmod, mkdir, symlink } from 'node:fs/promises';
import { withStagingDir } from '../util/atomic-write.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { UserError } from '../errors.js';
import type { LayerEntry, WrittenLayer } from '../layer/tar.js';
import { planEntries } from './entries.js';
import type { LoadedSpec } from './spec.js';
import { writeIndexIfNeeded, writeLayerBlob, writeSingleLayerImage } from '../layer/image.js';
import { Annotation } from '../oci/mediatypes.js';
import { REQUIRES_ANNOTATION, requiresJson } from '../requires/requires.js';
import type { Descriptor } from '../oci/types.js';
import type { OciLayout } from '../store/oci-layout.js';
import { buildSysext, type FsType, type ImageFormat, type SysextBuildResult } from '../sysext/build.js';
import type { ReleaseSpec } from '../sysext/release.js';
import { SysextSettingsSchema, type SysextSettings } from '../sysext/spec.js';
import { systemdArch, type ExtensionKind } from '../kairos/extensions.js';

/** Annotation naming the extension file an image carries at its root. */
export const RAW_FILE_ANNOTATION = 'io.kairos.sysext.file';

export interface PackagedImage {
  platform: string;
  manifest: Descriptor;
  config: Descriptor;
  layer: WrittenLayer;
  raw: SysextBuildResult;
}

/**
 * Wrap a `.raw` into a one-layer OCI image whose root holds the file (mode 0644, root-owned, fixed
 * time), so `kairos-agent sysext install oci:<ref>` (which extracts the image into its store)
 * and `kbundle sysext install` both find `<name>.sysext.raw`. Nothing is tagged here.
 */
export async function packageRaw(
  raw: SysextBuildResult,
  layout: OciLayout,
  opts: { platform: string; epoch: number; kind: ExtensionKind; title: string; version?: string; description?: string; extraAnnotations?: Record<string, string> },
): Promise<PackagedImage> {
  const mtime = new Date(opts.epoch * 1000);
  const created = mtime.toISOString().replace(/\.000Z$/, 'Z');
  const entry: LayerEntry = {
    type: 'file',
    path: raw.fileName,
    mode: 0o644,
    size: raw.size,
    open: () => createReadStream(raw.path, { highWaterMark: 1024 * 1024 }),
    openFd: () => openSync(raw.path, 'r'),
  };
  const layer = await writeLayerBlob(layout, [entry], { mtime, uid: 0, gid: 0, level: 6 });
  const annotations: Record<string, string> = {
    [Annotation.Created]: created,
    [Annotation.Title]: opts.title,
    ...(opts.version ? { [Annotation.Version]: opts.version } : {}),
    ...(opts.description ? { [Annotation.Description]: opts.description } : {}),
    [Annotation.BundleType]: opts.kind,
    [RAW_FILE_ANNOTATION]: raw.fileName,
    ...(opts.extraAnnotations ?? {}),
  };
  const image = await writeSingleLayerImage(layout, { platform: opts.platform, created, createdBy: `kbundle ${opts.kind} build ${raw.fileName}`, annotations, layer });
  return { platform: opts.platform, manifest: image.manifest, config: image.config, layer, raw };
}

/** An index over several platform images (one manifest needs none). */
export async function indexOf(images: PackagedImage[], layout: OciLayout, annotations?: Record<string, string>): Promise<Descriptor> {
  return writeIndexIfNeeded(
    layout,
    images.map((i) => i.manifest),
    annotations,
  );
}

// ---------------------------------------------------------------------------------------------
// bundle.yaml `type: sysext` / `type: confext` (the `sysext:` section is in ./spec.ts)
// ---------------------------------------------------------------------------------------------

export { SysextSettingsSchema, checkSysextBundleSpec, type SysextSettings } from '../sysext/spec.js';

export interface SysextBundleOptions {
  sourceDateEpoch?: number;
  platforms?: string[];
  /** Signing key and certificate for the verity root hash (never in bundle.yaml). */
  key?: string;
  cert?: string;
  revision?: string;
  onWarning?: (msg: string) => void;
  /** trusted_root.json for keyless `signature:` pins of downloads. */
  trustedRoot?: string;
}

export interface SysextBundleResult {
  loaded: LoadedSpec;
  root: Descriptor;
  images: PackagedImage[];
}

/** Write planned layer entries into a directory (so the sysext builder can read them as a tree). */
async function materialize(entries: LayerEntry[], dir: string): Promise<void> {
  for (const e of entries) {
    const p = join(dir, e.path);
    if (e.type === 'directory') {
      await mkdir(p, { recursive: true });
      await chmod(p, e.mode);
    } else if (e.type === 'symlink') {
      await symlink(e.target, p);
    } else {
      await pipeline(e.open(), createWriteStream(p, { mode: e.mode }));
      await chmod(p, e.mode);
    }
  }
}

/** What a caller (the `sysext build <bundle-dir>` command) may set over the bundle's own settings. */
export interface BundleSysextOverrides {
  /** The kind the caller builds (`kbundle sysext|confext build`): a bundle of another type is refused. */
  kind?: ExtensionKind;
  name?: string;
  format?: ImageFormat;
  fs?: FsType | 'auto';
  release?: Partial<ReleaseSpec>;
  key?: string;
  cert?: string;
  seed?: string;
  compatRelease?: boolean;
  sourceDateEpoch?: number;
  onWarning?: (msg: string) => void;
  /** trusted_root.json for keyless `signature:` pins of downloads. */
  trustedRoot?: string;
}

/** The `sysext:` settings of a sysext/confext bundle (of the `expected` kind, if given), validated. */
function bundleSettings(loaded: LoadedSpec, expected?: ExtensionKind): { kind: ExtensionKind; settings: SysextSettings } {
  const spec = loaded.spec as LoadedSpec['spec'] & { sysext?: unknown };
  const kind = spec.type as string;
  if (kind !== 'sysext' && kind !== 'confext') throw new UserError(`${loaded.specPath}: type is ${kind}, not ${expected ?? 'sysext/confext'}`, 'kbundle build builds run and container bundles');
  if (expected && kind !== expected) throw new UserError(`${loaded.specPath}: type is ${kind}, not ${expected}`, `build it with kbundle ${kind} build`);
  const parsed = SysextSettingsSchema.safeParse(spec.sysext ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UserError(`${loaded.specPath}: sysext.${issue.path.join('.')}: ${issue.message}`);
  }
  return { kind, settings: parsed.data };
}

/**
 * One platform's extension image of a `type: sysext|confext` bundle, written to `outDir`: the
 * bundle's files (files:, platform_files:, pinned downloads — planned exactly like other bundles)
 * become the tree, its `sysext:` section the release file and format; `o` overrides either.
 */
export async function buildBundleExtension(loaded: LoadedSpec, platform: string, outDir: string, o: BundleSysextOverrides = {}): Promise<SysextBuildResult> {
  const { kind, settings: s } = bundleSettings(loaded, o.kind);
  const spec = loaded.spec;
  if (!spec.platforms.includes(platform)) throw new UserError(`${loaded.specPath}: ${platform} is not among its platforms (${spec.platforms.join(', ')})`, 'pick one with --arch');
  const entries = await planEntries(loaded, platform, { trustedRoot: o.trustedRoot });
  return withStagingDir(tmpdir(), 'sysext-bundle', async (work) => {
    const tree = join(work, 'tree');
    await mkdir(tree);
    await materialize(entries, tree);
    const arch = systemdArch(platform, `${loaded.specPath}: platforms`);
    return await buildSysext({
      kind,
      name: o.name ?? s.name ?? spec.name,
      tree,
      outDir,
      format: o.format ?? s.format,
      fs: o.fs ?? s.fs,
      arch,
      release: {
        id: s.id,
        ...(s.version_id ? { versionId: s.version_id } : {}),
        ...(s.level ? { level: s.level } : {}),
        architecture: s.architecture === 'auto' ? arch : '_any',
        reloadManager: s.reload_manager,
        ...(s.scope ? { scope: s.scope } : {}),
        ...o.release,
      },
      key: o.key,
      cert: o.cert,
      seed: o.seed,
      compatRelease: o.compatRelease,
      sourceDateEpoch: o.sourceDateEpoch ?? 0,
      onWarning: o.onWarning,
    });
  });
}

/**
 * Build a `type: sysext|confext` bundle: one extension image per platform, each packaged as an
 * OCI image with the `.raw` at its root; several platforms get an index. Blobs go to `layout`;
 * nothing is tagged.
 */
export async function buildSysextBundleImage(loaded: LoadedSpec, layout: OciLayout, opts: SysextBundleOptions = {}): Promise<SysextBundleResult> {
  const { kind } = bundleSettings(loaded);
  const spec = loaded.spec;
  const epoch = opts.sourceDateEpoch ?? 0;
  const images: PackagedImage[] = [];
  for (const platform of opts.platforms ?? spec.platforms) {
    await withStagingDir(tmpdir(), 'sysext-out', async (work) => {
      const raw = await buildBundleExtension(loaded, platform, work, { key: opts.key, cert: opts.cert, sourceDateEpoch: epoch, onWarning: opts.onWarning, trustedRoot: opts.trustedRoot });
      images.push(
        await packageRaw(raw, layout, {
          platform,
          epoch,
          kind,
          title: spec.name,
          version: spec.version,
          description: spec.description,
          extraAnnotations: {
            ...(spec.source ? { [Annotation.Source]: spec.source } : {}),
            ...(spec.license ? { [Annotation.Licenses]: spec.license } : {}),
            ...(opts.revision ? { [Annotation.Revision]: opts.revision } : {}),
            ...(spec.requires ? { [REQUIRES_ANNOTATION]: requiresJson(spec.requires) } : {}),
          },
        }),
      );
    });
  }
  // The constraints go on the index too: a check then needs only the manifest it resolves.
  const root = await indexOf(images, layout, spec.requires ? { [REQUIRES_ANNOTATION]: requiresJson(spec.requires) } : undefined);
  return { loaded, root, images };
}
