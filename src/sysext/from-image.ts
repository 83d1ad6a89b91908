import { mkdir } from 'node:fs/promises';
import { withStagingDir } from '../util/atomic-write.js';
import { join, resolve } from 'node:path';
import { UserError } from '../errors.js';
import { extractImage, resolveManifest } from '../extract/extract-image.js';
import type { FlatEntry } from '../extract/flatten.js';
import { entryComponents } from '../extract/secure-path.js';
import type { Platform } from '../oci/types.js';
import { RegistryClient } from '../registry/client.js';
import { openSource, type OpenedImage } from '../store/open.js';
import { parseImageArgument } from '../store/transport.js';
import { buildSysext, type SysextBuildOptions, type SysextBuildResult } from './build.js';
import { KINDS, type ExtensionKind } from '../kairos/extensions.js';

export interface ExtensionLayer {
  /** The manifest the platform resolved to. */
  manifestDigest: string;
  /** The (last) layer the tree came from. */
  layerDigest: string;
  /** Files, links and directories taken from the layer. */
  entries: number;
  warnings: string[];
}

/** How many skipped paths a warning names before it says "and N more". */
const NAMED = 3;

function listed(paths: string[]): string {
  return paths.slice(0, NAMED).join(', ') + (paths.length > NAMED ? ` and ${paths.length - NAMED} more` : '');
}

/**
 * Extract the extension tree of a container image the way AuroraBoot's `sysext`/`confext` commands
 * do: only the image's **last layer** (a `FROM scratch` + `COPY` stage is the usual shape), only
 * the hierarchies the kind merges (sysext: usr/ and opt/; confext: etc/), and without an
 * os-release (systemd refuses extensions that carry one) or an extension-release file of the
 * image's own (kbundle writes the one for NAME from the release flags). The layer is digest-checked
 * before any byte of it is unpacked (extractImage); paths stay inside `dest`.
 */
export async function extractExtensionLayer(opened: OpenedImage, platform: Platform, kind: ExtensionKind, dest: string, staging: string): Promise<ExtensionLayer> {
  const k = KINDS[kind];
  // Here the platform follows --arch, so that is what the user changes to pick another one.
  const manifest = await resolveManifest(opened.target, opened.reference, platform, 'pick one with --arch (amd64, arm64, …): it sets the image platform, ARCHITECTURE= and the partition types');
  const outside = new Set<string>();
  const dropped: string[] = [];
  const orphanLinks: string[] = [];
  const kept = new Set<string>();
  const whiteouts: string[] = [];
  const forbidden = new Set(['usr/lib/os-release', 'etc/os-release']);
  const select = (e: FlatEntry): boolean => {
    const top = e.path.split('/')[0]!;
    if (!k.hierarchies.includes(top)) {
      outside.add(top);
      return false;
    }
    if (forbidden.has(e.path) || (e.path.startsWith(`${k.releaseDir}/`) && e.path.slice(k.releaseDir.length + 1).startsWith('extension-release.'))) {
      dropped.push(e.path);
      return false;
    }
    if (e.header.type === 'link') {
      const target = entryComponents(e.header.linkname ?? '', `${opened.display}: hard link ${e.path}`).join('/');
      if (!kept.has(target)) {
        orphanLinks.push(`${e.path} → ${target}`);
        return false;
      }
    }
    kept.add(e.path);
    return true;
  };
  const r = await extractImage(opened.target, manifest, dest, { layers: 'last', select, onWhiteout: (p) => whiteouts.push(p), allowSetuid: true, xattrs: false, stagingDir: staging });
  const layer = r.manifest.layers[r.manifest.layers.length - 1]!;
  const from = `${opened.display}: last layer ${layer.digest.slice(0, 19)}`;
  if (kept.size === 0) {
    throw new UserError(
      `${from} has nothing under ${k.hierarchies.map((h) => `${h}/`).join(' or ')}`,
      `an extension is built from the image's last layer only (as AuroraBoot does); put the files there, e.g. FROM scratch + COPY --from=build /out /`,
    );
  }
  const warnings = [...r.warnings];
  if (outside.size) warnings.push(`${from}: left out ${listed([...outside].sort().map((t) => `${t}/`))} (systemd-${kind} only merges ${k.hierarchies.map((h) => `/${h}`).join(' and ')})`);
  if (dropped.length) warnings.push(`${from}: left out ${listed(dropped.sort())} (kbundle writes ${k.releaseDir}/extension-release.NAME itself; systemd refuses an os-release in an extension)`);
  if (whiteouts.length) warnings.push(`${from}: ignored whiteouts for ${listed(whiteouts.sort())} (an extension can add files to the OS, not delete them)`);
  if (orphanLinks.length) warnings.push(`${from}: left out hard links whose targets are not in the extension: ${listed(orphanLinks)}`);
  return { manifestDigest: manifest.digest, layerDigest: layer.digest, entries: kept.size, warnings };
}

export interface ImageBuildSource extends ExtensionLayer {
  image: string;
}

/**
 * `sysext build <image>`: the extension tree from the image's last layer (for `platform`), then
 * the same build as from a folder. The tree is staged next to the output and removed afterwards.
 */
export async function buildSysextFromImage(
  location: string,
  platform: Platform,
  opts: Omit<SysextBuildOptions, 'tree'>,
  registry: { plainHttp?: boolean } = {},
): Promise<SysextBuildResult & { source: ImageBuildSource }> {
  const kind = opts.kind ?? 'sysext';
  const loc = parseImageArgument(location, `${kind} build`, { bare: false });
  const outDir = resolve(opts.outDir);
  await mkdir(outDir, { recursive: true });
  const client = new RegistryClient(registry);
  try {
    return await withStagingDir(outDir, `${kind}-image`, async (work) => {
      const opened = await openSource(loc, { client });
      let layer: ExtensionLayer;
      try {
        layer = await extractExtensionLayer(opened, platform, kind, join(work, 'tree'), work);
      } finally {
        await opened.close();
      }
      for (const w of layer.warnings) opts.onWarning?.(w);
      const built = await buildSysext({ ...opts, tree: join(work, 'tree') });
      return { ...built, source: { ...layer, image: opened.display } };
    });
  } finally {
    await client.close();
  }
}
